"""Helpers for the web app's tests (imported by name; no conftest.py here, so nothing
shadows tests/conftest.py): a real browser that refuses to leave the server, the
server's configuration, a local Open-Meteo, a recording phone, staff accounts, and
the running yard both browsers' tests use (``running_yard``; Firefox's test:
test_firefox.py over bidi.py).

The browser is Debian's ``chromium`` package driven by Playwright through
``executable_path`` (Playwright's own browser download is not used; see
docs/webapp.md). Every request the pages make is checked: one to any host
other than the server under test fails the test (a yard often has no internet,
so a page that needs one is broken).
"""

from __future__ import annotations

import http.server
import json
import queue
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from secadero.contract import Event, encode
from secadero.day import ForecastReplay
from secadero.devservices import INFLUX_ADMIN, SERVER_USER, InfluxDB, Mosquitto, free_port
from secadero.server.accounts import AccountStore
from secadero.server.app import Server
from secadero.settings import load_server_settings
from tests.server.ingest_helpers import NodeSide

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium in a container: no sandbox (no user namespaces), no GPU, and none of
# the background calls home a fresh profile makes (they would be "foreign requests").
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}
WALL = {"width": 1920, "height": 1080}
# Screenshots are kept here for people to look at (docs/webapp.md).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@contextmanager
def guarded_context(browser: Any, base_url: str, **options: Any) -> Iterator[Any]:
    """A browser context whose requests may only go to ``base_url``'s host and port.

    Any other request is aborted and remembered; leaving the block fails the
    test naming them. ``data:`` and ``blob:`` URLs stay inside the page.
    """
    allowed = urllib.parse.urlsplit(base_url).netloc
    foreign: list[str] = []
    context = browser.new_context(base_url=base_url, locale="es-PE", **options)

    def guard(route: Any) -> None:
        url = urllib.parse.urlsplit(route.request.url)
        if url.scheme in ("data", "blob") or url.netloc == allowed:
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    try:
        yield context
    finally:
        context.close()
    assert not foreign, f"the pages asked hosts other than the server: {foreign}"


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot under var/screenshots/, its path printed for the reader."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


class Phones:
    """The server's generic webhook, answered here: what each person would have read."""

    def __init__(self) -> None:
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        phones = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                phones.messages.put(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout_s: float = 20.0) -> dict[str, Any]:
        try:
            return self.messages.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no message reached a phone in {timeout_s:g} s") from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_server_config(path: Path, *, yard: str, broker: Mosquitto, influxdb: InfluxDB,
                        api_port: int, phones_url: str, forecast_url: str) -> Path:
    """One yard with two areas and three people, as a cooperative would write it.

    The server logs in to the broker as the server's user and to InfluxDB as its
    admin (each test makes its own database), as tests/conftest.py describes."""
    path.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
client_id = "web-{yard}"
{broker.toml_credentials(SERVER_USER)}
[influxdb]
url = "{influxdb.url}"
database = "{yard.replace('-', '_')}"
{influxdb.toml_credentials(INFLUX_ADMIN)}
[ingest]
http_port = 0
flush_interval_s = 0.05
state_file = "state.json"
set_aside_file = "set-aside.jsonl"
[alerts]
database = "alerts.sqlite3"
api_port = {api_port}
public_url = "http://127.0.0.1:{api_port}"
evaluate_interval_s = 0.2
drying_start = "00:00"
drying_end = "24:00"
[forecast]
providers = ["open-meteo"]
open_meteo_url = "{forecast_url}"
[batches]
database = "batches.sqlite3"
[accounts]
database = "accounts.sqlite3"
[notifiers.webhook]
url = "{phones_url}"
[[yards]]
id = "{yard}"
name = "Chazuta"
latitude = -6.57
longitude = -76.14
timezone = "America/Lima"
[[yards.recipients]]
name = "Rosa"
role = "worker"
channels = ["webhook"]
[[yards.recipients]]
name = "Ana"
role = "supervisor"
channels = ["webhook"]
[[yards.areas]]
name = "Norte"
nodes = ["norte-1"]
[[yards.areas]]
name = "Sur"
nodes = ["sur-2"]
""")
    return path


def skip_without_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh --browser (./run-tests does)")


def add_staff(settings: Any, config: Path, people: list[tuple[str, str]],
              password: str) -> None:
    """The staff accounts the tests log in with, in the server's account store."""
    with AccountStore(settings.accounts.database) as accounts:
        for name, role in people:
            accounts.add(name, role, password)


PASSWORD = "clave-de-prueba-1"


@dataclass
class Yard:
    server: Server
    yard: str
    url: str
    phones: Phones
    nodes: NodeSide
    seq: dict[str, int]
    settings: Any

    def send(self, node: str, kind: str, **values: Any) -> None:
        """Publish as ``node`` would, and wait until the server stored it (its ack)."""
        self.seq[node] = self.seq.get(node, 0) + 1
        seq, ts = self.seq[node], time.time()
        if kind == "telemetry":
            self.nodes.telemetry(node, seq, ts, **values)
        else:
            self.nodes.publish(node, "event", encode(Event(ts=ts, seq=seq, type=kind, **values)))
        self.nodes.wait_ack(node, seq)

    def trays_out(self) -> None:
        for node, trays in (("norte-1", ("t1", "t2")), ("sur-2", ("t1",))):
            self.send(node, "telemetry", temperature_c=31.0, humidity_pct=58.0, rain=False,
                      trays=dict.fromkeys(trays, "extended"))


@contextmanager
def running_yard(tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB,
                 unique_name: str) -> Iterator[Yard]:
    """The real server for one yard (its own database), staff accounts, a dry forecast,
    the phones' webhook and the nodes' side of the broker; all stopped after the block.

    Each browser's test module makes its ``yard`` fixture from this."""
    phones = Phones()
    # The demo's local Open-Meteo, the next hours dry as it sees them (no alert from it).
    forecast = ForecastReplay(rain_ahead=lambda: False)
    api_port = free_port()
    config = write_server_config(
        tmp_path / "server.toml", yard=unique_name, broker=mosquitto,
        influxdb=influxdb, api_port=api_port, phones_url=phones.url,
        forecast_url=forecast.url)
    settings = load_server_settings(config)
    add_staff(settings, config, [("ana", "supervisor"), ("rosa", "worker"),
                                 ("carmen", "quality")], PASSWORD)
    server = Server(settings).start()
    nodes = NodeSide(mosquitto, unique_name)
    handle = Yard(server, unique_name, f"http://127.0.0.1:{server.api_port}", phones, nodes, {},
                  settings)
    try:
        yield handle
    finally:
        nodes.close()
        handle.server.stop()  # the one running now (a test may have restarted it)
        forecast.close()
        phones.close()
