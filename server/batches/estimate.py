"""When a batch will be dry: a range of instants from its moisture readings (pure).

The model (docs/batches.md, "When will it be dry"): beans dry along a Lewis
thin-layer curve on the dry-basis moisture ratio,

    MR = (X - Xe) / (X0 - Xe) = exp(-k * tau),   X = w / (1 - w)  (w: wet basis),

where ``tau`` is not clock time but **drying power received**: the hours of
the batch's drying periods (trays out, plate dry, air dry enough), each
weighted by its mean vapour-pressure deficit (kPa·h). Nights, rain and humid
mornings add nothing to ``tau``, so they need no special case.

``ln(X - Xe)`` is then a straight line in ``tau``, of slope ``-k``. ``k`` is
learnt by Bayes' rule: the prior is lognormal around the published open-air
speed (Puello-Mendez et al. 2017: 58 % -> 7 % in 6 days, k = 0.76/day, over
the yard's typical day) with the spread of the published durations; the
likelihood is the readings' through the meter's noise, each segment's level
free. One reading already gives a (wide) estimate and each further reading
narrows it. Each reading's weight is the meter's noise seen through the
logarithm at the fitted curve: near the target a 0.3-point error in ``w`` is a
large error in ``ln(X - Xe)``, so the late readings count less for the slope.

Into the future the batch receives the yard's usual open-tray window
(``DryingSchedule``, local time), hour by hour as its past days dried, at the
level of its past days (in logs, pulled towards the typical day), times a
random weather factor for each day; the rest of today at today's factor as
its drying so far shows it. The range (P20, P50, P80) comes from drawing,
many times, the curve from its posterior and the weather ahead, and reading
the quantiles of the instants at which the curve crosses the target. The
draws use a fixed seed: the same input gives the same estimate.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from secadero.server.batches.model import (
    BatchError,
    DryingPeriod,
    DryingSchedule,
    Estimate,
    MoistureReading,
)

# ------------------------------------------------------------------ the model's constants

# Equilibrium moisture, dry basis. Computed here so that Puello-Mendez's first-order
# constant and duration agree: 58 % -> 7 % in 6 days with k = 0.76/day on MR needs
# Xe = 0.061 (5.8 % wet basis). The GAB isotherm for Trinitario beans (Sandoval et al.
# 2020) puts 5.8 % at about 55 % RH: the air of a sunny drying hour.
EQUILIBRIUM_X = 0.0614

# A typical drying day in an Amazon yard in the dry season: about 10 drying hours at a
# mean VPD of 1.5 kPa (afternoons of 30-32 °C at 55-60 % RH give about 2 kPa, mornings
# under 1), so 15 kPa·h per day of 11 open-tray hours. Judgement, not a published figure:
# docs/batches.md shows what a yard 25 % duller than this costs.
TYPICAL_DAY_KPA_H = 15.0
TYPICAL_VPD_KPA = 1.5

# The prior on k, per kPa·h of VPD-weighted drying time: lognormal, its median
# 0.76/day (Puello-Mendez et al. 2017, open air, 58 % -> 7 % in 6 days) over the yard's
# typical day (``typical_day_kpa_h``: the published days were typical days), its
# spread that of the published sun-drying durations (Dzelagha et al. 2020, Table 1: 2
# to 10 days; their median is 6 days too): the standard deviation of their logarithms,
# 0.48. A 2-day batch (k three times the published) is then 2.3 standard deviations
# out, unlikely but believable; a normal prior on k (0.76 ± 0.46 per day) put it 2.8
# out, and gave weight to k below zero.
PUBLISHED_DRYING_DAYS = (6.0, 7.0, 8.0, 10.0, 2.0, 5.0, 5.0, 7.0, 9.0)
PRIOR_K_PER_DAY = 0.76
PRIOR_K_PER_KPA_H = PRIOR_K_PER_DAY / TYPICAL_DAY_KPA_H  # on the built-in typical day
PRIOR_LN_K_SD = statistics.stdev(math.log(d) for d in PUBLISHED_DRYING_DAYS)

# The yard's level ahead (its days against the typical day, in logs) starts from the
# typical day and moves towards this batch's own days, each of which counts as one day
# against the typical day's weight in days (``typical_day_days``): one day's factor
# varies by ±35 %, so the level is only as good as the days it stands on. A typical day
# learnt from the yard's climate counts as the days it was learnt from (28 by default:
# a batch's three or four days then move it a little); the built-in day, a judgement
# for any Amazon yard, counts as this many, so a batch's own first three days have an
# equal say.
BUILT_IN_DAY_WEIGHT_DAYS = 3.0
# The hours of the day (how a window's drying is shared over its hours) are learnt from
# the batch's own days only, each pulled towards a flat day by this many days.
HOUR_PROFILE_PRIOR_DAYS = 3.0

# The noise of a moisture meter (standard deviation, percentage points: a reading
# to about ±0.5 %), and how far the Lewis line itself misses cocoa beans (in ln(X - Xe);
# published Lewis/Page fits for cocoa have RMSE 0.02-0.03 in MR).
METER_SD_PCT = 0.3
MODEL_SD_LN = 0.05

# A reading this much above the previous one is rewetting (rain, a humid night with
# trays out), not the meter's noise: the curve starts again from it, with the same k.
REWETTING_RISE_PCT = 1.0

# Day-to-day weather: each future day's drying power is the yard's median day's times a
# lognormal factor of sigma 0.35 (median 1), the day's weather factor of the reference
# simulation (docs/batches.md). The drying hours are VPD-weighted, so this is the
# spread of a day's VPD-weighted drying: in the bench's harsher yard, showers and humid
# mornings included, it is 0.37.
WEATHER_SIGMA = 0.35

# Today's weather shows in today's drying so far: a bright morning is a bright day. Its
# hours so far count against this many open hours of the day-to-day prior, before the
# batch's own days say better: the first half hour of usual drying says half of what
# the day will be, two hours four fifths. (Measured: 2 hours, the value before, cost
# the reference's yard half a point to a point at half time and changed the harsher
# yard's by less than its noise, docs/batches.md.) Today's drying is counted against
# the same hours of the past days, so a humid first hour every morning expects nothing.
TODAY_PRIOR_OPEN_HOURS = 0.5
# ... a prior worth this many past days: the batch's own days show how well its
# mornings foretell its afternoons (``_today_noise``).
TODAY_NOISE_PRIOR_DAYS = 1.0

# 400 draws put P20 and P80 within about 2 % of their probability; a fixed seed makes
# the estimate a function of its input (the same readings, the same answer).
DRAWS = 400
SEED = 8
# Draws that have not crossed the target this many days ahead count as "not dry".
HORIZON_DAYS = 30


# ------------------------------------------------------------------ the estimate


def estimate(
    readings: Sequence[MoistureReading],
    periods: Sequence[DryingPeriod],
    *,
    now: float,
    target_pct: float,
    schedule: DryingSchedule,
    typical_day_kpa_h: float = TYPICAL_DAY_KPA_H,
    typical_day_days: float | None = None,
    weather_sigma: float = WEATHER_SIGMA,
) -> Estimate:
    """When the batch's beans reach ``target_pct`` (wet basis): P20, P50, P80 instants.

    ``readings``: the batch's moisture readings up to ``now`` (any order);
    ``periods``: its drying periods so far (parts after ``now`` are ignored).
    The instants are UNIX seconds; each falls inside the schedule's window of its
    local day, or, when the fitted curve says the target was already crossed
    without a reading to show it, inside a past drying period ("measure now").

    ``typical_day_kpa_h``: the yard's drying power on a typical day of the schedule
    (VPD-weighted drying hours, kPa·h), for the days ahead; pass the yard's own (the
    mean of its recent days' drying periods) when it is known (server/batches/typical.py).
    ``typical_day_days``: how many days that typical day stands for, its weight against
    each of the batch's own past days: the days a learnt one was learnt from; None (the
    built-in day) counts as ``BUILT_IN_DAY_WEIGHT_DAYS``.
    ``weather_sigma``: the spread of a day's drying around the yard's level, in logs
    (the day-to-day weather of the days ahead).

    Already at the target (the latest readings at or below it): ``reached_at`` is
    the first reading of that final run and no range is given. No reading at all:
    no range, and ``reason`` says why. Bad input raises ``BatchError`` naming the field.
    """
    _check(readings, periods, now=now, target_pct=target_pct)
    if typical_day_kpa_h <= 0:
        raise BatchError("typical_day_kpa_h", f"must be above 0, got {typical_day_kpa_h!r}")
    if typical_day_days is None:
        typical_day_days = BUILT_IN_DAY_WEIGHT_DAYS
    if not typical_day_days > 0:
        raise BatchError("typical_day_days", f"must be above 0, got {typical_day_days!r}")
    if not weather_sigma > 0:
        raise BatchError("weather_sigma", f"must be above 0, got {weather_sigma!r}")
    windows = Windows(schedule)
    ordered = sorted(readings, key=lambda r: r.ts)
    if not ordered:
        return Estimate(target_pct, reason="needs at least one moisture reading")
    reached_at = _reached_at(ordered, target_pct)
    if reached_at is not None:
        return Estimate(target_pct, reached_at=reached_at,
                        details={"readings": float(len(ordered))})
    target_x = _dry_basis(target_pct)
    if target_x <= EQUILIBRIUM_X:
        return Estimate(target_pct, reason=(
            f"target {target_pct:g} % is at or below the model's equilibrium moisture "
            f"({_wet_basis(EQUILIBRIUM_X):.1f} %): sun drying does not get there"))

    assumed = not periods
    if assumed:
        # No drying period at all (no climate data for the batch, or not computed): assume
        # the schedule's windows since the first reading dried at the typical VPD, rather
        # than put every reading at the same drying time. Said in details.
        periods = [DryingPeriod(a, b, typical_day_kpa_h / windows.hours_per_day)
                   for a, b in windows.between(ordered[0].ts, now)]
    clock = _DryingClock(periods, now)
    fit = _fit(ordered, clock, PRIOR_K_PER_DAY / typical_day_kpa_h)
    first_ts = min(ordered[0].ts, clock.first_start if clock.first_start is not None else now)
    target_y = math.log(target_x - EQUILIBRIUM_X)
    typical_rate = typical_day_kpa_h / windows.hours_per_day
    outlook = _outlook(clock, windows, first_ts, now, typical_rate, typical_day_days,
                       weather_sigma)
    efficiency = typical_rate * outlook.expected_factor
    instants = _crossings(fit, clock, outlook, target_y)
    p20, p50, p80 = (_quantile(instants, q) for q in (0.2, 0.5, 0.8))
    details = {
        "readings": float(len(ordered)),
        "segments": float(fit.segments),
        "k_per_kpa_h": fit.k,
        "k_sd_per_kpa_h": fit.k_sd,
        "k_per_open_day": fit.k * efficiency * windows.hours_per_day,
        "drying_h": clock.hours,
        "drying_kpa_h": clock.total,
        "kpa_h_per_open_h": efficiency,
        "today_factor": math.exp(outlook.today_mu + outlook.today_sigma**2 / 2),
        "level_ln": outlook.level,
        "equilibrium_pct": _wet_basis(EQUILIBRIUM_X),
        "not_dry_within_horizon": sum(math.isinf(t) for t in instants) / len(instants),
        "periods_assumed": float(assumed),
    }
    if fit.k > 0:  # where the fitted curve (its best values) crosses the target, in kPa·h
        details["crossing_kpa_h"] = fit.level_tau + (fit.level - target_y) / fit.k
    if p50 is None:
        return Estimate(target_pct, p20_ts=p20, details=details, reason=(
            f"the readings show no drying: no crossing of {target_pct:g} % "
            f"within {HORIZON_DAYS} days"))
    return Estimate(target_pct, p20_ts=p20, p50_ts=p50, p80_ts=p80, details=details)


# ------------------------------------------------------------------ input checks


def _check(readings: Sequence[MoistureReading], periods: Sequence[DryingPeriod], *,
           now: float, target_pct: float) -> None:
    if not 0 < target_pct < 100:
        raise BatchError("target_pct", f"must be between 0 and 100 %, got {target_pct!r}")
    for reading in readings:
        if not 0 <= reading.moisture_pct < 100:
            raise BatchError("moisture_pct", "must be from 0 to below 100 % (wet basis), "
                             f"got {reading.moisture_pct!r} at {reading.ts}")
        if reading.ts > now:
            raise BatchError("readings", f"a reading at {reading.ts} is after now ({now})")
    for period in periods:
        if period.end < period.start:
            raise BatchError("periods", f"a drying period ends ({period.end}) before it "
                             f"starts ({period.start})")
        if period.vpd_kpa is not None and period.vpd_kpa < 0:
            raise BatchError("periods", f"negative VPD {period.vpd_kpa!r} kPa")


def _reached_at(ordered: Sequence[MoistureReading], target_pct: float) -> float | None:
    """The first of the final run of readings at or below the target, if the latest is."""
    reached = None
    for reading in reversed(ordered):
        if reading.moisture_pct > target_pct:
            break
        reached = reading.ts
    return reached


def _dry_basis(wet_pct: float) -> float:
    w = wet_pct / 100.0
    return w / (1.0 - w)


def _wet_basis(x: float) -> float:
    return 100.0 * x / (1.0 + x)


# ------------------------------------------------------------------ drying time


class _DryingClock:
    """The batch's VPD-weighted drying time (kPa·h) at any instant up to ``now``."""

    def __init__(self, periods: Sequence[DryingPeriod], now: float) -> None:
        spans = sorted((p for p in periods if p.start < now and p.end > p.start),
                       key=lambda p: p.start)
        known = [(p.vpd_kpa, (min(p.end, now) - p.start) * p.share) for p in spans
                 if p.vpd_kpa is not None]
        known_s = sum(s for _, s in known)
        # A period without VPD (its sensor gave nothing) counts at the batch's mean VPD,
        # or the typical day's when no period has one.
        fallback_vpd = (sum(v * s for v, s in known) / known_s) if known_s else TYPICAL_VPD_KPA
        self.first_start = spans[0].start if spans else None
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._rates: list[float] = []  # kPa·h per second of the span
        self._before: list[float] = []  # kPa·h accumulated before the span
        total = 0.0
        seconds = 0.0
        for p in spans:
            end = min(p.end, now)
            vpd = p.vpd_kpa if p.vpd_kpa is not None else fallback_vpd
            # A span in which only part of the batch's trays were out dries that part.
            share = p.share
            self._starts.append(p.start)
            self._ends.append(end)
            self._rates.append(vpd * share / 3600.0)
            self._before.append(total)
            total += vpd * share * (end - p.start) / 3600.0
            seconds += share * (end - p.start)
        self.total = total
        self.hours = seconds / 3600.0

    def at(self, ts: float) -> float:
        """Drying time received before ``ts``."""
        i = bisect.bisect_right(self._starts, ts) - 1
        if i < 0:
            return 0.0
        return self._before[i] + self._rates[i] * (min(ts, self._ends[i]) - self._starts[i])

    def instant(self, tau: float) -> float:
        """The instant at which the batch had received ``tau`` (within a past period)."""
        if not self._starts:
            return math.inf
        i = max(bisect.bisect_right(self._before, tau) - 1, 0)
        rate = self._rates[i]
        offset = (tau - self._before[i]) / rate if rate > 0 else 0.0
        return self._starts[i] + min(max(offset, 0.0), self._ends[i] - self._starts[i])


