"""``secadero yard``: a day in a drying yard on this machine, for a first look.

Starts a private Mosquitto and InfluxDB under a project folder (not the
system services), the server with its web app, a local stand-in for the
weather forecast, and simulated nodes in one yard, each as its own process
exactly as they run in the field. Then it plays a day, 06:00 to 18:00 on the
yard's clock, in a few minutes (secadero/day.py): morning sun, a shower the
forecast saw coming, the alert, the workers pulling the trays in, a second
shower only the rain plates catch, the all-clears, a drying batch with its
moisture readings and, at the end, its report. The terminal tells what
happens in plain words; the web app shows it too. Ctrl-C stops everything it
started, by PID, newest first.

``--endless`` runs the older free demo instead: random showers until Ctrl-C,
one line per reading the server has stored (a line appears when the server's
``ack`` says InfluxDB accepted it, not when the node sent it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from secadero import contract
from secadero.contract import Envelope, Event, Telemetry
from secadero.day import MIN_MINUTES, MOISTURE, Day, DayNarrator, ForecastReplay
from secadero.devservices import (
    INFLUX_READER,
    INFLUX_WRITER,
    READONLY_USER,
    SERVER_USER,
    InfluxDB,
    Mosquitto,
    ServiceError,
    free_port,
)
from secadero.errors import ProtocolError

if TYPE_CHECKING:  # the server's packages: imported only where the day needs them
    from secadero import past_days

YARD_ID = "chazuta"
DATABASE = "secadero"
SERVER_CLIENT_ID = "secadero-demo-ingest"
NODE_IDS = ("norte-1", "centro-2", "sur-3", "este-4", "oeste-5", "patio-6")
TIMEZONE = ZoneInfo("America/Lima")


def register(commands: argparse._SubParsersAction) -> None:
    yard = commands.add_parser(
        "yard",
        help="run a demo yard: broker, database, server and simulated nodes on this machine",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    yard.add_argument("--dir", type=Path, default=Path("var/yard"),
                      help="where the broker, database, outboxes and logs live "
                           "(default: var/yard)")
    yard.add_argument("--nodes", type=int, default=3, choices=range(1, len(NODE_IDS) + 1),
                      metavar="N", help="simulated nodes (1-6, default 3)")
    yard.add_argument("--interval", type=float, default=1.0, metavar="S",
                      help="seconds between samples on each node (default 1)")
    yard.add_argument("--speed", type=float, default=60.0, metavar="X",
                      help="--endless: the simulated weather runs X times faster than the "
                           "clock, so showers come every few minutes (default 60; 1 = real "
                           "time)")
    yard.add_argument("--duration", type=float, default=None, metavar="S",
                      help="--endless: stop by itself after S seconds (default: until Ctrl-C)")
    yard.add_argument("--minutes", type=float, default=7.0, metavar="M",
                      help=f"how long the day lasts in real minutes (default 7, at least "
                           f"{MIN_MINUTES:g}: the server's forecast poll runs in real time)")
    yard.add_argument("--readings", action="store_true",
                      help="also print every reading the server has stored")
    yard.add_argument("--endless", action="store_true",
                      help="no scripted day: random showers and every stored reading, until "
                           "Ctrl-C (--speed, --duration)")
    yard.set_defaults(handler=_run)


@dataclass
class Child:
    """A secadero process we started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout_s)


