"""A batch's series from InfluxDB: what its trays lived through, gaps kept as gaps.

``SeriesReader(influx_settings).read(batch, until)`` asks InfluxDB (the 1.x
HTTP API, InfluxQL; 2.x through its v1 compatibility API) for the
measurements as the ingest writes them (server/points.py,
server/influx_points.py), in two requests (five statements):

- ``climate`` of the batch's nodes, as means of temperature and humidity
  over ``resolution_s`` buckets (5 minutes by default; the VPD is the
  bucket means' VPD): a 10-day batch from four nodes at one reading per 10 s
  is 350,000 points, and InfluxDB 1.x spends about 7 us per bucket and field
  it answers, so every reading would not fit ``batch show``'s 0.5 s
  (docs/performance.md, "Batch series and metrics"). Each sample is stamped
  at its bucket's start and stands for its bucket;
- ``tray`` of the batch's trays: each 15-minute bucket's first state, plus
  the exact instants of the nodes' ``tray_extended`` / ``tray_retracted`` events, so a
  tray movement is timed to the second (to the bucket only for a state no
  event reports: ``moving``, ``unknown``);
- ``rain`` of the batch's nodes: the nodes' ``rain_started`` /
  ``rain_stopped`` events to the second, and the buckets holding a wet
  reading that no event explains, whole (only wet buckets are asked for:
  cheap, as rain is rare);
- the yard's ``alert`` transitions (few; read as they are).

A tray's state holds until the next point of its series, at most
``gap_after_s`` (or a tray bucket, if longer: 15 minutes by default): a tray
whose node falls silent longer than that becomes ``unknown``. ``gaps``:
spans no climate bucket of any batch node covers, at least ``gap_after_s``
long (the silence was at least that long); nothing is interpolated across
them.

Ids are validated by the wire contract, and every identifier and string
literal is quoted and escaped here all the same.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from secadero.errors import SecaderoError
from secadero.server.air import vpd_kpa
from secadero.server.batches.model import (
    AlertMark,
    Batch,
    BatchError,
    BatchSeries,
    ClimateSample,
    Interval,
    SeriesUnavailable,
    TrayChange,
    TrayRef,
)
from secadero.server.influx import InfluxV1Writer, quote_identifier
from secadero.settings import BatchSettings, InfluxSettings

DEFAULT_RESOLUTION_S = 300
# Tray buckets are this many climate buckets: a tray's moves are timed by its
# events, the buckets only tell its state where no event does.
TRAY_BUCKETS = 3
# InfluxDB 1.x answers a series in chunks of 10,000 rows and marks them
# "partial" (and truncates at its max-row-limit): at most this many buckets a
# series (under the chunk size), so a "partial" always means a truncated answer.
MAX_BUCKETS = 9_000
# The yard's climate for its typical day (four weeks by default) is read in 15-minute
# buckets: even two weeks of a yard's nodes in 5-minute ones cost InfluxDB about as much
# as the batch's own series (docs/performance.md), and a day's drying summed over 15
# minutes differs little.
YARD_CLIMATE_BUCKET_S = 900
TRAY_EVENTS = {"tray_extended": "extended", "tray_retracted": "retracted"}
RAIN_EVENTS = {"rain_started": True, "rain_stopped": False}


def quote_string(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ns(ts: float) -> int:
    """A UNIX time as the integer nanoseconds an InfluxQL time condition takes."""
    return round(ts * 1_000_000) * 1000


def _any(conditions: Iterable[str]) -> str:
    return "(" + " OR ".join(conditions) + ")"


@dataclass(frozen=True, slots=True)
class YardClimate:
    """A yard's climate over a span: every node's bucket means, and the wet buckets."""

    samples: tuple[ClimateSample, ...]
    wet: tuple[Interval, ...]
    bucket_s: float


class SeriesReader:
    """Reads batches' series from InfluxDB; safe to share between threads.

    ``gap_after_s``: ``[batches] gap_after_s``. ``resolution_s``: the bucket
    of the climate and rain statements (at most ``gap_after_s``, so a missing
    bucket is a gap; 1 reads every reading: tests, short batches), and a third
    of the tray statement's. A batch longer than ``MAX_BUCKETS`` buckets
    (31 days at 5 minutes) is read in longer buckets.
    """

    def __init__(self, influx: InfluxSettings, *,
                 gap_after_s: float = BatchSettings.gap_after_s,
                 resolution_s: int = DEFAULT_RESOLUTION_S) -> None:
        if resolution_s < 1:
            raise ValueError(f"resolution_s must be at least 1 s, got {resolution_s}")
        self.gap_after_s = gap_after_s
        self.resolution_s = int(min(resolution_s, max(gap_after_s, 1)))
        # The climate statement is most of InfluxDB's work: it goes on its own
        # connection, from a helper thread, while this one asks for the rest,
        # so a server with two cores answers both at once.
        self._climate_influx = InfluxV1Writer(influx)
        self._influx = InfluxV1Writer(influx)
        self._helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-series")
        self._url = influx.url
        self._lock = threading.Lock()  # one read at a time on the two connections

    def close(self) -> None:
        with self._lock:
            self._helper.shutdown(wait=True)
            self._climate_influx.close()
            self._influx.close()

    def read(self, batch: Batch, until: float) -> BatchSeries:
        """The batch's series from its start to ``until`` (or its end, if earlier)."""
        end = until if batch.ended_at is None else min(until, batch.ended_at)
        if end < batch.started_at:
            raise BatchError("until", f"{until:.0f} is before the batch started "
                                      f"({batch.started_at:.0f})")
        start = batch.started_at
        if not batch.trays or end == start:
            return BatchSeries(start=start, end=end)
        climate_s = max(self.resolution_s, math.ceil((end - start) / MAX_BUCKETS))
        tray_s = climate_s * TRAY_BUCKETS
        statements = self._statements(batch, start, end, climate_s, tray_s)
        with self._lock:
            climate_answer = self._helper.submit(self._query, self._climate_influx,
                                                 statements[:1])
            try:
                rest = self._query(self._influx, statements[1:])
            finally:
                climate_only = climate_answer.result()
        results = climate_only + rest
        climate = _climate(results[0], start)
        tray_points = _tray_points(results[1], results[3], batch.trays)
        wet = _wet_spans(results[2], results[3], start, end, climate_s, self.gap_after_s)
        return BatchSeries(
            start=start,
            end=end,
            climate=climate,
            tray_changes=_tray_changes(tray_points, start, end,
                                       max(self.gap_after_s, tray_s)),
            rain_wet=_merged(wet),
            alerts=_alerts(results[4]),
            gaps=_gaps(climate, start, end, climate_s, self.gap_after_s),
        )

    def read_yard_climate(self, yard: str, start: float, end: float, *,
                          bucket_s: int = YARD_CLIMATE_BUCKET_S) -> YardClimate:
        """Every node's climate in ``yard`` over ``[start, end)``, in buckets, and the
        buckets in which any node's rain plate was wet (server/batches/typical.py learns
        the yard's typical drying day from them). Two statements, one request."""
        bucket_s = max(bucket_s, math.ceil((end - start) / MAX_BUCKETS))
        q = quote_identifier
        where = (f"{q('yard')} = {quote_string(yard)} AND time >= {_ns(start)} "
                 f"AND time < {_ns(end)}")
        statements = [
            f"SELECT mean({q('temperature_c')}) AS {q('temperature_c')}, "
            f"mean({q('humidity_pct')}) AS {q('humidity_pct')} FROM {q('climate')} "
            f"WHERE {where} GROUP BY time({bucket_s}s), {q('node')} fill(none)",
            f"SELECT count({q('wet')}) AS {q('wet')} FROM {q('rain')} "
            f"WHERE {where} AND {q('wet')} = true GROUP BY time({bucket_s}s) fill(none)",
        ]
        with self._lock:
            climate, wet = self._query(self._influx, statements)
        wet_buckets = _merged((_seconds(row), _seconds(row) + bucket_s)
                              for _tags, row in _rows(wet))
        return YardClimate(_climate(climate, start), wet_buckets, bucket_s)

    # -- InfluxQL

    def _statements(self, batch: Batch, start: float, end: float, climate_s: int,
                    tray_s: int) -> list[str]:
        bucket = f"time({climate_s}s)"
        tray_bucket = f"time({tray_s}s)"
        yard = f'{quote_identifier("yard")} = {quote_string(batch.yard)}'
        nodes = _any(f'{quote_identifier("node")} = {quote_string(n)}' for n in batch.nodes)
        trays = _any(f'({quote_identifier("node")} = {quote_string(t.node)} AND '
                     f'{quote_identifier("tray")} = {quote_string(t.tray)})'
                     for t in batch.trays)
        # States before the start tell the state at the start: one bucket back
        # for the buckets, the hold for the events.
        span = f"time >= {_ns(start)} AND time < {_ns(end)}"
        state_span = f"time >= {_ns(start - tray_s)} AND time < {_ns(end)}"
        event_span = f"time >= {_ns(start - self.gap_after_s)} AND time < {_ns(end)}"
        events = _any(f'{quote_identifier("type")} = {quote_string(t)}'
                      for t in (*TRAY_EVENTS, *RAIN_EVENTS))
        q = quote_identifier
        return [
            f"SELECT mean({q('temperature_c')}) AS {q('temperature_c')}, "
            f"mean({q('humidity_pct')}) AS {q('humidity_pct')} FROM {q('climate')} "
            f"WHERE {yard} AND {nodes} AND {span} GROUP BY {bucket}, {q('node')} fill(none)",
            f"SELECT first({q('state')}) AS {q('state')} FROM {q('tray')} "
            f"WHERE {yard} AND {trays} AND {state_span} "
            f"GROUP BY {tray_bucket}, {q('node')}, {q('tray')} fill(none)",
            f"SELECT count({q('wet')}) AS {q('wet')} FROM {q('rain')} "
            f"WHERE {yard} AND {nodes} AND {q('wet')} = true AND {span} "
            f"GROUP BY {bucket}, {q('node')} fill(none)",
            f"SELECT {q('type')}, {q('tray')} FROM {q('event')} "
            f"WHERE {yard} AND {nodes} AND {events} AND {event_span} GROUP BY {q('node')}",
            f"SELECT {q('state')}, {q('episode')}, {q('message')} FROM {q('alert')} "
            f"WHERE {yard} AND {span} GROUP BY {q('kind')}",
        ]

    def _query(self, influx: InfluxV1Writer,
               statements: Sequence[str]) -> list[list[dict[str, object]]]:
        """Each statement's series (one request; times in microseconds)."""
        try:
            results = influx.query(";\n".join(statements), epoch="u")
        except SecaderoError as exc:
            raise SeriesUnavailable(
                "until", f"InfluxDB at {self._url} could not give the batch's series: "
                            f"{exc}") from exc
        by_statement: list[list[dict[str, object]]] = [[] for _ in statements]
        for result in results:
            index = int(result.get("statement_id", 0))
            series = result.get("series", [])
            if result.get("partial") or any(s.get("partial") for s in series):
                # No series of ours reaches InfluxDB's chunk size (MAX_BUCKETS):
                # this is its max-row-limit cutting the answer short.
                raise SeriesUnavailable(
                    "until", f"InfluxDB at {self._url} answered only part of the batch's "
                                "series: raise its [http] max-row-limit, or set it to 0")
            by_statement[index] = series
        return by_statement


