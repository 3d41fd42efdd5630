"""Hourly downsampling (InfluxDB 1.x) of the hours the continuous queries did not cover.

The continuous queries of ``continuous_queries()`` (influx.py) compute an
hour when it closes and once more an hour later (``RESAMPLE EVERY 1h FOR
2h``), and never look further back. A reading stored later than that -- a
node emptying its outbox after a Wi-Fi, broker or server outage, or hours
while InfluxDB itself was down -- would stay out of the hourly series that
the years of history are read from. Here the same SELECT ... INTO bodies run
again, limited by ``WHERE time``:

- ``downsample_range()``: one range of whole hours, through
  ``InfluxV1Writer.query()``. ``secadero server downsample`` (``backfill()``)
  recomputes a period for an operator;
- ``LateHours``: the ingest's side. The MQTT thread marks the hour of each
  reading measured too long ago for the continuous queries (one comparison
  per message); the writer thread passes the marked hours on once the
  batches holding those readings are stored; a thread of its own
  downsamples them at most every ``downsample_interval_s`` and at stop,
  over its own connection, so a slow query never holds up writes or acks.
  Hours waiting are kept in ``downsample_pending_file`` across restarts.

Running it again is harmless: a point of the hourly series written again
for the same hour and tags overwrites itself.

InfluxDB 2.x (``api = 2``) has no continuous queries: hourly downsampling
there is a task the operator adds (docs/operations.md); ``LateHours`` does
nothing and ``backfill()`` says so.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from secadero.errors import PermanentStorageError, RetryableStorageError
from secadero.server.influx import (
    CQ_RESAMPLE_FOR_H,
    InfluxV1Writer,
    continuous_queries,
    safe_url,
)
from secadero.server.metrics import Metrics
from secadero.settings import ServerSettings

log = logging.getLogger(__name__)

HOUR_S = 3600
# The hour H of a reading is computed by the continuous queries for the last
# time at H + CQ_RESAMPLE_FOR_H hours. A reading is measured before H + 1 h,
# so one received at most (CQ_RESAMPLE_FOR_H - 1) h after it was measured is
# stored before that last run -- with this margin for the batch on its way to
# InfluxDB. Longer waits in the ingest are InfluxDB outages: see
# LateHours._watch_outages. Marking a reading that did not need it costs one
# more query, never a wrong value.
LATE_MARGIN_S = 300.0
LATE_AFTER_S = (CQ_RESAMPLE_FOR_H - 1) * HOUR_S - LATE_MARGIN_S
# Hours per statement: bounds what InfluxDB holds in memory for one query
# (a day of a yard is a few hundred thousand raw points).
STEP_HOURS = 24
# Queries here are off the ingest's hot path and may cover days of data: a
# longer wait than for a write (timeout_s) before calling InfluxDB unreachable.
QUERY_TIMEOUT_S = 120.0


class QueryRunner(Protocol):
    """What downsampling needs from a store: InfluxQL (``InfluxV1Writer.query``)."""

    def query(self, statement: str) -> list[dict[str, object]]: ...


def hour_of(ts: float) -> int:
    """The hour a UNIX time falls in, as a number of hours since the epoch (UTC)."""
    return int(ts // HOUR_S)


def hour_ranges(hours: Iterable[int], max_hours: int = STEP_HOURS) -> list[tuple[int, int]]:
    """Hour numbers -> ``(start_s, end_s)`` ranges of consecutive hours, at most ``max_hours``.

    ``[5, 3, 4, 9]`` (hours since the epoch) -> ``[(3 h, 6 h), (9 h, 10 h)]`` in seconds.
    """
    ranges: list[tuple[int, int]] = []
    for hour in sorted(set(hours)):
        if ranges and hour == ranges[-1][1] and ranges[-1][1] - ranges[-1][0] < max_hours:
            ranges[-1] = (ranges[-1][0], hour + 1)
        else:
            ranges.append((hour, hour + 1))
    return [(start * HOUR_S, end * HOUR_S) for start, end in ranges]


def rfc3339(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def readable(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%d %H:%M")


def downsample_statements(database: str, start_s: int, end_s: int) -> dict[str, str]:
    """The continuous queries' SELECT ... INTO bodies, limited to ``[start_s, end_s)``.

    Derived from ``continuous_queries()`` so the two never differ: the same
    selection and grouping (``GROUP BY time(1h), *`` keeps every tag), with
    a time range added before ``GROUP BY``.
    """
    if start_s % HOUR_S or end_s % HOUR_S or end_s <= start_s:
        raise ValueError(f"not a range of whole hours: {start_s} to {end_s}")
    where = f" WHERE time >= '{rfc3339(start_s)}' AND time < '{rfc3339(end_s)}'"
    statements: dict[str, str] = {}
    for name, select in continuous_queries(database).items():
        head, group_by, tail = select.rpartition(" GROUP BY time(1h)")
        if not group_by or " WHERE " in head:
            raise ValueError(f"{name}: no place for a time range in {select!r}")
        statements[name] = head + where + group_by + tail
    return statements


def downsample_range(runner: QueryRunner, database: str, start_s: int,
                     end_s: int) -> dict[str, int]:
    """Downsample ``[start_s, end_s)``: hourly points written, by continuous query name.

    Raises ``RetryableStorageError`` (InfluxDB down, timeout, 5xx) or
    ``PermanentStorageError`` (InfluxDB refused the statement) from
    ``runner.query()``; the queries before the failing one are done.
    """
    written: dict[str, int] = {}
    for name, statement in downsample_statements(database, start_s, end_s).items():
        try:
            written[name] = _written(runner.query(statement))
        except PermanentStorageError as exc:
            # query() puts the whole statement first; the reason is what people need.
            raise PermanentStorageError(
                f"{name}: {str(exc).removeprefix(statement + ': ')}") from exc
    return written


def _written(results: list[dict[str, object]]) -> int:
    # SELECT ... INTO answers one row: time 0, written = points written.
    for result in results:
        for series in result.get("series", []) or []:  # type: ignore[union-attr]
            columns = series["columns"]
            for values in series["values"]:
                return int(values[columns.index("written")])
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _summary(written: dict[str, int]) -> str:
    parts = ", ".join(f"{name.removesuffix('_1h')} {count}" for name, count in written.items())
    return f"{_count(sum(written.values()), 'hourly point')} ({parts})"


# --------------------------------------------------------------------------
# the ingest's side


class LateHours:
    """Hours of readings that came too late for the continuous queries, downsampled again.

    Each thread of the ingest uses it through one method:

    - the MQTT thread calls ``mark(ts)`` for a telemetry or event whose
      ``received_at - ts > after_s``, *after* queueing it: the writer counts
      the queue to know when it is stored;
    - the writer thread calls ``stored(items)`` after each round of its loop
      (``items``: the messages it just stored, 0 when idle);
    - ``start()`` / ``stop()`` run its own thread, which downsamples.

    With InfluxDB 2.x ``after_s`` is infinite and nothing runs.
    """

    def __init__(self, settings: ServerSettings, metrics: Metrics,
                 queue_length: Callable[[], int],
                 clock: Callable[[], float] = time.time) -> None:
        self.enabled = settings.influxdb.api == 1
        self.after_s = LATE_AFTER_S if self.enabled else math.inf
        self._settings = settings
        self._metrics = metrics
        self._queue_length = queue_length
        self._clock = clock
        self._interval_s = settings.ingest.downsample_interval_s
        self._path = settings.ingest.downsample_pending_file
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        # Hour numbers. Marked by the MQTT thread; taken by the writer into
        # ``_waiting`` with the count of messages to store before they are
        # ready; then ``_ready`` for the downsampling thread. ``_pending`` is
        # all of them until done: what the file keeps.
        self._marked: set[int] = set()
        self._waiting: collections.deque[tuple[int, set[int]]] = collections.deque()
        self._ready: set[int] = set()
        self._pending: set[int] = set()
        self._popped = 0  # messages the writer has stored since start (writer thread only)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_errors_seen = 0.0
        self._watched_at = clock()
        if self.enabled:
            self._pending = self._load()
            self._ready = set(self._pending)
            metrics.gauges["downsample_hours_pending"] = lambda: len(self._pending)

    # -- MQTT thread

    def mark(self, ts: float) -> None:
        """A late reading measured at ``ts`` is queued: downsample its hour again once stored."""
        hour = hour_of(ts)
        with self._lock:
            self._marked.add(hour)

    # -- writer thread

    def stored(self, items: int) -> None:
        """``items`` more messages are stored (or set aside): pass on the hours now ready."""
        self._popped += items
        if not (self._marked or self._waiting):
            return  # the usual case: nothing late (read without the lock: next round sees it)
        new = False
        with self._lock:
            if self._marked:
                hours, self._marked = self._marked, set()
                # The queue is read after taking the marks: every marked
                # reading was queued before its mark, so it is in the queue
                # now or already stored. The queue is first in, first out.
                self._waiting.append((self._popped + self._queue_length(), hours))
                new = not hours <= self._pending
                self._pending |= hours
            while self._waiting and self._waiting[0][0] <= self._popped:
                self._ready |= self._waiting.popleft()[1]
        if new:
            # Right after the nodes' acks went out: from now on only this
            # file remembers that these hours need downsampling.
            self._save()

    # -- its own thread

    def start(self) -> LateHours:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._main, name="ingest-downsample",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Downsample the hours ready (unless InfluxDB is down), then stop; waits ``timeout_s``.

        Call after the writer thread has stopped, so every stored batch has
        been passed on. What is not done stays in ``downsample_pending_file``.
        """
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("downsampling did not finish within %g s; %s stay pending (%s)",
                            timeout_s, _count(len(self._pending), "hour"), self._where_kept())

    def _main(self) -> None:
        influx = self._settings.influxdb
        writer = InfluxV1Writer(replace(influx, timeout_s=max(influx.timeout_s,
                                                              QUERY_TIMEOUT_S)))
        try:
            while not self._stopping.wait(self._interval_s):
                self._round_logged(writer)
            influx_up = self._metrics.gauges.get("influx_up")
            if influx_up is None or influx_up():
                self._round_logged(writer)
            elif self._pending:
                log.warning("InfluxDB is down: %s wait to be downsampled again (%s)",
                            _count(len(self._pending), "hour"), self._where_kept())
        finally:
            writer.close()

    def _round_logged(self, runner: QueryRunner) -> None:
        try:
            self.run_once(runner)
        except Exception:  # the top of this thread: never let it stop the ingest's others
            self._metrics.inc("downsample_errors_total", kind="unexpected")
            log.exception("downsampling late hours failed unexpectedly")

    def run_once(self, runner: QueryRunner) -> int:
        """Downsample every hour ready now; the number of hours done."""
        self._watch_outages(self._clock())
        with self._lock:
            hours, self._ready = self._ready, set()
        if not hours:
            return 0
        database = self._settings.influxdb.database
        finished: set[int] = set()
        retry: set[int] = set()
        written: collections.Counter[str] = collections.Counter()
        done = 0
        ranges = hour_ranges(hours)
        for index, (start_s, end_s) in enumerate(ranges):
            span = set(range(start_s // HOUR_S, end_s // HOUR_S))
            try:
                written.update(downsample_range(runner, database, start_s, end_s))
            except RetryableStorageError as exc:
                self._metrics.inc("downsample_errors_total", kind="retryable")
                for later_start, later_end in ranges[index:]:
                    retry.update(range(later_start // HOUR_S, later_end // HOUR_S))
                log.warning("downsampling %d late hours failed, trying again in %g s: %s",
                            len(retry), self._interval_s, exc)
                break
            except PermanentStorageError as exc:
                self._metrics.inc("downsample_errors_total", kind="permanent")
                log.error("InfluxDB refused to downsample %s to %s UTC (%s); once that is "
                          "fixed: secadero server downsample --config <server.toml> --from %s "
                          "--to %s",
                          readable(start_s), readable(end_s), exc, rfc3339(start_s),
                          rfc3339(end_s))
                finished |= span
                continue
            finished |= span
            done += len(span)
        with self._lock:
            self._ready |= retry
            # An hour marked again meanwhile waits for its own round.
            again = self._ready.union(*(marked for _, marked in self._waiting), self._marked)
            self._pending -= finished - again
        self._save()
        if done:
            self._metrics.inc("downsample_runs_total")
            self._metrics.inc("downsample_hours_total", done)
            log.info("downsampled again %d hours with late readings (%s UTC): %s", done,
                     ", ".join(f"{readable(s)} to {readable(e)}" for s, e in ranges),
                     _summary(dict(written)))
        return done

    def _watch_outages(self, now: float) -> None:
        """After failed writes, downsample again the hours around them.

        While InfluxDB is down its continuous queries do not run (1.x does
        not catch up on missed runs), and the readings waiting in the
        ingest's queue are stored late. ``write_errors_total`` moving since
        the last round is the sign: its hours, and the hour before, which a
        missed run would have computed.
        """
        errors = self._metrics.get("write_errors_total", kind="retryable")
        if errors != self._write_errors_seen:
            first, last = hour_of(self._watched_at) - 1, hour_of(now)
            with self._lock:
                self._marked.update(range(first, last + 1))
        self._write_errors_seen = errors
        self._watched_at = now

    # -- the file of pending hours

    def _load(self) -> set[int]:
        path = self._path
        if path is None or not path.exists():
            return set()
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            hours = {hour_of(datetime.fromisoformat(text).timestamp())
                     for text in body["pending_hours"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable %s (recompute recent hours with "
                        "`secadero server downsample` if readings came late): %s", path, exc)
            return set()
        if hours:
            log.info("%d hours from %s wait to be downsampled again", len(hours), path)
        return hours

    def _save(self) -> None:
        path = self._path
        if path is None:
            return
        with self._save_lock:
            with self._lock:
                hours = sorted(self._pending)
            try:
                save_pending(path, hours)
            except OSError as exc:
                log.warning("cannot save %s: %s", path, exc)

    def _where_kept(self) -> str:
        if self._path is None:
            return "not kept: downsample_pending_file is not set; use secadero server downsample"
        return f"kept in {self._path} for the next start"


def save_pending(path: Path, hours: Iterable[int]) -> None:
    """Write the pending hours atomically (temp file + rename), as UTC times people can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pending_hours": [rfc3339(h * HOUR_S) for h in hours]},
                              indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# secadero server downsample


def backfill(settings: ServerSettings, start_s: int, end_s: int, *, out: TextIO,
             config: str = "server.toml", step_hours: int = STEP_HOURS,
             dry_run: bool = False, runner: QueryRunner | None = None,
             now: float | None = None) -> int:
    """Recompute the hourly series of ``[start_s, end_s)`` (whole hours); the exit code.

    Prints what it does to ``out``, one line per step of ``step_hours``.
    Stops at the first error: the steps before it are done, and it prints
    the command that goes on from there.
    """
    influx = settings.influxdb
    if influx.api != 1:
        print("InfluxDB 2.x (api = 2) has no continuous queries: hourly downsampling there "
              "is a task in InfluxDB itself (see docs/operations.md). Nothing done.", file=out)
        return 2
    now = time.time() if now is None else now
    hours = (end_s - start_s) // HOUR_S
    steps = hour_ranges(range(start_s // HOUR_S, end_s // HOUR_S), step_hours)
    print(f'Recomputing the hourly series of database "{influx.database}" on '
          f"{safe_url(influx.url)}: "
          f"{readable(start_s)} to {readable(end_s)} UTC, {_count(hours, 'hour')} in "
          f"{_count(len(steps), 'step')}.", file=out)
    oldest_raw_s = now - influx.raw_retention_days * 86400
    if start_s < oldest_raw_s:
        print(f"Note: raw readings are kept {influx.raw_retention_days} days "
              f"(raw_retention_days): hours before about {readable(oldest_raw_s)} UTC have "
              "none left to recompute from; their hourly values stay as they are.", file=out)
    own = runner is None
    if runner is None:
        runner = InfluxV1Writer(replace(influx, timeout_s=max(influx.timeout_s,
                                                              QUERY_TIMEOUT_S)))
    totals: collections.Counter[str] = collections.Counter()
    try:
        for step_start, step_end in steps:
            label = f"{readable(step_start)} to {readable(step_end)} UTC"
            if dry_run:
                print(f"{label}:", file=out)
                for statement in downsample_statements(influx.database, step_start,
                                                       step_end).values():
                    print(f"  {statement}", file=out)
                continue
            try:
                written = downsample_range(runner, influx.database, step_start, step_end)
            except (RetryableStorageError, PermanentStorageError) as exc:
                print(f"{label}: failed: {exc}", file=out)
                if "not found" in str(exc):  # database / retention policy not found
                    print("Start the server once with this config (secadero server run): it "
                          "creates the database, its policies and continuous queries.",
                          file=out)
                if step_start > start_s:
                    print(f"The hours before {readable(step_start)} UTC are done. To go on "
                          f"from there: secadero server downsample --config {config} --from "
                          f"{rfc3339(step_start)} --to {rfc3339(end_s)}", file=out)
                return 1
            totals.update(written)
            print(f"{label}: {_summary(written)}", file=out)
    finally:
        if own and isinstance(runner, InfluxV1Writer):
            runner.close()
    if dry_run:
        print("Dry run: nothing was sent to InfluxDB.", file=out)
    else:
        print(f"Done: {_count(hours, 'hour')}, {_summary(dict(totals))} written.", file=out)
    return 0
