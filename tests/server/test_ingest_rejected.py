"""A message the server refuses releases the node's ack, promptly and without a false gap.

Real Mosquitto and InfluxDB. Between good readings a node sends one
payload over the 16 KiB limit and one that is not JSON (cut short, as a
buggy encoder or a corrupted outbox record could leave it), each with its
own ``seq``. Both are refused for good, so their seqs count as done: the
node's ack covers them at once instead of waiting ``gap_timeout_s`` (600 s
here), and ``seq_gap_total`` stays 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query
from ingest_helpers import (  # noqa: F401 (fixtures are found by their names)
    NodeSide,
    node_side_fixture,
    write_server_config,
)

from secadero.contract import MAX_PAYLOAD_BYTES
from secadero.server.ingest import Ingest
from secadero.settings import load_server_settings

pytestmark = pytest.mark.integration


def test_oversized_and_unreadable_messages_are_acked_at_once_and_no_gap_is_counted(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}",
        ingest={"gap_timeout_s": 600}))
    now = float(int(time.time())) + 0.25
    oversized = json.dumps({"ts": now + 2, "seq": 2, "temperature_c": 21.0,
                            "note": "x" * MAX_PAYLOAD_BYTES}).encode()
    assert len(oversized) > MAX_PAYLOAD_BYTES
    cut_short = json.dumps({"ts": now + 3, "seq": 3, "temperature_c": 22.0}).encode()[:-8]
    with Ingest(settings) as ingest:
        assert ingest.wait_ready(15)
        node_side.telemetry("n1", 1, now + 1, temperature_c=20.0, humidity_pct=50.0)
        assert node_side.wait_ack("n1", 1) == 1
        node_side.publish("n1", "telemetry", oversized)
        node_side.publish("n1", "telemetry", cut_short)
        node_side.telemetry("n1", 4, now + 4, temperature_c=23.0, humidity_pct=50.0)
        # Well within the gap timeout: nothing waits for seqs 2 and 3.
        assert node_side.wait_ack("n1", 4, timeout_s=15) == 4
        rejected = ingest.metrics.by_label("messages_rejected_total", "reason")
        gaps = ingest.metrics.total("seq_gap_total")
    assert rejected == {"too_large": 1, "invalid_json": 1}
    assert gaps == 0
    assert node_side.acks["n1"][-1] == 4
    climate = influx_query(influxdb.url, unique_name, "SELECT temperature_c FROM climate")
    assert [r["temperature_c"] for r in climate] == [20.0, 23.0]


def test_a_refused_message_whose_seq_cannot_be_known_holds_the_ack_until_the_gap_timeout(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    """Not JSON at all: no seq to read, so the gap timeout (1 s here) decides, and counts it."""
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}",
        ingest={"gap_timeout_s": 1}))
    now = float(int(time.time())) + 0.25
    with Ingest(settings) as ingest:
        assert ingest.wait_ready(15)
        node_side.telemetry("n1", 1, now + 1, temperature_c=20.0, humidity_pct=50.0)
        node_side.publish("n1", "telemetry", b"\xff\xfe not a reading")
        node_side.telemetry("n1", 3, now + 3, temperature_c=22.0, humidity_pct=50.0)
        assert node_side.wait_ack("n1", 3, timeout_s=15) == 3
        gaps = ingest.metrics.total("seq_gap_total")
    assert node_side.acks["n1"][0] == 1  # seq 3 waited behind the unknown seq 2
    assert gaps == 1
