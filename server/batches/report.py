"""A batch's report: JSON and CSV of its curve and metrics, and the one-page PDF/PNG.

What goes in is what the other batch modules give (``model``): the ``Batch``,
its ``BatchSeries`` from InfluxDB, its ``BatchMetrics``, its moisture readings
and its ``Estimate``. Nothing here computes a metric or fills a hole: a value
nobody measured is ``null`` in JSON and an empty cell in CSV, and a gap in the
data is a record of its own (and a break in the drawn curve), never a line
across it. Times are given twice, in UTC (ISO 8601, ``Z``) and in the yard's
local time (ISO 8601 with its offset); the page shows local time only.

**CSV** (``write_csv``): one table a spreadsheet can filter, one row per record,
the kind of record in the first column and the columns it does not use empty
(docs/batches.md, "Reading the report", lists them). First the records about
the whole batch (``batch``, ``metric``, ``response``, ``estimate``), then every
timed record in time order (``climate``, ``tray``, ``rain``, ``alert``, ``gap``,
``moisture``), so a ``gap`` row with empty values sits where the data stops
and a spreadsheet chart breaks its line there.

**The page** (``render``): one A4 page, the same matplotlib figure saved as PDF
and PNG (the Agg canvas, no display needed). Black-and-white safe: rain is
hatched ``////``, gaps ``xx``, the estimate's range ``\\\\``, lines differ by
style, not colour alone. The curve is drawn from at most ``PLOT_COLUMNS``
columns (about one per pixel of the PNG): in each, the mean of the batch's
nodes as the line and their min-max as a band, so a peak the eye could see is
never averaged away. That is for drawing only; the metrics come computed.
"""

from __future__ import annotations

import csv
import heapq
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from secadero.server.batches.model import (
    Batch,
    BatchError,
    BatchMetrics,
    BatchSeries,
    ClimateSample,
    Estimate,
    Interval,
    MoistureReading,
    TrayChange,
    TrayRef,
)
from secadero.server.batches.texts import WEEKDAYS, texts
from secadero.settings import Defaults, YardSettings

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMAT = "secadero.batch-report/1"
DEFAULT_TIMEZONE: str = Defaults(YardSettings).timezone

CSV_COLUMNS = (
    "record",  # batch, metric, response, estimate, climate, tray, rain, alert, gap, moisture
    "ts_utc", "ts_local",  # when (the start, for a span)
    "end_utc", "end_local",  # the end of a span (rain, gap) or when trays came in (response)
    "node", "tray",
    "temperature_c", "humidity_pct", "vpd_kpa", "moisture_pct",
    "state",  # a tray's state, an alert's transition
    "episode",  # the rain alert episode
    "name",  # which field of the batch, metric or estimate; an alert's kind
    "value",  # a number
    "text",  # words: identity fields, an alert's message, who read the meter
)

# The page: A4 portrait, in inches as matplotlib counts.
A4_INCHES = (210 / 25.4, 297 / 25.4)
PNG_DPI = 150  # 1240 x 1753 px: sharp on a phone when zoomed, small enough to send
# The curve's columns: the plot is about 1,050 px wide at PNG_DPI, so one
# column per pixel; the PDF, printed at 600 dpi, has 0.2 mm per column.
PLOT_COLUMNS = 1000
MAX_ALERT_ROWS = 9  # the alert table's rows on the page; all of them are in CSV/JSON
PAGE_STYLE = {
    # Type 3 (matplotlib's default, said here on purpose) embeds the glyphs used
    # with a ToUnicode map, so the text can be searched and extracted; embedding
    # TrueType (42) subsets each font with fontTools: 0.5 s of a 1.5 s page.
    "pdf.fonttype": 3,
    "font.family": "DejaVu Sans",  # bundled with matplotlib: accents and °, everywhere
    "font.size": 8,
    "axes.linewidth": 0.8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7,
    "hatch.linewidth": 0.6,
}


# ---------------------------------------------------------------- times and numbers


def zone_of(timezone: str) -> ZoneInfo:
    """The tz-database zone, or a ``BatchError`` naming ``timezone``."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise BatchError("timezone", f"{timezone!r} is not a tz-database time zone "
                                     "(e.g. America/Lima)") from None


class _Times:
    """UNIX seconds as ISO 8601 text, in UTC and in the yard's zone."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone

    def utc(self, ts: float | None) -> str | None:
        if ts is None:
            return None
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def local(self, ts: float | None) -> str | None:
        if ts is None:
            return None
        return datetime.fromtimestamp(ts, self.zone).isoformat(timespec="seconds")

    def both(self, prefix: str, ts: float | None) -> dict[str, str | None]:
        return {f"{prefix}_utc": self.utc(ts), f"{prefix}_local": self.local(ts)}


def _number(value: float | None) -> float | None:
    """A measured number, or ``None`` (a NaN or infinity from upstream is not a value)."""
    if value is None or not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------- JSON


