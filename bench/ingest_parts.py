"""Where the ingest's CPU goes per reading, part by part, on one core (no broker, no InfluxDB).

Run by hand: ``.venv/bin/python bench/ingest_parts.py``. Times the pure
steps the server does per telemetry message (decode + validate; the lines
by the ingest's ``LineBuilder``; for comparison the same lines by
influxdb-client's ``Point`` and by ``influxdb.line_protocol.make_lines`` when
installed). ``ingest_receive.py`` times the MQTT thread as a whole.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from secadero.contract import TimeWindow, decode
from secadero.server.points import LineBuilder, points_for, to_lines

N = 20_000


def timed(label: str, fn, n: int = N) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        fn()
    us = (time.perf_counter() - start) / n * 1e6
    print(f"{label:58s} {us:6.1f} us")
    return us


def main() -> None:
    now = time.time()
    payload = json.dumps({"ts": now - 100, "seq": 5, "temperature_c": 24.5, "humidity_pct": 71.2,
                          "rain": False, "rain_mm": 0.0, "trays": {"t1": "extended"}}).encode()
    topic = "secadero/v1/bench/n1/telemetry"
    envelope = decode(topic, payload, TimeWindow(now))
    timed("decode + validate (secadero.contract.decode)",
          lambda: decode(topic, payload, TimeWindow(now, 30 * 86400)))
    builder = LineBuilder()
    timed("lines by LineBuilder (the ingest's path, 3 lines)",
          lambda: builder.lines(envelope, now))
    timed("points (3 Points: climate + derived, rain, tray)", lambda: points_for(envelope, now))
    points = points_for(envelope, now)
    timed("line protocol of those 3 points (Point.to_line_protocol)", lambda: to_lines(points))
    try:
        from influxdb.line_protocol import make_lines
    except ImportError:
        print("influxdb (1.x client) not installed: make_lines not measured")
        return
    dicts = [{"measurement": "climate", "tags": {"yard": "bench", "node": "n1"},
              "fields": {"temperature_c": 24.5, "humidity_pct": 71.2, "dew_point_c": 18.9,
                         "vpd_kpa": 0.88}, "time": 1_764_000_000_000_000},
             {"measurement": "rain", "tags": {"yard": "bench", "node": "n1"},
              "fields": {"wet": False, "rain_mm": 0.0}, "time": 1_764_000_000_000_000},
             {"measurement": "tray", "tags": {"yard": "bench", "node": "n1", "tray": "t1"},
              "fields": {"state": "extended", "extended": 1}, "time": 1_764_000_000_000_000}]
    timed("the same 3 points via influxdb.line_protocol.make_lines",
          lambda: make_lines({"points": dicts}, precision="u"))


if __name__ == "__main__":
    main()