def write_configs(root: Path, *, broker: Mosquitto, influxdb: InfluxDB, metrics_port: int,
                  api_port: int, phone_url: str, nodes: int, interval_s: float,
                  speed: float, forecast_url: str | None = None,
                  script: Path | None = None) -> tuple[Path, list[Path]]:
    """The server's and each node's settings file, as a technician would write them.

    Each logs in to the broker as itself: the server as the server's user, each
    node as its own user (made as `secadero nodes add` makes them), with the rights
    they have in production; the secrets are files beside the broker's. The server
    writes to InfluxDB as its writer user, not as the admin (``prepare_database``).

    The yard's people get their alerts through the generic webhook, which the
    demo answers itself (``PhoneBooth``) and prints: no SMS leaves the machine.
    A day (``forecast_url`` and ``script``) adds the local forecast, the
    nodes' scripted weather, and the all-clear's waits in seconds, not half hours.
    """
    mqtt_port = broker.port
    config_dir = root / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    server = config_dir / "server.toml"
    day = ""
    if forecast_url is not None:
        day = (
            # A compressed day: the all-clear waits for dry plates and holds a few
            # seconds, not the field's half hours; the forecast is read every minute.
            "evaluate_interval_s = 1\nall_clear_dry_min = 0.4\nmin_hold_min = 0.2\n"
            "tip_window_min = 1\n"
            "trays_out_after_min = 1\n\n"
            f'[forecast]\nproviders = ["open-meteo"]\nopen_meteo_url = "{forecast_url}"\n'
            "poll_interval_s = 60\n\n")
    server.write_text(
        "# Written by `secadero yard` for the demo; see server/server.example.toml.\n"
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nclient_id = "{SERVER_CLIENT_ID}"\n'
        f"{broker.toml_credentials(SERVER_USER)}\n"
        f'[influxdb]\nurl = "{influxdb.url}"\ndatabase = "{DATABASE}"\n'
        f"{influxdb.toml_credentials(INFLUX_WRITER)}\n"
        f'[ingest]\nhttp_port = {metrics_port}\n\n'
        '[batches]\ndatabase = "../batches/batches.sqlite3"\n\n'
        '[accounts]\ndatabase = "../accounts/accounts.sqlite3"\n\n'
        f'[alerts]\ndatabase = "../alerts/alerts.sqlite3"\napi_port = {api_port}\n'
        f'public_url = "http://127.0.0.1:{api_port}"\n'
        # The demo runs day and night: every hour counts as drying hours.
        'drying_start = "00:00"\ndrying_end = "24:00"\n'
        + (day or "\n") +
        f'[notifiers.webhook]\nurl = "{phone_url}"\n\n'
        f'[[yards]]\nid = "{YARD_ID}"\nname = "Chazuta"\n'
        'latitude = -6.57\nlongitude = -76.14\ntimezone = "America/Lima"\n\n'
        '[[yards.recipients]]\nname = "Rosa"\nrole = "worker"\nchannels = ["webhook"]\n\n'
        '[[yards.recipients]]\nname = "Luis"\nrole = "worker"\nchannels = ["webhook"]\n\n'
        '[[yards.recipients]]\nname = "Carmen"\nrole = "quality"\nchannels = ["webhook"]\n\n'
        '[[yards.recipients]]\nname = "Ana"\nrole = "supervisor"\nchannels = ["webhook"]\n\n'
        '[[yards.recipients]]\nname = "Jorge"\nrole = "technician"\nchannels = ["webhook"]\n'
        # The yard's layout: each demo node is its own area, named as the workers say it
        # ("norte-1" is the sector Norte), so the alerts name places, not ids.
        + "".join(f'\n[[yards.areas]]\nname = "{_area_name(node_id)}"\nnodes = ["{node_id}"]\n'
                  for node_id in NODE_IDS[:nodes])
    )
    node_configs = []
    for index, node_id in enumerate(NODE_IDS[:nodes]):
        username, _ = broker.node_credentials(YARD_ID, node_id)
        path = config_dir / f"{node_id}.toml"
        path.write_text(
            "# Written by `secadero yard` for the demo; see edge/node.example.toml.\n"
            f'[node]\nyard = "{YARD_ID}"\nid = "{node_id}"\ntrays = ["t1", "t2"]\n'
            f'sample_interval_s = {interval_s}\nhardware = "simulated"\n'
            f"simulation_seed = {index + 1}\nsimulation_speed = {speed}\n"
            + (f'simulation_script = "{script}"\n' if script is not None else "") + "\n"
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
            f"{broker.toml_credentials(username)}\n"
            f'[outbox]\npath = "../nodes/{node_id}/outbox.sqlite3"\n'
        )
        node_configs.append(path)
    return server, node_configs


