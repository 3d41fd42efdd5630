"""Fixtures and helpers for the ingest tests: a server config per test, a node-side client.

Imported by the test modules (a conftest.py here would shadow tests/conftest.py,
which others import as ``conftest``).

The node-side client is plain paho (not our code): it publishes contract
messages the way a node does and records the ``ack`` messages the server sends.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from secadero.contract import Telemetry, encode, node_topic
from secadero.settings import ServerSettings, load_server_settings


def write_server_config(path: Path, *, mqtt_port: int, influx_url: str, database: str,
                        client_id: str, extra_ingest: str = "", extra_influx: str = "") -> Path:
    path.write_text(
        "[mqtt]\n"
        f'host = "127.0.0.1"\nport = {mqtt_port}\nclient_id = "{client_id}"\n'
        "[influxdb]\n"
        f'url = "{influx_url}"\ndatabase = "{database}"\ntimeout_s = 5\n{extra_influx}'
        "[ingest]\n"
        "http_port = 0\nflush_interval_s = 0.05\nbatch_size = 1000\n"
        f'state_file = "state.json"\nset_aside_file = "set-aside.jsonl"\n{extra_ingest}'
    )
    return path


@pytest.fixture(name="server_config")
def server_config_fixture(tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> Path:
    return write_server_config(tmp_path / "server.toml", mqtt_port=mosquitto.port,
                               influx_url=influxdb.url, database=unique_name,
                               client_id=f"ingest-{unique_name}")


@pytest.fixture(name="server_settings")
def server_settings_fixture(server_config: Path) -> ServerSettings:
    return load_server_settings(server_config)


class NodeSide:
    """A paho client playing the nodes: publishes QoS 1 and records the server's acks."""

    def __init__(self, port: int, yard: str) -> None:
        self.yard = yard
        self.acks: dict[str, list[int]] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"nodeside-{yard}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(f"secadero/v1/{yard}/+/ack", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "node-side client did not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        node = msg.topic.split("/")[3]
        with self._cond:
            self.acks.setdefault(node, []).append(json.loads(msg.payload)["seq"])
            self._cond.notify_all()

    def publish(self, node: str, kind: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(node_topic(self.yard, node, kind), payload, qos=1,  # type: ignore[arg-type]
                                   retain=retain)
        info.wait_for_publish(10)

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def telemetry(self, node: str, seq: int, ts: float, **values: Any) -> Telemetry:
        reading = Telemetry(ts=ts, seq=seq, **values)
        self.publish(node, "telemetry", encode(reading))
        return reading

    def wait_ack(self, node: str, seq: int, timeout_s: float = 15.0) -> int:
        """Wait until the server acked at least ``seq`` for ``node``; the highest ack."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while max(self.acks.get(node, [-1])) < seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no ack >= {seq} for {node}: got {self.acks}")
                self._cond.wait(remaining)
            return max(self.acks[node])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(name="node_side")
def node_side_fixture(mosquitto: Any, unique_name: str) -> Iterator[NodeSide]:
    side = NodeSide(mosquitto.port, unique_name)
    yield side
    side.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 15.0,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (for state only visible by querying, e.g. InfluxDB)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