def to_json(batch: Batch, series: BatchSeries, metrics: BatchMetrics,
            readings: Sequence[MoistureReading], estimate: Estimate, *,
            timezone: str = DEFAULT_TIMEZONE) -> dict[str, Any]:
    """The batch's record, curve and metrics as a JSON-ready dict (``json.dumps`` it).

    Keys: ``format``, ``timezone``, ``batch``, ``span``, ``metrics`` (with the
    rain ``responses``), ``estimate``, ``moisture``, ``curve`` (every climate
    sample, not decimated), ``trays``, ``rain``, ``alerts``, ``gaps``. Each time
    is two keys, ``<name>_utc`` and ``<name>_local``; missing values are ``None``.
    """
    times = _Times(zone_of(timezone))
    return {
        "format": FORMAT,
        "timezone": timezone,
        "batch": _batch_json(batch, times),
        "span": {**times.both("start", series.start), **times.both("end", series.end)},
        "metrics": _metrics_json(metrics, times),
        "estimate": _estimate_json(estimate, times),
        "moisture": [_reading_json(r, times) for r in readings],
        "curve": [{**times.both("ts", s.ts), "node": s.node,
                   "temperature_c": _number(s.temperature_c),
                   "humidity_pct": _number(s.humidity_pct),
                   "vpd_kpa": _number(s.vpd_kpa)} for s in series.climate],
        "trays": [{**times.both("ts", c.ts), "tray": str(c.tray), "state": c.state}
                  for c in series.tray_changes],
        "rain": [_interval_json(i, times) for i in series.rain_wet],
        "alerts": [{**times.both("ts", a.ts), "kind": a.kind, "state": a.state,
                    "episode": a.episode, "message": a.message} for a in series.alerts],
        "gaps": [_interval_json(i, times) for i in series.gaps],
    }


def _batch_json(batch: Batch, times: _Times) -> dict[str, Any]:
    return {
        "id": batch.id,
        "yard": batch.yard,
        "lot": batch.lot,
        "member": batch.member,
        "trays": [str(t) for t in batch.trays],
        "fermentation_end": batch.fermentation_end,
        "wet_weight_kg": _number(batch.wet_weight_kg),
        "dry_weight_kg": _number(batch.dry_weight_kg),
        "final_moisture_pct": _number(batch.final_moisture_pct),
        "notes": batch.notes,
        "started_by": batch.started_by,
        "ended_by": batch.ended_by,
        **times.both("started_at", batch.started_at),
        **times.both("ended_at", batch.ended_at),
    }


_METRIC_NUMBERS = (
    "sun_drying_h", "drying_h", "rewetting_h", "rain_exposure_min",
    "humidity_mean_pct", "humidity_min_pct", "humidity_max_pct",
    "temperature_mean_c", "temperature_min_c", "temperature_max_c",
    "vpd_mean_kpa", "time_to_target_h",
)


def _metrics_json(metrics: BatchMetrics, times: _Times) -> dict[str, Any]:
    return {
        **times.both("until", metrics.until),
        **{name: _number(getattr(metrics, name)) for name in _METRIC_NUMBERS},
        "responses": [{"episode": r.episode, **times.both("raised_at", r.raised_at),
                       **times.both("retracted_at", r.retracted_at),
                       "minutes": _number(r.minutes)} for r in metrics.responses],
        "gaps": [_interval_json(i, times) for i in metrics.gaps],
    }


def _estimate_json(estimate: Estimate, times: _Times) -> dict[str, Any]:
    return {
        "target_pct": estimate.target_pct,
        **times.both("p20", estimate.p20_ts),
        **times.both("p50", estimate.p50_ts),
        **times.both("p80", estimate.p80_ts),
        **times.both("reached_at", estimate.reached_at),
        "reason": estimate.reason,
        "details": {k: _number(v) for k, v in estimate.details.items()},
    }


def _reading_json(reading: MoistureReading, times: _Times) -> dict[str, Any]:
    return {**times.both("ts", reading.ts), "moisture_pct": _number(reading.moisture_pct),
            "by": reading.by, "tray": None if reading.tray is None else str(reading.tray)}


def _interval_json(interval: Interval, times: _Times) -> dict[str, Any]:
    return {**times.both("start", interval.start), **times.both("end", interval.end),
            "minutes": interval.seconds / 60.0}


# ---------------------------------------------------------------- CSV


def write_csv(path: Path | str, batch: Batch, series: BatchSeries, metrics: BatchMetrics,
              readings: Sequence[MoistureReading], estimate: Estimate, *,
              timezone: str = DEFAULT_TIMEZONE) -> Path:
    """Write the batch's CSV (``CSV_COLUMNS``; UTF-8, comma-separated) to ``path``.

    Written to a temporary file beside it and renamed into place: a failure
    leaves no half-written report. Returns the path written.
    """
    times = _Times(zone_of(timezone))
    rows = _csv_rows(batch, series, metrics, readings, estimate, times)

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)

    return _write_atomically(Path(path), write)


_Row = list[str]


