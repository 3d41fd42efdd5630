"""A batch's quality figures from its series: pure (the data and the clock are arguments).

How readings become time (docs/batches.md, "Metrics"):

- a climate reading holds from its time until the next reading of the same
  node, at most ``gap_after_s``, and never inside one of the series' gaps
  (no data is no data: nothing is interpolated across an outage);
- a tray's state holds from its change until its next change (the series
  reader marks a tray ``unknown`` when its node stops reporting);
- the rain plate is wet inside ``series.rain_wet`` (any batch node's plate),
  dry elsewhere;
- a tray's air is its own node's: the node that reports the tray also
  measures the air over it.

Which trays count. Hours are **batch-hours**: each tray of the batch counts
for its share of the lot (``1 / len(batch.trays)``), so a batch on four trays
with two out for an hour got half an hour of sun. The quality manager reads
them as "how long the whole lot dried". Rain exposure counts when **any**
tray of the batch was out under a wet plate: some of the lot got wet. A rain
response ends when the **last** tray is confirmed ``retracted`` by its switch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from secadero.server.batches.daylight import daylight
from secadero.server.batches.model import (
    AlertMark,
    Batch,
    BatchMetrics,
    BatchSeries,
    ClimateSample,
    DryingPeriod,
    Interval,
    MoistureReading,
    RainResponse,
    TrayRef,
)
from secadero.settings import BatchSettings, YardSettings

# The alert kinds of a rain episode (server/alerts/engine.py: the episode's cause).
RAIN_KINDS = frozenset({"rain_forecast", "rain_now"})

Span = tuple[float, float]
T = TypeVar("T")


# ---------------------------------------------------------------- span algebra
# Lists of spans are sorted, disjoint, half-open [start, end).


def _merge(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for lo, hi in sorted(s for s in spans if s[1] > s[0]):
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _intersect(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    out: list[Span] = []
    j = 0
    for lo, hi in a:
        while j < len(b) and b[j][1] <= lo:
            j += 1
        k = j
        while k < len(b) and b[k][0] < hi:
            if b[k][0] > lo:
                out.append((lo, b[k][0]))
            lo = max(lo, b[k][1])
            k += 1
        if hi > lo:
            out.append((lo, hi))
    return out


def _with_next(items: Sequence[T]) -> Iterator[tuple[T, T | None]]:
    """Each item with the one after it (``None`` after the last)."""
    for index, item in enumerate(items):
        yield item, items[index + 1] if index + 1 < len(items) else None


def _seconds(spans: Iterable[Span]) -> float:
    return sum(hi - lo for lo, hi in spans)


class _Hold(NamedTuple):
    """A climate reading and the span it stands for (a tuple: made ~10,000 times a batch)."""

    start: float
    end: float
    sample: ClimateSample


def _clip_holds(holds: Sequence[_Hold], mask: Sequence[Span]) -> list[_Hold]:
    """The parts of ``holds`` (sorted, disjoint) inside ``mask``."""
    out: list[_Hold] = []
    j = 0
    for hold in holds:
        while j < len(mask) and mask[j][1] <= hold.start:
            j += 1
        k = j
        while k < len(mask) and mask[k][0] < hold.end:
            lo, hi = max(hold.start, mask[k][0]), min(hold.end, mask[k][1])
            if hi > lo:
                out.append(_Hold(lo, hi, hold.sample))
            k += 1
    return out


# ---------------------------------------------------------------- the timeline


class _Timeline:
    """The series as spans: per tray its states, per node its readings' holds."""

    def __init__(self, batch: Batch, series: BatchSeries, settings: BatchSettings,
                 until: float) -> None:
        self.start = series.start
        self.until = until
        self.trays = batch.trays
        window = [(self.start, until)] if until > self.start else []
        self.gaps = _intersect(_merge((g.start, g.end) for g in series.gaps), window)
        self.wet = _intersect(_merge((w.start, w.end) for w in series.rain_wet), window)
        self.dry_plate = _subtract(window, self.wet)
        self.states = self._tray_states(series, window)
        self.holds = self._climate_holds(series, settings.gap_after_s)

    def _tray_states(self, series: BatchSeries,
                     window: list[Span]) -> dict[TrayRef, dict[str, list[Span]]]:
        changes: dict[TrayRef, list[tuple[float, str]]] = defaultdict(list)
        for change in series.tray_changes:
            changes[change.tray].append((change.ts, change.state))
        states: dict[TrayRef, dict[str, list[Span]]] = {}
        for tray in self.trays:
            by_state: dict[str, list[Span]] = defaultdict(list)
            ordered = sorted(changes.get(tray, ()), key=lambda c: c[0])
            for (ts, state), following in _with_next(ordered):
                end = following[0] if following is not None else self.until
                by_state[state].append((ts, end))
            states[tray] = {state: _intersect(_merge(spans), window)
                            for state, spans in by_state.items()}
        return states

    def _climate_holds(self, series: BatchSeries, gap_after_s: float) -> dict[str, list[_Hold]]:
        by_node: dict[str, list[ClimateSample]] = defaultdict(list)
        for sample in series.climate:
            if self.start <= sample.ts < self.until:
                by_node[sample.node].append(sample)
        covered = _subtract([(self.start, self.until)], self.gaps)
        holds: dict[str, list[_Hold]] = {}
        for node, samples in by_node.items():
            samples.sort(key=lambda s: s.ts)
            raw = []
            for sample, following in _with_next(samples):
                end = min(sample.ts + gap_after_s, self.until)
                if following is not None:
                    end = min(end, following.ts)
                if end > sample.ts:
                    raw.append(_Hold(sample.ts, end, sample))
            holds[node] = _clip_holds(raw, covered) if self.gaps else raw
        return holds

    def extended(self, tray: TrayRef) -> list[Span]:
        return self.states[tray].get("extended", [])

    def retracted(self, tray: TrayRef) -> list[Span]:
        return self.states[tray].get("retracted", [])

    def air(self, tray: TrayRef) -> list[_Hold]:
        return self.holds.get(tray.node, [])


