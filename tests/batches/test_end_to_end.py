"""A whole drying batch through the real server: node messages to the report's text.

Real Mosquitto and InfluxDB (tests/conftest.py) and the real server
(``server/app.py``'s ``Server``: ingest, alert service, point writer, API with
the batch routes). Three days of one node's readings are published with the
node's wire format (telemetry every 5 minutes and the rain and tray events,
as a node sends them after a day offline): trays out 07:00-17:00 in air of
55 %, in at night in air of 88 %; three showers, only the first one on
extended trays (10 minutes before they came in), the others at night and
just after the trays were pulled in. The rain alert of the first shower is
written through the alert service's own point writer (``AlertPoints``),
since the live alert engine decides on the present, not on days past.
The batch is started, read and reported through the HTTP API.

The quality warnings are decided live: two more batches, one started eight
days ago still at 12 % (mould risk) and one read at 4.5 % (brittle), reach
the quality recipient through a recording notifier (the dispatcher's
``Notifier`` interface; no outside service).
"""

from __future__ import annotations

import io
import json
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pypdf
import pytest
from batch_helpers import DAY, HOUR
from conftest import influx_login_toml

from secadero.contract import Event, encode
from secadero.devservices import SERVER_USER, Mosquitto, free_port
from secadero.server.accounts import AccountStore
from secadero.server.alerts.engine import Transition
from secadero.server.app import Server
from secadero.server.influx_points import AlertPoints
from secadero.server.notifiers import Outgoing
from secadero.settings import load_server_settings
from tests.server.ingest_helpers import NodeSide

pytestmark = pytest.mark.integration


LIMA = ZoneInfo("America/Lima")
STEP_S = 300
WAIT_S = 20
# Day 0 of the batch: five days ago (inside InfluxDB's retention and the ingest's horizon).
DAY0 = (datetime.now(LIMA) - timedelta(days=5)).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)


def at(day: int, hhmm: str) -> float:
    hour, minute = map(int, hhmm.split(":"))
    return (DAY0 + timedelta(days=day, hours=hour, minutes=minute)).timestamp()


START, UNTIL = at(0, "07:00"), at(2, "17:00")
# (from, to) local times per day: trays pulled in by day, the plate wet.
TRAYS_IN = {0: [("13:10", "14:00")], 2: [("09:55", "10:30")]}
SHOWERS = {0: [("13:00", "13:40")], 1: [("22:00", "23:00")], 2: [("10:00", "10:20")]}
ALERT_RAISED = at(0, "12:55")


def within(ts: float, spans: dict[int, list[tuple[str, str]]]) -> bool:
    return any(at(day, start) <= ts < at(day, end)
               for day, pairs in spans.items() for start, end in pairs)


@dataclass(frozen=True)
class Yard:
    """The yard at one instant: what the node measures."""

    extended: bool
    wet: bool
    humidity_pct: float
    temperature_c: float


def yard_at(ts: float) -> Yard:
    local = datetime.fromtimestamp(ts, LIMA)
    daytime = 7 <= local.hour < 17
    return Yard(extended=daytime and not within(ts, TRAYS_IN), wet=within(ts, SHOWERS),
                humidity_pct=55.0 if daytime else 88.0, temperature_c=32.0 if daytime else 23.0)


def node_messages() -> list[tuple[str, bytes]]:
    """Telemetry every 5 min from day 0 06:00 to day 2 18:00, and an event per change."""
    messages: list[tuple[str, bytes]] = []
    seq = 0
    previous: Yard | None = None
    ts = at(0, "06:00")
    while ts <= at(2, "18:00"):
        now = yard_at(ts)
        if previous is not None and now.wet != previous.wet:
            seq += 1
            kind = "rain_started" if now.wet else "rain_stopped"
            messages.append(("event", encode(Event(ts=ts, seq=seq, type=kind))))
        if previous is not None and now.extended != previous.extended:
            # The second tray's limit switch a second after the first's, as on a real
            # yard (two events of one node at the same instant would be one `event` point).
            for offset_s, tray in enumerate(("t1", "t2")):
                seq += 1
                kind = "tray_extended" if now.extended else "tray_retracted"
                messages.append(("event", encode(Event(ts=ts + offset_s, seq=seq, type=kind,
                                                       tray=tray))))
        seq += 1
        state = "extended" if now.extended else "retracted"
        telemetry = {"ts": ts, "seq": seq, "temperature_c": now.temperature_c,
                     "humidity_pct": now.humidity_pct, "rain": now.wet,
                     "rain_mm": 0.4 if now.wet else 0.0,
                     # t3 and t4 carry the warnings' batches; they stay in.
                     "trays": {"t1": state, "t2": state, "t3": "retracted",
                               "t4": "retracted"}}
        messages.append(("telemetry", json.dumps(telemetry).encode()))
        previous = now
        ts += STEP_S
    return messages


