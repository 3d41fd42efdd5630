"""The server's HTTP API for alerts: acknowledge, active alerts, history, Twilio webhooks.

Routes:
- ``GET  /api/alerts/active`` — open episodes (JSON).
- ``GET  /api/alerts/history?yard=&limit=`` — episodes newest first, with
  their notifications.
- ``GET  /api/alerts/{id}`` — one episode.
- ``GET  /alerts/{id}?token=...`` — the page a tap on the push notification
  opens: the alert in plain words and a "Recibido" button (a form that POSTs
  the acknowledge and comes back to the page).
- ``GET  /api/forecast`` — per yard: the last good forecast's provider, time
  and age, and the last error.
- ``POST /api/alerts/{id}/ack?token=...`` — acknowledge with the signed,
  expiring token from the push message (``Authorization: Bearer <token>``
  works too). 403 for a bad or expired token, 404 for an unknown or closed
  episode.
- ``POST /api/alerts/{id}/close?token=...&by=...`` — a supervisor closes a yard
  alert (rain, humidity): reminders stop and the retained alert clears; the
  episode ends silently when the rain does. Same signed token as the
  acknowledge (roles come with the security issue); 404 for an unknown or
  ended episode, 409 for an alert that is not the yard's.
- ``POST /api/twilio/inbound`` — an SMS reply; "OK" or "SI" acknowledges the
  sender's yards. ``POST /api/twilio/status`` — delivery status. Both only
  with a valid ``X-Twilio-Signature``.
- ``/api/batches...`` — the drying batches (server/batches/api.py), when the
  server has a ``BatchService``.
- The web app's pages (server/web/pages.py: ``/login``, ``/yard``, ``/alerts``,
  ``/batches``, ``/wall``, ``/static/...``), when the server has one.
- ``POST /api/sms/inbound`` — an SMS the GSM modem received (Gammu SMSD's
  RunOnReceive runs ``secadero alerts --sms-received``), signed with the
  server's secret.

Standard library ``http.server`` (threaded): a handful of requests a day,
no framework needed. Bind it to 127.0.0.1 and publish through a reverse
proxy with TLS (docs/alerts.md).

Metrics (``secadero_api_requests_total``): every answer counted by method,
route pattern (``/api/alerts/{id}/ack``, never the raw path: ids and tokens
would make a series per request) and status. The serving thread is watched
by ``Health`` as "alert API".
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
import urllib.parse
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from secadero.server.alerts.store import Episode
from secadero.server.batches import api as batch_api
from secadero.server.metrics import Health, Metrics, Registry
from secadero.server.notifiers.twilio import INBOUND_PATH, STATUS_PATH, valid_signature
from secadero.server.web.pages import WebApp

if TYPE_CHECKING:
    from secadero.server.alerts.service import AlertService
    from secadero.server.batches.service import BatchService

log = logging.getLogger(__name__)

_ACK = re.compile(r"/api/alerts/(\d{1,12})/ack")
_CLOSE = re.compile(r"/api/alerts/(\d{1,12})/close")
_ONE = re.compile(r"/api/alerts/(\d{1,12})")
_PAGE = re.compile(r"/alerts/(\d{1,12})")

# The page a worker sees when tapping the push notification: the alert and one button.
PAGE = """<!doctype html>
<html lang="es"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:sans-serif;font-size:1.3em;margin:1em}}
button{{font-size:1.4em;padding:.6em 1.2em}}</style></head>
<body><h1>{title}</h1><p>{message}</p><p><b>{status}</b></p>{form}</body></html>
"""
SMS_INBOUND_PATH = "/api/sms/inbound"
ACK_WORDS = frozenset({"OK", "SI", "SÍ", "YES", "RECIBIDO", "LISTO"})
MAX_BODY = 64 * 1024

HELP = {
    "requests_total": ("counter", "HTTP requests answered, by method, route pattern (ids and "
                                  "tokens left out) and status"),
}
# The route label of a request no route matched (404s, bad request lines).
UNMATCHED = "unmatched"


def episode_json(episode: Episode) -> dict[str, Any]:
    data = asdict(episode)
    data["active"] = episode.active
    return data


class ApiServer:
    """Serves the alert API for one AlertService on host:port (port 0 = any free port)."""

    def __init__(self, service: AlertService, *, host: str = "127.0.0.1", port: int = 0,
                 registry: Registry | None = None, health: Health | None = None,
                 batches: BatchService | None = None) -> None:
        self.service = service
        self._health = health or Health()
        metrics = (registry or Registry()).part("api", HELP)
        # The web app's pages (server/web/), over the same services.
        self.web = WebApp(service, batches)
        handler = type("Handler", (_Handler,), {"service": service, "metrics": metrics,
                                                "batches": batches, "web": self.web})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="alerts-api", daemon=True)

    def start(self) -> ApiServer:
        self._thread.start()
        self._health.watch_thread("alert API", self._thread)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.web.close()


class _Handler(BaseHTTPRequestHandler):
    service: AlertService
    metrics: Metrics
    batches: BatchService | None = None  # the batch routes (server/batches/api.py)
    web: WebApp | None = None  # the web app's pages (server/web/pages.py)
    protocol_version = "HTTP/1.1"
    server_version = "secadero"
    # The matched route's pattern, the ``route`` label of this request's count.
    route = UNMATCHED

    def handle_one_request(self) -> None:
        self.route = UNMATCHED  # a kept-alive connection's next request starts unrouted
        super().handle_one_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        # Every answer passes here: ours, the form's redirect, and http.server's own
        # errors (bad request line, unsupported method), so none goes uncounted.
        method = self.command if self.command in ("GET", "POST") else "other"
        self.metrics.inc("requests_total", method=method, route=self.route, status=str(code))
        super().send_response(code, message)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api %s " + format, self.client_address[0], *args)

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = (json.dumps(body, ensure_ascii=False).encode() if content_type ==
                "application/json" else str(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(413, {"error": "body too large or bad Content-Length"})
            return None
        return self.rfile.read(length)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if self.batches is not None and batch_api.handles(url.path):
            batch_api.serve(self, self.batches, "GET")
            return
        if self.web is not None and self.web.handles(url.path):
            self.web.serve(self, "GET")
            return
        query = dict(urllib.parse.parse_qsl(url.query))
        store = self.service.store
        if url.path == "/api/alerts/active":
            self.route = url.path
            self._send(200, [episode_json(e) for e in self.service.open_episodes()])
        elif url.path == "/api/alerts/history":
            self.route = url.path
            try:
                limit = min(max(int(query.get("limit", "50")), 1), 1000)
            except ValueError:
                self._send(400, {"error": "limit must be an integer"})
                return
            episodes = store.history(yard=query.get("yard"), limit=limit)
            result = []
            for episode in episodes:
                data = episode_json(episode)
                data["notifications"] = [
                    {k: v for k, v in asdict(n).items() if k not in ("episode_id", "yard")}
                    for n in store.notifications(episode_id=episode.id)]
                result.append(data)
            self._send(200, result)
        elif url.path == "/api/forecast":
            self.route = url.path
            now = self.service.clock()
            result = []
            for yard in self.service.tracker.yards():
                status = self.service.forecast_status(yard)
                fetched = status.forecast.fetched_at if status.forecast else None
                result.append({
                    "yard": yard,
                    "provider": status.forecast.provider if status.forecast else None,
                    "fetched_at": fetched,
                    "age_s": round(now - fetched, 1) if fetched is not None else None,
                    "error": status.error})
            self._send(200, result)
        elif match := _PAGE.fullmatch(url.path):
            self.route = "/alerts/{id}"
            self._page(int(match.group(1)), query)
        elif match := _ONE.fullmatch(url.path):
            self.route = "/api/alerts/{id}"
            episode = store.episode(int(match.group(1)))
            if episode is None:
                self._send(404, {"error": "no such alert"})
            else:
                self._send(200, episode_json(episode))
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if self.batches is not None and batch_api.handles(url.path):
            batch_api.serve(self, self.batches, "POST")
            return
        if self.web is not None and self.web.handles(url.path):
            self.web.serve(self, "POST")
            return
        # Routed before the body is read, so a 413 is counted under its route too.
        ack = _ACK.fullmatch(url.path)
        close = _CLOSE.fullmatch(url.path)
        if ack:
            self.route = "/api/alerts/{id}/ack"
        elif close:
            self.route = "/api/alerts/{id}/close"
        elif url.path in (INBOUND_PATH, STATUS_PATH, SMS_INBOUND_PATH):
            self.route = url.path
        body = self._body()
        if body is None:
            return
        if ack:
            self._ack(int(ack.group(1)), dict(urllib.parse.parse_qsl(url.query)))
        elif close:
            self._close(int(close.group(1)), dict(urllib.parse.parse_qsl(url.query)))
        elif url.path in (INBOUND_PATH, STATUS_PATH):
            self._twilio(url, body)
        elif url.path == SMS_INBOUND_PATH:
            self._sms_inbound(body)
        else:
            self._send(404, {"error": "not found"})

    def _page(self, episode_id: int, query: dict[str, str]) -> None:
        token = query.get("token", "")
        reason = self.service.tokens.check(episode_id, token, self.service.clock())
        episode = self.service.store.episode(episode_id) if reason is None else None
        if episode is None:
            body = PAGE.format(title="Alerta", message=html.escape(reason or "no existe"),
                               status="Enlace no valido o vencido.", form="")
            self._send(403 if reason else 404, body, "text/html")
            return
        status = {"raised": "Sin respuesta todavia.",
                  "acknowledged": f"Recibido ({html.escape(episode.acked_by or '')}).",
                  "resolved": "Terminada."}.get(episode.state, episode.state)
        form = ""
        if episode.state == "raised":
            action = (f"{self.service.settings.alerts.public_url}/api/alerts/{episode_id}"
                      f"/ack?token={urllib.parse.quote(token)}")
            form = (f'<form method="post" action="{html.escape(action)}">'
                    '<button type="submit">Recibido</button></form>')
        body = PAGE.format(title=f"Tendal {html.escape(episode.yard)}",
                           message=html.escape(episode.message), status=status, form=form)
        self._send(200, body, "text/html")

    def _token_refused(self, episode_id: int, query: dict[str, str], what: str) -> bool:
        """Check the signed token (query or ``Authorization: Bearer``); answer 403 if bad."""
        token = query.get("token")
        auth = self.headers.get("Authorization", "")
        if not token and auth.startswith("Bearer "):
            token = auth[len("Bearer "):].strip()
        now = self.service.clock()
        reason = self.service.tokens.check(episode_id, token or "", now) if token else "no token"
        if reason is not None:
            log.warning("%s of alert %d refused: %s", what, episode_id, reason)
            self._send(403, {"error": reason})
            return True
        return False

    def _close(self, episode_id: int, query: dict[str, str]) -> None:
        if self._token_refused(episode_id, query, "close"):
            return
        by = query.get("by", "").strip()[:40] or "supervisor"
        episode = self.service.close(episode_id, by)
        if episode is None:
            self._send(404, {"error": "no open alert with that id"})
        elif "closed_at" not in episode.details:
            self._send(409, {"error": f"a {episode.kind} alert is not closed by the yard"})
        else:
            self._send(200, {"closed": episode_id, "by": episode.details.get("closed_by")})

    def _ack(self, episode_id: int, query: dict[str, str]) -> None:
        if self._token_refused(episode_id, query, "acknowledge"):
            return
        token = query.get("token") or self.headers.get(
            "Authorization", "")[len("Bearer "):].strip()
        if not self.service.acknowledge(episode_id, "push"):
            self._send(404, {"error": "no open alert with that id"})
            return
        if self.headers.get("Content-Type", "").startswith(
                "application/x-www-form-urlencoded"):
            # The button on the alert page (a browser form): back to the page.
            self.send_response(303)
            self.send_header("Location", f"{self.service.settings.alerts.public_url}/alerts/"
                                         f"{episode_id}?token={urllib.parse.quote(token or '')}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(200, {"acknowledged": episode_id})

    def _sms_inbound(self, body: bytes) -> None:
        """An SMS the GSM modem received, handed over by Gammu's RunOnReceive hook
        (``secadero alerts --sms-received``), signed with the server's secret."""
        if not self.service.tokens.check_body(body, self.headers.get("X-Secadero-Signature")):
            self._send(403, {"error": "bad signature"})
            return
        try:
            message = json.loads(body)
            sender, text = str(message["from"]), str(message["text"])
        except (ValueError, KeyError, TypeError):
            self._send(400, {"error": 'expected {"from": ..., "text": ...}'})
            return
        self._send(200, {"acknowledged": self._reply(sender, text)})

    def _reply(self, sender: str, text: str) -> list[int]:
        """An SMS reply from a recipient: "OK"/"SI" acknowledges their yards' alerts."""
        word = text.strip().upper().rstrip(".!")
        acked = []
        if word in ACK_WORDS:
            acked = self.service.acknowledge_phone(sender)
        log.info("SMS from %s: %r acknowledged %d alerts", sender, word[:20], len(acked))
        return [episode.id or 0 for episode in acked]

    def _twilio(self, url: urllib.parse.SplitResult, body: bytes) -> None:
        twilio = self.service.settings.notifiers.twilio
        if twilio is None or not twilio.auth_token or not twilio.callback_base_url:
            self._send(404, {"error": "Twilio is not configured"})
            return
        try:
            params = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            self._send(400, {"error": "not UTF-8"})
            return
        # Twilio signs the URL it called: our public base URL plus path and query.
        full_url = twilio.callback_base_url.rstrip("/") + url.path + (
            "?" + url.query if url.query else "")
        if not valid_signature(twilio.auth_token, full_url, params,
                               self.headers.get("X-Twilio-Signature")):
            log.warning("Twilio webhook %s with a bad signature from %s", url.path,
                        self.client_address[0])
            self._send(403, {"error": "bad signature"})
            return
        form = dict(params)
        if url.path == STATUS_PATH:
            note = self.service.store.notification_by_provider_id(form.get("MessageSid", ""))
            if note is not None:
                note.delivery = form.get("MessageStatus")
                if form.get("ErrorCode"):
                    note.error = f"twilio delivery error {form['ErrorCode']}"
                self.service.store.update_notification(note)
            self._send(200, {"updated": note is not None})
            return
        self._reply(form.get("From", ""), form.get("Body", ""))
        # An empty TwiML answer: no reply SMS (each one costs money).
        self._send(200, "<Response></Response>", "text/xml")
