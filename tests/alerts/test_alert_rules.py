"""The pure rules and the yard tracker, with plain values and a clock passed in."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from alert_helpers import YARD, at

from secadero.contract import Envelope, Event, Status, Telemetry
from secadero.server.alerts import rules
from secadero.server.alerts.rules import NodeView, YardView
from secadero.server.alerts.state import YardTracker
from secadero.server.forecast import Forecast, ForecastHour
from secadero.server.forecast.openmeteo import parse
from secadero.settings import AlertSettings, check_file, load_server_settings

S = AlertSettings()
NOW = at("12:00")


def forecast(*hours: tuple[str, float | None, float | None], fetched: float = NOW) -> Forecast:
    return Forecast("open-meteo", fetched, tuple(
        ForecastHour(at(start), at(start) + 3600, prob, mm) for start, prob, mm in hours))


def yard(*nodes: NodeView) -> YardView:
    return YardView("norte", "Norte", "America/Lima", nodes)


def expected(f: Forecast, now: float = NOW, *, active: bool = False) -> rules.RainExpected | None:
    return rules.rain_forecast(f, now, S, active=active).expected


def test_rain_forecast_raise_and_clear_thresholds() -> None:
    f = forecast(("13:00", 45.0, 0.0))
    # 45 < 60 to raise; 45 >= 30 to stay raised, but no rain is *expected* at 45 %.
    assert rules.rain_forecast(f, NOW, S, active=False) == rules.ForecastAnswer(False, None)
    assert rules.rain_forecast(f, NOW, S, active=True) == rules.ForecastAnswer(True, None)
    # Nothing at or above 30 %: the episode no longer holds.
    low = forecast(("13:00", 29.0, 0.1))
    assert rules.rain_forecast(low, NOW, S, active=True) == rules.ForecastAnswer(False, None)


def test_the_expected_start_always_comes_from_the_raise_threshold() -> None:
    """The defect of issue 13: held by an hour at the clear threshold, the rain's start
    must stay at the first hour that reaches the raise threshold, not move to "now"."""
    f = forecast(("11:00", 40.0, 0.0), ("12:00", 40.0, 0.3), ("13:00", 80.0, 0.0))
    for active in (False, True):
        answer = rules.rain_forecast(f, NOW + 15 * 60, S, active=active)
        assert answer == rules.ForecastAnswer(True, rules.RainExpected(
            start_ts=at("13:00"), lead_min=45.0, prob_pct=80.0, precip_mm=0.0,
            provider="open-meteo", hour_start_ts=at("13:00")))
    # The amount threshold counts the same way: 0.3 mm/h holds, 0.5 mm/h is expected rain.
    wet = forecast(("12:00", None, 0.3), ("12:30", None, 0.5))
    answer = rules.rain_forecast(wet, NOW, S, active=True)
    assert answer.holds and answer.expected is not None
    assert (answer.expected.start_ts, answer.expected.precip_mm) == (at("12:30"), 0.5)


def test_rain_forecast_lookahead_edges_and_amount() -> None:
    assert expected(forecast(("13:30", 90.0, None))) is None
    hit = expected(forecast(("13:29", 90.0, None)))
    assert hit is not None and hit.lead_min == 89.0
    wet = expected(forecast(("12:30", None, 0.6)))
    assert wet is not None and (wet.prob_pct, wet.precip_mm) == (None, 0.6)
    # an hour already running counts from now
    running = expected(forecast(("11:30", 80.0, None)))
    assert running is not None and (running.start_ts, running.lead_min) == (NOW, 0.0)
    assert running.hour_start_ts == at("11:30")
    # nulls are no evidence
    assert rules.rain_forecast(forecast(("12:30", None, None)), NOW, S,
                               active=True) == rules.ForecastAnswer(False, None)


def test_an_old_forecast_is_not_used() -> None:
    f = forecast(("12:30", 90.0, None), fetched=NOW - 6 * 3600 - 1)
    assert rules.rain_forecast(f, NOW, S, active=True) == rules.ForecastAnswer(False, None)
    assert rules.usable_forecast(f, NOW - 1, S) is f


def test_rain_now_from_plate_or_recent_tip() -> None:
    plate = NodeView("n1", rain_wet=True, rain_changed_ts=NOW - 120)
    tip = NodeView("n2", rain_wet=False, rain_changed_ts=NOW - 9000, last_tip_ts=NOW - 300)
    old_tip = NodeView("n3", rain_wet=False, last_tip_ts=NOW - 601)
    found = rules.rain_now(yard(plate, tip, old_tip), NOW, S)
    assert found is not None and (found.nodes, found.since_ts) == (("n1", "n2"), NOW - 300)
    assert rules.rain_now(yard(old_tip), NOW, S) is None


def test_plates_dry_for() -> None:
    assert rules.plates_dry_for_s(yard(NodeView("n1")), NOW) == math.inf  # no sensor
    assert rules.plates_dry_for_s(yard(NodeView("n1", rain_wet=False, rain_changed_ts=NOW - 60),
                                       NodeView("n2", rain_wet=False, rain_changed_ts=NOW - 30,
                                                last_tip_ts=NOW - 10)), NOW) == 10
    assert rules.plates_dry_for_s(yard(NodeView("n1", rain_wet=True)), NOW) == 0


def test_trays() -> None:
    view = yard(NodeView("n1", trays={"t1": "extended", "t2": "retracted"}),
                NodeView("n2", trays={"t3": "moving"}))
    assert rules.trays_out(view) == ("n1/t1",)
    assert not rules.trays_all_in(view)
    assert rules.trays_all_in(yard(NodeView("n1", trays={"t1": "retracted"})))
    assert not rules.trays_all_in(yard(NodeView("n1")))  # no switches: we cannot know


@pytest.mark.parametrize(("t", "rh", "dew"), [(30.0, 60.0, 21.4), (25.0, 100.0, 25.0),
                                              (30.0, 85.0, 27.2)])
def test_dew_point(t: float, rh: float, dew: float) -> None:
    assert rules.dew_point_c(t, rh) == pytest.approx(dew, abs=0.1)


def test_humidity_surge_needs_two_nodes() -> None:
    rising = ((NOW - 1500, 60.0), (NOW - 600, 70.0), (NOW, 76.0))
    one = NodeView("n1", humidity_pct=76.0, temperature_c=30.0, humidity_history=rising)
    calm = NodeView("n2", humidity_pct=60.0, temperature_c=30.0,
                    humidity_history=((NOW - 600, 60.0), (NOW, 60.0)))
    assert rules.humidity_surge(yard(one, calm), NOW, S) == ()
    assert rules.humidity_surge(yard(one, NodeView("n2", humidity_pct=76.0, temperature_c=30.0,
                                                   humidity_history=rising)), NOW, S) == (
        "n1", "n2")
    # a rise that started before the 30-minute window does not count
    slow = NodeView("n1", humidity_pct=76.0, temperature_c=30.0,
                    humidity_history=((NOW - 1801, 60.0), (NOW - 900, 70.0), (NOW, 76.0)))
    assert rules.humidity_surge(yard(slow), NOW, S) == ()


def test_a_near_dew_point_counts_only_with_a_rise() -> None:
    # 93 % at 25 °C: the dew point 1.2 °C below the air. As a level (a still, humid dawn)
    # it is no surge; after a rise of 8 points within the window it is, and a lone node
    # is enough when it is the only one reporting.
    assert rules.dew_point_c(25.0, 93.0) == pytest.approx(23.8, abs=0.1)
    foggy = NodeView("n1", humidity_pct=93.0, temperature_c=25.0)
    assert rules.humidity_surge(yard(foggy), NOW, S) == ()
    steady = NodeView("n1", humidity_pct=93.0, temperature_c=25.0,
                      humidity_history=((NOW - 1700, 88.0), (NOW, 93.0)))
    assert rules.humidity_surge(yard(steady), NOW, S) == ()
    closing = NodeView("n1", humidity_pct=93.0, temperature_c=25.0,
                       humidity_history=((NOW - 1700, 85.0), (NOW, 93.0)))
    assert rules.humidity_rise(closing, NOW, 1800) == 8.0
    assert rules.humidity_surge(yard(closing), NOW, S) == ("n1",)
    # the same 8-point rise in dry air (dew point far below) is not enough: 15 are needed
    dry = NodeView("n1", humidity_pct=68.0, temperature_c=30.0,
                   humidity_history=((NOW - 1700, 60.0), (NOW, 68.0)))
    assert rules.humidity_surge(yard(dry), NOW, S) == ()


def test_silent_nodes_and_drying_hours() -> None:
    view = yard(NodeView("n1", last_seen_ts=NOW - 601), NodeView("n2", last_seen_ts=NOW - 10),
                NodeView("n3", last_seen_ts=NOW, online=False))
    assert rules.silent_nodes(view, NOW, S) == ("n1", "n3")
    assert rules.in_drying_hours(at("07:00"), "America/Lima", S)
    assert not rules.in_drying_hours(at("18:00"), "America/Lima", S)
    assert not rules.in_drying_hours(at("06:59"), "America/Lima", S)


def test_tracker_keeps_the_newest_state_when_old_messages_are_resent() -> None:
    tracker = YardTracker([YARD])
    tracker.observe(Envelope("norte", "n1", "event", Event(ts=NOW, seq=5, type="rain_started")),
                    NOW)
    # a re-sent telemetry from the node's outbox, measured before the rain
    old = Telemetry(ts=NOW - 60, seq=4, rain=False, trays={"t1": "extended"})
    tracker.observe(Envelope("norte", "n1", "telemetry", old), NOW + 1)
    tracker.observe(Envelope("norte", "n1", "event",
                             Event(ts=NOW + 5, seq=6, type="tray_retracted", tray="t1")), NOW + 5)
    tracker.observe(Envelope("norte", "n1", "event",
                             Event(ts=NOW - 30, seq=3, type="tray_extended", tray="t1")), NOW + 6)
    [node] = tracker.view("norte").nodes
    assert (node.rain_wet, node.rain_changed_ts, dict(node.trays)) == (
        True, NOW, {"t1": "retracted"})


def test_tracker_presence_and_unknown_yards() -> None:
    tracker = YardTracker([YARD])
    assert tracker.observe(Envelope("norte", "n1", "status", Status("offline", NOW)), NOW)
    assert not tracker.observe(Envelope("sur", "n1", "status", Status("online", NOW)), NOW)
    assert tracker.ignored == 1
    [node] = tracker.view("norte").nodes
    assert node.online is False


def test_open_meteo_unixtime_format() -> None:
    body = {"utc_offset_seconds": -18000, "hourly_units": {"time": "unixtime"},
            "hourly": {"time": [1781550000, 1781553600],
                       "precipitation_probability": [10, 90],
                       "precipitation": [0.0, 1.4], "weather_code": [3, 81]}}
    f = parse(body, fetched_at=0)
    assert [(h.start_ts, h.end_ts, h.precip_prob_pct, h.precip_mm, h.weather_code)
            for h in f.hours] == [(1781546400, 1781550000, 10.0, 0.0, 3),
                                  (1781550000, 1781553600, 90.0, 1.4, 81)]


def test_dew_point_rise_pct_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text("[alerts]\ndew_point_rise_pct = 5\n")
    assert load_server_settings(path, {}).alerts.dew_point_rise_pct == 5
    assert AlertSettings().dew_point_rise_pct == 8.0
    path.write_text("[alerts]\ndew_point_rise_pct = 0\n")
    assert check_file(path, env={}) == [
        f"{path}: alerts.dew_point_rise_pct: must be at least 1, got 0"]