# A day's window, for the days ahead: (start, end, kPa·h per hour on a median day) spans.
_Day = tuple[tuple[float, float, float], ...]


@dataclass(frozen=True, slots=True)
class _Outlook:
    """The drying ahead, in a lognormal model of the days' weather.

    Each coming window is split into its hours, each with the typical drying power
    shaped by the hour of the day (``days``; today's rest is ``today``, None when
    ``now`` is outside the windows). A coming day's drying is that times
    ``exp(level + day)``: ``level``, the log of this yard's days against the typical
    day, is known to ``level_sd``; ``day`` is the day's own weather, N(0, s²) (s:
    ``sigma``, the estimate's ``weather_sigma``). Today's rest:
    ``exp(today_mu + N(0, today_sigma²))``.
    """

    days: tuple[_Day, ...]
    level: float
    level_sd: float
    sigma: float
    today: _Day | None = None
    today_mu: float = 0.0
    today_sigma: float = WEATHER_SIGMA

    @property
    def expected_factor(self) -> float:
        """A coming day's mean drying against the typical day's."""
        return math.exp(self.level + (self.level_sd**2 + self.sigma**2) / 2)


def _outlook(clock: _DryingClock, windows: Windows, first_ts: float, now: float,
             typical_rate: float, typical_days: float, sigma: float) -> _Outlook:
    """The outlook from the batch's drying so far (``typical_rate``: kPa·h per open hour
    of the typical day, its mean day, which stands for ``typical_days`` days).

    **The level.** In logs, each past day's drying per open hour against the typical
    rate, ``l_d``, is the yard's level plus the day's weather. The level's prior is the
    typical day's median, -s²/2, worth ``typical_days`` days; each past day counts as
    its share of a window. Averaging logs, not kPa·h, is what
    keeps P50 from leaning late: the mean of a few skewed days is more often below the
    yard's mean than above it, and the days ahead are drawn from that mean.

    **The hours of the day.** Each hour of the window dries, per hour, its share of the
    day: the batch's past days at that hour, pulled towards a flat day by
    ``HOUR_PROFILE_PRIOR_DAYS``.

    **Today.** Today's drying so far against the same hours of the past days (their
    geometric mean: like for like, a humid first hour every morning expects nothing)
    shows today's factor: in logs, the prior N(level, s²) moves the share
    w = e / (e + TODAY_PRIOR_OPEN_HOURS) of the way to it, e being the open hours of
    usual drying seen today; the variance is (1 - w) s². On the batch's first day there
    are no past hours to compare with, and today is drawn as any day.
    """
    today_start = windows.window_start(now)
    hours = math.ceil(windows.hours_per_day - 1e-9)
    bin_h = [min(i + 1.0, windows.hours_per_day) - i for i in range(hours)]
    received = [0.0] * hours
    seen_h = [0.0] * hours
    elapsed_today = now - today_start  # the same span of each past window
    day_logs: list[tuple[float, float]] = []  # (share of a window, ln of drying / typical)
    same_hours: list[float] = []  # each full past day's drying over today's hours so far
    rest_of_day: list[float] = []  # ... and over the rest of its window
    for start, end in windows.between(first_ts, min(now, today_start)):
        base = windows.window_start(start)
        for i in range(hours):
            a, b = max(base + i * 3600.0, start), min(base + (i + 1) * 3600.0, end)
            if b > a:
                received[i] += clock.at(b) - clock.at(a)
                seen_h[i] += (b - a) / 3600.0
        open_h = (end - start) / 3600.0
        drying = clock.at(end) - clock.at(start)
        day_logs.append((open_h / windows.hours_per_day,
                         math.log(max(drying / (typical_rate * open_h), 0.1))))
        if start == base:  # a whole window: comparable with today's morning
            same_hours.append(clock.at(min(base + elapsed_today, end)) - clock.at(base))
            rest_of_day.append(drying - same_hours[-1])
    days_seen = sum(share for share, _ in day_logs)
    level = ((typical_days * -sigma**2 / 2 + sum(share * log for share, log in day_logs))
             / (typical_days + days_seen))
    level_sd = sigma / math.sqrt(typical_days + days_seen)
    past_level = (sum(share * log for share, log in day_logs) / days_seen
                  if days_seen else level)
    rates = [(received[i] + typical_rate * HOUR_PROFILE_PRIOR_DAYS)
             / (seen_h[i] + HOUR_PROFILE_PRIOR_DAYS) for i in range(hours)]
    mean_rate = sum(r * h for r, h in zip(rates, bin_h, strict=True)) / sum(bin_h)
    shape = [typical_rate * r / mean_rate for r in rates]  # a typical day, by the hour

    def split(start: float, end: float) -> _Day:
        base = windows.window_start(start)
        spans = []
        for i, rate in enumerate(shape):
            a, b = max(base + i * 3600.0, start), min(base + (i + 1) * 3600.0, end)
            if b > a:
                spans.append((a, b, rate))
        return tuple(spans)

    ahead = list(windows.between(now, now + HORIZON_DAYS * 86400.0))
    inside = bool(ahead) and ahead[0][0] == now > today_start  # today's window, begun
    outlook = _Outlook(tuple(split(a, b) for a, b in ahead[1 if inside else 0:]),
                       level, level_sd, sigma, today_sigma=sigma)
    if not inside:
        return outlook  # outside the windows: today's drying is over or not begun
    outlook = replace(outlook, today=split(*ahead[0]), today_mu=level)
    today_so_far = clock.total - clock.at(today_start)
    if first_ts > today_start or not same_hours or min(same_hours) <= 0 or today_so_far <= 0:
        return outlook  # the first day, no comparable morning, or nothing dried yet today
    usual = math.exp(sum(math.log(d) for d in same_hours) / len(same_hours))
    rate = typical_rate * math.exp(past_level)
    seen = usual / rate  # open hours of usual drying
    share = seen / (seen + _today_noise(same_hours, rest_of_day, seen, rate, sigma))
    observed = past_level + math.log(today_so_far / usual)
    return replace(outlook, today_mu=level + share * (observed - level),
                   today_sigma=sigma * math.sqrt(1.0 - share))


