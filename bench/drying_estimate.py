"""How good is the drying estimate? Replays of published drying curves in simulated yards.

Run by hand:  .venv/bin/python bench/drying_estimate.py [--replays 2000] [--seed 1]

Each replay is one batch. Its beans follow a Lewis curve on the dry-basis
moisture ratio (the estimator's own model family) calibrated to a published
duration. Two yards:

- the reference file's own simulation (``REFERENCE``, ``run_reference``):
  58 % -> 7 % in 6 days, trays out 07:00-18:00 America/Lima, each day's
  weather a factor drawn lognormal (sigma 0.35) that scales every open hour of
  the day and shows in its VPD, the meter read at 08:00 and 17:00 ±0.5 points;
- a harsher yard (``Weather()``): the same, plus each day's drying the VPD does
  not show (lognormal sigma 0.1), a VPD shaped over the day, mornings above the
  drying humidity for 0-2 h, on 35 % of days a 0.5-3 h shower that closes the
  trays (plus half an hour of wet air), and nine published curves.

The estimate is asked once half, and once three quarters, of the batch's
open-tray hours to the true crossing of 7.5 % have passed, with the readings
and drying periods up to then. Its P50 is compared with the true crossing in
drying days (local days of the schedule) and in open-tray hours (the
schedule's hours between the two instants); so is the crossing of its fitted
curve had the weather ahead been known (``Score.known_*``), and the answer of
the best possible estimator (``score_oracle``: the true curve, the rest of
today, the days after drawn from the yard's true weather). Prints the tables in
docs/batches.md and docs/performance.md. Seeded: the same seed gives the same
figures. ``tests/batches/test_estimate.py`` runs 200 of these replays per yard
against the figures docs/batches.md reports.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from secadero.server.batches import estimate as drying
from secadero.server.batches import typical
from secadero.server.batches.model import DryingPeriod, DryingSchedule, MoistureReading

TIMEZONE = "America/Lima"
SCHEDULE = DryingSchedule(TIMEZONE, "07:00", "18:00")
OPEN_HOURS_PER_DAY = 11.0
TARGET_PCT = 7.5
READING_HOURS = (8, 17)
FIRST_DAY = datetime(2026, 7, 6, tzinfo=ZoneInfo(TIMEZONE))  # a dry-season Monday


@dataclass(frozen=True, slots=True)
class PublishedCurve:
    """A published sun-drying duration, replayed as a Lewis curve that takes that long."""

    name: str
    source: str
    start_pct: float
    end_pct: float
    days: float


# From /work/shared/reference/cocoa-drying.md ("How long sun drying takes"). Dzelagha
# et al. give durations only; their start moisture is taken as 55 % (fermented beans,
# as at APROCAM in Bardales et al. 2021) and their end as 7.5 %.
PUBLISHED = (
    PublishedCurve("open air, Colombia", "Puello-Mendez et al. 2017, doi:10.3303/CET1757286",
                   58.0, 7.0, 6.0),
    PublishedCurve("open sun, wooden platform", "Dzelagha et al. 2020, doi:10.1155/2020/8830127",
                   55.0, 7.5, 7.0),
    PublishedCurve("raised bamboo mats", "Dzelagha et al. 2020", 55.0, 7.5, 8.0),
    PublishedCurve("tarpaulin or mats", "Dzelagha et al. 2020", 55.0, 7.5, 10.0),
    PublishedCurve("full sun, fast", "Dzelagha et al. 2020", 55.0, 7.5, 2.0),
    PublishedCurve("full sun, slow", "Dzelagha et al. 2020", 55.0, 7.5, 5.0),
    PublishedCurve("solar dryer, 20 kg", "Dzelagha et al. 2020", 55.0, 7.5, 5.0),
    PublishedCurve("solar dryer, 30 kg", "Dzelagha et al. 2020", 55.0, 7.5, 7.0),
    PublishedCurve("solar dryer, 60 kg", "Dzelagha et al. 2020", 55.0, 7.5, 9.0),
)


@dataclass(frozen=True, slots=True)
class Weather:
    """How the simulated yard's days are drawn (the defaults: the harsher yard)."""

    sigma: float = 0.35  # each day's weather factor (lognormal), seen in the VPD
    hidden_sigma: float = 0.10  # each day's drying the VPD does not show
    shower_chance: float = 0.35
    meter_noise_pct: float = 0.5  # uniform ±
    equilibrium_spread_x: float = 0.0  # the beans' true Xe: the model's ± this (dry basis)
    report_vpd: bool = True  # False: drying periods without VPD (a yard without it)
    vpd_scale: float = 1.0  # the yard's air drier (> 1) or duller (< 1) than the typical day
    constant: bool = False  # True: every day the median day, no showers (the published curve)
    humid_mornings: bool = True  # False: every open hour dries, from 07:00
    # False: the same VPD in every open hour of a day (kinetics in open-tray hours, as in
    # the reference's simulation), FLAT_VPD_KPA times the day's factor
    diurnal: bool = True


