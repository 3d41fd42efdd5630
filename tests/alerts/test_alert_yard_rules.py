"""Rules switched off or tuned for one yard (issue 13): ``[yards.rules.<rule>]``.

Two yards under the same sky (``alert_helpers.SimYard`` with ``other_yards``):
Norte, whose rules the tests change, and Sur, which keeps ``[alerts]``'s values,
fed the same nodes' messages and the same forecast. The real engine, SQLite store
and dispatcher on the simulated clock; Twilio and ntfy are fakes that record what
they were given. Norte's people: Rosa (worker, SMS), Luis (worker, push), Ana
(supervisor), Carmen (quality), Tito (technician); Sur's: Rita, Lucho, Alba,
Cata, Tono in the same roles, so ``sent`` tells the yards apart.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from alert_helpers import YARD, SimYard, at

from secadero.server.alerts.engine import AlertEngine
from secadero.server.alerts.rules import YardView
from secadero.server.forecast import Forecast, ForecastStatus, ProviderStatus
from secadero.settings import AlertSettings, RecipientSettings, YardRules, YardSettings

SUR = YardSettings(id="sur", name="Sur", latitude=-6.57, longitude=-76.14, recipients=(
    RecipientSettings(name="Rita", role="worker", language="es", phone="+51900000011"),
    RecipientSettings(name="Lucho", role="worker", language="es", ntfy_topic="sur-lucho",
                      channels=("push",)),
    RecipientSettings(name="Alba", role="supervisor", language="es", phone="+51900000012"),
    RecipientSettings(name="Cata", role="quality", language="en", phone="+51900000013"),
    RecipientSettings(name="Tono", role="technician", language="es", phone="+51900000019"),
))


def two_yards(tmp_path: Path, *, off: tuple[str, ...] = (),
              tuned: tuple[tuple[str, float | int], ...] = ()) -> SimYard:
    """Norte with these rules off and thresholds tuned; Sur as [alerts] says."""
    norte = replace(YARD, rules=YardRules(off=frozenset(off), tuned=tuned))
    return SimYard(tmp_path, yard_settings=norte, other_yards=(SUR,))


def humid_morning(yard: SimYard) -> None:
    """Trays out, then both nodes' humidity rising 2 points a minute from 11:00."""
    def humid(pct: float) -> None:
        for sim in yard.nodes.values():
            sim.humidity_pct = pct
    yard.at("10:00", yard.trays("extended"))
    for minute, pct in enumerate(range(60, 84, 2)):
        yard.at(f"11:{minute:02d}", lambda p=pct: humid(p))


def open_kinds(yard: SimYard, yard_id: str) -> list[str]:
    return [e.kind for e in yard.store.history(yard=yard_id)]


def test_humidity_surge_off_warns_the_other_yard_only(tmp_path: Path) -> None:
    yard = two_yards(tmp_path, off=("humidity_surge",))
    humid_morning(yard)
    yard.run("13:00")
    # 16 points in 8 minutes at both nodes: Sur warns its workers at 11:08; Norte nothing.
    assert yard.sent == [("11:08", "Rita", "twilio", "humidity_surge", "raise"),
                         ("11:08", "Lucho", "ntfy", "humidity_surge", "raise")]
    assert open_kinds(yard, "norte") == []
    assert open_kinds(yard, "sur") == ["humidity_surge"]


def test_switching_humidity_surge_off_ends_a_warning_still_open(tmp_path: Path) -> None:
    yard = SimYard(tmp_path)
    humid_morning(yard)
    yard.run("11:20")
    # The technician writes [yards.rules.humidity_surge] enabled = false and restarts at 11:21.
    yard.yard_settings = replace(YARD, rules=YardRules(off=frozenset({"humidity_surge"})))
    yard.restart()
    yard.run("12:00")
    assert yard.transitions == [("11:08", "humidity_surge", "raised", "warning"),
                                ("11:21", "humidity_surge", "resolved", "warning")]
    assert yard.sent == [("11:08", "Rosa", "twilio", "humidity_surge", "raise"),
                         ("11:08", "Luis", "ntfy", "humidity_surge", "raise")]  # the end is no news
    [episode] = yard.store.history()
    assert episode.details["resolved_by"] == "switched off for this yard"


