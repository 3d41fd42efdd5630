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
    metric_value,
    node_side_fixture,
    write_server_config,
)

from secadero.contract import seq_ranges
from secadero.server.ingest import Ingest
from secadero.settings import load_server_settings

pytestmark = pytest.mark.integration


def testseq_ranges() -> None:
    assert seq_ranges([8, 1, 2, 3, 7, 2]) == [(1, 3), (7, 8)]
    assert seq_ranges([]) == []


def test_two_processes_share_the_load_and_store_each_message_once(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    ingests = []
    for index in (1, 2):
        folder = tmp_path / f"p{index}"
        folder.mkdir()
        config = write_server_config(
            folder / "server.toml", broker=mosquitto, influx_url=influxdb.url,
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


@pytest.mark.slow
def test_one_of_two_processes_killed_mid_batch_loses_nothing(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    """M6: process A hangs on its write (a blackholed InfluxDB) and is SIGKILLed; B goes on.

    A's unacknowledged share waits in its session (Mosquitto does not hand it
    to B) and is stored when A starts again; the nodes' acks then cover all.
    """
    import os
    import signal
    import subprocess
    import sys

    from ingest_helpers import TcpProxy, wait_until

    from secadero.devservices import free_port

    proxy = TcpProxy(influxdb.port)
    commands, ports = [], []
    for index, url in ((1, proxy.url), (2, influxdb.url)):
        folder = tmp_path / f"p{index}"
        folder.mkdir()
        port = free_port()
        config = write_server_config(
            folder / "server.toml", broker=mosquitto, influx_url=url, influx_behind=influxdb,
            database=unique_name, client_id=f"ingest-{index}-{unique_name}",
            influx={"timeout_s": 30}, ingest={"share_group": unique_name, "http_port": port})
        commands.append([sys.executable, "-m", "secadero.cli", "server", "ingest",
                         "--config", str(config)])
        ports.append(port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for c in commands]
    restarted = None
    ledger: dict[tuple[str, int], float] = {}
    try:
        for port in ports:
            wait_until(lambda p=port: metric_value(p, "mqtt_connected") == 1, 20, "connected")
        proxy.set_mode("blackhole")
        base = float(int(time.time()) - 3600)
        for seq in range(1, 201):
            ts = base + seq * 0.25
            node_side.telemetry("n1", seq, ts, temperature_c=20.0 + seq / 1000,
                                humidity_pct=50.0, wait=seq == 200)
            ledger[("n1", round(ts * 1000))] = 20.0 + seq / 1000
        wait_until(lambda: metric_value(ports[0], "messages_received_total") > 0
                   and metric_value(ports[1], "messages_stored_total") > 0
                   and metric_value(ports[0], "messages_received_total")
                   + metric_value(ports[1], "messages_stored_total") >= 200, 20, "all delivered")
        processes[0].send_signal(signal.SIGKILL)
        processes[0].wait(10)
        assert max(node_side.acks.get("n1", [0])) < 200
        proxy.set_mode("pass")
        restarted = subprocess.Popen(commands[0], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert node_side.wait_ack("n1", 200, timeout_s=30) == 200
    finally:
        for process in [*processes, restarted]:
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(20)
        proxy.close()
    assert ledger_check(influxdb.url, unique_name, unique_name, ledger) == {
        "published": 200, "stored": 200, "lost": 0, "duplicated": 0, "invalid": 0}
