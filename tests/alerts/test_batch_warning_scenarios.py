"""Quality warnings of drying batches at a simulated yard: exactly what went to whom, and when.

The yard, its clock, the engine, its SQLite store and the dispatcher are those
of ``alert_helpers.SimYard`` (Twilio and ntfy are fakes that record). The
batches reach the engine as the batch records would give them: ``Batches``
keeps ``model.Batch`` records and ``model.MoistureReading`` readings and turns
them into the engine's input with the real ``warnings.open_batch``. The yard
is ``YARD`` with one more quality recipient, Marta (Spanish, SMS), beside
Carmen (English, SMS); nobody else may hear of a batch. Drying hours
07:00-18:00, America/Lima; the scenario day is 2026-06-15.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from alert_helpers import YARD, FakeService, SimYard, at
from conftest import wait_until

from secadero import contract
from secadero.contract import Alert
from secadero.server.alerts.service import AlertService
from secadero.server.batches.model import Batch, MoistureReading, TrayRef
from secadero.server.batches.warnings import OpenBatch, open_batch
from secadero.server.notifiers import build_notifiers
from secadero.settings import RecipientSettings, load_server_settings

MARTA = RecipientSettings(name="Marta", role="quality", language="es", phone="+51900000004")
QUALITY_YARD = replace(YARD, recipients=(*YARD.recipients, MARTA))


def day(d: int, hhmm: str) -> float:
    """A local time on 2026-06-<d>."""
    return at(hhmm, (2026, 6, d))


class Batches:
    """The open batches of the yard, as the batch records hold them."""

    def __init__(self) -> None:
        self.records: dict[str, Batch] = {}
        self.readings: list[MoistureReading] = []
        self.failing = False
        self.reads = 0

    def start(self, batch: str, trays: Sequence[str], started_at: float) -> None:
        refs = tuple(TrayRef(*tray.split("/")) for tray in trays)
        self.records[batch] = Batch(id=batch, yard="norte", trays=refs, started_at=started_at)

    def read(self, batch: str, moisture_pct: float, ts: float) -> None:
        self.readings.append(MoistureReading(batch=batch, ts=ts, moisture_pct=moisture_pct))

    def reading(self, yard: SimYard, batch: str, moisture_pct: float) -> Callable[[], None]:
        """An action: a meter reading taken now."""
        return lambda: self.read(batch, moisture_pct, yard.now)

    def end(self, batch: str, ts: float) -> None:
        self.records[batch] = replace(self.records[batch], ended_at=ts)

    def __call__(self, yard: str) -> list[OpenBatch]:
        self.reads += 1
        if self.failing:
            raise RuntimeError("database is locked")
        return [open_batch(b, self.readings) for b in self.records.values()
                if b.yard == yard and b.open]



def quality_yard(tmp_path: Path, **overrides: object) -> tuple[SimYard, Batches]:
    batches = Batches()
    yard = SimYard(tmp_path, yard_settings=QUALITY_YARD, open_batches=batches, **overrides)
    return yard, batches


def humidity(yard: SimYard, pct: float, *nodes: str) -> Callable[[], None]:
    def action() -> None:
        for node in nodes or tuple(yard.nodes):
            yard.nodes[node].humidity_pct = pct
    return action


def trays_of(yard: SimYard, node: str, state: str) -> Callable[[], None]:
    return lambda: yard.nodes[node].trays.update(dict.fromkeys(yard.nodes[node].trays, state))


REWETTING_EN = ("Quality: trays of batch b1 out at night in 85% humidity at yard Norte: n1/t1, "
                "n1/t2. The beans take up water: pull them in.")
REWETTING_ES = ("Calidad: bandejas del lote b1 afuera de noche con 85% de humedad en el tendal "
                "Norte: n1/t1, n1/t2. Los granos se rehumedecen: recogerlas.")


def test_a_humid_night_with_trays_out_is_one_warning_to_quality_in_both_languages(
        tmp_path: Path) -> None:
    yard, batches = quality_yard(tmp_path)
    batches.start("b1", ["n1/t1", "n1/t2"], day(15, "06:30"))
    batches.start("b2", ["n2/t3"], day(15, "06:30"))
    yard.at("06:00", humidity(yard, 85.0))  # humid all day and night, at both nodes
    yard.at("07:00", yard.trays("extended"))
    yard.at("17:45", trays_of(yard, "n2", "retracted"))  # b2 is in before the night
    # The air dips below 80 % for ten minutes: still the same night, the same warning.
    yard.at("19:00", humidity(yard, 78.0, "n1"))
    yard.at("19:10", humidity(yard, 85.0, "n1"))
    seen: dict[str, object] = {}
    yard.at("20:00", lambda: seen.update(
        beacon=yard.alerts.current_alert("norte"),
        open=[(e.kind, e.key) for e in yard.alerts.open_episodes()]))
    yard.at("21:00", trays_of(yard, "n1", "retracted"))
    yard.run("23:30")

    # Out all day at 85 %: nothing by day. Night at 18:00, b1's trays still out: one
    # message to each quality recipient, none to the yard, none per evaluation; b2 is in.
    assert yard.sent == [
        ("18:00", "Carmen", "twilio", "batch_rewetting", "raise"),
        ("18:00", "Marta", "twilio", "batch_rewetting", "raise"),
    ]
    assert yard.bodies == [REWETTING_EN, REWETTING_ES]
    # Open through the night; the beacons stay on rain only.
    assert seen == {"beacon": Alert(state="clear"), "open": [("batch_rewetting", "b1")]}
    # Trays in at 21:00, held 30 min: resolved at 21:30.
    assert yard.transitions == [
        ("18:00", "batch_rewetting", "raised", "warning"),
        ("21:30", "batch_rewetting", "resolved", "warning"),
    ]
    [episode] = yard.store.history()
    assert (episode.kind, episode.key, episode.raised_at, episode.resolved_at) == (
        "batch_rewetting", "b1", at("18:00"), at("21:30"))
    assert episode.details == {"humidity_pct": 85.0, "trays": ["n1/t1", "n1/t2"],
                               "clear_since": at("21:00"),
                               "resolved_by": "trays in, air drier or day"}
    assert [(n.recipient, n.role, n.language, n.status) for n in yard.log()] == [
        ("Carmen", "quality", "en", "sent"), ("Marta", "quality", "es", "sent")]


def test_without_the_hold_the_same_dip_would_warn_twice(tmp_path: Path) -> None:
    """The control for the test above: the ten-minute dip really ends the condition."""
    yard, batches = quality_yard(tmp_path, min_hold_min=0.0)
    batches.start("b1", ["n1/t1", "n1/t2"], day(15, "06:30"))
    yard.at("06:00", humidity(yard, 85.0))
    yard.at("07:00", yard.trays("extended"))
    yard.at("19:00", humidity(yard, 78.0, "n1"))
    yard.at("19:10", humidity(yard, 85.0, "n1"))
    yard.run("20:00")
    assert [(t, who) for t, who, _, kind, _ in yard.sent if kind == "batch_rewetting"] == [
        ("18:00", "Carmen"), ("18:00", "Marta"), ("19:10", "Carmen"), ("19:10", "Marta")]


def test_a_humid_night_with_the_trays_in_sends_nothing(tmp_path: Path) -> None:
    yard, batches = quality_yard(tmp_path)
    batches.start("b1", ["n1/t1", "n1/t2"], day(15, "06:30"))
    batches.start("b2", ["n2/t3"], day(15, "06:30"))
    yard.at("06:00", humidity(yard, 88.0))
    yard.at("07:00", yard.trays("extended"))
    yard.at("17:55", yard.trays("retracted"))
    yard.run("23:30")
    assert yard.sent == []
    assert yard.store.history() == []


def test_trays_left_out_overnight_are_told_at_once_and_the_warning_ends_with_the_day(
        tmp_path: Path) -> None:
    yard, batches = quality_yard(tmp_path)
    batches.start("b1", ["n1/t1", "n1/t2"], day(14, "08:00"))
    yard.at("06:00", humidity(yard, 85.0))
    yard.at("06:00", trays_of(yard, "n1", "extended"))  # out since the evening before
    yard.run("17:00")
    assert yard.sent == [
        ("06:00", "Carmen", "twilio", "batch_rewetting", "raise"),
        ("06:00", "Marta", "twilio", "batch_rewetting", "raise"),
    ]
    # Drying hours from 07:00: trays out by day are no longer the cause; held 30 min.
    assert yard.transitions == [
        ("06:00", "batch_rewetting", "raised", "warning"),
        ("07:30", "batch_rewetting", "resolved", "warning"),
    ]


def test_a_restart_during_the_night_does_not_warn_again(tmp_path: Path) -> None:
    yard, batches = quality_yard(tmp_path)
    batches.start("b1", ["n1/t1", "n1/t2"], day(14, "08:00"))
    yard.at("06:00", humidity(yard, 85.0))
    yard.at("06:00", trays_of(yard, "n1", "extended"))
    yard.at("06:20", yard.restart)
    yard.run("06:50")
    assert [(t, who) for t, who, *_ in yard.sent] == [("06:00", "Carmen"), ("06:00", "Marta")]
    assert [(e.kind, e.key, e.notify_count) for e in yard.alerts.open_episodes()] == [
        ("batch_rewetting", "b1", 1)]


def test_a_batch_at_day_8_still_at_9_pct_is_a_mould_warning(tmp_path: Path) -> None:
    yard, batches = quality_yard(tmp_path)
    batches.start("b1", ["n1/t1"], day(8, "10:00"))
    for d, pct in ((10, 31.0), (12, 15.5), (14, 9.0)):
        batches.read("b1", pct, day(d, "16:00"))
    batches.start("b2", ["n1/t2"], day(10, "08:00"))  # five days old: not yet
    batches.read("b2", 12.0, day(14, "16:00"))
    batches.start("b3", ["n2/t3"], day(7, "09:00"))  # eight days, but reached 7.8 %
    batches.read("b3", 7.8, day(13, "16:00"))
    batches.read("b3", 8.3, day(14, "16:00"))  # a later reading above 8 % does not undo it
    yard.at("15:00", batches.reading(yard, "b1", 7.9))
    yard.run("18:00")
    # b1 is seven days out at 10:00 on its eighth day, and its lowest reading is 9 %.
    assert yard.sent == [
        ("10:00", "Carmen", "twilio", "batch_mould", "raise"),
        ("10:00", "Marta", "twilio", "batch_mould", "raise"),
    ]
    assert yard.bodies == [
        "Quality: batch b1 at yard Norte is 7 days out and not below 8% yet (last reading "
        "9.0%). Mould risk: check and dry it.",
        "Calidad: el lote b1 del tendal Norte lleva 7 dias y no baja de 8% (ultima lectura "
        "9.0%). Riesgo de moho: revisar y secar.",
    ]
    # The 7.9 % reading at 15:00 ends it, without a message.
    [episode] = yard.store.history()
    assert (episode.kind, episode.key, episode.raised_at, episode.resolved_at) == (
        "batch_mould", "b1", at("10:00"), at("15:00"))
    assert episode.details["resolved_by"] == "moisture reached"


def test_a_batch_past_its_week_before_dawn_is_told_at_the_start_of_drying_hours(
        tmp_path: Path) -> None:
    yard, batches = quality_yard(tmp_path)
    batches.start("b1", ["n1/t1"], day(8, "05:00"))  # no reading at all
    yard.run("08:00")
    assert yard.sent == [
        ("07:00", "Carmen", "twilio", "batch_mould", "raise"),
        ("07:00", "Marta", "twilio", "batch_mould", "raise"),
    ]
    assert yard.bodies == [
        "Quality: batch b1 at yard Norte is 7 days out and not below 8% yet (no readings). "
        "Mould risk: check and dry it.",
        "Calidad: el lote b1 del tendal Norte lleva 7 dias y no baja de 8% (sin lecturas). "
        "Riesgo de moho: revisar y secar.",
    ]
    # Raised quietly at 06:00 (night), announced at 07:00.
    assert yard.transitions == [("06:00", "batch_mould", "raised", "warning")]


def test_a_reading_of_4_5_pct_is_a_brittle_warning_once(tmp_path: Path) -> None:
    yard, batches = quality_yard(tmp_path)
    batches.start("b1", ["n1/t1", "n1/t2"], day(12, "08:00"))
    batches.read("b1", 12.0, day(13, "16:00"))
    batches.read("b1", 7.0, day(14, "16:00"))
    batches.start("b2", ["n2/t3"], day(12, "08:00"))
    yard.at("11:20", batches.reading(yard, "b1", 4.5))
    yard.at("11:20", batches.reading(yard, "b2", 5.0))  # at the limit is not below it
    yard.at("13:00", batches.reading(yard, "b1", 4.3))  # still brittle: the same warning
    yard.at("16:00", lambda: batches.end("b1", yard.now))
    yard.run("18:00")
    assert yard.sent == [
        ("11:20", "Carmen", "twilio", "batch_brittle", "raise"),
        ("11:20", "Marta", "twilio", "batch_brittle", "raise"),
    ]
    assert yard.bodies == [
        "Quality: batch b1 at yard Norte reads 4.5% moisture (below 5%): brittle beans. "
        "Stop drying it.",
        "Calidad: el lote b1 del tendal Norte tiene 4.5% de humedad (menos de 5%): granos "
        "quebradizos. Dejar de secarlo.",
    ]
    [episode] = yard.store.history()
    assert (episode.kind, episode.key, episode.raised_at, episode.resolved_at) == (
        "batch_brittle", "b1", at("11:20"), at("16:00"))
    assert episode.details == {"moisture_pct": 4.5, "reading_ts": at("11:20"),
                               "resolved_by": "batch ended"}


def test_a_retaken_reading_above_the_limit_ends_the_brittle_warning(tmp_path: Path) -> None:
    yard, batches = quality_yard(tmp_path)
    batches.start("b1", ["n1/t1"], day(12, "08:00"))
    yard.at("09:00", batches.reading(yard, "b1", 4.8))
    yard.at("09:05", batches.reading(yard, "b1", 6.1))  # the meter misread: retaken
    yard.at("14:00", batches.reading(yard, "b1", 4.6))  # over-dried by the afternoon
    yard.run("15:00")
    assert [(t, who, kind) for t, who, _, kind, _ in yard.sent] == [
        ("09:00", "Carmen", "batch_brittle"), ("09:00", "Marta", "batch_brittle"),
        ("14:00", "Carmen", "batch_brittle"), ("14:00", "Marta", "batch_brittle")]
    assert sorted((e.raised_at, e.resolved_at) for e in yard.store.history()) == [
        (at("09:00"), at("09:05")), (at("14:00"), None)]


def test_a_failing_batch_store_costs_no_rain_alert_and_ends_no_warning(
        tmp_path: Path) -> None:
    yard, batches = quality_yard(tmp_path)
    batches.start("b1", ["n1/t1"], day(12, "08:00"))
    yard.at("09:00", batches.reading(yard, "b1", 4.5))
    yard.at("09:30", lambda: setattr(batches, "failing", True))
    yard.at("07:00", yard.trays("extended"))
    yard.at("10:12", yard.rain("n2", True))
    yard.at("10:18", yard.trays("retracted"))
    seen: list[tuple[str, str]] = []
    yard.at("10:30", lambda: seen.extend((e.kind, e.key) for e in yard.alerts.open_episodes()))
    # The store answers again, without b1 (it ended meanwhile): now the warning ends.
    yard.at("11:00", lambda: (batches.end("b1", yard.now), setattr(batches, "failing", False)))
    yard.run("11:05")
    assert [(t, who, kind) for t, who, _, kind, _ in yard.sent] == [
        ("09:00", "Carmen", "batch_brittle"), ("09:00", "Marta", "batch_brittle"),
        ("10:12", "Rosa", "rain_now"), ("10:12", "Luis", "rain_now")]
    assert seen == [("batch_brittle", "b1"), ("rain", "")]
    # One failed read per evaluation from 09:30 to 10:59 (the ones a wet plate woke
    # included: the sim evaluates once a minute), each counted; no yard failed to decide.
    assert yard.alerts.metrics.get("errors_total", stage="batches") == 90
    assert yard.alerts.metrics.get("errors_total", stage="decide") == 0
    brittle = next(e for e in yard.store.history() if e.kind == "batch_brittle")
    assert (brittle.resolved_at, brittle.details["resolved_by"]) == (at("11:00"),
                                                                     "batch ended")


@pytest.mark.parametrize("role", ["worker", "supervisor", "technician"])
def test_only_the_quality_role_hears_of_a_batch(tmp_path: Path, role: str) -> None:
    """A yard whose only recipient has another role: the warning is decided, sent to nobody."""
    only = RecipientSettings(name="Pepe", role=role, language="es", phone="+51900000007")
    batches = Batches()
    yard = SimYard(tmp_path, yard_settings=replace(YARD, recipients=(only,)),
                   open_batches=batches)
    batches.start("b1", ["n1/t1"], day(12, "08:00"))
    yard.at("09:00", batches.reading(yard, "b1", 4.5))
    yard.run("09:10")
    assert yard.sent == []
    assert [(e.kind, e.notify_count) for e in yard.alerts.open_episodes()] == [
        ("batch_brittle", 1)]


def test_the_service_sends_a_warning_through_ntfy_with_the_configured_threshold(
        tmp_path: Path) -> None:
    """The whole path from server.toml: ``[batches]`` thresholds, the ``open_batches``
    input, the dispatcher and the real ntfy notifier, against a local HTTP server that
    answers as ntfy does (JSON publish to its root URL). Nothing goes on the yard's
    retained ``alert`` topic but "clear"."""
    ntfy = FakeService()
    ntfy.default = ntfy.json_reply({"id": "abc123", "event": "message"})
    config = tmp_path / "server.toml"
    config.write_text(f"""