def _csv_rows(batch: Batch, series: BatchSeries, metrics: BatchMetrics,
              readings: Sequence[MoistureReading], estimate: Estimate,
              times: _Times) -> Iterator[_Row]:
    def row(record: str, ts: float | None = None, *, end: float | None = None,
            node: str = "", tray: str = "", temperature_c: float | None = None,
            humidity_pct: float | None = None, vpd_kpa: float | None = None,
            moisture_pct: float | None = None, state: str = "", episode: int | None = None,
            name: str = "", value: float | None = None, text: str = "") -> _Row:
        return [record, times.utc(ts) or "", times.local(ts) or "",
                times.utc(end) or "", times.local(end) or "", node, tray,
                _cell(temperature_c), _cell(humidity_pct), _cell(vpd_kpa),
                _cell(moisture_pct), state, "" if episode is None else str(episode),
                name, _cell(value), text]

    # The batch as a whole: its identity, metrics, rain responses, estimate.
    yield row("batch", name="id", text=batch.id)
    yield row("batch", name="yard", text=batch.yard)
    yield row("batch", name="lot", text=batch.lot)
    yield row("batch", name="member", text=batch.member)
    yield row("batch", name="trays", text=" ".join(str(t) for t in batch.trays))
    yield row("batch", name="fermentation_end", text=batch.fermentation_end or "")
    yield row("batch", name="wet_weight_kg", value=batch.wet_weight_kg)
    yield row("batch", name="dry_weight_kg", value=batch.dry_weight_kg)
    yield row("batch", name="final_moisture_pct", value=batch.final_moisture_pct)
    yield row("batch", batch.started_at, name="started_at", text=batch.started_by)
    yield row("batch", batch.ended_at, name="ended_at", text=batch.ended_by)
    yield row("batch", name="notes", text=batch.notes)
    yield row("metric", metrics.until, name="until")
    for name in _METRIC_NUMBERS:
        yield row("metric", name=name, value=getattr(metrics, name))
    for r in metrics.responses:
        yield row("response", r.raised_at, end=r.retracted_at, episode=r.episode,
                  name="minutes", value=r.minutes)
    yield row("estimate", name="target_pct", value=estimate.target_pct)
    for name, ts in (("p20", estimate.p20_ts), ("p50", estimate.p50_ts),
                     ("p80", estimate.p80_ts), ("reached_at", estimate.reached_at)):
        yield row("estimate", ts, name=name)
    if estimate.reason is not None:
        yield row("estimate", name="reason", text=estimate.reason)
    for key, number in estimate.details.items():
        yield row("estimate", name=f"details.{key}", value=number)

    # Then everything with a time, in time order; at one instant, in this order.
    timed: list[tuple[float, int, _Row]] = []
    timed += [(c.ts, 1, row("tray", c.ts, node=c.tray.node, tray=c.tray.tray, state=c.state))
              for c in series.tray_changes]
    timed += [(i.start, 2, row("rain", i.start, end=i.end)) for i in series.rain_wet]
    timed += [(a.ts, 3, row("alert", a.ts, state=a.state, episode=a.episode, name=a.kind,
                            text=a.message)) for a in series.alerts]
    timed += [(i.start, 4, row("gap", i.start, end=i.end)) for i in series.gaps]
    timed += [(r.ts, 5, row("moisture", r.ts, node=r.tray.node if r.tray else "",
                            tray=r.tray.tray if r.tray else "", moisture_pct=r.moisture_pct,
                            text=r.by)) for r in readings]
    timed.sort(key=lambda item: (item[0], item[1]))
    # The climate samples are many and already sorted: rows made as they are merged in.
    climate = ((s.ts, 0, s) for s in series.climate)
    for _, _, item in heapq.merge(climate, timed, key=lambda item: (item[0], item[1])):
        if isinstance(item, ClimateSample):
            yield row("climate", item.ts, node=item.node, temperature_c=item.temperature_c,
                      humidity_pct=item.humidity_pct, vpd_kpa=item.vpd_kpa)
        else:
            yield item


def _cell(value: float | None) -> str:
    number = _number(value)
    return "" if number is None else repr(float(number))


def _write_atomically(path: Path, write: Callable[[Path], None], *, field: str = "path"
                      ) -> Path:
    """Write through a temporary file in ``path``'s directory, then rename it into place."""
    if not path.parent.is_dir():
        raise BatchError(field, f"{path.parent} is not a directory")
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- the curve's columns


@dataclass(frozen=True, slots=True)
class Envelope:
    """A curve reduced to columns: each column's centre time, min, mean and max.

    A column with no value (no sample, or only ``None``) is NaN in all three,
    which the plot draws as a break.
    """

    ts: np.ndarray
    low: np.ndarray
    mean: np.ndarray
    high: np.ndarray


def envelope(ts: np.ndarray, values: np.ndarray, *, start: float, end: float,
             columns: int) -> Envelope:
    """Reduce ``values`` at sorted times ``ts`` (NaN: no value) to ``columns`` columns.

    The min and max of each column are kept exactly, so no peak is lost to
    averaging; the mean is of the values present.
    """
    if columns < 1 or not end > start:
        raise ValueError("envelope needs columns >= 1 and end > start")
    edges = np.linspace(start, end, columns + 1)
    inside = slice(np.searchsorted(ts, start, "left"), np.searchsorted(ts, end, "right"))
    ts, values = ts[inside], values[inside]
    firsts = np.searchsorted(ts, edges[:-1], "left")
    counts = np.diff(np.append(firsts, len(ts)))
    low = np.full(columns, np.nan)
    mean = np.full(columns, np.nan)
    high = np.full(columns, np.nan)
    filled = counts > 0
    if filled.any():
        # reduceat over the first index of each non-empty column: each run ends
        # where the next non-empty column starts, and the columns between are empty.
        starts = firsts[filled]
        present = ~np.isnan(values)
        with np.errstate(invalid="ignore", divide="ignore"):
            low[filled] = np.fmin.reduceat(values, starts)
            high[filled] = np.fmax.reduceat(values, starts)
            sums = np.add.reduceat(np.where(present, values, 0.0), starts)
            n = np.add.reduceat(present.astype(np.int64), starts)
            mean[filled] = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
    return Envelope(ts=(edges[:-1] + edges[1:]) / 2, low=low, mean=mean, high=high)


