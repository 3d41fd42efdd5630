"""The batch report: JSON and CSV exact on a small batch, and the one-page PDF/PNG of a
10-day batch (showers, a gap, tray movements, alerts, daily moisture readings) built by
hand from ``server/batches/model.py`` types. The PDF's text is read back with pypdf.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pypdf import PdfReader

from secadero.server.batches import report
from secadero.server.batches.model import (
    AlertMark,
    Batch,
    BatchError,
    BatchMetrics,
    BatchSeries,
    ClimateSample,
    Estimate,
    Interval,
    MoistureReading,
    RainResponse,
    TrayChange,
    TrayRef,
)
from secadero.server.batches.texts import ENGLISH, SPANISH

HOUR = 3600.0
DAY = 86400.0
# 2026-11-20 07:00 in Lima (UTC-5): the batch goes out at dawn.
START = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()
T1, T2, T3 = TrayRef("norte-1", "t1"), TrayRef("norte-1", "t2"), TrayRef("norte-2", "t1")


# ---------------------------------------------------------------- a 10-day batch


def ten_day_batch() -> tuple[Batch, BatchSeries, BatchMetrics, list[MoistureReading],
                             Estimate]:
    """Ten days of a batch on three trays of two nodes, every 5 minutes.

    Dry sunny days (RH ~55 %, 31 °C) and wet nights (RH ~92 %, 22 °C); trays out
    07:30-17:30 local; three showers, each announced by an alert: on day 2 and 8
    the trays come in within 10 minutes, on day 5 they stay out 25 minutes in
    the rain; node data stop for three hours on day 6 (a power cut: a gap).
    """
    end = START + 10 * DAY
    showers = [Interval(START + 1 * DAY + 7 * HOUR, START + 1 * DAY + 7 * HOUR + 40 * 60),
               Interval(START + 4 * DAY + 4 * HOUR, START + 4 * DAY + 4 * HOUR + 45 * 60),
               Interval(START + 7 * DAY + 8.5 * HOUR, START + 7 * DAY + 9.5 * HOUR)]
    gap = Interval(START + 5 * DAY + 3 * HOUR, START + 5 * DAY + 6 * HOUR)
    climate = []
    for step in range(int((end - START) // 300)):
        ts = START + step * 300
        if gap.start <= ts < gap.end:
            continue
        hour_of_day = ((ts - START) / HOUR + 7) % 24  # local hour
        daylight = max(0.0, math.sin((hour_of_day - 6) / 12 * math.pi))
        raining = any(s.start <= ts < s.end for s in showers)
        for node, offset in (("norte-1", 0.0), ("norte-2", 2.5)):
            humidity = 97.0 if raining else 92.0 - 37.0 * daylight + offset
            temperature = 22.0 + 9.0 * daylight - offset / 5
            vpd = 0.6108 * math.exp(17.27 * temperature / (temperature + 237.3)) * (
                1 - humidity / 100)
            climate.append(ClimateSample(ts, node, round(temperature, 2), round(humidity, 2),
                                         round(vpd, 3)))
    changes = []
    for day in range(10):
        out, back = START + day * DAY + 0.5 * HOUR, START + day * DAY + 10.5 * HOUR
        for tray in (T1, T2, T3):
            changes.append(TrayChange(out, tray, "extended"))
            changes.append(TrayChange(back, tray, "retracted"))
    alerts, responses = [], []
    for episode, (shower, late_min) in enumerate(zip(showers, (8, 25, 6), strict=True),
                                                 start=1):
        raised = shower.start - 10 * 60
        retracted = shower.start + late_min * 60
        alerts += [AlertMark(raised, "rain_forecast", "raised", episode,
                             "Lluvia en ~10 min. Recoger bandejas."),
                   AlertMark(shower.end + 20 * 60, "rain_forecast", "resolved", episode)]
        responses.append(RainResponse(episode, raised, retracted, (retracted - raised) / 60))
        for tray in (T1, T2, T3):
            changes.append(TrayChange(retracted - 60, tray, "moving"))
            changes.append(TrayChange(retracted, tray, "retracted"))
            changes.append(TrayChange(shower.end + 30 * 60, tray, "extended"))
    changes.sort(key=lambda c: (c.ts, c.tray))
    series = BatchSeries(start=START, end=end, climate=tuple(climate),
                         tray_changes=tuple(changes), rain_wet=tuple(showers),
                         alerts=tuple(alerts), gaps=(gap,))
    readings = [MoistureReading("B-2026-031", START + day * DAY + 9 * HOUR,
                                round(7.0 + 48.0 * math.exp(-0.32 * day) + 0.6, 1),
                                by="Rosa", tray=T1) for day in range(10)]
    batch = Batch(id="B-2026-031", yard="tendal-norte", trays=(T1, T2, T3),
                  started_at=START, lot="L-0412", member="Familia Quispe Huamán",
                  fermentation_end="2026-11-19", wet_weight_kg=412.5,
                  notes="Trinitario, cajón 3", started_by="Rosa")
    metrics = BatchMetrics(
        until=end, sun_drying_h=96.5, drying_h=71.25, rewetting_h=3.5,
        rain_exposure_min=19.0, responses=tuple(responses), humidity_mean_pct=73.4,
        humidity_min_pct=55.0, humidity_max_pct=97.0, temperature_mean_c=26.1,
        temperature_min_c=21.5, temperature_max_c=31.0, vpd_mean_kpa=1.12,
        time_to_target_h=None, gaps=(gap,))
    estimate = Estimate(target_pct=7.5, p20_ts=end + 5 * HOUR, p50_ts=end + 1 * DAY + 2 * HOUR,
                        p80_ts=end + 1 * DAY + 7 * HOUR, details={"k_per_h": 0.041})
    return batch, series, metrics, readings, estimate


def ended(batch: Batch, metrics: BatchMetrics, readings: list[MoistureReading]
          ) -> tuple[Batch, BatchMetrics, list[MoistureReading], Estimate]:
    """The same batch, its last reading (day 10, 16:00) at 7.3 %, ended an hour later."""
    reached = readings[-1].ts
    return (dataclasses.replace(batch, ended_at=reached + HOUR, final_moisture_pct=7.3,
                                dry_weight_kg=198.0, ended_by="Luis"),
            dataclasses.replace(metrics, time_to_target_h=(reached - START) / HOUR),
            [*readings[:-1], dataclasses.replace(readings[-1], moisture_pct=7.3)],
            Estimate(target_pct=7.5, reached_at=reached))


def pdf_text(path: Path) -> str:
    """The PDF's text, each run of white space as one space."""
    reader = PdfReader(path)
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


