"""The ingest's queue stays bounded while InfluxDB is slower than the broker.

The MQTT 5 Receive Maximum asks the broker for at most ``queue_max``
unacknowledged messages; Debian's Mosquitto 2.0.11 was measured sending far
more while PUBACKs flow (190,000 queued against 10,000 in a benchmark), so the
ingest also stops reading its socket while the queue is over ``queue_max``.
Real Mosquitto and InfluxDB; InfluxDB is made slow by a writer that waits
before each real write.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from ingest_helpers import (  # noqa: F401 (fixtures are found by their names)
    NodeSide,
    ledger_check,
    node_side_fixture,
    write_server_config,
)

from secadero.contract import Telemetry, encode, node_topic
from secadero.server.influx import InfluxV1Writer
from secadero.server.ingest import Ingest
from secadero.server.mqtt_client import READ_SIZE, FastReadClient, fast_read_client
from secadero.settings import MqttSettings, load_server_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUE_MAX = 300
MESSAGES = 6000


class SlowWriter(InfluxV1Writer):
    """The real 1.x writer, 30 ms slower per write: InfluxDB on a busy disk."""

    def write(self, body: bytes) -> None:
        time.sleep(0.03)
        super().write(body)


class MeasuringClient(FastReadClient):
    """The ingest's client; ``measure()`` runs after each message its fast path hands over."""

    def measure(self) -> None:
        pass

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "on_publish_received" and value is not None:
            handler = value

            def value(topic: str, payload: bytes, mid: int, qos: int) -> None:
                handler(topic, payload, mid, qos)
                self.measure()
        super().__setattr__(name, value)


def test_queue_stays_bounded_and_nothing_is_lost(tmp_path: Path, mosquitto: Any, influxdb: Any,
                                                 node_side: NodeSide, unique_name: str) -> None:
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}",
        ingest={"queue_max": QUEUE_MAX, "batch_size": 600, "flush_interval_s": 0.05}))
    clients: list[MeasuringClient] = []

    def measuring_client(mqtt_settings: MqttSettings) -> FastReadClient:
        clients.append(fast_read_client(mqtt_settings, client_class=MeasuringClient))
        return clients[-1]

    ingest = Ingest(settings, writer=SlowWriter(settings.influxdb),
                    client_factory=measuring_client)
    deepest = [0]

    def measure() -> None:
        deepest[0] = max(deepest[0], ingest.queue_depth)

    [client] = clients
    client.measure = measure  # type: ignore[method-assign]
    base_ts = float(int(time.time()) - 600)
    ledger: dict[tuple[str, int], float] = {}
    with ingest:
        assert ingest.wait_ready(15)
        for i in range(MESSAGES):
            node, seq = f"n{i % 10}", i // 10 + 1
            ts = base_ts + seq * 0.25
            temperature = 20.0 + seq / 1000
            node_side.telemetry(node, seq, ts, temperature_c=temperature, humidity_pct=70.0,
                                wait=i == MESSAGES - 1)
            ledger[(node, round(ts * 1000))] = temperature
        for n in range(10):
            assert node_side.wait_ack(f"n{n}", MESSAGES // 10, timeout_s=60) == MESSAGES // 10
    # Over queue_max by at most what one socket read brings, plus the packet
    # a previous read had cut: a PUBLISH here is the topic and payload plus
    # 8 bytes of MQTT (the shortest is seq 1).
    shortest = len(node_topic(unique_name, "n0", "telemetry")) + len(encode(Telemetry(
        ts=base_ts + 0.25, seq=1, temperature_c=20.001, humidity_pct=70.0))) + 8
    assert deepest[0] <= QUEUE_MAX + READ_SIZE // shortest + 1, deepest[0]
    assert ledger_check(influxdb.url, unique_name, unique_name, ledger) == {
        "published": MESSAGES, "stored": MESSAGES, "lost": 0, "duplicated": 0, "invalid": 0}
