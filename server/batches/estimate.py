"""When a batch will be dry: a range of instants from its moisture readings (pure).

The model (docs/batches.md, "When will it be dry"): beans dry along a Lewis
thin-layer curve on the dry-basis moisture ratio,

    MR = (X - Xe) / (X0 - Xe) = exp(-k * tau),   X = w / (1 - w)  (w: wet basis),

where ``tau`` is not clock time but **drying power received**: the hours of
the batch's drying periods (trays out, plate dry, air dry enough), each
weighted by its mean vapour-pressure deficit (kPa·h). Nights, rain and humid
mornings add nothing to ``tau``, so they need no special case.

``ln(X - Xe)`` is then a straight line in ``tau``: its slope ``-k`` is fitted
by weighted least squares over the readings, starting from a prior on ``k``
(Puello-Mendez et al. 2017: 58 % -> 7 % in 6 days open air, k = 0.76/day),
so one reading already gives a (wide) estimate and each further reading
narrows it. Each reading's weight comes from the meter's noise seen through
the logarithm: near the target a 0.3-point error in ``w`` is a large error in
``ln(X - Xe)``, so the late readings count less for the slope.

Into the future the batch receives the yard's usual open-tray window
(``DryingSchedule``, local time) times the drying power per open hour this
batch has had so far, times a random weather factor for each day. The range
(P20, P50, P80) comes from drawing, many times, the fitted curve from its
uncertainty and each future day's weather, and reading the quantiles of the
instants at which the curve crosses the target. The draws use a fixed seed:
the same input gives the same estimate.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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

# The prior on k, per kPa·h of VPD-weighted drying time: 0.76/day (Puello-Mendez
# et al. 2017, open air) over a typical day. Wide (60 %): the published durations on
# open sun run from 2 to 10 days (Dzelagha et al. 2020).
PRIOR_K_PER_KPA_H = 0.76 / TYPICAL_DAY_KPA_H
PRIOR_K_SD = 0.6 * PRIOR_K_PER_KPA_H

# Drying power per open-tray hour ahead: the yard's typical day's, pulled towards this
# batch's own so far, its open-tray hours against this many of the typical day's. A few
# days of one batch say little about the weather of the next ones (one day's factor
# varies by ±35 %), so the typical day keeps an equal say for the first three days.
TYPICAL_DAY_WEIGHT_OPEN_HOURS = 33.0

# The noise of a moisture meter (standard deviation, percentage points: a reading
# to about ±0.5 %), and how far the Lewis line itself misses cocoa beans (in ln(X - Xe);
# published Lewis/Page fits for cocoa have RMSE 0.02-0.03 in MR).
METER_SD_PCT = 0.3
MODEL_SD_LN = 0.05

# A reading this much above the previous one is rewetting (rain, a humid night with
# trays out), not the meter's noise: the curve starts again from it, with the same k.
REWETTING_RISE_PCT = 1.0

# Day-to-day weather: each future day's drying power is the expected one times a
# lognormal factor: sigma 0.35 as in the reference simulation (docs/batches.md), a
# little more for the showers and humid mornings that also vary from day to day.
WEATHER_SIGMA = 0.40
# How far the yard's drying power per open hour over the coming days may sit from the
# expected one as a whole (a duller or brighter spell than typical), lognormal sigma.
EFFICIENCY_SIGMA = 0.10

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
) -> Estimate:
    """When the batch's beans reach ``target_pct`` (wet basis): P20, P50, P80 instants.

    ``readings``: the batch's moisture readings up to ``now`` (any order);
    ``periods``: its drying periods so far (parts after ``now`` are ignored).
    The instants are UNIX seconds; each falls inside the schedule's window of its
    local day, or, when the fitted curve says the target was already crossed
    without a reading to show it, inside a past drying period ("measure now").

    ``typical_day_kpa_h``: the yard's drying power on a typical day of the schedule
    (VPD-weighted drying hours, kPa·h), for the days ahead; pass the yard's own (the
    mean of its recent days' drying periods) when it is known.

    Already at the target (the latest readings at or below it): ``reached_at`` is
    the first reading of that final run and no range is given. No reading at all:
    no range, and ``reason`` says why. Bad input raises ``BatchError`` naming the field.
    """
    _check(readings, periods, now=now, target_pct=target_pct)
    if typical_day_kpa_h <= 0:
        raise BatchError("typical_day_kpa_h", f"must be above 0, got {typical_day_kpa_h!r}")
    windows = _Windows(schedule)
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
    fit = _fit(ordered, clock)
    first_ts = min(ordered[0].ts, clock.first_start if clock.first_start is not None else now)
    efficiency = _efficiency(clock.total, windows.open_hours(first_ts, now),
                             typical_day_kpa_h / windows.hours_per_day)
    target_y = math.log(target_x - EQUILIBRIUM_X)

    future = list(windows.between(now, now + HORIZON_DAYS * 86400.0))
    instants = _crossings(fit, clock, future, efficiency, target_y)
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


def _efficiency(drying_kpa_h: float, open_hours: float, typical: float) -> float:
    """kPa·h of drying per open-tray hour: the batch's own, pulled towards the typical."""
    return ((drying_kpa_h + typical * TYPICAL_DAY_WEIGHT_OPEN_HOURS)
            / (open_hours + TYPICAL_DAY_WEIGHT_OPEN_HOURS))


