"""Benchmark: one alert evaluation cycle for 500 yards (target: under 50 ms).

Run by hand:  .venv/bin/python bench/alerts_evaluate.py [--yards 500] [--cycles 40]

Each yard has 3 nodes reporting every 10 s (so 180 humidity samples each in
the 30-minute window), 3 trays, and a 48-hour forecast. A cycle is what the
service's timer does: for every yard, build the view from the tracker and
run every rule through the engine, commit what changed (SQLite in a temp dir,
one transaction per cycle, one SAVEPOINT per yard) and swap it into memory:
``AlertCore.evaluate``, as ``AlertService.evaluate`` runs it.

Measured: a quiet cycle (nothing changes: the usual case), and a storm
cycle (every yard raises a rain episode and logs two notifications, the
worst case, SQLite writes included). Prints the figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from secadero.contract import Envelope, Event, Telemetry
from secadero.server.alerts.engine import AlertEngine
from secadero.server.alerts.service import AlertCore
from secadero.server.alerts.state import YardTracker
from secadero.server.alerts.store import AlertStore
from secadero.server.forecast import Forecast, ForecastHour, ForecastStatus
from secadero.settings import AlertSettings, RecipientSettings, YardSettings


def build(n_yards: int, workdir: Path, now: float) -> tuple[AlertCore, YardTracker]:
    recipients = (
        RecipientSettings(name="Rosa", role="worker", phone="+51900000001"),
        RecipientSettings(name="Luis", role="worker", ntfy_topic="luis", channels=("push",)),
        RecipientSettings(name="Tito", role="technician", phone="+51900000009"),
    )
    yards = [YardSettings(id=f"yard-{i}", name=f"Tendal {i}", latitude=-6.57,
                          longitude=-76.14, recipients=recipients) for i in range(n_yards)]
    # Drying hours all day, so the storm cycle really sends.
    settings = AlertSettings(drying_start="00:00", drying_end="24:00")
    engine = AlertEngine(settings, yards, started_at=now)
    tracker = YardTracker(yards)
    hour0 = now - now % 3600
    hours = tuple(ForecastHour(hour0 + h * 3600, hour0 + (h + 1) * 3600, 10.0, 0.0)
                  for h in range(48))
    forecasts = {y.id: ForecastStatus(Forecast("open-meteo", now, hours)) for y in yards}
    seq = 0
    for yard in yards:
        for node in ("n1", "n2", "n3"):
            for step in range(180):
                seq += 1
                ts = now - 1800 + step * 10
                tracker.observe(Envelope(yard.id, node, "telemetry", Telemetry(
                    ts=ts, seq=seq, temperature_c=30.0, humidity_pct=60.0 + step % 3,
                    rain=False, rain_mm=0.0, trays={"t1": "retracted"})), ts)
    core = AlertCore(engine, AlertStore(workdir / "alerts.sqlite3"), tracker,
                     forecast=forecasts.__getitem__)
    return core, tracker


def cycle(core: AlertCore, now: float) -> tuple[float, int]:
    started = time.perf_counter()
    notes = sum(len(decision.notifications) for decision in core.evaluate(now))
    return time.perf_counter() - started, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--yards", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=40)
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        core, tracker = build(args.yards, Path(tmp), now)
        cycle(core, now)  # warm-up
        quiet = []
        for i in range(args.cycles):
            seconds, notes = cycle(core, now + 1 + i)
            assert notes == 0
            quiet.append(seconds)
        # The storm: every yard's first plate gets wet at once.
        storm_at = now + args.cycles + 2
        for yard in tracker.yards():
            tracker.observe(Envelope(yard, "n1", "event", Event(ts=storm_at, seq=10**6,
                                                                type="rain_started")), storm_at)
        storm, notes = cycle(core, storm_at)
        assert notes == 2 * args.yards, notes
        after = [cycle(core, storm_at + 1 + i)[0] for i in range(10)]

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    quiet.sort()
    print(f"yards: {args.yards} (3 nodes, 180 humidity samples each, 48 h forecast)")
    print(f"quiet cycle: median {ms(statistics.median(quiet))}, "
          f"p95 {ms(quiet[int(len(quiet) * 0.95) - 1])}, max {ms(quiet[-1])} "
          f"({args.cycles} cycles)")
    print(f"storm cycle (all {args.yards} yards raise, {notes} notifications logged): "
          f"{ms(storm)}")
    print(f"cycle with {args.yards} open episodes: median {ms(statistics.median(after))}")
    print(f"per yard (quiet): {statistics.median(quiet) / args.yards * 1e6:.0f} us")


if __name__ == "__main__":
    main()
