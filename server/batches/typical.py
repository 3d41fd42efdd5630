"""The yard's own typical drying day, learnt from its recent climate (pure).

The drying estimate (estimate.py) sends the batch into the days ahead at the
yard's typical day: its mean VPD-weighted drying (kPa·h) over the trays-out
window of the schedule (``DryingSchedule``, local time). A built-in value
(``TYPICAL_DAY_KPA_H``, 15 kPa·h) is a judgement for an Amazon yard in the dry
season; a yard whose air is drier or duller than that is estimated late or
early all batch long (docs/batches.md, "The yard's typical day").

So the server learns it from what the yard's nodes measured over the last
``[batches] typical_day_days`` local days before today (28 by default):

1. ``daily_drying``: for each past local day, each node's open-tray drying,
   as if a tray had been out all the window: the sum of VPD × hours of its
   readings inside the window whose air was dry enough to dry beans
   (RH at or below ``drying_max_humidity_pct``, the rule of the batches'
   drying hours) and whose rain plate was dry. Each reading stands for its
   bucket (``bucket_s``, the series reader's). A node whose readings cover
   less than ``MIN_COVERAGE`` of the window that day (an outage) is left out
   of that day; the rest scale up by their coverage (an outage is not a dull
   day). The day's value is the mean of its nodes'.
2. ``typical_from_days``: in logs, the days' mean ``m`` and standard
   deviation ``s`` (a day that dried less than ``FLOOR_SHARE`` of the
   median day counts as that, so a day of steady rain is very dull, not
   minus infinity). The typical day is ``exp(m + s²/2)``, the mean of a
   lognormal day (the estimate's ``typical_day_kpa_h`` is the mean day), and
   ``s`` its day-to-day spread. Fewer than ``MIN_DAYS`` usable days: the
   built-in day, said so.

Both are pure: the data, the clock (``now``) and the schedule are arguments.
The service reads the climate through ``SeriesReader.read_yard_climate`` when a batch
is started (the first show tries again if InfluxDB did not answer then) and keeps
what it learnt (``BatchStore.keep_typical_day``): the days are past.
``TypicalDay`` lives in model.py (the store keeps it too).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence

from secadero.server.batches.estimate import TYPICAL_DAY_KPA_H, WEATHER_SIGMA, Windows
from secadero.server.batches.model import ClimateSample, DryingSchedule, Interval, TypicalDay

# A node's readings must cover this share of a day's window for the day to count: a
# node down half the morning would otherwise make a sunny day look dull.
__all__ = ["TypicalDay", "built_in", "daily_drying", "learn", "typical_from_days",
           "window_days"]

MIN_COVERAGE = 0.8
# Fewer usable days than this: the built-in typical day. A day's drying varies by about
# ±35 % (WEATHER_SIGMA): seven days put the mean within about ±13 % (one standard error),
# about what a yard differs from the built-in day; fewer would add as much error as
# they remove.
MIN_DAYS = 7
# A day that dried less than this share of the median day counts as this share (logs).
FLOOR_SHARE = 0.1


def built_in(reason: str, *, days: int = 0, since: float | None = None,
             until: float | None = None) -> TypicalDay:
    return TypicalDay(TYPICAL_DAY_KPA_H, WEATHER_SIGMA, "built-in", days, since, until, reason)


def window_days(now: float, schedule: DryingSchedule, days: int) -> tuple[float, float]:
    """The span to read: the start of the window ``days`` local days before ``now``'s,
    to the start of ``now``'s local day's window (today is not over)."""
    windows = Windows(schedule)
    today = windows.window_start(now)
    return windows.window_start(today - days * 86400.0 + 43200.0), today


def daily_drying(samples: Sequence[ClimateSample], wet: Sequence[Interval], *,
                 now: float, schedule: DryingSchedule, days: int, bucket_s: float,
                 max_humidity_pct: float) -> list[float]:
    """Each of the past ``days`` local days' open-tray drying (kPa·h), oldest first;
    days without a node that covered ``MIN_COVERAGE`` of the window are left out."""
    windows = Windows(schedule)
    since, until = window_days(now, schedule, days)
    day_windows = list(windows.between(since, until))
    wet_spans = sorted((w.start, w.end) for w in wet)
    starts = [a for a, _ in day_windows]
    # (day index, node) -> [covered seconds, drying kPa·h]
    sums: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for sample in samples:
        # The window a bucket reaches into (one that begins at 06:58 reaches 07:03).
        day = bisect.bisect_right(starts, sample.ts + bucket_s - 1e-6) - 1
        if day < 0:
            continue
        a, b = day_windows[day]
        lo, hi = max(sample.ts, a), min(sample.ts + bucket_s, b)
        if hi <= lo:
            continue
        if sample.humidity_pct is None or sample.vpd_kpa is None:
            continue  # the sensor gave nothing: not covered
        entry = sums[(day, sample.node)]
        entry[0] += hi - lo
        if sample.humidity_pct <= max_humidity_pct:
            dry_s = (hi - lo) - _overlap(wet_spans, lo, hi)
            entry[1] += sample.vpd_kpa * dry_s / 3600.0
    values = []
    for day, (a, b) in enumerate(day_windows):
        nodes = [drying * (b - a) / covered for (d, _node), (covered, drying) in sums.items()
                 if d == day and covered >= MIN_COVERAGE * (b - a)]
        if nodes:
            values.append(sum(nodes) / len(nodes))
    return values


def typical_from_days(values: Sequence[float], *, since: float | None = None,
                      until: float | None = None) -> TypicalDay:
    """The typical day from the days' drying (kPa·h each); built-in with too few."""
    if len(values) < MIN_DAYS:
        return built_in(f"{len(values)} day(s) of the yard's climate; {MIN_DAYS} needed",
                        days=len(values), since=since, until=until)
    median = statistics.median(values)
    if median <= 0:
        return built_in("the yard's recent days did not dry at all", days=len(values),
                        since=since, until=until)
    logs = [math.log(max(v, FLOOR_SHARE * median)) for v in values]
    mean = statistics.fmean(logs)
    sigma = statistics.stdev(logs)
    return TypicalDay(math.exp(mean + sigma**2 / 2), sigma, "learnt", len(values), since,
                      until)


def learn(samples: Sequence[ClimateSample], wet: Sequence[Interval], *, now: float,
          schedule: DryingSchedule, days: int, bucket_s: float,
          max_humidity_pct: float) -> TypicalDay:
    """``daily_drying`` then ``typical_from_days``: the yard's typical day at ``now``."""
    since, until = window_days(now, schedule, days)
    values = daily_drying(samples, wet, now=now, schedule=schedule, days=days,
                          bucket_s=bucket_s, max_humidity_pct=max_humidity_pct)
    return typical_from_days(values, since=since, until=until)


def _overlap(spans: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in spans if a < hi and b > lo)
