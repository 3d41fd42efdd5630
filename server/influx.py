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
- ``RetryableStorageError``: down, timeout, 5xx, auth: the same write may
  succeed later.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import urllib.parse
from typing import Protocol

from secadero.errors import PermanentStorageError, RetryableStorageError
from secadero.server.points import PRECISION, PRECISION_PARAM
from secadero.settings import InfluxSettings

log = logging.getLogger(__name__)

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
            raise RetryableStorageError(f"InfluxDB at {self.settings.url}: "
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
        raise RetryableStorageError(f"InfluxDB /write answered {status}: {text}")

    def query(self, statement: str) -> list[dict[str, object]]:
        """Run InfluxQL (POST /query); the statement results, raising on any error."""
        form = urllib.parse.urlencode({"q": statement, "db": self.settings.database}).encode()
        headers = {**self._headers, "Content-Type": "application/x-www-form-urlencoded"}
        status, data = self._request("POST", f"{self._base_path}/query", form, headers)
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
        self._client = InfluxDBClient(url=settings.url, token=settings.token or "",
                                      org=settings.org, timeout=int(settings.timeout_s * 1000),
                                      retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def prepare(self) -> None:
        from influxdb_client.rest import ApiException

        s = self.settings
        try:
            buckets = self._client.buckets_api()
            if buckets.find_bucket_by_name(s.bucket) is None:
                from influxdb_client import BucketRetentionRules

                rules = BucketRetentionRules(type="expire",
                                             every_seconds=s.raw_retention_days * 86400)
                buckets.create_bucket(bucket_name=s.bucket, retention_rules=rules, org=s.org)
        except ApiException as exc:
            raise _v2_error(exc) from exc
        except Exception as exc:  # urllib3 raises its own tree for connection failures
            raise RetryableStorageError(f"InfluxDB at {s.url}: {exc}") from exc

    def write(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException

        try:
            self._write_api.write(bucket=self.settings.bucket, org=self.settings.org,
                                  record=body, write_precision=PRECISION)
        except ApiException as exc:
            raise _v2_error(exc) from exc
        except Exception as exc:  # urllib3 connection and timeout errors
            raise RetryableStorageError(f"InfluxDB at {self.settings.url}: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def _v2_error(exc: Exception) -> Exception:
    status = int(getattr(exc, "status", 0) or 0)
    body = getattr(exc, "body", "") or ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = _error_text(body.encode()) if body else str(exc)
    if status in (400, 422):
        return WriteRejected(status, text)
    if status == 413:
        return BatchTooLarge(f"HTTP 413: {text}")
    return RetryableStorageError(f"InfluxDB answered {status}: {text}")


def make_writer(settings: InfluxSettings) -> Writer:
    return InfluxV2Writer(settings) if settings.api == 2 else InfluxV1Writer(settings)
