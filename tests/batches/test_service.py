"""BatchService: the checks the CLI and the API share, the ``batch`` points, show/report/export.

Against the real InfluxDB of tests/conftest.py: which trays exist is its tag
index (``tray`` points written here the way the ingest writes them), and the
``batch`` points go through the real ``PointWriter`` and are read back with
InfluxQL. The series, metrics, estimate and report modules are stand-ins
behind the service's ``Analysis`` seam (batch_helpers.py); test_end_to_end.py
runs the real ones.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from batch_helpers import (
    DAY,
    HOUR,
    RecordedPoints,
    StandInRender,
    StandInSeries,
    prepare_database,
    report_trays,
    standin_analysis,
    write_config,
)
from conftest import influx_query

from secadero.server.batches.model import (
    BatchError,
    MoistureReading,
    SeriesUnavailable,
    TrayRef,
    UnknownBatch,
)
from secadero.server.batches.service import BatchService, InfluxTrays
from secadero.server.batches.store import BatchStore
from secadero.server.influx import PointWriter
from secadero.server.metrics import Registry
from secadero.settings import ServerSettings, load_server_settings

pytestmark = pytest.mark.integration

NOW = time.time()
START = NOW - 3 * DAY
WAIT_S = 10


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(tmp_path: Path, influxdb: Any, unique_name: str) -> ServerSettings:
    loaded = load_server_settings(write_config(
        tmp_path / "server.toml", influx_url=influxdb.url, database=unique_name,
        batches_db=tmp_path / "batches.sqlite3"))
    prepare_database(loaded)
    report_trays(influxdb.url, unique_name, "norte",
                 {"norte-1": ["t1", "t2"], "norte-2": ["t1"]}, NOW - 4 * DAY)
    report_trays(influxdb.url, unique_name, "sur", {"sur-1": ["t9"]}, NOW - 4 * DAY)
    return loaded


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def points(settings: ServerSettings, registry: Registry) -> Iterator[RecordedPoints]:
    writer = PointWriter.from_settings(settings.influxdb, registry=registry).start()
    yield RecordedPoints(writer)
    writer.stop()


@pytest.fixture
def render() -> StandInRender:
    return StandInRender()


@pytest.fixture
def series() -> StandInSeries:
    return StandInSeries()


@pytest.fixture
def service(settings: ServerSettings, points: RecordedPoints, registry: Registry,
            render: StandInRender, series: StandInSeries) -> Iterator[BatchService]:
    made = BatchService(settings, store=BatchStore(settings.batches.database),
                        trays=InfluxTrays(settings.influxdb), series=series,
                        analysis=standin_analysis(render), points=points, clock=Clock(NOW),
                        registry=registry)
    yield made
    made.close()


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


def start(service: BatchService, batch_id: str = "lote-1", **kw: Any) -> Any:
    values: dict[str, Any] = {"yard": "norte", "trays": ["norte-1/t1", "norte-1/t2"],
                              "at": START, **kw}
    return service.start(id=batch_id, **values)


def test_start_moisture_end_and_their_batch_points(service: BatchService,
                                                   settings: ServerSettings,
                                                   points: RecordedPoints,
                                                   registry: Registry) -> None:
    at = datetime.fromtimestamp(int(START), ZoneInfo("America/Lima"))
    t0 = at.timestamp()
    batch = start(service, lot="L-07", member="Familia Ruiz", fermentation_end=str(at.date()),
                  wet_weight_kg="120.5", notes="caja 3", by="ana", at=at.isoformat())
    assert (batch.trays, batch.started_at, batch.wet_weight_kg, batch.fermentation_end) == (
        (TrayRef("norte-1", "t1"), TrayRef("norte-1", "t2")), t0, 120.5, str(at.date()))
    reading = service.moisture("lote-1", moisture_pct=41.5, at=t0 + DAY, by="ana",
                               tray="norte-1/t2")
    assert reading == MoistureReading("lote-1", t0 + DAY, 41.5, by="ana",
                                      tray=TrayRef("norte-1", "t2"))
    ended = service.end("lote-1", at=t0 + 2 * DAY, final_moisture_pct=7.1,
                        dry_weight_kg=52, by="luis")
    assert (ended.final_moisture_pct, ended.dry_weight_kg, ended.open) == (7.1, 52.0, False)
    assert service.list() == [ended]
    assert service.list(open_only=True) == []

    points.wait(WAIT_S)
    assert registry.part("influx").get("points_written_total", source="batch") == 3
    rows = influx_query(settings.influxdb.url, settings.influxdb.database,
                        'SELECT * FROM "batch" GROUP BY *')
    ms = int(t0) * 1000
    assert rows == [
        {"yard": "norte", "batch": "lote-1", "time": ms, "event": "start",
         "moisture_pct": None, "note": "caja 3"},
        {"yard": "norte", "batch": "lote-1", "time": ms + 86400000,
         "event": "moisture", "moisture_pct": 41.5, "note": "norte-1/t2 ana"},
        {"yard": "norte", "batch": "lote-1", "time": ms + 2 * 86400000,
         "event": "end", "moisture_pct": 7.1, "note": None}]
    batches = registry.part("batches")
    assert batches.by_label("operations_total", "operation") == {
        "start": 1, "moisture": 1, "end": 1}


REFUSALS = [
    ("start", {"id": "Lote 1"}, "id", "'Lote 1' is not an id"),
    ("start", {"id": "lote-1"}, "id", "batch 'lote-1' already exists"),
    ("start", {"yard": "oeste"}, "yard", "no yard 'oeste' in the settings (known: norte)"),
    ("start", {"yard": "sur", "trays": ["sur-1/t9"]}, "yard", "no yard 'sur'"),
    ("start", {"trays": []}, "trays", "name at least one tray"),
    ("start", {"trays": "norte-1"}, "trays", "'norte-1' is not node/tray"),
    ("start", {"trays": ["norte-1/t1", "norte-1/t1"]}, "trays", "a tray is named twice"),
    ("start", {"trays": ["norte-2/t1", "norte-1/t1"]}, "trays",
     "tray norte-1/t1 is in open batch 'lote-1'"),
    ("start", {"trays": ["norte-1/t7"]}, "trays",
     "no node reports tray norte-1/t7 in yard 'norte' (node 'norte-1' reports: t1, t2)"),
    ("start", {"trays": ["norte-9/t1"]}, "trays", "(node 'norte-9' reports: none)"),
    ("start", {"at": NOW + HOUR}, "at", "is in the future"),
    ("start", {"at": "yesterday"}, "at", "'yesterday' is not an ISO 8601 time"),
    ("start", {"fermentation_end": "01/05/2026"}, "fermentation_end", "is not an ISO date"),
    ("start", {"fermentation_end": "2099-01-01"}, "fermentation_end",
     "is after the batch's start"),
    ("start", {"wet_weight_kg": 0}, "wet_weight_kg", "0 kg: a weight must be above 0"),
    ("start", {"wet_weight_kg": "mucho"}, "wet_weight_kg", "'mucho' is not a number"),
    ("start", {"lot": "x" * 101}, "lot", "longer than 100 characters"),
    ("moisture", {"id": "nada"}, "id", "no batch 'nada'"),
    ("moisture", {"moisture_pct": 101}, "moisture_pct", "101 is outside 0..100 %"),
    ("moisture", {"moisture_pct": -1}, "moisture_pct", "-1 is outside 0..100 %"),
    ("moisture", {"moisture_pct": True}, "moisture_pct", "expected a number"),
    ("moisture", {"at": START - 60}, "at", "the reading is before the batch's start"),
    ("moisture", {"tray": "norte-2/t1"}, "tray", "norte-2/t1 is not one of the batch's trays"),
    ("end", {"id": "nada"}, "id", "no batch 'nada'"),
    ("end", {"at": START - 1}, "at", "the end is before the batch's start"),
    ("end", {"final_moisture_pct": 150}, "final_moisture_pct", "150 is outside 0..100 %"),
    ("end", {"dry_weight_kg": -3}, "dry_weight_kg", "a weight must be above 0"),
]


@pytest.mark.parametrize(("operation", "change", "field", "message"), REFUSALS,
                         ids=[f"{r[0]}-{r[2]}-{i}" for i, r in enumerate(REFUSALS)])
def test_every_refusal_names_its_field_and_leaves_the_database_as_it_was(
        service: BatchService, settings: ServerSettings, registry: Registry,
        operation: str, change: dict[str, Any], field: str, message: str) -> None:
    start(service)
    service.moisture("lote-1", moisture_pct=50, at=START + HOUR)
    before = dump(settings.batches.database)
    arguments: dict[str, Any] = {
        "start": {"id": "lote-2", "yard": "norte", "trays": ["norte-2/t1"], "at": START},
        "moisture": {"batch_id": "lote-1", "moisture_pct": 40.0, "at": START + DAY},
        "end": {"batch_id": "lote-1", "at": START + 2 * DAY},
    }[operation]
    arguments.update(change)
    if "id" in change and operation != "start":
        arguments["batch_id"] = arguments.pop("id")
    with pytest.raises(BatchError) as refused:
        getattr(service, operation)(**arguments)
    assert refused.value.field == field
    assert message in refused.value.message
    assert dump(settings.batches.database) == before
    assert registry.part("batches").get("refusals_total", operation=operation,
                                        field=field) == 1


def test_a_reading_after_the_end_is_refused(service: BatchService) -> None:
    start(service)
    service.end("lote-1", at=START + DAY)
    with pytest.raises(BatchError, match="has ended") as refused:
        service.moisture("lote-1", moisture_pct=7.0, at=START + 2 * DAY)
    assert refused.value.field == "at"


def test_a_tray_check_influxdb_cannot_answer_is_a_refusal(settings: ServerSettings,
                                                          tmp_path: Path) -> None:
    from dataclasses import replace

    down = replace(settings.influxdb, url="http://127.0.0.1:9", timeout_s=1)
    service = BatchService(settings, store=BatchStore(tmp_path / "b.sqlite3"),
                           trays=InfluxTrays(down), clock=Clock(NOW))
    with pytest.raises(BatchError, match="cannot ask InfluxDB which trays node 'norte-1' "
                                         "reports") as refused:
        start(service)
    assert refused.value.field == "trays"
    assert service.list() == []
    service.close()


def test_show_hands_the_batch_and_its_span_to_the_analysis(service: BatchService,
                                                          series: StandInSeries,
                                                          registry: Registry) -> None:
    start(service)
    service.moisture("lote-1", moisture_pct=50, at=START + HOUR)
    service.moisture("lote-1", moisture_pct=30, at=START + DAY)
    view = service.show("lote-1")
    # Open: up to now; the stand-ins' answers come back as they were given.
    assert series.asked == [("lote-1", NOW)]
    assert view.until == NOW
    assert view.metrics.drying_h == pytest.approx(36.0)  # 3 days / 2, the stand-in's rule
    assert view.estimate.p50_ts == NOW + 2 * DAY
    # The stand-in series has no climate before the batch: the built-in typical day,
    # said in the estimate's details and the view.
    assert view.estimate.details == {"readings": 2.0, "periods": 1.0,
                                     "typical_day_kpa_h": 15.0, "typical_day_sigma": 0.35,
                                     "typical_day_learnt_days": 0.0}
    assert view.typical_day is not None
    assert (view.typical_day.source, view.typical_day.reason) == (
        "built-in", "0 day(s) of the yard's climate; 7 needed")
    # The yard's 28 local days before the start day's window (07:00 Lima), read once, at
    # the start: every show of a batch started that day uses what was learnt.
    service.show("lote-1")
    assert series.climate_asked == [("norte", view.typical_day.since, view.typical_day.until)]
    assert view.typical_day.until - view.typical_day.since == 28 * DAY
    # ... and kept in the store: another process (the CLI beside the server) reads it there.
    other = BatchService(service.settings, store=service.store, trays=service.trays,
                         series=series, analysis=service.analysis, clock=service.clock)
    assert other.show("lote-1").typical_day == view.typical_day
    assert len(series.climate_asked) == 1
    assert registry.part("batches").get("typical_days_total", outcome="too_few_days") == 1
    assert [r.moisture_pct for r in view.readings] == [50, 30]
    service.end("lote-1", at=START + 2 * DAY)
    assert service.show("lote-1").until == START + 2 * DAY
    assert service.show("lote-1", until=START + DAY).until == START + DAY
    with pytest.raises(BatchError, match="not after its end") as refused:
        service.show("lote-1", until=START + 3 * DAY)
    assert refused.value.field == "until"
    with pytest.raises(UnknownBatch):
        service.show("nada")


def test_a_span_influxdb_cannot_answer_is_a_clear_refusal(service: BatchService,
                                                         series: StandInSeries,
                                                         tmp_path: Path) -> None:
    start(service)
    series.down = True
    with pytest.raises(SeriesUnavailable, match="InfluxDB cannot answer for the batch's span"
                       ) as refused:
        service.report("lote-1", pdf_path=tmp_path / "r.pdf", png_path=None)
    assert refused.value.field == "until"
    assert list(tmp_path.glob("r*")) == []


def test_report_writes_both_files_or_neither(service: BatchService, render: StandInRender,
                                             tmp_path: Path) -> None:
    start(service)
    pdf, png = tmp_path / "out" / "lote-1.pdf", tmp_path / "out" / "lote-1.png"
    service.report("lote-1", pdf_path=pdf, png_path=png, language="en")
    assert pdf.read_text() == "PDF lote-1 en 36.0"
    assert png.read_text() == "PNG lote-1 en 36.0"
    assert render.calls == [{"batch": "lote-1", "language": "en",
                             "timezone": "America/Lima"}]
    render.broken = True
    pdf.unlink()
    with pytest.raises(RuntimeError, match="matplotlib"):
        service.report("lote-1", pdf_path=pdf, png_path=png)
    # The failed render wrote into temporary files: gone, and the old PNG untouched.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lote-1.png"]
    with pytest.raises(BatchError) as refused:
        service.report("lote-1", pdf_path=pdf, png_path=None, language="fr")
    assert refused.value.field == "language"


def test_export_many_with_progress_and_one_that_fails(service: BatchService,
                                                     tmp_path: Path) -> None:
    start(service, "lote-1", trays=["norte-1/t1"])
    start(service, "lote-2", trays=["norte-1/t2"])
    seen: list[tuple[int, int, str, str | None]] = []
    results = service.export(["lote-1", "nada", "lote-2"], tmp_path / "export",
                             progress=lambda done, total, r: seen.append(
                                 (done, total, r.batch, r.error)))
    assert seen == [(1, 3, "lote-1", None), (2, 3, "nada", "id: no batch 'nada'"),
                    (3, 3, "lote-2", None)]
    assert [p.name for p in results[0].paths] == ["lote-1.csv", "lote-1.json"]
    assert (tmp_path / "export" / "lote-2.csv").read_text() == (
        "batch,drying_h,timezone\nlote-2,36.0,America/Lima\n")
    assert (tmp_path / "export" / "lote-1.json").read_text().startswith(
        '{\n "batch": "lote-1",\n "timezone": "America/Lima",\n "drying_h": 36.0')
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "lote-1.csv", "lote-1.json", "lote-2.csv", "lote-2.json"]


def test_a_bug_in_learning_the_typical_day_at_the_start_does_not_undo_the_start(
        service: BatchService, series: StandInSeries,
        caplog: pytest.LogCaptureFixture) -> None:
    series.broken = True
    # The batch is stored and its start point sent before the typical day is learnt:
    # the start answers with it, the failure is logged, the first show tries again.
    assert start(service).id == "lote-1"
    assert service.get("lote-1").open
    assert "learning yard norte's typical day at the start" in caplog.text
    assert "ValueError: math domain error" in caplog.text
    assert len(series.climate_asked) == 1


def test_when_the_yards_climate_cannot_be_read_the_built_in_day_is_used_and_said(
        service: BatchService, series: StandInSeries, registry: Registry) -> None:
    series.climate_down = True
    # The start, which learns the typical day ahead, succeeds without it.
    assert start(service).id == "lote-1"
    assert registry.part("batches").get("typical_days_total", outcome="unavailable") == 1
    service.moisture("lote-1", moisture_pct=50, at=START + HOUR)
    view = service.show("lote-1")  # tries again
    assert view.typical_day is not None
    assert view.typical_day.source == "built-in"
    assert view.typical_day.reason.startswith(
        "InfluxDB could not give the yard's climate: InfluxDB at http://127.0.0.1:9")
    assert view.estimate.details["typical_day_kpa_h"] == 15.0
    assert registry.part("batches").get("typical_days_total", outcome="unavailable") == 2
    # Not kept: once InfluxDB answers, the next show learns.
    series.climate_down = False
    assert service.show("lote-1").typical_day.reason == (
        "0 day(s) of the yard's climate; 7 needed")
    assert len(series.climate_asked) == 3
