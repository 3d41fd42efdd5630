"""A 400 "partial write" from the real InfluxDB 1.6.7: what it costs and what is kept.

The ingest's write path (``WritePolicy.write`` of server/ingest/writer.py,
what the writer thread does with every batch, built here as the ingest
builds it) gets a batch of lines built by the ingest's own
``LineBuilder``, plus the odd crafted line the ingest could not produce. The
writer is the real ``InfluxV1Writer`` in a wrapper that records every request
body, so each test can say how many /write requests the batch cost. What is
stored is read back over plain HTTP (``influx_query``), never through our code.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query, influx_request
from ingest_helpers import (  # noqa: F401 (fixtures are found by their names)
    NodeSide,
    node_side_fixture,
    server_config_fixture,
    server_settings_fixture,
    write_server_config,
)

from secadero.contract import Telemetry
from secadero.devservices import InfluxDB
from secadero.server.influx import InfluxV1Writer
from secadero.server.ingest import INGEST_METRICS, Ingest
from secadero.server.ingest.writer import WritePolicy
from secadero.server.metrics import Metrics, Registry
from secadero.server.points import LineBuilder
from secadero.settings import ServerSettings, load_server_settings

pytestmark = pytest.mark.integration

# The ingest's own line builder: the tests write the bytes it writes.
_BUILDER = LineBuilder()
CONFLICT = ('field type conflict: input field "rain_mm" on measurement "rain" is type float, '
            "already exists as type integer")


class RecordingWriter:
    """The real writer; keeps the body of every /write request (one per ``write`` call)."""

    def __init__(self, inner: InfluxV1Writer) -> None:
        self.inner = inner
        self.bodies: list[bytes] = []
        # Called after each answer (to look at the database between requests).
        self.after_write: Callable[[], None] = lambda: None

    def prepare(self) -> None:
        self.inner.prepare()

    def write(self, body: bytes) -> None:
        self.bodies.append(body)
        try:
            self.inner.write(body)
        finally:
            self.after_write()

    def close(self) -> None:
        self.inner.close()

    def lines(self, request: int) -> list[bytes]:
        return self.bodies[request].split(b"\n")


def _hour_start() -> float:
    # The start of the clock hour two hours ago: a batch inside one clock
    # hour is inside one shard group, and well within any retention here.
    return float((int(time.time()) // 3600 - 2) * 3600)


def _climate(yard: str, nodes: int, count: int, start: float) -> list[bytes]:
    """``count`` climate lines for nodes n1..n<nodes>, a reading every 5 s from ``start``."""
    lines: list[bytes] = []
    for k in range(count):
        reading = Telemetry(ts=start + 5 * k, seq=k + 1, temperature_c=20 + k / 100,
                            humidity_pct=65.5)
        lines += _BUILDER.telemetry_lines(yard, f"n{k % nodes + 1}", reading)
    return lines


def _rain(yard: str, node: str, ts: float, rain_mm: float) -> bytes:
    [line] = _BUILDER.telemetry_lines(yard, node, Telemetry(ts=ts, seq=1, rain_mm=rain_mm))
    return line


def _raw_write(url: str, database: str, body: str) -> None:
    """Seed data the way another program would (not through our code)."""
    query = urllib.parse.urlencode({"db": database, "precision": "s"})
    request = influx_request(f"{url}/write?{query}", data=body.encode())
    assert urllib.request.urlopen(request, timeout=5).status == 204


def _stored_climate(url: str, database: str) -> set[tuple[str, int]]:
    rows = influx_query(url, database, "SELECT temperature_c FROM climate GROUP BY node")
    return {(row["node"], row["time"]) for row in rows}


def _keys(lines: list[bytes]) -> set[tuple[str, int]]:
    """(node, time in ms) of the climate lines, to compare with ``_stored_climate``."""
    keys = set()
    for line in lines:
        if line.startswith(b"climate,"):
            node = line.split(b"node=")[1].split(b",")[0].decode()
            keys.add((node, int(line.rsplit(b" ", 1)[1]) // 1000))
    return keys


def _set_aside(settings: ServerSettings) -> list[dict[str, Any]]:
    path = settings.ingest.set_aside_file
    assert path is not None
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


class WritePath:
    """The ingest's write policy with the ingest's metrics, as ``Ingest`` wires it."""

    def __init__(self, settings: ServerSettings, writer: Any) -> None:
        self.metrics: Metrics = Registry().part("ingest", INGEST_METRICS)
        self._policy = WritePolicy(writer, self.metrics,
                                   set_aside_file=settings.ingest.set_aside_file)

    def write(self, lines: list[bytes]) -> None:
        self._policy.write(lines)


@pytest.fixture
def ingest_and_writer(server_settings: ServerSettings
                      ) -> Iterator[tuple[WritePath, RecordingWriter]]:
    writer = RecordingWriter(InfluxV1Writer(server_settings.influxdb))
    writer.prepare()
    yield WritePath(server_settings, writer), writer
    writer.close()


def _fallbacks(ingest: WritePath, step: str) -> float:
    return ingest.metrics.get("write_isolation_fallbacks_total", step=step)


def test_a_type_conflict_costs_one_write_and_only_the_refused_point_is_set_aside(
        ingest_and_writer: tuple[WritePath, RecordingWriter], server_settings: ServerSettings,
        influxdb: Any, unique_name: str) -> None:
    ingest, writer = ingest_and_writer
    start = _hour_start()
    # Someone wrote rain_mm as an integer in this hour's shard: our float conflicts.
    _raw_write(influxdb.url, unique_name, f"rain,node=n0,yard={unique_name} rain_mm=1i "
                                          f"{int(start)}")
    good = _climate(unique_name, 4, 600, start + 1)
    bad = _rain(unique_name, "n9", start + 100, 2.5)
    lines = [*good[:300], bad, *good[300:]]

    ingest.write(lines)

    assert len(writer.bodies) == 1  # nothing written again
    assert _stored_climate(influxdb.url, unique_name) == _keys(good)
    [aside] = _set_aside(server_settings)
    assert aside["line"] == bad.decode()
    assert aside["reason"] == f"partial write: {CONFLICT} dropped=1"
    assert ingest.metrics.total("points_set_aside_total") == 1
    assert ingest.metrics.get("write_errors_total", kind="rejected") == 1
    assert ingest.metrics.total("write_isolation_fallbacks_total") == 0
    rain = influx_query(influxdb.url, unique_name, "SELECT rain_mm FROM rain")
    assert [row["rain_mm"] for row in rain] == [1]


def test_an_unparsable_line_costs_one_write(
        ingest_and_writer: tuple[WritePath, RecordingWriter], server_settings: ServerSettings,
        influxdb: Any, unique_name: str) -> None:
    ingest, writer = ingest_and_writer
    start = _hour_start()
    good = _climate(unique_name, 3, 300, start + 1)
    # The ingest builds lines with a library and cannot write this; a corrupt
    # batch (or another writer's line) can.
    bad = f"climate,node=n9,yard={unique_name} temperature_c=21.5.3 {int(start) * 10**6}"
    lines = [*good[:10], bad.encode(), *good[10:]]

    ingest.write(lines)

    assert len(writer.bodies) == 1
    assert _stored_climate(influxdb.url, unique_name) == _keys(good)
    [aside] = _set_aside(server_settings)
    assert aside["line"] == bad
    assert aside["reason"].startswith(f"unable to parse '{bad}': ")
    assert ingest.metrics.total("write_isolation_fallbacks_total") == 0


def test_points_beyond_the_retention_cost_one_write(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> None:
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}",
        influx={"raw_retention_days": 1}))
    writer = RecordingWriter(InfluxV1Writer(settings.influxdb))
    writer.prepare()
    ingest = WritePath(settings, writer)
    start = _hour_start()
    good = _climate(unique_name, 3, 200, start + 1)
    old = _climate(unique_name, 3, 3, time.time() - 5 * 86400)  # within the nodes' horizon
    lines = good[:50] + old[:1] + good[50:120] + old[1:] + good[120:]

    ingest.write(lines)
    writer.close()

    assert len(writer.bodies) == 1
    assert _stored_climate(influxdb.url, unique_name) == _keys(good)
    aside = _set_aside(settings)
    assert sorted(entry["line"].encode() for entry in aside) == sorted(old)
    assert {entry["reason"] for entry in aside} == {
        "partial write: points beyond retention policy dropped=3"}
    assert ingest.metrics.total("write_isolation_fallbacks_total") == 0


def test_two_kinds_of_bad_point_in_one_batch_cost_one_retry(
        ingest_and_writer: tuple[WritePath, RecordingWriter], server_settings: ServerSettings,
        influxdb: Any, unique_name: str) -> None:
    """The conflict hides the unparsable line (InfluxDB reports parse errors only when the
    rest was written): the retry, without the conflicting line, brings it out."""
    ingest, writer = ingest_and_writer
    start = _hour_start()
    _raw_write(influxdb.url, unique_name, f"rain,node=n0,yard={unique_name} rain_mm=1i "
                                          f"{int(start)}")
    good = _climate(unique_name, 3, 300, start + 1)
    conflict = _rain(unique_name, "n9", start + 100, 2.5)
    unparsable = f"climate,node=n9,yard={unique_name} temperature_c=oops {int(start) * 10**6}"
    lines = [*good[:100], conflict, *good[100:200], unparsable.encode(), *good[200:]]

    ingest.write(lines)

    assert len(writer.bodies) == 2
    assert writer.lines(1) == [line for line in lines if line != conflict]
    assert _stored_climate(influxdb.url, unique_name) == _keys(good)
    reasons = {entry["line"]: entry["reason"] for entry in _set_aside(server_settings)}
    assert reasons == {conflict.decode(): f"partial write: {CONFLICT} dropped=1",
                       unparsable: f"unable to parse '{unparsable}': invalid boolean"}
    assert (_fallbacks(ingest, "retry"), _fallbacks(ingest, "bisect")) == (1, 0)
    assert ingest.metrics.total("points_set_aside_total") == 2


def test_a_conflict_and_old_points_across_shard_groups_cost_one_retry(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> None:
    """A shard's error hides the retention drop: the retry of the rest brings it out."""
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}",
        influx={"raw_retention_days": 1}))
    writer = RecordingWriter(InfluxV1Writer(settings.influxdb))
    writer.prepare()
    ingest = WritePath(settings, writer)
    start = _hour_start()
    _raw_write(influxdb.url, unique_name, f"rain,node=n0,yard={unique_name} rain_mm=1i "
                                          f"{int(start)}")
    good = _climate(unique_name, 3, 100, start + 1)
    old = _climate(unique_name, 3, 2, time.time() - 5 * 86400)
    conflict = _rain(unique_name, "n9", start + 100, 2.5)
    lines = old[:1] + good[:50] + [conflict] + good[50:] + old[1:]

    ingest.write(lines)
    writer.close()

    assert len(writer.bodies) == 2
    assert conflict not in writer.lines(1)
    assert _stored_climate(influxdb.url, unique_name) == _keys(good)
    reasons = {entry["line"].encode(): entry["reason"] for entry in _set_aside(settings)}
    assert reasons == {conflict: f"partial write: {CONFLICT} dropped=1",
                       old[0]: "partial write: points beyond retention policy dropped=2",
                       old[1]: "partial write: points beyond retention policy dropped=2"}
    assert (_fallbacks(ingest, "retry"), _fallbacks(ingest, "bisect")) == (1, 0)