def prepare_database(influxdb: InfluxDB) -> None:
    """What a technician does once as InfluxDB's admin (docs/security.md): the database,
    its retention policies and continuous queries (the server's own ``prepare``, run as
    the admin), then the server's writer may read and write it, Grafana's user read it."""
    from secadero.server.influx import InfluxV1Writer

    writer = InfluxV1Writer(influxdb.settings(DATABASE))
    try:
        writer.prepare()
    finally:
        writer.close()
    influxdb.grant(DATABASE, INFLUX_WRITER, "ALL")
    influxdb.grant(DATABASE, INFLUX_READER, "READ")


def describe(node: str, message: Telemetry | Event) -> str:
    """One line a person can read across the room."""
    when = dt.datetime.fromtimestamp(message.ts, TIMEZONE).strftime("%H:%M:%S")
    if isinstance(message, Event):
        what = message.type.replace("_", " ")
        extra = f" {message.tray}" if message.tray else ""
        return f"{when}  {node:<9} #{message.seq:<6} event: {what}{extra}"
    temperature = "   --  " if message.temperature_c is None else f"{message.temperature_c:5.1f} C"
    humidity = "  -- " if message.humidity_pct is None else f"{message.humidity_pct:4.1f} %"
    rain = {True: "RAIN", False: "dry ", None: " -- "}[message.rain]
    trays = " ".join(f"{tray}={state}" for tray, state in sorted(message.trays.items()))
    return f"{when}  {node:<9} #{message.seq:<6} {temperature}  {humidity}  {rain}  {trays}"


@dataclass
class StoredReadingPrinter:
    """Prints each reading once the server's ack covers its seq, and the yard's alerts.

    Holds what the nodes sent until then; a reading re-sent after a reconnect
    is printed once.
    """

    out: Callable[[str], None]
    pending: dict[str, dict[int, Telemetry | Event]] = field(default_factory=dict)
    alert_raised: bool = False
    printed: dict[str, int] = field(default_factory=dict)
    stored: int = 0

    def handle(self, envelope: Envelope) -> None:
        node = envelope.node or ""
        message = envelope.message
        if isinstance(message, Telemetry | Event):
            if message.seq > self.printed.get(node, -1):
                self.pending.setdefault(node, {})[message.seq] = message
        elif isinstance(message, contract.Alert):
            if message.state == "raised":
                self.out(f"          ALERT {message.severity} ({message.kind}): {message.message}")
            elif self.alert_raised:
                self.out("          alert cleared")
            self.alert_raised = message.state == "raised"
        elif isinstance(message, contract.Ack):
            waiting = self.pending.get(node, {})
            for seq in sorted(s for s in waiting if s <= message.seq):
                self.out(describe(node, waiting.pop(seq)))
                self.stored += 1
            self.printed[node] = max(self.printed.get(node, -1), message.seq)


class PhoneBooth:
    """A local HTTP endpoint standing in for the workers' phones: prints each alert message.

    It receives the server's generic webhook (one JSON POST per message, see
    ``server/notifiers/webhook.py``), so the demo shows what Rosa would read.
    """

    def __init__(self, out: Callable[[str], None],
                 line: Callable[[dict[str, str]], str] | None = None) -> None:
        import http.server
        import json

        booth = self
        self.line = line or (lambda message: f"          to {message['recipient']}: "
                                             f"{message['body']}")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    message = json.loads(self.rfile.read(length))
                    booth.out(booth.line(message))
                    self.send_response(204)
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # the server's log has the notification log; keep the screen clean

        self.out = out
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def watch(broker: Mosquitto, printer: StoredReadingPrinter | Callable[[Envelope], None],
          stop: threading.Event) -> None:
    """Subscribe to the yard's traffic and feed the printer until ``stop`` is set.

    As the broker's read-only user: the dashboards' rights, which read everything."""
    handle = printer.handle if isinstance(printer, StoredReadingPrinter) else printer
    import paho.mqtt.client as mqtt

    lock = threading.Lock()

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: object,
                   properties: object) -> None:
        for kind in ("telemetry", "event", "ack", "alert"):
            client.subscribe(contract.subscription(kind, yard=YARD_ID), qos=1)

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            envelope = contract.decode(msg.topic, msg.payload)
        except ProtocolError:
            return  # the server counts and logs bad messages; the demo only shows good ones
        with lock:
            handle(envelope)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="secadero-demo-watch")
    client.username_pw_set(*broker.credentials(READONLY_USER))
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


