"""Helpers and fixtures for tests/alerts (imported by name; no conftest.py so
nothing shadows tests/conftest.py).

A simulated drying yard for the alert scenario tests: a day in minutes, no waiting.

The clock is a number we advance; nodes are modelled as their plate, gauge
and tray switches and "send" a telemetry message every minute through the
same ``YardTracker`` the server uses; the forecast provider and the
notifiers are fakes that can be switched off (the internet-down day). The
engine, the decide-commit-swap path (``AlertCore``), the store (SQLite in
tmp_path) and the dispatcher are the real ones; the act step delivers each
committed notification at once (the service queues them on worker threads),
or raises when ``dispatch_fails`` (a crash between commit and dispatch).
"""

from __future__ import annotations

import contextlib
import http.server
import json as _json
import os
import queue
import signal
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from secadero.contract import Envelope, Event, Status, Telemetry
from secadero.server.alerts.engine import AlertEngine, Decision
from secadero.server.alerts.service import AlertCore
from secadero.server.alerts.state import YardTracker
from secadero.server.alerts.store import AlertStore
from secadero.server.batches.warnings import OpenBatches
from secadero.server.forecast import Forecast, ForecastHour, ForecastStatus
from secadero.server.notifiers import NotifierError, Outgoing
from secadero.server.notifiers.dispatch import DeliveryHealth, Dispatcher
from secadero.server.notifiers.notification_log import Notification
from secadero.settings import AlertSettings, BatchSettings, RecipientSettings, YardSettings

LIMA = ZoneInfo("America/Lima")
DAY = (2026, 6, 15)  # June: in 2022 it rained every day of the "dry" month

RECIPIENTS = (
    RecipientSettings(name="Rosa", role="worker", language="es", phone="+51900000001"),
    RecipientSettings(name="Luis", role="worker", language="es", ntfy_topic="norte-luis",
                      channels=("push",)),
    RecipientSettings(name="Ana", role="supervisor", language="es", phone="+51900000002"),
    RecipientSettings(name="Carmen", role="quality", language="en", phone="+51900000003"),
    RecipientSettings(name="Tito", role="technician", language="es", phone="+51900000009"),
)
YARD = YardSettings(id="norte", name="Norte", latitude=-6.57, longitude=-76.14,
                    recipients=RECIPIENTS)


def at(hhmm: str, day: tuple[int, int, int] = DAY) -> float:
    """UNIX time of a local clock time in Chazuta on the scenario day."""
    hours, minutes = (int(p) for p in hhmm.split(":"))
    return datetime(*day, hours, minutes, tzinfo=LIMA).timestamp()


def hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, LIMA).strftime("%H:%M")


class FakeNotifier:
    """Stands in for Twilio, ntfy or the modem; ``up = False`` makes it refuse."""

    def __init__(self, name: str, channel: str, yard: SimYard) -> None:
        self.name, self.channel, self.yard, self.up = name, channel, yard, True

    def send(self, message: Outgoing) -> str:
        if not self.up:
            raise NotifierError("connection refused")
        self.yard.sent.append((hhmm(self.yard.now), message.recipient, self.name, message.kind,
                               message.event))
        self.yard.bodies.append(message.body)
        return f"{self.name}-{len(self.yard.sent)}"

    def close(self) -> None:
        pass


@dataclass
class SimNode:
    wet: bool = False
    tip_mm: float = 0.0
    trays: dict[str, str] = field(default_factory=dict)
    online: bool = True
    humidity_pct: float = 60.0
    temperature_c: float = 30.0
    seq: int = 0