def test_the_parser_vouches_only_for_lines_influxdb_accepts(
        influxdb: Any, unique_name: str) -> None:
    """Lines the strict reading accepts (edge values of the library's output) all parse."""
    from influxdb_client import Point

    from secadero.server.partial_write import parse_line
    from secadero.server.points import PRECISION

    values = [1e20, 1e-05, -0.0, 5e-324, 1.7976931348623157e308, 12.0, 2**63 - 1, -(2**63),
              True, False, 'q"\\\n\t\'é ,=', ""]
    lines = [Point("edge m,x").tag("k ,=", "v w,x=y").field(f"f{i} ,=", value)
             .time(1764000000000000 + i, PRECISION).to_line_protocol(PRECISION).encode()
             for i, value in enumerate(values)]
    assert all(parse_line(line) is not None for line in lines)
    influx_query(influxdb.url, unique_name, f'CREATE DATABASE "{unique_name}"')
    query = urllib.parse.urlencode({"db": unique_name, "precision": "u"})
    request = influx_request(f"{influxdb.url}/write?{query}", data=b"\n".join(lines))
    assert urllib.request.urlopen(request, timeout=5).status == 204
    rows = influx_query(influxdb.url, unique_name, 'SELECT * FROM "edge m,x"')
    assert len(rows) == len(values)


