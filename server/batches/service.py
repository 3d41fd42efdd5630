"""The batch operations the CLI and the HTTP API share: one validation, one set of errors.

``BatchService`` checks every input (a refusal is a ``BatchError`` naming the
field, counted in ``secadero_batches_refusals_total``), stores the record
(``BatchStore``: one transaction per operation, nothing half-written), and
then, for the dashboards' annotations, queues a ``batch`` point (tags yard,
batch; fields event, moisture_pct, note) through the server's
``PointWriter``. The record is SQLite's: a point InfluxDB did not take does
not undo it (the point writer retries and counts).

Reading a batch (show, report, export) puts the other modules together:
``SeriesReader.read`` (InfluxDB), ``metrics.compute`` and
``metrics.drying_periods`` (pure), ``estimate.estimate`` (pure) and
``report.*``. They are reached through ``Analysis`` so a test can hand in its
own (tests/batches/standins.py).

Which trays exist is InfluxDB's answer (``InfluxTrays``): a tray is known
when a node of the yard has reported it (``tray`` measurement). A tray no
node reports is refused, so a typo does not make a batch whose curve is empty.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from secadero.contract import ID_PATTERN
from secadero.errors import StorageError
from secadero.server.batches.model import (
    Batch,
    BatchError,
    BatchMetrics,
    BatchSeries,
    DryingPeriod,
    DryingSchedule,
    Estimate,
    MoistureReading,
    SeriesUnavailable,
    TrayRef,
    TypicalDay,
)
from secadero.server.batches.store import BatchStore
from secadero.server.influx import InfluxV1Writer
from secadero.server.metrics import Health, Help, Registry
from secadero.settings import InfluxSettings, ServerSettings, YardSettings

if TYPE_CHECKING:
    from secadero.server.batches.series import YardClimate

log = logging.getLogger(__name__)

HELP: Help = {
    "operations_total": ("counter", "Batch operations (start, moisture, end, show, report, "
                                    "export), by outcome: ok, refused"),
    "refusals_total": ("counter", "Batch operations refused for bad input, by operation and "
                                  "the field at fault"),
    "typical_days_total": ("counter", "Yards' typical drying days worked out for the estimate, "
                                      "by outcome: learnt, too_few_days, unavailable (InfluxDB "
                                      "did not answer: the built-in day was used)"),
}
LANGUAGES = ("es", "en")
# A reading or an event this far in the future is a wrong clock or a typo.
FUTURE_SLACK_S = 300.0
MAX_TEXT = {"lot": 100, "member": 200, "notes": 2000, "by": 100}
SOURCE = "batch"  # the point writer's source label
# Typical days kept in memory (one per yard and batch start day).
TYPICAL_DAYS_KEPT = 64


# ---------------------------------------------------------------- collaborators


class PointSink(Protocol):
    """Where the ``batch`` points go: the server's ``PointWriter`` (never waits)."""

    def submit(self, lines: Sequence[str], *, source: str) -> Future[None]: ...


class SeriesSource(Protocol):
    def read(self, batch: Batch, until: float) -> BatchSeries: ...

    def read_yard_climate(self, yard: str, start: float, end: float) -> YardClimate: ...


class TrayDirectory(Protocol):
    def trays_of(self, yard: str, node: str) -> set[str]:
        """The trays the node has reported in that yard."""


@dataclass(frozen=True)
class Analysis:
    """The pure computations and the report writers a batch's reading goes through."""

    compute: Callable[..., BatchMetrics]
    drying_periods: Callable[..., tuple[DryingPeriod, ...]]
    estimate: Callable[..., Estimate]
    to_json: Callable[..., dict[str, Any]]
    write_csv: Callable[..., None]
    render: Callable[..., None]

    @classmethod
    def real(cls) -> Analysis:
        # Imported here, the report on first use: `batch start` needs none of them, and
        # `batch show` (half a second at most, with the process's start) not the report.
        from secadero.server.batches import estimate, metrics

        return cls(compute=metrics.compute, drying_periods=metrics.drying_periods,
                   estimate=estimate.estimate, to_json=_from_report("to_json"),
                   write_csv=_from_report("write_csv"), render=_from_report("render"))