def _today_noise(mornings: Sequence[float], rests: Sequence[float], seen: float,
                 rate: float, sigma: float) -> float:
    """How far a morning's drying strays from its day's weather, in open hours of prior.

    Each open hour's drying is the day's factor times the hour's own noise (variance c
    per open hour of usual drying), so on a past day ln(morning) - ln(rest) has variance
    c (1/e + 1/r), the day's factor cancelling. Its spread over the batch's past days
    (those with drying in both parts) updates the prior c = TODAY_PRIOR_OPEN_HOURS s²,
    worth ``TODAY_NOISE_PRIOR_DAYS`` days (a scaled inverse chi-squared). The answer,
    c / s², is what today's ``e`` hours are weighed against: a yard whose mornings have
    foretold its afternoons (the reference's) soon trusts today's; one with humid
    mornings and afternoon showers keeps to the prior or below it.
    """
    pairs = [(m, r) for m, r in zip(mornings, rests, strict=True) if m > 0 and r > 0]
    if len(pairs) < 2:
        return TODAY_PRIOR_OPEN_HOURS
    rest_h = sum(r for _, r in pairs) / len(pairs) / rate
    gaps = [math.log(m) - math.log(r) for m, r in pairs]
    mean = sum(gaps) / len(gaps)
    per_hour = sum((g - mean) ** 2 for g in gaps) / (1.0 / seen + 1.0 / rest_h)
    prior = TODAY_PRIOR_OPEN_HOURS * sigma**2
    noise = ((TODAY_NOISE_PRIOR_DAYS * prior + per_hour)
             / (TODAY_NOISE_PRIOR_DAYS + len(pairs) - 1))
    return noise / sigma**2