# -- InfluxDB with series limits (its own process: the limits are server-wide settings)


@pytest.fixture(scope="module")
def limited_influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    server = InfluxDB(workdir=tmp_path_factory.mktemp("influx-limits"), extra_env={
        "INFLUXDB_DATA_MAX_SERIES_PER_DATABASE": "10",
        "INFLUXDB_DATA_MAX_VALUES_PER_TAG": "6"}).start()
    yield server
    server.stop()


@pytest.fixture
def limited(tmp_path: Path, mosquitto: Any, limited_influxdb: InfluxDB, unique_name: str
            ) -> Iterator[tuple[WritePath, RecordingWriter, ServerSettings]]:
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=limited_influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}"))
    writer = RecordingWriter(InfluxV1Writer(settings.influxdb))
    writer.prepare()
    yield WritePath(settings, writer), writer, settings
    writer.close()


def test_a_refusal_not_understood_is_retried_once_then_bisected(
        limited: tuple[WritePath, RecordingWriter, ServerSettings], limited_influxdb: InfluxDB,
        unique_name: str) -> None:
    """max-series-per-database names no point, and 1.6.7 also loses the batch's first
    points with it: every line not set aside must be written again until stored."""
    ingest, writer, settings = limited
    start = _hour_start()
    seed = _climate(unique_name, 5, 5, start)
    ingest.write(seed)  # 5 series of the 10 allowed
    writer.bodies.clear()
    good = _climate(unique_name, 5, 40, start + 1000)
    # 8 new series, one measurement each (so no tag reaches its own limit).
    new = [line.replace(b"climate,", f"x{k},".encode())
           for k, line in enumerate(_climate(unique_name, 1, 8, start + 2000))]
    lines = good[:10] + new[:4] + good[10:] + new[4:]

    ingest.write(lines)

    assert [len(body.split(b"\n")) for body in writer.bodies[:2]] == [48, 48]
    assert all(len(body.split(b"\n")) < 48 for body in writer.bodies[2:])
    assert len(writer.bodies) <= 2 + 2 * len(lines)
    assert (_fallbacks(ingest, "retry"), _fallbacks(ingest, "bisect")) == (1, 1)
    assert _stored_climate(limited_influxdb.url, unique_name) == _keys(seed + good)
    measurements = {row["name"] for row in influx_query(limited_influxdb.url, unique_name,
                                                        "SHOW MEASUREMENTS")}
    aside = _set_aside(settings)
    aside_measurements = {entry["line"].split(",")[0] for entry in aside}
    new_measurements = {f"x{k}" for k in range(8)}
    # Each new series either stored or set aside, up to the limit of 10 series.
    assert measurements & aside_measurements == set()
    assert (measurements | aside_measurements) & new_measurements == new_measurements
    assert len(measurements & new_measurements) == 5
    assert all("max-series-per-database limit exceeded" in entry["reason"] for entry in aside)