def test_rain_forecast_off_leaves_the_plates_to_raise_it(tmp_path: Path) -> None:
    yard = two_yards(tmp_path, off=("rain_forecast",))
    yard.prob_by_hour = {15: 80}
    yard.at("13:00", yard.trays("retracted"))
    yard.at("15:05", yard.rain("n1", True))
    yard.at("15:40", yard.rain("n1", False))
    yard.run("17:30")
    # Sur: the forecast at 13:31 (15:00 enters the 90-minute look-ahead); trays are in,
    # so the wet plate is no news there. Norte: only the plate, at 15:05, trays in and in
    # drying hours: told. Both end when the plates are dry 30 min and that holds 30 min
    # (Sur's forecast is clear from 16:00 too).
    assert yard.sent == [
        ("13:31", "Rita", "twilio", "rain_forecast", "raise"),
        ("13:31", "Lucho", "ntfy", "rain_forecast", "raise"),
        ("15:05", "Rosa", "twilio", "rain_now", "raise"),
        ("15:05", "Luis", "ntfy", "rain_now", "raise"),
        ("16:40", "Rosa", "twilio", "all_clear", "all_clear"),
        ("16:40", "Luis", "ntfy", "all_clear", "all_clear"),
        ("16:40", "Rita", "twilio", "all_clear", "all_clear"),
        ("16:40", "Lucho", "ntfy", "all_clear", "all_clear"),
    ]
    [norte] = yard.store.history(yard="norte")
    assert (norte.cause, norte.details["raised_by"], norte.raised_at) == (
        "rain_now", "rain_now", at("15:05"))


def test_rain_now_off_ignores_the_plates_there(tmp_path: Path) -> None:
    yard = two_yards(tmp_path, off=("rain_now",))
    yard.at("07:00", yard.trays("extended"))
    yard.at("10:12", yard.rain("n2", True))
    yard.at("10:18", yard.trays("retracted"))
    yard.at("10:40", yard.rain("n2", False))
    yard.run("13:00")
    # No rain in the forecast: Norte, whose plates do not count, hears nothing.
    assert yard.sent == [
        ("10:12", "Rita", "twilio", "rain_now", "raise"),
        ("10:12", "Lucho", "ntfy", "rain_now", "raise"),
        ("11:40", "Rita", "twilio", "all_clear", "all_clear"),
        ("11:40", "Lucho", "ntfy", "all_clear", "all_clear"),
    ]
    assert open_kinds(yard, "norte") == []


def test_trays_out_off_sends_no_escalation_there(tmp_path: Path) -> None:
    yard = two_yards(tmp_path, off=("trays_out",))
    yard.at("07:00", yard.trays("extended"))
    yard.at("14:00", yard.rain("n1", True))
    yard.at("15:10", yard.trays("retracted"))
    yard.at("15:30", yard.rain("n1", False))
    yard.run("18:00")
    norte = [s for s in yard.sent if s[1] in ("Rosa", "Luis", "Ana", "Carmen", "Tito")]
    sur = [s for s in yard.sent if s not in norte]
    # Norte: nobody answers, so the plain repeats go up the chain (no "siguen afuera").
    assert norte == [
        ("14:00", "Rosa", "twilio", "rain_now", "raise"),
        ("14:00", "Luis", "ntfy", "rain_now", "raise"),
        ("14:15", "Rosa", "twilio", "rain_now", "repeat"),
        ("14:15", "Luis", "ntfy", "rain_now", "repeat"),
        ("14:15", "Ana", "twilio", "rain_now", "repeat"),
        ("14:30", "Rosa", "twilio", "rain_now", "repeat"),
        ("14:30", "Luis", "ntfy", "rain_now", "repeat"),
        ("14:30", "Ana", "twilio", "rain_now", "repeat"),
        ("14:30", "Carmen", "twilio", "rain_now", "repeat"),
        ("14:45", "Rosa", "twilio", "rain_now", "repeat"),
        ("14:45", "Luis", "ntfy", "rain_now", "repeat"),
        ("14:45", "Ana", "twilio", "rain_now", "repeat"),
        ("14:45", "Carmen", "twilio", "rain_now", "repeat"),
        ("16:30", "Rosa", "twilio", "all_clear", "all_clear"),
        ("16:30", "Luis", "ntfy", "all_clear", "all_clear"),
        ("16:30", "Ana", "twilio", "all_clear", "all_clear"),
        ("16:30", "Carmen", "twilio", "all_clear", "all_clear"),
    ]
    # Sur: the trays rule escalates, as in test_alert_scenarios.py.
    assert [(t, who, kind) for t, who, _, kind, _ in sur if kind == "trays_still_out"] == [
        ("14:15", "Rita", "trays_still_out"), ("14:15", "Lucho", "trays_still_out"),
        ("14:15", "Alba", "trays_still_out"),
        ("14:30", "Rita", "trays_still_out"), ("14:30", "Lucho", "trays_still_out"),
        ("14:30", "Alba", "trays_still_out"), ("14:30", "Cata", "trays_still_out"),
        ("14:45", "Rita", "trays_still_out"), ("14:45", "Lucho", "trays_still_out"),
        ("14:45", "Alba", "trays_still_out"), ("14:45", "Cata", "trays_still_out"),
    ]