# ---------------------------------------------------------------- the page


@pytest.mark.parametrize("language", ["es", "en"])
def test_render_one_a4_page_with_the_batch_numbers(tmp_path: Path, language: str) -> None:
    batch, series, metrics, readings, estimate = ten_day_batch()
    batch, metrics, readings, estimate = ended(batch, metrics, readings)
    pdf, png = tmp_path / "b.pdf", tmp_path / "b.png"

    written = report.render(batch, series, metrics, readings, estimate, language=language,
                            timezone="America/Lima", pdf_path=pdf, png_path=png)

    assert written == (pdf, png)
    reader = PdfReader(pdf)
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert (round(float(box.width) / 72 * 25.4), round(float(box.height) / 72 * 25.4)) == (
        210, 297)
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    # A4 at 150 dpi (297 mm = 1753.9 px), from the same figure
    assert (int.from_bytes(header[16:20]), int.from_bytes(header[20:24])) == (1240, 1753)
    text = pdf_text(pdf)
    words = SPANISH if language == "es" else ENGLISH
    for expected in ("B-2026-031", "L-0412", "Familia Quispe Huamán", "tendal-norte",
                     words["title"], f"{words['drying_h']} 71.2 h",
                     f"{words['rain_exposure']} 19 min", f"{words['final_moisture']} 7.3 %",
                     f"{words['sun_drying_h']} 96.5 h", "412.5 kg", "198.0 kg",
                     # the slowest response, episode 2: raised 10 min before, 25 min late
                     "35 min"):
        assert expected in text, expected
    # Local time on the page: the start, 07:00 in Lima; the data end, day 10.
    assert f"{words['started']}: 20/11/2026 07:00" in text
    assert f"{words['ended']}: 29/11/2026 17:00" in text
    assert f"{words['reached'].format(target='7.5')} {'dom' if language == 'es' else 'Sun'} " \
           "29/11 16:00" in text
    assert "America/Lima" in text


