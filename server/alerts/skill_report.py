"""The ``forecast_skill`` points for the dashboards: each yard's figures, once a day and
whenever one of its rain episodes closes.

A small part of the server of its own (built in ``server/app.py``): one
thread, ``forecast-skill``, that every ``check_interval_s`` reads the alert
store (the alert service's, SQLite, thread-safe) and hands a point per yard
that is due to the server's ``PointWriter``; it never waits on InfluxDB.
A yard is due at the first check after the start, ``every_s`` after its
last point, and when a rain episode of it was resolved since its last point
(the figures changed). The figures cover the ``period_days`` before now
(``skill.yard_skill``).

``forecast_skill``: tag ``yard``; fields ``days`` (the period), ``rains``,
``hits``, ``misses``, ``false_alarms``, ``pending`` (integers),
``hit_rate``, ``false_alarm_ratio`` (0..1), ``lead_median_min``,
``lead_min_min`` (floats, left out while undefined: no rain, no forecast
episode); time = when the figures were computed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from influxdb_client import Point

from secadero.server.alerts.skill import YardSkill, yard_skill
from secadero.server.alerts.store import AlertStore
from secadero.server.influx import PointWriter
from secadero.server.metrics import Health, Registry
from secadero.server.points import PRECISION

log = logging.getLogger(__name__)

MEASUREMENT = "forecast_skill"
SOURCE = "forecast_skill"
# A month: enough showers in the rainy season for the figures to mean something, short
# enough that a change of thresholds shows within weeks.
PERIOD_DAYS = 30
# The most rain episodes one yard has in a period, and then some (a few a day).
MAX_EPISODES = 10_000

HELP = {
    "points_total": ("counter", "forecast_skill points handed to the point writer"),
    "errors_total": ("counter", "Checks that failed (reading the alert store raised); "
                                "tried again at the next check"),
}


def skill_line(skill: YardSkill, at: float) -> str:
    """The ``forecast_skill`` point of one yard's figures, at ``at`` (to the millisecond)."""
    point = (Point(MEASUREMENT).tag("yard", skill.yard)
             .field("days", round((skill.until - skill.since) / 86400, 3))
             .field("rains", skill.rains).field("hits", skill.hits)
             .field("misses", skill.misses).field("false_alarms", skill.false_alarms)
             .field("pending", skill.pending))
    for name in ("hit_rate", "false_alarm_ratio", "lead_median_min", "lead_min_min"):
        value = getattr(skill, name)
        if value is not None:
            point = point.field(name, float(value))
    return point.time(round(at * 1000) * 1000, PRECISION).to_line_protocol()


class ForecastSkillReporter:
    """Writes each yard's ``forecast_skill`` point when it is due (see the module)."""

    def __init__(self, store: AlertStore, points: PointWriter, yards: Iterable[str], *,
                 clock: Callable[[], float] = time.time,
                 period_days: float = PERIOD_DAYS, every_s: float = 86400.0,
                 check_interval_s: float = 300.0, registry: Registry | None = None,
                 health: Health | None = None) -> None:
        self.store = store
        self.points = points
        self.yards = sorted(yards)
        self.clock = clock
        self.period_s = period_days * 86400
        self.every_s = every_s
        self.check_interval_s = check_interval_s
        self.metrics = (registry if registry is not None else Registry()).part(
            "forecast_skill", HELP)
        self.health = health if health is not None else Health()
        self._last_point: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def report_due(self, now: float) -> list[YardSkill]:
        """Write the point of every yard that is due; return their figures."""
        written = []
        for yard in self.yards:
            episodes = self.store.history(yard=yard, since=now - self.period_s,
                                          limit=MAX_EPISODES)
            last = self._last_point.get(yard)
            closed_since_last = last is not None and any(
                e.kind == "rain" and e.resolved_at is not None and e.resolved_at > last
                for e in episodes)
            if last is not None and now - last < self.every_s and not closed_since_last:
                continue
            skill = yard_skill(yard, episodes, now - self.period_s, now)
            self.points.submit([skill_line(skill, now)], source=SOURCE)
            self.metrics.inc("points_total")
            self._last_point[yard] = now
            written.append(skill)
        return written

    def _loop(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            try:
                self.report_due(self.clock())
            except Exception:  # the top of the thread: log, count, try at the next check
                self.metrics.inc("errors_total")
                log.exception("forecast skill: the check failed; tried again in %.0f s",
                              self.check_interval_s)

    def start(self) -> ForecastSkillReporter:
        self._thread = threading.Thread(target=self._loop, name="forecast-skill", daemon=True)
        self._thread.start()
        self.health.watch_thread("forecast skill points", self._thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
