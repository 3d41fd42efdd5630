"""``secadero edge run`` end to end through the real Mosquitto.

The node runs as a subprocess on the simulated yard; an independent paho
client receives and decodes what it publishes and plays the server by
publishing acks. No server code is involved.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from node_helpers import (  # noqa: F401 (fixtures are found by their names)
    listener_factory_fixture,
    node_processes_fixture,
    outbox_seqs,
    wait_until,
    write_node_config,
)

from secadero import contract

pytestmark = pytest.mark.integration


def _telemetry(envelopes: list[contract.Envelope]) -> list[contract.Telemetry]:
    return [e.message for e in envelopes if e.kind == "telemetry"]  # type: ignore[misc]


def test_node_publishes_stores_until_acked_and_stops_cleanly(
        mosquitto: Any, unique_name: str, tmp_path: Path, listener_factory: Any,
        node_processes: Any) -> None:
    listener = listener_factory(unique_name)
    config = write_node_config(tmp_path, yard=unique_name, broker=mosquitto,
                               sample_interval_s=0.2, resend_after_s=60)
    node = node_processes(config)

    got = listener.wait_for(lambda env: len(_telemetry(env)) >= 5)
    status = [e for e in got if e.kind == "status"]
    assert status and status[0].message.state == "online"
    telemetry = _telemetry(got)[:5]
    assert [t.seq for t in telemetry] == [1, 2, 3, 4, 5]
    for reading in telemetry:
        assert reading.temperature_c is None or -10 <= reading.temperature_c <= 60
        assert set(reading.trays) == {"t1", "t2"}
        assert reading.ts > 1.7e9
    # Samples are 0.2 s apart by the node's clock.
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(telemetry)]
    assert all(0.1 < gap < 1.0 for gap in gaps), gaps  # 0.2 s, late under load

    # Every message is in the outbox until an ack covers it.
    db = tmp_path / "n1.sqlite3"
    assert outbox_seqs(db)[:5] == [1, 2, 3, 4, 5]
    listener.ack("n1", 4)
    wait_until(lambda: outbox_seqs(db) and outbox_seqs(db)[0] == 5)

    code, stdout = node.terminate()
    assert code == 0
    assert stdout == b""  # the demo runs several nodes: nothing on stdout
    last_status = [e for e in listener.decoded if e.kind == "status"][-1]
    assert last_status.message.state == "offline"
    assert last_status.message.buffered == len(outbox_seqs(db))
    assert not listener.undecodable


def test_unacked_messages_are_sent_again_in_order_after_the_timeout(
        mosquitto: Any, unique_name: str, tmp_path: Path, listener_factory: Any,
        node_processes: Any) -> None:
    listener = listener_factory(unique_name)
    config = write_node_config(tmp_path, yard=unique_name, broker=mosquitto,
                               sample_interval_s=0.2, resend_after_s=1.0)
    node = node_processes(config)
    # seq 1 arrives, then (no ack) arrives again, followed by 2, 3 in order.
    listener.wait_for(lambda env: listener.seqs().count(1) >= 3, timeout_s=15)
    arrivals = [at for envelope, at in zip(listener.decoded, listener.arrived_s, strict=True)
                if envelope.kind == "telemetry" and envelope.message.seq == 1]
    # Without any ack the rounds back off: the third send comes about 2 s after
    # the second, the second about 1 s after the first.
    first_round, second_round = arrivals[1] - arrivals[0], arrivals[2] - arrivals[1]
    assert 0.9 < first_round < 1.8, first_round
    assert 1.9 < second_round < 3.2, second_round
    seqs = listener.seqs()
    second = seqs.index(1, 1)
    assert seqs[:second] == list(range(1, second + 1))
    listener.ack("n1", seqs[second - 1])
    acked = seqs[second - 1]
    # After the ack, nothing at or below it is sent again.
    listener.wait_for(lambda env: listener.seqs()[-1] > acked + 10, timeout_s=10)
    mark = len(listener.seqs())
    listener.wait_for(lambda env: len(listener.seqs()) > mark + 15, timeout_s=10)
    assert all(s > acked for s in listener.seqs()[mark:])
    assert node.terminate()[0] == 0


def test_restart_keeps_seq_and_resends_what_was_not_acked(
        mosquitto: Any, unique_name: str, tmp_path: Path, listener_factory: Any,
        node_processes: Any) -> None:
    listener = listener_factory(unique_name)
    config = write_node_config(tmp_path, yard=unique_name, broker=mosquitto,
                               sample_interval_s=0.2)
    first = node_processes(config)
    listener.wait_for(lambda env: len(listener.seqs()) >= 3)
    listener.ack("n1", 2)
    wait_until(lambda: outbox_seqs(tmp_path / "n1.sqlite3")[:1] == [3])
    assert first.terminate()[0] == 0
    last_seq = max(outbox_seqs(tmp_path / "n1.sqlite3"))
    before = len(listener.seqs())

    second = node_processes(config)
    listener.wait_for(lambda env: len(listener.seqs()) >= before + last_seq - 2 + 2)
    after = listener.seqs()[before:]
    # The restarted node re-sends 3..last_seq first, then continues with new seqs.
    assert after[:last_seq - 2] == list(range(3, last_seq + 1))
    assert after[last_seq - 2] == last_seq + 1
    assert second.terminate()[0] == 0


def test_edge_status_shows_the_node_state(mosquitto: Any, unique_name: str, tmp_path: Path,
                                          listener_factory: Any, node_processes: Any) -> None:
    import subprocess
    import sys

    listener = listener_factory(unique_name)
    config = write_node_config(tmp_path, yard=unique_name, broker=mosquitto,
                               sample_interval_s=0.2)
    node = node_processes(config)
    listener.wait_for(lambda env: len(listener.seqs()) >= 3)
    listener.ack("n1", 3)
    status_file = tmp_path / "n1.sqlite3.status.json"

    def acked() -> bool:
        try:
            return json.loads(status_file.read_text())["last_ack"]["seq"] == 3
        except (OSError, ValueError, KeyError):
            return False

    wait_until(acked, timeout_s=20)
    result = subprocess.run([sys.executable, "-m", "secadero.cli", "edge", "status", "--config",
                             str(config), "--json"], capture_output=True, text=True, timeout=30,
                            check=True)
    report = json.loads(result.stdout)
    print(json.dumps(report, indent=1))  # shown by pytest if an assertion below fails
    assert report["node"] == "n1" and report["yard"] == unique_name
    assert report["mqtt"]["connected"] is True
    assert report["clock"]["state"] == "synced"
    assert report["outbox"]["acked_seq"] == 3
    assert report["last_ack"]["seq"] == 3
    assert set(report["sensors"]["trays"]) == {"t1", "t2"}
    text = subprocess.run([sys.executable, "-m", "secadero.cli", "edge", "status", "--config",
                           str(config)], capture_output=True, text=True, timeout=30, check=True)
    assert f"node {unique_name}/n1" in text.stdout
    assert "mqtt: connected" in text.stdout
    assert node.terminate()[0] == 0


def test_systemd_notify_ready_watchdog_and_stopping(
        mosquitto: Any, unique_name: str, tmp_path: Path, node_processes: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Type=notify + WatchdogSec: the agent speaks sd_notify on NOTIFY_SOCKET (a real socket)."""
    import socket

    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(15)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        monkeypatch.setenv("WATCHDOG_USEC", "400000")  # pet every 0.2 s
        config = write_node_config(tmp_path, yard=unique_name, broker=mosquitto)
        node = node_processes(config)
        received = [sock.recv(256).decode()]
        while received.count("WATCHDOG=1") < 3:
            received.append(sock.recv(256).decode())
        assert received[0] == "READY=1"
        node.process.send_signal(15)
        while received[-1] != "STOPPING=1":
            received.append(sock.recv(256).decode())
        assert node.wait(15)[0] == 0