def test_render_an_open_batch_shows_the_estimate_range(tmp_path: Path) -> None:
    batch, series, metrics, readings, estimate = ten_day_batch()
    pdf = tmp_path / "open.pdf"

    report.render(batch, series, metrics, readings, estimate, language="es",
                  timezone="America/Lima", pdf_path=pdf, png_path=None)

    text = pdf_text(pdf)
    # The data end on day 10 at 07:00 local; P20 5 h later, P50 and P80 the next day.
    assert "Llega a 7.5 % (P50) mar 01/12 09:00" in text
    assert "Rango del estimado (P20–P80) lun 30/11 12:00 – mar 01/12 14:00" in text
    assert "Fin: en curso" in text
    assert "55.6" in text  # the first moisture reading, labelled on its point


def test_render_without_data_says_so_and_still_writes_the_page(tmp_path: Path) -> None:
    batch = Batch(id="B-1", yard="y", trays=(T1,), started_at=START)
    series = BatchSeries(start=START, end=START + 2 * HOUR)
    metrics = BatchMetrics(until=START + 2 * HOUR, sun_drying_h=0.0, drying_h=0.0,
                           rewetting_h=0.0, rain_exposure_min=0.0, responses=(),
                           humidity_mean_pct=None, humidity_min_pct=None, humidity_max_pct=None,
                           temperature_mean_c=None, temperature_min_c=None,
                           temperature_max_c=None, vpd_mean_kpa=None, time_to_target_h=None)
    estimate = Estimate(target_pct=7.5, reason="needs two moisture readings")
    pdf = tmp_path / "empty.pdf"

    report.render(batch, series, metrics, [], estimate, language="en", timezone="UTC",
                  pdf_path=pdf, png_path=None)

    text = pdf_text(pdf)
    assert "No climate readings in this span" in text
    assert "No bean moisture readings" in text
    assert "no estimate: needs two moisture readings" in text
    assert "Mean VPD —" in text


@pytest.mark.parametrize(("arguments", "field"), [
    ({"language": "fr"}, "language"),
    ({"timezone": "Lima"}, "timezone"),
    ({"pdf_path": None, "png_path": None}, "pdf_path"),
])
def test_render_refuses_bad_arguments_naming_them(tmp_path: Path, arguments: dict,
                                                  field: str) -> None:
    batch, series, metrics, readings, estimate = ten_day_batch()
    options = {"language": "es", "timezone": "America/Lima", "pdf_path": tmp_path / "r.pdf",
               "png_path": None, **arguments}

    with pytest.raises(BatchError) as refused:
        report.render(batch, series, metrics, readings, estimate, **options)

    assert refused.value.field == field
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    batch, series, metrics, readings, estimate = ten_day_batch()
    missing = tmp_path / "no-such-directory" / "r.csv"

    with pytest.raises(BatchError) as refused:
        report.write_csv(missing, batch, series, metrics, readings, estimate)

    assert refused.value.field == "path"
    assert list(tmp_path.iterdir()) == []


def _overlapping(texts: list) -> list[tuple[str, str]]:
    """The pairs of drawn texts whose boxes on the page overlap."""
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts if t.get_text()]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
            if box_a.overlaps(box_b)]


@pytest.mark.parametrize("yard", ["cooperativa-amazonas-nor", "w" * 32])
def test_a_long_yard_id_is_cut_in_its_column_and_overlaps_nothing(yard: str) -> None:
    """The yard's id (up to 32 characters, no spaces) sits left of the "Bandejas" label:
    24 characters in bold once ran into it."""
    batch, series, metrics, readings, estimate = ten_day_batch()
    batch = dataclasses.replace(batch, yard=yard,
                                member="Asociación de Productores Agropecuarios del Alto Mayo",
                                trays=(T1, T2, T3, TrayRef("norte-2", "t2")),
                                notes="Trinitario, cajón 3, volteo cada 2 h. " * 40)

    figure = report.page(batch, series, metrics, readings, estimate, language="es",
                         timezone="America/Lima")

    head = figure.axes[0]
    by_text = {t.get_text(): t for t in head.texts}
    shown = next(t for t in head.texts if t.get_text().startswith(yard[:10]))
    assert shown.get_text().endswith("…") and len(shown.get_text()) < len(yard)
    assert shown.get_window_extent().x1 < by_text["Bandejas:"].get_window_extent().x0
    assert _overlapping(head.texts) == []
    # What fits is kept whole; the member's name and the four trays are cut, where
    # they reach the next column or the page's margin.
    assert {"B-2026-031", "L-0412", "Bandejas:"} <= set(by_text)
    cut = [t for t in by_text if t.endswith("…")]
    assert sorted(c[:8] for c in cut) == sorted(["(4) nort", "Asociaci", "Trinitar",
                                                 yard[:8]])
    notes = next(t for t in head.texts if t.get_text().startswith("Trinitario"))
    assert head.bbox.x1 - 20 < notes.get_window_extent().x1 <= head.bbox.x1


