"""Helpers for the node tests: a node config writer, a node subprocess, a broker listener.

Imported by the test modules (fixtures too: a conftest.py here would shadow
tests/conftest.py for the modules that ``from conftest import ...``).

The listener is a plain paho client, independent of the node's code, that
records every message on the test's yard and decodes it with the contract.
Tests play the server by publishing acks through it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from secadero import contract
from secadero.devservices import HARNESS_USER, Mosquitto


def write_node_config(directory: Path, *, yard: str, node: str = "n1",
                      broker: Mosquitto | None = None, port: int | None = None,
                      username: str = HARNESS_USER,
                      sample_interval_s: float = 0.2, resend_after_s: float = 30.0,
                      trays: tuple[str, ...] = ("t1", "t2"), seed: int = 7,
                      speed: float = 1.0, max_bytes: int | None = None,
                      extra: str = "", keepalive_s: int = 30) -> Path:
    """A node TOML like the ones the demo writes; returns its path.

    With ``broker`` the node logs in there as ``username`` (the harness by default,
    which may play any node; a user of ``broker.add_node`` for the node's own
    rights); ``port`` overrides the broker's (its TLS listener), or alone names a
    port where no broker listens.
    """
    tray_list = ", ".join(f'"{t}"' for t in trays)
    if port is None:
        assert broker is not None, "give the broker or a port"
        port = broker.port
    login = broker.toml_credentials(username) if broker is not None else ""
    text = f"""
[node]
yard = "{yard}"
id = "{node}"
trays = [{tray_list}]
sample_interval_s = {sample_interval_s}
hardware = "simulated"
simulation_seed = {seed}
simulation_speed = {speed}

[mqtt]
host = "127.0.0.1"
port = {port}
keepalive_s = {keepalive_s}
{login}
[outbox]
path = "{directory / f"{node}.sqlite3"}"
resend_after_s = {resend_after_s}
{f"max_bytes = {max_bytes}" if max_bytes else ""}
{extra}
"""
    path = directory / f"{node}.toml"
    path.write_text(text)
    return path


def clear_retained(port: int, topics: list[str], credentials: tuple[str, str] | None) -> None:
    """Delete retained messages (publish an empty retained payload) on a broker, best effort.

    The session broker is shared by every test; a node's retained status left
    behind would reach the next test that subscribes to every yard. ``credentials``:
    a user who may write them (the node's own, or the harness).
    """
    if not topics or credentials is None:
        return
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cleaner-{os.getpid()}")
    client.username_pw_set(*credentials)
    try:
        client.connect("127.0.0.1", port)
    except OSError:
        return  # the broker is gone: nothing retained there any more
    client.loop_start()
    try:
        for topic in topics:
            with contextlib.suppress(RuntimeError, ValueError):
                client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


def status_topic_of(config: Path) -> tuple[int, str, tuple[str, str] | None]:
    """The broker port, retained status topic and login a node config points at."""
    import tomllib

    data = tomllib.loads(config.read_text())
    mqtt_section = data["mqtt"]
    credentials = None
    if "username" in mqtt_section:
        with contextlib.suppress(OSError):  # a removed user's secret is gone
            credentials = (mqtt_section["username"],
                           Path(mqtt_section["password_file"]).read_text().strip())
    return (mqtt_section["port"],
            contract.node_topic(data["node"]["yard"], data["node"]["id"], "status"), credentials)


class NodeProcess:
    """``secadero edge run`` as a child process; stopped by its PID."""

    def __init__(self, config: Path, *, preexec: Callable[[], None] | None = None) -> None:
        self.config = config
        self.stderr_path = config.with_suffix(".stderr.log")
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115 -- closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "secadero.cli", "edge", "run", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=self._stderr, preexec_fn=preexec,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def pid(self) -> int:
        return self.process.pid

    def terminate(self, timeout_s: float = 30.0) -> tuple[int, bytes]:
        # systemd's TimeoutStopSec for the node (firmware/provisioning/secadero-node.service):
        # its shutdown may wait up to 15 s for the sampler alone, then for the broker.
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        self.process.kill()
        self.wait(10)

    def wait(self, timeout_s: float) -> tuple[int, bytes]:
        out, _ = self.process.communicate(timeout=timeout_s)
        self._stderr.close()
        return self.process.returncode, out

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.communicate(timeout=10)
        self._stderr.close()


class Listener:
    """An independent MQTT client recording and decoding one yard's messages."""

    def __init__(self, broker: Mosquitto, yard: str, *, client_id: str | None = None,
                 clean_session: bool = True) -> None:
        self.yard = yard
        self.messages: list[tuple[str, bytes, bool]] = []
        self.decoded: list[contract.Envelope] = []
        self.arrived_s: list[float] = []  # monotonic arrival time of each decoded message
        self.undecodable: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"listener-{yard}-{os.getpid()}",
                                  clean_session=clean_session)
        self.client.username_pw_set(*broker.client_credentials())
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("listener could not subscribe")

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(f"{contract.ROOT}/{self.yard}/#", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))
            try:
                self.decoded.append(contract.decode(message.topic, bytes(message.payload)))
                self.arrived_s.append(time.monotonic())
            except contract.ProtocolError:
                self.undecodable.append((message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[contract.Envelope]], bool],
                 timeout_s: float = 15.0) -> list[contract.Envelope]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self.decoded):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out; got {len(self.decoded)} messages, last: "
                        f"{[e.kind for e in self.decoded[-5:]]}")
                self._cond.wait(remaining)
            return list(self.decoded)

    def seqs(self, node: str = "n1", kinds: tuple[str, ...] = ("telemetry", "event")
             ) -> list[int]:
        with self._cond:
            return [e.message.seq for e in self.decoded  # type: ignore[union-attr]
                    if e.node == node and e.kind in kinds]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)

    def ack(self, node: str, seq: int) -> None:
        self.publish(contract.node_topic(self.yard, node, "ack"),
                     contract.encode(contract.Ack(seq=seq)))

    def close(self) -> None:
        """Disconnect, first deleting the retained status and alert messages of this yard.

        The session broker is shared by every test; retained messages left
        behind would be delivered to the next test that subscribes widely.
        """
        with self._cond:
            topics = {topic for topic, _, _ in self.messages
                      if topic.endswith("/status") or topic.endswith("/alert")}
        for topic in sorted(topics):
            with contextlib.suppress(RuntimeError, ValueError):
                self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()


