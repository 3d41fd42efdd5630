"""A replayed week at the simulated yard, scored: how good was the forecast at Norte?

A week, Monday to Sunday, two weeks before today (recent, so InfluxDB keeps
its points) at ``alert_helpers.SimYard``, a minute at a time from 06:00 to
20:00 each day, America/Lima: the engine, its SQLite store
and the dispatcher are the real ones, the forecast and the notifiers fakes.
The forecast says 5 % for every hour except the ones the test names; the
plates get wet when the test says so. The ``forecast_skill`` points go to
the real InfluxDB the fixture starts, through the server's ``PointWriter``.

The week:

- Mon: 80 % for 14:00; raised 12:31 (the 90-minute look-ahead); the plate
  is wet at 14:10: a hit, 99 minutes of lead.
- Tue: dry, nothing forecast.
- Wed: 70 % for 15:00; raised 13:31; wet early, at 14:02: a hit, 31 min.
- Thu: nothing forecast; the plate is wet at 10:12: a miss.
- Fri: 75 % for 16:00; raised 14:31; no rain: a false alarm.
- Sat: 90 % for 11:00; raised 09:31; wet at 11:20: a hit, 109 min.
- Sun: 65 % for 13:00; raised 11:31; wet 12:45-12:55 and 13:10-13:30, one
  rain (the all-clear never held in between): a hit, 74 min.

So: 5 rains, 4 hits, 1 miss, 1 false alarm; hit rate 4/5, false-alarm
ratio 1/5; leads 31, 74, 99, 109 min: median 86.5, shortest 31.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alert_helpers import LIMA, SimYard
from conftest import influx_query

from secadero.cli import main
from secadero.contract import Telemetry
from secadero.server.alerts.cli import skill_text
from secadero.server.alerts.skill import YardSkill, yard_skill
from secadero.server.alerts.skill_report import ForecastSkillReporter
from secadero.server.alerts.store import Episode
from secadero.server.forecast import Forecast, ForecastHour, ForecastStatus
from secadero.server.influx import InfluxV1Writer, PointWriter
from secadero.server.metrics import Registry

WAIT_S = 10
TODAY = date.today()
MONDAY = TODAY - timedelta(days=TODAY.weekday() + 14)
WEEK = [MONDAY + timedelta(days=n) for n in range(7)]
MON, TUE, WED, THU, FRI, SAT, SUN, NEXT_MON = range(8)


def when(day: int, hhmm: str) -> float:
    """UNIX time of a local clock time at the yard, ``day`` days after the week's Monday."""
    hours, minutes = (int(p) for p in hhmm.split(":"))
    return datetime.combine(MONDAY + timedelta(days=day), datetime.min.time(), LIMA
                            ).replace(hour=hours, minute=minutes).timestamp()