def test_a_batch_minutes_old_has_its_p50_on_the_page() -> None:
    """One reading 5 minutes in: the estimate is the published speed alone, its P50 days
    ahead; the time axis runs past it (it once ended 4 days after the data, before it)."""
    from matplotlib import dates

    from secadero.server.batches import estimate as drying
    from secadero.server.batches.model import DryingPeriod, DryingSchedule

    now = START + 20 * 60
    batch = Batch(id="B-2026-040", yard="tendal-norte", trays=(T1,), started_at=START)
    series = BatchSeries(start=START, end=now, climate=tuple(
        ClimateSample(START + i * 300, "norte-1", 28.0, 60.0, 1.5) for i in range(5)))
    readings = [MoistureReading("B-2026-040", START + 5 * 60, 55.0)]
    estimate = drying.estimate(readings, [DryingPeriod(START, now, 1.5)], now=now,
                               target_pct=7.5, schedule=DryingSchedule("America/Lima"))
    assert estimate.p50_ts - now > 4 * DAY  # the case: P50 beyond the former 4 days

    figure = report.page(batch, series, metrics_of(now), readings, estimate,
                         language="es", timezone="America/Lima")

    moisture = next(ax for ax in figure.axes if ax.get_ylabel() == SPANISH["moisture_axis"])
    p50_x = dates.date2num(datetime.fromtimestamp(estimate.p50_ts, UTC))
    low, high = moisture.get_xlim()
    assert low < p50_x < high
    assert high == pytest.approx(dates.date2num(
        datetime.fromtimestamp(estimate.p50_ts + 6 * HOUR, UTC)))
    (p50_line,) = [line for line in moisture.lines if line.get_linestyle() == ":"]
    assert list(p50_line.get_xdata()) == pytest.approx([p50_x, p50_x])


def metrics_of(until: float) -> BatchMetrics:
    return BatchMetrics(until=until, sun_drying_h=0.3, drying_h=0.3, rewetting_h=0.0,
                        rain_exposure_min=0.0, responses=(), humidity_mean_pct=60.0,
                        humidity_min_pct=60.0, humidity_max_pct=60.0, temperature_mean_c=28.0,
                        temperature_min_c=28.0, temperature_max_c=28.0, vpd_mean_kpa=1.5,
                        time_to_target_h=None)


def test_the_languages_have_the_same_labels() -> None:
    assert SPANISH.keys() == ENGLISH.keys()
    for key in SPANISH:
        fields = set(re.findall(r"{(\w+)}", SPANISH[key]))
        assert fields == set(re.findall(r"{(\w+)}", ENGLISH[key])), key


# ---------------------------------------------------------------- the curve's columns


def test_envelope_keeps_each_columns_extremes_and_leaves_empty_columns_empty() -> None:
    ts = np.array([0.0, 1.0, 2.0, 3.0, 7.0, 8.0, 9.0])
    values = np.array([50.0, 99.0, 10.0, 60.0, np.nan, 20.0, 40.0])

    curve = report.envelope(ts, values, start=0.0, end=10.0, columns=5)

    np.testing.assert_array_equal(curve.ts, [1.0, 3.0, 5.0, 7.0, 9.0])
    # column [6, 8) has only a missing value; [8, 10] has 20 and 40
    np.testing.assert_array_equal(curve.low, [50.0, 10.0, np.nan, np.nan, 20.0])
    np.testing.assert_array_equal(curve.high, [99.0, 60.0, np.nan, np.nan, 40.0])
    np.testing.assert_array_equal(curve.mean, [74.5, 35.0, np.nan, np.nan, 30.0])


def test_envelope_ignores_samples_outside_the_span() -> None:
    curve = report.envelope(np.array([-5.0, 0.5, 1.5, 2.5]), np.array([1.0, 10.0, 30.0, 99.0]),
                            start=0.0, end=2.0, columns=2)

    np.testing.assert_array_equal(curve.low, [10.0, 30.0])
    np.testing.assert_array_equal(curve.high, [10.0, 30.0])


