"""metrics.compute and metrics.drying_periods: exact values on small hand-made series.

Pure code: the series, the readings and the clock are given; nothing waits.
Times below are hours after 09:00 local time in Bagua (America/Lima), well
inside daylight, unless a test is about daylight.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from secadero.server.batches import metrics
from secadero.server.batches.daylight import daylight
from secadero.server.batches.model import (
    AlertMark,
    Batch,
    BatchSeries,
    ClimateSample,
    DryingPeriod,
    Interval,
    MoistureReading,
    RainResponse,
    TrayChange,
    TrayRef,
)
from secadero.settings import BatchSettings, YardSettings

LIMA = ZoneInfo("America/Lima")
YARD = YardSettings(id="bagua", name="Bagua", latitude=-5.64, longitude=-78.53)
T0 = dt.datetime(2027, 1, 11, 9, 0, tzinfo=LIMA).timestamp()
SETTINGS = BatchSettings()  # drying <= 70 % RH, rewetting >= 80 %, gaps after 300 s
T1 = TrayRef("n1", "t1")
T2 = TrayRef("n1", "t2")


def at(hours: float) -> float:
    return T0 + hours * 3600


def climate(node: str, from_h: float, to_h: float, humidity: float, temperature: float,
            vpd: float, *, every_s: float = 300) -> list[ClimateSample]:
    """A reading every ``every_s`` from ``from_h`` (inclusive) to ``to_h`` (exclusive)."""
    count = round((to_h - from_h) * 3600 / every_s)
    return [ClimateSample(at(from_h) + i * every_s, node, temperature, humidity, vpd)
            for i in range(count)]


def shower_day() -> tuple[Batch, BatchSeries, list[MoistureReading]]:
    """Six hours of one tray: humid spell, a shower pulled in late, a data gap, a second alert.

    - tray out 0-2 h, in 2-3 h (after the shower's alert), out again 3-6 h;
    - air: 60 % RH, 30 °C until 1.5 h; 85 %, 25 °C until 2.5 h; then 65 %, 30 °C;
    - no readings from 4 h to 4.5 h: a gap;
    - plate wet 1 h 50 min - 2 h 20 min;
    - rain episode 7: forecast raised at 1 h 45 min, upgraded to rain_now at
      1 h 50 min, resolved at 2 h 40 min; episode 8: 5 h - 5.5 h, tray left out.
    """
    batch = Batch(id="b-7", yard=YARD.id, trays=(T1,), started_at=at(0))
    samples = (climate("n1", 0, 1.5, 60.0, 30.0, 1.6) + climate("n1", 1.5, 2.5, 85.0, 25.0, 0.5)
               + climate("n1", 2.5, 4, 65.0, 30.0, 1.4) + climate("n1", 4.5, 6, 65.0, 30.0, 1.4))
    series = BatchSeries(
        start=at(0), end=at(6), climate=tuple(samples),
        tray_changes=(TrayChange(at(0), T1, "extended"), TrayChange(at(2), T1, "retracted"),
                      TrayChange(at(3), T1, "extended")),
        rain_wet=(Interval(at(1 + 50 / 60), at(2 + 20 / 60)),),
        alerts=(AlertMark(at(1.75), "rain_forecast", "raised", 7),
                AlertMark(at(1 + 50 / 60), "rain_forecast", "resolved", 7),
                AlertMark(at(1 + 50 / 60), "rain_now", "raised", 7),
                AlertMark(at(2 + 40 / 60), "rain_now", "resolved", 7),
                AlertMark(at(5), "rain_now", "raised", 8),
                AlertMark(at(5.5), "rain_now", "resolved", 8),
                AlertMark(at(5.2), "node_offline", "raised", 9)),
        gaps=(Interval(at(4), at(4.5)),),
    )
    readings = [MoistureReading("b-7", at(1), 40.0), MoistureReading("b-7", at(5), 7.4),
                MoistureReading("b-7", at(5.5), 7.0)]
    return batch, series, readings


def test_a_shower_day_gives_exact_figures() -> None:
    batch, series, readings = shower_day()
    m = metrics.compute(batch, series, readings, SETTINGS, YARD)

    assert m.until == at(6)
    # Out and plate dry: 0 - 1 h 50 min and 3 - 6 h (the gap does not matter: no
    # climate is needed to know the tray was out in the sun).
    assert m.sun_drying_h == pytest.approx(1 + 50 / 60 + 3)
    # ... and air at or below 70 %: 0 - 1.5 h, 3 - 4 h, 4.5 - 6 h (no data in the gap).
    assert m.drying_h == pytest.approx(1.5 + 1 + 1.5)
    # Out in 85 % air: 1.5 - 2 h.
    assert m.rewetting_h == pytest.approx(0.5)
    # Wet plate from 1 h 50 min while the tray was out until 2 h.
    assert m.rain_exposure_min == pytest.approx(10)
    assert m.responses == (
        RainResponse(episode=7, raised_at=at(1.75), retracted_at=at(2), minutes=pytest.approx(15)),
        RainResponse(episode=8, raised_at=at(5), retracted_at=None, minutes=None),
    )
    # Time-weighted over the 5.5 h with data: 60 % 1.5 h, 85 % 1 h, 65 % 3 h.
    assert m.humidity_mean_pct == pytest.approx((60 * 1.5 + 85 + 65 * 3) / 5.5)
    assert (m.humidity_min_pct, m.humidity_max_pct) == (60.0, 85.0)
    assert m.temperature_mean_c == pytest.approx((30 * 4.5 + 25) / 5.5)
    assert (m.temperature_min_c, m.temperature_max_c) == (25.0, 30.0)
    assert m.vpd_mean_kpa == pytest.approx((1.6 * 1.5 + 0.5 + 1.4 * 3) / 5.5)
    assert m.time_to_target_h == pytest.approx(5.0)  # 7.4 % at 5 h, target 7.5 %
    assert m.gaps == (Interval(at(4), at(4.5)),)


def test_drying_periods_are_the_drying_spans_with_their_vpd() -> None:
    batch, series, _ = shower_day()
    periods = metrics.drying_periods(batch, series, SETTINGS)
    assert periods == (
        DryingPeriod(at(0), at(1.5), pytest.approx(1.6), 1.0),
        DryingPeriod(at(3), at(4), pytest.approx(1.4), 1.0),
        DryingPeriod(at(4.5), at(6), pytest.approx(1.4), 1.0),
    )
    total = sum(p.hours * p.share for p in periods)
    assert total == pytest.approx(metrics.compute(batch, series, [], SETTINGS, YARD).drying_h)


def test_metrics_up_to_an_earlier_until_count_only_what_happened_by_then() -> None:
    batch, series, readings = shower_day()
    early = BatchSeries(start=series.start, end=at(2.5), climate=series.climate,
                        tray_changes=series.tray_changes, rain_wet=series.rain_wet,
                        alerts=series.alerts, gaps=series.gaps)
    m = metrics.compute(batch, early, readings, SETTINGS, YARD)
    assert m.drying_h == pytest.approx(1.5)
    assert m.sun_drying_h == pytest.approx(1 + 50 / 60)
    assert m.time_to_target_h is None  # the 7.4 % reading is at 5 h
    assert m.gaps == ()
    assert [r.episode for r in m.responses] == [7]


def test_two_trays_count_for_half_the_lot_each_and_exposure_counts_any_tray() -> None:
    # t1 out 0 - 2 h, t2 out 0 - 1 h; dry air all along; plate wet 1.5 - 2.5 h.
    batch = Batch(id="b-2", yard=YARD.id, trays=(T1, T2), started_at=at(0))
    series = BatchSeries(
        start=at(0), end=at(3), climate=tuple(climate("n1", 0, 3, 60.0, 30.0, 1.5)),
        tray_changes=(TrayChange(at(0), T1, "extended"), TrayChange(at(0), T2, "extended"),
                      TrayChange(at(1), T2, "retracted"), TrayChange(at(2), T1, "retracted")),
        rain_wet=(Interval(at(1.5), at(2.5)),),
        alerts=(AlertMark(at(1.5), "rain_now", "raised", 1),),
    )
    m = metrics.compute(batch, series, [], SETTINGS, YARD)
    assert m.drying_h == pytest.approx((1.5 + 1.0) / 2)  # t1 until the rain, t2 until 1 h
    assert m.sun_drying_h == pytest.approx((1.5 + 1.0) / 2)
    assert m.rain_exposure_min == pytest.approx(30)  # t1 alone was out in the rain
    # The episode is still open at the end: its response is the last tray in, at 2 h.
    assert m.responses == (RainResponse(1, at(1.5), at(2), pytest.approx(30)),)
    assert metrics.drying_periods(batch, series, SETTINGS) == (
        DryingPeriod(at(0), at(1), pytest.approx(1.5), 1.0),
        DryingPeriod(at(1), at(1.5), pytest.approx(1.5), 0.5),
    )


def test_a_tray_of_unknown_state_is_neither_out_nor_in() -> None:
    # The node fell silent: the reader marks the tray unknown. No drying is
    # credited, and the rain response waits for the switch to say "retracted".
    batch = Batch(id="b-3", yard=YARD.id, trays=(T1,), started_at=at(0))
    series = BatchSeries(
        start=at(0), end=at(2), climate=tuple(climate("n1", 0, 2, 60.0, 30.0, 1.5)),
        tray_changes=(TrayChange(at(0), T1, "extended"), TrayChange(at(0.5), T1, "unknown"),
                      TrayChange(at(1.5), T1, "retracted")),
        rain_wet=(Interval(at(0.25), at(1)),),
        alerts=(AlertMark(at(0.25), "rain_now", "raised", 4),),
    )
    m = metrics.compute(batch, series, [], SETTINGS, YARD)
    assert m.drying_h == pytest.approx(0.25)
    assert m.rain_exposure_min == pytest.approx(15)
    assert m.responses == (RainResponse(4, at(0.25), at(1.5), pytest.approx(75)),)


def test_trays_already_in_answer_an_alert_at_once() -> None:
    batch = Batch(id="b-4", yard=YARD.id, trays=(T1,), started_at=at(0))
    series = BatchSeries(
        start=at(0), end=at(1), tray_changes=(TrayChange(at(0), T1, "retracted"),),
        alerts=(AlertMark(at(0.5), "rain_forecast", "raised", 5),
                AlertMark(at(0.5), "humidity_surge", "raised", 6)),
    )
    m = metrics.compute(batch, series, [], SETTINGS, YARD)
    assert m.responses == (RainResponse(5, at(0.5), at(0.5), 0.0),)
    assert m.humidity_mean_pct is None and m.vpd_mean_kpa is None
    assert (m.drying_h, m.sun_drying_h, m.rewetting_h, m.rain_exposure_min) == (0, 0, 0, 0)


def test_a_reading_holds_at_most_gap_after_s() -> None:
    # Readings at 0 and 1 h only (no gap recorded): each stands for 300 s.
    batch = Batch(id="b-5", yard=YARD.id, trays=(T1,), started_at=at(0))
    series = BatchSeries(
        start=at(0), end=at(2),
        climate=(ClimateSample(at(0), "n1", 30.0, 60.0, 1.5),
                 ClimateSample(at(1), "n1", 20.0, 60.0, 0.5)),
        tray_changes=(TrayChange(at(0), T1, "extended"),),
    )
    m = metrics.compute(batch, series, [], SETTINGS, YARD)
    assert m.drying_h == pytest.approx(600 / 3600)
    assert m.temperature_mean_c == pytest.approx(25.0)
    assert m.sun_drying_h == pytest.approx(2.0)


def test_sun_drying_starts_at_sunrise() -> None:
    # Trays out from 05:00 to 07:00 in Lima in January: the sun rises near 05:50.
    yard = YardSettings(id="lima", name="Lima", latitude=-12.05, longitude=-77.04)
    five = dt.datetime(2027, 1, 11, 5, 0, tzinfo=LIMA).timestamp()
    (sun,) = daylight(yard.latitude, yard.longitude, yard.timezone, five, five + 86400)
    sunrise = dt.datetime.fromtimestamp(sun.start, LIMA)
    sunset = dt.datetime.fromtimestamp(sun.end, LIMA)
    assert dt.time(5, 40) < sunrise.time() < dt.time(6, 0)
    assert dt.time(18, 30) < sunset.time() < dt.time(18, 50)

    batch = Batch(id="b-6", yard=yard.id, trays=(T1,), started_at=five)
    series = BatchSeries(start=five, end=five + 2 * 3600,
                         tray_changes=(TrayChange(five, T1, "extended"),))
    m = metrics.compute(batch, series, [], SETTINGS, yard)
    assert m.sun_drying_h == pytest.approx((five + 7200 - sun.start) / 3600)


def test_a_batch_without_data_has_no_figures() -> None:
    batch = Batch(id="b-0", yard=YARD.id, trays=(T1,), started_at=at(0))
    m = metrics.compute(batch, BatchSeries(start=at(0), end=at(0)), [], SETTINGS, YARD)
    assert (m.sun_drying_h, m.drying_h, m.rain_exposure_min, m.responses) == (0, 0, 0, ())
    assert m.humidity_mean_pct is None and m.time_to_target_h is None
    assert metrics.drying_periods(batch, BatchSeries(start=at(0), end=at(0)), SETTINGS) == ()


def test_a_reading_without_humidity_credits_no_drying_and_keeps_its_temperature() -> None:
    # The DHT22 gave no humidity for the second half hour (null in the wire contract).
    batch = Batch(id="b-8", yard=YARD.id, trays=(T1,), started_at=at(0))
    samples = (climate("n1", 0, 0.5, 60.0, 30.0, 1.6)
               + [ClimateSample(s.ts, "n1", 20.0, None, None)
                  for s in climate("n1", 0.5, 1, 0.0, 0.0, 0.0)])
    series = BatchSeries(start=at(0), end=at(1), climate=tuple(samples),
                         tray_changes=(TrayChange(at(0), T1, "extended"),))
    m = metrics.compute(batch, series, [], SETTINGS, YARD)
    assert m.drying_h == pytest.approx(0.5)
    assert m.sun_drying_h == pytest.approx(1.0)
    assert m.humidity_mean_pct == pytest.approx(60.0)
    assert m.temperature_mean_c == pytest.approx(25.0)
    assert m.vpd_mean_kpa == pytest.approx(1.6)
    assert metrics.drying_periods(batch, series, SETTINGS) == (
        DryingPeriod(at(0), at(0.5), pytest.approx(1.6), 1.0),)