class WeekYard(SimYard):
    """``SimYard`` over several days: the forecast by the hour's start, any day."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.prob_at: dict[float, float] = {}  # the hour's start (UNIX s) -> probability %
        self.events: list[tuple[float, Callable[[], None]]] = []  # (when, what), any day

    def _poll_forecast(self) -> None:
        hour0 = self.now - self.now % 3600
        hours = tuple(ForecastHour(start_ts=hour0 + h * 3600, end_ts=hour0 + (h + 1) * 3600,
                                   precip_prob_pct=self.prob_at.get(hour0 + h * 3600, 5.0),
                                   precip_mm=0.0)
                      for h in range(48))
        self.forecast_status = ForecastStatus(Forecast("open-meteo", self.now, hours))

    def replay(self, days: range) -> None:
        """Each day from 06:00 to 20:00, a minute at a time (nights are quiet and dry)."""
        for day in days:
            self.now = when(day, "06:00")
            self.run_until(when(day, "20:00"))

    def run_until(self, end: float) -> None:
        # SimYard.run's loop, which takes a clock time on its one scenario day.
        while self.now <= end:
            for due in [e for e in self.events if e[0] <= self.now]:
                self.events.remove(due)
                due[1]()
            if round(self.now) % 900 == 0:
                self._poll_forecast()
            self._telemetry()
            self.alerts.evaluate(self.now)
            self.now += 60

    def _telemetry(self) -> None:
        for node, sim in self.nodes.items():
            sim.seq += 1
            self._send(node, Telemetry(ts=self.now, seq=sim.seq,
                                       temperature_c=sim.temperature_c,
                                       humidity_pct=sim.humidity_pct, rain=sim.wet,
                                       rain_mm=sim.tip_mm, trays=dict(sim.trays)))

    def forecast(self, day: int, hhmm: str, prob_pct: float) -> None:
        self.prob_at[when(day, hhmm)] = prob_pct

    def wet(self, day: int, start: str, end: str) -> None:
        self.events += [(when(day, start), self.rain("n1", True)),
                        (when(day, end), self.rain("n1", False))]


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> WeekYard:
    """The week above, replayed once for the tests of this module (they only read it)."""
    yard = WeekYard(tmp_path_factory.mktemp("week"))
    yard.forecast(MON, "14:00", 80)
    yard.wet(MON, "14:10", "15:05")
    yard.forecast(WED, "15:00", 70)
    yard.wet(WED, "14:02", "14:40")
    yard.wet(THU, "10:12", "10:40")
    yard.forecast(FRI, "16:00", 75)
    yard.forecast(SAT, "11:00", 90)
    yard.wet(SAT, "11:20", "11:50")
    yard.forecast(SUN, "13:00", 65)
    yard.wet(SUN, "12:45", "12:55")
    yard.wet(SUN, "13:10", "13:30")
    yard.replay(range(MON, SUN + 1))
    return yard


def test_the_week_s_rain_episodes_say_what_raised_them_and_when_the_plate_got_wet(
        week: WeekYard) -> None:
    episodes = sorted(week.store.history(limit=100), key=lambda e: e.raised_at)
    assert [(e.kind, e.state) for e in episodes] == [("rain", "resolved")] * 6
    assert [(e.raised_at, e.details["raised_by"], e.details.get("wet_ts"))
            for e in episodes] == [
        (when(MON, "12:31"), "rain_forecast", when(MON, "14:10")),
        (when(WED, "13:31"), "rain_forecast", when(WED, "14:02")),
        (when(THU, "10:12"), "rain_now", when(THU, "10:12")),
        (when(FRI, "14:31"), "rain_forecast", None),
        (when(SAT, "09:31"), "rain_forecast", when(SAT, "11:20")),
        (when(SUN, "11:31"), "rain_forecast", when(SUN, "12:45")),
    ]


def test_the_week_s_forecast_skill(week: WeekYard) -> None:
    skill = yard_skill("norte", week.store.history(limit=100), when(MON, "00:00"),
                       when(NEXT_MON, "00:00"))
    assert skill == YardSkill("norte", when(MON, "00:00"), when(NEXT_MON, "00:00"), rains=5,
                              hits=4, misses=1, false_alarms=1, pending=0, unscored=0,
                              leads_min=(99.0, 31.0, 109.0, 74.0))
    assert (skill.hit_rate, skill.false_alarm_ratio) == (0.8, 0.2)
    assert (skill.lead_median_min, skill.lead_min_min) == (86.5, 31.0)
    assert skill_text(skill).splitlines() == [
        "rains seen by the sensors: 5; the forecast had 4 (hit rate 80%), missed 1",
        "lead before the rain: median 86 min, shortest 31 min",
        "forecast alerts: 5, false alarms 1 (false-alarm ratio 20%)",
    ]


def test_a_period_scores_only_the_episodes_raised_in_it(week: WeekYard) -> None:
    # Thursday to Friday: the miss and the false alarm, nothing else.
    skill = yard_skill("norte", week.store.history(limit=100), when(THU, "00:00"),
                       when(SAT, "00:00"))
    assert (skill.rains, skill.hits, skill.misses, skill.false_alarms) == (1, 0, 1, 1)
    assert (skill.hit_rate, skill.false_alarm_ratio, skill.lead_median_min) == (0.0, 1.0, None)
    # Another yard's figures are empty, not Norte's.
    other = yard_skill("sur", week.store.history(limit=100), when(MON, "00:00"),
                       when(NEXT_MON, "00:00"))
    assert (other.rains, other.forecast_episodes, other.hit_rate) == (0, 0, None)


def test_secadero_alerts_skill_prints_the_figures(week: WeekYard, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f"""
[alerts]
database = "{week.store.path}"