def _spawn(name: str, argv: list[str], logs: Path) -> Child:
    log = logs / f"{name}.log"
    with log.open("ab") as handle:
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return Child(name, process, log)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _area_name(node_id: str) -> str:
    """The demo's area of a node: its id without the number, "norte-1" -> "Norte"."""
    return node_id.rsplit("-", 1)[0].capitalize()


def _stop_on_signals(stop: threading.Event) -> tuple[Any, Any]:
    """Ctrl-C (KeyboardInterrupt) and SIGTERM (a supervisor, a test) both stop a demo.

    SIGINT's handler is set explicitly: Python leaves SIGINT ignored when the demo
    was started with it ignored (``cmd &`` in a script), and Ctrl-C would then do
    nothing. Returns the previous handlers for ``_restore_signals``."""
    return (signal.signal(signal.SIGINT, signal.default_int_handler),
            signal.signal(signal.SIGTERM, lambda *_: stop.set()))


def _restore_signals(previous: tuple[Any, Any]) -> None:
    signal.signal(signal.SIGINT, previous[0])
    signal.signal(signal.SIGTERM, previous[1])


def _stop_everything(children: list[Child], watcher: threading.Thread | None,
                     broker: Mosquitto, database: InfluxDB, phones: PhoneBooth) -> None:
    """Stop what a demo started, in order: the server first, so stopping the nodes
    does not page the technician (what the nodes measure meanwhile stays in their
    outboxes for the next run); the broker and the database last."""
    # A second Ctrl-C must not leave children behind half-stopped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for child in children:
        child.stop()
    if watcher is not None:
        watcher.join(5)
    broker.stop()
    database.stop()
    phones.close()


def run_yard(root: Path, *, nodes: int, interval_s: float, speed: float,
             duration_s: float | None, out: TextIO) -> int:
    root = root.resolve()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    # The printer (MQTT thread) and the phone booth (HTTP thread) both print:
    # one lock and one write per line, or their lines run together.
    say_lock = threading.Lock()

    def say(line: str) -> None:
        with say_lock:
            out.write(line + "\n")
            out.flush()

    stop = threading.Event()
    previous = _stop_on_signals(stop)
    broker = Mosquitto(workdir=root / "mosquitto")
    database = InfluxDB(workdir=root / "influxdb")
    children: list[Child] = []
    watcher: threading.Thread | None = None
    phones = PhoneBooth(say)
    status = 0
    try:
        say(f"secadero demo yard in {root}")
        broker.start()
        say(f"  Mosquitto  127.0.0.1:{broker.port}  (pid {broker.pid})")
        _forget_the_last_run(broker, nodes, say)
        database.start()
        prepare_database(database)
        say(f"  InfluxDB   {database.url}  database '{DATABASE}'  (pid {database.pid})")
        say(f"             users {INFLUX_WRITER} (the server), {INFLUX_READER} (Grafana), "
            f"admin; secrets in {database.secret_file().parent}")
        server_config, node_configs = write_configs(
            root, broker=broker, influxdb=database, metrics_port=free_port(),
            api_port=free_port(), phone_url=phones.url, nodes=nodes, interval_s=interval_s,
            speed=speed)
        command = [sys.executable, "-m", "secadero.cli"]
        children.append(_spawn("server", [*command, "server", "run", "--config",
                                          str(server_config)], logs))
        say(f"  server     pid {children[-1].process.pid}")
        for config in node_configs:
            children.append(_spawn(config.stem, [*command, "edge", "run", "--config",
                                                 str(config)], logs))
            say(f"  node       {YARD_ID}/{config.stem}  pid {children[-1].process.pid}")
        say(f"  logs       {logs}")
        say(f"  watch:     mosquitto_sub -p {broker.port} -u {READONLY_USER} "
            f"-P \"$(cat {broker.secret_file(READONLY_USER)})\" -v -t 'secadero/v1/#'")
        say("Stored readings (Ctrl-C stops everything):")
        say("time      node      seq       temp     humid  rain  trays")

        printer = StoredReadingPrinter(out=say)
        watcher = threading.Thread(target=watch, args=(broker, printer, stop), daemon=True)
        watcher.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop.wait(0.5):
            for child in children:
                if child.process.poll() is not None:
                    say(f"{child.name} stopped unexpectedly (exit code "
                        f"{child.process.returncode}); last lines of {child.log}:")
                    say(_tail(child.log))
                    status = 1
                    stop.set()
            if deadline is not None and time.monotonic() >= deadline:
                stop.set()
        say(f"Stopping: {printer.stored} readings stored in this run.")
    except KeyboardInterrupt:
        say("Stopping.")
    except ServiceError as exc:
        say(f"cannot start the yard: {exc}")
        status = 1
    finally:
        stop.set()
        _stop_everything(children, watcher, broker, database, phones)
        _restore_signals(previous)
    return status


