"""Helpers for the batch record tests: a server config, trays in InfluxDB, stand-ins.

Imported by name (no conftest.py here, so nothing shadows tests/conftest.py).

The stand-ins replace the analysis modules (``series``, ``metrics``,
``estimate``, ``report``) behind the service's ``Analysis`` seam: they are
small, deterministic and say what they were asked, so these tests check what
the service hands over and what it does with the answers (and can make
InfluxDB "fail" on demand). The real modules have tests of their own, and
``test_end_to_end.py`` runs the service with all of them.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import influx_login_toml, influx_request

from secadero.devservices import SERVER_USER, Mosquitto
from secadero.errors import RetryableStorageError
from secadero.server.batches.model import (
    Batch,
    BatchMetrics,
    BatchSeries,
    DryingPeriod,
    Estimate,
)
from secadero.server.batches.series import YardClimate
from secadero.server.batches.service import Analysis
from secadero.server.influx import InfluxV1Writer, PointWriter
from secadero.settings import ServerSettings

HOUR = 3600.0
DAY = 86400.0


def write_config(path: Path, *, influx_url: str, database: str, batches_db: Path,
                 broker: Mosquitto | None = None, alerts_db: Path | None = None,
                 api_port: int | None = None) -> Path:
    """A server.toml with one yard, ``norte`` (America/Lima); with ``broker``, the server
    logs in there as its server user."""
    mqtt_login = (f"port = {broker.port}\n{broker.toml_credentials(SERVER_USER)}"
                  if broker is not None else "port = 1883\n")
    alerts = ""
    if alerts_db is not None:
        alerts = f'[alerts]\ndatabase = "{alerts_db}"\napi_port = {api_port or 0}\n'
    path.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\n{mqtt_login}client_id = "batches-{database}"\n'
        f'[influxdb]\nurl = "{influx_url}"\ndatabase = "{database}"\ntimeout_s = 5\n'
        f"{influx_login_toml(influx_url)}"
        f'[ingest]\nhttp_port = 0\nstate_file = "{path.parent / "state.json"}"\n'
        f'set_aside_file = "{path.parent / "set-aside.jsonl"}"\n'
        f'[batches]\ndatabase = "{batches_db}"\n'
        f"{alerts}"
        '[[yards]]\nid = "norte"\nname = "Norte"\nlatitude = -6.57\nlongitude = -76.14\n')
    return path


def influx(url: str, path: str, body: bytes) -> None:
    """A request to InfluxDB's HTTP API, our own (the test does not trust the code under test)."""
    request = influx_request(f"{url}{path}", data=body)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 204), response.status


def report_trays(url: str, database: str, yard: str, trays: dict[str, list[str]],
                 ts: float) -> None:
    """Make InfluxDB know the trays the way the ingest writes them (``tray`` points).

    The database must exist with its policies (``prepare_database``).
    """
    lines = [f"tray,node={node},tray={tray},yard={yard} extended=1i,state=\"extended\" "
             f"{int(ts)}" for node, names in trays.items() for tray in names]
    influx(url, f"/write?db={database}&precision=s", "\n".join(lines).encode())


class RecordedPoints:
    """A point sink over the real ``PointWriter`` that keeps each submission's future,
    so a test waits for the points to be stored (no polling)."""

    def __init__(self, writer: PointWriter) -> None:
        self.writer = writer
        self.futures: list[Future[None]] = []

    def submit(self, lines: Sequence[str], *, source: str) -> Future[None]:
        self.futures.append(self.writer.submit(lines, source=source))
        return self.futures[-1]

    def wait(self, timeout_s: float = 10.0) -> None:
        for future in self.futures:
            future.result(timeout_s)


def write_climate(url: str, database: str, yard: str, node: str, start: float, end: float,
                  *, step_s: float = 300.0, humidity_pct: float = 60.0,
                  temperature_c: float = 30.0) -> None:
    """Steady air from ``start`` to ``end``, as the ingest writes it (``climate`` points)."""
    lines = []
    ts = start
    while ts < end:
        lines.append(f"climate,node={node},yard={yard} humidity_pct={humidity_pct},"
                     f"temperature_c={temperature_c},vpd_kpa=1.7 {int(ts)}")
        ts += step_s
    influx(url, f"/write?db={database}&precision=s", "\n".join(lines).encode())


def prepare_database(settings: ServerSettings) -> None:
    """The database and its retention policies, as the server's ingest makes them at start."""
    writer = InfluxV1Writer(settings.influxdb)
    writer.prepare()
    writer.close()