# ---------------------------------------------------------------- rows -> series


Row = dict[str, object]


def _rows(series: Sequence[Row]) -> Iterable[tuple[dict[str, str], Row]]:
    for one in series:
        tags: dict[str, str] = one.get("tags") or {}
        columns: list[str] = one["columns"]
        for values in one["values"]:
            yield tags, dict(zip(columns, values, strict=True))


def _seconds(row: dict[str, object]) -> float:
    return row["time"] / 1_000_000


def _climate(series: Sequence[dict[str, object]], start: float) -> tuple[ClimateSample, ...]:
    samples = [
        # The bucket that holds the start begins before it; its mean is of
        # readings after the start only.
        _sample(max(_seconds(row), start), tags["node"], row["temperature_c"],
                row["humidity_pct"])
        for tags, row in _rows(series)
    ]
    samples.sort(key=lambda s: (s.ts, s.node))
    return tuple(samples)


def _sample(ts: float, node: str, temperature: object, humidity: object) -> ClimateSample:
    # A mean of whole numbers comes back as a JSON integer: make it a float.
    temperature_c = float(temperature) if isinstance(temperature, int | float) else None
    humidity_pct = float(humidity) if isinstance(humidity, int | float) else None
    # The VPD of the bucket's means rather than the mean of the readings' VPDs
    # (one field less to ask for): over five minutes they differ by well under
    # 0.1 % (bench/batch_show.py compares them).
    vpd = (vpd_kpa(temperature_c, humidity_pct)
           if temperature_c is not None and humidity_pct is not None else None)
    return ClimateSample(ts, node, temperature_c, humidity_pct, vpd)