class SimYard:
    """One yard, two nodes, a forecast, fake notifiers; ``run`` advances the clock.

    ``yard_settings``: the yard (id ``norte``) and its recipients, ``YARD`` by
    default. ``other_yards``: more yards under the same sky, fed the same nodes'
    messages under their own ids (give their recipients other names, as ``sent``
    names the recipient, not the yard). ``open_batches``: the drying batches' input for the quality
    warnings (none by default), ``batch_settings`` their thresholds.
    """

    def __init__(self, tmp_path: Path, *, yard_settings: YardSettings = YARD,
                 other_yards: tuple[YardSettings, ...] = (),
                 batch_settings: BatchSettings | None = None,
                 open_batches: OpenBatches | None = None, **alert_overrides: object) -> None:
        self.tmp_path = tmp_path
        self.settings = replace(AlertSettings(), **alert_overrides)  # type: ignore[arg-type]
        self.yard_settings = yard_settings
        self.other_yards = other_yards
        self.batch_settings = batch_settings
        self.open_batches = open_batches
        self.now = at("06:00")
        self.nodes = {
            "n1": SimNode(trays={"t1": "retracted", "t2": "retracted"}),
            "n2": SimNode(trays={"t3": "retracted"}),
        }
        # Forecast: local hour (interval [h:00, h+1:00)) -> probability %. Default dry.
        self.prob_by_hour: dict[int, float] = {}
        self.forecast_up = True
        self.forecast_status = ForecastStatus()
        self.sent: list[tuple[str, str, str, str, str]] = []
        self.transitions: list[tuple[str, str, str, str]] = []
        self.bodies: list[str] = []
        self.actions: list[tuple[float, Callable[[], None]]] = []
        self.store = AlertStore(tmp_path / "alerts.sqlite3")
        self.tracker = YardTracker([yard_settings, *other_yards])
        self.notifiers = {name: FakeNotifier(name, channel, self) for name, channel in
                          (("twilio", "sms"), ("gammu", "sms"), ("ntfy", "push"))}
        self.dispatch_fails = False
        self.started_at = self.now
        self.alerts = self._alerts()

    def _alerts(self) -> AlertCore:
        self.delivery = DeliveryHealth()
        self.dispatcher = Dispatcher(self.store, self.notifiers.values(), attempts=2,
                                     backoff_s=0, clock=lambda: self.now, sleep=lambda s: None,
                                     on_done=self.delivery.record)
        engine = AlertEngine(self.settings, [self.yard_settings, *self.other_yards],
                             started_at=self.started_at,
                             batches=self.batch_settings)
        return AlertCore(engine, self.store, self.tracker,
                         forecast=lambda yard: self.forecast_status,
                         delivery_error=self.delivery.error, open_batches=self.open_batches,
                         act=self._act)

    def _act(self, decision: Decision) -> None:
        if self.dispatch_fails:
            raise RuntimeError("the process died before dispatching")
        self.transitions += [(hhmm(t.ts), t.kind, t.state, t.severity)
                             for t in decision.transitions]
        for note in decision.notifications:
            self.dispatcher.deliver(note)

    def restart(self) -> None:
        """The server process dies and starts again on the same database."""
        self.store.close()
        self.store = AlertStore(self.tmp_path / "alerts.sqlite3")
        self.dispatch_fails = False
        self.alerts = self._alerts()

    # -- what happens in the yard

    def at(self, when: str, action: Callable[[], None]) -> None:
        self.actions.append((at(when), action))

    def _send(self, node: str, message: Telemetry | Event | Status) -> None:
        for yard in ("norte", *(y.id for y in self.other_yards)):
            self.tracker.observe(Envelope(yard, node, type(message).__name__.lower(), message),
                                 self.now)

    def _event(self, node: str, kind: str, tray: str | None = None) -> None:
        sim = self.nodes[node]
        sim.seq += 1
        self._send(node, Event(ts=self.now, seq=sim.seq, type=kind, tray=tray))

    def rain(self, node: str, wet: bool) -> Callable[[], None]:
        def action() -> None:
            self.nodes[node].wet = wet
            self._event(node, "rain_started" if wet else "rain_stopped")
        return action

    def trays(self, state: str) -> Callable[[], None]:
        def action() -> None:
            for node, sim in self.nodes.items():
                for tray in sim.trays:
                    sim.trays[tray] = state
                    self._event(node, "tray_extended" if state == "extended"
                                else "tray_retracted", tray)
        return action

    def internet(self, up: bool) -> Callable[[], None]:
        def action() -> None:
            self.forecast_up = up
            self.notifiers["twilio"].up = up
            self.notifiers["ntfy"].up = up
        return action

    def _poll_forecast(self) -> None:
        if not self.forecast_up:
            self.forecast_status = replace(self.forecast_status, error="ConnectionError")
            return
        day0 = at("00:00")
        hours = tuple(
            ForecastHour(start_ts=day0 + h * 3600, end_ts=day0 + (h + 1) * 3600,
                         precip_prob_pct=self.prob_by_hour.get(h, 5.0), precip_mm=0.0)
            for h in range(48))
        self.forecast_status = ForecastStatus(Forecast("open-meteo", self.now, hours))

    def run(self, until: str, step_s: float = 60.0) -> None:
        end = at(until)
        while self.now <= end:
            for when, action in [a for a in self.actions if a[0] <= self.now]:
                self.actions.remove((when, action))
                action()
            if round(self.now) % 900 == 0:
                self._poll_forecast()
            for node, sim in self.nodes.items():
                if sim.online:
                    sim.seq += 1
                    self._send(node, Telemetry(
                        ts=self.now, seq=sim.seq, temperature_c=sim.temperature_c,
                        humidity_pct=sim.humidity_pct, rain=sim.wet, rain_mm=sim.tip_mm,
                        trays=dict(sim.trays)))
            self.alerts.evaluate(self.now)
            self.now += step_s

    def log(self) -> list[Notification]:
        return self.store.notifications()