# The demo's staff accounts (the web app's log-ins): name, role, who they are.
DEMO_STAFF = (("ana", "supervisor", "Ana, the yard's supervisor"),
              ("carmen", "quality", "Carmen, the quality manager"),
              ("rosa", "worker", "Rosa, a yard worker"))
BATCH_TRAYS = ("norte-1/t1", "norte-1/t2")


class DemoApi:
    """The server's HTTP API as Carmen uses it from the demo: log in, then batch calls."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.token: str | None = None

    def call(self, method: str, path: str, body: dict[str, object] | None = None) -> bytes:
        import json
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.base_url + path, method=method, headers=headers,
            data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def log_in(self, name: str, password: str) -> None:
        import json

        self.token = json.loads(self.call("POST", "/api/login",
                                          {"name": name, "password": password}))["token"]


def _demo_accounts(path: Path) -> str:
    """The demo's staff accounts with one fresh password (printed for the newcomer)."""
    import secrets

    from secadero.server.accounts import AccountStore

    password = "demo-" + secrets.token_hex(3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with AccountStore(path) as accounts:
        for name, role, _who in DEMO_STAFF:
            if accounts.get(name) is None:
                accounts.add(name, role, password)
            else:
                accounts.set_password(name, password)
    return password


def _wait_for_http(url: str, child: Child, timeout_s: float = 60.0) -> bool:
    """Whether ``url`` answers before ``timeout_s`` (the server has no other ready signal
    for another process); False if the process ended first."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answers
        except OSError:
            time.sleep(0.2)
    return False


def _end_earlier_batches(api: DemoApi, say: Callable[[str], None]) -> None:
    """The batch of an earlier run in this folder is still open on the day's trays (a
    tray belongs to one open batch at a time): Carmen ends it first, without a final
    reading (nobody measured one)."""
    import json

    for batch in json.loads(api.call("GET", f"/api/batches?yard={YARD_ID}&open=1")):
        if set(batch["trays"]) & set(BATCH_TRAYS):
            api.call("POST", f"/api/batches/{batch['id']}/end", {"by": "carmen"})
            say(f"  (first she ends {batch['id']}, the batch of an earlier run of the demo: "
                "its trays are needed)")


def _play(beat: str, text: str, *, api: DemoApi, say: Callable[[str], None], password: str,
          batch_id: str, readings_pct: dict[str, float], batch_started: bool) -> bool:
    """Tell one beat of the day and do Carmen's part of it; whether the batch started."""
    say(text.format(batch=batch_id, **readings_pct))
    try:
        if beat == "batch_start":
            api.log_in("carmen", password)
            _end_earlier_batches(api, say)
            api.call("POST", "/api/batches", {
                "id": batch_id, "yard": YARD_ID, "trays": list(BATCH_TRAYS),
                "lot": "Cosecha del día", "member": "Familia Ruiz", "wet_weight_kg": 120.0,
                "by": "carmen"})
            api.call("POST", f"/api/batches/{batch_id}/moisture",
                     {"moisture_pct": MOISTURE["moisture_0"], "by": "carmen"})
            say(f"  (in the web app: Lotes -> {batch_id}: its curve, figures and drying "
                "estimate)")
            return True
        if beat in readings_pct and batch_started:
            api.call("POST", f"/api/batches/{batch_id}/moisture",
                     {"moisture_pct": readings_pct[beat], "by": "carmen"})
    except OSError as exc:  # urllib's errors: told, and the day goes on
        say(f"  (the server refused: {_refusal(exc)})")
    return False


