"""Benchmark: what the quality warnings add to one alert evaluation cycle.

Run by hand:  .venv/bin/python bench/batch_warnings.py [--yards 500] [--batches 3] [--cycles 20]

The yards are those of ``bench/alerts_evaluate.py`` (3 nodes, 180 humidity
samples each, a 48-hour forecast, state in SQLite); each yard has
``--batches`` open batches with five moisture readings each. Measured, per
full cycle (``AlertCore.evaluate`` for every yard):

- without batches (``open_batches`` not wired), the base line;
- with the open batches given from memory: the cost of the rules alone;
- with them read from the real batch records (``BatchStore`` in SQLite,
  through ``warnings.open_batches_from``), as the server reads them;
- a cycle in which every batch gets a brittle reading at once (every yard
  raises ``--batches`` episodes: SQLite writes included).

Prints the figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from alerts_evaluate import build  # the bench next door, found by path

from secadero.server.alerts.service import AlertCore
from secadero.server.batches.model import Batch, MoistureReading, TrayRef
from secadero.server.batches.warnings import (
    OpenBatch,
    OpenBatches,
    open_batch,
    open_batches_from,
)

DAY_S = 86400.0


def records(n_yards: int, per_yard: int, now: float) -> tuple[list[Batch], list[MoistureReading]]:
    batches, readings = [], []
    for y in range(n_yards):
        for b in range(per_yard):
            batch = Batch(id=f"yard-{y}-b{b}", yard=f"yard-{y}",
                          trays=(TrayRef(f"n{b % 3 + 1}", f"t{b // 3 + 1}"),),
                          started_at=now - 5 * DAY_S)
            batches.append(batch)
            readings += [MoistureReading(batch.id, now - (5 - d) * DAY_S + 3600, 50.0 - 8 * d)
                         for d in range(5)]
    return batches, readings


def cycles(core: AlertCore, now: float, count: int) -> list[float]:
    core.evaluate(now)  # warm-up (and the first cycle's raises)
    times = []
    for i in range(count):
        started = time.perf_counter()
        core.evaluate(now + 1 + i)
        times.append(time.perf_counter() - started)
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--yards", type=int, default=500)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    # The bench's yards have no quality recipient: the engine says so, 1,500 times.
    logging.disable(logging.WARNING)
    now = time.time()
    batches, readings = records(args.yards, args.batches, now)
    by_yard: dict[str, list[OpenBatch]] = {}
    for batch in batches:
        by_yard.setdefault(batch.yard, []).append(
            open_batch(batch, [r for r in readings if r.batch == batch.id]))
    in_memory: OpenBatches = lambda yard: by_yard.get(yard, [])  # noqa: E731

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        def measure(name: str, open_batches: OpenBatches | None) -> AlertCore:
            workdir = Path(tmp) / name.replace(" ", "-")
            workdir.mkdir()
            core, _ = build(args.yards, workdir, now)
            core.open_batches = open_batches
            results[name] = cycles(core, now, args.cycles)
            return core

        measure("without batches", None)
        core = measure("batches from memory", in_memory)
        try:
            from secadero.server.batches.store import BatchStore
        except ImportError:
            print("(no batch records in this tree: server/batches/store.py not merged yet)")
        else:
            store = BatchStore(Path(tmp) / "batches.sqlite3")
            for batch in batches:
                store.add_batch(batch)
            for reading in readings:
                store.add_moisture(reading)
            measure("batches from SQLite", open_batches_from(store))
            reads = []
            for _ in range(args.cycles):
                started = time.perf_counter()
                for y in range(args.yards):
                    open_batches_from(store)(f"yard-{y}")
                reads.append(time.perf_counter() - started)
            results["the SQLite reads alone"] = sorted(reads)
            store.close()

        # Every batch gets a brittle reading at once: every yard raises.
        brittle = {yard: [OpenBatch(b.id, b.yard, b.trays, b.started_at, 4.5, now, 4.5)
                          for b in batches_] for yard, batches_ in by_yard.items()}
        core.open_batches = lambda yard: brittle.get(yard, [])
        started = time.perf_counter()
        decisions = core.evaluate(now + args.cycles + 5)
        storm = time.perf_counter() - started
        raised = sum(len(d.episodes) for d in decisions)

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    print(f"yards: {args.yards}, {args.batches} open batches each (5 readings each), "
          f"{args.cycles} cycles")
    median: Callable[[list[float]], float] = statistics.median
    for name, times in results.items():
        print(f"{name}: median {ms(median(times))}, max {ms(times[-1])}")
    print(f"every batch brittle at once ({raised} episodes raised): {ms(storm)}")


if __name__ == "__main__":
    main()
