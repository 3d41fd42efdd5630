"""InfluxDB outputs: a small ``prepare() / write() / close()`` interface, two implementations.

- ``InfluxV1Writer``: the 1.x HTTP API (``/write``, InfluxQL over ``/query``),
  which every InfluxDB since 1.x answers (2.x through its v1 compatibility
  API). One keep-alive connection, no client library in the hot path.
- ``InfluxV2Writer``: InfluxDB 2.x native writes through influxdb-client
  (token, org, bucket).

``write()`` either returns (the server answered 204: the points are durable,
1.x fsyncs its WAL before answering) or raises:

- ``WriteRejected`` (not retryable): the server refused some points for good
  (1.x answers 400 "partial write" *after* storing the valid ones; 2.x 422).
- ``BatchTooLarge`` (not retryable as is): 413, split the batch and retry.
- ``RetryableStorageError``: down, timeout, reset, 5xx: the same write may
  succeed later. ``AuthenticationFailed`` (401/403) is one of them: the
  points wait (the ingest keeps them unacknowledged) while the operator fixes
  the credentials its message names.

Anything else (a ``TypeError``, a client bug) is not a storage error and is
raised as it is, so a bug is never mistaken for "InfluxDB down, retry forever".

Credentials travel in the ``Authorization`` header (1.x ``Basic``, 2.x
``Token``), never in a URL, a log line or an exception's text.

``PointWriter`` is the same output for the parts that must never wait on
InfluxDB (the alert and forecast points, see server/influx_points.py): a
bounded queue and one thread that retries only what may succeed later.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import queue
import random
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from secadero.errors import PermanentStorageError, RetryableStorageError
from secadero.server.metrics import Health, Help, Registry
from secadero.settings import InfluxSettings

log = logging.getLogger(__name__)

# Line protocol times are integer microseconds (server/points.py writes them so):
PRECISION_PARAM = "u"  # what the 1.x /write API calls that
PRECISION_V2 = "us"  # and the 2.x write API (influxdb-client's WritePrecision.US)

RAW_POLICY = "raw"
HOURLY_POLICY = "hourly"
# Each continuous query computes an hour when it closes and again at every
# later hour boundary up to this many hours after its start (RESAMPLE ... FOR),
# so a reading stored up to an hour late still reaches the hourly series by
# itself. Later ones: server/downsample.py.
CQ_RESAMPLE_FOR_H = 2


class WriteRejected(PermanentStorageError):
    """The database refused points of a write for good; ``body`` says why.

    ``server_version`` (``X-Influxdb-Version``, when known) tells whether the
    rest of the batch was stored: 1.x does, 2.1 refused whole batches.
    """

    def __init__(self, status: int, body: str, server_version: str | None = None) -> None:
        self.status = status
        self.body = body
        self.server_version = server_version
        super().__init__(f"HTTP {status}: {body[:300]}")


class BatchTooLarge(PermanentStorageError):
    """413: the request body is over the server's limit; split it."""


class DatabaseMissing(RetryableStorageError):
    """404 "database not found": someone dropped it; ``prepare()`` again, then retry."""


class AuthenticationFailed(RetryableStorageError):
    """401/403: InfluxDB refused the credentials; the message says which setting to fix.

    Retryable like an outage: the points are kept (the ingest does not
    acknowledge them) until the credentials are fixed.
    """


def safe_url(url: str) -> str:
    """``url`` without any ``user:password@``, for log lines and error messages."""
    parsed = urllib.parse.urlsplit(url)
    if "@" not in parsed.netloc:
        return url
    return urllib.parse.urlunsplit(parsed._replace(netloc=parsed.netloc.rpartition("@")[2]))


class Writer(Protocol):
    """What the ingest needs from a time-series store."""

    def prepare(self) -> None:
        """Create the database / retention policies / bucket if missing (idempotent)."""

    def write(self, body: bytes) -> None:
        """Write line protocol (newline-separated, microsecond timestamps)."""

    def close(self) -> None: ...


