"""From a ``rain_started`` event on the real broker to the push request at ntfy.

Real Mosquitto and InfluxDB (fixtures from tests/conftest.py), the real
ingest (``Ingest`` with the alert service as its observer, publishing the
retained alert through the ingest's connection). ntfy and Open-Meteo are
local HTTP servers on 127.0.0.1 (``alert_helpers.FakeService``) answering in
their documented formats; the forecast is the recorded Open-Meteo response
(Weather data by Open-Meteo.com, CC BY 4.0), moved two days ahead.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from alert_helpers import FakeService
from conftest import influx_login_toml
from paho.mqtt.enums import CallbackAPIVersion

from secadero.contract import Event, alert_topic, decode_alert, encode, node_topic
from secadero.devservices import SERVER_USER, Mosquitto, free_port
from secadero.server.app import Server
from secadero.settings import load_server_settings
from tests.conftest import influx_query

DATA = Path(__file__).resolve().parent.parent / "data"
BERLIN = json.loads(
    (DATA / "open-meteo_berlin_2023-06-30_hourly_precipitation_probability.json").read_text())


def berlin_later() -> bytes:
    """The recorded response with its 24 hours moved to the day after tomorrow (UTC),
    values unchanged: InfluxDB refuses points older than its retention policy, and
    its rain (up to 100 %) must stay outside the 90-minute look-ahead, so the only
    alert in this test is the one the plate raises."""
    day = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d")
    body = dict(BERLIN, hourly=dict(BERLIN["hourly"], time=[
        t.replace("2023-06-30", day) for t in BERLIN["hourly"]["time"]]))
    return json.dumps(body).encode()

pytestmark = pytest.mark.integration


def write_config(path: Path, *, broker: Mosquitto, influx_url: str, name: str, ntfy_url: str,
                 forecast_url: str, yards: list[str]) -> Path:
    api_port = free_port()
    text = f"""
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
api_port = {api_port}
public_url = "http://127.0.0.1:{api_port}"
drying_start = "00:00"
drying_end = "24:00"
[forecast]
open_meteo_url = "{forecast_url}/v1/forecast"
retries = 0
[notifiers.ntfy]
url = "{ntfy_url}"
"""
    for yard in yards:
        text += f"""
[[yards]]
id = "{yard}"
name = "Norte"
latitude = -6.57
longitude = -76.14
[[yards.recipients]]
name = "Luis"
role = "worker"
channels = ["push"]
ntfy_topic = "{yard}-luis"
"""
    path.write_text(text)
    return path


class Watcher:
    """A plain paho client (not our code): publishes as a node, records the alert topic."""

    def __init__(self, broker: Mosquitto, yard: str) -> None:
        self.alerts: list[bytes] = []
        self.got_alert = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(*broker.client_credentials())
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(alert_topic(yard), qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.alerts.append(msg.payload)
        if json.loads(msg.payload)["state"] == "raised":
            self.got_alert.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def fakes() -> Iterator[tuple[FakeService, FakeService]]:
    ntfy, forecast = FakeService(), FakeService()
    ntfy.default = ntfy.json_reply({"id": "m1", "event": "message"})
    forecast.default = (200, {"Content-Type": "application/json"}, berlin_later())
    yield ntfy, forecast
    ntfy.close()
    forecast.close()


def test_rain_started_on_the_broker_reaches_ntfy_and_the_alert_topic(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str,
        fakes: tuple[FakeService, FakeService]) -> None:
    ntfy, forecast = fakes
    yard = unique_name
    settings = load_server_settings(write_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        name=unique_name, ntfy_url=ntfy.url, forecast_url=forecast.url, yards=[yard]))
    # The parts as `secadero server run` builds and starts them (server/app.py).
    server = Server(settings).start()
    watcher = Watcher(mosquitto, yard)
    try:
        assert server.ingest.wait_ready(15)
        event = Event(ts=time.time(), seq=1, type="rain_started")
        watcher.client.publish(node_topic(yard, "n1", "event"), encode(event), qos=1)
        request = ntfy.received.get(timeout=10)
        body = request.json()
        assert isinstance(body, dict)
        assert (request.method, request.path, body["topic"], body["priority"]) == (
            "POST", "/", f"{yard}-luis", 5)
        assert body["message"].startswith("LLUEVE en el tendal Norte (sensor n1) desde las ")
        assert body["actions"][0]["url"].startswith(
            f"{settings.alerts.public_url}/api/alerts/1/ack?token=")
        assert watcher.got_alert.wait(10)
        alert = decode_alert(json.loads(watcher.alerts[-1]))
        assert (alert.state, alert.kind, alert.severity) == ("raised", "rain_now", "critical")
        # The forecast the poller fetched from the local Open-Meteo is in InfluxDB.
        deadline = time.monotonic() + 10
        while True:
            rows = influx_query(influxdb.url, unique_name,
                                f"SELECT precip_prob_pct FROM forecast WHERE yard = '{yard}'")
            # One /write spans 24 hourly shards, which InfluxDB fills one by
            # one: a query may see part of it, so wait for the whole forecast.
            if len(rows) >= 24 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # InfluxDB is only visible by querying
        assert [r["precip_prob_pct"] for r in rows][:4] == [32, 54, 75, 97]
        assert len(rows) == 24
        # The raise is in the alert measurement, for the wall display.
        deadline = time.monotonic() + 10
        while True:
            alerts = influx_query(influxdb.url, unique_name,
                                  f"SELECT * FROM alert WHERE yard = '{yard}'")
            if alerts or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [(a["kind"], a["state"], a["severity"], a["episode"]) for a in alerts] == [
            ("rain_now", "raised", "critical", 1)]
        assert alerts[0]["message"] == body["message"]
        # One registry for the whole server: the alerts' and the notifications'
        # metrics are served beside the ingest's.
        metrics = server.registry.render()
        assert 'secadero_notify_sent_total{channel="push",provider="ntfy"} 1\n' in metrics
        assert 'secadero_alerts_open_episodes{kind="rain"} 1\n' in metrics
        assert server.health.problems() == []
    finally:
        watcher.close()
        server.stop()


def test_secadero_server_run_sends_the_push_and_stops_on_sigterm(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str,
        fakes: tuple[FakeService, FakeService]) -> None:
    """The real command: ``secadero server run`` runs the alerts beside the ingest."""
    ntfy, forecast = fakes
    yard = unique_name
    config = write_config(tmp_path / "server.toml", broker=mosquitto,
                          influx_url=influxdb.url, name=unique_name, ntfy_url=ntfy.url,
                          forecast_url=forecast.url, yards=[yard])
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "secadero.cli", "server", "run",
                                "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    watcher = Watcher(mosquitto, yard)
    try:
        # The server's MQTT session may not exist yet: publish again until the push
        # arrives. Every copy belongs to the same rain episode, so one push only.
        request = None
        deadline = time.monotonic() + 30
        seq = 0
        while request is None:
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            seq += 1
            event = Event(ts=time.time(), seq=seq, type="rain_started")
            watcher.client.publish(node_topic(yard, "n1", "event"), encode(event), qos=1)
            try:
                request = ntfy.received.get(timeout=1.0)
            except queue.Empty:
                continue
        body = request.json()
        assert isinstance(body, dict) and body["topic"] == f"{yard}-luis"
        assert watcher.got_alert.wait(10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert ntfy.received.empty() and len(ntfy.requests) == 1
    finally:
        watcher.close()
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
