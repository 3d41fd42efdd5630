"""The alerts see every message when the ingest is spread over a share group.

Real Mosquitto and InfluxDB (fixtures from tests/conftest.py). The two-process
test runs the real commands, ``secadero server run`` (ingest + alerts) and
``secadero server ingest`` (store only), in one MQTT 5 share group; ntfy is a
local HTTP server on 127.0.0.1 (``alert_helpers.FakeService``) answering in
its documented JSON format. No forecast is configured (no ``[forecast]``
section), so the only alert is the one the rain plate raises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from alert_helpers import FakeService
from conftest import influx_login_toml, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from secadero.contract import Envelope, Event, Status, Telemetry, encode, node_topic
from secadero.devservices import SERVER_USER, Mosquitto, free_port
from secadero.server.alerts.feed import AlertFeed, alert_feed_for
from secadero.server.metrics import Health, Registry
from secadero.settings import load_server_settings

pytestmark = pytest.mark.integration


def write_config(folder: Path, *, influx_url: str, name: str, client_id: str,
                 broker: Mosquitto | None = None, mqtt_port: int = 1883,
                 share_group: str, http_port: int = 0, ntfy_url: str = "http://127.0.0.1:9",
                 recipients: tuple[str, ...] = ("luis",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    text = f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port if broker else mqtt_port}
client_id = "{client_id}"
{broker.toml_credentials(SERVER_USER) if broker else ""}[influxdb]
url = "{influx_url}"
database = "{name}"
{influx_login_toml(influx_url)}[ingest]
share_group = "{share_group}"
http_port = {http_port}
flush_interval_s = 0.02
state_file = "{folder}/state.json"
set_aside_file = "{folder}/set-aside.jsonl"
downsample_pending_file = "{folder}/downsample.json"
[alerts]
database = "{folder}/alerts.sqlite3"
api_port = {api_port}
public_url = "http://127.0.0.1:{api_port}"
drying_start = "00:00"
drying_end = "24:00"
[notifiers.ntfy]
url = "{ntfy_url}"
[[yards]]
id = "{name}"
name = "Norte"
latitude = -6.57
longitude = -76.14
"""
    for recipient in recipients:
        text += f"""
[[yards.recipients]]
name = "{recipient.title()}"
role = "worker"
channels = ["push"]
ntfy_topic = "{name}-{recipient}"
"""
    path = folder / "server.toml"
    path.write_text(text)
    return path


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as {'name{labels}': value}; empty while the process is not listening."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def events_received(port: int) -> float:
    return scrape(port).get('secadero_ingest_messages_received_total{kind="event"}', 0.0)


class Node:
    """A plain paho client (not our code) publishing as the yard's node n1."""

    def __init__(self, broker: Mosquitto, yard: str) -> None:
        self.yard = yard
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(*broker.client_credentials())
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def event(self, seq: int, type_: str, **fields: Any) -> None:
        payload = encode(Event(ts=time.time(), seq=seq, type=type_, **fields))
        self.client.publish(node_topic(self.yard, "n1", "event"), payload,
                            qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def ntfy() -> Iterator[FakeService]:
    service = FakeService()
    service.default = service.json_reply({"id": "m1", "event": "message"})
    yield service
    service.close()


def test_a_rain_started_in_the_ingest_only_share_raises_one_alert_once(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str,
        ntfy: FakeService) -> None:
    yard = unique_name
    ports = {"run": free_port(), "ingest": free_port()}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = {}
    for role in ("run", "ingest"):
        config = write_config(tmp_path / role, broker=mosquitto,
                              influx_url=influxdb.url, name=unique_name,
                              client_id=f"{role}-{unique_name}", share_group=unique_name,
                              http_port=ports[role], ntfy_url=ntfy.url,
                              recipients=("luis", "rosa"))
        logs[role] = (tmp_path / f"{role}.log").open("wb")
        processes[role] = subprocess.Popen(
            [sys.executable, "-m", "secadero.cli", "server", role, "--config", str(config)],
            env=env, stdout=logs[role], stderr=subprocess.STDOUT)
    node = Node(mosquitto, yard)

    def server_log() -> str:
        return "".join((tmp_path / f"{r}.log").read_text()[-2000:] for r in processes)

    try:
        for role, port in ports.items():
            wait_until(lambda p=port: scrape(p).get("secadero_ingest_mqtt_connected") == 1,
                       timeout_s=20.0, what=f"{role} subscribed\n{server_log()}")
        wait_until(lambda: scrape(ports["run"]).get("secadero_alert_feed_mqtt_connected") == 1,
                   timeout_s=20.0, what=f"the alerts' feed subscribed\n{server_log()}")
        assert "secadero_alert_feed_mqtt_connected" not in scrape(ports["ingest"])
        # The feed's thread and subscription are part of the `run` process's health.
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['run']}/healthz",
                                    timeout=5) as response:
            assert (response.status, response.read()) == (200, b"ok\n")

        # Mosquitto hands each shared filter's messages to its members in
        # turn. Send harmless events one at a time until one went to the
        # `run` process: the next event is then the `ingest` process's.
        sent, run_before, ingest_before = 0, 0.0, 0.0
        while True:
            sent += 1
            assert sent <= 6, "the `run` process got none of the events"
            node.event(sent, "tray_retracted", tray="t1")
            run_now, ingest_now = wait_until(
                lambda n=sent: (lambda c: c if sum(c) == n else None)(
                    (events_received(ports["run"]), events_received(ports["ingest"]))),
                timeout_s=20.0, what=f"event {sent} received")
            went_to_run = run_now > run_before
            run_before, ingest_before = run_now, ingest_now
            if went_to_run:
                break
        node.event(sent + 1, "rain_started")
        requests = [ntfy.received.get(timeout=10), ntfy.received.get(timeout=10)]
        assert (events_received(ports["run"]), events_received(ports["ingest"])) == (
            run_before, ingest_before + 1), "the rain_started went to the `run` process"
        feed = scrape(ports["run"])
        assert feed['secadero_alert_feed_messages_received_total{kind="event"}'] == sent + 1
        bodies = [r.json() for r in requests]
        assert sorted(b["topic"] for b in bodies) == [f"{yard}-luis", f"{yard}-rosa"]
        assert all(b["message"].startswith("LLUEVE en el tendal Norte (sensor n1)")
                   for b in bodies)
        # Stopping `run` ends its dispatcher: nothing can be sent after it exits.
        processes["run"].send_signal(signal.SIGTERM)
        assert processes["run"].wait(30) == 0, server_log()
        assert ntfy.received.empty() and len(ntfy.requests) == 2
    finally:
        node.close()
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(20)
        for log in logs.values():
            log.close()