def _drying_pieces(timeline: _Timeline, tray: TrayRef, settings: BatchSettings) -> list[_Hold]:
    """Where one tray dried: extended, plate dry, its air at or below the drying RH."""
    dry_air = [h for h in timeline.air(tray) if h.sample.humidity_pct is not None
               and h.sample.humidity_pct <= settings.drying_max_humidity_pct]
    return _clip_holds(dry_air, _intersect(timeline.extended(tray), timeline.dry_plate))


def _share(timeline: _Timeline, seconds_per_tray: Iterable[float]) -> float:
    """Batch-hours: each tray counts for its share of the lot."""
    if not timeline.trays:
        return 0.0
    return sum(seconds_per_tray) / len(timeline.trays) / 3600.0


# ---------------------------------------------------------------- the figures


def compute(batch: Batch, series: BatchSeries, readings: Sequence[MoistureReading],
            settings: BatchSettings, yard: YardSettings) -> BatchMetrics:
    """The batch's metrics over ``[series.start, series.end)`` (``until`` = ``series.end``)."""
    until = series.end
    timeline = _Timeline(batch, series, settings, until)
    sun_up = _merge((d.start, d.end) for d in daylight(
        yard.latitude, yard.longitude, yard.timezone, series.start, until))

    sun_drying = _share(timeline, (
        _seconds(_intersect(_intersect(timeline.extended(t), timeline.dry_plate), sun_up))
        for t in batch.trays))
    drying = _share(timeline, (
        sum(p.end - p.start for p in _drying_pieces(timeline, t, settings))
        for t in batch.trays))
    rewetting = _share(timeline, (
        sum(h.end - h.start for h in _clip_holds(
            [h for h in timeline.air(t) if h.sample.humidity_pct is not None
             and h.sample.humidity_pct >= settings.rewetting_humidity_pct],
            timeline.extended(t)))
        for t in batch.trays))
    any_out = _merge(span for t in batch.trays for span in timeline.extended(t))
    exposure_min = _seconds(_intersect(any_out, timeline.wet)) / 60.0

    all_holds = [h for node_holds in timeline.holds.values() for h in node_holds]
    samples = [s for s in series.climate if series.start <= s.ts < until]
    return BatchMetrics(
        until=until,
        sun_drying_h=sun_drying,
        drying_h=drying,
        rewetting_h=rewetting,
        rain_exposure_min=exposure_min,
        responses=_responses(timeline, series.alerts),
        humidity_mean_pct=_time_mean(all_holds, "humidity_pct"),
        humidity_min_pct=_extreme(samples, "humidity_pct", min),
        humidity_max_pct=_extreme(samples, "humidity_pct", max),
        temperature_mean_c=_time_mean(all_holds, "temperature_c"),
        temperature_min_c=_extreme(samples, "temperature_c", min),
        temperature_max_c=_extreme(samples, "temperature_c", max),
        vpd_mean_kpa=_time_mean(all_holds, "vpd_kpa"),
        time_to_target_h=_time_to_target(series.start, until, readings,
                                         settings.target_moisture_pct),
        gaps=tuple(Interval(lo, hi) for lo, hi in timeline.gaps),
    )