def test_a_gap_breaks_the_drawn_curve_where_it_is() -> None:
    curve = report.envelope(np.arange(10.0), np.arange(10.0) * 10, start=0.0, end=10.0,
                            columns=5)

    broken = report.break_at_gaps(curve, [Interval(3.5, 6.5)])

    np.testing.assert_array_equal(broken.ts, [1.0, 3.0, 5.0, 5.0, 7.0, 9.0])
    np.testing.assert_array_equal(broken.mean, [5.0, 25.0, np.nan, 45.0, 65.0, 85.0])
    np.testing.assert_array_equal(broken.low, [0.0, 20.0, np.nan, 40.0, 60.0, 80.0])


# ---------------------------------------------------------------- JSON and CSV


def small_batch() -> tuple[Batch, BatchSeries, BatchMetrics, list[MoistureReading],
                           Estimate]:
    """Two hours of one tray: a reading, a missing humidity, a gap, a shower, an alert."""
    t0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC).timestamp()  # 09:00 in Lima
    batch = Batch(id="B-7", yard="sur", trays=(T1,), started_at=t0, lot="L-9",
                  member="Coop", fermentation_end="2026-11-19", wet_weight_kg=50.0)
    series = BatchSeries(
        start=t0, end=t0 + 2 * HOUR,
        climate=(ClimateSample(t0, "norte-1", 30.5, 60.0, 1.74),
                 ClimateSample(t0 + 600, "norte-1", 30.0, None, None),
                 ClimateSample(t0 + 4200, "norte-1", 28.0, 80.0, 0.76)),
        tray_changes=(TrayChange(t0, T1, "extended"), TrayChange(t0 + 3000, T1, "retracted")),
        rain_wet=(Interval(t0 + 2700, t0 + 3300),),
        alerts=(AlertMark(t0 + 2400, "rain_now", "raised", 4, "Lluvia"),),
        gaps=(Interval(t0 + 600, t0 + 4200),))
    metrics = BatchMetrics(
        until=t0 + 2 * HOUR, sun_drying_h=0.75, drying_h=0.5, rewetting_h=0.0,
        rain_exposure_min=5.0, responses=(RainResponse(4, t0 + 2400, t0 + 3000, 10.0),),
        humidity_mean_pct=70.0, humidity_min_pct=60.0, humidity_max_pct=80.0,
        temperature_mean_c=29.5, temperature_min_c=28.0, temperature_max_c=30.5,
        vpd_mean_kpa=None, time_to_target_h=None, gaps=(Interval(t0 + 600, t0 + 4200),))
    readings = [MoistureReading("B-7", t0 + 1800, 52.5, by="Ana", tray=T1)]
    estimate = Estimate(target_pct=7.5, reason="needs two moisture readings")
    return batch, series, metrics, readings, estimate


