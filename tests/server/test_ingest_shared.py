"""Scale-out: two ingest processes share the load through an MQTT 5 shared subscription.

Real Mosquitto and InfluxDB. Each message goes to one process of the group;
each process hears what the other stored, so the node's cumulative ack
still covers everything.
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
from secadero.server.ingest import Ingest, _ranges

from secadero.settings import load_server_settings

pytestmark = pytest.mark.integration


def test_ranges() -> None:
    assert _ranges([8, 1, 2, 3, 7, 2]) == [(1, 3), (7, 8)]
    assert _ranges([]) == []


def test_two_processes_share_the_load_and_store_each_message_once(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    ingests = []
    for index in (1, 2):
        folder = tmp_path / f"p{index}"
        folder.mkdir()
        config = write_server_config(
            folder / "server.toml", mqtt_port=mosquitto.port, influx_url=influxdb.url,
            database=unique_name, client_id=f"ingest-{index}-{unique_name}",
            ingest={"share_group": unique_name, "flush_interval_s": 0.02})
        ingests.append(Ingest(load_server_settings(config)))
    ledger: dict[tuple[str, int], float] = {}
    base = float(int(time.time()) - 3600)
    try:
        for ingest in ingests:
            ingest.start()
            assert ingest.wait_ready(15)
        for seq in range(1, 201):
            for node in ("n1", "n2"):
                ts = base + seq * 0.25
                temperature = 20.0 + seq / 1000
                node_side.telemetry(node, seq, ts, temperature_c=temperature, humidity_pct=50.0,
                                    wait=False)
                ledger[(node, round(ts * 1000))] = temperature
        assert node_side.wait_ack("n1", 200) == 200
        assert node_side.wait_ack("n2", 200) == 200
        stored = [ingest.metrics.total("messages_stored_total") for ingest in ingests]
    finally:
        for ingest in ingests:
            ingest.stop()
    assert sum(stored) == 400
    assert min(stored) > 0, f"one process got nothing: {stored}"
    assert ledger_check(influxdb.url, unique_name, unique_name, ledger) == {
        "published": 400, "stored": 400, "lost": 0, "duplicated": 0, "invalid": 0}