def break_at_gaps(curve: Envelope, gaps: Sequence[Interval]) -> Envelope:
    """Insert a NaN point in the middle of each gap, so no line is drawn across it."""
    if not gaps:
        return curve
    middles = np.array([(g.start + g.end) / 2 for g in gaps])
    at = np.searchsorted(curve.ts, middles)

    def cut(values: np.ndarray) -> np.ndarray:
        return np.insert(values, at, np.nan)

    return Envelope(ts=np.insert(curve.ts, at, middles), low=cut(curve.low),
                    mean=cut(curve.mean), high=cut(curve.high))


# ---------------------------------------------------------------- the page


def render(batch: Batch, series: BatchSeries, metrics: BatchMetrics,
           readings: Sequence[MoistureReading], estimate: Estimate, *, language: str,
           timezone: str, pdf_path: Path | str | None,
           png_path: Path | str | None) -> tuple[Path, ...]:
    """Draw the one-page report and save it as PDF and/or PNG; returns the paths written.

    ``language``: ``es`` or ``en``; ``timezone``: the yard's (times on the page
    are local). Each file is written whole or not at all.
    """
    words = texts(language)
    zone = zone_of(timezone)
    if pdf_path is None and png_path is None:
        raise BatchError("pdf_path", "give pdf_path, png_path or both")
    # matplotlib is imported here, not at the top: it takes a few tenths of a
    # second, and `secadero batch show` (which imports this module) must not pay it.
    import matplotlib

    # rc_context sets matplotlib's process-wide settings: one page at a time, or a
    # page drawn on an API thread could pick up another's restored defaults.
    with _ONE_PAGE_AT_A_TIME, matplotlib.rc_context(PAGE_STYLE):
        figure = _Page(batch, series, metrics, readings, estimate, words=words,
                       language=language, zone=zone).draw()
        written = []
        title = f"{words['title']}: {batch.id}"
        if pdf_path is not None:
            written.append(_write_atomically(Path(pdf_path), lambda tmp: figure.savefig(
                tmp, format="pdf", metadata={"Title": title, "Creator": "secadero"}),
                field="pdf_path"))
        if png_path is not None:
            written.append(_write_atomically(Path(png_path), lambda tmp: figure.savefig(
                tmp, format="png", dpi=PNG_DPI), field="png_path"))
    return tuple(written)


def page(batch: Batch, series: BatchSeries, metrics: BatchMetrics,
         readings: Sequence[MoistureReading], estimate: Estimate, *, language: str,
         timezone: str) -> Figure:
    """The report's page as the matplotlib figure ``render`` saves, drawn: where each
    text and line landed can be read from it (``get_window_extent``, axis limits)."""
    words = texts(language)
    zone = zone_of(timezone)
    import matplotlib

    with _ONE_PAGE_AT_A_TIME, matplotlib.rc_context(PAGE_STYLE):
        figure = _Page(batch, series, metrics, readings, estimate, words=words,
                       language=language, zone=zone).draw()
        figure.canvas.draw()
    return figure


_ONE_PAGE_AT_A_TIME = threading.Lock()

# Greys and patterns that survive a black-and-white printer.
INK = "black"
BAND = "0.78"  # the nodes' min-max
TRAY_OUT = "0.35"
RAIN_FACE, RAIN_HATCH = "#d4e4f4", "////"
GAP_FACE, GAP_HATCH = "white", "xxxx"
ESTIMATE_FACE, ESTIMATE_HATCH = "0.9", "\\\\\\\\"