# ------------------------------------------------------------------ the fit


@dataclass(frozen=True, slots=True)
class _Fit:
    """ln(X - Xe) = level - k (tau - level_tau) on the last segment.

    ``k``: the posterior's median and standard deviation, and the posterior itself as
    a grid of ln k with its cumulative probabilities (to draw from); the level is
    Gaussian and, at ``level_tau``, independent of k.
    """

    k: float
    k_sd: float
    level: float  # the weighted mean of ln(X - Xe) over the last segment's readings
    level_sd: float
    level_tau: float  # ... and of their drying time
    segments: int
    ln_k_grid: tuple[float, ...]
    cumulative: tuple[float, ...]

    def draw_k(self, rng: random.Random) -> float:
        """A k drawn from the posterior (inverse of its cumulative, linear in a cell)."""
        u = rng.random()
        i = min(max(bisect.bisect_left(self.cumulative, u), 1), len(self.cumulative) - 1)
        low, high = self.cumulative[i - 1], self.cumulative[i]
        share = (u - low) / (high - low) if high > low else 0.5
        return math.exp(self.ln_k_grid[i - 1]
                        + share * (self.ln_k_grid[i] - self.ln_k_grid[i - 1]))


# Points of the grid on which the posterior of ln k is computed (twice: over the
# prior's range, then over where the posterior is).
GRID_POINTS = 400