@pytest.fixture(name="yard")
def yard_fixture(tmp_path: Path) -> SimYard:
    return SimYard(tmp_path)


@pytest.fixture(name="make_yard")
def make_yard_fixture(tmp_path: Path) -> Callable[..., SimYard]:
    return lambda **overrides: SimYard(tmp_path, **overrides)


# --------------------------------------------------------------------------
# a local HTTP server that plays a remote service (Open-Meteo, ntfy, Twilio ...)



@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return _json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode()))


Reply = tuple[int, dict[str, str], bytes]


class FakeService:
    """An HTTP/1.1 server on 127.0.0.1 that answers from a script and records requests.

    ``replies`` is consumed in order; when empty, ``default`` answers. A reply
    may be a callable taking the recorded request (to answer from its content).
    ``received`` is a queue so tests wait for a request instead of sleeping.
    """

    def __init__(self) -> None:
        self.replies: list[Reply | Callable[[Recorded], Reply]] = []
        self.default: Reply | Callable[[Recorded], Reply] = (200, {}, b"")
        self.requests: list[Recorded] = []
        self.received: queue.Queue[Recorded] = queue.Queue()
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1  # one segment per response: no Nagle/delayed-ACK 40 ms stalls

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parsed = urllib.parse.urlsplit(self.path)
                record = Recorded(self.command, parsed.path,
                                  urllib.parse.parse_qs(parsed.query),
                                  {k.lower(): v for k, v in self.headers.items()},
                                  self.rfile.read(length))
                reply = service.replies.pop(0) if service.replies else service.default
                status, headers, body = reply(record) if callable(reply) else reply
                service.requests.append(record)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                service.received.put(record)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def json_reply(self, obj: object, status: int = 200, **headers: str) -> Reply:
        return (status, {"Content-Type": "application/json", **headers},
                _json.dumps(obj).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="service")
def service_fixture() -> Iterator[FakeService]:
    fake = FakeService()
    yield fake
    fake.close()


# --------------------------------------------------------------------------
# Gammu SMSD on its dummy phone driver (Debian packages gammu, gammu-smsd)


@contextlib.contextmanager
def start_smsd(root: Path, *, run_on_receive: str | None = None
               ) -> Iterator[tuple[Path, Path]]:
    """Run gammu-smsd (files backend) on the dummy driver under ``root``; stop it by PID.

    The dummy driver keeps the "phone" in folders (``phone/sms/1`` is the inbox
    that ``gammu savesms`` writes to); SMSD polls it every second.
    """
    conf = write_smsdrc(root, run_on_receive=run_on_receive)
    process = subprocess.Popen(["gammu-smsd", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield conf, root
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(10)


def write_smsdrc(root: Path, *, run_on_receive: str | None = None) -> Path:
    """An smsdrc for Gammu's dummy driver and the files backend, and its folders."""
    for sub in ("phone/sms/1", "phone/sms/2", "phone/sms/3", "phone/sms/4", "phone/sms/5",
                "phone/pbk/ME", "phone/pbk/SM", "phone/calendar", "phone/todo", "phone/note",
                "phone/fs", "inbox", "outbox", "sent", "error"):
        (root / sub).mkdir(parents=True)
    conf = root / "smsdrc"
    conf.write_text(
        f"[gammu]\nmodel = dummy\nconnection = none\ndevice = {root}/phone/\n"
        f"[smsd]\nservice = files\ninboxpath = {root}/inbox/\noutboxpath = {root}/outbox/\n"
        f"sentsmspath = {root}/sent/\nerrorsmspath = {root}/error/\n"
        f"logfile = {root}/smsd.log\ncommtimeout = 1\nsendtimeout = 5\n"
        "receivefrequency = 1\nchecksecurity = 0\ncheckbattery = 0\nchecksignal = 0\n"
        "statusfrequency = 0\n"
        + (f"runonreceive = {run_on_receive}\n" if run_on_receive else ""))
    return conf
