"""Shared bits of the node benchmarks (bench/edge_*.py): a private broker and an acking server.

Run the benchmarks by hand from the repository root, e.g.
``.venv/bin/python bench/edge_drain.py``; they print their figures.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from secadero import contract
from secadero.devservices import Mosquitto

ROOT = Path(__file__).resolve().parent.parent


def private_broker() -> tuple[Mosquitto, Path]:
    workdir = Path(tempfile.mkdtemp(prefix="secadero-bench-"))
    return Mosquitto(workdir=workdir / "mosquitto").start(), workdir


class AckingServer:
    """Plays the ingest: receives a yard's messages and acks each node every ``ack_every``.

    Records the receive time of every (node, seq) the first time it arrives.
    """

    def __init__(self, broker: Mosquitto, yard: str, *, ack_every: int = 500,
                 ack_interval_s: float = 0.2) -> None:
        self.yard = yard
        self.first_seen: dict[tuple[str, int], float] = {}
        self.received = 0
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._highest: dict[str, int] = {}
        self._acked: dict[str, int] = {}
        self._cond = threading.Condition()
        self.ack_every = ack_every
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-server-{yard}")
        ready = threading.Event()
        self.client.on_connect = lambda c, *a: c.subscribe(f"{contract.ROOT}/{yard}/+/+", qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        # The harness plays the server here (it acks any node of any yard).
        self.client.username_pw_set(*broker.client_credentials())
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("bench server could not subscribe")
        self._stop = threading.Event()
        self._ack_interval_s = ack_interval_s
        threading.Thread(target=self._acker, daemon=True).start()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        kind = message.topic.rsplit("/", 1)[1]
        if kind not in ("telemetry", "event"):
            return
        node = message.topic.split("/")[3]
        body = json.loads(message.payload)
        with self._cond:
            self.received += 1
            key = (node, body["seq"])
            if key not in self.first_seen:
                self.first_seen[key] = now
            if kind == "event":
                self.events.append((now, body))
            # Contiguous from the last ack: what a real ingest could ack.
            highest = self._highest.get(node, self._acked.get(node, 0))
            while (node, highest + 1) in self.first_seen:
                highest += 1
            self._highest[node] = highest
            if highest - self._acked.get(node, 0) >= self.ack_every:
                self._ack(node, highest)
            self._cond.notify_all()

    def _ack(self, node: str, seq: int) -> None:
        self._acked[node] = seq
        self.client.publish(contract.node_topic(self.yard, node, "ack"),
                            contract.encode(contract.Ack(seq=seq)), qos=1)

    def _acker(self) -> None:
        while not self._stop.wait(self._ack_interval_s):
            with self._cond:
                for node, highest in self._highest.items():
                    if highest > self._acked.get(node, 0):
                        self._ack(node, highest)

    def wait_for(self, predicate: Any, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout_s)

    def close(self) -> None:
        self._stop.set()
        self.client.loop_stop()
        self.client.disconnect()


def node_config(directory: Path, *, yard: str, broker: Mosquitto, sample_interval_s: float,
                speed: float = 1.0, resend_after_s: float = 30.0, extra: str = "") -> Path:
    """The node logs in as its own user (`secadero nodes add`'s rights)."""
    username, _ = broker.node_credentials(yard, "n1")
    path = directory / "node.toml"
    path.write_text(f"""
[node]
yard = "{yard}"
id = "n1"
trays = ["t1", "t2"]
sample_interval_s = {sample_interval_s}
hardware = "simulated"
simulation_seed = 3
simulation_speed = {speed}

[mqtt]
port = {broker.port}
{broker.toml_credentials(username)}
[outbox]
path = "{directory / 'outbox.sqlite3'}"
resend_after_s = {resend_after_s}
{extra}
""")
    return path


def python() -> str:
    return sys.executable


def event_listener_process(port: int, credentials: tuple[str, str], yard: str, queue: Any,
                           ready: Any) -> None:
    """In a separate process (no GIL shared with the node): put (perf_counter, event) on a queue.

    ``time.perf_counter`` is CLOCK_MONOTONIC on Linux, the same clock in every
    process, so arrival times compare with the sender's. Acks every message.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-events-{yard}")

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        body = json.loads(message.payload)
        node = message.topic.split("/")[3]
        if message.topic.endswith("/event"):
            queue.put((now, body))
        c.publish(contract.node_topic(yard, node, "ack"),
                  contract.encode(contract.Ack(seq=body["seq"])), qos=1)

    client.on_connect = lambda c, *a: c.subscribe(f"{contract.ROOT}/{yard}/+/+", qos=1)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = lambda c, u, m: on_message(c, u, m) if not m.topic.endswith(
        "/status") else None
    client.username_pw_set(*credentials)
    client.connect("127.0.0.1", port)
    client.loop_forever()