def drying_periods(batch: Batch, series: BatchSeries,
                   settings: BatchSettings) -> tuple[DryingPeriod, ...]:
    """The spans that counted as drying hours, each with its trays' share and mean VPD.

    A new period starts wherever the number of the batch's trays drying
    changes; ``sum(p.hours * p.share)`` is ``compute(...).drying_h``.
    """
    timeline = _Timeline(batch, series, settings, series.end)
    if not batch.trays:
        return ()
    # Sweep the trays' drying pieces: between two consecutive edges the set of
    # trays drying (and the VPD of their air) is constant.
    edges: list[tuple[float, int, int, float | None]] = []
    for index, tray in enumerate(batch.trays):
        for piece in _drying_pieces(timeline, tray, settings):
            edges.append((piece.start, 1, index, piece.sample.vpd_kpa))
            edges.append((piece.end, 0, index, None))  # ends sort before starts
    edges.sort(key=lambda e: (e[0], e[1]))
    active: dict[int, float | None] = {}
    periods: list[_PeriodSum] = []
    previous = None
    for ts, is_start, index, vpd in edges:
        if previous is not None and ts > previous and active:
            known = [v for v in active.values() if v is not None]
            vpd_mean = sum(known) / len(known) if known else None
            _extend(periods, previous, ts, len(active), vpd_mean)
        if is_start:
            active[index] = vpd
        else:
            active.pop(index, None)
        previous = ts
    count = len(batch.trays)
    return tuple(DryingPeriod(p.start, p.end, p.vpd_mean(), p.trays / count) for p in periods)


@dataclass(slots=True)
class _PeriodSum:
    start: float
    end: float
    trays: int
    vpd_seconds: float = 0.0  # sum of vpd x seconds where the VPD is known
    vpd_known_s: float = 0.0

    def vpd_mean(self) -> float | None:
        return self.vpd_seconds / self.vpd_known_s if self.vpd_known_s else None


def _extend(periods: list[_PeriodSum], start: float, end: float, trays: int,
            vpd: float | None) -> None:
    last = periods[-1] if periods else None
    if last is None or last.end != start or last.trays != trays:
        last = _PeriodSum(start, start, trays)
        periods.append(last)
    last.end = end
    if vpd is not None:
        last.vpd_seconds += vpd * (end - start)
        last.vpd_known_s += end - start


def _responses(timeline: _Timeline, alerts: Sequence[AlertMark]) -> tuple[RainResponse, ...]:
    """Per rain episode raised during the batch: alert raised -> every batch tray retracted.

    The trays are looked for from the raise until the episode was resolved
    (or ``until`` while it is open): trays brought in only after the all-clear
    were not a response, and the episode's ``retracted_at`` is ``None``. Trays
    already in when it was raised answer in 0 minutes.
    """
    all_in: list[Span] = [(timeline.start, timeline.until)] if timeline.trays else []
    for tray in timeline.trays:
        all_in = _intersect(all_in, timeline.retracted(tray))
    marks: dict[int, list[AlertMark]] = defaultdict(list)
    for mark in alerts:
        if mark.kind in RAIN_KINDS and timeline.start <= mark.ts < timeline.until:
            marks[mark.episode].append(mark)
    responses = []
    for episode, episode_marks in marks.items():
        raised = [m.ts for m in episode_marks if m.state == "raised"]
        if not raised:
            continue  # raised before the batch started: not this batch's response
        raised_at = min(raised)
        # An upgrade (rain_forecast -> rain_now) resolves one kind and raises the
        # other at the same instant: at equal times the episode is still open.
        last = max(episode_marks, key=lambda m: (m.ts, m.state != "resolved"))
        window_end = last.ts if last.state == "resolved" else timeline.until
        retracted_at = next((max(lo, raised_at) for lo, hi in all_in
                             if hi > raised_at and max(lo, raised_at) <= window_end), None)
        minutes = None if retracted_at is None else (retracted_at - raised_at) / 60.0
        responses.append(RainResponse(episode, raised_at, retracted_at, minutes))
    return tuple(sorted(responses, key=lambda r: r.raised_at))


def _time_mean(holds: Sequence[_Hold], name: str) -> float | None:
    total = weight = 0.0
    for hold in holds:
        value = getattr(hold.sample, name)
        if value is not None:
            total += value * (hold.end - hold.start)
            weight += hold.end - hold.start
    return total / weight if weight else None


def _extreme(samples: Sequence[ClimateSample], name: str,
             pick: Callable[[list[float]], float]) -> float | None:
    values = [v for v in (getattr(s, name) for s in samples) if v is not None]
    return pick(values) if values else None


def _time_to_target(start: float, until: float, readings: Sequence[MoistureReading],
                    target_pct: float) -> float | None:
    reached = [r.ts for r in readings
               if start <= r.ts <= until and r.moisture_pct <= target_pct]
    return (min(reached) - start) / 3600.0 if reached else None
