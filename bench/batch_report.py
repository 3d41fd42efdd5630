"""Benchmark: the one-page batch report (PDF + PNG) of a 10-day batch (target: under 2 s).

Run by hand:  .venv/bin/python bench/batch_report.py [--runs 5] [--out DIR]

The batch: 10 days, 4 nodes reading every 10 s (345,600 climate samples, the
issue's "about 350,000 points"), 8 trays out by day and in at night, a shower
every day with its alert, a 2-hour gap, a moisture reading each morning. The
series is built in memory as ``BatchSeries`` (reading it from InfluxDB is the
series part's benchmark); what is timed is ``report.render`` writing both
files, the first run in a fresh process (matplotlib's import included) and the
next ``--runs`` warm; then, for the record, the CSV and JSON exports (every
sample, no target). Prints the figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from secadero.server.batches.model import (
    AlertMark,
    Batch,
    BatchMetrics,
    BatchSeries,
    ClimateSample,
    Estimate,
    Interval,
    MoistureReading,
    RainResponse,
    TrayChange,
    TrayRef,
)

LIMIT_S = 2.0
HOUR, DAY = 3600.0, 86400.0
START = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()  # 07:00 in Lima


def build(days: int = 10, nodes: int = 4, every_s: float = 10.0):
    node_ids = [f"nodo-{i + 1}" for i in range(nodes)]
    trays = tuple(TrayRef(node, f"t{j + 1}") for node in node_ids for j in range(2))
    end = START + days * DAY
    gap = Interval(START + 3 * DAY + 4 * HOUR, START + 3 * DAY + 6 * HOUR)
    showers = tuple(Interval(START + d * DAY + (3 + d % 5) * HOUR,
                             START + d * DAY + (3 + d % 5) * HOUR + (10 + 7 * d) * 60)
                    for d in range(days))
    climate = []
    steps = int(days * DAY / every_s)
    for step in range(steps):
        ts = START + step * every_s
        if gap.start <= ts < gap.end:
            continue
        daylight = max(0.0, math.sin(((ts - START) / HOUR + 1) / 12 * math.pi))
        for n, node in enumerate(node_ids):
            humidity = 92.0 - 35.0 * daylight + n + 3 * math.sin(step / 37 + n)
            temperature = 22.0 + 9.0 * daylight - n * 0.3
            vpd = 0.6108 * math.exp(17.27 * temperature / (temperature + 237.3)) * (
                1 - humidity / 100)
            climate.append(ClimateSample(ts, node, temperature, humidity, vpd))
    changes, alerts, responses = [], [], []
    for d, shower in enumerate(showers):
        for tray in trays:
            changes += [TrayChange(START + d * DAY + 0.5 * HOUR, tray, "extended"),
                        TrayChange(shower.start + 8 * 60, tray, "retracted"),
                        TrayChange(shower.end + 30 * 60, tray, "extended"),
                        TrayChange(START + d * DAY + 10.5 * HOUR, tray, "retracted")]
        alerts += [AlertMark(shower.start - 600, "rain_forecast", "raised", d + 1),
                   AlertMark(shower.end + 600, "rain_forecast", "resolved", d + 1)]
        responses.append(RainResponse(d + 1, shower.start - 600, shower.start + 480, 18.0))
    changes.sort(key=lambda c: (c.ts, c.tray))
    series = BatchSeries(START, end, tuple(climate), tuple(changes), showers, tuple(alerts),
                         (gap,))
    readings = [MoistureReading("B-BENCH", START + d * DAY + 2 * HOUR,
                                7.0 + 48.0 * math.exp(-0.3 * d), by="Rosa", tray=trays[0])
                for d in range(days)]
    batch = Batch(id="B-BENCH", yard="tendal-norte", trays=trays, started_at=START,
                  lot="L-0001", member="Familia Quispe", fermentation_end="2026-11-19",
                  wet_weight_kg=800.0)
    metrics = BatchMetrics(end, 90.0, 70.0, 4.0, 30.0, tuple(responses), 72.0, 50.0, 97.0,
                           26.0, 21.0, 31.0, 1.1, None, (gap,))
    estimate = Estimate(7.5, end + 5 * HOUR, end + DAY, end + DAY + 6 * HOUR)
    return batch, series, metrics, readings, estimate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="keep the files here (default: a temp dir)")
    args = parser.parse_args()
    data = build()
    print(f"climate samples: {len(data[1].climate):,}")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        pdf, png = out / "batch.pdf", out / "batch.png"

        def run() -> tuple[float, float]:
            """Wall-clock and CPU seconds (the machine is shared: CPU time is the steadier)."""
            started, cpu = time.perf_counter(), time.process_time()
            # imported inside the first timed run: a fresh process pays matplotlib's import
            from secadero.server.batches import report

            report.render(*data, language="es", timezone="America/Lima", pdf_path=pdf,
                          png_path=png)
            return time.perf_counter() - started, time.process_time() - cpu

        cold, cold_cpu = run()
        warm = [run() for _ in range(args.runs)]
        print(f"first run (imports included): {cold:.2f} s = {cold / LIMIT_S:.2f} of the limit "
              f"(CPU {cold_cpu:.2f} s)")
        median = statistics.median(w for w, _ in warm)
        median_cpu = statistics.median(c for _, c in warm)
        print(f"warm, {args.runs} runs: median {median:.2f} s = {median / LIMIT_S:.2f} of the "
              f"limit, max {max(w for w, _ in warm):.2f} s (CPU median {median_cpu:.2f} s)")
        print(f"files: PDF {pdf.stat().st_size / 1024:.0f} KiB, "
              f"PNG {png.stat().st_size / 1024:.0f} KiB")

        # The exports are not decimated: every sample is a row (no target; for the docs).
        from secadero.server.batches import report

        started = time.perf_counter()
        report.write_csv(out / "batch.csv", *data, timezone="America/Lima")
        csv_s = time.perf_counter() - started
        started = time.perf_counter()
        (out / "batch.json").write_text(json.dumps(report.to_json(*data,
                                                                  timezone="America/Lima")))
        json_s = time.perf_counter() - started
        print(f"CSV {csv_s:.2f} s ({(out / 'batch.csv').stat().st_size / 2**20:.0f} MiB), "
              f"JSON {json_s:.2f} s ({(out / 'batch.json').stat().st_size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