class RecordingNotifier:
    """A push notifier that keeps what it was asked to send (the Notifier interface)."""

    name = "recorder"
    channel = "push"

    def __init__(self) -> None:
        self.sent: queue.Queue[Outgoing] = queue.Queue()

    def send(self, message: Outgoing) -> str | None:
        self.sent.put(message)
        return f"m{message.notification_id}"

    def close(self) -> None:
        pass


def write_config(path: Path, *, broker: Mosquitto, influx_url: str, name: str) -> Path:
    path.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
client_id = "ingest-{name}"
{broker.toml_credentials(SERVER_USER)}[influxdb]
url = "{influx_url}"
database = "{name}"
{influx_login_toml(influx_url)}[ingest]
http_port = 0
flush_interval_s = 0.05
state_file = "state.json"
set_aside_file = "set-aside.jsonl"
[alerts]
database = "alerts.sqlite3"
api_port = {free_port()}
evaluate_interval_s = 0.2
# Mould and brittle warnings wait for the drying hours: all day, so the test does not
# depend on the hour it runs at (CI at 18:05 in Lima once waited in vain for them).
drying_start = "00:00"
drying_end = "24:00"
[batches]
database = "batches.sqlite3"
[[yards]]
id = "{name}"
name = "Norte"
latitude = -6.57
longitude = -76.14
timezone = "America/Lima"
[[yards.recipients]]
name = "Carmen"
role = "quality"
language = "en"
channels = ["push"]
ntfy_topic = "carmen"
""")
    return path


class Api:
    """The supervisor's client, logged in (an account made as ``secadero users add`` does)."""

    def __init__(self, port: int, accounts: AccountStore) -> None:
        self.connection = HTTPConnection("127.0.0.1", port, timeout=30)
        accounts.add("ana", "supervisor", "supervisor password")
        self.token = ""
        status, session = self.call("POST", "/api/login", {"name": "ana",
                                                           "password": "supervisor password"})
        assert status == 200, session
        self.token = session["token"]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        payload = response.read()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(payload)
        return response.status, payload


@pytest.fixture
def running(tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str
            ) -> Iterator[tuple[Server, RecordingNotifier, Api]]:
    settings = load_server_settings(write_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        name=unique_name))
    notifier = RecordingNotifier()
    server = Server(settings, notifiers=[notifier]).start()
    assert server.api_port is not None and server.api is not None
    api = Api(server.api_port, server.api.accounts)
    yield server, notifier, api
    api.connection.close()
    server.stop()


