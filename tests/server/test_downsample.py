"""Hourly downsampling on the real InfluxDB 1.x: the continuous queries' bodies over hour
ranges, the ingest re-downsampling hours of late readings, and ``secadero server downsample``.

Raw points are written through plain HTTP /write and the hourly series read back through
``influx_query``, never through the code under test. Hours are taken 3 or more hours back:
the test InfluxDB runs the real continuous queries (``RESAMPLE ... FOR 2h``), which only
ever compute the last two hours, so whatever the hourly series holds for older hours was
written by the code under test.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query, influx_request
from hypothesis import given
from hypothesis import strategies as st
from ingest_helpers import (  # noqa: F401 (fixtures are found by their names)
    NodeSide,
    TcpProxy,
    metric_value,
    node_side_fixture,
    wait_until,
    write_server_config,
)
from test_influx_v2_writer import FakeInflux2

from secadero.cli import main
from secadero.contract import Telemetry, encode
from secadero.devservices import free_port
from secadero.errors import PermanentStorageError, RetryableStorageError
from secadero.server.air import dew_point_c, vpd_kpa
from secadero.server.downsample import (
    HOUR_S,
    LATE_MARGIN_S,
    LateHours,
    backfill,
    downsample_range,
    downsample_statements,
    hour_of,
    hour_ranges,
    rfc3339,
)
from secadero.server.influx import CQ_RESAMPLE_FOR_H, InfluxV1Writer, continuous_queries
from secadero.server.ingest import Ingest
from secadero.server.ingest.items import Handoff
from secadero.server.ingest.link import BrokerLink
from secadero.server.ingest.liveness import Liveness
from secadero.server.ingest.receive import Receiver
from secadero.server.metrics import Metrics
from secadero.settings import ServerSettings, load_server_settings

# --------------------------------------------------------------------------
# helpers


def _settings(tmp_path: Path, influx_url: str, database: str, *, broker: Any = None,
              influx_behind: Any = None,
              ingest: dict[str, Any] | None = None,
              influx: dict[str, Any] | None = None) -> ServerSettings:
    path = write_server_config(tmp_path / "server.toml", broker=broker,
                               influx_behind=influx_behind,
                               influx_url=influx_url, database=database,
                               client_id=f"ingest-{database}",
                               ingest={"downsample_pending_file": "pending.json",
                                       **(ingest or {})}, influx=influx)
    return load_server_settings(path)


def _write_raw(url: str, database: str, lines: list[str]) -> None:
    """Line protocol (seconds) into the raw policy, over plain HTTP."""
    query = urllib.parse.urlencode({"db": database, "rp": "raw", "precision": "s"})
    request = influx_request(f"{url}/write?{query}", data="\n".join(lines).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


def _hourly(url: str, database: str, measurement: str, before_s: float | None = None
            ) -> list[dict[str, Any]]:
    """The hourly series of a measurement, one row per (hour, tags), sorted."""
    where = f" WHERE time < {int(before_s)}s" if before_s is not None else ""
    rows = influx_query(url, database,
                        f'SELECT * FROM "{database}"."hourly"."{measurement}"{where} GROUP BY *')
    return sorted(rows, key=lambda r: (r["time"], r.get("yard", ""), r.get("node", "")))


def _pending(path: Path) -> list[str]:
    return json.loads(path.read_text())["pending_hours"]


def _prepared(settings: ServerSettings) -> InfluxV1Writer:
    writer = InfluxV1Writer(settings.influxdb)
    writer.prepare()
    return writer


# --------------------------------------------------------------------------
# pure parts


def test_hour_ranges_merge_consecutive_hours_and_cap_their_length() -> None:
    assert hour_ranges([]) == []
    assert hour_ranges([5, 3, 4, 9, 9]) == [(3 * HOUR_S, 6 * HOUR_S), (9 * HOUR_S, 10 * HOUR_S)]
    assert hour_ranges(range(50), 24) == [(0, 24 * HOUR_S), (24 * HOUR_S, 48 * HOUR_S),
                                          (48 * HOUR_S, 50 * HOUR_S)]


def test_statements_are_the_continuous_queries_with_a_time_range() -> None:
    start_s = 493_000 * HOUR_S  # 2026-03-29T16:00:00Z
    statements = downsample_statements("sec\"a", start_s, start_s + 3 * HOUR_S)
    queries = continuous_queries("sec\"a")
    assert list(statements) == list(queries) == ["climate_1h", "rain_1h", "node_1h"]
    where = " WHERE time >= '2026-03-29T16:00:00Z' AND time < '2026-03-29T19:00:00Z'"
    for name, select in queries.items():
        head, tail = select.split(" GROUP BY ")
        assert statements[name] == f"{head}{where} GROUP BY {tail}"
    with pytest.raises(ValueError, match="whole hours"):
        downsample_statements("secadero", start_s + 1, start_s + HOUR_S)


def test_retryable_and_permanent_errors_keep_their_kind() -> None:
    class Refusing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def query(self, statement: str) -> list[dict[str, object]]:
            raise self.error

    start = 493_000 * HOUR_S
    statement = downsample_statements("d", start, start + HOUR_S)["climate_1h"]
    with pytest.raises(PermanentStorageError, match=r"^climate_1h: retention policy not found"):
        downsample_range(Refusing(PermanentStorageError(
            f"{statement}: retention policy not found: hourly")), "d", start, start + HOUR_S)
    with pytest.raises(RetryableStorageError, match="answered 503"):
        downsample_range(Refusing(RetryableStorageError("InfluxDB /query answered 503: x")),
                         "d", start, start + HOUR_S)


class RecordingLateHours(LateHours):
    """The real LateHours (its ``after_s``), recording the marks the receive stage makes."""

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings, Metrics(), lambda: 0)
        self.marked: list[float] = []

    def mark(self, ts: float) -> None:
        self.marked.append(ts)


@pytest.fixture(scope="module")
def offline_settings(tmp_path_factory: pytest.TempPathFactory) -> ServerSettings:
    """Settings for stages built without a broker or InfluxDB (nothing connects)."""
    tmp = tmp_path_factory.mktemp("late")
    return load_server_settings(write_server_config(
        tmp / "server.toml", mqtt_port=1, influx_url="http://127.0.0.1:1", database="unused",
        client_id="late"))


@given(ts=st.floats(1.7e9, 2.0e9), delay_s=st.floats(0, 3 * HOUR_S))
def test_a_reading_the_ingest_does_not_mark_late_is_still_computed_by_a_continuous_query(
        offline_settings: ServerSettings, ts: float, delay_s: float) -> None:
    """The ingest's receive stage decides: a reading it leaves unmarked reaches the store at
    least LATE_MARGIN_S before the last continuous query run that covers its hour, and one
    received after that run is always marked."""
    received_at = ts + delay_s
    late = RecordingLateHours(offline_settings)
    metrics = Metrics()
    handoff = Handoff()
    receiver = Receiver(handoff, BrokerLink(offline_settings), Liveness(600, metrics), late,
                        metrics, observers=[], horizon_s=30 * 86400.0, client_id="late",
                        clock=lambda: received_at)
    receiver.receive("secadero/v1/norte/n1/telemetry",
                     encode(Telemetry(ts=ts, seq=1, temperature_c=20.0)), 1, 1)
    assert len(handoff) == 1 and metrics.total("messages_rejected_total") == 0
    last_run_s = hour_of(ts) * HOUR_S + CQ_RESAMPLE_FOR_H * HOUR_S
    if not late.marked:
        assert received_at + LATE_MARGIN_S <= last_run_s + 1e-6
    else:
        assert late.marked == [ts]
    if received_at >= last_run_s:  # past the last run: must be marked
        assert late.marked == [ts]


# --------------------------------------------------------------------------
# the continuous queries' bodies on real data


@pytest.mark.integration
def test_downsample_gives_means_min_max_and_sums_per_hour_and_tags(
        tmp_path: Path, influxdb: Any, unique_name: str) -> None:
    db = unique_name
    writer = _prepared(_settings(tmp_path, influxdb.url, db))
    h = (hour_of(time.time()) - 6) * HOUR_S
    _write_raw(influxdb.url, db, [
        f"climate,yard=a,node=n1 temperature_c=20,humidity_pct=60,dew_point_c=12,vpd_kpa=0.9 {h}",
        f"climate,yard=a,node=n1 temperature_c=24,humidity_pct=50,dew_point_c=13,vpd_kpa=1.5 "
        f"{h + 1800}",
        f"climate,yard=a,node=n2 temperature_c=30,humidity_pct=40 {h + 600}",
        f"climate,yard=b,node=n1 temperature_c=10,humidity_pct=95 {h + 60}",
        f"climate,yard=a,node=n1 temperature_c=18,humidity_pct=90 {h + 2 * HOUR_S - 1}",
        # The first second of the hour after the range: not part of it.
        f"climate,yard=a,node=n1 temperature_c=99,humidity_pct=1 {h + 2 * HOUR_S}",
        f"rain,yard=a,node=n1 rain_mm=0.2,wet=true {h + 60}",
        f"rain,yard=a,node=n1 rain_mm=0.4 {h + 120}",
        f"rain,yard=a,node=n1 wet=true {h + 180}",
        f"rain,yard=a,node=n1 wet=false {h + HOUR_S + 10}",  # no rain_mm: no hourly point
        f"node,yard=a,node=n1 online=1i,buffered=5i,uptime_s=10 {h + 10}",
        f"node,yard=a,node=n1 online=0i {h + 20}",
        f"node,yard=a,node=n1 seq_gap=3i {h + 30}",
        f"node,yard=a,node=n1 seq_gap=2i,buffered=2i {h + 40}",
    ])
    written = downsample_range(writer, db, h, h + 2 * HOUR_S)
    assert written == {"climate_1h": 4, "rain_1h": 1, "node_1h": 1}
    climate = _hourly(influxdb.url, db, "climate")
    assert [(r["time"] // 1000 - h, r["yard"], r["node"]) for r in climate] == [
        (0, "a", "n1"), (0, "a", "n2"), (0, "b", "n1"), (HOUR_S, "a", "n1")]
    first = climate[0]
    assert (first["temperature_c"], first["humidity_pct"]) == (22, 55)
    assert (first["dew_point_c"], first["vpd_kpa"]) == (12.5, pytest.approx(1.2))
    assert (first["humidity_min_pct"], first["temperature_max_c"]) == (50, 24)
    assert (climate[1]["temperature_c"], climate[1]["humidity_min_pct"]) == (30, 40)
    assert climate[1]["dew_point_c"] is None
    assert (climate[2]["temperature_c"], climate[2]["humidity_pct"]) == (10, 95)
    assert (climate[3]["temperature_c"], climate[3]["temperature_max_c"]) == (18, 18)
    rain = _hourly(influxdb.url, db, "rain")
    assert [(r["time"] // 1000 - h, r["node"]) for r in rain] == [(0, "n1")]
    assert rain[0]["rain_mm"] == pytest.approx(0.6)
    (node,) = _hourly(influxdb.url, db, "node")
    assert (node["online_min"], node["seq_gap"], node["buffered_max"]) == (0, 5, 5)


@pytest.mark.integration
def test_downsample_again_gives_the_same_series_and_takes_in_late_points(
        tmp_path: Path, influxdb: Any, unique_name: str) -> None:
    db = unique_name
    writer = _prepared(_settings(tmp_path, influxdb.url, db))
    h = (hour_of(time.time()) - 4) * HOUR_S
    _write_raw(influxdb.url, db, [f"climate,yard=a,node=n{i % 3} temperature_c={20 + i},"
                                  f"humidity_pct={40 + i} {h + i * 97}" for i in range(60)])
    first = downsample_range(writer, db, h, h + 2 * HOUR_S)
    rows = _hourly(influxdb.url, db, "climate")
    assert downsample_range(writer, db, h, h + 2 * HOUR_S) == first == {
        "climate_1h": 6, "rain_1h": 0, "node_1h": 0}
    assert _hourly(influxdb.url, db, "climate") == rows
    assert len(rows) == 6
    # A reading of n0 that came late: the same hour, computed again, now includes it.
    n0 = next(r for r in rows if r["node"] == "n0" and r["time"] == h * 1000)
    count = sum(1 for i in range(60) if i % 3 == 0 and i * 97 < HOUR_S)
    _write_raw(influxdb.url, db, [f"climate,yard=a,node=n0 temperature_c=100,humidity_pct=1 "
                                  f"{h + 3599}"])
    downsample_range(writer, db, h, h + HOUR_S)
    again = _hourly(influxdb.url, db, "climate")
    assert len(again) == 6
    n0_again = next(r for r in again if r["node"] == "n0" and r["time"] == h * 1000)
    expected = (n0["temperature_c"] * count + 100) / (count + 1)
    assert n0_again["temperature_c"] == pytest.approx(expected)
    assert (n0_again["temperature_max_c"], n0_again["humidity_min_pct"]) == (100, 1)
    assert [r for r in again if r is not n0_again] == [r for r in rows if r is not n0]


@pytest.mark.integration
def test_prepare_replaces_continuous_queries_of_an_older_definition(
        tmp_path: Path, influxdb: Any, unique_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    db = unique_name
    settings = _settings(tmp_path, influxdb.url, db)
    old = InfluxV1Writer(settings.influxdb)
    old.query(f'CREATE DATABASE "{db}" WITH DURATION 90d REPLICATION 1 NAME "raw"')
    old.query(f'CREATE RETENTION POLICY "hourly" ON "{db}" DURATION 3650d REPLICATION 1')
    for name, select in continuous_queries(db).items():  # as the previous version made them
        old.query(f'CREATE CONTINUOUS QUERY "{name}" ON "{db}" BEGIN {select} END')
    with caplog.at_level(logging.WARNING, logger="secadero.server.influx"):
        _prepared(settings)
    replaced = [r.getMessage() for r in caplog.records if "another definition" in r.getMessage()]
    assert len(replaced) == 3
    # Every database's queries come back: keep this one's.
    queries = {q["name"]: q["query"] for q in influx_query(influxdb.url, db,
                                                           "SHOW CONTINUOUS QUERIES")
               if f' ON "{db}" ' in q.get("query", "")}
    assert sorted(queries) == ["climate_1h", "node_1h", "rain_1h"]
    assert all(" RESAMPLE EVERY 1h FOR 2h BEGIN SELECT " in q for q in queries.values())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="secadero.server.influx"):
        _prepared(settings)  # the same definition again: left alone
    assert [r for r in caplog.records if "another definition" in r.getMessage()] == []


# --------------------------------------------------------------------------
# LateHours: which hours, when, and what is kept


@pytest.mark.integration
def test_marked_hours_wait_for_the_messages_queued_before_them(
        tmp_path: Path, influxdb: Any, unique_name: str) -> None:
    db = unique_name
    settings = _settings(tmp_path, influxdb.url, db)
    writer = _prepared(settings)
    queue: list[int] = [1, 2, 3]  # messages waiting for the writer; the marked one is last
    late = LateHours(settings, Metrics(), lambda: len(queue))
    h = (hour_of(time.time()) - 5) * HOUR_S
    _write_raw(influxdb.url, db, [f"climate,yard=a,node=n1 temperature_c=21,humidity_pct=70 "
                                  f"{h + 5}"])
    late.mark(h + 5)
    late.stored(0)  # the writer was idle; three messages to store before that hour is ready
    assert _pending(tmp_path / "pending.json") == [rfc3339(h)]
    assert late.run_once(writer) == 0
    queue[:2] = []
    late.stored(2)
    assert late.run_once(writer) == 0
    assert _hourly(influxdb.url, db, "climate") == []
    queue.clear()
    late.stored(1)
    assert late.run_once(writer) == 1
    assert [(r["time"] // 1000, r["temperature_c"]) for r in
            _hourly(influxdb.url, db, "climate")] == [(h, 21)]
    assert _pending(tmp_path / "pending.json") == []


@pytest.mark.integration
def test_failed_downsampling_keeps_retryable_hours_and_drops_refused_ones(
        tmp_path: Path, influxdb: Any, unique_name: str) -> None:
    db = unique_name
    settings = _settings(tmp_path, influxdb.url, db)
    metrics = Metrics()
    late = LateHours(settings, metrics, lambda: 0)
    h = hour_of(time.time()) - 10
    for hour in (h, h + 1, h + 5):
        late.mark(hour * HOUR_S + 1)
    late.stored(0)
    down = InfluxV1Writer(_settings(tmp_path, f"http://127.0.0.1:{free_port()}", db).influxdb)
    assert late.run_once(down) == 0
    assert metrics.get("downsample_errors_total", kind="retryable") == 1
    assert _pending(tmp_path / "pending.json") == [rfc3339(x * HOUR_S) for x in (h, h + 1, h + 5)]
    # The database does not exist: InfluxDB refuses; retrying would never help.
    assert late.run_once(InfluxV1Writer(settings.influxdb)) == 0
    assert metrics.get("downsample_errors_total", kind="permanent") == 2  # two ranges
    assert _pending(tmp_path / "pending.json") == []
    assert metrics.total("downsample_hours_total") == 0


def test_failed_writes_mark_the_hours_the_continuous_queries_may_have_missed(
        tmp_path: Path, unique_name: str) -> None:
    settings = _settings(tmp_path, "http://127.0.0.1:9", unique_name)
    metrics = Metrics()
    clock = [493_010.5 * HOUR_S]  # 2026-03-30T02:30:00Z

    class Recorder:
        def __init__(self) -> None:
            self.statements: list[str] = []

        def query(self, statement: str) -> list[dict[str, object]]:
            self.statements.append(statement)
            return []

    late = LateHours(settings, metrics, lambda: 0, clock=lambda: clock[0])
    recorder = Recorder()
    clock[0] += 1800  # a quiet round: nothing to do
    late.run_once(recorder)
    late.stored(0)
    assert late.run_once(recorder) == 0
    metrics.inc("write_errors_total", kind="retryable")  # what the ingest counts
    clock[0] += 3600  # the errors happened since the last round, at 03:00
    late.run_once(recorder)  # notices; the hours go through the writer like marked ones
    late.stored(0)
    # 02:00 (the hour before the last quiet round, which a missed run computes) to 04:59.
    assert late.run_once(recorder) == 3
    assert len(recorder.statements) == 3
    assert "time >= '2026-03-30T02:00:00Z' AND time < '2026-03-30T05:00:00Z'" \
        in recorder.statements[0]
    clock[0] += 60  # no new errors: nothing more
    late.run_once(recorder)
    late.stored(0)
    assert late.run_once(recorder) == 0


@pytest.mark.integration
def test_pending_hours_survive_a_restart(tmp_path: Path, influxdb: Any,
                                         unique_name: str) -> None:
    db = unique_name
    settings = _settings(tmp_path, influxdb.url, db)
    writer = _prepared(settings)
    h = (hour_of(time.time()) - 7) * HOUR_S
    _write_raw(influxdb.url, db, [f"rain,yard=a,node=n1 rain_mm=1.5 {h + 100}",
                                  f"rain,yard=a,node=n1 rain_mm=0.5 {h + 200}"])
    first = LateHours(settings, Metrics(), lambda: 0)
    first.mark(h + 100)
    first.stored(1)
    del first  # the process dies before its downsampling round
    second = LateHours(settings, Metrics(), lambda: 0)
    assert second.run_once(writer) == 1
    assert [(r["time"] // 1000, r["rain_mm"]) for r in _hourly(influxdb.url, db, "rain")] == [
        (h, 2.0)]
    assert _pending(tmp_path / "pending.json") == []


def _downsample_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ingest-downsample")


def test_nothing_is_marked_or_run_with_influxdb_2(tmp_path: Path, unique_name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "s3cret")
    settings = _settings(tmp_path, "http://127.0.0.1:9", unique_name,
                         influx={"api": 2, "token_env": "TEST_INFLUX_TOKEN", "org": "o",
                                 "bucket": "b"})
    metrics = Metrics()
    late = LateHours(settings, metrics, lambda: 0)
    assert late.after_s == float("inf")
    before = _downsample_threads()
    late.start()
    assert _downsample_threads() == before
    late.stored(5)
    late.stop()
    assert "downsample_hours_pending" not in metrics.gauges
    assert not (tmp_path / "pending.json").exists()


# --------------------------------------------------------------------------
# the ingest end to end


def _climate_hour(readings: list[tuple[float, float]]) -> dict[str, float]:
    """The hourly climate values the continuous query's body gives for (temp, humidity)s."""
    n = len(readings)
    return {
        "temperature_c": sum(t for t, _ in readings) / n,
        "humidity_pct": sum(h for _, h in readings) / n,
        "dew_point_c": sum(dew_point_c(t, h) or 0 for t, h in readings) / n,
        "vpd_kpa": sum(vpd_kpa(t, h) for t, h in readings) / n,
        "humidity_min_pct": min(h for _, h in readings),
        "temperature_max_c": max(t for t, _ in readings),
    }