# The reference file's own simulation ("Checking a drying estimate" in
# /work/shared/reference/cocoa-drying.md): Lewis kinetics in open-tray hours calibrated to
# 58 % -> 7 % in 6 days, each day's weather factor lognormal sigma 0.35, the meter read
# twice a day ±0.5 %. Nothing else: no showers, no humid mornings, nothing the VPD does
# not show, one curve. Its VPD level (not given there): the estimator's typical hour.
REFERENCE = Weather(hidden_sigma=0.0, shower_chance=0.0, humid_mornings=False, diurnal=False)
FLAT_VPD_KPA = drying.TYPICAL_VPD_KPA


def _vpd_of_hour(hour: float) -> float:
    """The yard's VPD on a median day (kPa): 0.9 at 07:00, 2.0 at noon, 0.9 at 17:00."""
    return 0.5 + 1.5 * math.sin(math.pi * (hour - 6.0) / 12.0)


@dataclass(frozen=True, slots=True)
class Day:
    periods: tuple[DryingPeriod, ...]  # what the metrics would report
    true_rates: tuple[float, ...]  # the beans' drying power in each period (kPa·h per h)


def simulate_day(day_index: int, weather: Weather, rng: random.Random) -> Day:
    midnight = FIRST_DAY.timestamp() + day_index * 86400.0  # Lima has no DST
    if weather.constant:
        factor, hidden, humid_until, shower = 1.0, 1.0, 8.0, None
    else:
        factor = rng.lognormvariate(0.0, weather.sigma)
        hidden = rng.lognormvariate(0.0, weather.hidden_sigma)
        humid_until = 7.0 + rng.uniform(0.0, 2.0) if weather.humid_mornings else 7.0
        shower = None
        if rng.random() < weather.shower_chance:
            begins = rng.uniform(11.0, 17.0)
            shower = (begins, begins + rng.uniform(0.5, 3.0) + 0.5)
    periods: list[DryingPeriod] = []
    rates: list[float] = []
    for hour in range(7, 18):
        spans = [(max(hour, humid_until), hour + 1.0)]
        if shower is not None:
            spans = [piece for a, b in spans
                     for piece in ((a, min(b, shower[0])), (max(a, shower[1]), b))]
        for a, b in spans:
            if b - a < 1e-9:
                continue
            shape = _vpd_of_hour((a + b) / 2.0) if weather.diurnal else FLAT_VPD_KPA
            vpd = shape * factor * weather.vpd_scale
            periods.append(DryingPeriod(midnight + a * 3600.0, midnight + b * 3600.0,
                                        vpd if weather.report_vpd else None))
            rates.append(vpd * hidden)
    return Day(tuple(periods), tuple(rates))