def test_json_of_a_small_batch() -> None:
    data = report.to_json(*small_batch(), timezone="America/Lima")

    assert json.loads(json.dumps(data)) == data  # plain JSON, no NaN
    assert data["format"] == "secadero.batch-report/1"
    assert data["timezone"] == "America/Lima"
    assert data["batch"] == {
        "id": "B-7", "yard": "sur", "lot": "L-9", "member": "Coop",
        "trays": ["norte-1/t1"], "fermentation_end": "2026-11-19", "wet_weight_kg": 50.0,
        "dry_weight_kg": None, "final_moisture_pct": None, "notes": "", "started_by": "",
        "ended_by": "", "started_at_utc": "2026-11-20T14:00:00Z",
        "started_at_local": "2026-11-20T09:00:00-05:00", "ended_at_utc": None,
        "ended_at_local": None}
    assert data["span"] == {
        "start_utc": "2026-11-20T14:00:00Z", "start_local": "2026-11-20T09:00:00-05:00",
        "end_utc": "2026-11-20T16:00:00Z", "end_local": "2026-11-20T11:00:00-05:00"}
    assert data["curve"] == [
        {"ts_utc": "2026-11-20T14:00:00Z", "ts_local": "2026-11-20T09:00:00-05:00",
         "node": "norte-1", "temperature_c": 30.5, "humidity_pct": 60.0, "vpd_kpa": 1.74},
        {"ts_utc": "2026-11-20T14:10:00Z", "ts_local": "2026-11-20T09:10:00-05:00",
         "node": "norte-1", "temperature_c": 30.0, "humidity_pct": None, "vpd_kpa": None},
        {"ts_utc": "2026-11-20T15:10:00Z", "ts_local": "2026-11-20T10:10:00-05:00",
         "node": "norte-1", "temperature_c": 28.0, "humidity_pct": 80.0, "vpd_kpa": 0.76}]
    assert data["gaps"] == [
        {"start_utc": "2026-11-20T14:10:00Z", "start_local": "2026-11-20T09:10:00-05:00",
         "end_utc": "2026-11-20T15:10:00Z", "end_local": "2026-11-20T10:10:00-05:00",
         "minutes": 60.0}]
    assert data["rain"][0]["minutes"] == 10.0
    assert data["trays"] == [
        {"ts_utc": "2026-11-20T14:00:00Z", "ts_local": "2026-11-20T09:00:00-05:00",
         "tray": "norte-1/t1", "state": "extended"},
        {"ts_utc": "2026-11-20T14:50:00Z", "ts_local": "2026-11-20T09:50:00-05:00",
         "tray": "norte-1/t1", "state": "retracted"}]
    assert data["alerts"] == [
        {"ts_utc": "2026-11-20T14:40:00Z", "ts_local": "2026-11-20T09:40:00-05:00",
         "kind": "rain_now", "state": "raised", "episode": 4, "message": "Lluvia"}]
    metrics = data["metrics"]
    assert (metrics["drying_h"], metrics["rain_exposure_min"], metrics["vpd_mean_kpa"],
            metrics["time_to_target_h"]) == (0.5, 5.0, None, None)
    assert metrics["responses"] == [
        {"episode": 4, "raised_at_utc": "2026-11-20T14:40:00Z",
         "raised_at_local": "2026-11-20T09:40:00-05:00",
         "retracted_at_utc": "2026-11-20T14:50:00Z",
         "retracted_at_local": "2026-11-20T09:50:00-05:00", "minutes": 10.0}]
    assert data["estimate"] == {
        "target_pct": 7.5, "p20_utc": None, "p20_local": None, "p50_utc": None,
        "p50_local": None, "p80_utc": None, "p80_local": None, "reached_at_utc": None,
        "reached_at_local": None, "reason": "needs two moisture readings", "details": {}}
    assert data["moisture"] == [
        {"ts_utc": "2026-11-20T14:30:00Z", "ts_local": "2026-11-20T09:30:00-05:00",
         "moisture_pct": 52.5, "by": "Ana", "tray": "norte-1/t1"}]