def _values(row: dict[str, Any]) -> dict[str, Any]:
    return {k: pytest.approx(v) for k, v in row.items() if k not in ("time", "yard", "node")}


@pytest.mark.integration
def test_ingest_downsamples_the_hours_of_readings_that_came_hours_late(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    db = yard = unique_name
    settings = _settings(tmp_path, influxdb.url, db, broker=mosquitto,
                         ingest={"downsample_interval_s": 0.2})
    now = time.time()
    three, five = hour_of(now) - 3, hour_of(now) - 5
    with Ingest(settings) as ingest:
        assert ingest.wait_ready(15)
        # A node's outbox, emptied after an outage: readings of 5 and 3 hours ago.
        node_side.telemetry("n1", 1, five * HOUR_S + 300.0, temperature_c=21.0, humidity_pct=70.0)
        node_side.telemetry("n1", 2, three * HOUR_S + 600.25, temperature_c=22.0,
                            humidity_pct=60.0)
        node_side.telemetry("n1", 3, three * HOUR_S + 1200.5, temperature_c=26.0,
                            humidity_pct=50.0)
        node_side.telemetry("n2", 1, three * HOUR_S + 30.0, temperature_c=25.0, humidity_pct=55.0)
        # Ten minutes old: the continuous queries still cover its hour.
        node_side.telemetry("n1", 4, now - 600, temperature_c=30.0, humidity_pct=40.0)
        assert node_side.wait_ack("n1", 4) == 4
        assert node_side.wait_ack("n2", 1) == 1
        wait_until(lambda: ingest.metrics.total("downsample_hours_total") >= 2, 15,
                   "the late hours downsampled")
        rows = _hourly(influxdb.url, db, "climate", before_s=(hour_of(now) - 2) * HOUR_S)
        assert [(r["time"] // 1000, r["yard"], r["node"]) for r in rows] == [
            (five * HOUR_S, yard, "n1"), (three * HOUR_S, yard, "n1"),
            (three * HOUR_S, yard, "n2")]
        assert _values(rows[0]) == _climate_hour([(21.0, 70.0)])
        assert _values(rows[1]) == _climate_hour([(22.0, 60.0), (26.0, 50.0)])
        assert _values(rows[2]) == _climate_hour([(25.0, 55.0)])
        assert metric_value(ingest.http_port, "downsample_hours_pending") == 0
    assert ingest.metrics.total("downsample_hours_total") == 2  # not the recent reading's hour
    assert ingest.metrics.total("downsample_runs_total") >= 1
    assert ingest.metrics.total("downsample_errors_total") == 0


@pytest.mark.integration
def test_ingest_downsamples_late_hours_at_stop(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    db = unique_name
    settings = _settings(tmp_path, influxdb.url, db, broker=mosquitto,
                         ingest={"downsample_interval_s": 3600})
    hour = hour_of(time.time()) - 4
    with Ingest(settings) as ingest:
        assert ingest.wait_ready(15)
        node_side.telemetry("n1", 1, hour * HOUR_S + 10.0, temperature_c=23.0, humidity_pct=65.0,
                            rain_mm=0.4)
        node_side.telemetry("n1", 2, hour * HOUR_S + 20.0, temperature_c=23.0, humidity_pct=65.0,
                            rain_mm=0.2)
        assert node_side.wait_ack("n1", 2) == 2
        wait_until(lambda: _pending(tmp_path / "pending.json") == [rfc3339(hour * HOUR_S)],
                   10, "the hour noted as pending")
        assert _hourly(influxdb.url, db, "climate") == []  # the round is an hour away
    assert [(r["time"] // 1000, r["temperature_c"]) for r in
            _hourly(influxdb.url, db, "climate")] == [(hour * HOUR_S, 23.0)]
    assert [(r["time"] // 1000, r["rain_mm"]) for r in _hourly(influxdb.url, db, "rain")] == [
        (hour * HOUR_S, pytest.approx(0.6))]
    assert _pending(tmp_path / "pending.json") == []


@pytest.mark.integration
@pytest.mark.slow
def test_late_hours_of_a_killed_server_are_downsampled_at_the_next_start(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    """The readings were acked (the broker will not send them again): only the file
    remembers that their hour needs downsampling."""
    db = unique_name
    http_port = free_port()
    config = dict(broker=mosquitto, influx_url=influxdb.url, database=db,
                  client_id=f"ingest-{db}")
    ingest_keys = {"downsample_pending_file": "pending.json", "http_port": http_port}
    write_server_config(tmp_path / "server.toml", **config,
                        ingest={**ingest_keys, "downsample_interval_s": 3600})
    hour = hour_of(time.time()) - 6
    process = subprocess.Popen(
        [sys.executable, "-m", "secadero.cli", "server", "ingest", "--config",
         str(tmp_path / "server.toml")], cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: metric_value(http_port, "mqtt_connected") == 1, 20, "connected")
        node_side.telemetry("n1", 1, hour * HOUR_S + 42.0, temperature_c=19.5, humidity_pct=88.0)
        assert node_side.wait_ack("n1", 1) == 1
        wait_until(lambda: (tmp_path / "pending.json").exists()
                   and _pending(tmp_path / "pending.json") == [rfc3339(hour * HOUR_S)],
                   10, "the hour noted as pending")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _hourly(influxdb.url, db, "climate") == []
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", **config, ingest={**ingest_keys, "downsample_interval_s": 0.2}))
    with Ingest(settings) as ingest:
        assert ingest.wait_ready(15)
        wait_until(lambda: _hourly(influxdb.url, db, "climate"), 15, "the hour downsampled")
    assert [(r["time"] // 1000, r["temperature_c"]) for r in
            _hourly(influxdb.url, db, "climate")] == [(hour * HOUR_S, 19.5)]
    assert _pending(tmp_path / "pending.json") == []


@pytest.mark.integration
def test_ingest_with_influxdb_2_stores_late_readings_and_sends_no_influxql(
        tmp_path: Path, mosquitto: Any, node_side: NodeSide, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeInflux2()
    try:
        monkeypatch.setenv("TEST_INFLUX_TOKEN", "s3cret")
        settings = _settings(tmp_path, fake.url, unique_name, broker=mosquitto,
                             ingest={"downsample_interval_s": 0.1},
                             influx={"api": 2, "token_env": "TEST_INFLUX_TOKEN", "org": "coop",
                                     "bucket": "secadero"})
        before = _downsample_threads()
        with Ingest(settings) as ingest:
            assert ingest.wait_ready(15)
            node_side.telemetry("n1", 1, time.time() - 3 * HOUR_S, temperature_c=20.0)
            assert node_side.wait_ack("n1", 1) == 1
            assert _downsample_threads() == before
    finally:
        fake.close()
    paths = {r["path"].partition("?")[0] for r in fake.requests}
    assert "/api/v2/write" in paths
    assert not any(p.startswith("/query") for p in paths)
    assert ingest.metrics.total("downsample_hours_total") == 0
    assert not (tmp_path / "pending.json").exists()


# --------------------------------------------------------------------------
# secadero server downsample


@pytest.mark.integration
def test_cli_recomputes_a_period_and_says_what_it_did(
        tmp_path: Path, influxdb: Any, unique_name: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = unique_name
    settings = _settings(tmp_path, influxdb.url, db)
    _prepared(settings)
    h = (hour_of(time.time()) - 8) * HOUR_S
    _write_raw(influxdb.url, db, [
        f"climate,yard=a,node=n1 temperature_c=20,humidity_pct=80 {h + 10}",
        f"climate,yard=a,node=n1 temperature_c=22,humidity_pct=70 {h + 20}",
        f"climate,yard=a,node=n1 temperature_c=25,humidity_pct=60 {h + 2 * HOUR_S + 10}",
        f"rain,yard=a,node=n1 rain_mm=0.2 {h + 2 * HOUR_S + 10}",
    ])
    config = str(tmp_path / "server.toml")
    code = main(["server", "downsample", "--config", config, "--from", rfc3339(h),
                 "--to", rfc3339(h + 2 * HOUR_S + 1), "--step-hours", "2"])
    at = [time.strftime("%Y-%m-%d %H:%M", time.gmtime(h + i * HOUR_S)) for i in range(4)]
    assert (code, capsys.readouterr().out.splitlines()) == (0, [
        f'Recomputing the hourly series of database "{db}" on {influxdb.url}: {at[0]} to '
        f"{at[3]} UTC, 3 hours in 2 steps.",
        f"{at[0]} to {at[2]} UTC: 1 hourly point (climate 1, rain 0, node 0)",
        f"{at[2]} to {at[3]} UTC: 2 hourly points (climate 1, rain 1, node 0)",
        "Done: 3 hours, 3 hourly points (climate 2, rain 1, node 0) written.",
    ])
    assert [(r["time"] // 1000 - h, r["temperature_c"]) for r in
            _hourly(influxdb.url, db, "climate")] == [(0, 21), (2 * HOUR_S, 25)]
    # --dry-run prints the statements and writes nothing.
    code = main(["server", "downsample", "--config", config, "--from", rfc3339(h + HOUR_S),
                 "--to", rfc3339(h + 2 * HOUR_S), "--dry-run"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[1] == f"{at[1]} to {at[2]} UTC:"
    assert out[2:5] == [f"  {s}" for s in downsample_statements(
        db, h + HOUR_S, h + 2 * HOUR_S).values()]
    assert out[5] == "Dry run: nothing was sent to InfluxDB."


@pytest.mark.integration
def test_cli_exits_1_when_influxdb_fails(tmp_path: Path, influxdb: Any,
                                         unique_name: str) -> None:
    """Run as an operator does, in a process of its own; InfluxDB answers 500."""
    db = unique_name
    proxy = TcpProxy(influxdb.port, mode="http500")
    try:
        _settings(tmp_path, proxy.url, db, influx_behind=influxdb)
        h = (hour_of(time.time()) - 30) * HOUR_S
        result = subprocess.run(
            [sys.executable, "-m", "secadero.cli", "server", "downsample", "--config",
             str(tmp_path / "server.toml"), "--from", rfc3339(h)], cwd=tmp_path,
            capture_output=True, text=True, timeout=60)
    finally:
        proxy.close()
    at = [time.strftime("%Y-%m-%d %H:%M", time.gmtime(h + i * HOUR_S)) for i in (0, 24)]
    assert (result.returncode, result.stdout.splitlines()[1:]) == (1, [
        f"{at[0]} to {at[1]} UTC: failed: InfluxDB /query answered 500: timeout"]), \
        result.stdout + result.stderr


@pytest.mark.integration
def test_backfill_stopped_halfway_says_how_to_go_on(tmp_path: Path, influxdb: Any,
                                                    unique_name: str) -> None:
    db = unique_name
    proxy = TcpProxy(influxdb.port)
    try:
        settings = _settings(tmp_path, proxy.url, db, influx_behind=influxdb)
        writer = _prepared(settings)
        h = (hour_of(time.time()) - 10) * HOUR_S
        _write_raw(influxdb.url, db, [f"climate,yard=a,node=n1 temperature_c=20 {h + 1}"])

        class FailsAfterTheFirstStep:
            """The real InfluxDB; after the first step's three statements it answers 500."""

            calls = 0

            def query(self, statement: str) -> list[dict[str, object]]:
                self.calls += 1
                if self.calls == 4:
                    proxy.set_mode("http500")
                return writer.query(statement)

        out = io.StringIO()
        code = backfill(settings, h, h + 6 * HOUR_S, out=out, config="/etc/server.toml",
                        step_hours=4, runner=FailsAfterTheFirstStep())
    finally:
        proxy.close()
    at = [time.strftime("%Y-%m-%d %H:%M", time.gmtime(h + i * HOUR_S)) for i in (0, 4, 6)]
    lines = out.getvalue().splitlines()
    # How the failure reads depends on when the proxy cut the open connection.
    assert lines[2].startswith(f"{at[1]} to {at[2]} UTC: failed: InfluxDB ")
    del lines[2]
    assert (code, lines[1:]) == (1, [
        f"{at[0]} to {at[1]} UTC: 1 hourly point (climate 1, rain 0, node 0)",
        f"The hours before {at[1]} UTC are done. To go on from there: secadero server "
        f"downsample --config /etc/server.toml --from {rfc3339(h + 4 * HOUR_S)} --to "
        f"{rfc3339(h + 6 * HOUR_S)}",
    ])


def test_cli_refuses_bad_periods_and_influxdb_2(
        tmp_path: Path, unique_name: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _settings(tmp_path, "http://127.0.0.1:9", unique_name)
    config = str(tmp_path / "server.toml")
    with pytest.raises(SystemExit) as exited:
        main(["server", "downsample", "--config", config, "--from", "2026-06-31"])
    assert exited.value.code == 2
    assert "argument --from: '2026-06-31' is not a date or time" in capsys.readouterr().err
    assert main(["server", "downsample", "--config", config, "--from", "2026-06-03",
                 "--to", "2026-06-02T12:00"]) == 2
    assert capsys.readouterr().out == "nothing to do: --to must be after --from\n"
    assert main(["server", "downsample", "--config", config, "--from", "2999-01-01"]) == 2
    assert capsys.readouterr().out == "nothing to do: --from is in the future\n"
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "s3cret")
    (tmp_path / "v2.toml").write_text(
        '[influxdb]\napi = 2\nurl = "http://127.0.0.1:9"\ntoken_env = "TEST_INFLUX_TOKEN"\n'
        'org = "o"\nbucket = "b"\n')
    assert main(["server", "downsample", "--config", str(tmp_path / "v2.toml"),
                 "--from", "2026-06-01"]) == 2
    assert capsys.readouterr().out.startswith("InfluxDB 2.x (api = 2) has no continuous queries")