def _fit(ordered: Sequence[MoistureReading], clock: _DryingClock, prior_k: float) -> _Fit:
    """The Bayesian update of k: the published speed as the prior, the readings through
    the meter's noise as the likelihood, one free level per segment.

    A segment is a run of readings without rewetting between them: a rise above
    the meter's noise starts a new one, so a rewetted batch keeps the k its earlier
    readings showed and restarts its curve from the new moisture.

    Each reading's weight is the meter's noise seen through the logarithm at the
    moisture the fitted curve gives it there: taken from the reading itself, a reading
    that happens to be low would weigh less than one that happens to be high (the
    logarithm is steep near the equilibrium), and the curve would lean late.
    """
    segments: list[list[tuple[float, float, float]]] = []  # (tau, ln(X - Xe), weight)
    previous = None
    for reading in ordered:
        rewetted = previous is not None and reading.moisture_pct > previous + REWETTING_RISE_PCT
        previous = reading.moisture_pct
        x = _dry_basis(reading.moisture_pct)
        if x <= EQUILIBRIUM_X:
            continue  # below the model's floor (5.8 %): no log; a later rise still counts
        if rewetted or not segments:
            segments.append([])
        y = math.log(x - EQUILIBRIUM_X)
        segments[-1].append((clock.at(reading.ts), y, _weight(y)))
    fit = _posterior(segments, prior_k)
    # Once more with each weight at the fitted curve's moisture (the fitted level of
    # each segment and the posterior's median k).
    reweighted = []
    for seg in segments:
        weight = sum(w for _, _, w in seg)
        tau_mean = sum(t * w for t, _, w in seg) / weight
        y_mean = sum(y * w for _, y, w in seg) / weight
        reweighted.append([(t, y, _weight(y_mean - fit.k * (t - tau_mean)))
                           for t, y, _ in seg])
    return _posterior(reweighted, prior_k)