# ------------------------------------------------------------------ the fit


@dataclass(frozen=True, slots=True)
class _Fit:
    """ln(X - Xe) = level - k (tau - level_tau) on the last segment; both Gaussian."""

    k: float
    k_sd: float
    level: float  # the weighted mean of ln(X - Xe) over the last segment's readings
    level_sd: float
    level_tau: float  # ... and of their drying time
    segments: int


def _fit(ordered: Sequence[MoistureReading], clock: _DryingClock) -> _Fit:
    """Weighted least squares with one slope and one level per segment, plus the prior.

    A segment is a run of readings without rewetting between them: a rise above
    the meter's noise starts a new one, so a rewetted batch keeps the k its earlier
    readings showed and restarts its curve from the new moisture.
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
        w = reading.moisture_pct / 100.0
        # d ln(X - Xe)/dw = 1 / ((1 - w)^2 (X - Xe)): the meter's noise seen in the log.
        slope = 1.0 / ((1.0 - w) ** 2 * (x - EQUILIBRIUM_X))
        variance = (METER_SD_PCT / 100.0 * slope) ** 2 + MODEL_SD_LN**2
        segments[-1].append((clock.at(reading.ts), math.log(x - EQUILIBRIUM_X), 1.0 / variance))

    sxx = sxy = 0.0
    for seg in segments:
        weight = sum(w for _, _, w in seg)
        tau_mean = sum(t * w for t, _, w in seg) / weight
        y_mean = sum(y * w for _, y, w in seg) / weight
        sxx += sum(w * (t - tau_mean) ** 2 for t, _, w in seg)
        sxy += sum(w * (t - tau_mean) * (y - y_mean) for t, y, w in seg)
    prior_precision = 1.0 / PRIOR_K_SD**2
    k = (prior_precision * PRIOR_K_PER_KPA_H - sxy) / (sxx + prior_precision)
    last_weight = sum(w for _, _, w in segments[-1])
    return _Fit(
        k=k,
        k_sd=math.sqrt(1.0 / (sxx + prior_precision)),
        level=sum(y * w for _, y, w in segments[-1]) / last_weight,
        level_sd=math.sqrt(1.0 / last_weight),
        level_tau=sum(t * w for t, _, w in segments[-1]) / last_weight,
        segments=len(segments),
    )


# ------------------------------------------------------------------ the future


def _crossings(fit: _Fit, clock: _DryingClock, future: Sequence[tuple[float, float]],
               efficiency: float, target_y: float) -> list[float]:
    """Where ``DRAWS`` curves drawn from the fit cross the target, sorted (inf: never).

    Each draw takes a curve from the fit's uncertainty, a spell (the coming days'
    drying power as a whole) and each coming day's weather.
    """
    rng = random.Random(SEED)
    instants: list[float] = []
    for _ in range(DRAWS):
        k = rng.gauss(fit.k, fit.k_sd)
        level = rng.gauss(fit.level, fit.level_sd)
        if k <= 0:  # this curve does not dry: it never reaches the target
            instants.append(math.inf)
            continue
        crossing_tau = fit.level_tau + (level - target_y) / k
        if crossing_tau <= clock.total:  # crossed already, without a reading to show it
            instants.append(clock.instant(crossing_tau))
            continue
        spell = efficiency * rng.lognormvariate(-EFFICIENCY_SIGMA**2 / 2, EFFICIENCY_SIGMA)
        instants.append(_walk(future, (crossing_tau - clock.total) / spell, rng))
    instants.sort()
    return instants


def _walk(future: Sequence[tuple[float, float]], open_hours_needed: float,
          rng: random.Random) -> float:
    """Where ``open_hours_needed`` (at the batch's mean drying power) runs out.

    Each local day's window gets its own weather factor (lognormal, mean 1): a dull
    day gives fewer effective hours, a bright one more.
    """
    mu = -WEATHER_SIGMA**2 / 2.0
    needed = open_hours_needed
    for start, end in future:
        factor = rng.lognormvariate(mu, WEATHER_SIGMA)
        hours = (end - start) / 3600.0 * factor
        if hours >= needed:
            return start + needed / factor * 3600.0
        needed -= hours
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


class _Windows:
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
    windows = _Windows(schedule)
    if end < start:
        return -windows.open_hours(end, start)
    return windows.open_hours(start, end)