def quote_identifier(name: str) -> str:
    """An InfluxQL double-quoted identifier (database, policy, query names)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxV1Writer:
    """Writes through the InfluxDB 1.x HTTP API; creates the database and its policies.

    Raw points go to the default retention policy ``raw`` (kept
    ``raw_retention_days``); continuous queries downsample climate, rain and
    node into ``hourly`` (kept ``hourly_retention_days``); hours they missed
    are downsampled by server/downsample.py through ``query()``.
    """

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        parsed = urllib.parse.urlsplit(settings.url)
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or (443 if self._https else 8086)
        self._base_path = parsed.path.rstrip("/")
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.username:
            token = f"{settings.username}:{settings.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self._write_path = f"{self._base_path}/write?" + urllib.parse.urlencode(
            {"db": settings.database, "rp": RAW_POLICY, "precision": PRECISION_PARAM})
        self._conn: http.client.HTTPConnection | None = None
        # What the server says it is (X-Influxdb-Version) on its last answer.
        self.server_version: str | None = None

    # -- HTTP

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.settings.timeout_s)
        return self._conn

    def _request(self, method: str, path: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, bytes]:
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            # The connection is in an unknown state (timeout mid-response,
            # reset): drop it, the next request opens a fresh one.
            self.close()
            raise RetryableStorageError(f"InfluxDB at {safe_url(self.settings.url)}: "
                                        f"{type(exc).__name__}: {exc}") from exc
        if response.will_close:
            self.close()
        self.server_version = response.getheader("X-Influxdb-Version") or self.server_version
        return response.status, data

    def write(self, body: bytes) -> None:
        status, data = self._request("POST", self._write_path, body, self._headers)
        if status == 204:
            return
        text = _error_text(data)
        if status == 400:
            raise WriteRejected(status, text, self.server_version)
        if status == 413:
            raise BatchTooLarge(f"HTTP 413: {text}")
        if status == 404 and "database not found" in text:
            raise DatabaseMissing(f"InfluxDB /write: {text}")
        if status in (401, 403):
            raise self._authentication_failed(status, text)
        raise RetryableStorageError(f"InfluxDB /write answered {status}: {text}")

    def _authentication_failed(self, status: int, text: str) -> AuthenticationFailed:
        where = f"InfluxDB at {safe_url(self.settings.url)} answered {status} ({text})"
        if not self.settings.username:
            return AuthenticationFailed(
                f"{where}: it requires a user: set [influxdb] username and password_env "
                "(or password_file)")
        if status == 403:
            return AuthenticationFailed(
                f"{where}: user {self.settings.username!r} may not write to database "
                f"{self.settings.database!r}: GRANT WRITE ON "
                f"{quote_identifier(self.settings.database)} TO "
                f"{quote_identifier(self.settings.username)}")
        return AuthenticationFailed(
            f"{where}: check [influxdb] username {self.settings.username!r} and its password "
            "(password_env or password_file)")

    def query(self, statement: str, *, epoch: str | None = None) -> list[dict[str, object]]:
        """Run InfluxQL (POST /query); the statement results, raising on any error.

        ``epoch`` (``"u"``, ``"ms"``, ``"s"`` ...): times as integers in that unit
        rather than RFC3339 text (cheaper to parse for long series).
        """
        params = {"q": statement, "db": self.settings.database}
        if epoch is not None:
            params["epoch"] = epoch
        form = urllib.parse.urlencode(params).encode()
        headers = {**self._headers, "Content-Type": "application/x-www-form-urlencoded"}
        status, data = self._request("POST", f"{self._base_path}/query", form, headers)
        if status == 401:
            raise self._authentication_failed(status, _error_text(data))
        if status == 403:
            # Not allowed (e.g. a write-only user's CREATE DATABASE): asking
            # again will not help, and prepare() carries on without it.
            raise PermanentStorageError(f"InfluxDB /query answered 403: {_error_text(data)}")
        if status != 200:
            raise RetryableStorageError(f"InfluxDB /query answered {status}: "
                                        f"{_error_text(data)}")
        results = json.loads(data).get("results", [])
        for result in results:
            if "error" in result:
                raise PermanentStorageError(f"{statement}: {result['error']}")
        return results

    # -- schema

    def prepare(self) -> None:
        s = self.settings
        db = quote_identifier(s.database)
        try:
            # A new database gets "raw" as its only, default policy (no "autogen").
            self.query(f"CREATE DATABASE {db} WITH DURATION {s.raw_retention_days}d "
                       f"REPLICATION 1 NAME {quote_identifier(RAW_POLICY)}")
        except PermanentStorageError as exc:
            if "conflict" not in str(exc):
                raise
            # It exists with other policies: keep it, fix the policies below.
        self._policy(RAW_POLICY, s.raw_retention_days, default=True)
        self._policy(HOURLY_POLICY, s.hourly_retention_days, default=False)
        for name, select in continuous_queries(s.database).items():
            create = (f"CREATE CONTINUOUS QUERY {quote_identifier(name)} ON {db} "
                      f"RESAMPLE EVERY 1h FOR {CQ_RESAMPLE_FOR_H}h BEGIN {select} END")
            try:
                self.query(create)
            except PermanentStorageError as exc:
                # 1.x accepts the same definition again silently and says
                # "already exists" only when the stored one differs (an older
                # version of ours, or changed by hand): a CQ cannot be altered,
                # so replace it, or an upgraded server would keep the old one.
                if "already exists" not in str(exc):
                    raise
                log.warning("continuous query %s on %s had another definition: replacing it",
                            name, db)
                # Processes of a share group starting together may both get
                # here: a second DROP or an identical CREATE is harmless.
                self.query(f"DROP CONTINUOUS QUERY {quote_identifier(name)} ON {db}")
                self.query(create)

    def _policy(self, name: str, days: int, *, default: bool) -> None:
        db = quote_identifier(self.settings.database)
        clause = f"DURATION {days}d REPLICATION 1" + (" DEFAULT" if default else "")
        try:
            self.query(f"CREATE RETENTION POLICY {quote_identifier(name)} ON {db} {clause}")
        except PermanentStorageError as exc:
            if "already exists" not in str(exc):
                raise
            # Keep an operator's changed retention in step with the config.
            self.query(f"ALTER RETENTION POLICY {quote_identifier(name)} ON {db} {clause}")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def continuous_queries(database: str) -> dict[str, str]:
    """The hourly downsampling queries (1.x): name -> SELECT ... INTO."""
    db = quote_identifier(database)
    raw = f"{db}.{quote_identifier(RAW_POLICY)}"
    hourly = f"{db}.{quote_identifier(HOURLY_POLICY)}"
    return {
        "climate_1h": (
            "SELECT mean(temperature_c) AS temperature_c, mean(humidity_pct) AS humidity_pct, "
            "mean(dew_point_c) AS dew_point_c, mean(vpd_kpa) AS vpd_kpa, "
            "min(humidity_pct) AS humidity_min_pct, max(temperature_c) AS temperature_max_c "
            f"INTO {hourly}.climate FROM {raw}.climate GROUP BY time(1h), *"
        ),
        "rain_1h": (
            f"SELECT sum(rain_mm) AS rain_mm INTO {hourly}.rain FROM {raw}.rain "
            "GROUP BY time(1h), *"
        ),
        "node_1h": (
            "SELECT min(online) AS online_min, sum(seq_gap) AS seq_gap, max(buffered) AS "
            f"buffered_max INTO {hourly}.node FROM {raw}.node GROUP BY time(1h), *"
        ),
    }


def _error_text(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    if isinstance(parsed, dict):
        return str(parsed.get("error") or parsed.get("message") or text)
    return text


def _v2_transport_errors() -> tuple[type[Exception], ...]:
    """What influxdb-client lets through when the network, not the request, failed.

    With ``retries=False`` urllib3 re-raises its own error unwrapped
    (``Retry.increment``): ``NewConnectionError`` (refused, name resolution),
    ``ConnectTimeoutError`` / ``ReadTimeoutError`` (both ``TimeoutError``) and
    ``ProtocolError`` (reset, "Connection aborted", "Connection broken" while
    reading). An ``SSLError`` reaches us as an ``ApiException`` with status 0.
    """
    from urllib3.exceptions import NewConnectionError, ProtocolError, TimeoutError

    return (NewConnectionError, TimeoutError, ProtocolError)


class InfluxV2Writer:
    """Native InfluxDB 2.x writes through influxdb-client (token, org, bucket).

    The bucket is created at start-up when missing, with the raw retention.
    Hourly downsampling on 2.x is a task (Flux), left to the operator: see
    docs/operations.md.
    """

    def __init__(self, settings: InfluxSettings) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.settings = settings
        # retries=False: retrying is ours to decide (with back-pressure), the
        # client's own retry would hide a down database behind minutes of waiting.
        # The token goes in the "Authorization: Token" header (the client's way).
        self._client = InfluxDBClient(url=settings.url, token=settings.token or "",
                                      org=settings.org, timeout=int(settings.timeout_s * 1000),
                                      retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._transport_errors = _v2_transport_errors()

    def prepare(self) -> None:
        from influxdb_client import BucketRetentionRules
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.rest import ApiException

        s = self.settings
        try:
            buckets = self._client.buckets_api()
            if buckets.find_bucket_by_name(s.bucket) is None:
                rules = BucketRetentionRules(type="expire",
                                             every_seconds=s.raw_retention_days * 86400)
                buckets.create_bucket(bucket_name=s.bucket, retention_rules=rules, org=s.org)
        except ApiException as exc:
            raise _v2_error(exc, s) from exc
        except InfluxDBError as exc:
            # The client's own finding, e.g. "cannot find organization": a setting to fix.
            raise PermanentStorageError(f"InfluxDB at {safe_url(s.url)}: {exc.message}; "
                                        "check [influxdb] org and token") from exc
        except self._transport_errors as exc:
            raise _v2_transport_error(exc, s) from exc

    def write(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException

        if not isinstance(body, bytes):
            # influxdb-client silently writes nothing for a record type it does
            # not know: a caller's bug must not become a silent drop.
            raise TypeError(f"line protocol must be bytes, got {type(body).__name__}")
        try:
            self._write_api.write(bucket=self.settings.bucket, org=self.settings.org,
                                  record=body, write_precision=PRECISION_V2)
        except ApiException as exc:
            raise _v2_error(exc, self.settings) from exc
        except self._transport_errors as exc:
            raise _v2_transport_error(exc, self.settings) from exc

    def close(self) -> None:
        self._client.close()


def _v2_transport_error(exc: Exception, settings: InfluxSettings) -> RetryableStorageError:
    return RetryableStorageError(f"InfluxDB at {safe_url(settings.url)}: "
                                 f"{type(exc).__name__}: {exc}")


def _v2_error(exc: Exception, settings: InfluxSettings) -> Exception:
    status = int(getattr(exc, "status", 0) or 0)
    body = getattr(exc, "body", "") or ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = _error_text(body.encode()) if body else str(getattr(exc, "reason", "") or exc)
    if status in (400, 422):
        return WriteRejected(status, text)
    if status == 413:
        return BatchTooLarge(f"HTTP 413: {text}")
    if status in (401, 403):
        return AuthenticationFailed(
            f"InfluxDB at {safe_url(settings.url)} answered {status} ({text}): check "
            f"[influxdb] token_env / token_file: the token must be valid and may write to "
            f"bucket {settings.bucket!r} of org {settings.org!r}")
    if status == 0:
        # No HTTP answer. influxdb-client wraps a TLS failure so (a transport
        # error); its other status-0 error is a request it cannot build: a bug.
        if text.startswith("SSLError"):
            return RetryableStorageError(f"InfluxDB at {safe_url(settings.url)}: {text}")
        return RuntimeError(f"influxdb-client could not build the request: {text}")
    return RetryableStorageError(f"InfluxDB answered {status}: {text}")


def make_writer(settings: InfluxSettings) -> Writer:
    return InfluxV2Writer(settings) if settings.api == 2 else InfluxV1Writer(settings)


# -- the background point writer

POINT_WRITER_METRICS: Help = {
    "points_written_total": ("counter", "Points the background writer stored, per source."),
    "points_refused_total": ("counter", "Points InfluxDB refused for good (400, 413, 422), per "
                                        "source; never retried."),
    "points_dropped_total": ("counter", "Points given up, per source and reason: queue_full, "
                                        "error (a bug, see the log), stopped."),
    "write_retries_total": ("counter", "Writes tried again after a transport error, a 5xx or "
                                       "refused credentials, per source."),
    "queued_writes": ("gauge", "Writes waiting in the background writer's queue."),
}


class PointsDropped(RetryableStorageError):
    """The points were not written: the queue was full, or the writer stopped first."""


@dataclass
class _Submission:
    source: str
    lines: Sequence[str]
    done: Future[None] = field(default_factory=Future)


class PointWriter:
    """Writes points in the background for parts that must never wait on InfluxDB.

    The alert cycle and the forecast poller ``submit`` line protocol and go
    on; one thread writes each submission through a ``Writer`` of its own
    (``make_writer``: 1.x or 2.x, as configured). What happens to a submission:

    - written: its future's result is ``None``, counted in ``points_written_total``;
    - refused for good (``PermanentStorageError``: 400, 413, 422): written
      once, never again, counted in ``points_refused_total``;
    - InfluxDB down, slow, 5xx or refusing the credentials
      (``RetryableStorageError``): tried again with backoff until it is
      written or the writer stops. Later submissions wait in the queue,
      which is bounded: when it is full a new one is dropped and counted;
    - anything else (a bug: a ``TypeError`` in a line, in the client) is
      logged with its traceback, dropped and counted, never retried.

    The future ``submit`` returns says which (its exception is the reason),
    for callers that count their own points and for tests.
    """

    def __init__(self, writer: Writer, *, registry: Registry | None = None,
                 health: Health | None = None, max_queued: int = 10_000,
                 backoff_s: float = 0.5, max_backoff_s: float = 60.0) -> None:
        self._writer = writer
        self.metrics = (registry or Registry()).part("influx", POINT_WRITER_METRICS)
        self.health = health or Health()
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._queue: queue.Queue[_Submission | None] = queue.Queue(maxsize=max_queued)
        self.metrics.gauges["queued_writes"] = self._queue.qsize
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="influx-points", daemon=True)
        # When writes started failing (monotonic), for one log line per outage.
        self._failing_since: float | None = None
        self._rng = random.Random()

    @classmethod
    def from_settings(cls, settings: InfluxSettings, *, registry: Registry | None = None,
                      health: Health | None = None, max_queued: int = 10_000,
                      backoff_s: float = 0.5, max_backoff_s: float = 60.0) -> PointWriter:
        """A point writer with a ``Writer`` of its own (1.x or 2.x, as ``api`` says)."""
        return cls(make_writer(settings), registry=registry, health=health,
                   max_queued=max_queued, backoff_s=backoff_s, max_backoff_s=max_backoff_s)

    def submit(self, lines: Sequence[str], *, source: str) -> Future[None]:
        """Queue ``lines`` (line protocol, microsecond timestamps); never blocks, never raises.

        ``source`` names who wrote them (``alert``, ``forecast``) in the metrics.
        """
        submission = _Submission(source, lines)
        if not lines:
            submission.done.set_result(None)
            return submission.done
        if self._stopping.is_set():
            self._give_up(submission, "stopped", PointsDropped("the point writer has stopped"))
            return submission.done
        try:
            self._queue.put_nowait(submission)
        except queue.Full:
            self._give_up(submission, "queue_full", PointsDropped(
                f"{self._queue.maxsize} writes already wait for InfluxDB: dropped"))
        return submission.done

    # -- the thread

    def start(self) -> PointWriter:
        self._thread.start()
        self.health.watch_thread("InfluxDB point writing", self._thread)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (one try each, no more waiting), then close."""
        self._stopping.set()
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):  # full and stuck: the thread is a daemon
                self._queue.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._writer.close()

    def _run(self) -> None:
        while True:
            submission = self._queue.get()
            if submission is None:
                return
            try:
                self._write(submission)
            except Exception as exc:  # the top of the thread: a bug drops one write, not all
                log.exception("writing %s points to InfluxDB failed unexpectedly",
                              submission.source)
                self._give_up(submission, "error", exc)

    def _write(self, submission: _Submission) -> None:
        body = "\n".join(submission.lines).encode()
        attempt = 0
        while True:
            try:
                self._writer.write(body)
            except RetryableStorageError as exc:
                self._failing(exc)
                if self._stopping.is_set():
                    self._give_up(submission, "stopped", exc)
                    return
                attempt += 1
                self.metrics.inc("write_retries_total", source=submission.source)
                self._stopping.wait(self._backoff(attempt))
                continue
            except PermanentStorageError as exc:
                # Counted per submitted line: 1.x stores the good lines of a
                # partial write, but ours are one alert or one yard's forecast.
                self.metrics.inc("points_refused_total", len(submission.lines),
                                 source=submission.source)
                log.warning("InfluxDB refused %d %s points for good (not retried): %s",
                            len(submission.lines), submission.source, exc)
                submission.done.set_exception(exc)
                return
            self._recovered()
            self.metrics.inc("points_written_total", len(submission.lines),
                             source=submission.source)
            submission.done.set_result(None)
            return

    def _backoff(self, attempt: int) -> float:
        # Full jitter, as the ingest does: processes restarted together do not retry in step.
        return self._rng.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** min(attempt, 16)))

    def _failing(self, exc: RetryableStorageError) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            level = logging.ERROR if isinstance(exc, AuthenticationFailed) else logging.WARNING
            log.log(level, "alert/forecast points wait for InfluxDB (retrying): %s", exc)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("InfluxDB stores the alert/forecast points again after %.0f s",
                     time.monotonic() - self._failing_since)
            self._failing_since = None

    def _give_up(self, submission: _Submission, reason: str, exc: BaseException) -> None:
        self.metrics.inc("points_dropped_total", len(submission.lines),
                         source=submission.source, reason=reason)
        if reason != "error":  # a bug was logged with its traceback already
            log.warning("%d %s points not stored (%s): %s", len(submission.lines),
                        submission.source, reason, exc)
        submission.done.set_exception(exc)