def test_csv_of_a_small_batch(tmp_path: Path) -> None:
    path = report.write_csv(tmp_path / "b.csv", *small_batch(), timezone="America/Lima")

    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0] == list(report.CSV_COLUMNS)

    def short(row: list[str]) -> list[str]:
        """The row's non-empty cells, as column=value."""
        return [f"{column}={cell}" for column, cell in zip(rows[0], row, strict=True) if cell]

    local = "-05:00"
    assert [short(r) for r in rows[1:]] == [
        ["record=batch", "name=id", "text=B-7"],
        ["record=batch", "name=yard", "text=sur"],
        ["record=batch", "name=lot", "text=L-9"],
        ["record=batch", "name=member", "text=Coop"],
        ["record=batch", "name=trays", "text=norte-1/t1"],
        ["record=batch", "name=fermentation_end", "text=2026-11-19"],
        ["record=batch", "name=wet_weight_kg", "value=50.0"],
        ["record=batch", "name=dry_weight_kg"],
        ["record=batch", "name=final_moisture_pct"],
        ["record=batch", "ts_utc=2026-11-20T14:00:00Z", f"ts_local=2026-11-20T09:00:00{local}",
         "name=started_at"],
        ["record=batch", "name=ended_at"],
        ["record=batch", "name=notes"],
        ["record=metric", "ts_utc=2026-11-20T16:00:00Z", f"ts_local=2026-11-20T11:00:00{local}",
         "name=until"],
        ["record=metric", "name=sun_drying_h", "value=0.75"],
        ["record=metric", "name=drying_h", "value=0.5"],
        ["record=metric", "name=rewetting_h", "value=0.0"],
        ["record=metric", "name=rain_exposure_min", "value=5.0"],
        ["record=metric", "name=humidity_mean_pct", "value=70.0"],
        ["record=metric", "name=humidity_min_pct", "value=60.0"],
        ["record=metric", "name=humidity_max_pct", "value=80.0"],
        ["record=metric", "name=temperature_mean_c", "value=29.5"],
        ["record=metric", "name=temperature_min_c", "value=28.0"],
        ["record=metric", "name=temperature_max_c", "value=30.5"],
        ["record=metric", "name=vpd_mean_kpa"],
        ["record=metric", "name=time_to_target_h"],
        ["record=response", "ts_utc=2026-11-20T14:40:00Z",
         f"ts_local=2026-11-20T09:40:00{local}", "end_utc=2026-11-20T14:50:00Z",
         f"end_local=2026-11-20T09:50:00{local}", "episode=4", "name=minutes", "value=10.0"],
        ["record=estimate", "name=target_pct", "value=7.5"],
        ["record=estimate", "name=p20"],
        ["record=estimate", "name=p50"],
        ["record=estimate", "name=p80"],
        ["record=estimate", "name=reached_at"],
        ["record=estimate", "name=reason", "text=needs two moisture readings"],
        ["record=climate", "ts_utc=2026-11-20T14:00:00Z", f"ts_local=2026-11-20T09:00:00{local}",
         "node=norte-1", "temperature_c=30.5", "humidity_pct=60.0", "vpd_kpa=1.74"],
        ["record=tray", "ts_utc=2026-11-20T14:00:00Z", f"ts_local=2026-11-20T09:00:00{local}",
         "node=norte-1", "tray=t1", "state=extended"],
        ["record=climate", "ts_utc=2026-11-20T14:10:00Z", f"ts_local=2026-11-20T09:10:00{local}",
         "node=norte-1", "temperature_c=30.0"],
        ["record=gap", "ts_utc=2026-11-20T14:10:00Z", f"ts_local=2026-11-20T09:10:00{local}",
         "end_utc=2026-11-20T15:10:00Z", f"end_local=2026-11-20T10:10:00{local}"],
        ["record=moisture", "ts_utc=2026-11-20T14:30:00Z",
         f"ts_local=2026-11-20T09:30:00{local}", "node=norte-1", "tray=t1",
         "moisture_pct=52.5", "text=Ana"],
        ["record=alert", "ts_utc=2026-11-20T14:40:00Z", f"ts_local=2026-11-20T09:40:00{local}",
         "state=raised", "episode=4", "name=rain_now", "text=Lluvia"],
        ["record=rain", "ts_utc=2026-11-20T14:45:00Z", f"ts_local=2026-11-20T09:45:00{local}",
         "end_utc=2026-11-20T14:55:00Z", f"end_local=2026-11-20T09:55:00{local}"],
        ["record=tray", "ts_utc=2026-11-20T14:50:00Z", f"ts_local=2026-11-20T09:50:00{local}",
         "node=norte-1", "tray=t1", "state=retracted"],
        ["record=climate", "ts_utc=2026-11-20T15:10:00Z", f"ts_local=2026-11-20T10:10:00{local}",
         "node=norte-1", "temperature_c=28.0", "humidity_pct=80.0", "vpd_kpa=0.76"],
    ]


def test_csv_of_the_ten_day_batch_has_every_sample(tmp_path: Path) -> None:
    batch, series, metrics, readings, estimate = ten_day_batch()

    path = report.write_csv(tmp_path / "b.csv", batch, series, metrics, readings, estimate)

    with path.open(newline="", encoding="utf-8") as file:
        records = [row[0] for row in csv.reader(file)][1:]
    assert records.count("climate") == len(series.climate)
    assert records.count("gap") == 1
    assert records.count("rain") == 3
    assert records.count("moisture") == 10
    assert [p.name for p in tmp_path.iterdir()] == ["b.csv"]  # no temporary file left


def test_a_number_that_is_not_a_number_is_null_never_nan(tmp_path: Path) -> None:
    batch, series, metrics, readings, estimate = small_batch()
    odd = dataclasses.replace(series, climate=(
        ClimateSample(series.start, "norte-1", math.nan, math.inf, None),))

    data = report.to_json(batch, odd, metrics, readings, estimate)
    path = report.write_csv(tmp_path / "b.csv", batch, odd, metrics, readings, estimate)

    assert data["curve"][0]["temperature_c"] is None
    assert data["curve"][0]["humidity_pct"] is None
    climate = [row for row in csv.reader(path.open(encoding="utf-8")) if row[0] == "climate"]
    assert climate[0][7:10] == ["", "", ""]


def test_unknown_timezone_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BatchError) as refused:
        report.to_json(*small_batch(), timezone="Mars/Olympus")

    assert refused.value.field == "timezone"
