"""Faults and bad input against the real services: InfluxDB refusing, failing, hanging, stopped;
the broker restarted; the ingest down or SIGKILLed mid-batch. Each ends with the ledger check:
0 lost, 0 duplicated, 0 invalid stored.

InfluxDB's 500s and timeouts come from a small TCP proxy on loopback in front of the real
influxd (``TcpProxy``); everything else is the real Mosquitto and InfluxDB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query, influx_request
from ingest_helpers import (  # noqa: F401 (fixtures are found by their names)
    NodeSide,
    TcpProxy,
    ledger_check,
    metric_value,
    node_side_fixture,
    server_config_fixture,
    server_settings_fixture,
    wait_until,
    write_server_config,
)

from secadero.contract import Event, encode
from secadero.devservices import InfluxDB, Mosquitto, free_port
from secadero.server.ingest import Ingest
from secadero.settings import ServerSettings, load_server_settings

pytestmark = pytest.mark.integration

BASE_TS = float(int(time.time()) - 3600)


def _settings(tmp_path: Path, *, broker: Mosquitto, influx_url: str, database: str,
              client_id: str, ingest: dict[str, Any] | None = None,
              influx: dict[str, Any] | None = None,
              influx_behind: InfluxDB | None = None) -> ServerSettings:
    path = write_server_config(tmp_path / "server.toml", broker=broker,
                               influx_url=influx_url, database=database, client_id=client_id,
                               ingest=ingest, influx=influx, influx_behind=influx_behind)
    return load_server_settings(path)


def _publish_series(side: NodeSide, node: str, seqs: range,
                    ledger: dict[tuple[str, int], float]) -> None:
    for seq in seqs:
        ts = BASE_TS + seq * 0.25  # exact in binary: the ms key is exact
        temperature = 20.0 + seq / 1000
        side.telemetry(node, seq, ts, temperature_c=temperature, humidity_pct=70.0,
                       wait=seq == seqs[-1])
        ledger[(node, round(ts * 1000))] = temperature


@pytest.fixture
def proxy(influxdb: Any) -> Iterator[TcpProxy]:
    tcp = TcpProxy(influxdb.port)
    yield tcp
    tcp.close()


def test_partial_write_keeps_good_points_and_sets_the_bad_one_aside(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    settings = _settings(tmp_path, broker=mosquitto, influx_url=influxdb.url,
                         database=unique_name, client_id=f"ingest-{unique_name}",
                         ingest={"flush_interval_s": 0.5})
    yard = unique_name
    with Ingest(settings) as ingest:
        assert ingest.wait_ready(15)
        # Someone wrote humidity as an integer first: InfluxDB fixes a
        # field's type per shard, so our float conflicts (400 partial write).
        seed = f"climate,node=n1,yard={yard} humidity_pct=50i {int(BASE_TS) * 10**9}".encode()
        request = influx_request(f"{influxdb.url}/write?db={unique_name}", data=seed)
        assert urllib.request.urlopen(request, timeout=5).status == 204
        node_side.telemetry("n1", 1, BASE_TS + 1, temperature_c=25.0, humidity_pct=60.0,
                            rain=True)
        node_side.telemetry("n2", 1, BASE_TS + 1, temperature_c=26.0, humidity_pct=61.0)
        node_side.telemetry("n1", 2, BASE_TS + 2, rain=False)
        assert node_side.wait_ack("n1", 2) == 2
        assert node_side.wait_ack("n2", 1) == 1
        # The type is fixed per measurement (in the shard), so both nodes'
        # climate points conflict; their rain points are stored.
        assert ingest.metrics.total("points_set_aside_total") == 2
    climate = influx_query(influxdb.url, unique_name,
                           "SELECT temperature_c, humidity_pct FROM climate")
    assert [(r["temperature_c"], r["humidity_pct"]) for r in climate] == [(None, 50)]
    rain = influx_query(influxdb.url, unique_name, "SELECT wet FROM rain")
    assert [r["wet"] for r in rain] == [True, False]
    aside = [json.loads(line) for line in
             (tmp_path / "set-aside.jsonl").read_text().splitlines()]
    assert len(aside) == 2
    assert all("field type conflict" in entry["reason"] for entry in aside)
    assert sorted(entry["line"].split(" ")[0] for entry in aside) == [
        f"climate,node=n1,yard={yard}", f"climate,node=n2,yard={yard}"]


def test_injection_attempts_through_strings_store_exactly_one_point(
        server_settings: ServerSettings, node_side: NodeSide, influxdb: Any,
        unique_name: str) -> None:
    detail = 'x" ,=\\\nclimate,yard=evil,node=n1 temperature_c=99 1\n"'
    with Ingest(server_settings) as ingest:
        assert ingest.wait_ready(15)
        node_side.publish("n1", "event", encode(Event(
            ts=BASE_TS, seq=1, type="sensor_fault", sensor="dht22 ,=\"x", detail=detail)))
        assert node_side.wait_ack("n1", 1) == 1
    events = influx_query(influxdb.url, unique_name, "SELECT * FROM event")
    assert [(e["detail"], e["sensor"]) for e in events] == [(detail, 'dht22 ,="x')]
    series = influx_query(influxdb.url, unique_name, "SHOW SERIES")
    assert [s["key"] for s in series] == [f"event,node=n1,yard={unique_name}"]


def test_influx_500_and_timeouts_are_retried_then_stored_once(
        tmp_path: Path, mosquitto: Any, influxdb: Any, proxy: TcpProxy, node_side: NodeSide,
        unique_name: str) -> None:
    settings = _settings(tmp_path, broker=mosquitto, influx_url=proxy.url,
                         influx_behind=influxdb,
                         database=unique_name, client_id=f"ingest-{unique_name}",
                         influx={"timeout_s": 0.5}, ingest={"unhealthy_after_s": 1})
    ledger: dict[tuple[str, int], float] = {}
    with Ingest(settings) as ingest:
        assert ingest.wait_ready(15)
        proxy.set_mode("http500")
        _publish_series(node_side, "n1", range(1, 21), ledger)
        wait_until(lambda: ingest.metrics.get("write_errors_total", kind="retryable") >= 2,
                   what="retried 500s")
        proxy.set_mode("blackhole")
        errors = ingest.metrics.get("write_errors_total", kind="retryable")
        wait_until(lambda: ingest.metrics.get("write_errors_total", kind="retryable") > errors,
                   what="a timed-out write")
        wait_until(lambda: ingest.health(), what="unhealthy")
        assert node_side.acks == {}  # nothing acknowledged before InfluxDB accepted it
        proxy.set_mode("pass")
        assert node_side.wait_ack("n1", 20, timeout_s=40) == 20
        assert ingest.health() == []
    assert ledger_check(influxdb.url, unique_name, unique_name, ledger) == {
        "published": 20, "stored": 20, "lost": 0, "duplicated": 0, "invalid": 0}


@pytest.mark.slow
def test_influxdb_stopped_and_started_again_loses_nothing(
        tmp_path: Path, mosquitto: Any, node_side: NodeSide, unique_name: str) -> None:
    influx = InfluxDB(workdir=tmp_path / "influx").start()
    try:
        settings = _settings(tmp_path, broker=mosquitto, influx_url=influx.url,
                             database=unique_name, client_id=f"ingest-{unique_name}",
                             ingest={"unhealthy_after_s": 1})
        ledger: dict[tuple[str, int], float] = {}
        with Ingest(settings) as ingest:
            assert ingest.wait_ready(15)
            _publish_series(node_side, "n1", range(1, 11), ledger)
            assert node_side.wait_ack("n1", 10) == 10
            influx.stop()
            _publish_series(node_side, "n1", range(11, 211), ledger)
            wait_until(lambda: ingest.health(), what="unhealthy while InfluxDB is down")
            assert max(node_side.acks["n1"]) == 10
            influx.restart()
            assert node_side.wait_ack("n1", 210, timeout_s=60) == 210
        assert ledger_check(influx.url, unique_name, unique_name, ledger) == {
            "published": 210, "stored": 210, "lost": 0, "duplicated": 0, "invalid": 0}
    finally:
        influx.stop()


@pytest.mark.slow
def test_broker_restart_and_ingest_downtime_lose_nothing(
        tmp_path: Path, influxdb: Any, unique_name: str) -> None:
    broker = Mosquitto(workdir=tmp_path / "broker").start()
    side = NodeSide(broker, unique_name)
    try:
        settings = _settings(tmp_path, broker=broker, influx_url=influxdb.url,
                             database=unique_name, client_id=f"ingest-{unique_name}")
        ledger: dict[tuple[str, int], float] = {}
        with Ingest(settings) as ingest:
            assert ingest.wait_ready(15)
            _publish_series(side, "n1", range(1, 11), ledger)
            assert side.wait_ack("n1", 10) == 10
            broker.stop()  # SIGTERM: the broker saves its persistence file
            broker.start()
            assert side.client.is_connected() or wait_until(side.client.is_connected, 20,
                                                            "node side reconnected")
            assert wait_until(lambda: ingest.connected, 20, "ingest reconnected")
            _publish_series(side, "n1", range(11, 21), ledger)
            assert side.wait_ack("n1", 20) == 20
        # The ingest is down: its persistent session queues at the broker (M5).
        _publish_series(side, "n1", range(21, 521), ledger)
        with Ingest(settings) as ingest:
            assert side.wait_ack("n1", 520, timeout_s=30) == 520
        assert ledger_check(influxdb.url, unique_name, unique_name, ledger) == {
            "published": 520, "stored": 520, "lost": 0, "duplicated": 0, "invalid": 0}
    finally:
        side.close()
        broker.stop()


@pytest.mark.slow
def test_server_sigkilled_mid_batch_and_restarted_stores_everything_once(
        tmp_path: Path, mosquitto: Any, influxdb: Any, proxy: TcpProxy, node_side: NodeSide,
        unique_name: str) -> None:
    http_port = free_port()
    config = write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=proxy.url,
        influx_behind=influxdb, database=unique_name, client_id=f"ingest-{unique_name}",
        influx={"timeout_s": 30}, ingest={"http_port": http_port})
    command = [sys.executable, "-m", "secadero.cli", "server", "run", "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ledger: dict[tuple[str, int], float] = {}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    second = None
    try:
        wait_until(lambda: metric_value(http_port, "mqtt_connected") == 1, 20, "server connected")
        proxy.set_mode("blackhole")  # the batch's write hangs: the kill lands mid-batch
        _publish_series(node_side, "n1", range(1, 301), ledger)
        wait_until(lambda: metric_value(http_port, "messages_received_total") >= 300, 20,
                   "all received")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert node_side.acks == {}
        proxy.set_mode("pass")
        second = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        assert node_side.wait_ack("n1", 300, timeout_s=30) == 300
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert ledger_check(influxdb.url, unique_name, unique_name, ledger) == {
        "published": 300, "stored": 300, "lost": 0, "duplicated": 0, "invalid": 0}


def test_points_beyond_the_retention_are_set_aside_in_one_go_and_good_ones_kept(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    """Readings 5 days old are within the 30-day horizon but beyond a 1-day raw retention:
    InfluxDB drops them (400 "points beyond retention policy dropped=N")."""
    settings = _settings(tmp_path, broker=mosquitto, influx_url=influxdb.url,
                         database=unique_name, client_id=f"ingest-{unique_name}",
                         ingest={"flush_interval_s": 1.0}, influx={"raw_retention_days": 1})
    old = float(int(time.time()) - 5 * 86400)
    with Ingest(settings) as ingest:
        assert ingest.wait_ready(15)
        for seq in range(1, 21):  # all in one batch: every point refused
            node_side.telemetry("n1", seq, old + seq, temperature_c=20.0, wait=seq == 20)
        assert node_side.wait_ack("n1", 20) == 20
        assert ingest.metrics.get("write_errors_total", kind="rejected") == 1
        assert ingest.metrics.total("points_set_aside_total") == 20
        # A mixed batch: the refused one is isolated, the fresh ones stored.
        node_side.telemetry("n1", 21, BASE_TS + 1, temperature_c=21.0, wait=False)
        node_side.telemetry("n1", 22, old + 22, temperature_c=22.0, wait=False)
        node_side.telemetry("n1", 23, BASE_TS + 2, temperature_c=23.0)
        assert node_side.wait_ack("n1", 23) == 23
        assert ingest.metrics.total("points_set_aside_total") == 21
    rows = influx_query(influxdb.url, unique_name, "SELECT temperature_c FROM climate")
    assert [r["temperature_c"] for r in rows] == [21.0, 23.0]
    aside = (tmp_path / "set-aside.jsonl").read_text().splitlines()
    assert len(aside) == 21
    assert all("beyond retention" in json.loads(line)["reason"] for line in aside)


def test_a_database_dropped_while_running_is_created_again(
        server_settings: ServerSettings, node_side: NodeSide, influxdb: Any,
        unique_name: str) -> None:
    with Ingest(server_settings) as ingest:
        assert ingest.wait_ready(15)
        node_side.telemetry("n1", 1, BASE_TS + 1, temperature_c=21.0)
        assert node_side.wait_ack("n1", 1) == 1
        influx_query(influxdb.url, unique_name, f'DROP DATABASE "{unique_name}"')
        node_side.telemetry("n1", 2, BASE_TS + 2, temperature_c=22.0)
        assert node_side.wait_ack("n1", 2) == 2
    rows = influx_query(influxdb.url, unique_name, "SELECT temperature_c FROM climate")
    assert [r["temperature_c"] for r in rows] == [22.0]
    policies = influx_query(influxdb.url, unique_name,
                            f'SHOW RETENTION POLICIES ON "{unique_name}"')
    assert {p["name"] for p in policies} == {"raw", "hourly"}


@pytest.mark.slow
def test_acks_go_on_after_a_sigkill_right_after_an_ack(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    """The state file is written before the node's ack is published, so a restarted server
    never waits (gap_timeout_s, 600 s here) for readings a node deleted on that ack."""
    http_port = free_port()
    config = write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}",
        ingest={"http_port": http_port, "gap_timeout_s": 600})
    command = [sys.executable, "-m", "secadero.cli", "server", "ingest", "--config", str(config)]
    ledger: dict[tuple[str, int], float] = {}
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: metric_value(http_port, "mqtt_connected") == 1, 20, "server connected")
        _publish_series(node_side, "n1", range(1, 51), ledger)
        assert node_side.wait_ack("n1", 50) == 50
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        _publish_series(node_side, "n1", range(51, 61), ledger)  # the node goes on from 51
        assert node_side.wait_ack("n1", 60, timeout_s=20) == 60
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert ledger_check(influxdb.url, unique_name, unique_name, ledger)["lost"] == 0