class _Page:
    """One report page: the figure and the helpers that place things on it."""

    def __init__(self, batch: Batch, series: BatchSeries, metrics: BatchMetrics,
                 readings: Sequence[MoistureReading], estimate: Estimate, *,
                 words: Any, language: str, zone: ZoneInfo) -> None:
        self.batch, self.series, self.metrics = batch, series, metrics
        self.readings = sorted(readings, key=lambda r: r.ts)
        self.estimate = estimate
        self.words, self.zone = words, zone
        from matplotlib import dates  # render has imported matplotlib

        # matplotlib counts time in days from its own epoch
        self.epoch_days = float(dates.date2num(datetime(1970, 1, 1, tzinfo=UTC)))
        self.weekdays = WEEKDAYS[language]
        self.start = min(series.start, batch.started_at)
        self.end = max(series.end, self.start + 3600.0)
        # The time axis runs on to the estimate's P80 if it is near (a few days), and
        # always past its P50 (the time the page names): a batch a few minutes old has
        # a prior-only estimate days away, and its P50 line must be on the page.
        self.axis_end = self.end
        if estimate.p80_ts is not None and estimate.p80_ts > self.end:
            self.axis_end = min(estimate.p80_ts + 6 * 3600.0, self.end + 4 * 86400.0)
        if estimate.p50_ts is not None:
            self.axis_end = max(self.axis_end, estimate.p50_ts + 6 * 3600.0)
        # Events shorter than this are drawn this wide, so a two-minute shower shows.
        self.min_width_s = 1.5 * (self.axis_end - self.start) / PLOT_COLUMNS

    # -------- time helpers

    def when(self, ts: float | None) -> str:
        if ts is None:
            return self.words["none"]
        local = datetime.fromtimestamp(ts, self.zone)
        return f"{self.weekdays[local.weekday()]} {local:%d/%m %H:%M}"

    def when_long(self, ts: float | None) -> str:
        """With the year, for the record (the weekday would not fit in the head's column)."""
        if ts is None:
            return self.words["none"]
        return f"{datetime.fromtimestamp(ts, self.zone):%d/%m/%Y %H:%M}"

    def clock_after(self, earlier: float, ts: float) -> str:
        """``HH:MM`` of ``ts``, with its day when that is not ``earlier``'s day."""
        local = datetime.fromtimestamp(ts, self.zone)
        if local.date() == datetime.fromtimestamp(earlier, self.zone).date():
            return f"{local:%H:%M}"
        return self.when(ts)

    def local_hours(self, hours: Sequence[int]) -> list[float]:
        """The times of these local hours of each day on the page (UNIX seconds)."""
        day = datetime.fromtimestamp(self.start, self.zone).date()
        last = datetime.fromtimestamp(self.axis_end, self.zone).date()
        found = []
        while day <= last:
            for hour in hours:
                ts = datetime(day.year, day.month, day.day, hour, tzinfo=self.zone).timestamp()
                if self.start <= ts <= self.axis_end:
                    found.append(ts)
            day += timedelta(days=1)
        return found

    def x(self, ts: float | np.ndarray) -> Any:
        """UNIX seconds to matplotlib's date numbers (days since its epoch)."""
        return np.asarray(ts) / 86400.0 + self.epoch_days

    def widened(self, intervals: Iterable[Interval]) -> Iterator[tuple[float, float]]:
        """Each interval's middle and drawn width (at least ``min_width_s``)."""
        for interval in intervals:
            yield (interval.start + interval.end) / 2, max(interval.seconds, self.min_width_s)

    def spans(self, ax: Axes, intervals: Iterable[Interval], **style: Any) -> None:
        for middle, width in self.widened(intervals):
            ax.axvspan(self.x(middle - width / 2), self.x(middle + width / 2),
                       linewidth=0, **style)

    # -------- the page

    def draw(self) -> Figure:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=A4_INCHES)
        FigureCanvasAgg(figure)  # no pyplot, no display: the figure draws itself
        # Places on the page, [left, bottom, width, height] as fractions of it, top down.
        # The tray panel grows with the trays (a lane each, and one for rain) and the
        # humidity panel above gives the room.
        left, width = 0.1, 0.865
        trays_height = min(0.15, 0.03 + 0.012 * (len(self.batch.trays) + 1))
        head = figure.add_axes((0.07, 0.865, 0.895, 0.125))
        humidity_bottom = 0.53 + trays_height + 0.015
        humidity = figure.add_axes((left, humidity_bottom, width, 0.815 - humidity_bottom))
        temperature = figure.add_axes((left, 0.425 + trays_height + 0.015, width, 0.09),
                                      sharex=humidity)
        trays = figure.add_axes((left, 0.425, width, trays_height), sharex=humidity)
        moisture = figure.add_axes((left, 0.265, width, 0.145), sharex=humidity)
        figures_table = figure.add_axes((0.07, 0.02, 0.49, 0.185))
        alerts_table = figure.add_axes((0.6, 0.02, 0.365, 0.185))

        self.draw_head(head)
        self.draw_climate(humidity, temperature)
        self.draw_trays(trays)
        self.draw_moisture(moisture)
        for ax in (humidity, temperature, trays, moisture):
            self.mark_events(ax)
        self.draw_alert_labels(humidity)
        self.format_time_axis(moisture, (humidity, temperature, trays))
        self.draw_legend(humidity)
        self.draw_figures(figures_table)
        self.draw_alerts(alerts_table)
        return figure

    def draw_head(self, ax: Axes) -> None:
        ax.set_axis_off()
        w, b = self.words, self.batch
        ax.text(0, 1, f"{w['title']} · {w['batch']} {b.id}", fontsize=14,
                fontweight="bold", va="top", transform=ax.transAxes)
        ax.text(0, 0.83, w["data_until"].format(when=self.when_long(self.metrics.until),
                                               timezone=self.zone.key),
                fontsize=8, color="0.25", va="top", transform=ax.transAxes)

        def kg(value: float | None) -> str:
            return w["none"] if value is None else f"{value:.1f} kg"

        final = (w["none"] if b.final_moisture_pct is None
                 else f"{b.final_moisture_pct:.1f} %")
        columns = (
            ((w["batch"], b.id), (w["lot"], b.lot or w["none"]),
             (w["member"], b.member or w["none"]), (w["yard"], b.yard)),
            ((w["fermentation_end"], b.fermentation_end or w["none"]),
             (w["started"], self.when_long(b.started_at)),
             (w["ended"], w["in_progress"] if b.ended_at is None else
              self.when_long(b.ended_at))),
            ((w["wet_weight"], kg(b.wet_weight_kg)), (w["dry_weight"], kg(b.dry_weight_kg)),
             (w["final_moisture"], final)),
        )
        row_y = [0.64 - line * 0.135 for line in range(5)]
        # Each column's values end a little before the next column's labels begin.
        places = ((0.0, 0.185, 0.406), (0.41, 0.175, 0.781), (0.785, 0.13, 1.0))
        for column, (left, label_width, right) in enumerate(places):
            for line, (label, value) in enumerate(columns[column]):
                self.field(ax, left, label_width, right, row_y[line], label, value)
        trays = ", ".join(str(t) for t in b.trays) or w["none"]
        if len(b.trays) > 1:  # all of them are named in the tray panel
            trays = f"({len(b.trays)}) {trays}"
        self.field(ax, *places[1], row_y[3], w["trays"], trays)
        if b.notes:
            self.field(ax, 0.0, 0.185, 1.0, row_y[4], w["notes"], " ".join(b.notes.split()),
                       bold=False)

    @staticmethod
    def field(ax: Axes, left: float, label_width: float, right: float, y: float, label: str,
              value: str, *, bold: bool = True) -> None:
        """A label and its value, the value cut with "…" where it would pass ``right``
        (axes fraction): measured in the drawn font, as ids have no spaces to break at
        and bold capitals are wider than a count of characters allows for."""
        ax.text(left, y, f"{label}:", fontsize=8.5, color="0.3", va="top",
                transform=ax.transAxes)
        text = ax.text(left + label_width, y, value, fontsize=8.5, va="top",
                       fontweight="bold" if bold else "normal", transform=ax.transAxes)
        renderer = ax.figure.canvas.get_renderer()
        limit = ax.transAxes.transform((right, y))[0]

        def fits(kept: int) -> bool:
            text.set_text(value if kept == len(value)
                          else value[:kept].rstrip(" -_.,/") + "…")
            return text.get_window_extent(renderer).x1 <= limit

        if fits(len(value)):
            return
        low, high = 1, len(value) - 1  # the longest cut that fits: a few measurements
        while low < high:
            middle = (low + high + 1) // 2
            if fits(middle):
                low = middle
            else:
                high = middle - 1
        fits(low)

    def draw_climate(self, humidity: Axes, temperature: Axes) -> None:
        # One pass over the samples (numpy turns None into NaN for a float array).
        table = np.array([(s.ts, s.humidity_pct, s.temperature_c) for s in self.series.climate],
                         dtype=float).reshape(-1, 3)
        if not np.all(table[1:, 0] >= table[:-1, 0]):
            table = table[np.argsort(table[:, 0], kind="stable")]
        ts = table[:, 0]
        count = len(ts)
        for ax, column, label, limits in (
                (humidity, 1, self.words["humidity_axis"], (0, 100)),
                (temperature, 2, self.words["temperature_axis"], None)):
            ax.set_ylabel(label)
            ax.grid(axis="y", color="0.85", linewidth=0.5)
            if limits:
                ax.set_ylim(*limits)
            values = table[:, column]
            if count == 0 or np.isnan(values).all():
                ax.text(0.5, 0.5, self.words["no_climate"], ha="center", va="center",
                        transform=ax.transAxes, fontsize=9, color="0.3")
                continue
            curve = break_at_gaps(envelope(ts, values, start=self.start, end=self.end,
                                       columns=PLOT_COLUMNS), self.series.gaps)
            x = self.x(curve.ts)
            ax.fill_between(x, curve.low, curve.high, where=~np.isnan(curve.low),
                            facecolor=BAND, linewidth=0, interpolate=False)
            ax.plot(x, curve.mean, color=INK, linewidth=1.0)
            if not limits:
                low, high = np.nanmin(curve.low), np.nanmax(curve.high)
                ax.set_ylim(math.floor(low / 5) * 5 - 1, math.ceil(high / 5) * 5 + 1)

    def draw_trays(self, ax: Axes) -> None:
        """One lane per tray (dark: out), and on top a lane of the rain plates (black: wet).

        Rain over a dark bar is rain on the beans; the short black marks make
        even a two-minute shower visible at the scale of ten days.
        """
        trays = sorted(self.batch.trays)
        lanes = [self.words["rain_lane"], *(str(t) for t in trays)]
        ax.set_ylim(len(lanes) - 0.4, -0.6)  # the first lane on top
        ax.set_yticks(range(len(lanes)), lanes)
        ax.tick_params(axis="y", labelsize=7 if len(lanes) <= 7 else 6, length=0)
        bar = 0.64  # of a lane's height
        rain = [(self.x(middle - width / 2), self.x(middle + width / 2) - self.x(
                    middle - width / 2)) for middle, width in self.widened(self.series.rain_wet)]
        ax.broken_barh(rain, (-bar / 2, bar), facecolor=INK, linewidth=0)
        by_tray: dict[TrayRef, list[TrayChange]] = {t: [] for t in trays}
        for change in self.series.tray_changes:
            by_tray.setdefault(change.tray, []).append(change)
        for lane, tray in enumerate(trays, start=1):
            changes = sorted(by_tray[tray], key=lambda c: c.ts)
            out, unsure = [], []
            for i, change in enumerate(changes):  # each state lasts until the next change
                until = changes[i + 1].ts if i + 1 < len(changes) else self.end
                span = (self.x(change.ts), self.x(until) - self.x(change.ts))
                if change.state == "extended":
                    out.append(span)
                elif change.state != "retracted":
                    unsure.append(span)
            ax.broken_barh(out, (lane - bar / 2, bar), facecolor=TRAY_OUT, linewidth=0)
            ax.broken_barh(unsure, (lane - bar / 2, bar), facecolor="white",
                           edgecolor="0.4", hatch="....", linewidth=0.4)
        for lane in range(len(lanes)):
            ax.axhline(lane, color="0.85", linewidth=0.5, zorder=0)

    def draw_moisture(self, ax: Axes) -> None:
        w, e = self.words, self.estimate
        ax.set_ylabel(w["moisture_axis"])
        ax.grid(axis="y", color="0.85", linewidth=0.5)
        top = max([r.moisture_pct for r in self.readings] + [e.target_pct + 5])
        ax.set_ylim(0, math.ceil(top / 10) * 10 + 2)
        if e.p20_ts is not None and e.p80_ts is not None:
            ax.axvspan(self.x(e.p20_ts), self.x(e.p80_ts), facecolor=ESTIMATE_FACE,
                       edgecolor="0.45", hatch=ESTIMATE_HATCH, linewidth=0)
        if e.p50_ts is not None:
            ax.axvline(self.x(e.p50_ts), color=INK, linestyle=":", linewidth=1.4)
        ax.axhline(e.target_pct, color=INK, linestyle="--", linewidth=1.0)
        ax.text(0.005, e.target_pct, w["target"].format(target=f"{e.target_pct:g}"),
                transform=ax.get_yaxis_transform(), ha="left", va="bottom", fontsize=7.5,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
        if self.readings:
            x = self.x([r.ts for r in self.readings])
            y = [r.moisture_pct for r in self.readings]
            ax.plot(x, y, color="0.45", linewidth=0.7, linestyle="-")
            ax.plot(x, y, linestyle="none", marker="o", markersize=4.5,
                    markerfacecolor=INK, markeredgecolor="white", markeredgewidth=0.6)
            if len(self.readings) <= 24:  # beyond that the numbers would overlap
                close_s = 0.02 * (self.axis_end - self.start)
                below = False
                for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
                    # A reading close after the one before gets its number below the point.
                    below = (not below and i > 0
                             and self.readings[i].ts - self.readings[i - 1].ts < close_s)
                    ax.annotate(f"{yi:.1f}", (xi, yi), textcoords="offset points",
                                xytext=(0, -11 if below else 5), ha="center", fontsize=6.5,
                                zorder=4, bbox={"facecolor": "white", "edgecolor": "none",
                                                "pad": 0.3})
        else:
            ax.text(0.5, 0.6, w["no_readings"], ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="0.3")
        if e.reached_at is not None:
            ax.plot([self.x(e.reached_at)], [e.target_pct], marker="*", markersize=11,
                    color=INK, linestyle="none")
        if e.reason is not None and e.p50_ts is None and e.reached_at is None:
            ax.text(0.99, 0.92, w["no_estimate"].format(reason=e.reason), ha="right",
                    va="top", transform=ax.transAxes, fontsize=7.5, color="0.25")

    def mark_events(self, ax: Axes) -> None:
        """Rain hatched, gaps crossed, rain alerts as dash-dot lines, on a time panel."""
        self.spans(ax, self.series.rain_wet, facecolor=RAIN_FACE, edgecolor="0.35",
                   hatch=RAIN_HATCH, zorder=0.5)
        self.spans(ax, self.series.gaps, facecolor=GAP_FACE, edgecolor="0.3",
                   hatch=GAP_HATCH, zorder=2.5)
        for mark in self.series.alerts:
            if mark.state == "raised":
                ax.axvline(self.x(mark.ts), color=INK, linestyle="-.", linewidth=0.8,
                           zorder=3)

    def draw_alert_labels(self, ax: Axes) -> None:
        for mark in self.series.alerts:
            if mark.state == "raised":
                ax.text(self.x(mark.ts), 1.0, f"A{mark.episode}", fontsize=6.5,
                        ha="center", va="bottom", transform=ax.get_xaxis_transform(),
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white",
                              "edgecolor": INK, "linewidth": 0.6})

    def format_time_axis(self, bottom: Axes, others: Sequence[Axes]) -> None:
        from matplotlib import dates, ticker

        days = (self.axis_end - self.start) / 86400.0
        bottom.set_xlim(self.x(self.start), self.x(self.axis_end))
        bottom.xaxis.set_major_locator(dates.DayLocator(interval=max(1, math.ceil(days / 12)),
                                                        tz=self.zone))

        def day_label(value: float, _position: int) -> str:
            local = dates.num2date(value, tz=self.zone)
            return f"{self.weekdays[local.weekday()]}\n{local:%d/%m}"

        bottom.xaxis.set_major_formatter(ticker.FuncFormatter(day_label))
        bottom.set_xlabel(self.words["time_axis"].format(timezone=self.zone.key))
        # Faint lines at 06, 12 and 18 h local, drawn as one collection per panel:
        # as minor ticks they cost a third of the drawing time.
        quarters = self.x(np.array(self.local_hours((6, 12, 18))))
        for ax in (*others, bottom):
            ax.grid(axis="x", which="major", color="0.55", linewidth=0.6)
            ax.vlines(quarters, 0, 1, transform=ax.get_xaxis_transform(), colors="0.88",
                      linewidths=0.4, zorder=0)
        for ax in others:
            ax.tick_params(axis="x", labelbottom=False)

    def draw_legend(self, ax: Axes) -> None:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        w = self.words
        handles = [
            Line2D([], [], color=INK, linewidth=1.0, label=w["mean_of_nodes"]),
            Patch(facecolor=BAND, label=w["range_of_nodes"]),
            Patch(facecolor=RAIN_FACE, edgecolor="0.35", hatch=RAIN_HATCH, linewidth=0,
                  label=w["rain"]),
            Patch(facecolor=GAP_FACE, edgecolor="0.3", hatch=GAP_HATCH, linewidth=0.4,
                  label=w["gap"]),
            Line2D([], [], color=INK, linestyle="-.", linewidth=0.8, label=w["alert"]),
            Patch(facecolor=TRAY_OUT, label=w["tray_out"]),
            Line2D([], [], color=INK, marker="o", linestyle="none", markersize=4.5,
                   label=w["reading"]),
            Patch(facecolor=ESTIMATE_FACE, edgecolor="0.45", hatch=ESTIMATE_HATCH,
                  linewidth=0, label=w["estimate_range"]),
            Line2D([], [], color=INK, linestyle=":", linewidth=1.4, label=w["estimate_median"]),
        ]
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.09),
                  ncol=5, frameon=False, handlelength=2.2, columnspacing=1.2,
                  borderaxespad=0)

    def draw_figures(self, ax: Axes) -> None:
        w, m, e = self.words, self.metrics, self.estimate

        def hours(value: float | None) -> str:
            return w["none"] if value is None else f"{value:.1f} h"

        def span(mean: float | None, low: float | None, high: float | None,
                 unit: str) -> str:
            if mean is None:
                return w["none"]
            text = f"{mean:.1f} {unit}"
            if low is not None and high is not None:
                text += f" ({low:.1f}–{high:.1f})"
            return text

        gap_hours = sum(g.seconds for g in m.gaps) / 3600.0
        target = f"{e.target_pct:g}"
        if e.reached_at is not None:
            estimate = [(w["reached"].format(target=target), self.when(e.reached_at))]
        elif e.p50_ts is not None:
            estimate = [(w["estimate"].format(target=target), self.when(e.p50_ts)),
                        (w["estimate_range_row"], w["estimate_range_value"].format(
                            p20=self.when(e.p20_ts), p80=self.when(e.p80_ts)))]
        else:
            estimate = [(w["estimate"].format(target=target),
                         w["no_estimate"].format(reason=e.reason or w["none"]))]
        rows = [
            (w["drying_h"], hours(m.drying_h)),
            (w["sun_drying_h"], hours(m.sun_drying_h)),
            (w["rewetting_h"], hours(m.rewetting_h)),
            (w["rain_exposure"], f"{m.rain_exposure_min:.0f} min"),
            (w["humidity_summary"], span(m.humidity_mean_pct, m.humidity_min_pct,
                                         m.humidity_max_pct, "%")),
            (w["temperature_summary"], span(m.temperature_mean_c, m.temperature_min_c,
                                            m.temperature_max_c, "°C")),
            (w["vpd_mean"], w["none"] if m.vpd_mean_kpa is None
             else f"{m.vpd_mean_kpa:.2f} kPa"),
            (w["time_to_target"], hours(m.time_to_target_h)),
            (w["gaps"], w["gaps_value"].format(count=len(m.gaps), hours=f"{gap_hours:.1f}")),
            (w["final_moisture"], w["none"] if self.batch.final_moisture_pct is None
             else f"{self.batch.final_moisture_pct:.1f} %"),
            *estimate,
        ]
        self.table(ax, w["metrics"], rows, value_at=0.56)

    def draw_alerts(self, ax: Axes) -> None:
        w = self.words
        rows = []
        for response in self.metrics.responses:
            retracted = (w["not_retracted"] if response.retracted_at is None
                         else self.clock_after(response.raised_at, response.retracted_at))
            minutes = "" if response.minutes is None else f"{response.minutes:.0f} min"
            rows.append((w["alert_row"].format(episode=response.episode,
                                               raised=self.when(response.raised_at),
                                               retracted=retracted), minutes))
        if len(rows) > MAX_ALERT_ROWS:
            hidden = len(rows) - (MAX_ALERT_ROWS - 1)
            rows = [*rows[:MAX_ALERT_ROWS - 1], (w["more_alerts"].format(count=hidden), "")]
        if not rows:
            rows = [(w["no_alerts"], "")]
        self.table(ax, w["alerts"], rows, value_at=1.0, value_align="right",
                   subtitle=w["alerts_columns"])

    @staticmethod
    def table(ax: Axes, title: str, rows: Sequence[tuple[str, str]], *, value_at: float,
              value_align: str = "left", subtitle: str = "") -> None:
        ax.set_axis_off()
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.text(0, 1, title, fontsize=9.5, fontweight="bold", va="top",
                transform=ax.transAxes)
        first = 0.9
        if subtitle:
            ax.text(0, 0.91, subtitle, fontsize=7, color="0.3", va="top",
                    transform=ax.transAxes)
            first = 0.82
        step = min(0.083, first / max(len(rows), 1))
        for i, (label, value) in enumerate(rows):
            y = first - i * step
            if i % 2 == 0:  # a light band every other row guides the eye along it
                ax.axhspan(y - step * 0.78, y + step * 0.22, xmin=0, xmax=1,
                           facecolor="0.93", linewidth=0)
            ax.text(0.01, y, label, fontsize=8, va="top", transform=ax.transAxes)
            ax.text(value_at, y, value, fontsize=8, fontweight="bold", va="top",
                    ha=value_align, transform=ax.transAxes)