def test_a_whole_batch_from_the_nodes_messages_to_its_report(
        running: tuple[Server, RecordingNotifier, Api], mosquitto: Any,
        unique_name: str, tmp_path: Path) -> None:
    server, notifier, api = running
    yard = unique_name
    node = NodeSide(mosquitto, yard)
    try:
        messages = node_messages()
        infos = [node.publish("norte-1", kind, payload, wait=False)
                 for kind, payload in messages]
        for info in infos:
            info.wait_for_publish(WAIT_S)
        node.wait_ack("norte-1", json.loads(messages[-1][1])["seq"], timeout_s=60)
    finally:
        node.close()
    # The first shower's rain alert, as the alert service writes it for the wall display.
    alert_points = AlertPoints(server.points)
    for ts, state in ((ALERT_RAISED, "raised"), (at(0, "14:00"), "resolved")):
        alert_points(Transition(ts=ts, yard=yard, kind="rain_now", state=state,
                                severity="critical", message="Lluvia", episode=1)
                     ).result(WAIT_S)

    status, batch = api.call("POST", "/api/batches", {
        "id": "lote-e2e", "yard": yard, "trays": ["norte-1/t1", "norte-1/t2"], "lot": "L-07",
        "member": "Familia Ruiz", "wet_weight_kg": 120, "at": START, "by": "ana"})
    assert status == 201, batch
    for day, pct in ((0, 50.0), (1, 35.0), (2, 21.0)):
        status, _ = api.call("POST", "/api/batches/lote-e2e/moisture",
                             {"moisture_pct": pct, "at": at(day, "08:00"), "by": "ana"})
        assert status == 201

    status, shown = api.call("GET", f"/api/batches/lote-e2e?until={UNTIL}")
    assert status == 200, shown
    metrics = shown["metrics"]
    # Trays out and dry air: day 0 07:00-13:00 and 14:00-17:00, day 1 07:00-17:00,
    # day 2 07:00-09:55 and 10:30-17:00 (the plate wet 13:00-13:10 on day 0).
    assert metrics["drying_h"] == pytest.approx(9 + 10 + 9 + 25 / 60, abs=0.1)
    assert metrics["sun_drying_h"] == pytest.approx(9 + 10 + 9 + 25 / 60, abs=0.1)
    assert metrics["rewetting_h"] == pytest.approx(0.0, abs=0.01)
    assert metrics["rain_exposure_min"] == pytest.approx(10.0, abs=0.5)
    # Raised 12:55; the last of the batch's trays in at 13:10:01.
    assert [(r["episode"], round(r["minutes"], 2)) for r in metrics["responses"]] == [
        (1, 15.02)]
    assert (metrics["humidity_min_pct"], metrics["humidity_max_pct"]) == (55.0, 88.0)
    assert (metrics["temperature_min_c"], metrics["temperature_max_c"]) == (23.0, 32.0)
    # 30 hours by day at 55 %, 28 at night at 88 %.
    assert metrics["humidity_mean_pct"] == pytest.approx((30 * 55 + 28 * 88) / 58, abs=0.5)
    assert metrics["gaps"] == []
    assert metrics["time_to_target_h"] is None
    estimate = shown["estimate"]
    assert estimate["reached_at"] is None
    # From 50 to 21 % in two days of ~9.5 drying hours: 7.5 % a few drying days later.
    assert UNTIL < estimate["p20_ts"] < estimate["p50_ts"] < estimate["p80_ts"]
    assert UNTIL + 0.5 * DAY < estimate["p50_ts"] < UNTIL + 8 * DAY

    # The quality warnings: a batch eight days old still at 12 %, one read at 4.5 %.
    now = server.batches.clock()  # type: ignore[union-attr]
    for batch_id, tray, started, pct in (("lote-viejo", "t3", now - 8 * DAY, 12.0),
                                         ("lote-fragil", "t4", now - DAY, 4.5)):
        assert api.call("POST", "/api/batches", {"id": batch_id, "yard": yard,
                                                 "trays": [f"norte-1/{tray}"],
                                                 "at": started})[0] == 201
        assert api.call("POST", f"/api/batches/{batch_id}/moisture",
                        {"moisture_pct": pct, "at": now - HOUR})[0] == 201
    sent: dict[str, Outgoing] = {}
    while not {"batch_mould", "batch_brittle"} <= set(sent):
        message = notifier.sent.get(timeout=WAIT_S)  # others (the node silent) pass by
        sent[message.kind] = message
    assert {m.recipient for m in sent.values()} == {"Carmen"}
    assert "lote-fragil" in sent["batch_brittle"].body
    assert "4.5%" in sent["batch_brittle"].body
    assert "lote-viejo" in sent["batch_mould"].body

    # The report: the batch's own numbers on the page.
    status, pdf = api.call("GET", f"/api/batches/lote-e2e/report.pdf?language=en&until={UNTIL}")
    assert status == 200
    assert pdf.startswith(b"%PDF")
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    for expected in ("lote-e2e", "L-07", "Familia Ruiz", "120", "28.4", "50.0", "35.0",
                     "21.0", "7.5"):
        assert expected in text, (expected, text)
    status, png = api.call("GET", f"/api/batches/lote-e2e/report.png?until={UNTIL}")
    assert (status, png[:4]) == (200, b"\x89PNG")
    (tmp_path / "lote-e2e.pdf").write_bytes(pdf)
    (tmp_path / "lote-e2e.png").write_bytes(png)
    status, csv = api.call("GET", f"/api/batches/lote-e2e/export.csv?until={UNTIL}")
    assert status == 200 and b"lote-e2e" in csv
