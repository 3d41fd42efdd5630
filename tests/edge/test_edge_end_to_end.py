"""The ledger: every reading two nodes measured against every reading the server stored.

Real Mosquitto, real InfluxDB, the real ingest (``secadero server run``) and
two real nodes (``secadero edge run`` on the simulated yard), all as child
processes. Midway a node and the ingest are each killed with SIGKILL and
started again. The ledger of what was measured comes from an independent
MQTT listener (every message a node published, by seq) and the nodes'
final ``seq``; what was stored is read back through InfluxDB's HTTP /query.
Result required: 0 lost, 0 invented.

A second test starts the nodes *before* the ingest has ever run (a new
server, nodes already measuring): the server must not ack past readings it
never received.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query
from node_helpers import (  # noqa: F401 (fixtures are found by their names)
    listener_factory_fixture,
    node_processes_fixture,
    wait_for_ingest,
    write_node_config,
)

from secadero.devservices import SERVER_USER

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def last_seq(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]) - 1
    finally:
        conn.close()


def drops(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT value FROM meta WHERE key LIKE 'dropped_%'").fetchall()
        return sum(int(v) for (v,) in rows)
    finally:
        conn.close()


def start_server(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "secadero.cli", "server", "run", "--config",
                             str(config)], stdout=subprocess.DEVNULL,
                            stderr=log.open("ab"))


SERVER_TOML = """
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "ingest-{yard}"
{login}
[influxdb]
url = "{influx}"
database = "{yard}"
{influx_login}
[ingest]
http_port = 0
flush_interval_s = 0.05
gap_timeout_s = 600
state_file = "state.json"
set_aside_file = "set-aside.jsonl"

[alerts]
api_port = 0
"""


def ledger_run(*, mosquitto: Any, influxdb: Any, yard: str, tmp_path: Path, listener: Any,
               node_processes: Any, server_first: bool, faults: bool) -> None:
    server_config = tmp_path / "server.toml"
    server_config.write_text(SERVER_TOML.format(
        port=mosquitto.port, yard=yard, influx=influxdb.url,
        login=mosquitto.toml_credentials(SERVER_USER),
        influx_login=influxdb.toml_credentials()))
    server_log = tmp_path / "server.log"
    server: subprocess.Popen[bytes] | None = None
    if server_first:
        server = start_server(server_config, server_log)
        wait_for_ingest(listener, yard)
    try:
        nodes = {}
        for name, seed in (("n1", 1), ("n2", 2)):
            directory = tmp_path / name
            directory.mkdir()
            # Each node logs in as itself, with the rights `secadero nodes add` gives.
            username, _ = mosquitto.add_node(yard, name)
            config = write_node_config(directory, yard=yard, node=name, broker=mosquitto,
                                       username=username,
                                       sample_interval_s=0.1, resend_after_s=2.0, seed=seed,
                                       speed=1200)
            nodes[name] = (config, directory / f"{name}.sqlite3", node_processes(config))
        listener.wait_for(lambda env: len(listener.seqs("n1")) >= 20
                          and len(listener.seqs("n2")) >= 20, timeout_s=20)
        if server is None:
            server = start_server(server_config, server_log)
        if faults:
            # SIGKILL node n1 and the ingest, start both again.
            nodes["n1"][2].kill()
            server.kill()
            server.wait(10)
            time.sleep(1.0)
            nodes["n1"] = (nodes["n1"][0], nodes["n1"][1], node_processes(nodes["n1"][0]))
            server = start_server(server_config, server_log)
        mark = {name: last_seq(db) for name, (_, db, _) in nodes.items()}
        listener.wait_for(lambda env: all(max(listener.seqs(n), default=0) > mark[n] + 20
                                          for n in nodes), timeout_s=30)

        def acked(env: list[Any], node: str) -> int:
            return max((e.message.seq for e in env if e.kind == "ack" and e.node == node),
                       default=0)

        # Stop the nodes only once the server has acked past the mark: what a
        # stopped node still holds in its outbox is kept, not lost, but it
        # would never reach the server within this test.
        listener.wait_for(lambda env: all(acked(env, n) > mark[n] for n in nodes),
                          timeout_s=60)
        for _, _, process in nodes.values():
            assert process.terminate()[0] == 0
        # What each node measured: seq 1..last, none dropped.
        produced = {name: last_seq(db) for name, (_, db, _) in nodes.items()}
        assert all(drops(db) == 0 for _, db, _ in nodes.values())
        published: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in nodes}
        for topic, payload, _ in listener.messages:
            kind = topic.rsplit("/", 1)[1]
            node = topic.split("/")[3]
            if kind in ("telemetry", "event") and node in published:
                body = json.loads(payload)
                previous = published[node].setdefault(body["seq"], {**body, "kind": kind})
                assert previous == {**body, "kind": kind}, "two messages under one seq"
        for name in nodes:
            assert sorted(published[name]) == list(range(1, produced[name] + 1))

        def stored(name: str) -> tuple[set[int], set[int]]:
            rain = influx_query(influxdb.url, yard,
                                f"SELECT wet FROM rain WHERE node = '{name}'")
            events = influx_query(influxdb.url, yard,
                                  f"SELECT seq FROM event WHERE node = '{name}'")
            return {row["time"] for row in rain}, {row["seq"] for row in events}

        def missing() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name in nodes:
                times, event_seqs = stored(name)
                lost = sorted(s for s, m in published[name].items()
                              if (m["kind"] == "telemetry" and round(m["ts"] * 1000) not in times)
                              or (m["kind"] == "event" and s not in event_seqs))
                if lost:
                    out[name] = lost
            return out

        deadline = time.monotonic() + 15
        while missing() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert missing() == {}
        for name in nodes:
            times, event_seqs = stored(name)
            telemetry = [m for m in published[name].values() if m["kind"] == "telemetry"]
            events = {s for s, m in published[name].items() if m["kind"] == "event"}
            # The ingest writes a ``rain`` point for each telemetry message and for
            # each rain_started / rain_stopped event (server/points.py).
            rain_events = [m for m in published[name].values()
                           if m["kind"] == "event" and m["type"].startswith("rain_")]
            # 0 lost (checked above) and 0 invented: exactly what was measured, once each.
            assert times == {round(m["ts"] * 1000) for m in [*telemetry, *rain_events]}
            assert event_seqs == events
        assert sum(len(p) for p in published.values()) == sum(produced.values())
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()



def test_two_nodes_through_the_real_ingest_0_lost_0_invented(
        mosquitto: Any, influxdb: Any, unique_name: str, tmp_path: Path,
        listener_factory: Any, node_processes: Any) -> None:
    """Ingest up first; midway node n1 and the ingest are SIGKILLed and restarted."""
    ledger_run(mosquitto=mosquitto, influxdb=influxdb, yard=unique_name, tmp_path=tmp_path,
               listener=listener_factory(unique_name), node_processes=node_processes,
               server_first=True, faults=True)


def test_nodes_measuring_before_the_ingest_ever_ran_lose_nothing(
        mosquitto: Any, influxdb: Any, unique_name: str, tmp_path: Path,
        listener_factory: Any, node_processes: Any) -> None:
    ledger_run(mosquitto=mosquitto, influxdb=influxdb, yard=unique_name, tmp_path=tmp_path,
               listener=listener_factory(unique_name), node_processes=node_processes,
               server_first=False, faults=False)