def test_node_offline_off_tells_only_the_other_yards_technician(tmp_path: Path) -> None:
    yard = two_yards(tmp_path, off=("node_offline",))
    yard.at("09:00", lambda: setattr(yard.nodes["n2"], "online", False))
    yard.at("10:00", lambda: setattr(yard.nodes["n2"], "online", True))
    yard.run("11:00")
    assert yard.sent == [("09:10", "Tono", "twilio", "node_offline", "raise"),
                         ("10:00", "Tono", "twilio", "node_back", "recovered")]
    assert open_kinds(yard, "norte") == []


def test_a_tuned_raise_threshold_moves_the_alert_to_the_hour_that_reaches_it(
        tmp_path: Path) -> None:
    # Norte raises at 75 % (its forecast cried wolf at 60 %); Sur keeps [alerts]'s 60 %.
    yard = two_yards(tmp_path, tuned=(("raise_prob_pct", 75.0),))
    yard.prob_by_hour = {15: 70, 16: 80}
    yard.at("07:00", yard.trays("extended"))
    yard.at("13:40", lambda: yard.alerts.acknowledge_phone("+51900000011", yard.now))
    yard.at("14:40", lambda: yard.alerts.acknowledge_phone("+51900000001", yard.now))
    yard.run("14:45")
    # Sur: 15:00 (70 %) enters the 90-minute look-ahead at 13:31. Norte: 70 % is below
    # its 75 %; 16:00 (80 %) enters it at 14:31, and that is the rain Norte is told of.
    assert yard.sent == [
        ("13:31", "Rita", "twilio", "rain_forecast", "raise"),
        ("13:31", "Lucho", "ntfy", "rain_forecast", "raise"),
        ("14:31", "Rosa", "twilio", "rain_forecast", "raise"),
        ("14:31", "Luis", "ntfy", "rain_forecast", "raise"),
    ]
    assert yard.bodies[0].startswith("Lluvia en ~90 min (70%) hacia las 15:00.")
    assert yard.bodies[2].startswith("Lluvia en ~90 min (80%) hacia las 16:00.")


def test_a_tuned_node_silence_waits_that_long(tmp_path: Path) -> None:
    yard = two_yards(tmp_path, tuned=(("node_silent_min", 30.0),))
    yard.at("09:00", lambda: setattr(yard.nodes["n2"], "online", False))
    yard.run("09:40")
    # Last heard at 08:59: Sur's technician after 10 min, Norte's after 30.
    assert yard.sent == [("09:10", "Tono", "twilio", "node_offline", "raise"),
                         ("09:30", "Tito", "twilio", "node_offline", "raise")]


def test_forecast_stale_off_tells_only_the_other_yards_technician(tmp_path: Path) -> None:
    yard = two_yards(tmp_path, off=("forecast_stale",))
    yard.at("11:50", lambda: setattr(yard, "forecast_up", False))
    yard.run("14:00")
    # Last good forecast 11:45: stale after 90 min, at Sur only.
    assert yard.sent == [("13:16", "Tono", "twilio", "forecast_stale", "raise")]
    assert open_kinds(yard, "norte") == []


def test_provider_failing_off_and_tuned(tmp_path: Path) -> None:
    """Open-Meteo failing since 08:00 while MET Norway covers: at 08:30 a yard that tuned
    provider_failing_min to 30 hears of it, a yard with the rule off does not, and at
    08:59 a yard on [alerts]'s 60 min not yet."""
    tuned = replace(YARD, rules=YardRules(tuned=(("provider_failing_min", 30.0),)))
    off = replace(SUR, rules=YardRules(off=frozenset({"provider_failing"})))
    plain = replace(SUR, id="oeste", name="Oeste")
    engine = AlertEngine(AlertSettings(), [tuned, off, plain], started_at=at("08:00"))

    def told(yard: YardSettings, when: str) -> list[tuple[str, str]]:
        # MET Norway's forecast is fresh at every poll.
        status = ForecastStatus(Forecast("met-norway", at(when), ()), None, (
            ProviderStatus("open-meteo", failing_since=at("08:00"), error="http_429"),
            ProviderStatus("met-norway", last_ok_at=at(when))))
        view = YardView(yard=yard.id, name=yard.name, timezone="America/Lima", nodes=())
        decision = engine.decide(view, status, {}, at(when))
        return [(n.recipient, n.kind) for n in decision.notifications]

    assert told(tuned, "08:29") == []
    assert told(tuned, "08:30") == [("Tito", "provider_failing")]
    assert told(off, "11:00") == []
    assert told(plain, "08:59") == []
    assert told(plain, "09:00") == [("Tono", "provider_failing")]
