"""The batch curve as a small inline SVG: air humidity, bean moisture, rain, the target.

The PDF report (``batches/report.py``) draws the full figure; a phone on the
yard's Wi-Fi gets this one instead, a few kilobytes, drawn from the same
``BatchView`` (no second reading of InfluxDB).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from secadero.server.batches.service import BatchView

WIDTH, HEIGHT = 360, 200
LEFT, RIGHT, TOP, BOTTOM = 30, 8, 8, 22
# At most this many points on the humidity line: plenty for 320 pixels.
MAX_POINTS = 240


def batch_curve(view: BatchView, timezone: str, language: str) -> str:
    """An SVG (markup) of the batch from its start to ``view.until``; percent on one axis."""
    start, end = view.series.start, max(view.series.end, view.series.start + 60)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(ts: float) -> float:
        return LEFT + (min(max(ts, start), end) - start) / (end - start) * plot_w

    def y(pct: float) -> float:
        return TOP + (100 - min(max(pct, 0), 100)) / 100 * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'class="curve" role="img" aria-label="{escape(_label(language))}">']
    for interval in view.series.rain_wet:
        parts.append(f'<rect x="{x(interval.start):.1f}" y="{TOP}" '
                     f'width="{max(x(interval.end) - x(interval.start), 1.5):.1f}" '
                     f'height="{plot_h}" class="rain"/>')
    for pct in (0, 25, 50, 75, 100):
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(pct):.1f}" '
                     f'y2="{y(pct):.1f}" class="grid"/>'
                     f'<text x="{LEFT - 3}" y="{y(pct) + 3:.1f}" class="axis" '
                     f'text-anchor="end">{pct}</text>')
    for ts, label in _day_ticks(start, end, timezone):
        # A label at either edge is anchored inside the picture, not cut in half.
        anchor = ("start" if x(ts) < LEFT + 20 else "end" if x(ts) > WIDTH - RIGHT - 20
                  else "middle")
        parts.append(f'<text x="{x(ts):.1f}" y="{HEIGHT - 6}" class="axis" '
                     f'text-anchor="{anchor}">{label}</text>')
    humidity = _mean_by_time(view)
    if humidity:
        step = max(1, len(humidity) // MAX_POINTS)
        points = " ".join(f"{x(ts):.1f},{y(pct):.1f}" for ts, pct in humidity[::step])
        parts.append(f'<polyline points="{points}" class="humidity"/>')
    target = view.estimate.target_pct
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(target):.1f}" '
                 f'y2="{y(target):.1f}" class="target"/>')
    readings = sorted(view.readings, key=lambda r: r.ts)
    if len(readings) > 1:
        points = " ".join(f"{x(r.ts):.1f},{y(r.moisture_pct):.1f}" for r in readings)
        parts.append(f'<polyline points="{points}" class="moisture"/>')
    for reading in readings:
        parts.append(f'<circle cx="{x(reading.ts):.1f}" cy="{y(reading.moisture_pct):.1f}" '
                     f'r="3.5" class="moisture-dot"/>')
    parts.append("</svg>")
    return "".join(parts)


def _label(language: str) -> str:
    return ("Air humidity and bean moisture, percent" if language == "en"
            else "Humedad del aire y del grano, en por ciento")


def _mean_by_time(view: BatchView) -> list[tuple[float, float]]:
    """The batch nodes' humidity, averaged per sample time."""
    sums: dict[float, list[float]] = {}
    for sample in view.series.climate:
        if sample.humidity_pct is not None:
            sums.setdefault(sample.ts, []).append(sample.humidity_pct)
    return [(ts, sum(values) / len(values)) for ts, values in sorted(sums.items())]


def _day_ticks(start: float, end: float, timezone: str) -> list[tuple[float, str]]:
    """A label per local midnight in the span, or two hour labels for a span under a day."""
    zone = ZoneInfo(timezone)
    if end - start < 86400:
        return [(start, datetime.fromtimestamp(start, zone).strftime("%H:%M")),
                (end, datetime.fromtimestamp(end, zone).strftime("%H:%M"))]
    ticks = []
    day = datetime.fromtimestamp(start, zone).replace(hour=0, minute=0, second=0,
                                                       microsecond=0)
    while day.timestamp() <= end:
        if day.timestamp() >= start:
            ticks.append((day.timestamp(), day.strftime("%d/%m")))
        day += timedelta(days=1)  # wall-clock days: the next local midnight
    return ticks

