"""The web app: server-rendered pages for staff on a phone, and the wall view.

Served by the server's HTTP API (``server/api.py`` hands every path this
module ``handles`` to ``WebApp.serve``). Pages:

- ``GET  /login`` — the log-in form; it posts to ``/api/login`` (the accounts'
  route), which answers with the session cookie and a redirect to ``next``.
- ``GET  /yard?yard=`` — the yard now: trays, rain, the next hours' forecast,
  the alert with its acknowledge button, silent nodes. Its script reloads the
  part below the menu from ``GET /yard/now`` every ``POLL_S`` seconds.
- ``GET  /api/yard?yard=`` — the same state as JSON.
- ``POST /alerts/{id}/ack`` — the acknowledge button (``alerts.ack``).
- ``GET  /alerts?yard=`` — active and past episodes: who was told by which
  channel, who acknowledged, how long the trays took to come in.
- ``GET  /batches``, ``POST /batches`` (start), ``GET /batches/{id}``,
  ``POST /batches/{id}/moisture``, ``POST /batches/{id}/end`` — the drying
  batches, through ``BatchService`` (the checks are the CLI's and the API's);
  the report and the CSV are the batch API's own files (``/api/batches/{id}/
  report.pdf``).
- ``GET  /wall?yard=`` — the yard now for a 1920x1080 screen read across the room.
- ``GET  /lang?to=en&next=/yard`` — the language cookie (Spanish by default).
- ``GET  /static/{name}`` — the style sheet, the script and the icon: every
  asset comes from this server (a yard often has no internet).

Who may do what is the accounts' permission table (``allowed(role,
action)``): a page the role may not see answers 403 with a page that says
so; without a session the pages redirect to ``/login?next=...``, the JSON
answers 401. A form that changes something carries the session's CSRF value.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape

from secadero.server.accounts import allowed
from secadero.server.alerts.store import Episode
from secadero.server.batches.model import BatchError, SeriesUnavailable, UnknownBatch
from secadero.server.web import charts
from secadero.server.web.texts import LANGUAGES, text
from secadero.server.web.yard_now import LastStored, YardNow, yard_now, yard_now_json

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
LANGUAGE_COOKIE = "secadero_lang"
# The yard-now page asks for news this often (a phone on the yard's Wi-Fi; a few hundred
# bytes of HTML each time).
POLL_S = 5
MAX_FORM = 16 * 1024
HISTORY_LIMIT = 30
_ACK = re.compile(r"/alerts/(\d{1,12})/ack")
_BATCH = re.compile(r"/batches/([a-z0-9][a-z0-9-]{0,31})(?:/(moisture|end))?")
_STATIC = re.compile(r"/static/([a-z0-9][a-z0-9.-]{0,40})")
PAGES = frozenset({"/", "/login", "/yard", "/yard/now", "/api/yard", "/alerts", "/batches",
                   "/wall", "/lang"})


def handles(path: str) -> bool:
    return (path in PAGES or bool(_ACK.fullmatch(path) or _BATCH.fullmatch(path)
                                  or _STATIC.fullmatch(path)))


@dataclass(frozen=True)
class Request:
    """One request as the pages see it: who, in which language, asking what."""

    path: str
    query: dict[str, str]
    session: Any  # secadero.server.accounts.Session, or None
    language: str

    def t(self, key: str, **values: object) -> str:
        return text(self.language, key, **values)

    def may(self, action: str) -> bool:
        return self.session is not None and allowed(self.session.role, action)


class WebApp:
    """The pages over one server's alert service and batch service."""

    def __init__(self, service: Any, batches: Any | None, *,
                 last_stored: LastStored | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.service = service  # AlertService
        self.batches = batches  # BatchService or None
        self.settings = service.settings
        self.clock = clock or service.clock
        self.last_stored = last_stored if last_stored is not None else LastStored(
            self.settings.influxdb)
        self.yards = {yard.id: yard for yard in self.settings.yards}
        # Per yard, the nodes InfluxDB last said it had (see yard_now).
        self._stored_nodes: dict[str, set[str]] = {}
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(["html"]),
                                     trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["pct"] = _pct

    def close(self) -> None:
        self.last_stored.close()

    handles = staticmethod(handles)

    # ------------------------------------------------------------ dispatch

    def serve(self, handler: Any, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        path = url.path
        handler.route = _route(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        form: dict[str, str] = {}
        if method == "POST":
            form_or_none = _form(handler)
            if form_or_none is None:
                _send(handler, 413, b"form too large", "text/plain")
                return
            form = form_or_none
        if (match := _STATIC.fullmatch(path)) and method == "GET":
            self._static(handler, match.group(1))
            return
        request = Request(path, query, handler.session(), _language(handler, query))
        try:
            self._dispatch(handler, request, method, form)
        except Exception:  # the top of one request: logged, answered 500, counted
            log.exception("web: %s %s failed", method, path)
            self._page(handler, request, 500, "message.html",
                       title=request.t("error.title"), message=request.t("error.text"))

    def _dispatch(self, handler: Any, request: Request, method: str,
                  form: dict[str, str]) -> None:
        path = request.path
        if path == "/lang" and method == "GET":
            self._language(handler, request)
            return
        if path == "/login" and method == "GET":
            if request.session is not None:
                _redirect(handler, _local(request.query.get("next")) or "/yard")
                return
            self._page(handler, request, 200, "login.html", next=_local(
                request.query.get("next")) or "/yard", error=request.query.get("error"))
            return
        if request.session is None:
            if path == "/api/yard":
                _json(handler, 401, {"error": "log in first"})
            elif method == "GET" and path != "/yard/now":
                target = path + ("?" + urllib.parse.urlencode(request.query)
                                 if request.query else "")
                _redirect(handler, "/login?" + urllib.parse.urlencode({"next": target}))
            else:
                _send(handler, 401, b"log in first", "text/plain")
            return
        # Compared as bytes: compare_digest refuses non-ASCII text with a TypeError.
        if method == "POST" and not hmac.compare_digest(
                form.get("csrf", "").encode(), str(request.session.csrf).encode()):
            self._page(handler, request, 403, "message.html",
                       title=request.t("forbidden.title"),
                       message="CSRF: reload the page and try again.")
            return
        if path == "/" and method == "GET":
            _redirect(handler, "/yard")
        elif path in ("/yard", "/wall", "/yard/now", "/api/yard") and method == "GET":
            self._yard(handler, request)
        elif (match := _ACK.fullmatch(path)) and method == "POST":
            self._ack(handler, request, int(match.group(1)), form)
        elif path == "/alerts" and method == "GET":
            self._alerts(handler, request)
        elif path == "/batches" or _BATCH.fullmatch(path):
            self._batches(handler, request, method, form)
        else:
            self._page(handler, request, 404, "message.html", title=request.t("notfound.title"),
                       message=path)

    def _refused(self, handler: Any, request: Request, action: str) -> bool:
        """Answer 403 (a page that says why) unless the session's role may ``action``."""
        if request.may(action):
            return False
        self._page(handler, request, 403, "message.html", title=request.t("forbidden.title"),
                   message=request.t("forbidden.text", role=request.session.role))
        return True

    # ------------------------------------------------------------ pages

    def _yard(self, handler: Any, request: Request) -> None:
        if self._refused(handler, request, "yard.read"):
            return
        yard = self._yard_setting(request)
        state = self.yard_now(yard.id)
        if request.path == "/api/yard":
            _json(handler, 200, yard_now_json(state))
            return
        wall = request.path == "/wall" or request.query.get("wall") == "1"
        if request.path == "/yard/now":
            self._render(handler, request, 200, "yard_now.html", state=state, wall=wall)
        else:
            self._page(handler, request, 200, "wall.html" if wall else "yard.html",
                       state=state, wall=wall, poll_s=POLL_S)

    def yard_now(self, yard: str) -> YardNow:
        settings = self.yards[yard]
        view = self.service.tracker.view(yard)
        heard = {n.node for n in view.nodes}
        # The tracker knows only what it heard since the server started: until every node
        # InfluxDB last knew of (or the yard's areas name) has spoken, the others come from
        # InfluxDB. Once all have, a page load costs InfluxDB nothing.
        stored: list[Any] = []
        if not heard or not self._stored_nodes.get(yard, set()) <= heard \
                or _expects_more(settings, heard):
            stored = self.last_stored.nodes(yard)
            self._stored_nodes[yard] = {n.node for n in stored}
        return yard_now(settings, view, now=self.clock(), alerts=self.settings.alerts,
                        forecast=self.service.forecast_status(yard),
                        episodes=self.service.open_episodes(), stored=stored)

    def _ack(self, handler: Any, request: Request, episode_id: int,
             form: dict[str, str]) -> None:
        if self._refused(handler, request, "alerts.ack"):
            return
        if not self.service.acknowledge(episode_id, request.session.name):
            log.info("web: %s acknowledged alert %d, which is no longer open",
                     request.session.name, episode_id)
        _redirect(handler, _local(form.get("next")) or "/yard")

    def _alerts(self, handler: Any, request: Request) -> None:
        if self._refused(handler, request, "alerts.read"):
            return
        yard = request.query.get("yard") or None
        if yard is not None and yard not in self.yards:
            yard = None
        store = self.service.store
        episodes = store.history(yard=yard, limit=HISTORY_LIMIT)
        rows = [self._episode_row(e) for e in episodes]
        self._page(handler, request, 200, "alerts.html",
                   active=[r for r in rows if r["episode"].active],
                   past=[r for r in rows if not r["episode"].active],
                   can_ack=request.may("alerts.ack"))

    def _episode_row(self, episode: Episode) -> dict[str, Any]:
        notes = self.service.store.notifications(episode_id=episode.id)
        trays_in_min = None
        if episode.acked_by == "trays" and episode.acked_at is not None:
            trays_in_min = (episode.acked_at - episode.raised_at) / 60
        elif episode.kind == "rain":
            # Acknowledged by a person first: the switches' last "retracted" after the raise.
            end = episode.resolved_at if episode.resolved_at is not None else self.clock()
            last_in = self.last_stored.last_retracted(episode.yard, episode.raised_at, end)
            if last_in is not None:
                trays_in_min = (last_in - episode.raised_at) / 60
        yard = self.yards.get(episode.yard)
        return {"episode": episode, "notes": notes,
                "yard_name": yard.name if yard else episode.yard,
                "trays_in_min": None if trays_in_min is None else round(trays_in_min),
                "timezone": yard.timezone if yard else "UTC"}

    def _batches(self, handler: Any, request: Request, method: str,
                 form: dict[str, str]) -> None:
        if self._refused(handler, request, "batches.read"):
            return
        if self.batches is None:
            self._page(handler, request, 404, "message.html",
                       title=request.t("notfound.title"), message="batches")
            return
        match = _BATCH.fullmatch(request.path)
        if method == "POST" and self._refused(handler, request, "batches.write"):
            return
        error: BatchError | None = None
        try:
            if request.path == "/batches" and method == "POST":
                batch = self.batches.start(
                    id=form.get("id", "").strip(), yard=form.get("yard"),
                    trays=form.get("trays_list") or ",".join(
                        v for k, v in form.items() if k.startswith("tray:")),
                    lot=form.get("lot", ""), member=form.get("member", ""),
                    wet_weight_kg=_number(form.get("wet_weight_kg")),
                    fermentation_end=form.get("fermentation_end") or None,
                    notes=form.get("notes", ""), by=request.session.name)
                _redirect(handler, f"/batches/{batch.id}")
                return
            if match and method == "POST" and match.group(2) == "moisture":
                self.batches.moisture(match.group(1),
                                      moisture_pct=_number(form.get("moisture_pct")),
                                      tray=form.get("tray") or None, by=request.session.name)
                _redirect(handler, f"/batches/{match.group(1)}")
                return
            if match and method == "POST" and match.group(2) == "end":
                self.batches.end(match.group(1),
                                 final_moisture_pct=_number(form.get("final_moisture_pct")),
                                 dry_weight_kg=_number(form.get("dry_weight_kg")),
                                 by=request.session.name)
                _redirect(handler, f"/batches/{match.group(1)}")
                return
        except UnknownBatch:
            self._page(handler, request, 404, "message.html",
                       title=request.t("notfound.title"), message=request.path)
            return
        except BatchError as exc:
            error = exc
        if match and (method == "GET" or match.group(2)):
            self._batch(handler, request, match.group(1), error, form)
        elif request.path == "/batches":
            self._batch_list(handler, request, error, form)
        else:
            self._page(handler, request, 404, "message.html",
                       title=request.t("notfound.title"), message=request.path)

    def _batch_list(self, handler: Any, request: Request, error: BatchError | None,
                    form: dict[str, str]) -> None:
        batches = self.batches.list()
        trays = {yard: [f"{t.node}/{t.tray}" for t in self.yard_now(yard).trays]
                 for yard in self.yards}
        busy = {str(t) for b in batches if b.open for t in b.trays}
        self._page(handler, request, 400 if error else 200, "batches.html",
                   open=[b for b in batches if b.open][::-1],
                   ended=[b for b in batches if not b.open][::-1][:HISTORY_LIMIT],
                   yards=list(self.yards.values()), trays=trays, busy=busy,
                   can_write=request.may("batches.write"), error=error, form=form)

    def _batch(self, handler: Any, request: Request, batch_id: str, error: BatchError | None,
               form: dict[str, str]) -> None:
        try:
            batch = self.batches.get(batch_id)
        except UnknownBatch:
            self._page(handler, request, 404, "message.html",
                       title=request.t("notfound.title"), message=batch_id)
            return
        view, unavailable = None, False
        try:
            view = self.batches.show(batch_id)
        except SeriesUnavailable:
            unavailable = True
        timezone = self.yards[batch.yard].timezone if batch.yard in self.yards else "UTC"
        svg = charts.batch_curve(view, timezone, request.language) if view else None
        self._page(handler, request, 400 if error else 200, "batch.html", batch=batch,
                   view=view, readings=self.batches.readings(batch_id),
                   unavailable=unavailable, svg=svg, timezone=timezone, error=error,
                   form=form, can_write=request.may("batches.write"))

    def _language(self, handler: Any, request: Request) -> None:
        language = request.query.get("to", "es")
        if language not in LANGUAGES:
            language = "es"
        handler.send_response(303)
        handler.send_header("Location", _local(request.query.get("next")) or "/yard")
        handler.send_header("Set-Cookie", f"{LANGUAGE_COOKIE}={language}; Path=/; "
                                          "Max-Age=31536000; SameSite=Lax")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _static(self, handler: Any, name: str) -> None:
        path = STATIC / name
        if not path.is_file():
            _send(handler, 404, b"not found", "text/plain")
            return
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
            kind += "; charset=utf-8"
        _send(handler, 200, path.read_bytes(), kind, cache="public, max-age=3600")

    # ------------------------------------------------------------ rendering

    def _yard_setting(self, request: Request) -> Any:
        yard = request.query.get("yard")
        return self.yards.get(yard or "", next(iter(self.yards.values())))

    def _render(self, handler: Any, request: Request, status: int, template: str,
                **values: Any) -> None:
        body = self.templates.get_template(template).render(
            t=request.t, lang=request.language, session=request.session, may=request.may,
            path=request.path, query=request.query, hhmm=_hhmm, when=_when,
            yards=values.pop("yards", list(self.yards.values())), **values)
        _send(handler, status, body.encode(), "text/html; charset=utf-8")

    def _page(self, handler: Any, request: Request, status: int, template: str,
              **values: Any) -> None:
        self._render(handler, request, status, template, **values)


# ---------------------------------------------------------------- helpers


def _route(path: str) -> str:
    """The route pattern for the request counter (no ids in labels)."""
    if _STATIC.fullmatch(path):
        return "/static/{name}"
    if _ACK.fullmatch(path):
        return "/alerts/{id}/ack"
    if match := _BATCH.fullmatch(path):
        return "/batches/{id}" + (f"/{match.group(2)}" if match.group(2) else "")
    return path


def _expects_more(settings: Any, heard: set[str]) -> bool:
    """Whether the yard's areas name a node the tracker has not heard yet."""
    return any(node not in heard for area in settings.areas for node in area.nodes)


def _language(handler: Any, query: dict[str, str]) -> str:
    if query.get("lang") in LANGUAGES:
        return query["lang"]
    for part in (handler.headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == LANGUAGE_COOKIE and value in LANGUAGES:
            return value
    return "es"


def _local(target: str | None) -> str | None:
    """``target`` if it is a path on this server (never another site: an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


def _number(value: str | None) -> float | str | None:
    """A form's number: None when empty, the float when it reads as one (a comma too: 7,5),
    else the text, which the service refuses naming the field."""
    if value is None or not value.strip():
        return None
    try:
        return float(value.strip().replace(",", "."))
    except ValueError:
        return value


def _form(handler: Any) -> dict[str, str] | None:
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        length = -1
    if not 0 <= length <= MAX_FORM:
        handler.close_connection = True
        return None
    data = handler.rfile.read(length).decode("utf-8", "replace")
    form: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(data, keep_blank_values=True):
        form[key] = value
    return form


def _pct(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f} %"


def _hhmm(ts: float | None, timezone: str) -> str:
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, ZoneInfo(timezone)).strftime("%H:%M")


def _when(ts: float | None, timezone: str) -> str:
    """A local date and time, short: 'dd/mm HH:MM'."""
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, ZoneInfo(timezone)).strftime("%d/%m %H:%M")


def _redirect(handler: Any, location: str) -> None:
    handler.send_response(303)
    handler.send_header("Location", location)
    handler.send_header("Content-Length", "0")
    handler.send_header("Cache-Control", "no-store")
    handler.end_headers()


def _json(handler: Any, status: int, body: Any) -> None:
    _send(handler, status, json.dumps(body, ensure_ascii=False).encode(),
          "application/json; charset=utf-8")


def _send(handler: Any, status: int, data: bytes, content_type: str, *,
          cache: str = "no-store") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Cache-Control", cache)
    # The pages load nothing from anywhere else, and say so to the browser.
    handler.send_header("Content-Security-Policy",
                        "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                        "script-src 'self'; frame-ancestors 'none'")
    handler.send_header("X-Content-Type-Options", "nosniff")
    if handler.close_connection:
        handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(data)