@functools.cache
def mean_day_kpa_h(weather: Weather) -> float:
    """The beans' mean drying power per day in ``weather`` (kPa·h, over 4,000 days)."""
    rng = random.Random(0)
    total = 0.0
    for i in range(4000):
        day = simulate_day(i, weather, rng)
        total += sum(r * p.hours for r, p in zip(day.true_rates, day.periods, strict=True))
    return total / 4000


@dataclass(frozen=True, slots=True)
class Replay:
    curve: PublishedCurve
    start: float
    reached_at: float  # when the beans truly crossed TARGET_PCT
    readings: tuple[MoistureReading, ...]
    periods: tuple[DryingPeriod, ...]
    true_rates: tuple[float, ...]  # the beans' drying power in each period (kPa·h per h)
    needed_kpa_h: float  # the drying power the beans truly needed to reach TARGET_PCT


def simulate_batch(curve: PublishedCurve, weather: Weather, rng: random.Random,
                   day_kpa_h: float) -> Replay:
    """One batch on ``curve``, whose beans take ``curve.days`` days of ``day_kpa_h``."""
    xe = drying.EQUILIBRIUM_X + rng.uniform(-1, 1) * weather.equilibrium_spread_x
    x0 = _x(curve.start_pct)
    # The curve's k per day so that it takes curve.days; per kPa·h over a typical day.
    k_day = math.log((x0 - drying.EQUILIBRIUM_X) / (_x(curve.end_pct) - drying.EQUILIBRIUM_X)) \
        / curve.days
    k = k_day / day_kpa_h
    needed = math.log((x0 - xe) / (_x(TARGET_PCT) - xe)) / k
    start = FIRST_DAY.timestamp() + 7 * 3600.0
    periods: list[DryingPeriod] = []
    rates: list[float] = []
    readings: list[MoistureReading] = []
    tau = 0.0
    reached_at = None
    day_index = 0
    while reached_at is None or day_index * 86400.0 < reached_at - start + 86400.0:
        day = simulate_day(day_index, weather, rng)
        taus_before = []
        for period, rate in zip(day.periods, day.true_rates, strict=True):
            taus_before.append(tau)
            if reached_at is None and tau + rate * period.hours >= needed:
                reached_at = period.start + (needed - tau) / rate * 3600.0
            tau += rate * period.hours
        periods.extend(day.periods)
        rates.extend(day.true_rates)
        # The readings of this day: the true moisture at the reading's hour, plus noise.
        midnight = FIRST_DAY.timestamp() + day_index * 86400.0
        reading_times = (midnight + h * 3600.0 for h in READING_HOURS)
        for ts in reading_times:
            true_tau = _tau_at(ts, day.periods, day.true_rates, taus_before, tau)
            x = xe + (x0 - xe) * math.exp(-k * true_tau)
            noisy = 100.0 * x / (1.0 + x) + rng.uniform(-1, 1) * weather.meter_noise_pct
            readings.append(MoistureReading("replay", ts, round(max(noisy, 0.0), 1)))
        day_index += 1
    return Replay(curve, start, reached_at, tuple(readings), tuple(periods), tuple(rates),
                  needed)


def _tau_at(ts: float, periods: Sequence[DryingPeriod], rates: Sequence[float],
            taus_before: Sequence[float], day_end_tau: float) -> float:
    for period, rate, before in zip(periods, rates, taus_before, strict=True):
        if ts < period.start:
            return before
        if ts < period.end:
            return before + rate * (ts - period.start) / 3600.0
    return day_end_tau


def _x(wet_pct: float) -> float:
    return wet_pct / (100.0 - wet_pct)


# ------------------------------------------------------------------ scoring


@dataclass(frozen=True, slots=True)
class Score:
    """One estimate against the truth: P50's error (positive: predicted late).

    ``known_*``: the error had the weather ahead been known (a perfect forecast of the
    coming days' VPD): the instant at which the estimate's fitted curve meets the target
    on the drying the batch then really received. What is left is the estimator's own
    error (its curve), not the weather's. NaN where it does not apply (no VPD, oracle).
    """

    curve: str
    fraction: float
    error_days: int
    error_open_h: float
    inside_p20_p80: bool
    known_error_days: float = math.nan
    known_error_open_h: float = math.nan


