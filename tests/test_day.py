"""The demo's scripted day (secadero/day.py): its timing, the nodes' script, the narrator,
and the local forecast it replays (parsed by the server's own Open-Meteo reader)."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory

from secadero.contract import Alert, Envelope, Event, Telemetry
from secadero.day import BEATS_S, MIN_MINUTES, Day, DayNarrator, ForecastReplay
from secadero.errors import ConfigError
from secadero.firmware.simulation import SimulatedYard, WeatherModel, YardPins, load_day_script
from secadero.server.alerts.rules import first_rain_hour
from secadero.server.forecast.openmeteo import parse

LIMA = ZoneInfo("America/Lima")
REAL_START = datetime(2026, 6, 15, 10, 0, tzinfo=LIMA).timestamp()


def test_the_day_runs_from_six_to_six_in_the_minutes_asked_for() -> None:
    day = Day(7.0, REAL_START)
    assert day.speed == pytest.approx(12 * 3600 / 420)
    assert (day.clock(REAL_START - 30), day.clock(REAL_START), day.clock(day.at("end"))) == (
        "06:00", "06:00", "18:00")
    assert day.at("end") - REAL_START == pytest.approx(420)
    # Every beat keeps its place in the day whatever its length.
    long_day = Day(12.0, REAL_START)
    assert day.sim(day.at("shower_1")) == pytest.approx(long_day.sim(long_day.at("shower_1")))
    shortest = Day(MIN_MINUTES, REAL_START)
    assert shortest.clock(shortest.at("shower_1")) == "08:40"
    with pytest.raises(ValueError, match="at least 6 minutes"):
        Day(MIN_MINUTES - 1, REAL_START)


def test_the_forecast_sees_the_first_shower_until_it_has_passed() -> None:
    day = Day(MIN_MINUTES, REAL_START)
    assert day.forecast_sees_rain(REAL_START)
    assert day.forecast_sees_rain(day.at("shower_1_end") - 1)
    assert not day.forecast_sees_rain(day.at("shower_1_end"))
    assert not day.forecast_sees_rain(day.at("shower_2"))


def test_the_nodes_script_round_trips_and_drives_the_simulated_yard(tmp_path: Path) -> None:
    day = Day(MIN_MINUTES, REAL_START)
    path = tmp_path / "day.json"
    path.write_text(day.script().to_json())
    script = load_day_script(path)
    assert script == day.script()
    first, second = script.showers
    assert (first.start_s - script.day_start_s, first.duration_s) == (
        BEATS_S["shower_1"] * day.speed, (BEATS_S["shower_1_end"] - BEATS_S["shower_1"])
        * day.speed)
    assert [state for _, state in script.trays] == ["retracted", "extended", "retracted"]
    # A node started late maps its start onto the same simulated clock.
    assert script.sim_time(REAL_START + 10, day.speed) == day.sim(REAL_START + 10)

    model = WeatherModel(1, start_s=script.day_start_s, showers=script.showers)
    assert model.showers_until(script.day_start_s + 86400) == list(script.showers)
    assert not model.is_raining(first.start_s - 1) and model.is_raining(first.start_s + 1)
    assert not model.is_raining(first.end_s + 1) and model.is_raining(second.start_s + 1)

    factory, mono = MockFactory(), [0.0]
    pins = YardPins(rain_plate=17, gauge=None, trays={"t1": (5, 6)})
    yard = SimulatedYard(model, factory, pins, speed=day.speed, travel_s=60,
                         monotonic=lambda: mono[0], plan=script.trays)
    try:
        def at(beat: str, after_s: float = 0.0) -> None:
            mono[0] = BEATS_S[beat] + after_s
            yard.step()

        at("batch_start")
        assert factory.pin(6).state is False  # extended: the open-end switch pressed
        at("trays_in_1")
        at("trays_in_1", 1.0)  # 60 s of travel at this speed: in
        assert factory.pin(5).state is False  # the sheltered switch pressed
        at("shower_1", 1.0)
        assert factory.pin(17).state is False  # the plate wet (active low)
        at("trays_out")
        at("trays_out", 1.0)
        assert factory.pin(6).state is False  # out again, as planned, rain or not
    finally:
        yard.close()


def test_a_bad_script_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "day.json"
    path.write_text(json.dumps({"day_start_s": 1, "real_start_s": 2, "showers": [],
                                "trays": [[3, "sideways"]]}))
    with pytest.raises(ConfigError, match=r"day.json: not a day script: .*neither extended"):
        load_day_script(path)


def envelope(node: str | None, kind: str, message: object) -> Envelope:
    return Envelope("chazuta", node, kind, message)  # type: ignore[arg-type]


def test_the_narrator_tells_the_day_in_sentences() -> None:
    narrator = DayNarrator({"norte-1": "Norte"})
    told: list[str] = []

    def send(node: str | None, kind: str, message: object) -> None:
        told.extend(narrator.handle(envelope(node, kind, message)))

    send(None, "alert", Alert(state="clear"))  # the retained "nothing" at subscribe time
    send("norte-1", "telemetry", Telemetry(ts=1, seq=1, rain=False,
                                           trays={"t1": "extended", "t2": "extended"}))
    send(None, "alert", Alert(state="raised", kind="rain_forecast", severity="warning",
                              message="Lluvia en ~45 min", since=1))
    send(None, "alert", Alert(state="raised", kind="rain_forecast", severity="warning",
                              message="Lluvia en ~45 min", since=1))  # re-published: quiet
    send("norte-1", "event", Event(ts=2, seq=2, type="tray_retracted", tray="t1"))
    send("norte-1", "event", Event(ts=3, seq=3, type="tray_retracted", tray="t2"))
    send("norte-1", "event", Event(ts=4, seq=4, type="rain_started"))
    send(None, "alert", Alert(state="raised", kind="rain_now", severity="critical",
                              message="Lluvia en ~45 min", since=1))
    send("norte-1", "event", Event(ts=5, seq=5, type="rain_stopped"))
    send(None, "alert", Alert(state="clear"))
    assert told == [
        'ALERT (warning): rain is coming (the forecast). The nodes\' beacons show it; the '
        'server tells the workers: "Lluvia en ~45 min"',
        "The trays of sector Norte (norte-1) are in, under the roof (their switches say so).",
        "The rain plate of sector Norte (norte-1) is wet: the node's own beacon and buzzer "
        "go off at once.",
        "The alert is now: it is raining on the yard (the rain plates) (critical).",
        "The rain plate of sector Norte (norte-1) is dry again.",
        "ALL CLEAR: the alert has ended (plates dry, no rain forecast); the workers are told "
        "the trays may go out.",
    ]


def test_the_forecast_replay_speaks_open_meteo_and_sees_the_shower() -> None:
    rain = [True]
    replay = ForecastReplay(lambda: rain[0])
    try:
        def fetch() -> dict[str, object]:
            with urllib.request.urlopen(replay.url + "?latitude=-6.57", timeout=10) as answer:
                return json.load(answer)

        now = datetime.now(LIMA).timestamp()
        forecast = parse(fetch(), fetched_at=now)
        # The hour running now is dry (10 %), the next one brings the shower (85 %).
        assert forecast.hours[0].start_ts <= now < forecast.hours[0].end_ts
        assert [h.precip_prob_pct for h in forecast.hours[:3]] == [10.0, 85.0, 70.0]
        hour = first_rain_hour(forecast, now, 90, prob_pct=60, mm_per_h=99)
        assert hour is not None and hour.start_ts == forecast.hours[1].start_ts
        rain[0] = False
        dry = parse(fetch(), fetched_at=now)
        assert first_rain_hour(dry, now, 120, prob_pct=30, mm_per_h=99) is None
    finally:
        replay.close()