def _weight(y: float) -> float:
    """1 / the variance of ln(X - Xe) at y: the meter's noise and the model's misfit."""
    x = math.exp(y) + EQUILIBRIUM_X
    w = x / (1.0 + x)
    # d ln(X - Xe)/dw = 1 / ((1 - w)^2 (X - Xe)): the meter's noise seen in the log.
    slope = 1.0 / ((1.0 - w) ** 2 * (x - EQUILIBRIUM_X))
    return 1.0 / ((METER_SD_PCT / 100.0 * slope) ** 2 + MODEL_SD_LN**2)


def _posterior(segments: Sequence[Sequence[tuple[float, float, float]]],
               prior_k: float) -> _Fit:
    """The posterior of k on a grid of ln k; each segment's level integrated out.

    With the level free, the readings' log-likelihood is -(Sxx k² + 2 Sxy k) / 2 (the
    weighted sums about each segment's means); the prior adds the lognormal's.
    """
    sxx = sxy = 0.0
    for seg in segments:
        weight = sum(w for _, _, w in seg)
        tau_mean = sum(t * w for t, _, w in seg) / weight
        y_mean = sum(y * w for _, y, w in seg) / weight
        sxx += sum(w * (t - tau_mean) ** 2 for t, _, w in seg)
        sxy += sum(w * (t - tau_mean) * (y - y_mean) for t, y, w in seg)
    prior_ln_k = math.log(prior_k)

    def log_posterior(ln_k: float) -> float:
        k = math.exp(ln_k)
        return -0.5 * ((ln_k - prior_ln_k) / PRIOR_LN_K_SD) ** 2 - 0.5 * (sxx * k * k
                                                                            + 2 * sxy * k)

    low, high = prior_ln_k - 6 * PRIOR_LN_K_SD, prior_ln_k + 6 * PRIOR_LN_K_SD
    for _ in range(2):  # the prior's range, then where the posterior's mass is
        step = (high - low) / (GRID_POINTS - 1)
        grid = [low + i * step for i in range(GRID_POINTS)]
        logs = [log_posterior(u) for u in grid]
        top = max(logs)
        mass = [i for i, v in enumerate(logs) if v > top - 30.0]  # e^-30: nothing
        low, high = grid[max(mass[0] - 1, 0)], grid[min(mass[-1] + 1, GRID_POINTS - 1)]
    density = [math.exp(v - top) for v in logs]
    cumulative = [0.0]
    for i in range(1, GRID_POINTS):
        cumulative.append(cumulative[-1] + (density[i - 1] + density[i]) / 2.0)
    cumulative = [c / cumulative[-1] for c in cumulative]
    median_at = bisect.bisect_left(cumulative, 0.5)
    share = ((0.5 - cumulative[median_at - 1])
             / (cumulative[median_at] - cumulative[median_at - 1]))
    k_median = math.exp(grid[median_at - 1] + share * step)
    ks = [math.exp(u) for u in grid]
    total = sum(density)
    mean = sum(k * d for k, d in zip(ks, density, strict=True)) / total
    sd = math.sqrt(max(sum((k - mean) ** 2 * d for k, d in zip(ks, density, strict=True))
                       / total, 0.0))
    last_weight = sum(w for _, _, w in segments[-1])
    return _Fit(
        k=k_median,
        k_sd=sd,
        level=sum(y * w for _, y, w in segments[-1]) / last_weight,
        level_sd=math.sqrt(1.0 / last_weight),
        level_tau=sum(t * w for t, _, w in segments[-1]) / last_weight,
        segments=len(segments),
        ln_k_grid=tuple(grid),
        cumulative=tuple(cumulative),
    )