def test_provisioning_unit_restarts_on_failure_with_a_watchdog(repo_root: Path) -> None:
    import configparser
    import shlex

    from secadero.cli import build_parser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(repo_root / "firmware" / "provisioning" / "secadero-node.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) >= 10
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/secadero")
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.edge_command, args.config) == ("edge", "run",
                                                              "/etc/secadero/node.toml")
    script = (repo_root / "firmware" / "provisioning" / "install.sh").read_text()
    assert "secadero-node.service" in script and "edge/node.example.toml" in script


def test_sigkilled_node_is_declared_offline_by_its_last_will(
        mosquitto: Any, unique_name: str, tmp_path: Path, listener_factory: Any,
        node_processes: Any) -> None:
    """The broker publishes the retained "offline" will: at once when the socket closes
    (SIGKILL), at the latest after 1.5 x keepalive (5 s here) for a half-open link."""
    import time

    listener = listener_factory(unique_name)
    config = write_node_config(tmp_path, yard=unique_name, broker=mosquitto, keepalive_s=5)
    node = node_processes(config)
    listener.wait_for(lambda env: any(e.kind == "status" for e in env))
    node.kill()
    killed_at = time.monotonic()
    got = listener.wait_for(lambda env: [e.message.state for e in env
                                         if e.kind == "status"][-1] == "offline", timeout_s=15)
    assert time.monotonic() - killed_at < 1.5 * 5 + 1.5
    will = [e.message for e in got if e.kind == "status"][-1]
    assert will.buffered == 0 and will.uptime_s == 0.0  # the will, not a clean goodbye
    # Retained: whoever subscribes later sees the node offline.
    late = listener_factory(unique_name, client_id=f"late-{unique_name}")
    retained = late.wait_for(lambda env: any(e.kind == "status" for e in env))
    assert [e.message.state for e in retained if e.kind == "status"] == ["offline"]
    assert late.messages[0][2] is True


@pytest.mark.slow
def test_two_nodes_with_one_identity_do_not_take_over_in_a_hot_loop(
        mosquitto: Any, unique_name: str, tmp_path: Path, node_processes: Any) -> None:
    """N9, a cloned SD card: each connection takes the other's session over.

    Connections that drop within seconds do not reset the backoff, so the
    pair settles to ever rarer reconnects instead of a take-over loop.
    """
    import time

    configs = []
    for name in ("a", "b"):
        directory = tmp_path / name
        directory.mkdir()
        configs.append(write_node_config(directory, yard=unique_name, broker=mosquitto))
    nodes = [node_processes(config) for config in configs]
    time.sleep(12)  # the behaviour over time is what is measured here
    reports = [json.loads((tmp_path / name / "n1.sqlite3.status.json").read_text())
               for name in ("a", "b")]
    connects = sum(r["mqtt"]["connects"] for r in reports)
    short = sum(r["mqtt"]["short_sessions"] for r in reports)
    # With the backoff reset on every connect this was dozens (one per ~0.4 s).
    assert 2 <= connects <= 14, connects
    assert short >= 2
    for node in nodes:
        assert node.terminate()[0] == 0
    assert any("another device may be using" in node.stderr() for node in nodes)