def wait_for_ingest(listener: Listener, yard: str) -> None:
    """Publish a probe reading until the ingest acks it: then it is subscribed."""
    topic = contract.node_topic(yard, "probe", "telemetry")
    payload = contract.encode(contract.Telemetry(ts=round(time.time(), 3), seq=1, rain=False))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listener.publish(topic, payload)
        try:
            listener.wait_for(lambda env: any(e.kind == "ack" and e.node == "probe"
                                              for e in env), timeout_s=0.5)
            return
        except AssertionError:
            continue
    raise AssertionError("the ingest never acked the probe")


def outbox_seqs(path: Path) -> list[int]:
    """The seqs still in a node's outbox, read with sqlite3 directly (not our Outbox class)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return [row[0] for row in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            # The node has not created its tables yet, or they are still only
            # in the WAL, which a read-only connection may not see: "nothing
            # known yet", not "empty". Callers poll.
            return []
        raise
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0,
               interval_s: float = 0.05) -> None:
    """Poll a condition we cannot be notified of (another process's files)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval_s)


def mock_hardware(settings: Any, script: list[Any] | None = None) -> Any:
    """The node's drivers on a fresh MockFactory with a scripted DHT; no simulated yard.

    The test drives the pins itself (``hardware.pin_factory.pin(n)``).
    """
    from gpiozero.pins.mock import MockFactory

    from secadero.edge.hardware import NodeHardware
    from secadero.firmware.dht import DHT22Sensor, ScriptedDHT
    from secadero.firmware.outputs import Beacon, Buzzer, SilenceButton
    from secadero.firmware.rain import RainPlate, TippingBucket
    from secadero.firmware.trays import TrayLimitSwitch

    factory = MockFactory()
    pins = settings.pins
    return NodeHardware(
        climate=DHT22Sensor(ScriptedDHT(script or [(25.0, 60.0)]), min_interval_s=0.0),
        plate=RainPlate(pins.rain_plate_pin, wet_after_s=pins.wet_after_s,
                        dry_after_s=pins.dry_after_s, pin_factory=factory),
        gauge=TippingBucket(pins.gauge_pin, pin_factory=factory),
        trays={tray: TrayLimitSwitch(a, b, debounce_s=0.02, pin_factory=factory)
               for tray, a, b in pins.tray_pins},
        beacon=Beacon(pins.beacon_pin, pin_factory=factory),
        buzzer=Buzzer(pins.buzzer_pin, pin_factory=factory),
        silence=SilenceButton(pins.silence_pin, pin_factory=factory),
        pin_factory=factory,
    )


@pytest.fixture(name="listener_factory")
def listener_factory_fixture(mosquitto: Any) -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(yard: str, **kwargs: Any) -> Listener:
        listener = Listener(mosquitto, yard, **kwargs)
        made.append(listener)
        return listener

    yield make
    for listener in made:
        listener.close()


@pytest.fixture(name="node_processes")
def node_processes_fixture() -> Iterator[Callable[..., NodeProcess]]:
    made: list[NodeProcess] = []

    def start(config: Path, **kwargs: Any) -> NodeProcess:
        node = NodeProcess(config, **kwargs)
        made.append(node)
        return node

    yield start
    for node in made:
        node.close()
    for node in made:
        port, topic, credentials = status_topic_of(node.config)
        clear_retained(port, [topic], credentials)