def _tray_points(buckets: Sequence[dict[str, object]], events: Sequence[dict[str, object]],
                 trays: Sequence[TrayRef]) -> dict[TrayRef, list[tuple[float, str]]]:
    wanted = set(trays)
    points: dict[TrayRef, list[tuple[float, str]]] = defaultdict(list)
    for tags, row in _rows(buckets):
        if isinstance(row["state"], str):
            points[TrayRef(tags["node"], tags["tray"])].append((_seconds(row), row["state"]))
    for tags, row in _rows(events):
        state = TRAY_EVENTS.get(row["type"])
        tray = TrayRef(tags["node"], row["tray"]) if isinstance(row["tray"], str) else None
        if state is not None and tray in wanted:
            points[tray].append((_seconds(row), state))
    return points


def _wet_spans(buckets: Sequence[Row], events: Sequence[Row], start: float, end: float,
               bucket_s: float, gap_after_s: float) -> list[tuple[float, float]]:
    """When each node's plate was wet: its events to the second, its buckets for the rest.

    A node's ``rain_started`` -> ``rain_stopped`` events give the exact span
    (a start with no stop ends ``gap_after_s`` later); a bucket with a wet
    reading that no such span explains (an event lost, a plate that changed
    between events) counts as wet for the whole bucket, and on to the node's
    next wet bucket if that is at most ``gap_after_s`` later.
    """
    by_node: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for tags, row in _rows(events):
        wet = RAIN_EVENTS.get(row["type"])
        if wet is not None:
            by_node[tags["node"]].append((_seconds(row), wet))
    exact: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for node, node_events in by_node.items():
        node_events.sort()
        opened: float | None = None
        for ts, wet in node_events:
            if wet and opened is None:
                opened = ts
            elif not wet and opened is not None:
                exact[node].append((opened, ts))
                opened = None
        if opened is not None:
            exact[node].append((opened, opened + gap_after_s))
    spans = [span for node_spans in exact.values() for span in node_spans]
    wet_buckets: dict[str, list[float]] = defaultdict(list)
    for tags, row in _rows(buckets):
        wet_buckets[tags["node"]].append(_seconds(row))
    for node, starts in wet_buckets.items():
        starts.sort()
        for index, lo in enumerate(starts):
            hi = lo + bucket_s
            if index + 1 < len(starts) and starts[index + 1] - lo <= gap_after_s:
                # Dry buckets are not asked for: a wet one holds until the next
                # wet one of its node, if that comes within the gap threshold.
                hi = max(hi, starts[index + 1])
            if not any(a < lo + bucket_s and lo < b for a, b in exact.get(node, ())):
                spans.append((lo, hi))
    return [(max(lo, start), min(hi, end)) for lo, hi in spans
            if min(hi, end) > max(lo, start)]