def test_a_tag_value_limit_costs_one_retry_that_repairs_what_influxdb_lost(
        limited: tuple[WritePath, RecordingWriter, ServerSettings], limited_influxdb: InfluxDB,
        unique_name: str) -> None:
    """max-values-per-tag names the refused value; the rest is written once more because
    1.6.7 also drops the batch's first point(s) with such a refusal."""
    ingest, writer, settings = limited
    start = _hour_start()
    # 6 distinct "node" values already: the tag's limit.
    ingest.write([line.replace(b"climate,", b"probe,")
                         for line in _climate(unique_name, 6, 6, start)])
    writer.bodies.clear()
    good = [line.replace(b"climate,", b"probe,") for line in _climate(unique_name, 6, 60,
                                                                      start + 1000)]
    bad = f"probe,node=n7,yard={unique_name} temperature_c=1 {int(start + 2000) * 10**6}"
    lines = [*good[:20], bad.encode(), *good[20:]]
    query = (f"SELECT temperature_c FROM probe WHERE time >= {int(start + 1000)}s "
             "GROUP BY node")
    stored_after: list[int] = []
    writer.after_write = lambda: stored_after.append(
        len(influx_query(limited_influxdb.url, unique_name, query)))

    ingest.write(lines)

    assert len(writer.bodies) == 2
    # InfluxDB 1.6.7 refused the one point and lost the first valid one with it.
    assert stored_after == [len(good) - 1, len(good)]
    assert writer.lines(1) == good
    rows = influx_query(limited_influxdb.url, unique_name, query)
    assert {(row["node"], row["time"]) for row in rows} == {
        (node, ms) for node, ms in _keys([g.replace(b"probe,", b"climate,") for g in good])}
    [aside] = _set_aside(settings)
    assert aside["line"] == bad
    assert aside["reason"].startswith("partial write: max-values-per-tag limit exceeded")
    assert (_fallbacks(ingest, "retry"), _fallbacks(ingest, "bisect")) == (1, 0)


