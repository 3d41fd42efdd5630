"""Fixtures and helpers for the ingest tests: a server config per test, a node-side client.

Imported by the test modules (a conftest.py here would shadow tests/conftest.py,
which others import as ``conftest``).

The node-side client is plain paho (not our code): it publishes contract
messages the way a node does and records the ``ack`` messages the server sends.
It logs in as the broker's harness (it plays every node of the test's yard); the
server logs in as the broker's server user, with its production rights.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import wait_until  # noqa: F401 (the ingest tests import it from here)
from paho.mqtt.enums import CallbackAPIVersion

from secadero.contract import Telemetry, encode, node_topic
from secadero.devservices import INFLUX_ADMIN, SERVER_USER, InfluxDB, Mosquitto, influx_at
from secadero.settings import ServerSettings, load_server_settings


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # strings and numbers read the same in TOML


def write_server_config(path: Path, *, influx_url: str, database: str, client_id: str,
                        broker: Mosquitto | None = None, mqtt_port: int = 1,
                        ingest: dict[str, Any] | None = None,
                        influx: dict[str, Any] | None = None,
                        influx_behind: InfluxDB | None = None) -> Path:
    """A server.toml for one test; ``ingest`` / ``influx`` override the defaults below.

    With ``broker`` the server logs in as the broker's server user (its production
    rights); without, ``mqtt_port`` is for settings that never connect. It logs in
    to the private InfluxDB at ``influx_url`` (or ``influx_behind`` a proxy there) as
    its admin: each test makes its own database.
    """
    influx_db = influx_behind or influx_at(influx_url)
    influx_login = ({"username": INFLUX_ADMIN,
                     "password_file": str(influx_db.secret_file(INFLUX_ADMIN))}
                    if influx_db is not None else {})
    mqtt_section: dict[str, Any] = {"host": "127.0.0.1", "port": mqtt_port,
                                    "client_id": client_id}
    if broker is not None:
        mqtt_section |= {"port": broker.port, "username": SERVER_USER,
                         "password_file": str(broker.secret_file(SERVER_USER))}
    sections = {
        "mqtt": mqtt_section,
        "influxdb": {"url": influx_url, "database": database, "timeout_s": 5,
                     **influx_login, **(influx or {})},
        "ingest": {"http_port": 0, "flush_interval_s": 0.05, "batch_size": 1000,
                   "state_file": "state.json", "set_aside_file": "set-aside.jsonl",
                   **(ingest or {})},
    }
    path.write_text("".join(
        f"[{name}]\n" + "".join(f"{key} = {_toml_value(value)}\n" for key, value in keys.items())
        for name, keys in sections.items()))
    return path


@pytest.fixture(name="server_config")
def server_config_fixture(tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> Path:
    return write_server_config(tmp_path / "server.toml", broker=mosquitto,
                               influx_url=influxdb.url, database=unique_name,
                               client_id=f"ingest-{unique_name}")


@pytest.fixture(name="server_settings")
def server_settings_fixture(server_config: Path) -> ServerSettings:
    return load_server_settings(server_config)


class NodeSide:
    """A paho client playing the nodes: publishes QoS 1 and records the server's acks."""

    def __init__(self, broker: Mosquitto, yard: str) -> None:
        self.yard = yard
        self.acks: dict[str, list[int]] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"nodeside-{yard}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(*broker.client_credentials())
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(f"secadero/v1/{yard}/+/ack", qos=1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "node-side client did not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        node = msg.topic.split("/")[3]
        with self._cond:
            self.acks.setdefault(node, []).append(json.loads(msg.payload)["seq"])
            self._cond.notify_all()

    def publish(self, node: str, kind: str, payload: bytes, *, retain: bool = False,
                wait: bool = True) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(node_topic(self.yard, node, kind), payload, qos=1,  # type: ignore[arg-type]
                                   retain=retain)
        if wait:
            info.wait_for_publish(10)
        return info

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def telemetry(self, node: str, seq: int, ts: float, *, wait: bool = True,
                  **values: Any) -> mqtt.MQTTMessageInfo:
        return self.publish(node, "telemetry", encode(Telemetry(ts=ts, seq=seq, **values)),
                            wait=wait)

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
    side = NodeSide(mosquitto, unique_name)
    yield side
    side.close()


class TcpProxy:
    """A small TCP proxy on loopback in front of InfluxDB, to inject its faults.

    Modes (applied to new connections; changing the mode closes the open ones):
    ``pass`` forwards bytes both ways; ``http500`` answers every request with
    InfluxDB's 500 ``{"error":"timeout"}``; ``blackhole`` accepts and reads
    but never answers (a hung server: the client's timeout must fire).
    """

    def __init__(self, target_port: int, mode: str = "pass") -> None:
        import socket

        self.target_port = target_port
        self.mode = mode
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        with self._lock:
            open_sockets, self._open = self._open, []
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, self.mode), daemon=True).start()

    def _serve(self, conn: Any, mode: str) -> None:
        import socket

        try:
            if mode == "pass":
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                with self._lock:
                    self._open.append(upstream)
                threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()
                self._pump(conn, upstream)
            elif mode == "http500":
                while conn.recv(65536):
                    body = b'{"error":"timeout"}'
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\n"
                                 b"Content-Type: application/json\r\nConnection: close\r\n"
                                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                                 + body)
                    break
                conn.close()
            else:  # blackhole
                while conn.recv(65536):
                    pass
        except OSError:
            pass

    @staticmethod
    def _pump(source: Any, target: Any) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.set_mode("closed")


def ledger_check(url: str, database: str, yard: str,
                 published: dict[tuple[str, int], float]) -> dict[str, int]:
    """Compare what was published with what InfluxDB holds (the Jepsen "set" check).

    ``published`` maps (node, time in ms) to the temperature sent. Returns
    counts of lost, duplicated (more rows than distinct keys) and invalid
    (stored but never published, or a different value) climate readings.
    """
    from conftest import influx_query

    rows = influx_query(url, database,
                        f"SELECT temperature_c FROM climate WHERE yard = '{yard}' GROUP BY node")
    stored: dict[tuple[str, int], list[float]] = {}
    for row in rows:
        stored.setdefault((row["node"], row["time"]), []).append(row["temperature_c"])
    return {
        "published": len(published),
        "stored": len(rows),
        "lost": sum(1 for key in published if key not in stored),
        "duplicated": sum(len(values) - 1 for values in stored.values()),
        "invalid": sum(1 for key, values in stored.items()
                       if key not in published or values[0] != published[key]),
    }


def metric_value(port: int, name: str) -> float:
    """Sum of a ``secadero_ingest_<name>`` metric on the server's /metrics; -1 if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return -1
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(f"secadero_ingest_{name}"))
