"""The server's HTTP API: login, alerts (acknowledge, close, history), forecasts, batches,
Twilio and Gammu webhooks.

Who may call what (docs/security.md, "HTTP API"): every route but the
webhooks and the acknowledge link needs a staff session (``POST /api/login``;
``Authorization: Bearer <token>`` or the ``secadero_session`` cookie) whose
role may do the route's action (``secadero.server.accounts.allowed``): 401
without a valid session, 403 without the permission. A state-changing request
authenticated by the cookie also needs the session's CSRF value (form field
``csrf`` or header ``X-CSRF-Token``), else 403.

Routes:
- ``POST /api/login`` — JSON ``{"name", "password"}`` or a form (``name``,
  ``password``, ``next``): a session (JSON ``{"token", "name", "role",
  "expires_at", "csrf"}``, and the cookie); a form answers 303 to ``next`` (a
  local path). 401 for a wrong name or password; 429 past the rate limit (per
  client address and per name).
- ``POST /api/logout``; ``GET /api/me`` — ``{"name", "role", "csrf", "expires_at"}``.
- ``GET  /api/alerts/active`` — open episodes (JSON). ``alerts.read``.
- ``GET  /api/alerts/history?yard=&limit=`` — episodes newest first, with
  their notifications. ``alerts.read``.
- ``GET  /api/alerts/{id}`` — one episode. ``alerts.read``.
- ``GET  /alerts/{id}?token=...`` — the page a tap on the push notification
  opens: the alert in plain words and a "Recibido" button (a form that POSTs
  the acknowledge and comes back to the page). The link's token, or a session
  with ``alerts.read``.
- ``GET  /api/forecast`` — per yard: the last good forecast's provider, time
  and age, and the last error. ``yard.read``.
- ``POST /api/alerts/{id}/ack?token=...`` — acknowledge with the signed,
  expiring, single-use token from the push message, or with a session
  (``alerts.ack``). 403 for a bad, expired or used token, 404 for an unknown
  or closed episode, 429 past the rate limit (per address and per account).
- ``POST /api/alerts/{id}/close`` — a supervisor closes a yard alert (rain,
  humidity): reminders stop and the retained alert clears; the episode ends
  silently when the rain does. ``alerts.close``; the session's name is who
  closed it. 404 for an unknown or ended episode, 409 for an alert that is not
  the yard's.
- ``POST /api/twilio/inbound`` — an SMS reply; "OK" or "SI" acknowledges the
  sender's yards. ``POST /api/twilio/status`` — an SMS's delivery status.
  ``POST /api/twilio/call-status`` — how a voice call ended (answered or not).
  All only with a valid ``X-Twilio-Signature``.
- ``/api/batches...`` — the drying batches (server/batches/api.py), when the
  server has a ``BatchService``: ``batches.read`` to read, ``batches.write``
  to change.
- The web app's pages (server/web/pages.py: ``/login``, ``/yard``, ``/alerts``,
  ``/batches``, ``/wall``, ``/static/...``).
- ``POST /api/sms/inbound`` — an SMS the GSM modem received (Gammu SMSD's
  RunOnReceive runs ``secadero alerts --sms-received``), signed with the
  server's secret.

Standard library ``http.server`` (threaded): a handful of requests a day,
no framework needed. Bind it to 127.0.0.1 and publish through a reverse
proxy with TLS (docs/alerts.md).

Metrics (``secadero_api_requests_total``): every answer counted by method,
route pattern (``/api/alerts/{id}/ack``, never the raw path: ids and tokens
would make a series per request) and status; ``secadero_api_rate_limited_total``
by what (login, ack) and bucket (address, name). The serving thread is watched
by ``Health`` as "alert API". The request log never shows a token, password or
CSRF value.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from secadero.server.accounts import AccountStore, Session, allowed
from secadero.server.accounts.ratelimit import RateLimiter
from secadero.server.alerts.store import Episode
from secadero.server.batches import api as batch_api
from secadero.server.metrics import Health, Metrics, Registry
from secadero.server.notifiers.twilio import INBOUND_PATH, STATUS_PATH, valid_signature
from secadero.server.notifiers.twilio_voice import CALL_STATUS_PATH
from secadero.server.web.pages import WebApp

if TYPE_CHECKING:
    from secadero.server.alerts.service import AlertService
    from secadero.server.batches.service import BatchService

log = logging.getLogger(__name__)

_ACK = re.compile(r"/api/alerts/(\d{1,12})/ack")
_CLOSE = re.compile(r"/api/alerts/(\d{1,12})/close")
_ONE = re.compile(r"/api/alerts/(\d{1,12})")
_PAGE = re.compile(r"/alerts/(\d{1,12})")
# What the request log must never show: a query's token, password or CSRF value.
_SECRET_IN_QUERY = re.compile(r"((?:token|password|csrf)=)[^&\s\"]*", re.IGNORECASE)

# The page a worker sees when tapping the push notification: the alert and one button.
PAGE = """<!doctype html>
<html lang="es"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:sans-serif;font-size:1.3em;margin:1em}}
button{{font-size:1.4em;padding:.6em 1.2em}}</style></head>
<body><h1>{title}</h1><p>{message}</p><p><b>{status}</b></p>{form}</body></html>
"""
# The login form, shown again with the error after a wrong password (the web app
# has its own page at its own route; this one answers the form post).
LOGIN_PAGE = """<!doctype html>
<html lang="es"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ingresar / Log in</title></head>
<body><h1>Secadero</h1><p role="alert"><b>{error}</b></p>
<form method="post" action="/api/login">
<input type="hidden" name="next" value="{next}">
<label>Usuario / Name <input name="name" autocomplete="username" value="{name}"></label>
<label>Contraseña / Password <input name="password" type="password"
 autocomplete="current-password"></label>