# ------------------------------------------------------------------ the future


def _crossings(fit: _Fit, clock: _DryingClock, outlook: _Outlook,
               target_y: float) -> list[float]:
    """Where ``DRAWS`` curves drawn from the fit cross the target, sorted (inf: never).

    Each draw takes a curve from the fit's uncertainty, a spell (the coming days'
    drying power as a whole), today's factor and each coming day's weather.
    """
    rng = random.Random(SEED)
    instants: list[float] = []
    for _ in range(DRAWS):
        k = fit.draw_k(rng)
        level = rng.gauss(fit.level, fit.level_sd)
        crossing_tau = fit.level_tau + (level - target_y) / k
        if crossing_tau <= clock.total:  # crossed already, without a reading to show it
            instants.append(clock.instant(crossing_tau))
            continue
        instants.append(_walk(crossing_tau - clock.total, outlook, rng))
    instants.sort()
    return instants


def _walk(needed_kpa_h: float, outlook: _Outlook, rng: random.Random) -> float:
    """Where ``needed_kpa_h`` of drying runs out, in one draw of the weather ahead.

    The yard's level is drawn once (it holds for all the days ahead), each local day's
    weather on its own: a dull day dries less, a bright one more. Today's rest gets
    today's factor as its drying so far shows it.
    """
    level = rng.gauss(outlook.level, outlook.level_sd)
    needed = needed_kpa_h
    days = outlook.days if outlook.today is None else (outlook.today, *outlook.days)
    for day in days:
        if day is outlook.today:
            factor = math.exp(rng.gauss(outlook.today_mu, outlook.today_sigma))
        else:
            factor = math.exp(level + rng.gauss(0.0, outlook.sigma))
        for start, end, rate in day:
            gain = rate * factor * (end - start) / 3600.0
            if gain >= needed:
                return start + needed / (rate * factor) * 3600.0
            needed -= gain
    return math.inf


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    """Linear interpolation between order statistics; None when it is "never"."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    a, b = ordered[low], ordered[high]
    if math.isinf(a) or math.isinf(b):
        return None
    return a + (b - a) * (position - low)


# ------------------------------------------------------------------ the schedule


class Windows:
    """The schedule's open-tray windows as UTC spans, one per local day."""

    def __init__(self, schedule: DryingSchedule) -> None:
        try:
            self._zone = ZoneInfo(schedule.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise BatchError("schedule.timezone",
                             f"unknown time zone {schedule.timezone!r}") from exc
        self._start = _minutes(schedule.start_hhmm, "schedule.start_hhmm")
        self._end = _minutes(schedule.end_hhmm, "schedule.end_hhmm")
        if self._end <= self._start:
            raise BatchError("schedule.end_hhmm", f"{schedule.end_hhmm} is not after "
                             f"{schedule.start_hhmm}")
        self.hours_per_day = (self._end - self._start) / 60.0

    def _window(self, day: date) -> tuple[float, float]:
        midnight = datetime(day.year, day.month, day.day, tzinfo=self._zone)
        # Wall-clock arithmetic, so a DST day keeps the window's local hours.
        start = (midnight + timedelta(minutes=self._start)).timestamp()
        end = (midnight + timedelta(minutes=self._end)).timestamp()
        return start, end

    def window_start(self, ts: float) -> float:
        """The start of the window of ``ts``'s local day."""
        return self._window(datetime.fromtimestamp(ts, self._zone).date())[0]

    def between(self, start: float, end: float) -> Iterator[tuple[float, float]]:
        """The windows' parts inside ``[start, end)``, in order."""
        day = datetime.fromtimestamp(start, self._zone).date()
        while True:
            a, b = self._window(day)
            if a >= end:
                return
            if b > start:
                yield max(a, start), min(b, end)
            day += timedelta(days=1)

    def open_hours(self, start: float, end: float) -> float:
        return sum(b - a for a, b in self.between(start, end)) / 3600.0


def _minutes(hhmm: str, field: str) -> int:
    try:
        hours, minutes = (int(part) for part in hhmm.split(":"))
    except ValueError as exc:
        raise BatchError(field, f"{hhmm!r} is not HH:MM") from exc
    if not (0 <= hours <= 24 and 0 <= minutes < 60 and hours * 60 + minutes <= 24 * 60):
        raise BatchError(field, f"{hhmm!r} is not a time of day")
    return hours * 60 + minutes


def open_hours(schedule: DryingSchedule, start: float, end: float) -> float:
    """Open-tray hours of ``schedule`` between two instants (negative if ``end < start``).

    The unit in which the estimate's error is measured (docs/batches.md).
    """
    windows = Windows(schedule)
    if end < start:
        return -windows.open_hours(end, start)
    return windows.open_hours(start, end)