def local_day(ts: float) -> int:
    return datetime.fromtimestamp(ts, ZoneInfo(TIMEZONE)).date().toordinal()


def _asked_at(replay: Replay, fraction: float) -> float:
    total_open = drying.open_hours(SCHEDULE, replay.start, replay.reached_at)
    return _after_open_hours(replay.start, fraction * total_open)


def score(replay: Replay, fraction: float,
          typical_day_kpa_h: float = drying.TYPICAL_DAY_KPA_H,
          weather_sigma: float = drying.WEATHER_SIGMA,
          typical_day_days: float | None = None) -> Score:
    """Ask the estimate after ``fraction`` of the batch's open-tray hours to the truth
    (``typical_day_days``: the typical day's weight in days, None for the built-in's)."""
    now = _asked_at(replay, fraction)
    readings = [r for r in replay.readings if r.ts <= now]
    periods = [p if p.end <= now else replace(p, end=now)
               for p in replay.periods if p.start < now]
    result = drying.estimate(readings, periods, now=now, target_pct=TARGET_PCT,
                             schedule=SCHEDULE, typical_day_kpa_h=typical_day_kpa_h,
                             typical_day_days=typical_day_days, weather_sigma=weather_sigma)
    if result.p50_ts is None:  # reached already (a low noisy reading) or no estimate
        predicted = result.reached_at if result.reached_at is not None else math.inf
        low = high = known = predicted
    else:
        predicted, low, high = result.p50_ts, result.p20_ts, result.p80_ts or math.inf
        known = _known_weather_crossing(replay, now, result)
    if math.isinf(predicted):
        return Score(replay.curve.name, fraction, 99, math.inf, False, 99, math.inf)
    return Score(
        curve=replay.curve.name,
        fraction=fraction,
        error_days=local_day(predicted) - local_day(replay.reached_at),
        error_open_h=drying.open_hours(SCHEDULE, replay.reached_at, predicted),
        inside_p20_p80=low <= replay.reached_at <= high,
        known_error_days=(known if not math.isfinite(known) else
                          local_day(known) - local_day(replay.reached_at)),
        known_error_open_h=(known if not math.isfinite(known) else
                            drying.open_hours(SCHEDULE, replay.reached_at, known)),
    )


def _known_weather_crossing(replay: Replay, now: float, result) -> float:
    """Where the estimate's fitted curve crosses the target on the VPD-weighted drying the
    batch really received after ``now`` (the weather ahead known); NaN without VPD."""
    if "crossing_kpa_h" not in result.details or any(p.vpd_kpa is None
                                                      for p in replay.periods):
        return math.nan
    needed = result.details["crossing_kpa_h"] - result.details["drying_kpa_h"]
    if needed <= 0:
        return result.p50_ts  # crossed already by the fit: the estimate says when
    for period in replay.periods:
        if period.end <= now:
            continue
        begins = max(period.start, now)
        gain = period.vpd_kpa * (period.end - begins) / 3600.0
        if gain >= needed:
            return begins + needed / period.vpd_kpa * 3600.0
        needed -= gain
    return math.inf


# The oracle's draws of the days ahead: enough for a median within a few minutes.
ORACLE_DRAWS = 101