# -- end to end, through MQTT


def test_a_poison_reading_through_mqtt_is_set_aside_without_rewriting_the_batch(
        tmp_path: Path, mosquitto: Any, influxdb: Any, node_side: NodeSide,
        unique_name: str) -> None:
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}",
        ingest={"flush_interval_s": 0.5}))
    writer = RecordingWriter(InfluxV1Writer(settings.influxdb))
    start = _hour_start()
    with Ingest(settings, writer=writer) as ingest:
        assert ingest.wait_ready(15)
        _raw_write(influxdb.url, unique_name, f"rain,node=n0,yard={unique_name} rain_mm=1i "
                                              f"{int(start)}")
        for seq in range(1, 41):
            node_side.telemetry("n1", seq, start + seq, temperature_c=20 + seq / 10,
                                rain_mm=2.5 if seq == 20 else None, wait=seq == 40)
        assert node_side.wait_ack("n1", 40) == 40
        assert ingest.metrics.get("write_errors_total", kind="rejected") == 1
        assert ingest.metrics.total("write_isolation_fallbacks_total") == 0
    # Every request was a batch of its own: none wrote a line twice.
    sent = [line for body in writer.bodies for line in body.split(b"\n")]
    assert len(sent) == len(set(sent))
    rows = influx_query(influxdb.url, unique_name, "SELECT temperature_c FROM climate")
    assert len(rows) == 40
    [aside] = _set_aside(settings)
    assert aside["line"].startswith(f"rain,node=n1,yard={unique_name} rain_mm=2.5 ")