def test_the_feed_hands_every_message_to_the_observer_and_counts_the_bad_ones(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> None:
    settings = load_server_settings(write_config(
        tmp_path, broker=mosquitto, influx_url=influxdb.url, name=unique_name,
        client_id=f"feed-{unique_name}", share_group=unique_name))
    seen: list[tuple[str, str, type]] = []
    all_seen = threading.Event()

    def observe(envelope: Envelope, received_at: float) -> None:
        if envelope.node == "boom":
            raise RuntimeError("an observer bug")
        seen.append((envelope.yard, envelope.kind, type(envelope.message)))
        if envelope.kind == "status":
            all_seen.set()

    registry, health = Registry(), Health()
    feed = AlertFeed(settings, observe, registry=registry, health=health).start()
    node = Node(mosquitto, unique_name)
    try:
        assert feed.wait_subscribed(10)
        publish = node.client.publish
        publish(node_topic(unique_name, "n1", "telemetry"),
                encode(Telemetry(ts=time.time(), seq=1, humidity_pct=50.0)), qos=1)
        publish(node_topic(unique_name, "n1", "telemetry"), b"{not json", qos=1)
        publish(node_topic(unique_name, "boom", "telemetry"),
                encode(Telemetry(ts=time.time(), seq=1, humidity_pct=50.0)), qos=1)
        node.event(2, "rain_started")
        publish(node_topic(unique_name, "n1", "status"),
                json.dumps({"state": "online", "ts": time.time()}).encode(), qos=1)
        assert all_seen.wait(10)
        assert seen == [(unique_name, "telemetry", Telemetry), (unique_name, "event", Event),
                        (unique_name, "status", Status)]
        metrics = registry.part("alert_feed")
        assert metrics.by_label("messages_received_total", "kind") == {
            "telemetry": 2, "event": 1, "status": 1}
        assert metrics.by_label("messages_rejected_total", "reason") == {"invalid_json": 1}
        assert metrics.get("observer_errors_total") == 1
        assert health.problems() == []
    finally:
        node.close()
        feed.stop()
    assert feed.client_id == f"feed-{unique_name}-alerts"


def test_without_a_share_group_there_is_no_feed(tmp_path: Path) -> None:
    settings = load_server_settings(write_config(
        tmp_path, mqtt_port=1883, influx_url="http://127.0.0.1:9", name="norte",
        client_id="solo", share_group=""))
    assert alert_feed_for(settings, lambda envelope, at: None) is None
    shared = load_server_settings(write_config(
        tmp_path / "shared", mqtt_port=1883, influx_url="http://127.0.0.1:9", name="norte",
        client_id="a", share_group="ingest"))
    assert isinstance(alert_feed_for(shared, lambda envelope, at: None), AlertFeed)
