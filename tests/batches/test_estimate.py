"""The drying estimate (server/batches/estimate.py): pure, so every test passes the clock.

Hand-made readings on a known Lewis curve check the fit, the schedule and the
cases; the replays of bench/drying_estimate.py (seeded) check the accuracy
figures docs/batches.md reports, so a regression fails here.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from secadero.server.batches import estimate as drying
from secadero.server.batches.model import (
    BatchError,
    DryingPeriod,
    DryingSchedule,
    MoistureReading,
)

LIMA = ZoneInfo("America/Lima")
SCHEDULE = DryingSchedule("America/Lima", "07:00", "18:00")
XE = drying.EQUILIBRIUM_X


def at(day: int, hhmm: str) -> float:
    """An instant in Lima: day 0 is Monday 6 July 2026."""
    hours, minutes = (int(p) for p in hhmm.split(":"))
    return datetime(2026, 7, 6 + day, hours, minutes, tzinfo=LIMA).timestamp()


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, LIMA).strftime("%d %H:%M")


def windows(days: int, vpd_kpa: float | None = 1.0) -> list[DryingPeriod]:
    """Drying the whole schedule window every day: at VPD 1 kPa, 1 kPa·h per open hour."""
    return [DryingPeriod(at(d, "07:00"), at(d, "18:00"), vpd_kpa) for d in range(days)]


def wet_pct(x: float) -> float:
    return 100.0 * x / (1.0 + x)


def dry(w_pct: float) -> float:
    return w_pct / (100.0 - w_pct)


K = 0.05  # per kPa·h: the test curve
X0 = dry(55.0)


def on_curve(tau_kpa_h: float) -> float:
    """Moisture (wet basis, %) of the test curve after ``tau_kpa_h`` of drying."""
    return wet_pct(XE + (X0 - XE) * math.exp(-K * tau_kpa_h))


def reading(ts: float, pct: float) -> MoistureReading:
    return MoistureReading("b-1", ts, pct)


def run(readings, periods, now, **options):
    options.setdefault("target_pct", 7.5)
    options.setdefault("schedule", SCHEDULE)
    # The test yard's typical day: 11 open hours at 1 kPa, as in windows().
    options.setdefault("typical_day_kpa_h", 11.0)
    return drying.estimate(readings, periods, now=now, **options)


# Readings at 08:00 and 17:00 on days 0-2 of the curve, each window fully drying at 1 kPa.
CURVE_READINGS = [reading(at(d, hhmm), on_curve(11.0 * d + tau))
                  for d in range(3) for hhmm, tau in (("08:00", 1.0), ("17:00", 10.0))]
# ln((X0 - Xe) / (Xt - Xe)) / K: the test curve reaches 7.5 % after 81.5 kPa·h of drying,
# 4.5 h into the 8th window: day 7 at 11:32.
NEEDED_KPA_H = math.log((X0 - XE) / (dry(7.5) - XE)) / K


def test_readings_on_a_lewis_curve_give_back_its_k_and_its_crossing():
    now = at(2, "17:30")
    result = run(CURVE_READINGS, windows(3), now)
    assert round(NEEDED_KPA_H, 2) == 81.54
    assert result.details["k_per_kpa_h"] == pytest.approx(K, rel=0.001)  # the prior's pull
    assert result.details["crossing_kpa_h"] == pytest.approx(NEEDED_KPA_H, rel=0.001)
    assert result.details["readings"] == 6
    assert result.details["drying_kpa_h"] == pytest.approx(32.5)  # 3 windows, to 17:30
    # Two past days (the third is today) at exactly the typical day's 1 kPa·h per open
    # hour: in logs 0 each, against the prior's median day -s²/2 worth three days; a coming
    # day's mean is then the level plus half the variance of the level and of a day's
    # weather.
    s = drying.WEATHER_SIGMA
    level = (3 * -s**2 / 2 + 2 * 0.0) / 5
    assert result.details["level_ln"] == pytest.approx(level)
    assert result.details["kpa_h_per_open_h"] == pytest.approx(
        math.exp(level + (s**2 / 5 + s**2) / 2))
    # On an average day the curve crosses at day 7 11:32. P50 is a little later: over the
    # 49 open hours ahead a dull day costs more than a bright day gives (the weather's
    # lognormal spread), about 3 open hours here.
    late_h = drying.open_hours(SCHEDULE, at(7, "11:32"), result.p50_ts)
    assert 0.0 <= late_h <= 4.0, local(result.p50_ts)
    assert result.p20_ts < result.p50_ts < result.p80_ts
    assert drying.open_hours(SCHEDULE, result.p20_ts, result.p80_ts) > 11.0  # days ahead
    assert result.reached_at is None and result.reason is None


# Readings on the curve until day 4 at 17:00 (54 kPa·h), asked at 17:30 (54.5).
FIVE_DAYS = [reading(at(d, hhmm), on_curve(11.0 * d + tau))
             for d in range(5) for hhmm, tau in (("08:00", 1.0), ("17:00", 10.0))]
# A target the curve crosses after 55.5 kPa·h: one open hour after 17:30, 18:30 if the
# trays stayed out.
TARGET_AFTER_18 = on_curve(55.5)


def test_only_schedule_hours_count_a_crossing_after_18_moves_to_the_next_morning():
    result = run(FIVE_DAYS, windows(5), at(4, "17:30"), target_pct=TARGET_AFTER_18)
    assert result.details["crossing_kpa_h"] == pytest.approx(55.5, abs=0.01)
    # Half an hour of today's window is left; the other half falls tomorrow at 07:30.
    assert at(5, "07:00") < result.p50_ts < at(5, "08:00"), local(result.p50_ts)
    # The fit's uncertainty (about ±0.5 kPa·h here) spreads the range over the night,
    # never into it: P20 before 18:00 today, P80 tomorrow morning.
    assert at(4, "17:30") < result.p20_ts <= at(4, "18:00"), local(result.p20_ts)
    assert at(5, "07:00") < result.p80_ts < at(5, "09:00"), local(result.p80_ts)
    # With trays out until 20:00 the same crossing stays on day 4, after 18:00: later than
    # 18:30, as the batch's five past evenings dried nothing (its periods end at 18:00),
    # so its hours after 18:00 are expected at a third of the typical day's (the prior's
    # 33 open hours are 2.54 days of the 13-hour window, against 5 days of nothing).
    evening = DryingSchedule("America/Lima", "07:00", "20:00")
    later = run(FIVE_DAYS, windows(5), at(4, "17:30"), target_pct=TARGET_AFTER_18,
                schedule=evening, typical_day_kpa_h=13.0)
    assert at(4, "19:00") < later.p50_ts < at(4, "20:00"), local(later.p50_ts)


def test_the_instants_are_ordered_and_the_same_input_gives_the_same_estimate():
    noisy = [reading(r.ts, round(r.moisture_pct + (0.4 if i % 2 else -0.3), 1))
             for i, r in enumerate(CURVE_READINGS)]
    first = run(noisy, windows(3), at(2, "17:30"))
    again = run(list(reversed(noisy)), windows(3), at(2, "17:30"))
    assert first == again
    assert first.p20_ts <= first.p50_ts <= first.p80_ts


def test_vpd_weights_the_drying_hours_and_a_period_without_vpd_gets_the_batch_mean():
    periods = [DryingPeriod(at(0, "07:00"), at(0, "12:00"), 2.0),
               DryingPeriod(at(0, "12:00"), at(0, "18:00"), None),
               DryingPeriod(at(1, "07:00"), at(1, "18:00"), 0.5)]
    readings = [reading(at(0, "07:00"), 55.0), reading(at(1, "17:00"), 30.0)]
    result = run(readings, periods, at(1, "18:00"))
    # 5 h at 2.0 + 6 h at the mean of the known ((5 * 2.0 + 11 * 0.5) / 16) + 11 h at 0.5.
    assert result.details["drying_h"] == pytest.approx(22.0)
    assert result.details["drying_kpa_h"] == pytest.approx(10.0 + 6 * 15.5 / 16 + 5.5)


def test_the_fit_runs_on_vpd_weighted_hours_not_clock_hours():
    # A bright day (2 kPa), a dull one (0.5), an average one: the beans dry by the
    # kPa·h they receive, and readings on that curve give back its k exactly.
    vpd_of_day = (2.0, 0.5, 1.0)
    periods = [DryingPeriod(at(d, "07:00"), at(d, "18:00"), vpd) for d, vpd in
               enumerate(vpd_of_day)]
    received = (0.0, 22.0, 27.5)  # kPa·h before each day
    readings = [reading(at(d, hhmm), on_curve(received[d] + hours * vpd_of_day[d]))
                for d in range(3) for hhmm, hours in (("08:00", 1.0), ("17:00", 10.0))]
    result = run(readings, periods, at(2, "17:30"))
    assert result.details["drying_kpa_h"] == pytest.approx(38.0)
    assert result.details["k_per_kpa_h"] == pytest.approx(K, rel=0.001)
    assert result.details["crossing_kpa_h"] == pytest.approx(NEEDED_KPA_H, rel=0.001)


def test_without_drying_periods_the_schedule_windows_are_assumed_at_the_typical_day():
    # No climate data: the readings on the curve (1 kPa per open hour, the test yard's
    # typical day) still give back its k, and details say the periods were assumed.
    result = run(CURVE_READINGS, [], at(2, "17:30"))
    assert result.details["periods_assumed"] == 1.0
    assert result.details["k_per_kpa_h"] == pytest.approx(K, rel=0.001)
    with_periods = run(CURVE_READINGS, windows(3), at(2, "17:30"))
    assert with_periods.details["periods_assumed"] == 0.0


def _day_of(vpd_today: float) -> list[DryingPeriod]:
    """Two past days at 1 kPa, then today from 07:00 to 10:00 at ``vpd_today``."""
    return [*windows(2), DryingPeriod(at(2, "07:00"), at(2, "10:00"), vpd_today)]


def test_a_typical_day_learnt_from_many_days_is_moved_less_by_the_batch_s_own_days():
    # Two past days that dried at half the typical day's rate: the built-in day (worth
    # three days) gives way to them more than a day learnt from 28 days does.
    dull = [DryingPeriod(a, b, 0.5) for a, b in
            ((p.start, p.end) for p in windows(3))]
    now = at(2, "17:30")
    s = drying.WEATHER_SIGMA
    built_in = run(CURVE_READINGS, dull, now)
    learnt = run(CURVE_READINGS, dull, now, typical_day_days=28.0)
    for result, weight in ((built_in, drying.BUILT_IN_DAY_WEIGHT_DAYS), (learnt, 28.0)):
        level = (weight * -s**2 / 2 + 2 * math.log(0.5)) / (weight + 2)
        assert result.details["level_ln"] == pytest.approx(level)
    # The batch's dull days say less against 28 days of the yard: it dries sooner.
    assert learnt.details["level_ln"] > built_in.details["level_ln"]
    assert learnt.p50_ts < built_in.p50_ts


def test_a_bright_morning_is_a_bright_day_and_brings_the_crossing_earlier():
    # The same readings; today's first three open hours dried at twice the past days' VPD.
    readings = [r for r in CURVE_READINGS if r.ts <= at(2, "10:00")]
    usual = run(readings, _day_of(1.0), at(2, "10:00"))
    bright = run(readings, _day_of(2.0), at(2, "10:00"))
    # The two past days' mornings foretold their afternoons exactly (the same share of
    # the day each time): the prior's noise, worth TODAY_NOISE_PRIOR_DAYS, is pooled with
    # one degree of freedom of none.
    prior_days = drying.TODAY_NOISE_PRIOR_DAYS
    noise_h = drying.TODAY_PRIOR_OPEN_HOURS * prior_days / (prior_days + 1)
    s, share = drying.WEATHER_SIGMA, 3.0 / (3.0 + noise_h)
    for result, ratio in ((usual, 1.0), (bright, 2.0)):
        # Today in logs: the level, moved the share of the way to the past days' level
        # (0: they were typical) plus ln(today's drying / the same hours of the past days).
        level = result.details["level_ln"]
        mu = level + share * (math.log(ratio) - level)
        assert result.details["today_factor"] == pytest.approx(
            math.exp(mu + (1 - share) * s**2 / 2))
    assert bright.details["today_factor"] > 1.5 > usual.details["today_factor"]
    assert bright.p50_ts < usual.p50_ts


def test_mornings_that_did_not_foretell_their_afternoons_make_today_count_less():
    # Three past days: on one the morning dried at 0.5 kPa and the afternoon at 1.5 (a
    # humid morning), on the others evenly; today's bright morning then says less.
    readings = [r for r in CURVE_READINGS if r.ts <= at(2, "10:00")]
    even = run(readings, _day_of(2.0), at(2, "10:00"))
    uneven_day = [DryingPeriod(at(1, "07:00"), at(1, "10:00"), 0.5),
                  DryingPeriod(at(1, "10:00"), at(1, "18:00"), 1.5)]
    periods = [*windows(1), *uneven_day, DryingPeriod(at(2, "07:00"), at(2, "10:00"), 2.0)]
    uneven = run(readings, periods, at(2, "10:00"))
    # Relative to its own level, today's factor moved less of the way to what it showed.
    assert (math.log(uneven.details["today_factor"]) - uneven.details["level_ln"]
            < math.log(even.details["today_factor"]) - even.details["level_ln"])


def test_on_the_first_day_today_is_drawn_as_any_day():
    # No past day to compare the morning with: a bright first morning says nothing yet.
    first = [DryingPeriod(at(0, "07:00"), at(0, "10:00"), 2.0)]
    result = run([reading(at(0, "08:00"), 55.0)], first, at(0, "10:00"))
    s = drying.WEATHER_SIGMA
    assert result.details["level_ln"] == pytest.approx(-s**2 / 2)  # the prior alone
    assert result.details["today_factor"] == pytest.approx(math.exp(-s**2 / 2 + s**2 / 2))


def test_periods_after_now_are_cut_at_now():
    result = run(CURVE_READINGS[:1], windows(1), at(0, "12:00"))
    assert result.details["drying_h"] == pytest.approx(5.0)


def test_no_reading_gives_no_range_and_says_why():
    result = run([], windows(2), at(1, "12:00"))
    assert (result.p20_ts, result.p50_ts, result.p80_ts) == (None, None, None)
    assert result.reason == "needs at least one moisture reading"


def test_one_reading_gives_a_prior_only_estimate_from_the_published_k():
    result = run([reading(at(0, "08:00"), 55.0)], windows(1), at(0, "09:00"))
    # The published 0.76 per day, over the test yard's typical day of 11 kPa·h; the
    # posterior's median, read off its grid.
    prior_k = drying.PRIOR_K_PER_DAY / 11.0
    prior_crossing = math.log((X0 - XE) / (dry(7.5) - XE)) / prior_k
    # The reading at 08:00 had 1 kPa·h of drying before it.
    assert result.details["crossing_kpa_h"] == pytest.approx(1.0 + prior_crossing, rel=1e-3)
    assert result.details["k_per_kpa_h"] == pytest.approx(prior_k, rel=1e-3)
    # The prior is lognormal with the spread of the published durations (2 to 10 days).
    assert round(drying.PRIOR_LN_K_SD, 3) == 0.478
    # The prior is wide: its range spans days.
    assert result.p80_ts - result.p20_ts > 2 * 86400
    assert result.p20_ts < result.p50_ts < result.p80_ts


def test_already_at_the_target_gives_the_first_reading_of_the_final_run():
    readings = [reading(at(0, "08:00"), 40.0), reading(at(3, "08:00"), 8.0),
                reading(at(3, "17:00"), 7.4), reading(at(4, "08:00"), 7.5)]
    result = run(readings, windows(5), at(4, "09:00"))
    assert result.reached_at == at(3, "17:00")
    assert (result.p20_ts, result.p50_ts, result.p80_ts, result.reason) == (None,) * 4


def test_a_reading_below_5_pct_is_reached_and_does_not_break_the_fit():
    readings = [reading(at(0, "08:00"), 30.0), reading(at(2, "08:00"), 4.8)]
    assert run(readings, windows(3), at(2, "09:00")).reached_at == at(2, "08:00")
    # Brittle, then rewetted to 9 % in a rainy night: below the model's floor (5.8 %) there
    # is no logarithm, and the rise from 4.8 is still rewetting.
    rewetted = [*readings, reading(at(2, "17:00"), 9.0)]
    result = run(rewetted, windows(3), at(2, "17:30"))
    assert result.reached_at is None
    assert result.details["segments"] == 2
    assert result.p50_ts is not None


def test_rewetting_restarts_the_curve_with_the_k_already_learnt():
    # On the curve until day 2 at 17:00 (tau 32), rained on: the next reading is 3 points up.
    rewet_pct = on_curve(32.0) + 3.0
    readings = [*CURVE_READINGS, reading(at(3, "08:00"), rewet_pct)]
    result = run(readings, windows(4), at(3, "08:30"))
    assert result.details["segments"] == 2
    assert result.details["k_per_kpa_h"] == pytest.approx(K, rel=0.002)
    # The reading at day 3 08:00 had 34 kPa·h before it (3 windows + 1 h).
    expected = 34.0 + math.log((dry(rewet_pct) - XE) / (dry(7.5) - XE)) / K
    assert result.details["crossing_kpa_h"] == pytest.approx(expected, rel=0.001)
    # Later than without the rain (58.9 kPa·h).
    assert result.details["crossing_kpa_h"] > NEEDED_KPA_H + 5


def test_a_rise_within_the_meters_noise_is_not_rewetting():
    readings = [reading(at(0, "08:00"), 40.0), reading(at(0, "17:00"), 30.0),
                reading(at(1, "08:00"), 30.8)]
    assert run(readings, windows(2), at(1, "09:00")).details["segments"] == 1


def test_readings_that_do_not_fall_give_no_p50_and_say_why():
    readings = [reading(at(d, hhmm), 30.0) for d in range(4) for hhmm in ("08:00", "17:00")]
    result = run(readings, windows(4), at(3, "17:30"))
    assert result.p50_ts is None and result.p80_ts is None
    assert all(math.isfinite(v) for v in result.details.values())  # for JSON
    assert result.reason == "the readings show no drying: no crossing of 7.5 % within 30 days"


def test_a_target_below_the_equilibrium_moisture_is_refused_with_a_reason():
    result = run(CURVE_READINGS, windows(3), at(2, "17:30"), target_pct=5.0)
    assert result.p50_ts is None
    assert result.reason == ("target 5 % is at or below the model's equilibrium moisture "
                             "(5.8 %): sun drying does not get there")


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"readings": [reading(at(0, "08:00"), 101.0)]}, "moisture_pct",
     "must be from 0 to below 100 % (wet basis), got 101.0 at "),
    ({"readings": [reading(at(0, "08:00"), -1.0)]}, "moisture_pct", "must be from 0 to below"),
    ({"readings": [reading(at(1, "08:00"), 40.0)]}, "readings", "a reading at "),
    ({"target_pct": 0.0}, "target_pct", "must be between 0 and 100 %, got 0.0"),
    ({"periods": [DryingPeriod(at(0, "12:00"), at(0, "11:00"), 1.0)]}, "periods",
     "a drying period ends ("),
    ({"periods": [DryingPeriod(at(0, "11:00"), at(0, "12:00"), -1.0)]}, "periods",
     "negative VPD -1.0 kPa"),
    ({"schedule": DryingSchedule("America/Atlantis")}, "schedule.timezone",
     "unknown time zone 'America/Atlantis'"),
    ({"schedule": DryingSchedule("America/Lima", "25:00")}, "schedule.start_hhmm",
     "'25:00' is not a time of day"),
    ({"schedule": DryingSchedule("America/Lima", "7h")}, "schedule.start_hhmm",
     "'7h' is not HH:MM"),
    ({"schedule": DryingSchedule("America/Lima", "18:00", "07:00")}, "schedule.end_hhmm",
     "07:00 is not after 18:00"),
    ({"typical_day_kpa_h": 0.0}, "typical_day_kpa_h", "must be above 0, got 0.0"),
    ({"typical_day_days": 0.0}, "typical_day_days", "must be above 0, got 0.0"),
])
def test_bad_input_is_refused_naming_the_field(change, field, message):
    arguments = {"readings": [reading(at(0, "08:00"), 40.0)], "periods": windows(1),
                 "now": at(0, "12:00"), **change}
    with pytest.raises(BatchError) as refused:
        run(arguments.pop("readings"), arguments.pop("periods"), arguments.pop("now"),
            **arguments)
    assert refused.value.field == field
    assert refused.value.message.startswith(message), refused.value.message


def test_open_hours_counts_only_the_schedule():
    assert drying.open_hours(SCHEDULE, at(0, "17:00"), at(1, "08:00")) == pytest.approx(2.0)
    assert drying.open_hours(SCHEDULE, at(1, "08:00"), at(0, "17:00")) == pytest.approx(-2.0)
    assert drying.open_hours(SCHEDULE, at(0, "19:00"), at(1, "06:00")) == 0.0


# ------------------------------------------------------------------ the replays


def _bench():
    """bench/drying_estimate.py, the replay harness (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "drying_estimate.py"
    spec = importlib.util.spec_from_file_location("drying_estimate_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.mark.parametrize("curve", bench.PUBLISHED, ids=lambda c: f"{c.name} {c.days:g} d")
def test_each_published_curve_replayed_alone_is_predicted_on_its_day(curve):
    """Median weather every day, exact readings: the published duration is found within
    3 open-tray hours (a crossing early in a morning predicted the evening before is a
    drying day early: five of the nine curves, by 1.1-2.0 h)."""
    summary = bench.run(1, 1, bench.Weather(constant=True, meter_noise_pct=0.0), (curve,))
    for fraction in (0.5, 0.75):
        (scored,) = summary.scores[fraction]
        assert abs(scored.error_open_h) <= 3.0, (fraction, scored)
        assert abs(scored.error_days) <= 1, (fraction, scored)


def test_200_replays_of_the_reference_simulation_keep_the_accuracy_docs_batches_md_reports():
    """The reference file's own simulation (Lewis kinetics in open-tray hours, 58 % -> 7 %
    in 6 days, each day's weather factor lognormal 0.35 and seen in the VPD, the meter
    twice a day ±0.5 %): the figures this version measures with this seed, a point below.
    On 2,000 replays (docs/batches.md) the estimate learning the yard's typical day from
    its 28 days before, as the server does, gets 97.7 %, 82.0 %, 83.3 % against the
    issue's bar of 95 %, 80 %, 80 %; told the yard's typical day 98.4 %, 83.2 %, 84.5 %;
    the best possible estimator 98.2 %, 84.2 %, 85.5 %."""
    known = bench.run_reference(200, 1, yard_history=True)
    assert known.within_days(0.5, 1) >= 0.99  # measured 100 %
    assert known.within_hours(0.5, 8) >= 0.85  # 86.0 %
    assert known.within_hours(0.75, 5) >= 0.865  # 87.5 %
    # With its built-in typical day (15 kPa·h, the simulated yard's mean day is 17.4).
    built_in = bench.run_reference(200, 1)
    assert built_in.within_days(0.5, 1) >= 0.95  # 96.0 %
    assert built_in.within_hours(0.5, 8) >= 0.77  # 78.0 %
    assert built_in.within_hours(0.75, 5) >= 0.78  # 79.0 %
    # The weather ahead known (the coming days' VPD), the fitted curve alone is right
    # within ±5 open-tray hours every time: what is missed is the weather's.
    assert built_in.known_within_hours(0.5, 5) == 1.0
    assert built_in.known_within_hours(0.75, 5) == 1.0
    # The range is honest: P20-P80 holds the truth about 60 % of the time.
    assert 0.55 <= known.coverage(0.5) <= 0.72  # 63.5 %
    assert 0.55 <= known.coverage(0.75) <= 0.72  # 60 %
    # As the server runs it: the typical day learnt from the yard's 28 days before each
    # batch (server/batches/typical.py on the simulated yard's drying periods), weighed
    # as the 28 days it stands for.
    learnt = bench.run_reference(200, 1, learn_days=bench.LEARN_DAYS)
    assert bench.LEARN_DAYS == 28
    assert learnt.within_days(0.5, 1) >= 0.99  # 100 %
    assert learnt.within_hours(0.5, 8) >= 0.84  # 85.0 %
    assert learnt.within_hours(0.75, 5) >= 0.84  # 85.0 %
    assert 0.55 <= learnt.coverage(0.5) <= 0.72  # 63.5 %
    assert 0.55 <= learnt.coverage(0.75) <= 0.72  # 62 %
    best = bench.run_reference(200, 1, oracle=True)  # 100 %, 85.5 %, 86.5 %
    assert best.within_days(0.5, 1) >= 0.95
    assert best.within_hours(0.5, 8) >= 0.80
    assert best.within_hours(0.75, 5) >= 0.80


def test_200_replays_in_the_harsher_yard_keep_the_accuracy_docs_batches_md_reports():
    """The bench's harsher yard (showers, humid mornings, weather the VPD does not show,
    nine published curves from 2 to 10 days): the figures measured with this seed, a
    point below (docs/batches.md). They fall short of the issue's bar, and so does the
    best possible estimator, which knows each batch's curve and the rest of its day."""
    summary = bench.run(200, 1)
    assert summary.within_days(0.5, 1) >= 0.855  # measured 86.5 %; the bar: 95 %
    assert summary.within_hours(0.5, 8) >= 0.60  # 61.0 %; the bar: 80 %
    assert summary.within_hours(0.75, 5) >= 0.65  # 66.0 %; the bar: 80 %
    assert summary.within_days(0.75, 1) >= 0.955  # 96.5 %
    assert 0.45 <= summary.coverage(0.5) <= 0.70  # 55 %
    assert 0.45 <= summary.coverage(0.75) <= 0.70  # 55.5 %
    # The typical day learnt, as the server does.
    learnt = bench.run(200, 1, learn_days=bench.LEARN_DAYS)
    assert learnt.within_days(0.5, 1) >= 0.86  # 87.0 %
    assert learnt.within_hours(0.5, 8) >= 0.64  # 65.0 %
    assert learnt.within_hours(0.75, 5) >= 0.685  # 69.5 %
    assert 0.45 <= learnt.coverage(0.5) <= 0.70  # 52.5 %
    best = bench.run(200, 1, oracle=True)  # 95.5 %, 78.5 %, 79.0 %
    assert best.within_days(0.5, 1) >= 0.95
    assert best.within_hours(0.5, 8) < 0.80
    assert best.within_hours(0.75, 5) < 0.80
