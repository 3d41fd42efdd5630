"""``secadero batch ...`` as the technician runs it: what it prints, its exit status, its file.

In process (``secadero.cli.main``), against the fixture's InfluxDB (which
trays exist; the ``batch`` points). show/report/export go through the real
series, metrics, estimate and report modules, so those tests wait for them
(skipped until they are on the branch; tests/batches/test_service.py checks
the same paths with stand-ins).
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from batch_helpers import (
    DAY,
    HOUR,
    prepare_database,
    report_trays,
    write_climate,
    write_config,
)
from conftest import influx_query

from secadero.cli import main
from secadero.settings import load_server_settings

pytestmark = pytest.mark.integration

LIMA = ZoneInfo("America/Lima")
# Two days ago at 08:00 Lima, to the second: inside InfluxDB's raw retention.
START = datetime.fromtimestamp(time.time() - 2 * DAY, LIMA).replace(hour=8, minute=0,
                                                                       second=0, microsecond=0)
T0 = START.timestamp()
DAY_DELTA = timedelta(days=1)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, LIMA).isoformat()


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, LIMA).strftime("%Y-%m-%d %H:%M -05")


@pytest.fixture
def config(tmp_path: Path, influxdb: Any, unique_name: str) -> Path:
    path = write_config(tmp_path / "server.toml", influx_url=influxdb.url, database=unique_name,
                        batches_db=tmp_path / "batches.sqlite3")
    prepare_database(load_server_settings(path))
    report_trays(influxdb.url, unique_name, "norte", {"norte-1": ["t1", "t2"]}, T0 - DAY)
    return path


def batch(config: Path, *args: str) -> int:
    return main(["batch", args[0], "--config", str(config), *args[1:]])


def dump(config: Path) -> list[str]:
    with sqlite3.connect(config.parent / "batches.sqlite3") as db:
        return list(db.iterdump())


def test_a_batch_recorded_from_the_command_line(config: Path, capsys: pytest.CaptureFixture,
                                                 influxdb: Any, unique_name: str) -> None:
    assert batch(config, "start", "lote-7", "--yard", "norte", "--trays",
                 "norte-1/t2,norte-1/t1", "--lot", "L-07", "--member", "Familia Ruiz",
                 "--wet-weight-kg", "120", "--by", "ana", "--at", START.isoformat()) == 0
    assert capsys.readouterr().out == (f"started lote-7 in yard norte on norte-1/t1, norte-1/t2 "
                                       f"at {local(T0)}\n")
    assert batch(config, "moisture", "lote-7", "--pct", "38.5", "--tray", "norte-1/t1",
                 "--by", "ana", "--at", iso(T0 + DAY)) == 0
    assert capsys.readouterr().out == f"lote-7: 38.5 % at {local(T0 + DAY)} on norte-1/t1\n"
    assert batch(config, "list") == 0
    assert capsys.readouterr().out == (
        f"lote-7                   norte        {local(T0)}  open                         "
        "2 trays  L-07\n")
    assert batch(config, "end", "lote-7", "--final-pct", "7.2", "--dry-weight-kg", "55",
                 "--at", iso(T0 + DAY + HOUR)) == 0
    assert capsys.readouterr().out == (f"ended lote-7 at {local(T0 + DAY + HOUR)}, final "
                                       "moisture 7.2 %; trays norte-1/t1, norte-1/t2 are free\n")
    assert batch(config, "list", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert {k: listed[k] for k in ("id", "trays", "started_at", "ended_at", "wet_weight_kg",
                                   "dry_weight_kg", "final_moisture_pct", "started_by",
                                   "open")} == {
        "id": "lote-7", "trays": ["norte-1/t1", "norte-1/t2"], "started_at": T0,
        "ended_at": T0 + DAY + HOUR, "wet_weight_kg": 120.0, "dry_weight_kg": 55.0,
        "final_moisture_pct": 7.2, "started_by": "ana", "open": False}
    # Each command waited for its point (one try when it stops): all three are stored.
    rows = influx_query(influxdb.url, unique_name, 'SELECT event, moisture_pct FROM "batch"')
    assert [(r["time"], r["event"], r["moisture_pct"]) for r in rows] == [
        (int(T0) * 1000, "start", None), (int(T0 + DAY) * 1000, "moisture", 38.5),
        (int(T0 + DAY + HOUR) * 1000, "end", 7.2)]


REFUSED = [
    (["start", "lote-8", "--yard", "norte", "--trays", "norte-1/t1"],
     "error: --trays: tray norte-1/t1 is in open batch 'lote-7'; end that batch first\n"),
    (["start", "lote-8", "--yard", "norte", "--trays", "norte-1/t5"],
     "error: --trays: no node reports tray norte-1/t5 in yard 'norte' (node 'norte-1' "
     "reports: t1, t2)\n"),
    (["start", "Lote 8", "--yard", "norte", "--trays", "norte-1/t2"],
     "error: ID: 'Lote 8' is not an id: 1-32 of a-z, 0-9 and '-', starting with a letter or "
     "digit\n"),
    (["start", "lote-8", "--yard", "norte", "--trays", "norte-1/t2", "--fermentation-end",
      "ayer"], "error: --fermentation-end: 'ayer' is not an ISO date (YYYY-MM-DD)\n"),
    (["moisture", "lote-7", "--pct", "140"], "error: --pct: 140 is outside 0..100 %\n"),
    (["moisture", "lote-7", "--pct", "30", "--at", "2020-01-01"],
     "error: --at: the reading is before the batch's start\n"),
    (["moisture", "lote-9", "--pct", "30"], "error: ID: no batch 'lote-9'\n"),
    (["end", "lote-7", "--at", "2020-01-01"], "error: --at: the end is before the batch's "
                                              "start\n"),
    (["end", "lote-7", "--dry-weight-kg", "-2"],
     "error: --dry-weight-kg: -2 kg: a weight must be above 0\n"),
    (["list", "--yard", "sur"], "error: --yard: no yard 'sur' in the settings (known: "
                                "norte)\n"),
    (["export", "--out", "x"], "error: ID: name the batches, or give --all\n"),
]


@pytest.mark.parametrize(("args", "stderr"), REFUSED, ids=[r[0][0] + str(i)
                                                           for i, r in enumerate(REFUSED)])
def test_a_refusal_exits_2_names_the_option_and_writes_nothing(
        config: Path, capsys: pytest.CaptureFixture, influxdb: Any, unique_name: str,
        args: list[str], stderr: str) -> None:
    assert batch(config, "start", "lote-7", "--yard", "norte", "--trays", "norte-1/t1",
                 "--at", START.isoformat()) == 0
    capsys.readouterr()
    before = dump(config)
    points_before = influx_query(influxdb.url, unique_name, 'SELECT * FROM "batch"')
    assert batch(config, *args) == 2
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", stderr)
    assert dump(config) == before
    assert influx_query(influxdb.url, unique_name, 'SELECT * FROM "batch"') == points_before


def test_influxdb_down_the_reading_is_stored_and_the_missing_point_said(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert batch(config, "start", "lote-7", "--yard", "norte", "--trays", "norte-1/t1",
                 "--at", START.isoformat()) == 0
    down = tmp_path / "down.toml"
    down.write_text(config.read_text().replace(
        next(line for line in config.read_text().splitlines() if line.startswith("url = ")),
        'url = "http://127.0.0.1:9"'))
    capsys.readouterr()
    assert batch(down, "moisture", "lote-7", "--pct", "33", "--at", iso(T0 + DAY)) == 0
    out = capsys.readouterr()
    assert out.out == f"lote-7: 33 % at {local(T0 + DAY)}\n"
    assert out.err.startswith("warning: the batch point for the dashboards did not reach "
                              "InfluxDB (the record is stored): InfluxDB at "
                              "http://127.0.0.1:9: ConnectionRefusedError")
    assert batch(config, "list", "--json") == 0


def test_a_config_with_problems_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[batches]\ntarget_moisture_pct = "dry"\n')
    assert main(["batch", "list", "--config", str(bad)]) == 2
    assert "target_moisture_pct" in capsys.readouterr().err


# ---------------------------------------------------------------- with the real modules


def test_show_report_and_export_with_the_real_modules(config: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    database = load_server_settings(config).influxdb
    report_trays(database.url, database.database, "norte", {"norte-1": ["t1"]}, T0 + 60)
    write_climate(database.url, database.database, "norte", "norte-1", T0, T0 + DAY)
    assert batch(config, "start", "lote-7", "--yard", "norte", "--trays", "norte-1/t1",
                 "--at", START.isoformat()) == 0
    assert batch(config, "moisture", "lote-7", "--pct", "45", "--at", iso(T0 + HOUR)) == 0
    assert batch(config, "moisture", "lote-7", "--pct", "30", "--at", iso(T0 + DAY)) == 0
    capsys.readouterr()
    assert batch(config, "show", "lote-7") == 0
    shown = capsys.readouterr().out
    assert shown.startswith("batch lote-7  yard norte")
    assert f"  {local(T0 + DAY)}   30.0 %" in shown
    assert batch(config, "show", "lote-7", "--json") == 0
    assert [r["moisture_pct"] for r in json.loads(capsys.readouterr().out)["readings"]] == [
        45, 30]
    pdf, png = tmp_path / "r.pdf", tmp_path / "r.png"
    assert batch(config, "report", "lote-7", "--pdf", str(pdf), "--png", str(png),
                 "--language", "en") == 0
    assert capsys.readouterr().out == f"wrote {pdf}\nwrote {png}\n"
    assert pdf.read_bytes().startswith(b"%PDF")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert batch(config, "export", "--all", "--out", str(tmp_path / "out")) == 0
    out = capsys.readouterr()
    assert out.err == (f"[1/1] lote-7: {tmp_path / 'out' / 'lote-7.csv'}, "
                       f"{tmp_path / 'out' / 'lote-7.json'}\n")
    assert out.out == f"exported 1 of 1 batches to {tmp_path / 'out'}\n"


def test_show_gives_the_estimate_the_typical_day_learnt_from_the_yards_climate(
        config: Path, capsys: pytest.CaptureFixture) -> None:
    """The 8 local days before the batch, as the ingest stores them in the real InfluxDB:
    trays-out window 07:00-18:00 with the air too humid to dry until 09:00 (85 % RH),
    then 30 °C at 60 % RH. The service reads them (series.py), learns 9 drying hours a
    day at that VPD, and the estimate is given that day, and says so."""
    from secadero.server.air import vpd_kpa

    config.write_text(config.read_text().replace("[batches]\n",
                                                 "[batches]\ntypical_day_days = 8\n"))
    database = load_server_settings(config).influxdb
    day = START.replace(hour=0)
    for back in range(1, 9):
        morning = (day - back * DAY_DELTA).replace(hour=7).timestamp()
        write_climate(database.url, database.database, "norte", "norte-1", morning,
                      morning + 2 * HOUR, humidity_pct=85.0)
        write_climate(database.url, database.database, "norte", "norte-1", morning + 2 * HOUR,
                      morning + 11 * HOUR, humidity_pct=60.0)
    write_climate(database.url, database.database, "norte", "norte-1", T0, T0 + DAY)
    assert batch(config, "start", "lote-9", "--yard", "norte", "--trays", "norte-1/t1",
                 "--at", START.isoformat()) == 0
    # Learnt at the start (its span ends there), so no show pays for reading it.
    with sqlite3.connect(config.parent / "batches.sqlite3") as db:
        assert db.execute("SELECT source, days FROM typical_days").fetchall() == [
            ("learnt", 8)]
    assert batch(config, "moisture", "lote-9", "--pct", "50", "--at", iso(T0 + HOUR)) == 0
    capsys.readouterr()
    assert batch(config, "show", "lote-9", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    expected = 9 * vpd_kpa(30.0, 60.0)
    learnt = shown["typical_day"]
    assert (learnt["source"], learnt["days"]) == ("learnt", 8)
    assert learnt["kpa_h"] == pytest.approx(expected)
    assert learnt["sigma"] == pytest.approx(0.0, abs=1e-9)
    details = shown["estimate"]["details"]
    assert details["typical_day_kpa_h"] == pytest.approx(expected)
    assert details["typical_day_learnt_days"] == 8
    # A prior-only estimate (one reading): k's prior is the published 0.76/day over
    # the yard's typical day.
    assert details["k_per_kpa_h"] == pytest.approx(0.76 / expected, rel=0.05)
    # Kept in the batches' file (its days are past): the next show reads it there.
    with sqlite3.connect(config.parent / "batches.sqlite3") as db:
        kept = db.execute("SELECT yard, since, until, kpa_h, source, days FROM "
                          "typical_days").fetchall()
    assert kept == [("norte", learnt["since"], learnt["until"], pytest.approx(expected),
                     "learnt", 8)]
    assert batch(config, "show", "lote-9") == 0
    assert (f"  typical day  {expected:.1f} kPa·h (±0% a day), learnt from the yard's last "
            "8 days before the batch\n") in capsys.readouterr().out
