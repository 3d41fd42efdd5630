"""Faults at the node, each with the node as a real subprocess: SIGKILL, broker down, disk full.

The broker is real Mosquitto (a private one where the test must stop and
kill it); the test plays the server by reading what arrives and acking it.
"""

from __future__ import annotations

import json
import random
import resource
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from node_helpers import (  # noqa: F401 (fixtures are found by their names)
    Listener,
    listener_factory_fixture,
    node_processes_fixture,
    outbox_seqs,
    wait_until,
    write_node_config,
)

from secadero.devservices import Mosquitto

pytestmark = pytest.mark.integration


def outbox_rows(path: Path) -> dict[int, bytes]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return {seq: bytes(payload) for seq, payload in
                conn.execute("SELECT seq, payload FROM outbox WHERE ts IS NOT NULL")}
    finally:
        conn.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path, timeout=5)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def payloads_by_seq(listener: Listener, node: str = "n1") -> dict[int, set[bytes]]:
    out: dict[int, set[bytes]] = {}
    for topic, payload, _ in list(listener.messages):
        if topic.endswith(f"/{node}/telemetry") or topic.endswith(f"/{node}/event"):
            out.setdefault(json.loads(payload)["seq"], set()).add(payload)
    return out


@pytest.mark.slow
def test_sigkill_at_random_instants_loses_nothing_committed(
        mosquitto: Any, unique_name: str, tmp_path: Path, listener_factory: Any,
        node_processes: Any) -> None:
    """N2: kill -9 the node while it writes every 50 ms; restart; every seq is there once."""
    listener = listener_factory(unique_name)
    config = write_node_config(tmp_path, yard=unique_name, broker=mosquitto,
                               sample_interval_s=0.05, resend_after_s=60, speed=3000)
    db = tmp_path / "n1.sqlite3"
    rng = random.Random(11)
    restart_delays: list[float] = []
    for _ in range(8):
        node = node_processes(config)
        started = time.monotonic()
        seen_before = len(listener.messages)
        listener.wait_for(lambda env, n=seen_before: len(listener.messages) > n, timeout_s=15)
        restart_delays.append(time.monotonic() - started)
        time.sleep(rng.uniform(0.05, 0.6))  # a random instant, mid-write most of the time
        node.kill()
    assert integrity(db) == "ok"
    stored = outbox_rows(db)  # nothing was acked: everything ever committed is still here
    last_seq = max(stored)
    assert sorted(stored) == list(range(1, last_seq + 1)), "a committed seq went missing"
    # A last clean run sends what the killed runs had not sent yet.
    node = node_processes(config)
    listener.wait_for(lambda env: set(range(1, last_seq + 2)) <= set(listener.seqs()),
                      timeout_s=20)
    assert node.terminate()[0] == 0
    published = payloads_by_seq(listener)
    final = outbox_rows(db)
    for seq, payloads in published.items():
        # Never two different messages under one seq (a seq reused after a crash).
        assert len(payloads) == 1, (seq, payloads)
        # Nothing was published that is not in the store (nothing invented).
        assert final[seq] in payloads
    assert max(restart_delays) < 5.0


@pytest.mark.slow
def test_broker_down_at_boot_then_killed_midway_nothing_lost_and_in_order(
        unique_name: str, tmp_path: Path, node_processes: Any) -> None:
    """N1/N5: the node starts with no broker, keeps sampling, delivers everything when it is up."""
    broker = Mosquitto(workdir=tmp_path / "mosquitto").start()
    listener_id = f"ledger-{unique_name}"
    # A persistent session, so the broker queues for the listener whenever it is away.
    Listener(broker, unique_name, client_id=listener_id, clean_session=False).close()
    broker.stop()  # SIGTERM: Mosquitto saves the session to its persistence file
    config = write_node_config(tmp_path, yard=unique_name, broker=broker, sample_interval_s=0.05,
                               resend_after_s=2.0)
    db = tmp_path / "n1.sqlite3"
    listener: Listener | None = None
    try:
        node = node_processes(config)
        wait_until(lambda: db.exists() and len(outbox_seqs(db)) >= 20, timeout_s=15)
        assert node.process.poll() is None
        broker.start()
        listener = Listener(broker, unique_name, client_id=listener_id, clean_session=False)
        listener.wait_for(lambda env: set(range(1, 21)) <= set(listener.seqs()), timeout_s=15)
        first_seen: list[int] = []
        for seq in listener.seqs():
            if seq not in first_seen:
                first_seen.append(seq)
        # The backlog arrives in order. (Only its own order: Mosquitto may hand the
        # listener's queued messages over after newer live ones.)
        assert [seq for seq in first_seen if seq <= 20] == list(range(1, 21))
        listener.ack("n1", 20)
        wait_until(lambda: (outbox_seqs(db) or [0])[0] > 20, timeout_s=10)
        # The broker dies (SIGKILL) and comes back.
        broker.kill()
        time.sleep(0.5)
        broker.start()
        target = max(outbox_seqs(db)) + 10
        listener.wait_for(lambda env: set(range(21, target + 1)) <= set(listener.seqs()),
                          timeout_s=20)
        listener.ack("n1", target)
        wait_until(lambda: (outbox_seqs(db) or [0])[0] > target, timeout_s=10)
        code, _ = node.terminate()
        assert code == 0
        assert "Traceback" not in node.stderr()
    finally:
        if listener is not None:
            listener.close()
        broker.stop()


@pytest.mark.slow
def test_disk_full_keeps_readings_in_ram_and_stores_them_when_there_is_room(
        mosquitto: Any, unique_name: str, tmp_path: Path, listener_factory: Any,
        node_processes: Any) -> None:
    """N4: EFBIG from RLIMIT_FSIZE (a disk-full surrogate, no root): no crash, no loss."""
    listener = listener_factory(unique_name)
    config = write_node_config(tmp_path, yard=unique_name, broker=mosquitto,
                               sample_interval_s=0.05, resend_after_s=60)
    limit_bytes = 96 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    node = node_processes(config, preexec=small_files)
    status = tmp_path / "n1.sqlite3.status.json"

    def counters() -> dict[str, Any]:
        try:
            return json.loads(status.read_text())
        except (OSError, ValueError):
            return {}

    wait_until(lambda: counters().get("counters", {}).get("store_errors", 0) >= 10,
               timeout_s=20)
    assert node.process.poll() is None
    in_ram = counters()["outbox"]["unsaved_in_ram"]
    assert in_ram > 0
    # Room again (an operator freed the disk): raise the child's limit.
    resource.prlimit(node.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    wait_until(lambda: counters().get("outbox", {}).get("unsaved_in_ram") == 0, timeout_s=15)
    time.sleep(0.3)
    code, _ = node.terminate()
    assert code == 0
    final = counters()
    db = tmp_path / "n1.sqlite3"
    assert integrity(db) == "ok"
    seqs = outbox_seqs(db)
    assert seqs == list(range(1, len(seqs) + 1))
    telemetry = json.loads(sqlite3.connect(db).execute(
        "SELECT count(*) FROM outbox WHERE kind = 'telemetry'").fetchone()[0].__str__())
    # Every sample the node took is stored: none was dropped while the disk was full.
    assert telemetry == final["counters"]["samples"]
    assert final["counters"].get("dropped_unsaved", 0) == 0
    listener.wait_for(lambda env: set(range(1, len(seqs) + 1)) <= set(listener.seqs()))
