"""Node footprint: RSS and CPU of ``secadero edge run`` at 1 sample/s plus rain and tray events.

Runs the node on the simulated yard at ``simulation_speed = 600`` (a shower
every ~20 s of real time, so plate and tray events keep coming) against a
private Mosquitto with a client playing the server (acks). After a warm-up,
CPU is read from /proc/PID/stat (utime + stime) over the window and RSS from
/proc/PID/status (VmRSS now, VmHWM peak).

Targets (issue 3): RSS under 40 MB, CPU under 2 % of one core.
Usage: bench/edge_footprint.py [seconds]   (default 120)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_common import AckingServer, node_config, private_broker, python

WARMUP_S = 10.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def main() -> None:
    window_s = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    broker, workdir = private_broker()
    yard = "bench-footprint"
    node_dir = workdir / "node"
    node_dir.mkdir()
    config = node_config(node_dir, yard=yard, broker=broker, sample_interval_s=1.0,
                         speed=600)
    server = AckingServer(broker, yard, ack_every=10, ack_interval_s=1.0)
    node = subprocess.Popen([python(), "-m", "secadero.cli", "edge", "run", "--config",
                             str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(node_dir / "stderr.log", "wb"))  # noqa: SIM115
    try:
        time.sleep(WARMUP_S)
        cpu0, wall0 = cpu_seconds(node.pid), time.monotonic()
        received0, events0 = server.received, len(server.events)
        time.sleep(window_s)
        cpu1, wall1 = cpu_seconds(node.pid), time.monotonic()
        memory = memory_kb(node.pid)
        received1, events1 = server.received, len(server.events)
    finally:
        node.terminate()
        node.wait(30)
        server.close()
        broker.stop()
    cpu_pct = 100 * (cpu1 - cpu0) / (wall1 - wall0)
    print(f"window {wall1 - wall0:.0f} s after {WARMUP_S:.0f} s warm-up: "
          f"{received1 - received0} messages ({events1 - events0} events)")
    print(f"CPU: {cpu_pct:.2f} % of one core")
    print(f"RSS now {memory['VmRSS'] / 1024:.1f} MB (anon {memory['RssAnon'] / 1024:.1f} MB, "
          f"file {memory['RssFile'] / 1024:.1f} MB), peak {memory['VmHWM'] / 1024:.1f} MB")


if __name__ == "__main__":
    main()
