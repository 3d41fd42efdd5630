"""What a poison point costs: one batch with field-type conflicts, against a private InfluxDB.

Run by hand: ``.venv/bin/python bench/poison_point.py [--lines 5000] [--bad 1] [--runs 3]``.
Starts its own InfluxDB 1.x (Debian's ``influxd``) on a free loopback port,
seeds ``rain_mm`` as an integer, then writes a batch of telemetry lines (the
ingest's ``LineBuilder``) with ``--bad`` float ``rain_mm`` lines spread in
it, twice per run: through ``Rejections`` (what the ingest does now) and
through the bisection it replaced (kept below for the comparison only).
Prints /write requests, lines sent and wall time for each.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from secadero.contract import Telemetry
from secadero.devservices import InfluxDB, influx_admin_for, influx_request
from secadero.server.influx import InfluxV1Writer, WriteRejected
from secadero.server.metrics import Metrics
from secadero.server.partial_write import Rejections
from secadero.server.points import LineBuilder
from secadero.settings import InfluxSettings

_DROPPED = re.compile(r"dropped=(\d+)")


class Counting:
    def __init__(self, inner: InfluxV1Writer) -> None:
        self.inner, self.requests, self.lines = inner, 0, 0

    def prepare(self) -> None:
        self.inner.prepare()

    def write(self, body: bytes) -> None:
        self.requests += 1
        self.lines += body.count(b"\n") + 1
        self.inner.write(body)

    def close(self) -> None:
        self.inner.close()


def bisect(writer: Counting, lines: list[bytes], aside: Callable[[bytes, str], None]) -> None:
    """The ingest's 400 handling before partial_write.py: halve until each bad line is alone."""
    try:
        writer.write(b"\n".join(lines))
    except WriteRejected as exc:
        dropped = _DROPPED.search(exc.body)
        if len(lines) == 1 or (dropped and int(dropped.group(1)) >= len(lines)):
            for line in lines:
                aside(line, exc.body)
            return
        middle = len(lines) // 2
        bisect(writer, lines[:middle], aside)
        bisect(writer, lines[middle:], aside)


def batch(builder: LineBuilder, start: int, size: int, bad: int) -> list[bytes]:
    lines: list[bytes] = []
    for k in range(size // 3):
        lines += builder.telemetry_lines("y", f"n{k % 20}", Telemetry(
            ts=start + 1 + k * 0.5, seq=k + 1, temperature_c=25.0, humidity_pct=60.5,
            rain=False, trays={"t1": "extended"}))
    step = max(1, len(lines) // (bad + 1))
    for j in range(bad):
        lines.insert((j + 1) * step, builder.telemetry_lines(
            "y", "n99", Telemetry(ts=start + 1 + j, seq=1, rain_mm=2.5))[0])
    return lines


def run_once(url: str, database: str, how: str, lines: list[bytes], start: int) -> str:
    admin = influx_admin_for(url)
    assert admin is not None, "a private InfluxDB of this process"
    writer = Counting(InfluxV1Writer(InfluxSettings(url=url, database=database,
                                                    username=admin[0], password=admin[1])))
    writer.prepare()
    query = urllib.parse.urlencode({"db": database, "precision": "s"})
    urllib.request.urlopen(influx_request(
        f"{url}/write?{query}", data=f"rain,node=n0,yard=y rain_mm=1i {start}".encode()),
        timeout=10)
    aside: list[bytes] = []
    began = time.perf_counter()
    if how == "bisection":
        bisect(writer, lines, lambda line, reason: aside.append(line))
    else:
        try:
            writer.write(b"\n".join(lines))
        except WriteRejected as exc:
            Rejections(writer, lambda line, reason: aside.append(line),
                       Metrics()).handle(lines, exc)
    elapsed = time.perf_counter() - began
    writer.close()
    return (f"{writer.requests:4d} requests, {writer.lines:6d} lines sent, "
            f"{len(aside)} set aside, {elapsed * 1000:5.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000, help="about this many lines a batch")
    parser.add_argument("--bad", type=int, default=1, help="conflicting lines in the batch")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    # Inside one clock hour (one shard group), as a live batch is.
    start = (int(time.time()) // 3600 - 2) * 3600
    lines = batch(LineBuilder(), start, args.lines, args.bad)
    with tempfile.TemporaryDirectory() as workdir:
        influx = InfluxDB(workdir=Path(workdir)).start()
        try:
            for run in range(args.runs):
                for how in ("partial_write", "bisection"):
                    result = run_once(influx.url, f"poison_{how}_{run}", how, lines, start)
                    print(f"{how:13s} batch {len(lines)} lines, {args.bad} bad: {result}")
        finally:
            influx.stop()


if __name__ == "__main__":
    main()