class DemoPast:
    """The yard's past two weeks and a batch dried over them (secadero/past_days.py).

    Once per demo folder (a later run finds ``past-days.json`` and leaves the past it
    wrote as it is): the points go to InfluxDB before the server starts, the batch is
    recorded through the API once it answers, and its report is written with the day's
    at the end. Each step's failure is told, and the day goes on without the past."""

    def __init__(self, root: Path, *, nodes: int, say: Callable[[str], None]) -> None:
        self.marker = root / "config" / "past-days.json"
        self.nodes, self.say = nodes, say
        self.past: past_days.PastYard | None = None
        self.batch_id: str | None = None
        self.api: DemoApi | None = None
        if self.marker.exists():
            import json

            self.batch_id = json.loads(self.marker.read_text(encoding="utf-8"))["batch"]

    def write(self, database: InfluxDB) -> None:
        from secadero import past_days
        from secadero.errors import StorageError
        from secadero.server.influx import InfluxV1Writer

        if self.batch_id is not None:
            return
        # Today in the yard, not in the machine's zone: the past must end before now.
        past = past_days.simulate(YARD_ID, NODE_IDS[:self.nodes],
                                  today=dt.datetime.now(TIMEZONE).date(), timezone=TIMEZONE)
        writer = InfluxV1Writer(database.settings(DATABASE, INFLUX_WRITER))
        try:
            past_days.write(writer, past)
            self.past = past
        except StorageError as exc:
            self.say(f"  (the yard's past days could not be written: {exc})")
        finally:
            writer.close()

    def record(self, api: DemoApi, password: str) -> None:
        """Carmen's record of the example batch; her session is kept for its report."""
        import json

        from secadero import past_days

        if self.past is None and self.batch_id is None:
            return  # nothing was written
        try:
            api.log_in("carmen", password)
            if self.past is not None:
                self.batch_id = past_days.record(api, self.past)
                self.marker.write_text(json.dumps({"batch": self.batch_id}), encoding="utf-8")
        except OSError as exc:  # urllib's errors
            self.say(f"  (the example batch could not be recorded: {_refusal(exc)})")
            return
        self.api = api
        when = "" if self.past is not None else ", from an earlier run in this folder"
        self.say(f"  the yard's past {past_days.DAYS} days are in InfluxDB too (simulated{when}), "
                 f"with drying batch {self.batch_id}: dried and ended, its report at the end")

    def report(self, reports: Path) -> None:
        if self.batch_id is None or self.api is None:
            return
        report = reports / f"{self.batch_id}.pdf"
        try:
            report.write_bytes(self.api.call("GET", f"/api/batches/{self.batch_id}/report.pdf"))
        except OSError as exc:
            self.say(f"The example batch's report could not be written: {_refusal(exc)}")
            return
        self.say(f"The report of {self.batch_id}, dried over the past days: {report}")


def _forget_the_last_run(broker: Mosquitto, nodes: int, say: Callable[[str], None]) -> None:
    """Drop the nodes' last word from an earlier run in this folder, kept for the server.

    The demo stops its nodes after the server, so their last word, "offline", is kept
    twice: retained on their ``status`` topics and queued in the server's persistent
    session. The next run starts the server before the nodes, and the server would page
    the technician for nodes that are only starting. Both are dropped here: an empty
    retained message deletes a retained one (MQTT 3.1.1, 3.3.1.3), and the server's
    client id connecting with a clean start and no session expiry ends its session
    (MQTT 5, 3.1.2.4). Nothing measured is lost: the nodes' readings the server did not
    acknowledge are in their outboxes, sent again."""
    import paho.mqtt
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    def client(client_id: str, user: tuple[str, str]) -> mqtt.Client:
        made = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                           protocol=mqtt.MQTTv5)
        made.username_pw_set(*user)
        return made

    harness = client("secadero-demo-fresh-start", broker.client_credentials())
    server = client(SERVER_CLIENT_ID, broker.credentials(SERVER_USER))
    server_connected = threading.Event()
    server.on_connect = lambda *_: server_connected.set()
    no_session = Properties(PacketTypes.CONNECT)
    no_session.SessionExpiryInterval = 0
    try:
        harness.connect("127.0.0.1", broker.port)
        harness.loop_start()
        deletions = [harness.publish(contract.node_topic(YARD_ID, node, "status"), b"",
                                     qos=1, retain=True) for node in NODE_IDS[:nodes]]
        server.connect("127.0.0.1", broker.port, clean_start=True, properties=no_session)
        server.loop_start()
        for deletion in deletions:
            deletion.wait_for_publish(10)
        if not (server_connected.wait(10) and all(d.is_published() for d in deletions)):
            raise OSError("the broker did not answer in 10 s")
        harness.disconnect()
        server.disconnect()
    except (OSError, ValueError, RuntimeError, paho.mqtt.MQTTException) as exc:
        # Not worth stopping the day for: at worst the technician is paged needlessly.
        say(f"  (what the broker kept of the last run could not be cleared: {exc})")
    finally:
        harness.loop_stop()
        server.loop_stop()


