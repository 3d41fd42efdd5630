"""Benchmark: ``secadero batch show`` and ``report`` as the quality manager runs them.

Run by hand:  .venv/bin/python bench/batch_commands.py [--days 10] [--repeats 5]

The same 10-day batch as bench/batch_show.py (four nodes, one reading per
10 s each, ~350,000 climate points, written with its ``write_batch``) in a
private InfluxDB 1.x, recorded with the real commands (``batch start``, a
moisture reading a day). Measured, wall clock, median of ``--repeats``:

- ``secadero batch show`` as a process (Python start-up, imports, SQLite,
  InfluxDB, metrics, estimate) against the issue's 0.5 s;
- ``BatchService.show`` in a running process (what ``GET /api/batches/{id}``
  costs the server), the same figure without the start-up;
- ``secadero batch report`` (PDF + PNG) as a process, against the 2 s budget.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batch_show import NODES, YARD, write_batch  # bench/, beside this file

from secadero.devservices import InfluxDB
from secadero.server.batches.service import BatchService
from secadero.server.influx import InfluxV1Writer
from secadero.settings import load_server_settings

SECADERO = str(Path(sys.executable).with_name("secadero"))


def timed(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, InfluxDB(workdir=Path(tmp) / "influx") as influx:
        influx.start()
        influx_settings = influx.settings("bench", timeout_s=60)
        writer = InfluxV1Writer(influx_settings)
        writer.prepare()
        # Ended a day ago (the commands refuse times in the future).
        start = (time.time() - (args.days + 1) * 86400) // 3600 * 3600
        write_batch(writer, start, args.days)
        until = start + args.days * 86400
        config = Path(tmp) / "server.toml"
        config.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\n[influxdb]\nurl = "{influx.url}"\n'
            f"{influx.toml_credentials()}"
            f'database = "bench"\ntimeout_s = 60\n[batches]\ndatabase = "batches.sqlite3"\n'
            f'[[yards]]\nid = "{YARD.id}"\nlatitude = {YARD.latitude}\n'
            f"longitude = {YARD.longitude}\n")
        batch = [SECADERO, "batch"]
        subprocess.run([*batch, "start", "b1", "--config", str(config), "--yard", YARD.id,
                        "--trays", ",".join(f"{n}/t1" for n in NODES), "--at", str(start)],
                       check=True)
        for day in range(args.days):
            subprocess.run([*batch, "moisture", "b1", "--config", str(config), "--pct",
                            str(round(52 - 4.2 * day, 1)), "--at",
                            str(start + day * 86400 + 7200)], check=True,
                           stdout=subprocess.DEVNULL)
        show = [*batch, "show", "b1", "--config", str(config), "--until", str(until)]
        timed(show)  # warm up InfluxDB's caches, as a second look at the batch would
        shows = [timed(show) for _ in range(args.repeats)]
        service = BatchService.from_settings(load_server_settings(config))
        service.show("b1", until=until)
        in_process = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            service.show("b1", until=until)
            in_process.append(time.perf_counter() - began)
        service.close()
        report = [*batch, "report", "b1", "--config", str(config), "--until", str(until),
                  "--pdf", str(Path(tmp) / "b1.pdf"), "--png", str(Path(tmp) / "b1.png")]
        reports = [timed(report) for _ in range(args.repeats)]
        print(f"{args.days}-day batch, {len(NODES)} nodes at 10 s, {args.days} moisture "
              f"readings; median of {args.repeats}:")
        print(f"  secadero batch show (process):  {statistics.median(shows) * 1000:.0f} ms "
              f"(best {min(shows) * 1000:.0f})")
        print(f"  BatchService.show (in process): {statistics.median(in_process) * 1000:.0f} "
              f"ms (best {min(in_process) * 1000:.0f})")
        print(f"  secadero batch report (process, PDF + PNG): "
              f"{statistics.median(reports) * 1000:.0f} ms (best {min(reports) * 1000:.0f})")


if __name__ == "__main__":
    main()
