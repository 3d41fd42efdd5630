"""End to end against the real Mosquitto and InfluxDB: publish as a node, read back, get acked.

The node side is an independent paho client; points are read back through
``influx_query`` (plain HTTP /query), never through our own InfluxDB code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query
from ingest_helpers import (  # noqa: F401 (fixtures are found by their names)
    NodeSide,
    node_side_fixture,
    server_config_fixture,
    server_settings_fixture,
    wait_until,
)

from secadero.contract import Event, Status, encode
from secadero.server.air import dew_point_c, vpd_kpa
from secadero.server.ingest import Ingest
from secadero.server.points import LineBuilder
from secadero.settings import ServerSettings

pytestmark = pytest.mark.integration


def _http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_readings_stored_with_derived_values_and_node_acked(
        server_settings: ServerSettings, node_side: NodeSide, influxdb: Any,
        unique_name: str) -> None:
    seen: list[tuple[str, int]] = []
    now = float(int(time.time())) + 0.25
    with Ingest(server_settings, observers=[lambda env, at: seen.append(
            (env.kind, getattr(env.message, "seq", -1)))]) as ingest:
        assert ingest.wait_ready(15)
        for seq in range(1, 11):
            node_side.telemetry("n1", seq, now - 100 + seq, temperature_c=20.0 + seq,
                                humidity_pct=60.0, rain=seq % 2 == 0, rain_mm=0.2,
                                trays={"t1": "extended" if seq < 5 else "retracted"})
        node_side.publish("n1", "event", encode(Event(ts=now - 50, seq=11, type="rain_started")))
        assert node_side.wait_ack("n1", 11) == 11
        metrics_status, metrics_text = _http_get(ingest.http_port, "/metrics")
        health_status, health_text = _http_get(ingest.http_port, "/healthz")

    db = unique_name
    climate = influx_query(influxdb.url, db, "SELECT * FROM climate ORDER BY time")
    assert len(climate) == 10
    first = climate[0]
    assert first["yard"] == unique_name and first["node"] == "n1"
    assert first["time"] == round((now - 99) * 1000)
    assert first["temperature_c"] == 21.0 and first["humidity_pct"] == 60.0
    assert first["dew_point_c"] == pytest.approx(dew_point_c(21.0, 60.0), abs=1e-9)
    assert first["vpd_kpa"] == pytest.approx(vpd_kpa(21.0, 60.0), abs=1e-9)
    rain = influx_query(influxdb.url, db, "SELECT wet, rain_mm FROM rain ORDER BY time")
    assert [r["wet"] for r in rain] == [s % 2 == 0 for s in range(1, 11)] + [True]
    assert [r["rain_mm"] for r in rain] == [0.2] * 10 + [None]
    trays = influx_query(influxdb.url, db, "SELECT state, extended FROM tray WHERE tray = 't1'")
    assert [t["extended"] for t in trays] == [1] * 4 + [0] * 6
    events = influx_query(influxdb.url, db, "SELECT type, seq FROM event")
    assert [(e["type"], e["seq"]) for e in events] == [("rain_started", 11)]
    assert seen == [("telemetry", s) for s in range(1, 11)] + [("event", 11)]
    assert metrics_status == 200
    assert 'secadero_ingest_messages_received_total{kind="telemetry"} 10' in metrics_text
    assert (health_status, health_text) == (200, "ok\n")
    # Database and retention policies created at start-up.
    policies = influx_query(influxdb.url, db, f'SHOW RETENTION POLICIES ON "{db}"')
    assert {(p["name"], p["duration"], p["default"]) for p in policies} == {
        ("raw", "2160h0m0s", True), ("hourly", "87600h0m0s", False)}
    queries = influx_query(influxdb.url, db, "SHOW CONTINUOUS QUERIES")
    assert {q["name"] for q in queries if "name" in q} >= {"climate_1h", "rain_1h", "node_1h"}


def test_invalid_messages_rejected_counted_acked_and_never_stored(
        server_settings: ServerSettings, node_side: NodeSide, influxdb: Any,
        unique_name: str) -> None:
    now = float(int(time.time())) + 0.25
    yard = unique_name
    with Ingest(server_settings) as ingest:
        assert ingest.wait_ready(15)
        node_side.telemetry("n1", 1, now, temperature_c=25.0, humidity_pct=50.0)
        # Malformed, out of range, future, a bad id in the topic, line-protocol
        # injection through a tray id, oversized.
        node_side.publish("n1", "telemetry", b"{not json")
        node_side.publish("n1", "telemetry", json.dumps(
            {"ts": now, "seq": 2, "humidity_pct": 101.0}).encode())
        node_side.publish("n1", "telemetry", json.dumps(
            {"ts": now + 3600, "seq": 3, "temperature_c": 20.0}).encode())
        node_side.publish_raw(f"secadero/v1/{yard}/N1 x/telemetry", json.dumps(
            {"ts": now, "seq": 1, "temperature_c": 20.0}).encode())
        node_side.publish("n1", "telemetry", json.dumps(
            {"ts": now, "seq": 4, "trays": {'t1,node=evil x=1 1\nclimate': "extended"}}
        ).encode())
        node_side.publish("n1", "telemetry", b'{"ts": 1, "pad": "' + b"x" * 20000 + b'"}')
        node_side.telemetry("n1", 5, now + 1, temperature_c=26.0, humidity_pct=51.0)
        # seq 2, 3 and 4 were rejected for good: they count as done, no gap.
        assert node_side.wait_ack("n1", 5) == 5
        rejected = ingest.metrics.by_label("messages_rejected_total", "reason")
    assert rejected == {"invalid_json": 1, "out_of_range": 1, "ts_future": 1, "bad_id": 2,
                        "too_large": 1}
    climate = influx_query(unique_name and influxdb.url, unique_name,
                           "SELECT temperature_c FROM climate")
    assert [r["temperature_c"] for r in climate] == [25.0, 26.0]
    series = influx_query(influxdb.url, unique_name, "SHOW SERIES")
    assert sorted(s["key"] for s in series) == [f"climate,node=n1,yard={yard}"]


def test_a_bug_building_one_message_rejects_it_and_the_ingest_goes_on(
        server_settings: ServerSettings, node_side: NodeSide, influxdb: Any,
        unique_name: str) -> None:
    """An unexpected error on the MQTT thread must not stop it (nothing above catches it)."""
    now = float(int(time.time())) + 0.25

    class BuggyLineBuilder(LineBuilder):
        def lines(self, envelope: Any, received_at: float) -> list[bytes]:
            if envelope.message.seq == 2:
                raise ZeroDivisionError("a bug")
            return super().lines(envelope, received_at)

    with Ingest(server_settings, line_builder=BuggyLineBuilder()) as ingest:
        assert ingest.wait_ready(15)
        for seq in (1, 2, 3):
            node_side.telemetry("n1", seq, now + seq, temperature_c=20.0 + seq,
                                humidity_pct=50.0)
        assert node_side.wait_ack("n1", 3) == 3
        rejected = ingest.metrics.by_label("messages_rejected_total", "reason")
    assert rejected == {"unstorable": 1}
    climate = influx_query(influxdb.url, unique_name, "SELECT temperature_c FROM climate")
    assert [r["temperature_c"] for r in climate] == [21.0, 23.0]


def test_status_gives_node_points_and_duplicates_store_once(
        server_settings: ServerSettings, node_side: NodeSide, influxdb: Any,
        unique_name: str) -> None:
    now = float(int(time.time())) + 0.25
    with Ingest(server_settings) as ingest:
        assert ingest.wait_ready(15)
        node_side.publish("n2", "status", encode(Status("online", now, "1.0", 3, 12.5)))
        for _ in range(3):  # the node re-sends: same seq, same ts
            node_side.telemetry("n2", 1, now - 5, temperature_c=22.5, humidity_pct=80.0)
        assert node_side.wait_ack("n2", 1) == 1
        wait_until(lambda: influx_query(influxdb.url, unique_name, "SELECT * FROM node"),
                   what="node point")
    nodes = influx_query(influxdb.url, unique_name, "SELECT online, buffered, uptime_s FROM node")
    assert [(n["online"], n["buffered"], n["uptime_s"]) for n in nodes] == [(1, 3, 12.5)]
    assert len(influx_query(influxdb.url, unique_name, "SELECT * FROM climate")) == 1


@pytest.mark.slow
def test_cli_server_run_stores_and_stops_cleanly_on_sigterm(
        server_config: Path, node_side: NodeSide, influxdb: Any, unique_name: str,
        repo_root: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "secadero.cli", "server", "run", "--config", str(server_config)],
        cwd=server_config.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        now = float(int(time.time())) + 0.25
        # The server's persistent session may not exist yet: re-publish until acked.
        deadline = time.monotonic() + 20
        while True:
            node_side.telemetry("n1", 1, now, temperature_c=24.0, humidity_pct=70.0)
            try:
                node_side.wait_ack("n1", 1, timeout_s=1.0)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output.decode()
    assert b"SIGTERM received" in output
    rows = influx_query(influxdb.url, unique_name, "SELECT temperature_c FROM climate")
    assert [r["temperature_c"] for r in rows] == [24.0]
    state = json.loads((server_config.parent / "state.json").read_text())
    assert state == {"acked_seq": {f"{unique_name}/n1": 1}}
