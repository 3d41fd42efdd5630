"""Benchmark: ``secadero batch show`` and ``report`` as the quality manager runs them.

Run by hand:  .venv/bin/python bench/batch_commands.py [--days 10] [--repeats 5]

The same 10-day batch as bench/batch_show.py (four nodes, one reading per
10 s each, ~350,000 climate points, written with its ``write_batch``) in a
private InfluxDB 1.x, after ``--history-days`` (28) days of the same yard's
climate (what the start learns the yard's typical day from), recorded with the
real commands (``batch start``, a moisture reading a day). Measured, wall
clock, median of ``--repeats``:

- ``secadero batch start`` as a process, once (the first start of the day in a
  yard reads its four weeks of climate and learns its typical day; the later
  ones find it kept), and the read + learning alone in a running process;
- the first ``secadero batch show`` after the start (the typical day kept);
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
from secadero.server.batches import typical
from secadero.server.batches.model import DryingSchedule
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
    parser.add_argument("--history-days", type=int, default=28)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, InfluxDB(workdir=Path(tmp) / "influx") as influx:
        influx.start()
        influx_settings = influx.settings("bench", timeout_s=60)
        writer = InfluxV1Writer(influx_settings)
        writer.prepare()
        # Ended a day ago (the commands refuse times in the future).
        start = (time.time() - (args.days + 1) * 86400) // 3600 * 3600
        written = write_batch(writer, start - args.history_days * 86400,
                              args.history_days + args.days)
        print(f"wrote {written:,} climate readings ({args.history_days} days before the "
              f"batch and its {args.days})", flush=True)
        until = start + args.days * 86400
        config = Path(tmp) / "server.toml"
        config.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\n[influxdb]\nurl = "{influx.url}"\n'
            f"{influx.toml_credentials()}"
            f'database = "bench"\ntimeout_s = 60\n[batches]\ndatabase = "batches.sqlite3"\n'
            f'[[yards]]\nid = "{YARD.id}"\nlatitude = {YARD.latitude}\n'
            f"longitude = {YARD.longitude}\n")
        batch = [SECADERO, "batch"]
        started = timed([*batch, "start", "b1", "--config", str(config), "--yard", YARD.id,
                         "--trays", ",".join(f"{n}/t1" for n in NODES), "--at", str(start)])
        for day in range(args.days):
            subprocess.run([*batch, "moisture", "b1", "--config", str(config), "--pct",
                            str(round(52 - 4.2 * day, 1)), "--at",
                            str(start + day * 86400 + 7200)], check=True,
                           stdout=subprocess.DEVNULL)
        show = [*batch, "show", "b1", "--config", str(config), "--until", str(until)]
        first_show = timed(show)  # InfluxDB's caches cold for the batch's span
        shows = [timed(show) for _ in range(args.repeats)]
        settings = load_server_settings(config)
        service = BatchService.from_settings(settings)
        learning = []
        for _ in range(args.repeats):  # what the start paid for the typical day
            began = time.perf_counter()
            since, before = typical.window_days(start, DryingSchedule(YARD.timezone),
                                                settings.batches.typical_day_days)
            climate = service.series.read_yard_climate(YARD.id, since, before)
            learnt = typical.learn(climate.samples, climate.wet, now=start,
                                   schedule=DryingSchedule(YARD.timezone),
                                   days=settings.batches.typical_day_days,
                                   bucket_s=climate.bucket_s,
                                   max_humidity_pct=settings.batches.drying_max_humidity_pct)
            learning.append(time.perf_counter() - began)
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
        print(f"  secadero batch start (process, once, learning the typical day): "
              f"{started * 1000:.0f} ms")
        print(f"  the typical day's read + learning (in process, {learnt.source}, "
              f"{learnt.days} days, {learnt.kpa_h:.1f} kPa·h): "
              f"{statistics.median(learning) * 1000:.0f} ms (best {min(learning) * 1000:.0f})")
        print(f"  secadero batch show (process), the first after the start: "
              f"{first_show * 1000:.0f} ms")
        print(f"  secadero batch show (process):  {statistics.median(shows) * 1000:.0f} ms "
              f"(best {min(shows) * 1000:.0f})")
        print(f"  BatchService.show (in process): {statistics.median(in_process) * 1000:.0f} "
              f"ms (best {min(in_process) * 1000:.0f})")
        print(f"  secadero batch report (process, PDF + PNG): "
              f"{statistics.median(reports) * 1000:.0f} ms (best {min(reports) * 1000:.0f})")


if __name__ == "__main__":
    main()