def score_oracle(replay: Replay, fraction: float, weather: Weather,
                 rng: random.Random) -> Score:
    """The best P50 any estimator could give without a forecast beyond today.

    It knows the beans' true curve and the drying they received, and the rest of today
    as it came (in the reference's yard, today's weather shows in its VPD since the
    morning; in the harsher ones this also hands it today's later showers: generous).
    The days after are drawn from the yard's true weather (``simulate_day``); its answer
    is the median of those draws. What is left is the weather of the days ahead alone.
    """
    now = _asked_at(replay, fraction)
    remaining = replay.needed_kpa_h - sum(
        rate * (min(p.end, now) - p.start) / 3600.0
        for p, rate in zip(replay.periods, replay.true_rates, strict=True) if p.start < now)
    day_index = local_day(now) - local_day(FIRST_DAY.timestamp()) + 1
    tomorrow = FIRST_DAY.timestamp() + day_index * 86400.0  # Lima has no DST
    predicted = None
    for period, rate in zip(replay.periods, replay.true_rates, strict=True):
        if period.end <= now or period.start >= tomorrow:
            continue
        begins = max(period.start, now)
        gain = rate * (period.end - begins) / 3600.0
        if gain >= remaining:
            predicted = begins + remaining / rate * 3600.0
            break
        remaining -= gain
    if predicted is None:
        draws = sorted(_draw_crossing(day_index, remaining, weather, rng)
                       for _ in range(ORACLE_DRAWS))
        predicted = draws[ORACLE_DRAWS // 2]
    return Score(replay.curve.name, fraction, local_day(predicted) - local_day(replay.reached_at),
                 drying.open_hours(SCHEDULE, replay.reached_at, predicted), False)


def _draw_crossing(day_index: int, needed: float, weather: Weather,
                   rng: random.Random) -> float:
    while True:
        day = simulate_day(day_index, weather, rng)
        for period, rate in zip(day.periods, day.true_rates, strict=True):
            gain = rate * period.hours
            if gain >= needed:
                return period.start + needed / rate * 3600.0
            needed -= gain
        day_index += 1


def _after_open_hours(start: float, hours: float) -> float:
    """The instant at which ``hours`` of the schedule's open-tray hours follow ``start``."""
    ts = start
    while True:
        end_of_day = ts + 86400.0
        available = drying.open_hours(SCHEDULE, ts, end_of_day)
        if available >= hours:
            break
        hours -= available
        ts = end_of_day
    low, high = ts, end_of_day  # bisect within the day: open_hours is monotonic
    for _ in range(50):
        mid = (low + high) / 2.0
        if drying.open_hours(SCHEDULE, ts, mid) < hours:
            low = mid
        else:
            high = mid
    return high


@dataclass
class Summary:
    replays: int
    scores: dict[float, list[Score]] = field(default_factory=dict)

    def share(self, fraction: float, ok) -> float:
        scores = self.scores[fraction]
        return sum(1 for s in scores if ok(s)) / len(scores)

    def within_days(self, fraction: float, days: int) -> float:
        return self.share(fraction, lambda s: abs(s.error_days) <= days)

    def within_hours(self, fraction: float, hours: float) -> float:
        return self.share(fraction, lambda s: abs(s.error_open_h) <= hours)

    def known_within_days(self, fraction: float, days: int) -> float:
        """As ``within_days``, had the weather ahead been known."""
        return self.share(fraction, lambda s: abs(s.known_error_days) <= days)

    def known_within_hours(self, fraction: float, hours: float) -> float:
        return self.share(fraction, lambda s: abs(s.known_error_open_h) <= hours)

    def coverage(self, fraction: float) -> float:
        return self.share(fraction, lambda s: s.inside_p20_p80)

    def abs_hours_quantile(self, fraction: float, q: float) -> float:
        errors = sorted(abs(s.error_open_h) for s in self.scores[fraction])
        return errors[min(int(q * len(errors)), len(errors) - 1)]

    def median_hours(self, fraction: float) -> float:
        return statistics.median(s.error_open_h for s in self.scores[fraction])


def learnt_typical_day(weather: Weather, days: int, rng: random.Random,
                       turned: tuple[Weather, int] | None = None) -> typical.TypicalDay:
    """What the server learns before a batch (server/batches/typical.py): the ``days``
    days before it drawn from the same yard, each day's VPD-weighted drying as its
    drying periods report it (what ``typical.daily_drying`` sums from the climate).
    ``turned``: (the weather before, days since): the season turned that many days
    before the batch, and the days before the turn were drawn from the weather before."""
    values = []
    for index in range(-days, 0):
        before_turn = turned is not None and index < -turned[1]
        day = simulate_day(index, turned[0] if before_turn else weather, rng)
        values.append(sum((p.vpd_kpa or 0.0) * p.hours for p in day.periods))
    return typical.typical_from_days(values)


# The server's default ([batches] typical_day_days): the days before each batch it learns from.
LEARN_DAYS = 28
# The yard's true typical day, told: known exactly, the batch's own days do not move it.
KNOWN_DAY_WEIGHT_DAYS = 1e6
LEARNT = f"the typical day learnt from its {LEARN_DAYS} days before"


def run(replays: int, seed: int, weather: Weather = Weather(),
        curves: Sequence[PublishedCurve] = PUBLISHED,
        fractions: Sequence[float] = (0.5, 0.75), *, oracle: bool = False,
        yard_history: bool = False, learn_days: int = 0, learn_sigma: bool = False,
        calibrated_on: Weather | None = None,
        turned: tuple[Weather, int] | None = None) -> Summary:
    """``replays`` batches, each on a curve drawn from ``curves``; scored at each fraction
    by the estimate (or, ``oracle``, by the best possible estimator). ``yard_history``:
    the estimate is given the yard's true typical day instead of its built-in one.
    ``learn_days``: the estimate is given the typical day learnt from that many days of
    the yard before each batch (drawn from their own seeded stream, so the batches are
    the same as without); ``learn_sigma``: and their day-to-day spread for its range.
    ``calibrated_on``: the weather on whose mean day each curve takes its published time
    (the bar's yard unless given; a duller or brighter yard makes it take longer or
    shorter). ``turned``: the learnt typical day's days before a turn of the season come
    from another weather (``learnt_typical_day``). The same seed gives the same batches
    with or without ``oracle``."""
    rng = random.Random(seed)
    oracle_rng = random.Random(seed + 1_000_003)
    if weather.constant:  # each curve replayed alone, on its constant day
        calibrated_on = weather
    calibration = mean_day_kpa_h(calibrated_on or Weather())
    history_rng = random.Random(seed + 2_000_003)
    day_kpa_h = mean_day_kpa_h(weather) if yard_history else drying.TYPICAL_DAY_KPA_H
    day_weight = KNOWN_DAY_WEIGHT_DAYS if yard_history else None
    sigma = drying.WEATHER_SIGMA
    summary = Summary(replays, {f: [] for f in fractions})
    for _ in range(replays):
        replay = simulate_batch(rng.choice(curves), weather, rng, calibration)
        if learn_days:
            learnt = learnt_typical_day(weather, learn_days, history_rng, turned)
            day_kpa_h = learnt.kpa_h
            day_weight = float(learnt.days) if learnt.source == "learnt" else None
            sigma = learnt.sigma if learn_sigma and learnt.source == "learnt" else sigma
        for fraction in fractions:
            summary.scores[fraction].append(
                score_oracle(replay, fraction, weather, oracle_rng) if oracle
                else score(replay, fraction, day_kpa_h, sigma, day_weight))
    return summary


def run_reference(replays: int, seed: int, *, oracle: bool = False,
                  yard_history: bool = False, learn_days: int = 0,
                  learn_sigma: bool = False) -> Summary:
    """The reference file's simulation: its one curve (Puello-Mendez, 58 % -> 7 % in 6
    days on its yard's mean day) in its yard (``REFERENCE``)."""
    return run(replays, seed, REFERENCE, PUBLISHED[:1], oracle=oracle,
               yard_history=yard_history, learn_days=learn_days, learn_sigma=learn_sigma,
               calibrated_on=REFERENCE)


# ------------------------------------------------------------------ the report


def _row(label: str, s: Summary, *, coverage: bool = True) -> str:
    inside = f"{s.coverage(0.5):.0%} / {s.coverage(0.75):.0%}" if coverage else "-"
    known = (f"{s.known_within_days(0.5, 1):.1%} / {s.known_within_hours(0.5, 8):.1%} / "
             f"{s.known_within_hours(0.75, 5):.1%}" if coverage and not any(
                 math.isnan(x.known_error_open_h) for x in s.scores[0.5]) else "-")
    return (f"| {label} | {s.replays} "
            f"| {s.within_days(0.5, 1):.1%} | {s.within_hours(0.5, 8):.1%} "
            f"| {s.within_hours(0.75, 5):.1%} "
            f"| {s.abs_hours_quantile(0.5, 0.8):.1f} / {s.abs_hours_quantile(0.75, 0.8):.1f} "
            f"| {s.median_hours(0.5):+.1f} / {s.median_hours(0.75):+.1f} | {inside} "
            f"| {known} |")


def _days_histogram(s: Summary, fraction: float) -> str:
    counts: dict[int, int] = {}
    for sc in s.scores[fraction]:
        counts[max(min(sc.error_days, 3), -3)] = counts.get(max(min(sc.error_days, 3), -3), 0) + 1
    cells = " | ".join(f"{counts.get(d, 0) / len(s.scores[fraction]):.1%}" for d in range(-3, 4))
    return f"| {fraction:.0%} | {cells} |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    print("Published curves, each replayed alone: median weather every day, no showers.")
    print("| curve | source | error at 1/2 (drying days, open-tray h) | at 3/4 |")
    print("| --- | --- | --- | --- |")
    for curve in PUBLISHED:
        exact = run(1, args.seed, Weather(constant=True, meter_noise_pct=0.0), (curve,))
        half, three = exact.scores[0.5][0], exact.scores[0.75][0]
        print(f"| {curve.name}: {curve.start_pct:g} % -> {curve.end_pct:g} % in "
              f"{curve.days:g} d | {curve.source} | {half.error_days:+d} d, "
              f"{half.error_open_h:+.1f} h | {three.error_days:+d} d, "
              f"{three.error_open_h:+.1f} h |")
    print()

    header = ("| replays | n | 1/2: within ±1 drying day (bar 95 %) | 1/2: within ±8 open h "
              "(bar 80 %) | 3/4: within ±5 open h (bar 80 %) | 80th pct of abs error, open h, "
              "1/2 / 3/4 | median error, open h, 1/2 / 3/4 | truth inside P20-P80, 1/2 / 3/4 "
              "| the weather ahead known: ±1 d / ±8 h / ±5 h |")
    print(header)
    print("| --- " * 9 + "|")
    for label, summary in (
            ("the reference's simulation", run_reference(args.replays, args.seed)),
            ("the reference's simulation: the yard's typical day known",
             run_reference(args.replays, args.seed, yard_history=True)),
            (f"the reference's simulation: {LEARNT}",
             run_reference(args.replays, args.seed, learn_days=LEARN_DAYS)),
            ("the reference's simulation: the typical day learnt from its 14 days before "
             "(the default until 2026-12-05)",
             run_reference(args.replays, args.seed, learn_days=14)),
            (f"the reference's simulation: {LEARNT}, and its spread",
             run_reference(args.replays, args.seed, learn_days=LEARN_DAYS,
                           learn_sigma=True))):
        print(_row(label, summary), flush=True)
    print(_row("the reference's simulation: best possible (knows the curve)",
               run_reference(args.replays, args.seed, oracle=True), coverage=False),
          flush=True)
    variants = [
        ("the harsher yard", Weather()),
        ("no hidden weather (VPD explains all)", Weather(hidden_sigma=0.0)),
        ("no showers and VPD explains all", Weather(shower_chance=0.0, hidden_sigma=0.0)),
        ("weather sigma 0.2", Weather(sigma=0.2)),
        ("weather sigma 0.5", Weather(sigma=0.5)),
        ("meter ±1.0 %", Weather(meter_noise_pct=1.0)),
        ("beans' Xe ±0.01 (±0.9 points wb) off the model's", Weather(equilibrium_spread_x=0.01)),
        ("a yard 25 % duller than the typical day", Weather(vpd_scale=0.75)),
        ("no VPD in the periods (hours only)", Weather(report_vpd=False)),
    ]
    main_summary = None
    for label, weather in variants:
        began = time.perf_counter()
        summary = run(args.replays, args.seed, weather)
        elapsed = time.perf_counter() - began
        main_summary = main_summary or summary
        print(_row(label, summary) + f"  <!-- {elapsed:.1f} s -->", flush=True)
        if weather in (Weather(), Weather(vpd_scale=0.75)):
            known = run(args.replays, args.seed, weather, yard_history=True)
            print(_row(f"{label}: the yard's typical day known", known), flush=True)
            learnt = run(args.replays, args.seed, weather, learn_days=LEARN_DAYS)
            print(_row(f"{label}: {LEARNT}", learnt), flush=True)
            spread = run(args.replays, args.seed, weather, learn_days=LEARN_DAYS,
                         learn_sigma=True)
            print(_row(f"{label}: {LEARNT}, and its spread", spread), flush=True)
        if weather in (Weather(), Weather(shower_chance=0.0, hidden_sigma=0.0),
                       Weather(sigma=0.2), Weather(sigma=0.5)):
            best = run(args.replays, args.seed, weather, oracle=True)
            print(_row(f"{label}: best possible (knows the curve)", best, coverage=False),
                  flush=True)
    # The season turns (the rains coming back): the yard 25 % duller for the last few days
    # before the batch and during it, brighter before; learning from 14 or 28 days.
    duller = Weather(vpd_scale=0.75)
    for since in (0, 7, 14):
        for learn in (14, LEARN_DAYS):
            summary = run(args.replays, args.seed, duller, learn_days=learn,
                          turned=(Weather(), since))
            print(_row(f"the season turned {since} days before the batch (25 % duller since):"
                       f" the typical day learnt from its {learn} days before", summary),
                  flush=True)
    print()
    print("Error in drying days of P50 (the harsher yard):")
    print("| asked at | ≤-3 | -2 | -1 | 0 | +1 | +2 | ≥+3 |")
    print("| --- " * 8 + "|")
    for fraction in (0.5, 0.75):
        print(_days_histogram(main_summary, fraction))
    print()
    print("By curve, the harsher yard (1/2: within ±1 day, ±8 h; 3/4: ±5 h):")
    for curve in PUBLISHED:
        scores = {f: [s for s in main_summary.scores[f] if s.curve == curve.name]
                  for f in (0.5, 0.75)}
        if not scores[0.5]:
            continue
        part = Summary(len(scores[0.5]), scores)
        print(f"| {curve.name} ({curve.days:g} d) | {part.replays} "
              f"| {part.within_days(0.5, 1):.0%} | {part.within_hours(0.5, 8):.0%} "
              f"| {part.within_hours(0.75, 5):.0%} |")

    # One estimate's cost, for docs/performance.md.
    rng = random.Random(args.seed)
    replay = simulate_batch(PUBLISHED[0], Weather(), rng, mean_day_kpa_h(Weather()))
    now = replay.start + 3 * 86400.0
    readings = [r for r in replay.readings if r.ts <= now]
    periods = [p for p in replay.periods if p.end <= now]
    times = []
    for _ in range(50):
        began = time.perf_counter()
        drying.estimate(readings, periods, now=now, target_pct=TARGET_PCT, schedule=SCHEDULE)
        times.append(time.perf_counter() - began)
    print(f"\nOne estimate ({len(readings)} readings, {len(periods)} periods): "
          f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
