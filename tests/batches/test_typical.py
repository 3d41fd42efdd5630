"""The yard's typical drying day (server/batches/typical.py): pure, on a constructed climate.

Lima (UTC-5, no DST), trays out 07:00-18:00 (11 h). Hourly buckets make the sums
easy to check by hand.
"""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from secadero.server.batches import typical
from secadero.server.batches.estimate import TYPICAL_DAY_KPA_H, WEATHER_SIGMA
from secadero.server.batches.model import ClimateSample, DryingSchedule, Interval

LIMA = ZoneInfo("America/Lima")
SCHEDULE = DryingSchedule("America/Lima", "07:00", "18:00")
HOUR = 3600.0


def at(day: int, hour: float) -> float:
    """Day 0 is Monday 13 July 2026 (Lima); fractional hours allowed."""
    return datetime(2026, 7, 13 + day, tzinfo=LIMA).timestamp() + hour * HOUR


def hourly(node: str, day: int, hours: range, *, vpd: float, humidity: float = 50.0,
           **humid_at: float) -> list[ClimateSample]:
    """One sample per hour (each stands for its hour); ``humid_at={"h12": 80}`` sets the
    humidity of the 12:00 bucket."""
    return [ClimateSample(at(day, h), node, 30.0, humid_at.get(f"h{h}", humidity), vpd)
            for h in hours]


NOW = at(0, 12.0)  # Monday noon: Monday is today, not a past day


def test_each_past_day_sums_vpd_hours_of_dry_air_and_dry_plate_per_node_then_averages():
    samples = [
        # Three days ago (Friday): node a all window at 1 kPa, but 12:00 too humid: 10.
        *hourly("a", -3, range(7, 18), vpd=1.0, h12=80.0),
        # ... node b only five hours: under 80 % of the window, left out of that day.
        *hourly("b", -3, range(7, 12), vpd=3.0),
        # Two days ago: node a at 2 kPa all window, rain 13:00-13:30: 2 x 10.5 = 21.
        *hourly("a", -2, range(7, 18), vpd=2.0),
        # ... node b from 09:00 (9 of 11 h, 82 %) at 1 kPa, the same rain (the yard's
        # plate): 8.5 kPa·h, scaled by 11/9 (an outage is not a dull morning).
        *hourly("b", -2, range(9, 18), vpd=1.0),
        # Yesterday: nothing (an outage of the whole yard): no value, not a zero.
        # Night and today are outside the past windows.
        ClimateSample(at(-2, 22.0), "a", 25.0, 50.0, 5.0),
        *hourly("a", 0, range(7, 12), vpd=9.0),
        # A sensor that gave nothing covers nothing.
        ClimateSample(at(-3, 12.0), "c", None, None, None),
    ]
    wet = [Interval(at(-2, 13.0), at(-2, 13.5))]
    values = typical.daily_drying(samples, wet, now=NOW, schedule=SCHEDULE, days=3,
                                  bucket_s=HOUR, max_humidity_pct=70.0)
    assert values == pytest.approx([10.0, (21.0 + 8.5 * 11 / 9) / 2])


def test_a_bucket_that_begins_before_the_window_counts_for_its_part_inside():
    # 5-minute buckets from 06:55: the first stands for 07:00-07:00 only (nothing), the
    # one at 17:55 for its 5 minutes; 06:55 + 133 buckets reach 18:00.
    samples = [ClimateSample(at(-1, 6 + 55 / 60) + i * 300.0, "a", 30.0, 50.0, 1.2)
               for i in range(134)]
    values = typical.daily_drying(samples, [], now=NOW, schedule=SCHEDULE, days=1,
                                  bucket_s=300.0, max_humidity_pct=70.0)
    assert values == pytest.approx([1.2 * 11.0])


def test_the_typical_day_is_the_lognormal_mean_of_the_days_and_their_spread():
    deviations = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3)
    learnt = typical.typical_from_days([10.0 * math.exp(d) for d in deviations],
                                       since=1.0, until=2.0)
    sigma = math.sqrt(0.28 / 6)  # the sample standard deviation of the deviations
    assert learnt.source == "learnt"
    assert learnt.days == 7
    assert learnt.sigma == pytest.approx(sigma)
    assert learnt.kpa_h == pytest.approx(10.0 * math.exp(sigma**2 / 2))
    assert (learnt.since, learnt.until) == (1.0, 2.0)


def test_a_day_that_did_not_dry_counts_as_a_tenth_of_the_median_day():
    with_rain = typical.typical_from_days([12.0] * 6 + [0.0])
    logs = [math.log(12.0)] * 6 + [math.log(1.2)]
    mean = sum(logs) / 7
    sigma = math.sqrt(sum((x - mean) ** 2 for x in logs) / 6)
    assert with_rain.kpa_h == pytest.approx(math.exp(mean + sigma**2 / 2))
    assert with_rain.sigma == pytest.approx(sigma)


def test_too_few_days_give_the_built_in_day_and_say_why():
    few = typical.typical_from_days([20.0] * (typical.MIN_DAYS - 1))
    assert few.source == "built-in"
    assert (few.kpa_h, few.sigma) == (TYPICAL_DAY_KPA_H, WEATHER_SIGMA)
    assert few.reason == f"{typical.MIN_DAYS - 1} day(s) of the yard's climate; 7 needed"
    none_dried = typical.typical_from_days([0.0] * 10)
    assert none_dried.source == "built-in"
    assert none_dried.reason == "the yard's recent days did not dry at all"


def test_learn_reads_the_days_before_today_and_falls_back_with_too_few():
    since, until = typical.window_days(NOW, SCHEDULE, 8)
    assert (since, until) == (at(-8, 7.0), at(0, 7.0))
    samples = [s for day in range(-8, 0) for s in hourly("a", day, range(7, 18), vpd=1.5)]
    learnt = typical.learn(samples, [], now=NOW, schedule=SCHEDULE, days=8, bucket_s=HOUR,
                           max_humidity_pct=70.0)
    assert (learnt.source, learnt.days) == ("learnt", 8)
    assert learnt.kpa_h == pytest.approx(16.5)
    assert learnt.sigma == 0.0
    assert (learnt.since, learnt.until) == (since, until)
    # Six days only (the other two before the span read): the built-in day.
    short = typical.learn(samples, [], now=NOW, schedule=SCHEDULE, days=6, bucket_s=HOUR,
                          max_humidity_pct=70.0)
    assert (short.source, short.days, short.kpa_h) == ("built-in", 6, TYPICAL_DAY_KPA_H)