<button type="submit">Ingresar</button></form></body></html>
"""
SMS_INBOUND_PATH = "/api/sms/inbound"
LOGIN_PATH, LOGOUT_PATH, ME_PATH = "/api/login", "/api/logout", "/api/me"
SESSION_COOKIE = "secadero_session"
ACK_WORDS = frozenset({"OK", "SI", "SÍ", "YES", "RECIBIDO", "LISTO"})
MAX_BODY = 64 * 1024
MAX_FIELD = 1024  # a login name or password longer than this is refused before any work

HELP = {
    "requests_total": ("counter", "HTTP requests answered, by method, route pattern (ids and "
                                  "tokens left out) and status"),
    "rate_limited_total": ("counter", "requests refused by a rate limit (429), by what "
                                      "(login, ack) and bucket (address, name)"),
}
# The route label of a request no route matched (404s, bad request lines).
UNMATCHED = "unmatched"


class BodyTooLarge(Exception):
    """The request's Content-Length is missing a number or above ``MAX_BODY``."""


def episode_json(episode: Episode) -> dict[str, Any]:
    data = asdict(episode)
    data["active"] = episode.active
    return data


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this server (``/x``), else ``default``: a login's
    ``next`` must not send the browser to another site (an open redirect)."""
    if (not target or not target.startswith("/") or target.startswith("//")
            or "\\" in target or any(ord(c) < 0x20 for c in target)):
        return default
    return target


class Guard:
    """The API's rate limits (token buckets) and their count, shared by every request."""

    def __init__(self, *, login_burst: int, login_per_min: float, ack_burst: int,
                 ack_per_min: float, metrics: Metrics) -> None:
        self._buckets = {
            ("login", "address"): RateLimiter(burst=login_burst, per_min=login_per_min),
            ("login", "name"): RateLimiter(burst=login_burst, per_min=login_per_min),
            ("ack", "address"): RateLimiter(burst=ack_burst, per_min=ack_per_min),
            ("ack", "name"): RateLimiter(burst=ack_burst, per_min=ack_per_min),
        }
        self._metrics = metrics

    def allow(self, what: str, now: float, **keys: str | None) -> bool:
        """Take one attempt from each bucket of ``what`` named in ``keys``
        (``address=``, ``name=``); False, counted, if any is empty."""
        refused = False
        for bucket, key in keys.items():
            if key is None:
                continue
            if not self._buckets[(what, bucket)].allow(key, now):
                self._metrics.inc("rate_limited_total", what=what, bucket=bucket)
                refused = True
        return not refused


