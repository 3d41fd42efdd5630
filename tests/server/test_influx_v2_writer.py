"""InfluxDB 2.x native writes through influxdb-client: the requests it sends, and error mapping.

InfluxDB 2.x is not packaged for Debian, so a local HTTP server on 127.0.0.1
answers as the 2.x API documents (``POST /api/v2/write`` -> 204, errors as
``{"code", "message"}`` JSON; ``/api/v2/buckets``, ``/api/v2/orgs``) and
records every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from secadero.errors import RetryableStorageError
from secadero.server.influx import BatchTooLarge, InfluxV2Writer, WriteRejected
from secadero.settings import InfluxSettings


class FakeInflux2:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.write_status = 204
        self.write_body = b""
        self.buckets: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append({"method": self.command, "path": self.path,
                                       "headers": dict(self.headers), "body": body})
                return body

            def _json(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._record()
                if self.path.startswith("/api/v2/buckets"):
                    self._json(200, {"buckets": outer.buckets})
                elif self.path.startswith("/api/v2/orgs"):
                    self._json(200, {"orgs": [{"id": "0000000000000001", "name": "coop"}]})
                else:
                    self._json(404, {"code": "not found", "message": "path not found"})

            def do_POST(self) -> None:
                body = self._record()
                if self.path.startswith("/api/v2/buckets"):
                    bucket = {**json.loads(body), "id": "00000000000000b1"}
                    outer.buckets.append(bucket)
                    self._json(201, bucket)
                elif self.path.startswith("/api/v2/write"):
                    if outer.write_status == 204:
                        self.send_response(204)
                        self.end_headers()
                    else:
                        self._json(outer.write_status,
                                   {"code": "invalid", "message": outer.write_body.decode()})
                else:
                    self._json(404, {"code": "not found", "message": "path not found"})

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeInflux2]:
    server = FakeInflux2()
    yield server
    server.close()


def _writer(url: str) -> InfluxV2Writer:
    return InfluxV2Writer(InfluxSettings(url=url, api=2, token="s3cret", org="coop",
                                         bucket="secadero", timeout_s=2,
                                         raw_retention_days=90))


def test_write_sends_line_protocol_with_token_org_bucket_and_precision(
        fake: FakeInflux2) -> None:
    writer = _writer(fake.url)
    body = b"climate,node=n1,yard=norte temperature_c=25 1764000000000000"
    writer.write(body)
    writer.close()
    (request,) = [r for r in fake.requests if r["path"].startswith("/api/v2/write")]
    assert request["method"] == "POST"
    path, _, query = request["path"].partition("?")
    assert path == "/api/v2/write"
    assert sorted(query.split("&")) == ["bucket=secadero", "org=coop", "precision=us"]
    assert request["headers"]["Authorization"] == "Token s3cret"
    assert request["body"] == body


def test_prepare_creates_the_bucket_with_the_raw_retention(fake: FakeInflux2) -> None:
    writer = _writer(fake.url)
    writer.prepare()
    writer.prepare()  # idempotent: the bucket now exists
    writer.close()
    created = [r for r in fake.requests if r["method"] == "POST"]
    assert len(created) == 1
    bucket = json.loads(created[0]["body"])
    assert bucket["name"] == "secadero"
    assert bucket["retentionRules"] == [{"type": "expire", "everySeconds": 90 * 86400}]


@pytest.mark.parametrize(("status", "error"), [
    (400, WriteRejected), (422, WriteRejected), (413, BatchTooLarge),
    (500, RetryableStorageError), (503, RetryableStorageError), (401, RetryableStorageError),
])
def test_errors_map_to_what_the_ingest_does_next(fake: FakeInflux2, status: int,
                                                 error: type[Exception]) -> None:
    fake.write_status = status
    fake.write_body = b"failure writing points: field type conflict"
    writer = _writer(fake.url)
    with pytest.raises(error) as raised:
        writer.write(b"climate,node=n1,yard=norte temperature_c=25 1764000000000000")
    writer.close()
    if isinstance(raised.value, WriteRejected):
        assert raised.value.status == status
        assert "field type conflict" in raised.value.body


def test_unreachable_server_is_retryable() -> None:
    from secadero.devservices import free_port

    writer = _writer(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetryableStorageError):
        writer.write(b"climate,node=n1,yard=norte temperature_c=25 1764000000000000")
    writer.close()