def _tray_changes(points: dict[TrayRef, list[tuple[float, str]]], start: float, end: float,
                  hold_s: float) -> tuple[TrayChange, ...]:
    """Each tray's state at the start (when known), then every change, ``unknown`` on silence."""
    changes: list[TrayChange] = []
    for tray, tray_points in points.items():
        states = _states(sorted(tray_points, key=lambda p: p[0]), end, hold_s)
        before = [state for ts, state in states if ts <= start]
        if before and before[-1] != "unknown":
            changes.append(TrayChange(start, tray, before[-1]))
        changes.extend(TrayChange(ts, tray, state) for ts, state in states
                       if start < ts < end)
    changes.sort(key=lambda c: (c.ts, c.tray))
    return tuple(changes)


def _states(points: Sequence[tuple[float, str]], end: float,
            hold_s: float) -> list[tuple[float, str]]:
    """One tray's points (sorted) as changes of state: a point holds at most ``hold_s``."""
    changes: list[tuple[float, str]] = []
    current: str | None = None
    last_ts: float | None = None
    for ts, state in points:
        if last_ts is not None and ts - last_ts > hold_s and current != "unknown":
            current = "unknown"
            changes.append((last_ts + hold_s, current))
        if state != current:
            current = state
            changes.append((ts, state))
        last_ts = ts
    if last_ts is not None and end - last_ts > hold_s and current != "unknown":
        changes.append((last_ts + hold_s, "unknown"))
    return changes


def _merged(spans: Iterable[tuple[float, float]]) -> tuple[Interval, ...]:
    merged: list[list[float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple(Interval(lo, hi) for lo, hi in merged)


def _gaps(climate: Sequence[ClimateSample], start: float, end: float, bucket_s: float,
          gap_after_s: float) -> tuple[Interval, ...]:
    """The spans no climate bucket covers, at least ``gap_after_s`` long.

    A sample covers its bucket; the uncovered span between two buckets is a
    lower bound on the silence between their readings, so one at least
    ``gap_after_s`` long is a silence at least that long.
    """
    gaps: list[Interval] = []
    covered_until = start
    for ts in sorted({s.ts for s in climate}):
        if ts - covered_until >= gap_after_s:
            gaps.append(Interval(covered_until, ts))
        covered_until = max(covered_until, min(ts + bucket_s, end))
    if end - covered_until >= gap_after_s:
        gaps.append(Interval(covered_until, end))
    return tuple(gaps)


def _alerts(series: Sequence[dict[str, object]]) -> tuple[AlertMark, ...]:
    marks = [
        AlertMark(ts=_seconds(row), kind=tags["kind"], state=str(row["state"]),
                  episode=int(row["episode"]),
                  message=str(row["message"] or ""))
        for tags, row in _rows(series)
        if row["state"] is not None and row["episode"] is not None
    ]
    marks.sort(key=lambda m: (m.ts, m.kind))
    return tuple(marks)