class ApiServer:
    """Serves the API for one AlertService on host:port (port 0 = any free port).

    ``accounts``: the staff accounts (default: opened from the settings'
    ``[accounts] database``, and closed by ``stop``). ``clock``: the time for
    sessions, links and rate limits (default: the service's clock).
    """

    def __init__(self, service: AlertService, *, host: str = "127.0.0.1", port: int = 0,
                 registry: Registry | None = None, health: Health | None = None,
                 batches: BatchService | None = None, accounts: AccountStore | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.service = service
        self._health = health or Health()
        settings = service.settings.accounts
        self._owns_accounts = accounts is None
        self.accounts = accounts if accounts is not None else AccountStore(
            settings.database, session_ttl_s=settings.session_ttl_h * 3600)
        metrics = (registry or Registry()).part("api", HELP)
        # The web app's pages (server/web/), over the same services.
        self.web = WebApp(service, batches)
        guard = Guard(login_burst=settings.login_burst, login_per_min=settings.login_per_min,
                      ack_burst=settings.ack_burst, ack_per_min=settings.ack_per_min,
                      metrics=metrics)
        # The request handler class bound to this server's parts (fuzz/fuzz_api.py drives
        # it without a socket).
        self.handler_class = handler = type("Handler", (_Handler,), {
            "service": service, "metrics": metrics, "batches": batches,
            "accounts": self.accounts, "guard": guard, "web": self.web,
            "clock": staticmethod(clock or service.clock),
            "trust_forwarded_for": settings.trust_forwarded_for,
            "secure_cookie": service.settings.alerts.public_url.startswith("https://")})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError:
            if self._owns_accounts:
                self.accounts.close()
            self.web.close()
            raise
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
        if self._owns_accounts:
            self.accounts.close()


class _Handler(BaseHTTPRequestHandler):
    service: AlertService
    metrics: Metrics
    accounts: AccountStore
    guard: Guard
    clock: Callable[[], float]
    trust_forwarded_for: bool = False
    secure_cookie: bool = False
    batches: BatchService | None = None  # the batch routes (server/batches/api.py)
    web: WebApp | None = None  # the web app's pages (server/web/pages.py)
    protocol_version = "HTTP/1.1"
    server_version = "secadero"
    # A client that stops sending (a body shorter than its Content-Length, an idle
    # kept-alive connection) loses its connection after this long instead of holding
    # one of the server's threads for ever.
    timeout = 30
    # The matched route's pattern, the ``route`` label of this request's count.
    route = UNMATCHED

    def handle_one_request(self) -> None:
        # A kept-alive connection's next request starts unrouted, unread, unauthenticated.
        self.route = UNMATCHED
        self._body_cache: bytes | None = None
        self._session_looked_up = False
        self._session: Session | None = None
        self._by_cookie = False
        super().handle_one_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        # Every answer passes here: ours, the form's redirect, and http.server's own
        # errors (bad request line, unsupported method), so none goes uncounted.
        method = self.command if self.command in ("GET", "POST") else "other"
        self.metrics.inc("requests_total", method=method, route=self.route, status=str(code))
        super().send_response(code, message)

    def log_message(self, format: str, *args: Any) -> None:
        line = _SECRET_IN_QUERY.sub(r"\1***", format % args)
        log.debug("api %s %s", self.client_address[0], line)

    # ------------------------------------------------------------ for every route

    def client(self) -> str:
        """The client's address for the rate limits (the proxy's X-Forwarded-For entry
        when ``[accounts] trust_forwarded_for``)."""
        if self.trust_forwarded_for:
            forwarded = self.headers.get("X-Forwarded-For", "")
            last = forwarded.rsplit(",", 1)[-1].strip()
            if last:
                return last[:64]
        return self.client_address[0]

    def read_body(self) -> bytes:
        """The request's body, read once (later calls return the same bytes); raises
        ``BodyTooLarge`` for a bad or too large Content-Length (the connection is spent)."""
        if self._body_cache is None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                raise BodyTooLarge
            self._body_cache = self.rfile.read(length)
        return self._body_cache

    def body(self) -> bytes | None:
        """``read_body``, answering 413 itself (then None)."""
        try:
            return self.read_body()
        except BodyTooLarge:
            self._send(413, {"error": f"the body must be 0..{MAX_BODY} bytes (Content-Length)",
                             "field": "body"})
            return None

    def is_form(self) -> bool:
        return self.headers.get("Content-Type", "").startswith(
            "application/x-www-form-urlencoded")

    def form(self) -> dict[str, str]:
        """The body as a form (``a=1&b=2``); {} if not a form or not UTF-8."""
        if not self.is_form():
            return {}
        try:
            return dict(urllib.parse.parse_qsl(self.read_body().decode("utf-8"),
                                               keep_blank_values=True))
        except (UnicodeDecodeError, BodyTooLarge, ValueError):
            return {}

    def session(self) -> Session | None:
        """The caller's live session (Bearer token, else the cookie), or None; answers
        nothing."""
        if self._session_looked_up:
            return self._session
        self._session_looked_up = True
        auth = self.headers.get("Authorization", "")
        token = ""
        if auth.startswith("Bearer "):
            token = auth[len("Bearer "):].strip()
        else:
            token = self._cookie(SESSION_COOKIE)
            self._by_cookie = bool(token)
        self._session = self.accounts.lookup(token, self.clock()) if token else None
        return self._session

    def require(self, action: str) -> Session | None:
        """The session if it may do ``action``; else answers 401 (no valid session) or 403
        (its role may not, or a cookie-authenticated POST without the CSRF value) and
        returns None."""
        if self.command == "POST" and self.body() is None:
            return None  # 413 answered; the body must be read before any other answer
        session = self.session()
        if session is None:
            self._send(401, {"error": "login required"},
                       headers={"WWW-Authenticate": 'Bearer realm="secadero"'})
            return None
        if not allowed(session.role, action):
            log.info("%s (%s) refused %s on %s", session.name, session.role.value, action,
                     self.route)
            self._send(403, {"error": f"the role {session.role.value} may not {action}"})
            return None
        if self.command == "POST" and not self._csrf_ok(session):
            self._send(403, {"error": "missing or wrong CSRF token"})
            return None
        return session

    def _csrf_ok(self, session: Session) -> bool:
        """A cookie comes with every request the browser makes to us, even one another
        site's page caused; only our own pages know the session's CSRF value."""
        if not self._by_cookie:
            return True  # a Bearer token is never sent by a browser on its own
        given = self.headers.get("X-CSRF-Token") or self.form().get("csrf", "")
        return hmac.compare_digest(given.encode(), session.csrf.encode())

    def _cookie(self, name: str) -> str:
        raw = self.headers.get("Cookie")
        if not raw:
            return ""
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(raw)
        except CookieError:
            return ""
        morsel = cookies.get(name)
        return morsel.value if morsel is not None else ""

    def _send(self, status: int, body: Any, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body, ensure_ascii=False).encode() if content_type ==
                "application/json" else str(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(303)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()

    # ------------------------------------------------------------ dispatch

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _guarded(self, serve: Callable[[], None]) -> None:
        """The top of one request: a bug answers 500 (counted, logged with the route, never
        the query) instead of dropping the connection without an answer."""
        try:
            serve()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            log.debug("API: %s %s: the client went away", self.command, self.route)
            self.close_connection = True
        except Exception:
            log.exception("API: %s %s failed", self.command, self.route)
            self.close_connection = True
            with contextlib.suppress(OSError):  # the answer may be half-sent already
                self._send(500, {"error": "internal error (see the server log)"})

    def _get(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if self.batches is not None and batch_api.handles(url.path):
            batch_api.serve(self, self.batches, "GET")
            return
        if self.web is not None and self.web.handles(url.path):
            self.web.serve(self, "GET")
            return
        query = dict(urllib.parse.parse_qsl(url.query))
        store = self.service.store
        if url.path == ME_PATH:
            self.route = url.path
            session = self.session()
            if session is None:
                self._send(401, {"error": "login required"})
            else:
                self._send(200, {"name": session.name, "role": session.role.value,
                                 "csrf": session.csrf, "expires_at": session.expires_at})
        elif url.path == "/api/alerts/active":
            self.route = url.path
            if self.require("alerts.read"):
                self._send(200, [episode_json(e) for e in self.service.open_episodes()])
        elif url.path == "/api/alerts/history":
            self.route = url.path
            if not self.require("alerts.read"):
                return
            try:
                limit = min(max(int(query.get("limit", "50")), 1), 1000)
            except ValueError:
                self._send(400, {"error": "limit must be an integer", "field": "limit"})
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
            if self.require("yard.read"):
                self._send(200, self._forecast())
        elif match := _PAGE.fullmatch(url.path):
            self.route = "/alerts/{id}"
            self._page(int(match.group(1)), query)
        elif match := _ONE.fullmatch(url.path):
            self.route = "/api/alerts/{id}"
            if not self.require("alerts.read"):
                return
            episode = store.episode(int(match.group(1)))
            if episode is None:
                self._send(404, {"error": "no such alert"})
            else:
                self._send(200, episode_json(episode))
        else:
            self._send(404, {"error": "not found"})

    def _post(self) -> None:
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
        elif url.path in (INBOUND_PATH, STATUS_PATH, CALL_STATUS_PATH, SMS_INBOUND_PATH,
                          LOGIN_PATH, LOGOUT_PATH):
            self.route = url.path
        body = self.body()
        if body is None:
            return
        query = dict(urllib.parse.parse_qsl(url.query))
        if ack:
            self._ack(int(ack.group(1)), query)
        elif close:
            self._close(int(close.group(1)))
        elif url.path == LOGIN_PATH:
            self._login(body)
        elif url.path == LOGOUT_PATH:
            self._logout()
        elif url.path in (INBOUND_PATH, STATUS_PATH, CALL_STATUS_PATH):
            self._twilio(url, body)
        elif url.path == SMS_INBOUND_PATH:
            self._sms_inbound(body)
        else:
            self._send(404, {"error": "not found"})

    # ------------------------------------------------------------ accounts

    def _login(self, body: bytes) -> None:
        is_form = self.is_form()
        if is_form:
            fields: Any = self.form()
        else:
            try:
                fields = json.loads(body or b"{}")
            except ValueError:
                self._send(400, {"error": "the body is not JSON", "field": "body"})
                return
            if not isinstance(fields, dict):
                self._send(400, {"error": "the body must be a JSON object", "field": "body"})
                return
        name, password = fields.get("name"), fields.get("password")
        next_path = local_path(fields.get("next") if isinstance(fields.get("next"), str)
                               else None)
        for key, value in (("name", name), ("password", password)):
            if not isinstance(value, str) or not 0 < len(value) <= MAX_FIELD:
                self._send(400, {"error": f"{key} must be a string of 1 to {MAX_FIELD} "
                                          "characters", "field": key})
                return
        assert isinstance(name, str) and isinstance(password, str)
        now = self.clock()
        if not self.guard.allow("login", now, address=self.client(), name=name.lower()):
            log.warning("login as %r from %s refused: too many attempts", name[:40],
                        self.client())
            self._send(429, {"error": "too many login attempts; wait a minute"},
                       headers={"Retry-After": "60"})
            return
        session = self.accounts.login(name, password, now)
        if session is None:
            log.warning("login as %r from %s failed", name[:40], self.client())
            if is_form:
                self._send(401, LOGIN_PAGE.format(
                    error="Usuario o contraseña incorrectos. / Wrong name or password.",
                    next=html.escape(next_path), name=html.escape(name[:40])), "text/html")
            else:
                self._send(401, {"error": "wrong name or password"})
            return
        log.info("%s (%s) logged in from %s", session.name, session.role.value, self.client())
        cookie = {"Set-Cookie": self._session_cookie(session.token,
                                                     int(session.expires_at - now))}
        if is_form:
            self._redirect(next_path, cookie)
        else:
            self._send(200, {"token": session.token, "name": session.name,
                             "role": session.role.value, "expires_at": session.expires_at,
                             "csrf": session.csrf}, headers=cookie)

    def _session_cookie(self, value: str, max_age_s: int) -> str:
        secure = "; Secure" if self.secure_cookie else ""
        return (f"{SESSION_COOKIE}={value}; Max-Age={max(max_age_s, 0)}; Path=/; HttpOnly; "
                f"SameSite=Strict{secure}")

    def _logout(self) -> None:
        session = self.session()
        if session is not None and not self._csrf_ok(session):
            self._send(403, {"error": "missing or wrong CSRF token"})
            return
        if session is not None:
            self.accounts.logout(session.token)
            log.info("%s logged out", session.name)
        cookie = {"Set-Cookie": self._session_cookie("", 0)}
        if self.is_form():
            self._redirect(local_path(self.form().get("next")), cookie)
        else:
            self._send(200, {"logged_out": session is not None}, headers=cookie)

    # ------------------------------------------------------------ alerts

    def _forecast(self) -> list[dict[str, Any]]:
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
        return result

    def _page(self, episode_id: int, query: dict[str, str]) -> None:
        """The alert page: with the link's token (used or not: the page only shows; the
        button's POST spends it), or for a staff session that may read alerts."""
        token = query.get("token", "")
        session = None if token else self.session()
        if session is not None and allowed(session.role, "alerts.read"):
            reason = None
        else:
            reason = (self.service.tokens.check(episode_id, token, self.clock()) if token
                      else "no token")
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
            base = f"{self.service.settings.alerts.public_url}/api/alerts/{episode_id}/ack"
            if token:
                action, hidden = f"{base}?token={urllib.parse.quote(token)}", ""
            else:
                assert session is not None
                action = base
                hidden = (f'<input type="hidden" name="csrf" '
                          f'value="{html.escape(session.csrf)}">')
            form = (f'<form method="post" action="{html.escape(action)}">{hidden}'
                    '<button type="submit">Recibido</button></form>')
        body = PAGE.format(title=f"Tendal {html.escape(episode.yard)}",
                           message=html.escape(episode.message), status=status, form=form)
        self._send(200, body, "text/html")

    def _ack_token(self, query: dict[str, str]) -> str | None:
        """The acknowledge link's token: ``?token=``, or a Bearer value that is one (not a
        session: a session token has no dots)."""
        if query.get("token"):
            return query["token"]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and "." in auth:
            return auth[len("Bearer "):].strip()
        return None

    def _ack(self, episode_id: int, query: dict[str, str]) -> None:
        now = self.clock()
        token = self._ack_token(query)
        if token is None:
            # A staff member logged in: the web app's button, an API client.
            session = self.require("alerts.ack")
            if session is None:
                return
            if not self.guard.allow("ack", now, address=self.client(), name=session.name):
                self._send(429, {"error": "too many acknowledgements; wait a minute"},
                           headers={"Retry-After": "60"})
                return
            by = session.name
        else:
            if not self.guard.allow("ack", now, address=self.client()):
                self._send(429, {"error": "too many acknowledgements; wait a minute"},
                           headers={"Retry-After": "60"})
                return
            tokens = self.service.tokens
            reason = tokens.check(episode_id, token, now)
            if reason is None and not self.service.store.claim_ack_token(
                    token.rsplit(".", 1)[-1], episode_id, tokens.expiry(token), now):
                reason = "already used"
            if reason is not None:
                log.warning("acknowledge of alert %d refused: %s", episode_id, reason)
                self._send(403, {"error": reason})
                return
            by = "push"
        if not self.service.acknowledge(episode_id, by):
            self._send(404, {"error": "no open alert with that id"})
            return
        if self.is_form():
            # The button on the alert page (a browser form): back to the page.
            back = f"{self.service.settings.alerts.public_url}/alerts/{episode_id}"
            if token is not None:
                back += f"?token={urllib.parse.quote(token)}"
            self._redirect(back)
            return
        self._send(200, {"acknowledged": episode_id, "by": by})

    def _close(self, episode_id: int) -> None:
        session = self.require("alerts.close")
        if session is None:
            return
        episode = self.service.close(episode_id, session.name)
        if episode is None:
            self._send(404, {"error": "no open alert with that id"})
        elif "closed_at" not in episode.details:
            self._send(409, {"error": f"a {episode.kind} alert is not closed by the yard"})
        else:
            log.info("alert %d closed by %s", episode_id, session.name)
            self._send(200, {"closed": episode_id, "by": episode.details.get("closed_by")})

    # ------------------------------------------------------------ webhooks

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
        log.info("SMS from %s: %r acknowledged %d alerts", sender[:20], word[:20], len(acked))
        return [episode.id or 0 for episode in acked]

    def _twilio(self, url: urllib.parse.SplitResult, body: bytes) -> None:
        notifiers = self.service.settings.notifiers
        # A call's status is signed with the voice account's token (it may be another).
        twilio = notifiers.twilio_voice if url.path == CALL_STATUS_PATH else notifiers.twilio
        if twilio is None or not twilio.auth_token or not twilio.callback_base_url:
            self._send(404, {"error": "Twilio is not configured"})
            return
        try:
            params = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            self._send(400, {"error": "not a UTF-8 form"})
            return
        # Twilio signs the URL it called: our public base URL plus path and query.
        full_url = twilio.callback_base_url.rstrip("/") + url.path + (
            "?" + url.query if url.query else "")
        if not valid_signature(twilio.auth_token, full_url, params,
                               self.headers.get("X-Twilio-Signature")):
            log.warning("Twilio webhook %s with a bad signature from %s", url.path,
                        self.client())
            self._send(403, {"error": "bad signature"})
            return
        form = dict(params)
        if url.path == CALL_STATUS_PATH:
            call = self.service.call_status(form.get("CallSid", ""), form.get("CallStatus", ""),
                                            form.get("AnsweredBy"))
            self._send(200, {"updated": call is not None})
            return
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
