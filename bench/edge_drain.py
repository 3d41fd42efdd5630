"""Outbox drain after an outage: a day of backlog (8,640 readings, one per 10 s) to a broker.

Fills the node's outbox through the real ``Outbox.add`` (fsync per message,
as in the field), then starts ``secadero edge run`` against a private
Mosquitto with a client playing the server (acks every 500 messages and
every 0.2 s, as the ingest acks per batch). Measures from the first to the
last backlog message arriving, and until the server has acked them all.

Target (issue 3): >= 2,000 messages/s, a day of backlog in under 5 s.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_common import AckingServer, node_config, private_broker, python

from secadero.contract import Telemetry
from secadero.edge.outbox import Outbox, kernel_boot_id

BACKLOG = 8640


def main() -> None:
    broker, workdir = private_broker()
    yard = "bench-drain"
    node_dir = workdir / "node"
    node_dir.mkdir()
    config = node_config(node_dir, yard=yard, broker=broker, sample_interval_s=3600)
    fill_started = time.perf_counter()
    now = time.time()
    with Outbox(node_dir / "outbox.sqlite3") as box:
        boot = kernel_boot_id()
        for index in range(BACKLOG):
            box.add(Telemetry(ts=round(now - (BACKLOG - index) * 10, 3), seq=0,
                              temperature_c=25.0 + index % 7 / 10, humidity_pct=70.0,
                              rain=False, rain_mm=0.0, trays={"t1": "extended",
                                                              "t2": "extended"}),
                    mono_s=0.0, kernel_boot=boot)
    fill_s = time.perf_counter() - fill_started
    server = AckingServer(broker, yard)
    started = time.perf_counter()
    node = subprocess.Popen([python(), "-m", "secadero.cli", "edge", "run", "--config",
                             str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(node_dir / "stderr.log", "wb"))  # noqa: SIM115
    try:
        ok = server.wait_for(lambda s: all(("n1", q) in s.first_seen
                                           for q in range(1, BACKLOG + 1)), 120)
        arrived = time.perf_counter()
        if not ok:
            raise SystemExit("backlog did not arrive")
        first = min(server.first_seen[("n1", q)] for q in range(1, BACKLOG + 1))
        last = max(server.first_seen[("n1", q)] for q in range(1, BACKLOG + 1))
        # Until the node has deleted what the server acked.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with Outbox(node_dir / "outbox.sqlite3", readonly=True) as box:
                if box.acked_seq >= BACKLOG:
                    break
            time.sleep(0.05)
        acked = time.perf_counter()
    finally:
        node.terminate()
        node.wait(30)
        server.close()
        broker.stop()
    drain_s = last - first
    print(f"backlog: {BACKLOG} messages (a day at one per 10 s); filling the outbox took "
          f"{fill_s:.1f} s ({BACKLOG / fill_s:.0f} fsynced commits/s)")
    print(f"node start -> last backlog message at the server: {arrived - started:.2f} s "
          "(includes Python start-up and connect)")
    print(f"first -> last backlog message: {drain_s:.2f} s = {BACKLOG / drain_s:.0f} messages/s")
    print(f"node start -> all acked and deleted: {acked - started:.2f} s")
    print(f"messages received incl. re-sends: {server.received}")


if __name__ == "__main__":
    main()
