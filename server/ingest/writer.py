"""The writer stage: batches, writes, and every write-failure policy, on the "ingest-writer" thread.

``WritePolicy`` is what one write does when InfluxDB says no:

- 413 (too large): the batch is split in halves, recursively
  (``partial_write.write_splitting``); a single line too large is set aside;
- 400 (refused points): ``partial_write.Rejections`` sets aside exactly what
  InfluxDB refused, from its answer, and writes again only what it may not
  have stored;
- everything refused for good goes to ``set_aside_file`` with the reason.

``BatchWriter`` owns the thread and what no single write can decide:

- 404 (database missing: someone dropped it): ``prepare()`` again, retry;
- transport errors, 5xx, auth (``RetryableStorageError``): retried with
  full-jitter exponential backoff, forever (the messages stay
  unacknowledged, the broker keeps the rest), or until the stop deadline.

After each batch InfluxDB accepted, ``on_stored(batch)`` (the
acknowledgements and liveness stages) runs on this thread and may return
lines to write with the next batch (node points); so does ``on_tick()`` on
every turn of the loop; ``on_taken(n)`` says how many messages left the
queue (``downsample.LateHours`` waits for the ones queued before a mark).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from secadero.errors import PermanentStorageError, RetryableStorageError
from secadero.server.influx import DatabaseMissing, Writer
from secadero.server.ingest.items import NO_LINES, Handoff, Item
from secadero.server.ingest.warn import RateLimitedLog
from secadero.server.metrics import Metrics
from secadero.server.partial_write import Rejections, write_splitting
from secadero.settings import IngestSettings

log = logging.getLogger(__name__)

# Batch write latency buckets (seconds), for the histogram.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Backoff: full jitter (AWS architecture blog) up to this many seconds.
MAX_BACKOFF_S = 30.0


class WritePolicy:
    """One write of lines, with the policies for 413 and 400; retryable errors propagate."""

    def __init__(self, writer: Writer, metrics: Metrics, *, set_aside_file: Path | None = None,
                 clock: Callable[[], float] = time.time,
                 warn: RateLimitedLog | None = None) -> None:
        self._writer = writer
        self._metrics = metrics
        self._set_aside_file = set_aside_file
        self._clock = clock
        self._warn = warn or RateLimitedLog()
        self._rejections = Rejections(writer, self.set_aside, metrics, warn=self._warn.warning)

    def write(self, lines: list[bytes]) -> None:
        """Write, splitting on 413; on 400 set aside exactly what InfluxDB refused.

        InfluxDB 1.x answers 400 "partial write" after storing the valid
        points; ``Rejections`` reads which lines it refused from the answer.
        """
        write_splitting(self._writer, lines, self.set_aside, self._metrics,
                        on_rejected=self._rejections.handle)

    def set_aside(self, line: bytes, reason: str) -> None:
        """InfluxDB refused ``line`` for good: count it, log it, keep it in the set-aside file."""
        self._metrics.inc("points_set_aside_total")
        text = line.decode("utf-8", "replace")
        self._warn.warning("set_aside", "InfluxDB refused a point for good (set aside): %s: %s",
                           reason[:300], text[:300])
        path = self._set_aside_file
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"at": self._clock(), "reason": reason, "line": text})
                          + "\n")
        except OSError as exc:
            log.error("cannot write %s: %s", path, exc)


class BatchWriter:
    """The writer thread: takes batches from the handoff, writes them until InfluxDB takes them."""

    def __init__(self, settings: IngestSettings, writer: Writer, handoff: Handoff,
                 policy: WritePolicy, metrics: Metrics, *,
                 on_stored: Callable[[Sequence[Item]], list[bytes]],
                 on_tick: Callable[[], list[bytes]],
                 on_taken: Callable[[int], None] = lambda count: None,
                 rng: random.Random | None = None, warn: RateLimitedLog | None = None) -> None:
        self._settings = settings
        self._writer = writer
        self._handoff = handoff
        self._policy = policy
        self._metrics = metrics
        self._on_stored = on_stored
        self._on_tick = on_tick
        self._on_taken = on_taken
        self._rng = rng or random.Random()
        self._warn = warn or RateLimitedLog()
        metrics.histogram("batch_write_seconds", LATENCY_BUCKETS_S,
                          "time from a batch's first write attempt to InfluxDB's 204")
        # Lines of this stage's own making (node points), written with the next batch.
        self._extra_lines: list[bytes] = []
        self._stopping = threading.Event()
        self._draining = False
        self._drain_deadline = 0.0
        self._prepared = threading.Event()
        self.down_since: float | None = None
        self._last_batch_log = 0.0
        self._batch_log: tuple[int, int] = (0, 0)
        self.thread = threading.Thread(target=self._main, name="ingest-writer", daemon=True)

    # -- the facade's side

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float) -> None:
        """Store what is queued, for up to ``timeout_s``, then end the thread."""
        self._draining = True
        self._drain_deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self._handoff.wake()
        if self.thread.is_alive():
            self.thread.join(timeout_s + 5)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_prepared(self, timeout_s: float) -> bool:
        return self._prepared.wait(timeout_s)

    # -- the thread

    def _main(self) -> None:
        try:
            self._prepare()
            while True:
                batch = self._handoff.take(self._settings.batch_size,
                                           self._settings.flush_interval_s)
                if batch or self._extra_lines:
                    self._store(batch)
                self._on_taken(len(batch))
                self._extra_lines.extend(self._on_tick())
                if self._stopping.is_set() and (not self._handoff or not self._in_time()):
                    break
        except Exception:
            log.exception("ingest writer stopped by an unexpected error")
            raise

    def _in_time(self) -> bool:
        return not self._draining or time.monotonic() < self._drain_deadline

    def _prepare(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._writer.prepare()
                self.down_since = None
                self._prepared.set()
                return
            except RetryableStorageError as exc:
                attempt += 1
                self._influx_down(exc)
                self._stopping.wait(self._backoff_s(attempt))
            except PermanentStorageError as exc:
                # e.g. a write-only user may not create databases: carry on,
                # the writes will say whether the database is there.
                log.warning("could not prepare the database (continuing): %s", exc)
                self._prepared.set()
                return

    def _backoff_s(self, attempt: int) -> float:
        # Full jitter: spreads the retries of many processes.
        return self._rng.uniform(0, min(MAX_BACKOFF_S, 0.2 * 2 ** min(attempt, 10)))

    def _influx_down(self, exc: Exception) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        self._metrics.inc("write_errors_total", kind="retryable")
        self._warn.warning("influx", "InfluxDB write failed, retrying: %s", exc)

    def _store(self, batch: Sequence[Item]) -> None:
        lines = [line for item in batch for line in item.lines]
        extra, self._extra_lines = self._extra_lines, []
        lines.extend(extra)
        started = time.monotonic()
        if lines and not self._write_with_retry(lines):
            self._extra_lines = extra + self._extra_lines
            return  # stopping with InfluxDB down: leave the messages unacknowledged
        self._metrics.observe("batch_write_seconds", time.monotonic() - started)
        self._extra_lines.extend(self._on_stored(batch))
        stored = sum(1 for item in batch if item.lines is not NO_LINES)
        self._metrics.inc("messages_stored_total", stored)
        self._metrics.inc("points_stored_total", len(lines))
        self._log_batch(stored, len(lines), time.monotonic() - started)

    def _write_with_retry(self, lines: list[bytes]) -> bool:
        attempt = 0
        while True:
            try:
                self._policy.write(lines)
                if self.down_since is not None:
                    log.info("InfluxDB writes succeed again after %.0f s",
                             time.monotonic() - self.down_since)
                self.down_since = None
                return True
            except RetryableStorageError as exc:
                attempt += 1
                self._influx_down(exc)
                if isinstance(exc, DatabaseMissing):
                    with contextlib.suppress(RetryableStorageError, PermanentStorageError):
                        self._writer.prepare()
                        log.warning("the database was missing: created it again")
                        continue
                if self._draining and not self._in_time():
                    return False
                delay = self._backoff_s(attempt)
                if self._draining:
                    delay = min(delay, max(0.0, self._drain_deadline - time.monotonic()))
                    time.sleep(delay)
                else:
                    self._stopping.wait(delay)

    def _log_batch(self, messages: int, points: int, seconds: float) -> None:
        # At most one INFO line per 10 s, summing the batches in between.
        total_messages, total_points = self._batch_log
        total_messages += messages
        total_points += points
        now = time.monotonic()
        if now - self._last_batch_log >= 10.0:
            log.info("stored %d messages (%d points); last batch %.0f ms; queue %d",
                     total_messages, total_points, seconds * 1000, len(self._handoff))
            self._last_batch_log = now
            total_messages = total_points = 0
        self._batch_log = (total_messages, total_points)


__all__ = ["LATENCY_BUCKETS_S", "BatchWriter", "WritePolicy"]
