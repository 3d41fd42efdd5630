"""Node liveness (status, silence, seq gaps), health, oversized writes: real services."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query
from ingest_helpers import (  # noqa: F401 (fixtures are found by their names)
    NodeSide,
    ledger_check,
    node_side_fixture,
    wait_until,
    write_server_config,
)

from secadero.devservices import InfluxDB, Mosquitto
from secadero.server.ingest import Ingest
from secadero.settings import load_server_settings

pytestmark = pytest.mark.integration


def _ingest(tmp_path: Path, broker: Mosquitto, influx_url: str, name: str,
            **ingest: Any) -> Ingest:
    config = write_server_config(tmp_path / "server.toml", broker=broker,
                                 influx_url=influx_url, database=name,
                                 client_id=f"ingest-{name}", ingest=ingest)
    return Ingest(load_server_settings(config))


@pytest.mark.slow
def test_seq_gaps_are_counted_and_silence_marks_the_node_offline(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    now = float(int(time.time()))
    db = unique_name
    with _ingest(tmp_path, mosquitto, influxdb.url, db, offline_after_s=1.5,
                 gap_timeout_s=1) as ingest:
        assert ingest.wait_ready(15)
        for seq in (1, 2, 5):  # 3 and 4 never come
            node_side.telemetry("n1", seq, now - 10 + seq, temperature_c=20.0)
        assert node_side.wait_ack("n1", 2) == 2
        # The gap stays open for gap_timeout_s, then counts as lost and the ack moves on.
        assert node_side.wait_ack("n1", 5, timeout_s=10) == 5
        gaps = wait_until(lambda: influx_query(influxdb.url, db, "SELECT seq_gap FROM node "
                                                                 "WHERE seq_gap > 0"),
                          what="seq_gap point")
        assert [g["seq_gap"] for g in gaps] == [2]
        assert ingest.metrics.total("seq_gap_total") == 2
        # Silence: the node is marked offline once; a new reading brings it back.
        wait_until(lambda: ingest.metrics.total("nodes_offline_total") == 1, 10, "offline")
        node_side.telemetry("n1", 6, now, temperature_c=21.0)
        assert node_side.wait_ack("n1", 6) == 6
        wait_until(lambda: len(influx_query(influxdb.url, db, "SELECT online FROM node "
                                                              "WHERE online >= 0")) == 2,
                   10, "online point")
    online = influx_query(influxdb.url, db, "SELECT online FROM node WHERE online >= 0")
    assert [o["online"] for o in online] == [0, 1]


@pytest.mark.slow
def test_health_turns_unhealthy_while_the_broker_is_down(
        tmp_path: Path, influxdb: Any, unique_name: str) -> None:
    broker = Mosquitto(workdir=tmp_path / "broker").start()
    try:
        with _ingest(tmp_path, broker, influxdb.url, unique_name,
                     unhealthy_after_s=1) as ingest:
            assert ingest.wait_ready(15)
            url = f"http://127.0.0.1:{ingest.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert (response.status, response.read()) == (200, b"ok\n")
            broker.stop()
            wait_until(lambda: ingest.health(), 10, "unhealthy")
            with pytest.raises(urllib.error.HTTPError) as failed:
                urllib.request.urlopen(url, timeout=5)
            assert failed.value.code == 503
            assert failed.value.read().decode().startswith("broker unreachable for ")
            broker.start()
            wait_until(lambda: ingest.health() == [], 20, "healthy again")
    finally:
        broker.stop()


@pytest.mark.slow
def test_a_batch_over_the_servers_body_limit_is_split_and_stored(
        tmp_path: Path, mosquitto: Any, node_side: NodeSide, unique_name: str) -> None:
    influx = InfluxDB(workdir=tmp_path / "influx",
                      extra_env={"INFLUXDB_HTTP_MAX_BODY_SIZE": "3000"}).start()
    try:
        base = float(int(time.time()) - 600)
        ledger: dict[tuple[str, int], float] = {}
        with _ingest(tmp_path, mosquitto, influx.url, unique_name,
                     flush_interval_s=1.0) as ingest:
            assert ingest.wait_ready(15)
            for seq in range(1, 101):
                ts = base + seq * 0.25
                node_side.telemetry("n1", seq, ts, temperature_c=20.0 + seq / 1000,
                                    humidity_pct=50.0, rain=False, trays={"t1": "extended"},
                                    wait=seq == 100)
                ledger[("n1", round(ts * 1000))] = 20.0 + seq / 1000
            assert node_side.wait_ack("n1", 100) == 100
            assert ingest.metrics.get("write_errors_total", kind="too_large") > 0
            assert ingest.metrics.total("points_set_aside_total") == 0
        assert ledger_check(influx.url, unique_name, unique_name, ledger) == {
            "published": 100, "stored": 100, "lost": 0, "duplicated": 0, "invalid": 0}
    finally:
        influx.stop()
