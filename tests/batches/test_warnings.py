"""The quality warnings' pure rules (server/batches/warnings.py) and how the engine keys them.

No clock, no store: the rules take the batch, the yard's view and the time.
The scenarios on a simulated yard (who hears what, when) are in
tests/alerts/test_batch_warning_scenarios.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from secadero.server import gsm7
from secadero.server.alerts import messages
from secadero.server.alerts.engine import AlertEngine
from secadero.server.alerts.rules import NodeView, YardView
from secadero.server.alerts.store import Episode
from secadero.server.batches import warnings
from secadero.server.batches.model import Batch, MoistureReading, TrayRef
from secadero.server.batches.store import BatchStore
from secadero.server.batches.warnings import Brittle, MouldRisk, OpenBatch, Rewetting
from secadero.server.forecast import ForecastStatus
from secadero.settings import AlertSettings, BatchSettings, RecipientSettings, YardSettings

S = BatchSettings()
LIMA = ZoneInfo("America/Lima")
NOW = datetime(2026, 6, 15, 22, 0, tzinfo=LIMA).timestamp()
DAY_S = 86400.0
T1, T2, T3 = TrayRef("n1", "t1"), TrayRef("n1", "t2"), TrayRef("n2", "t3")


def view(*nodes: NodeView) -> YardView:
    return YardView(yard="norte", name="Norte", timezone="America/Lima", nodes=nodes)


def batch(**changes: object) -> OpenBatch:
    return replace(OpenBatch(id="b1", yard="norte", trays=(T1, T2),
                             started_at=NOW - 3 * DAY_S), **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------- rewetting


def test_trays_out_at_night_in_air_at_or_above_80_pct_rewet() -> None:
    humid = view(NodeView("n1", humidity_pct=80.0, trays={"t1": "extended", "t2": "extended"}))
    assert warnings.rewetting(batch(), humid, S, drying=False) == Rewetting(
        trays=("n1/t1", "n1/t2"), humidity_pct=80.0)
    # By day the same trays in the same air are drying as they should (slowly).
    assert warnings.rewetting(batch(), humid, S, drying=True) is None
    drier = view(NodeView("n1", humidity_pct=79.9, trays={"t1": "extended"}))
    assert warnings.rewetting(batch(), drier, S, drying=False) is None


def test_only_the_batch_trays_that_say_extended_count() -> None:
    yard = view(NodeView("n1", humidity_pct=90.0,
                         trays={"t1": "retracted", "t2": "moving", "t9": "extended"}),
                NodeView("n2", humidity_pct=95.0, trays={"t3": "extended"}))
    # t9 and t3 are out, but they are not this batch's; t2 is moving, t1 in.
    assert warnings.rewetting(batch(), yard, S, drying=False) is None
    assert warnings.rewetting(batch(trays=(T1, T3)), yard, S, drying=False) == Rewetting(
        trays=("n2/t3",), humidity_pct=95.0)
    # A tray of a node that reports nothing is not known to be out.
    assert warnings.rewetting(batch(trays=(TrayRef("n7", "t1"),)), yard, S,
                              drying=False) is None


def test_a_tray_whose_node_gives_no_humidity_takes_the_yards_most_humid_air() -> None:
    yard = view(NodeView("n1", humidity_pct=None, trays={"t1": "extended"}),
                NodeView("n2", humidity_pct=84.0), NodeView("n3", humidity_pct=70.0))
    assert warnings.rewetting(batch(), yard, S, drying=False) == Rewetting(
        trays=("n1/t1",), humidity_pct=84.0)
    blind = view(NodeView("n1", humidity_pct=None, trays={"t1": "extended"}))
    assert warnings.rewetting(batch(), blind, S, drying=False) is None


def test_the_rewetting_threshold_is_the_setting() -> None:
    yard = view(NodeView("n1", humidity_pct=76.0, trays={"t1": "extended"}))
    assert warnings.rewetting(batch(), yard, replace(S, rewetting_humidity_pct=75.0),
                              drying=False) == Rewetting(("n1/t1",), 76.0)


# ---------------------------------------------------------------- mould, brittle


def test_mould_risk_from_seven_days_without_a_reading_at_or_below_8_pct() -> None:
    week = NOW - 7 * DAY_S
    assert warnings.mould_risk(batch(started_at=week + 1), NOW, S) is None
    assert warnings.mould_risk(batch(started_at=week, last_moisture_pct=9.0,
                                     min_moisture_pct=9.0), NOW, S) == MouldRisk(7.0, 9.0)
    assert warnings.mould_risk(batch(started_at=week), NOW, S) == MouldRisk(7.0, None)
    # The lowest reading decides: 8.0 % is "at or below", later 8.4 % does not undo it.
    assert warnings.mould_risk(batch(started_at=week - DAY_S, last_moisture_pct=8.4,
                                     min_moisture_pct=8.0), NOW, S) is None
    assert warnings.mould_risk(batch(started_at=week, min_moisture_pct=8.1,
                                     last_moisture_pct=8.1), NOW, S) == MouldRisk(7.0, 8.1)


def test_brittle_from_the_latest_reading_below_5_pct() -> None:
    assert warnings.brittle(batch(), S) is None
    assert warnings.brittle(batch(last_moisture_pct=4.5, last_moisture_ts=NOW - 60,
                                  min_moisture_pct=4.5), S) == Brittle(4.5, NOW - 60)
    assert warnings.brittle(batch(last_moisture_pct=5.0, last_moisture_ts=NOW), S) is None
    # a reading retaken above the limit (a misread, another tray) ends it
    assert warnings.brittle(batch(last_moisture_pct=6.0, last_moisture_ts=NOW,
                                  min_moisture_pct=4.5), S) is None


def test_open_batch_takes_the_latest_and_the_lowest_of_its_own_readings() -> None:
    record = Batch(id="b1", yard="norte", trays=(T1, T2), started_at=NOW - DAY_S)
    readings = [MoistureReading("b1", NOW - 100, 7.9), MoistureReading("b1", NOW - 10, 8.2),
                MoistureReading("b2", NOW, 3.0), MoistureReading("b1", NOW - 500, 12.0)]
    assert warnings.open_batch(record, readings) == OpenBatch(
        id="b1", yard="norte", trays=(T1, T2), started_at=NOW - DAY_S,
        last_moisture_pct=8.2, last_moisture_ts=NOW - 10, min_moisture_pct=7.9)
    assert warnings.open_batch(record, []) == OpenBatch(
        id="b1", yard="norte", trays=(T1, T2), started_at=NOW - DAY_S)


def test_open_batches_from_the_batch_records(tmp_path: Path) -> None:
    """The input the lead wires into the alert service, on the real SQLite batch records."""
    with BatchStore(tmp_path / "batches.sqlite3") as records:
        records.add_batch(Batch(id="b1", yard="norte", trays=(T1, T2),
                                started_at=NOW - 2 * DAY_S))
        records.add_batch(Batch(id="b2", yard="norte", trays=(T3,), started_at=NOW - 3 * DAY_S))
        records.add_batch(Batch(id="b9", yard="sur", trays=(T1,), started_at=NOW - DAY_S))
        records.add_moisture(MoistureReading("b1", NOW - DAY_S, 20.0))
        records.add_moisture(MoistureReading("b1", NOW - 60, 9.5))
        records.end_batch("b2", ended_at=NOW - 10, final_moisture_pct=7.2, dry_weight_kg=None)
        assert warnings.open_batches_from(records)("norte") == [OpenBatch(
            id="b1", yard="norte", trays=(T1, T2), started_at=NOW - 2 * DAY_S,
            last_moisture_pct=9.5, last_moisture_ts=NOW - 60, min_moisture_pct=9.5)]
        assert warnings.open_batches_from(records)("oeste") == []


# ---------------------------------------------------------------- the engine's keys

QUALITY = RecipientSettings(name="Carmen", role="quality", language="en", phone="+51900000003")
YARD = YardSettings(id="norte", name="Norte", latitude=-6.57, longitude=-76.14,
                    recipients=(QUALITY,))
ENGINE = AlertEngine(AlertSettings(), [YARD], started_at=NOW, forecast_enabled=False)
DRY_VIEW = view(NodeView("n1", last_seen_ts=NOW, humidity_pct=60.0),
                NodeView("n2", last_seen_ts=NOW, humidity_pct=60.0))


def open_brittle(key: str) -> Episode:
    return Episode(yard="norte", kind="batch_brittle", key=key, cause="batch_brittle",
                   severity="warning", raised_at=NOW - 3600, notify_count=1, id=7)


def test_each_batch_is_its_own_episode_and_other_yards_batches_are_not_ours() -> None:
    b1 = batch(last_moisture_pct=4.0, last_moisture_ts=NOW - 60, min_moisture_pct=4.0)
    b2 = replace(b1, id="b2", trays=(T3,))
    elsewhere = replace(b1, id="b9", yard="sur")
    decision = ENGINE.decide(DRY_VIEW, ForecastStatus(), {}, NOW, batches=[b2, elsewhere, b1])
    assert [(e.kind, e.key, e.state) for e in decision.episodes] == [
        ("batch_brittle", "b1", "raised"), ("batch_brittle", "b2", "raised")]


def test_unknown_batches_leave_their_warnings_be_and_an_ended_batch_resolves_them() -> None:
    episodes = {("batch_brittle", "b1"): open_brittle("b1")}
    # None: the records could not be read (or none are wired): nothing changes.
    assert ENGINE.decide(DRY_VIEW, ForecastStatus(), episodes, NOW, batches=None).empty
    # Known, and b1 is not open any more: its warning ends, without a message.
    decision = ENGINE.decide(DRY_VIEW, ForecastStatus(), episodes, NOW, batches=[])
    [episode] = decision.episodes
    assert (episode.state, episode.resolved_at, episode.details["resolved_by"]) == (
        "resolved", NOW, "batch ended")
    assert decision.notifications == ()


def test_the_thresholds_come_from_the_batch_settings() -> None:
    engine = AlertEngine(AlertSettings(), [YARD], started_at=NOW, forecast_enabled=False,
                         batches=replace(S, brittle_moisture_pct=6.0))
    b1 = batch(last_moisture_pct=5.5, last_moisture_ts=NOW - 60, min_moisture_pct=5.5)
    noon = datetime(2026, 6, 15, 12, 0, tzinfo=LIMA).timestamp()
    decision = engine.decide(DRY_VIEW, ForecastStatus(), {}, noon, batches=[b1])
    [note] = decision.notifications
    assert note.body == ("Quality: batch b1 at yard Norte reads 5.5% moisture (below 6%): "
                         "brittle beans. Stop drying it.")
    assert ENGINE.decide(DRY_VIEW, ForecastStatus(), {}, noon, batches=[b1]).empty


# ---------------------------------------------------------------- the words


@pytest.mark.parametrize("language", ["es", "en"])
@pytest.mark.parametrize("kind", ["batch_rewetting", "batch_mould", "batch_brittle"])
def test_a_long_batch_id_and_many_trays_still_fit_one_sms(kind: str, language: str) -> None:
    long = {"yard": "Cooperativa Agraria Cacaotera Acopagro Chazuta",
            "batch": "lote-2026-06-socio-0421-fermentado-caja-3", "humidity": "97",
            "trays": ", ".join(f"nodo-norte-{i}/bandeja-{j}" for i in range(3) for j in range(3)),
            "days": "12", "target": "8", "moisture": "4.5", "limit": "5",
            "moisture_es": messages.moisture_phrase(19.5, "es"),
            "moisture_en": messages.moisture_phrase(19.5, "en")}
    text = messages.render(kind, language, long)
    assert gsm7.fits_one_segment(text.body), text.body
    assert "..." in text.body


def test_moisture_phrase() -> None:
    assert [messages.moisture_phrase(p, lang) for p in (9.04, None) for lang in ("es", "en")] \
        == ["ultima lectura 9.0%", "last reading 9.0%", "sin lecturas", "no readings"]