@dataclass
class StandInSeries:
    """Answers ``read`` with an empty series of the span asked; fails while ``down``
    (InfluxDB not answering) or ``broken`` (a bug)."""

    down: bool = False
    broken: bool = False  # raise what a bug raises
    asked: list[tuple[str, float]] = field(default_factory=list)
    climate_asked: list[tuple[str, float, float]] = field(default_factory=list)
    climate_down: bool = False  # only the yard's climate does not answer

    def read(self, batch: Batch, until: float) -> BatchSeries:
        self.asked.append((batch.id, until))
        if self.broken:
            raise ValueError("zip() argument 2 is longer than argument 1")
        if self.down:
            raise RetryableStorageError("InfluxDB at http://127.0.0.1:9: connection refused")
        return BatchSeries(start=batch.started_at, end=until)

    def read_yard_climate(self, yard: str, start: float, end: float) -> YardClimate:
        """No climate before the batch: the service falls back on the built-in day."""
        self.climate_asked.append((yard, start, end))
        if self.broken:
            raise ValueError("math domain error")
        if self.down or self.climate_down:
            raise RetryableStorageError("InfluxDB at http://127.0.0.1:9: connection refused")
        return YardClimate((), (), 300.0)


def standin_metrics(batch: Batch, series: BatchSeries, readings: Any, settings: Any,
                    yard: Any) -> BatchMetrics:
    """Figures that show what it was given: drying hours = the span's hours / 2."""
    span_h = (series.end - series.start) / HOUR
    return BatchMetrics(until=series.end, sun_drying_h=span_h / 2 + 1, drying_h=span_h / 2,
                        rewetting_h=0.0, rain_exposure_min=float(len(readings)),
                        responses=(), humidity_mean_pct=60.0, humidity_min_pct=40.0,
                        humidity_max_pct=90.0, temperature_mean_c=30.0,
                        temperature_min_c=22.0, temperature_max_c=38.0, vpd_mean_kpa=1.5,
                        time_to_target_h=None)


def standin_periods(batch: Batch, series: BatchSeries, settings: Any
                    ) -> tuple[DryingPeriod, ...]:
    return (DryingPeriod(series.start, series.end),)


def standin_estimate(readings: Any, periods: Any, *, now: float, target_pct: float,
                     schedule: Any, typical_day_kpa_h: float,
                     typical_day_days: float | None) -> Estimate:
    """Always one, two and three days after ``now``."""
    return Estimate(target_pct=target_pct, p20_ts=now + DAY, p50_ts=now + 2 * DAY,
                    p80_ts=now + 3 * DAY, details={"readings": float(len(readings)),
                                                   "periods": float(len(periods))})


def standin_to_json(batch: Batch, series: BatchSeries, metrics: BatchMetrics,
                    readings: Any, estimate: Estimate, *, timezone: str) -> dict[str, Any]:
    return {"batch": batch.id, "timezone": timezone, "drying_h": metrics.drying_h,
            "readings": [r.moisture_pct for r in readings], "p50_ts": estimate.p50_ts}


def standin_write_csv(path: Path, batch: Batch, series: BatchSeries, metrics: BatchMetrics,
                      readings: Any, estimate: Estimate, *, timezone: str) -> None:
    path.write_text("batch,drying_h,timezone\n" + f"{batch.id},{metrics.drying_h},{timezone}\n")


@dataclass
class StandInRender:
    """Writes a text file where the PDF/PNG goes; fails while ``broken`` (after writing)."""

    broken: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, batch: Batch, series: BatchSeries, metrics: BatchMetrics,
                 readings: Any, estimate: Estimate, *, language: str, timezone: str,
                 pdf_path: Path | None, png_path: Path | None) -> None:
        self.calls.append({"batch": batch.id, "language": language, "timezone": timezone})
        for path, kind in ((pdf_path, "PDF"), (png_path, "PNG")):
            if path is not None:
                path.write_text(f"{kind} {batch.id} {language} {metrics.drying_h}")
        if self.broken:
            raise RuntimeError("matplotlib fell over")


def standin_analysis(render: StandInRender | None = None) -> Analysis:
    return Analysis(compute=standin_metrics, drying_periods=standin_periods,
                    estimate=standin_estimate, to_json=standin_to_json,
                    write_csv=standin_write_csv, render=render or StandInRender())