[[yards]]
id = "norte"
name = "Norte"
latitude = -6.57
longitude = -76.14
""")
    capsys.readouterr()
    assert main(["alerts", "--config", str(config), "--skill", "--since", MONDAY.isoformat()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"norte (Norte), {MONDAY.isoformat()} 00:00 to ")
    assert out[1:] == [
        "    rains seen by the sensors: 5; the forecast had 4 (hit rate 80%), missed 1",
        "    lead before the rain: median 86 min, shortest 31 min",
        "    forecast alerts: 5, false alarms 1 (false-alarm ratio 20%)",
    ]
    assert main(["alerts", "--config", str(config), "--skill", "--since", WEEK[THU].isoformat(),
                 "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["since"] == when(THU, "00:00")
    assert {k: row[k] for k in ("yard", "rains", "hits", "misses", "false_alarms",
                                "hit_rate", "false_alarm_ratio", "lead_median_min",
                                "leads_min")} == {
        "yard": "norte", "rains": 3, "hits": 2, "misses": 1, "false_alarms": 1,
        "hit_rate": 2 / 3, "false_alarm_ratio": 1 / 3, "lead_median_min": 91.5,
        "leads_min": [109.0, 74.0]}
    # --days: the last N days up to now, which hold the whole week.
    assert main(["alerts", "--config", str(config), "--skill", "--days", "30", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["rains"], row["hits"], row["misses"], row["false_alarms"]) == (5, 4, 1, 1)
    # A period without --skill is refused, not ignored.
    assert main(["alerts", "--config", str(config), "--days", "7"]) == 2
    assert capsys.readouterr().out == "--days and --since are for --skill\n"


def test_a_bad_period_is_refused_with_a_reason(week: WeekYard, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["alerts", "--config", str(tmp_path / "none.toml"), "--skill", "--days", "-3"])
    assert exit_info.value.code == 2
    assert "not a number of days above 0: '-3'" in capsys.readouterr().err


@pytest.mark.integration
def test_the_forecast_skill_points_reach_influxdb(week: WeekYard, influxdb: Any,
                                                  unique_name: str) -> None:
    """Written by the reporter through a real ``PointWriter`` into the fixture's InfluxDB.

    The points are written at the replayed times, once a day."""
    settings = influxdb.settings(unique_name)
    InfluxV1Writer(settings).prepare()
    registry = Registry()
    points = PointWriter.from_settings(settings, registry=registry).start()
    reporter = ForecastSkillReporter(week.store, points, ["norte"], period_days=7,
                                     registry=registry)
    monday = when(NEXT_MON, "06:00")
    try:
        [written] = reporter.report_due(monday)
        assert (written.rains, written.hits) == (5, 4)
        assert reporter.report_due(monday + 3600) == []  # not a day yet, nothing closed
        [next_day] = reporter.report_due(monday + 86400)
        # The week slid by a day: Monday's hit left the period.
        assert (next_day.rains, next_day.hits, next_day.lead_min_min) == (4, 3, 31.0)
    finally:
        points.stop()
    rows = influx_query(influxdb.url, unique_name,
                        "SELECT * FROM forecast_skill WHERE yard = 'norte'")
    assert rows == [
        {"time": round(monday * 1000), "yard": "norte", "days": 7.0, "rains": 5, "hits": 4,
         "misses": 1, "false_alarms": 1, "pending": 0, "hit_rate": 0.8,
         "false_alarm_ratio": 0.2, "lead_median_min": 86.5, "lead_min_min": 31.0},
        {"time": round((monday + 86400) * 1000), "yard": "norte", "days": 7.0, "rains": 4,
         "hits": 3, "misses": 1, "false_alarms": 1, "pending": 0, "hit_rate": 0.75,
         "false_alarm_ratio": 0.25, "lead_median_min": 74.0, "lead_min_min": 31.0},
    ]
    assert registry.part("forecast_skill").total("points_total") == 2
    assert registry.part("influx").by_label("points_written_total", "source") == {
        "forecast_skill": 2}


@pytest.mark.integration
def test_a_rain_episode_closing_brings_the_next_point_forward(
        tmp_path: Path, influxdb: Any, unique_name: str) -> None:
    """A day after the week (Monday): the morning's point, then a shower nobody forecast;
    the check after its episode closed writes the figures at once, not the next day."""
    settings = influxdb.settings(unique_name)
    InfluxV1Writer(settings).prepare()
    yard = WeekYard(tmp_path)
    points = PointWriter.from_settings(settings).start()
    reporter = ForecastSkillReporter(yard.store, points, ["norte"], period_days=7)
    try:
        assert [s.rains for s in reporter.report_due(when(NEXT_MON, "06:00"))] == [0]
        yard.wet(NEXT_MON, "10:12", "10:40")
        yard.now = when(NEXT_MON, "06:00")
        yard.run_until(when(NEXT_MON, "11:00"))
        # Still open (the all-clear holds 30 min after 30 min dry): nothing is due.
        assert reporter.report_due(when(NEXT_MON, "11:00")) == []
        yard.run_until(when(NEXT_MON, "12:00"))
        [episode] = yard.store.history()
        assert (episode.state, episode.resolved_at) == ("resolved", when(NEXT_MON, "11:40"))
        [after] = reporter.report_due(when(NEXT_MON, "12:00"))
        assert (after.rains, after.hits, after.misses, after.hit_rate) == (1, 0, 1, 0.0)
    finally:
        points.stop()
    rows = influx_query(influxdb.url, unique_name, "SELECT * FROM forecast_skill")
    # Without rain or forecast episodes the ratios and leads are left out, not zero (a
    # SELECT * shows only the fields some point has: no false-alarm ratio, no lead yet).
    assert rows == [
        {"time": round(when(NEXT_MON, "06:00") * 1000), "yard": "norte", "days": 7,
         "rains": 0, "hits": 0, "misses": 0, "false_alarms": 0, "pending": 0,
         "hit_rate": None},
        {"time": round(when(NEXT_MON, "12:00") * 1000), "yard": "norte", "days": 7,
         "rains": 1, "hits": 0, "misses": 1, "false_alarms": 0, "pending": 0,
         "hit_rate": 0.0},
    ]


def test_open_and_unrecorded_episodes_are_counted_apart() -> None:
    """A forecast episode still open and dry is pending, not a false alarm; an episode
    stored before the engine recorded what raised it is unscored, not guessed."""
    raised = when(MON, "12:31")
    episodes = [
        Episode(yard="norte", kind="rain", cause="rain_forecast", severity="warning",
                raised_at=raised, details={"raised_by": "rain_forecast"}, id=1),
        Episode(yard="norte", kind="rain", cause="rain_now", severity="critical",
                raised_at=raised - 86400, state="resolved", resolved_at=raised - 80000,
                details={"start_ts": raised - 86400}, id=2),
        Episode(yard="norte", kind="humidity_surge", cause="humidity_surge",
                severity="warning", raised_at=raised - 3600, details={}, id=3),
    ]
    skill = yard_skill("norte", episodes, raised - 7 * 86400, raised + 60)
    assert skill == YardSkill("norte", raised - 7 * 86400, raised + 60, pending=1, unscored=1)
    assert skill_text(skill).splitlines()[-2:] == [
        "forecast alerts still open and dry (not counted yet): 1",
        "rain alerts from before the skill was recorded (not counted): 1",
    ]
