"""The batch routes of the server's HTTP API (JSON), served by ``server/api.py``'s handler.

- ``POST /api/batches`` — start a batch: ``{"id", "yard", "trays": ["node/tray", ...],
  "lot", "member", "fermentation_end", "wet_weight_kg", "notes", "by", "at"}``;
  201 with the batch.
- ``GET  /api/batches?yard=&open=1`` — the batches, oldest first.
- ``GET  /api/batches/{id}?until=`` — the record, its moisture readings, metrics
  and estimate.
- ``POST /api/batches/{id}/moisture`` — ``{"moisture_pct", "at", "by", "tray"}``; 201.
- ``POST /api/batches/{id}/end`` — ``{"at", "final_moisture_pct", "dry_weight_kg", "by"}``.
- ``GET  /api/batches/{id}/report.pdf|report.png?language=es|en&until=`` — the report.
- ``GET  /api/batches/{id}/export.csv|export.json`` — the curve and the metrics.

Who may: ``batches.read`` to read, ``batches.write`` to start, add a
reading or end (``secadero.server.accounts``); the handler's ``require``
answers 401 or 403 before anything is read or changed. ``by`` defaults to
the session's account name.

Times are ISO 8601 (UTC unless they carry an offset) or UNIX seconds; the
checks are ``BatchService``'s, the same as the CLI's. Bad input: 400 with
``{"error", "field"}``; an unknown batch: 404 (``field`` = ``id``); InfluxDB
not answering for the batch's span: 503. Each answer is counted in
``secadero_api_requests_total`` under its route pattern (``/api/batches/{id}/end``).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from secadero.server.batches.model import BatchError, SeriesUnavailable, UnknownBatch
from secadero.server.batches.service import BatchService, batch_json, reading_json, view_json

log = logging.getLogger(__name__)

PREFIX = "/api/batches"
MAX_BODY = 64 * 1024
_ONE = re.compile(r"/api/batches/([^/]{1,100})(?:/([a-z.]{1,20}))?")
# The keys each POST takes (anything else is refused, naming it: a typo is not ignored).
START_KEYS = frozenset({"id", "yard", "trays", "lot", "member", "fermentation_end",
                        "wet_weight_kg", "notes", "by", "at"})
MOISTURE_KEYS = frozenset({"moisture_pct", "at", "by", "tray"})
END_KEYS = frozenset({"at", "final_moisture_pct", "dry_weight_kg", "by"})
FILES = {"report.pdf": "application/pdf", "report.png": "image/png",
         "export.csv": "text/csv; charset=utf-8", "export.json": "application/json"}


def handles(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class _Refused(Exception):
    def __init__(self, status: int, error: str, field: str) -> None:
        super().__init__(error)
        self.status, self.error, self.field = status, error, field


def serve(handler: Any, service: BatchService, method: str) -> None:
    """Answer one request under ``/api/batches`` on ``handler`` (server/api.py's ``_Handler``:
    its ``route`` attribute labels the request's count, set here before any answer)."""
    url = urllib.parse.urlsplit(handler.path)
    query = dict(urllib.parse.parse_qsl(url.query))
    match = _ONE.fullmatch(url.path)
    what = match.group(2) if match else None
    if url.path == PREFIX:
        handler.route = PREFIX
    elif match:
        handler.route = f"{PREFIX}/{{id}}" + (f"/{what}" if what else "")
    # Every batch route passes this one check; it reads a POST's body first (an unread
    # body would be taken for the next request on a kept-alive connection).
    session = handler.require("batches.write" if method == "POST" else "batches.read")
    if session is None:
        return  # answered: 401, 403 or 413
    try:
        body = _body(handler) if method == "POST" else {}
        if method == "POST" and isinstance(body, dict):
            body.setdefault("by", session.name)
        if url.path == PREFIX and method == "POST":
            batch = service.start(**_fields(body, START_KEYS))
            _json(handler, 201, batch_json(batch))
        elif url.path == PREFIX and method == "GET":
            batches = service.list(yard=query.get("yard"),
                                   open_only=query.get("open", "") in ("1", "true", "yes"))
            _json(handler, 200, [batch_json(b) for b in batches])
        elif match and method == "GET" and what is None:
            _json(handler, 200, view_json(service.show(match.group(1),
                                                       until=query.get("until"))))
        elif match and method == "POST" and what == "moisture":
            reading = service.moisture(match.group(1), **_fields(body, MOISTURE_KEYS))
            _json(handler, 201, reading_json(reading))
        elif match and method == "POST" and what == "end":
            batch = service.end(match.group(1), **_fields(body, END_KEYS))
            _json(handler, 200, batch_json(batch))
        elif match and method == "GET" and what in FILES:
            _file(handler, service, match.group(1), what, query)
        else:
            raise _Refused(404, "not found", "path")
    except UnknownBatch as exc:
        _json(handler, 404, {"error": exc.message, "field": exc.field})
    except SeriesUnavailable as exc:
        _json(handler, 503, {"error": exc.message, "field": exc.field})
    except BatchError as exc:
        _json(handler, 400, {"error": exc.message, "field": exc.field})
    except _Refused as exc:
        _json(handler, exc.status, {"error": exc.error, "field": exc.field})
    except Exception:  # the top of one request: a bug answers 500, counted, and is logged
        log.exception("batch API: %s %s failed", method, url.path)
        _json(handler, 500, {"error": "internal error (see the server log)", "field": None})


def _body(handler: Any) -> dict[str, Any]:
    data = handler.read_body()  # already read (and its size checked) by ``require``
    try:
        parsed = json.loads(data or b"{}")
    except ValueError:
        raise _Refused(400, "the body is not JSON", "body") from None
    if not isinstance(parsed, dict):
        raise _Refused(400, "the body must be a JSON object", "body")
    return parsed


def _fields(body: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    for key in body:
        if key not in allowed:
            raise BatchError(str(key)[:40], f"not a field here (fields: "
                                            f"{', '.join(sorted(allowed))})")
    return body


def _file(handler: Any, service: BatchService, batch_id: str, what: str,
          query: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="secadero-batch-") as directory:
        path = Path(directory) / what
        if what.startswith("report."):
            service.report(batch_id, pdf_path=path if what == "report.pdf" else None,
                           png_path=path if what == "report.png" else None,
                           language=query.get("language", "es"), until=query.get("until"))
        else:
            view = service.show(batch_id, until=query.get("until"))
            if what == "export.csv":
                service.write_csv(view, path)
            else:
                path.write_text(json.dumps(service.to_json(view), ensure_ascii=False),
                                encoding="utf-8")
        data = path.read_bytes()
    name = f"{batch_id}-{what}"
    _send(handler, 200, data, FILES[what], {"Content-Disposition":
                                            f'attachment; filename="{name}"'})


def _json(handler: Any, status: int, body: Any) -> None:
    _send(handler, status, json.dumps(body, ensure_ascii=False).encode(),
          "application/json; charset=utf-8")


def _send(handler: Any, status: int, data: bytes, content_type: str,
          headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Cache-Control", "no-store")
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    if handler.close_connection:
        handler.send_header("Connection", "close")  # the client must not send another
    handler.end_headers()
    handler.wfile.write(data)
