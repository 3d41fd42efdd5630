"""A local HTTP server standing in for InfluxDB 2.x (not packaged for Debian), and for
a 1.x ``/write`` when a test must see the request itself (its URL, its headers).

It answers as the 2.x API documents: ``POST /api/v2/write`` -> 204, errors as
``{"code", "message"}`` JSON; ``GET/POST /api/v2/buckets``, ``GET
/api/v2/orgs``. ``POST /write`` answers as 1.x does (204, or ``{"error"}``).
Every request is recorded; ``writes`` is a queue so tests wait for one
instead of sleeping.

``write_replies`` scripts the answers to the next writes, in order: an HTTP
status, or ``RESET`` to reset the connection without answering (a TCP RST:
the transport error a restarting server or a flaky link gives).
"""

from __future__ import annotations

import json
import queue
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

RESET = "reset"


class FakeInflux2:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.writes: queue.Queue[dict[str, Any]] = queue.Queue()
        self.write_status = 204
        self.write_body = b""
        self.write_replies: list[int | str] = []
        self.buckets: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = {"method": self.command, "path": self.path,
                           "headers": dict(self.headers), "body": body}
                outer.requests.append(request)
                return request

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
                request = self._record()
                if self.path.startswith("/api/v2/buckets"):
                    bucket = {**json.loads(request["body"]), "id": "00000000000000b1"}
                    outer.buckets.append(bucket)
                    self._json(201, bucket)
                elif self.path.startswith(("/api/v2/write", "/write")):
                    self._answer_write()
                    outer.writes.put(request)
                else:
                    self._json(404, {"code": "not found", "message": "path not found"})

            def _answer_write(self) -> None:
                reply = outer.write_replies.pop(0) if outer.write_replies else outer.write_status
                if reply == RESET:
                    # SO_LINGER 0: close() sends an RST instead of a FIN.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                elif reply == 204:
                    self.send_response(204)
                    self.end_headers()
                elif self.path.startswith("/write"):
                    self._json(int(reply), {"error": outer.write_body.decode()})
                else:
                    self._json(int(reply), {"code": "invalid",
                                            "message": outer.write_body.decode()})

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def write_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].startswith(("/api/v2/write", "/write"))]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="fake_influx2")
def fake_influx2_fixture() -> Iterator[FakeInflux2]:
    server = FakeInflux2()
    yield server
    server.close()