[alerts]
database = "alerts.sqlite3"
drying_start = "00:00"
drying_end = "24:00"
evaluate_interval_s = 3600

[batches]
brittle_moisture_pct = 6.0

[notifiers.ntfy]
url = "{ntfy.url}"

[[yards]]
id = "norte"
name = "Norte"
latitude = -6.57
longitude = -76.14

[[yards.recipients]]
name = "Luis"
role = "worker"
channels = ["push"]
ntfy_topic = "norte-luis"

[[yards.recipients]]
name = "Carmen"
role = "quality"
language = "en"
channels = ["push"]
ntfy_topic = "norte-carmen"
""")
    settings = load_server_settings(config)
    batches = Batches()
    batches.start("b7", ["n1/t1"], time.time() - 3 * 86400)
    batches.read("b7", 5.5, time.time() - 60)  # below the configured 6 %, above the default
    published: list[tuple[str, bytes, bool]] = []
    service = AlertService(settings, notifiers=build_notifiers(settings.notifiers),
                           poller=None, open_batches=batches,
                           publish=lambda topic, payload, retain: published.append(
                               (topic, payload, retain)))
    try:
        service.start()
        try:
            service.evaluate(["norte"])
            request = ntfy.received.get(timeout=10)
            wait_until(lambda: [n.status for n in service.store.notifications()] == ["sent"])
        finally:
            service.stop()
        assert len(ntfy.requests) == 1
        body = request.json()
        assert isinstance(body, dict)
        assert (body["topic"], body["title"], body["message"]) == (
            "norte-carmen", "Brittle beans - norte",
            "Quality: batch b7 at yard Norte reads 5.5% moisture (below 6%): brittle beans. "
            "Stop drying it.")
        assert {(topic, contract.decode_alert(contract.load_json_object(payload)).state,
                 retain)
                for topic, payload, retain in published} == {
            ("secadero/v1/norte/alert", "clear", True)}
    finally:
        ntfy.close()
