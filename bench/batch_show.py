"""Benchmark: a 10-day batch's series read from InfluxDB plus its metrics (target: under 0.5 s).

Run by hand:  .venv/bin/python bench/batch_show.py [--days 10] [--repeats 7]

Starts a private InfluxDB 1.x (Debian's ``influxd``, as the test fixtures do)
and writes, in the ingest's own line protocol (``LineBuilder``, the event
points of server/points.py, ``alert_line``), a batch on four nodes with one
tray each, one reading per 10 s per node: about 350,000 climate points (and
as many rain and tray points). Each day: trays out 07:00-18:00 local time,
humidity 55-92 % (low at noon), and a shower at 13:00 with a rain alert,
the trays pulled in 3 minutes after it and out again an hour later.

Measured (best and median of ``--repeats``), once the points are fresh in
InfluxDB's cache and again once it has written them to its TSM files (as
all but the last hours of a real batch are: the bench waits for
``SHOW STATS`` to show an empty cache):
- ``SeriesReader.read`` + ``metrics.compute`` + ``metrics.drying_periods``
  at the default resolution, against the 0.5 s ``batch show`` budget;
- the peer: a plain ``SELECT *`` of the same climate points;
- how exact the default resolution is: the first day's metrics from
  10-second buckets (every reading), side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

from secadero.contract import Event, Telemetry
from secadero.devservices import InfluxDB, influx_request
from secadero.server.batches import metrics, typical
from secadero.server.batches.model import Batch, DryingSchedule, TrayRef
from secadero.server.batches.series import YARD_CLIMATE_BUCKET_S, SeriesReader
from secadero.server.influx import InfluxV1Writer
from secadero.server.influx_points import alert_line
from secadero.server.points import LineBuilder, event_points, to_lines
from secadero.settings import BatchSettings, YardSettings

YARD = YardSettings(id="bench", name="Bench", latitude=-5.64, longitude=-78.53)  # Bagua
NODES = ("n1", "n2", "n3", "n4")
LIMA = ZoneInfo("America/Lima")


class _Transition:
    def __init__(self, ts: float, kind: str, state: str, episode: int) -> None:
        self.ts, self.yard, self.kind, self.state = ts, YARD.id, kind, state
        self.severity, self.message, self.episode = "critical", "Lluvia", episode


def write_batch(writer: InfluxV1Writer, start: float, days: int) -> int:
    builder = LineBuilder()
    lines: list[bytes] = []
    count = 0
    for index, node in enumerate(NODES):
        for step in range(days * 8640):
            ts = start + step * 10 + index  # the nodes a second apart
            local = dt.datetime.fromtimestamp(ts, LIMA)
            hour = local.hour + local.minute / 60
            shower = 13.0 <= hour < 13.5
            out = 7.0 <= hour < 18.0 and not (13.05 <= hour < 14.0)
            humidity = 73.5 + 18.5 * math.cos((hour - 1) / 24 * 2 * math.pi)
            temperature = 27.0 + 6.0 * math.cos((hour - 13) / 24 * 2 * math.pi)
            lines += builder.telemetry_lines(YARD.id, node, Telemetry(
                ts=ts, seq=step + 1, temperature_c=round(temperature, 1),
                humidity_pct=round(100.0 if shower else humidity, 1), rain=shower,
                rain_mm=0.2 if shower else 0.0, trays={"t1": "extended" if out else "retracted"}))
            count += 1
            if len(lines) >= 20_000:
                writer.write(b"\n".join(lines))
                lines = []
    for day in range(days):
        midnight = dt.datetime.fromtimestamp(start, LIMA).replace(
            hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=day)
        for node in NODES:
            for hour, kind in ((7.0, "tray_extended"), (13.05, "tray_retracted"),
                               (14.0, "tray_extended"), (18.0, "tray_retracted")):
                ts = (midnight + dt.timedelta(hours=hour)).timestamp()
                lines += to_lines(list(event_points(YARD.id, node, Event(
                    ts=ts, seq=1, type=kind, tray="t1"))))
            for hour, kind in ((13.0, "rain_started"), (13.5, "rain_stopped")):
                ts = (midnight + dt.timedelta(hours=hour)).timestamp()
                lines += to_lines(list(event_points(YARD.id, node, Event(ts=ts, seq=1,
                                                                          type=kind))))
        raised = (midnight + dt.timedelta(hours=13.0)).timestamp()
        lines.append(alert_line(_Transition(raised, "rain_now", "raised", day + 1)).encode())
        lines.append(alert_line(_Transition(raised + 4 * 3600, "rain_now", "resolved",
                                            day + 1)).encode())
    writer.write(b"\n".join(lines))
    return count


def plain_select(url: str, database: str, start: float, end: float) -> float:
    query = (f"SELECT * FROM climate WHERE yard = '{YARD.id}' AND time >= {int(start)}s "
             f"AND time < {int(end)}s")
    form = urllib.parse.urlencode({"q": query, "db": database, "epoch": "u"}).encode()
    began = time.perf_counter()
    with urllib.request.urlopen(influx_request(f"{url}/query", data=form), timeout=60) as response:
        rows = sum(len(s["values"]) for r in json.load(response)["results"]
                   for s in r.get("series", []))
    elapsed = time.perf_counter() - began
    assert rows >= 8640 * len(NODES), rows
    return elapsed


def show(reader: SeriesReader, batch: Batch, until: float,
         settings: BatchSettings) -> tuple[float, metrics.BatchMetrics]:
    began = time.perf_counter()
    series = reader.read(batch, until)
    figures = metrics.compute(batch, series, [], settings, YARD)
    metrics.drying_periods(batch, series, settings)
    return time.perf_counter() - began, figures


def learn_typical_day(reader: SeriesReader, start: float, until: float,
                      settings: BatchSettings, bucket_s: int = YARD_CLIMATE_BUCKET_S,
                      ) -> float:
    began = time.perf_counter()
    learnt = typical_day(reader, start, until, settings, bucket_s)
    assert learnt.source == "learnt", learnt
    return time.perf_counter() - began


def typical_day(reader: SeriesReader, start: float, until: float, settings: BatchSettings,
                bucket_s: int) -> typical.TypicalDay:
    climate = reader.read_yard_climate(YARD.id, start, until, bucket_s=bucket_s)
    return typical.learn(climate.samples, climate.wet, now=until,
                         schedule=DryingSchedule(YARD.timezone),
                         days=round((until - start) / 86400), bucket_s=climate.bucket_s,
                         max_humidity_pct=settings.drying_max_humidity_pct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    settings = BatchSettings()
    # No row limit (1.x answers at most 10,000 rows per series by default): the
    # peer and the every-reading comparison read all 350,000 points.
    unlimited = {"INFLUXDB_HTTP_MAX_ROW_LIMIT": "0",
                 # Write the cache to TSM files 2 s after the last write, not 10 min.
                 "INFLUXDB_DATA_CACHE_SNAPSHOT_WRITE_COLD_DURATION": "2s"}
    with tempfile.TemporaryDirectory() as tmp, \
            InfluxDB(workdir=Path(tmp), extra_env=unlimited) as influx:
        influx.start()
        influx_settings = influx.settings("bench", timeout_s=60)
        writer = InfluxV1Writer(influx_settings)
        writer.prepare()
        start = dt.datetime(2027, 1, 11, 6, 0, tzinfo=LIMA).timestamp()
        began = time.perf_counter()
        readings = write_batch(writer, start, args.days)
        print(f"wrote {readings} readings x 3 points in {time.perf_counter() - began:.1f} s")
        until = start + args.days * 86400
        batch = Batch(id="b1", yard=YARD.id, trays=tuple(TrayRef(n, "t1") for n in NODES),
                      started_at=start)

        reader = SeriesReader(influx_settings, gap_after_s=settings.gap_after_s)
        for state in ("fresh", "settled"):
            if state == "settled":
                wait_for_empty_cache(influx.url)
            show(reader, batch, until, settings)  # warm up, as a second `batch show` is
            influx_cpu, own_cpu = cpu_seconds(influx.pid), time.process_time()
            times = [show(reader, batch, until, settings)[0] for _ in range(args.repeats)]
            influx_cpu = (cpu_seconds(influx.pid) - influx_cpu) / args.repeats
            own_cpu = (time.process_time() - own_cpu) / args.repeats
            peers = [plain_select(influx.url, "bench", start, until) for _ in range(3)]
            best, median = min(times), statistics.median(times)
            print(f"{state}: batch show (read + metrics): best {best * 1000:.0f} ms, median "
                  f"{median * 1000:.0f} ms = {median / 0.5:.2f} of the 0.5 s budget; plain "
                  f"SELECT * of the climate points: best {min(peers) * 1000:.0f} ms "
                  f"(batch show's median is {median / min(peers):.2f} of it)")
            print(f"  CPU per batch show: InfluxDB {influx_cpu * 1000:.0f} ms, ours "
                  f"{own_cpu * 1000:.0f} ms (load average now {os.getloadavg()[0]:.2f})")
            # The yard's typical day (server/batches/typical.py): the service learns it
            # at the batch's start from the yard's 28 days before (bench/batch_commands.py
            # times that); here over the days written, for its cost per day of climate.
            typical_times = [learn_typical_day(reader, start, until, settings)
                             for _ in range(args.repeats)]
            print(f"  the yard's typical day over {args.days} days (read + learn, paid at "
                  f"the start): median {statistics.median(typical_times) * 1000:.0f} ms")

        day = start + 86400
        exact = SeriesReader(influx_settings, gap_after_s=settings.gap_after_s, resolution_s=10)
        _, fine = show(exact, batch, day, settings)
        _, coarse = show(reader, batch, day, settings)
        print("first day, 5-minute buckets vs 10-second buckets (every reading):")
        for name in ("sun_drying_h", "drying_h", "rewetting_h", "rain_exposure_min",
                     "humidity_mean_pct", "humidity_min_pct", "humidity_max_pct",
                     "temperature_mean_c", "vpd_mean_kpa"):
            print(f"  {name:20} {getattr(coarse, name):9.3f} {getattr(fine, name):9.3f}")
        print(f"  responses (min)      {[r.minutes for r in coarse.responses]} "
              f"{[r.minutes for r in fine.responses]}")
        print(f"  gaps                 {len(coarse.gaps)} {len(fine.gaps)}")
        for bucket_s in (YARD_CLIMATE_BUCKET_S, 300, 100):
            learnt = typical_day(reader, start, until, settings, bucket_s)
            print(f"the yard's typical day from {bucket_s}-s buckets: {learnt.kpa_h:.3f} kPa·h, "
                  f"spread {learnt.sigma:.3f}, {learnt.days} days")


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_empty_cache(url: str, timeout_s: float = 180.0) -> None:
    """Until every shard's cache is written to TSM files (``SHOW STATS``, tsm1_cache)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        form = urllib.parse.urlencode({"q": "SHOW STATS"}).encode()
        with urllib.request.urlopen(influx_request(f"{url}/query", data=form),
                                    timeout=30) as response:
            series = json.load(response)["results"][0]["series"]
        cached = [dict(zip(s["columns"], s["values"][0], strict=True))["memBytes"]
                  for s in series if s["name"] == "tsm1_cache"
                  and s.get("tags", {}).get("database") == "bench"]
        if cached and not any(cached):
            return
        time.sleep(1.0)  # InfluxDB checks its caches once a second
    raise TimeoutError(f"InfluxDB's cache not written within {timeout_s:g} s")


if __name__ == "__main__":
    main()
