"""How good the forecast is at one yard: its rain episodes, scored against the plates.

Pure: from the rain episodes of the alert store (``AlertStore.history``) to
the figures; no I/O, no InfluxDB client (``secadero alerts --skill`` stays a
quick command). ``skill_report.py`` reads the store and writes the
``forecast_skill`` points.

Each rain episode says what raised it (``details["raised_by"]``:
``rain_forecast`` or ``rain_now``) and when a sensor, plate or gauge, first
said rain in it (``details["wet_ts"]``); the engine records both. So, per
yard and period (episodes *raised* in it):

- **rain**: an episode in which a sensor said rain. Showers closer together
  than the all-clear (no rain expected, sensors dry for ``min_hold_min``)
  are one episode, so one rain.
- **hit**: a rain whose episode the forecast raised before the sensor got
  wet; its **lead** is ``wet_ts - raised_at``, the time the yard had between
  the forecast alert and the rain (median and shortest are given).
- **miss**: a rain whose episode the forecast did not raise: the sensors
  did (or anything else that is not ``rain_forecast``), so the forecast did
  not have it, or not within the look-ahead.
- **false alarm**: an episode the forecast raised that was resolved with no
  sensor ever saying rain. A forecast episode still open and dry is
  **pending**: neither hit nor false alarm yet.
- **hit rate** = hits / rains (None without rains); **false-alarm ratio** =
  false alarms / (hits + false alarms) (None without forecast episodes).

Episodes stored before the engine recorded ``raised_by`` cannot be scored:
they are counted as ``unscored``, not guessed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from secadero.server.alerts.store import Episode


@dataclass(frozen=True, slots=True)
class YardSkill:
    """The forecast's figures for one yard over one period; leads in minutes."""

    yard: str
    since: float
    until: float
    rains: int = 0
    hits: int = 0
    misses: int = 0
    false_alarms: int = 0
    pending: int = 0
    unscored: int = 0
    leads_min: tuple[float, ...] = field(default=())

    @property
    def forecast_episodes(self) -> int:
        """Episodes the forecast raised and that are decided: hits and false alarms."""
        return self.hits + self.false_alarms

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.rains if self.rains else None

    @property
    def false_alarm_ratio(self) -> float | None:
        return self.false_alarms / self.forecast_episodes if self.forecast_episodes else None

    @property
    def lead_median_min(self) -> float | None:
        return statistics.median(self.leads_min) if self.leads_min else None

    @property
    def lead_min_min(self) -> float | None:
        return min(self.leads_min) if self.leads_min else None

    def as_dict(self) -> dict[str, object]:
        """The figures, for ``secadero alerts --skill --json``."""
        return {"yard": self.yard, "since": self.since, "until": self.until,
                "rains": self.rains, "hits": self.hits, "misses": self.misses,
                "false_alarms": self.false_alarms, "pending": self.pending,
                "unscored": self.unscored, "forecast_episodes": self.forecast_episodes,
                "hit_rate": self.hit_rate, "false_alarm_ratio": self.false_alarm_ratio,
                "lead_median_min": self.lead_median_min, "lead_min_min": self.lead_min_min,
                "leads_min": list(self.leads_min)}


def yard_skill(yard: str, episodes: Iterable[Episode], since: float, until: float) -> YardSkill:
    """Score the rain episodes of ``yard`` raised in ``[since, until)``; others are ignored."""
    rains = hits = misses = false_alarms = pending = unscored = 0
    leads: list[float] = []
    for e in sorted(episodes, key=lambda e: (e.raised_at, e.id or 0)):
        if e.yard != yard or e.kind != "rain" or not since <= e.raised_at < until:
            continue
        raised_by = e.details.get("raised_by")
        wet_ts = e.details.get("wet_ts")
        if raised_by is None:
            unscored += 1
            continue
        if wet_ts is not None:
            rains += 1
        if raised_by != "rain_forecast":
            # The sensors raised it (or a warning that became the rain's episode): the
            # forecast did not have the rain, whether or not a sensor got wet later.
            if wet_ts is not None:
                misses += 1
        elif wet_ts is not None:
            hits += 1
            leads.append(max(0.0, wet_ts - e.raised_at) / 60)
        elif e.active:
            pending += 1
        else:
            false_alarms += 1
    return YardSkill(yard, since, until, rains=rains, hits=hits, misses=misses,
                     false_alarms=false_alarms, pending=pending, unscored=unscored,
                     leads_min=tuple(leads))