def _from_report(name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        from secadero.server.batches import report

        return getattr(report, name)(*args, **kwargs)

    call.__name__ = name
    return call


class InfluxTrays:
    """Which trays each node has reported, from InfluxDB's tag index (InfluxQL, 1.x API)."""

    def __init__(self, settings: InfluxSettings) -> None:
        self._influx = InfluxV1Writer(settings)
        self._lock = threading.Lock()  # one HTTP connection, threads of the API

    def trays_of(self, yard: str, node: str) -> set[str]:
        statement = (f'SHOW TAG VALUES FROM "tray" WITH KEY = "tray" WHERE "yard" = '
                     f"{_literal(yard)} AND \"node\" = {_literal(node)}")
        with self._lock:
            results = self._influx.query(statement)
        trays = set()
        for result in results:
            for series in result.get("series", []) or []:  # type: ignore[union-attr]
                trays.update(str(value) for _key, value in series["values"])
        return trays

    def close(self) -> None:
        self._influx.close()


def _literal(text: str) -> str:
    """An InfluxQL string literal (ids are validated first; this is the belt to those braces)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class BatchView:
    """A batch read whole, up to ``until``: what show, report and export are made of."""

    batch: Batch
    readings: tuple[MoistureReading, ...]
    series: BatchSeries
    metrics: BatchMetrics
    periods: tuple[DryingPeriod, ...]
    estimate: Estimate
    until: float
    typical_day: TypicalDay | None = None  # the one the estimate was given


@dataclass(frozen=True)
class ExportResult:
    batch: str
    paths: tuple[Path, ...] = ()
    error: str | None = None


def batch_json(batch: Batch) -> dict[str, Any]:
    """A batch record as the API and ``batch list --json`` answer it."""
    data = asdict(batch)
    data["trays"] = [str(t) for t in batch.trays]
    data["open"] = batch.open
    return data


def reading_json(reading: MoistureReading) -> dict[str, Any]:
    data = asdict(reading)
    data["tray"] = str(reading.tray) if reading.tray else None
    return data


def view_json(view: BatchView) -> dict[str, Any]:
    """What show answers: the record, its readings, metrics and estimate (no curve)."""
    return {"batch": batch_json(view.batch),
            "readings": [reading_json(r) for r in view.readings],
            "until": view.until, "metrics": asdict(view.metrics),
            "estimate": asdict(view.estimate),
            "typical_day": None if view.typical_day is None else asdict(view.typical_day)}


# ---------------------------------------------------------------- the service


class BatchService:
    """The batch operations, for one server's settings (the CLI's and the API's)."""

    def __init__(self, settings: ServerSettings, *, store: BatchStore, trays: TrayDirectory,
                 series: SeriesSource | None = None, analysis: Analysis | None = None,
                 points: PointSink | None = None, clock: Callable[[], float] = time.time,
                 registry: Registry | None = None, health: Health | None = None) -> None:
        self.settings = settings
        self.store = store
        self.trays = trays
        self._series = series
        self._analysis = analysis
        self.points = points
        self.clock = clock
        self.metrics = (registry or Registry()).part("batches", HELP)
        self._yards = {yard.id: yard for yard in settings.yards}
        self._lazy = threading.Lock()
        # The typical day of (yard, span): its days are past, so one read serves every
        # show of the batches that started that day (the API's server lives long).
        self._typical: dict[tuple[str, float, float], TypicalDay] = {}
        self._typical_lock = threading.Lock()
        del health  # no thread of its own: the API's and the CLI's threads run it

    @classmethod
    def from_settings(cls, settings: ServerSettings, *, points: PointSink | None = None,
                      store: BatchStore | None = None, registry: Registry | None = None,
                      health: Health | None = None, clock: Callable[[], float] = time.time,
                      ) -> BatchService:
        """The service as the server and the CLI run it: the real store, trays and analysis."""
        return cls(settings, store=store or BatchStore(settings.batches.database),
                   trays=InfluxTrays(settings.influxdb), points=points, clock=clock,
                   registry=registry, health=health)

    def close(self) -> None:
        """Close the store and the InfluxDB connections this service opened."""
        self.store.close()
        for reader in (self.trays, self._series):
            close = getattr(reader, "close", None)
            if close is not None:
                close()

    # Built on first use (under a lock: the API's threads), so `batch start` imports
    # neither the series reader nor the computations.
    @property
    def series(self) -> SeriesSource:
        with self._lazy:
            if self._series is None:
                from secadero.server.batches.series import SeriesReader

                self._series = SeriesReader(self.settings.influxdb,
                                            gap_after_s=self.settings.batches.gap_after_s)
            return self._series

    @property
    def analysis(self) -> Analysis:
        with self._lazy:
            if self._analysis is None:
                self._analysis = Analysis.real()
            return self._analysis

    @contextlib.contextmanager
    def _operation(self, name: str) -> Iterator[None]:
        try:
            yield
        except BatchError as exc:
            self.metrics.inc("operations_total", operation=name, outcome="refused")
            self.metrics.inc("refusals_total", operation=name, field=exc.field)
            log.debug("batch %s refused: %s", name, exc)
            raise
        self.metrics.inc("operations_total", operation=name, outcome="ok")

    # ------------------------------------------------------------ writes

    def start(self, *, id: object = None, yard: object = None, trays: object = None,
              lot: object = "",
              member: object = "", fermentation_end: object = None,
              wet_weight_kg: object = None, notes: object = "", by: object = "",
              at: object = None) -> Batch:
        """Start a batch on its trays (``at``: default now)."""
        with self._operation("start"):
            now = self.clock()
            batch_id = check_id(id, "id")
            yard_settings = self.yard(yard)
            started_at = self._time(at, "at", default=now)
            refs = parse_trays(trays)
            fermented = check_date(fermentation_end, "fermentation_end")
            if fermented is not None and date.fromisoformat(fermented) > _date_of(
                    started_at, yard_settings):
                raise BatchError("fermentation_end", "is after the batch's start")
            batch = Batch(
                id=batch_id, yard=yard_settings.id, trays=refs, started_at=started_at,
                lot=check_text(lot, "lot"), member=check_text(member, "member"),
                fermentation_end=fermented,
                wet_weight_kg=check_weight(wet_weight_kg, "wet_weight_kg"),
                notes=check_text(notes, "notes"), started_by=check_text(by, "by"))
            # Last: the one check that asks InfluxDB, after every local one passed.
            self._check_reported(yard_settings.id, refs)
            stored = self.store.add_batch(batch)
        self._point(stored, "start", started_at, note=stored.notes)
        self._learn_typical_day_ahead(stored, yard_settings)
        return stored

    def _learn_typical_day_ahead(self, batch: Batch, yard: YardSettings) -> None:
        """Learn the yard's typical day now, at the start: its span ends at the start, so
        every show of the batch then finds it kept, and none pays reading four weeks of
        the yard's climate (docs/performance.md). The batch is stored already: whatever
        goes wrong here is logged and left to the first show to try again."""
        try:
            self._typical_day(batch, DryingSchedule(timezone=yard.timezone))
        except Exception:  # the start has succeeded; the first show tries again
            log.exception("batch %s: learning yard %s's typical day at the start",
                          batch.id, batch.yard)

    def moisture(self, batch_id: object, *, moisture_pct: object = None, at: object = None,
                 by: object = "", tray: object = None) -> MoistureReading:
        """Record a meter reading (``at``: default now) of an open batch."""
        with self._operation("moisture"):
            batch = self.store.batch(check_id(batch_id, "id"))
            ts = self._time(at, "at", default=self.clock())
            if ts < batch.started_at:
                raise BatchError("at", "the reading is before the batch's start")
            if not batch.open:
                raise BatchError("at", f"batch {batch.id!r} has ended; no more readings")
            ref = None
            if tray is not None and tray != "":
                (ref,) = parse_trays([tray], field="tray")
                if ref not in batch.trays:
                    raise BatchError("tray", f"{ref} is not one of the batch's trays")
            reading = self.store.add_moisture(MoistureReading(
                batch=batch.id, ts=ts, moisture_pct=check_moisture(moisture_pct, "moisture_pct"),
                by=check_text(by, "by"), tray=ref))
        self._point(batch, "moisture", ts, moisture_pct=reading.moisture_pct,
                    note=f"{reading.tray or ''} {reading.by}".strip())
        return reading

    def end(self, batch_id: object, *, at: object = None, final_moisture_pct: object = None,
            dry_weight_kg: object = None, by: object = "") -> Batch:
        """End a batch (``at``: default now): its trays are free for the next."""
        with self._operation("end"):
            batch = self.store.batch(check_id(batch_id, "id"))
            ended_at = self._time(at, "at", default=self.clock())
            final = (None if final_moisture_pct is None
                     else check_moisture(final_moisture_pct, "final_moisture_pct"))
            ended = self.store.end_batch(batch.id, ended_at=ended_at, final_moisture_pct=final,
                                         dry_weight_kg=check_weight(dry_weight_kg,
                                                                    "dry_weight_kg"),
                                         ended_by=check_text(by, "by"))
        self._point(ended, "end", ended_at, moisture_pct=final)
        return ended

    # ------------------------------------------------------------ reads

    def list(self, *, yard: object = None, open_only: bool = False) -> list[Batch]:
        yard_id = None if yard is None or yard == "" else self.yard(yard).id
        return self.store.batches(yard=yard_id, open_only=open_only)

    def get(self, batch_id: object) -> Batch:
        return self.store.batch(check_id(batch_id, "id"))

    def readings(self, batch_id: object) -> list[MoistureReading]:
        return self.store.readings(check_id(batch_id, "id"))

    def show(self, batch_id: object, *, until: object = None) -> BatchView:
        """The batch with its series, metrics and estimate up to ``until`` (default: its end,
        or now while it is open)."""
        with self._operation("show"):
            return self._view(batch_id, until)

    def report(self, batch_id: object, *, pdf_path: Path | None, png_path: Path | None,
               language: object = "es", until: object = None) -> BatchView:
        """The one-page report, PDF and/or PNG; nothing is left behind if it fails."""
        with self._operation("report"):
            if language not in LANGUAGES:
                raise BatchError("language", f"must be one of {', '.join(LANGUAGES)}")
            if pdf_path is None and png_path is None:
                raise BatchError("format", "ask for a PDF, a PNG or both")
            view = self._view(batch_id, until)
            yard = self._yards[view.batch.yard]
            with _replaced_atomically(pdf_path) as pdf, _replaced_atomically(png_path) as png:
                self.analysis.render(view.batch, view.series, view.metrics, view.readings,
                                     view.estimate, language=language, timezone=yard.timezone,
                                     pdf_path=pdf, png_path=png)
            return view

    def to_json(self, view: BatchView) -> dict[str, Any]:
        """The batch's record, curve and metrics (``report.to_json``), times in the yard's."""
        return self.analysis.to_json(view.batch, view.series, view.metrics, view.readings,
                                     view.estimate, timezone=self._timezone(view.batch))

    def write_csv(self, view: BatchView, path: Path) -> None:
        with _replaced_atomically(path) as temporary:
            assert temporary is not None
            self.analysis.write_csv(temporary, view.batch, view.series, view.metrics,
                                    view.readings, view.estimate,
                                    timezone=self._timezone(view.batch))

    def _timezone(self, batch: Batch) -> str:
        yard = self._yards.get(batch.yard)
        return yard.timezone if yard is not None else "UTC"

    def export(self, batch_ids: Sequence[str], directory: Path, *,
               formats: Iterable[str] = ("csv", "json"),
               progress: Callable[[int, int, ExportResult], None] | None = None,
               ) -> list[ExportResult]:
        """Write ``<id>.csv`` and/or ``<id>.json`` for each batch into ``directory``.

        One batch that cannot be read (unknown, InfluxDB not answering) is
        reported in its result and the others go on; ``progress`` is called
        after each batch with (done, total, result).
        """
        import json

        wanted = tuple(formats)
        for name in wanted:
            if name not in ("csv", "json"):
                raise BatchError("format", f"{name!r}: csv or json")
        if not batch_ids:
            raise BatchError("id", "no batch to export")
        directory.mkdir(parents=True, exist_ok=True)
        results = []
        for done, batch_id in enumerate(batch_ids, start=1):
            try:
                with self._operation("export"):
                    view = self._view(batch_id, None)
                    paths = []
                    if "csv" in wanted:
                        paths.append(directory / f"{view.batch.id}.csv")
                        self.write_csv(view, paths[-1])
                    if "json" in wanted:
                        paths.append(directory / f"{view.batch.id}.json")
                        text = json.dumps(self.to_json(view), ensure_ascii=False, indent=1)
                        with _replaced_atomically(paths[-1]) as temporary:
                            assert temporary is not None
                            temporary.write_text(text + "\n", encoding="utf-8")
                result = ExportResult(batch_id, tuple(paths))
            except BatchError as exc:
                result = ExportResult(batch_id, error=str(exc))
            results.append(result)
            if progress is not None:
                progress(done, len(batch_ids), result)
        return results

    def _view(self, batch_id: object, until: object) -> BatchView:
        batch = self.store.batch(check_id(batch_id, "id"))
        readings = tuple(self.store.readings(batch.id))
        latest = batch.ended_at if batch.ended_at is not None else self.clock()
        end = self._time(until, "until", default=latest)
        if not batch.started_at < end <= latest:
            raise BatchError("until", "must be after the batch's start and not after its end "
                                      "(or now, while it is open)")
        try:
            series = self.series.read(batch, end)
        except SeriesUnavailable:
            raise
        except StorageError as exc:
            raise SeriesUnavailable("until", f"InfluxDB cannot answer for the batch's span "
                                             f"up to {_iso(end)}: {exc}") from exc
        yard = self._yards.get(batch.yard)
        if yard is None:
            raise BatchError("yard", f"yard {batch.yard!r} is no longer in the settings")
        batches = self.settings.batches
        periods = self.analysis.drying_periods(batch, series, batches)
        metrics = self.analysis.compute(batch, series, readings, batches, yard)
        schedule = DryingSchedule(timezone=yard.timezone)
        typical = self._typical_day(batch, schedule)
        learnt_days = float(typical.days) if typical.source == "learnt" else 0.0
        estimate = self.analysis.estimate(
            readings, periods, now=end, target_pct=batches.target_moisture_pct,
            schedule=schedule, typical_day_kpa_h=typical.kpa_h,
            typical_day_days=learnt_days or None)  # None: the built-in day's weight
        # Which typical day it was, in the estimate's details (JSON, CSV and the report).
        estimate = replace(estimate, details={
            **estimate.details, "typical_day_kpa_h": typical.kpa_h,
            "typical_day_sigma": typical.sigma, "typical_day_learnt_days": learnt_days})
        return BatchView(batch, readings, series, metrics, periods, estimate, end, typical)

    def _typical_day(self, batch: Batch, schedule: DryingSchedule) -> TypicalDay:
        """The yard's typical drying day over the ``typical_day_days`` local days before the
        batch's start (server/batches/typical.py); the built-in one, saying why, when they
        are too few or InfluxDB cannot give them. The batch's own days are left out: the
        estimate weighs those itself."""
        from secadero.server.batches import typical

        settings = self.settings.batches
        if settings.typical_day_days == 0:
            return typical.built_in("[batches] typical_day_days = 0")
        since, until = typical.window_days(batch.started_at, schedule,
                                           settings.typical_day_days)
        key = (batch.yard, since, until)
        with self._typical_lock:
            known = self._typical.get(key)
        if known is None:
            known = self.store.typical_day(*key)  # learnt by another process
        if known is not None:
            self._remember(key, known)
            return known
        try:
            climate = self.series.read_yard_climate(batch.yard, since, until)
        except (SeriesUnavailable, StorageError) as exc:
            log.warning("typical day of yard %s: %s", batch.yard, exc)
            self.metrics.inc("typical_days_total", outcome="unavailable")
            return typical.built_in(f"InfluxDB could not give the yard's climate: {exc}",
                                    since=since, until=until)
        learnt = typical.learn(climate.samples, climate.wet, now=batch.started_at,
                               schedule=schedule, days=settings.typical_day_days,
                               bucket_s=climate.bucket_s,
                               max_humidity_pct=settings.drying_max_humidity_pct)
        self.metrics.inc("typical_days_total", outcome="learnt" if learnt.source == "learnt"
                         else "too_few_days")
        self.store.keep_typical_day(batch.yard, learnt)
        self._remember(key, learnt)
        return learnt

    def _remember(self, key: tuple[str, float, float], day: TypicalDay) -> None:
        with self._typical_lock:
            if key not in self._typical and len(self._typical) >= TYPICAL_DAYS_KEPT:
                self._typical.pop(next(iter(self._typical)))  # the oldest
            self._typical[key] = day

    # ------------------------------------------------------------ checks

    def yard(self, value: object) -> YardSettings:
        yard_id = check_id(value, "yard")
        if yard_id not in self._yards:
            raise BatchError("yard", f"no yard {yard_id!r} in the settings (known: "
                                     f"{', '.join(sorted(self._yards)) or 'none'})")
        return self._yards[yard_id]

    def _time(self, value: object, field: str, *, default: float) -> float:
        ts = default if value is None or value == "" else parse_time(value, field)
        if ts > self.clock() + FUTURE_SLACK_S:
            raise BatchError(field, f"{_iso(ts)} is in the future")
        return ts

    def _check_reported(self, yard: str, trays: Sequence[TrayRef]) -> None:
        known: dict[str, set[str]] = {}
        for ref in trays:
            if ref.node not in known:
                try:
                    known[ref.node] = self.trays.trays_of(yard, ref.node)
                except StorageError as exc:
                    raise BatchError("trays", f"cannot ask InfluxDB which trays node "
                                              f"{ref.node!r} reports: {exc}") from exc
            if ref.tray not in known[ref.node]:
                reported = ", ".join(sorted(known[ref.node])) or "none"
                raise BatchError("trays", f"no node reports tray {ref} in yard {yard!r} "
                                          f"(node {ref.node!r} reports: {reported})")

    # ------------------------------------------------------------ points

    def _point(self, batch: Batch, event: str, ts: float, *, moisture_pct: float | None = None,
               note: str = "") -> None:
        if self.points is not None:
            self.points.submit([batch_line(batch, event, ts, moisture_pct=moisture_pct,
                                           note=note)], source=SOURCE)


def batch_line(batch: Batch, event: str, ts: float, *, moisture_pct: float | None = None,
               note: str = "") -> str:
    """The ``batch`` point of one event (start, moisture, end), for dashboard annotations."""
    # Imported here: influxdb-client takes a fifth of a second to import, and
    # `secadero batch show` (which writes no point) must answer in half a second.
    from influxdb_client import Point

    from secadero.server.points import PRECISION

    point = Point("batch").tag("yard", batch.yard).tag("batch", batch.id).field("event", event)
    if moisture_pct is not None:
        point = point.field("moisture_pct", float(moisture_pct))
    if note:
        point = point.field("note", note)
    return point.time(round(ts * 1_000_000), PRECISION).to_line_protocol()


# ---------------------------------------------------------------- input checks (pure)


def check_id(value: object, field: str) -> str:
    if value is None or value == "":
        raise BatchError(field, "required")
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise BatchError(field, f"{str(value)[:40]!r} is not an id: 1-32 of a-z, 0-9 and '-', "
                                "starting with a letter or digit")
    return value


def parse_trays(value: object, *, field: str = "trays") -> tuple[TrayRef, ...]:
    """``["norte-1/t1", ...]`` (or one comma-separated string) as sorted ``TrayRef``s."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise BatchError(field, "name at least one tray as node/tray, e.g. norte-1/t1")
    refs = []
    for item in value:
        if isinstance(item, TrayRef):
            refs.append(item)
            continue
        node, slash, tray = item.partition("/") if isinstance(item, str) else ("", "", "")
        if not slash or not ID_PATTERN.fullmatch(node) or not ID_PATTERN.fullmatch(tray):
            raise BatchError(field, f"{str(item)[:70]!r} is not node/tray (ids of a-z, 0-9, "
                                    "'-'), e.g. norte-1/t1")
        refs.append(TrayRef(node, tray))
    if len(set(refs)) != len(refs):
        raise BatchError(field, "a tray is named twice")
    return tuple(sorted(refs))


_UNIX_SECONDS = re.compile(r"\d{9,11}(\.\d+)?")


def parse_time(value: object, field: str) -> float:
    """UNIX seconds from a number (or its digits) or an ISO 8601 time (UTC unless it has
    an offset)."""
    if isinstance(value, bool):
        raise BatchError(field, "expected a time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise BatchError(field, "expected a time")
        return float(value)
    if isinstance(value, str) and _UNIX_SECONDS.fullmatch(value):
        return float(value)  # a query string's number (?until=1780000000)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise BatchError(field, f"{value[:40]!r} is not an ISO 8601 time, e.g. "
                                    "2026-06-01T08:30-05:00") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise BatchError(field, "expected an ISO 8601 time or UNIX seconds")


def check_date(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str) or len(value) != len("2026-06-01"):
            raise ValueError
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise BatchError(field, f"{str(value)[:40]!r} is not an ISO date (YYYY-MM-DD)") from None


def check_number(value: object, field: str) -> float:
    if value is None or value == "":
        raise BatchError(field, "required")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BatchError(field, f"{value[:40]!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BatchError(field, "expected a number")
    return float(value)


def check_moisture(value: object, field: str) -> float:
    pct = check_number(value, field)
    if not 0 <= pct <= 100:
        raise BatchError(field, f"{pct:g} is outside 0..100 %")
    return pct


def check_weight(value: object, field: str) -> float | None:
    if value is None or value == "":
        return None
    kg = check_number(value, field)
    if kg <= 0:
        raise BatchError(field, f"{kg:g} kg: a weight must be above 0")
    return kg


def check_text(value: object, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BatchError(field, "expected text")
    limit = MAX_TEXT.get(field, 200)
    if len(value) > limit:
        raise BatchError(field, f"longer than {limit} characters")
    return value.strip()


def _date_of(ts: float, yard: YardSettings) -> date:
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo(yard.timezone)).date()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _replaced_atomically(path: Path | None) -> Iterator[Path | None]:
    """A temporary path beside ``path``, renamed over it only if the block succeeds."""
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()