def _refusal(exc: OSError) -> str:
    """What the server said (an HTTP error's body), or the error."""
    detail = exc.read().decode(errors="replace") if hasattr(exc, "read") else str(exc)
    return detail[:200]


def run_day(root: Path, *, nodes: int, interval_s: float, minutes: float, readings: bool,
            out: TextIO) -> int:
    """The scripted day (secadero/day.py): told in words as it happens; 0 when it ran."""
    root = root.resolve()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    say_lock = threading.Lock()
    holder: dict[str, Day] = {}

    def clock() -> str:
        day = holder.get("day")
        return f"[{day.clock(time.time())}]" if day is not None else "[--:--]"

    def say(line: str, *, stamp: bool = True) -> None:
        with say_lock:
            out.write((f"{clock()} {line}" if stamp else line) + "\n")
            out.flush()

    stop = threading.Event()
    previous = _stop_on_signals(stop)
    broker = Mosquitto(workdir=root / "mosquitto")
    database = InfluxDB(workdir=root / "influxdb")
    children: list[Child] = []
    watcher: threading.Thread | None = None
    phones = PhoneBooth(lambda line: say(line), line=lambda message: (
        f"  -> {message['recipient']}'s phone: {message['body']}"))
    # The forecast sees the first shower from the start until it has passed.
    forecast = ForecastReplay(lambda: "day" not in holder
                              or holder["day"].forecast_sees_rain(time.time()))
    status = 0
    try:
        day_check = Day(minutes, time.time())  # refuses a day too short, before starting
        say(f"secadero: a day in the drying yard Chazuta, in {day_check.minutes:g} minutes. "
            f"Everything runs on this machine, in {root}", stamp=False)
        broker.start()
        database.start()
        prepare_database(database)
        say(f"  Mosquitto (the MQTT broker) 127.0.0.1:{broker.port}, pid {broker.pid}; "
            f"InfluxDB (the time series) {database.url}, pid {database.pid}", stamp=False)
        _forget_the_last_run(broker, nodes, lambda line: say(line, stamp=False))
        past = DemoPast(root, nodes=nodes, say=lambda line: say(line, stamp=False))
        past.write(database)
        api_port = free_port()
        script_path = root / "config" / "day.json"
        server_config, node_configs = write_configs(
            root, broker=broker, influxdb=database, metrics_port=free_port(),
            api_port=api_port, phone_url=phones.url, nodes=nodes, interval_s=interval_s,
            speed=day_check.speed, forecast_url=forecast.url, script=script_path)
        password = _demo_accounts(root / "accounts" / "accounts.sqlite3")
        command = [sys.executable, "-m", "secadero.cli"]
        children.append(_spawn("server", [*command, "server", "run", "--config",
                                          str(server_config)], logs))
        say(f"  the server, pid {children[-1].process.pid} (its log: {logs / 'server.log'})",
            stamp=False)
        web = f"http://127.0.0.1:{api_port}"
        if not _wait_for_http(f"{web}/login", children[-1]):
            say(f"the server did not start; last lines of {children[-1].log}:", stamp=False)
            say(_tail(children[-1].log), stamp=False)
            return 1
        past.record(DemoApi(web), password)
        day = Day(minutes, time.time() + 1.0)
        script_path.write_text(day.script().to_json(), encoding="utf-8")
        for config in node_configs:
            children.append(_spawn(config.stem, [*command, "edge", "run", "--config",
                                                 str(config)], logs))
        say(f"  {len(node_configs)} nodes (Raspberry Pis at the trays, simulated): "
            + ", ".join(f"{child.name} pid {child.process.pid}" for child in children[1:]),
            stamp=False)
        say("", stamp=False)
        say(f"Open the web app: {web}/   (the wall screen: {web}/wall)", stamp=False)
        for name, role, who in DEMO_STAFF:
            say(f"  log in as {name:<7} password {password}   {who} ({role})", stamp=False)
        say("The messages the workers get are under Alertas in the web app, and printed "
            "here. The yard's clock runs "
            f"{day.speed:.0f} times faster than yours; the messages use the real clock.",
            stamp=False)
        say("", stamp=False)
        holder["day"] = day

        narrator = DayNarrator({node: _area_name(node) for node in NODE_IDS[:nodes]})
        printer = StoredReadingPrinter(out=lambda line: say(line, stamp=False))

        def handle(envelope: Envelope) -> None:
            if readings:
                printer.handle(envelope)
            for line in narrator.handle(envelope):
                say(line)

        watcher = threading.Thread(target=watch, args=(broker, handle, stop), daemon=True)
        watcher.start()
        say("Morning. The trays go out in the sun; the nodes measure the air, the rain "
            "plates and the trays' switches every second and send it to the server.")
        batch_id = f"lote-{dt.datetime.now(TIMEZONE):%m%d-%H%M}"
        api = DemoApi(web)
        # A shower is announced a moment before the plates' own lines arrive.
        story = [(day.at(beat) - (2.0 if beat.startswith("shower") else 0.0), beat, text)
                 for beat, text in day.story()]
        story.append((day.at("end"), "end", ""))
        readings_pct = {"moisture_1": MOISTURE["moisture_1"],
                        "moisture_2": MOISTURE["moisture_2"]}
        batch_started = False
        evening = False
        while not evening and not stop.wait(0.2):
            for child in children:
                if child.process.poll() is not None:
                    say(f"{child.name} stopped unexpectedly (exit code "
                        f"{child.process.returncode}); last lines of {child.log}:")
                    say(_tail(child.log), stamp=False)
                    status = 1
                    stop.set()
            while story and time.time() >= story[0][0] and not evening:
                _, beat, text = story.pop(0)
                evening = beat == "end"
                if not evening:
                    batch_started |= _play(beat, text, api=api, say=say, password=password,
                                           batch_id=batch_id, readings_pct=readings_pct,
                                           batch_started=batch_started)
        if not stop.is_set():
            say("Evening: the day is over.")
            reports = root / "reports"
            reports.mkdir(exist_ok=True)
            if batch_started:
                report = reports / f"{batch_id}.pdf"
                try:
                    report.write_bytes(api.call("GET", f"/api/batches/{batch_id}/report.pdf"))
                    say(f"The batch report (one page, PDF) is in {report}")
                except OSError as exc:
                    say(f"The batch report could not be written: {exc}")
            past.report(reports)
            say(f"What the server logged: {logs}. The web app stops with the demo.",
                stamp=False)
    except KeyboardInterrupt:
        say("Stopping.", stamp=False)
    except (ServiceError, ValueError) as exc:
        say(f"cannot run the day: {exc}", stamp=False)
        status = 1
    finally:
        stop.set()
        _stop_everything(children, watcher, broker, database, phones)
        forecast.close()
        _restore_signals(previous)
    say("Stopped everything it started.", stamp=False)
    return status


def _run(args: argparse.Namespace) -> int:
    if args.endless:
        return run_yard(args.dir, nodes=args.nodes, interval_s=args.interval,
                        speed=args.speed, duration_s=args.duration, out=sys.stdout)
    return run_day(args.dir, nodes=args.nodes, interval_s=args.interval,
                   minutes=args.minutes, readings=args.readings, out=sys.stdout)
