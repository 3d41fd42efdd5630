"""SeriesReader against the real InfluxDB 1.x of the fixtures.

The points are written as the ingest writes them: telemetry through the
ingest's ``LineBuilder``, events through ``event_points``, alert transitions
through ``alert_line``, over plain HTTP /write (not through the code under
test). Points of another yard, of a node outside the batch and of a tray
outside the batch are written beside them and must not show.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest
from conftest import influx_request

from secadero.contract import Event, Telemetry
from secadero.devservices import free_port
from secadero.server.air import vpd_kpa
from secadero.server.alerts.engine import Transition
from secadero.server.batches import metrics
from secadero.server.batches.model import (
    AlertMark,
    Batch,
    BatchError,
    Interval,
    RainResponse,
    SeriesUnavailable,
    TrayChange,
    TrayRef,
)
from secadero.server.batches.series import SeriesReader, quote_string
from secadero.server.influx import InfluxV1Writer
from secadero.server.influx_points import alert_line
from secadero.server.points import LineBuilder, event_points, to_lines
from secadero.settings import BatchSettings, InfluxSettings, YardSettings

N1, N2 = TrayRef("n1", "t1"), TrayRef("n2", "t1")
# Two days back, on an hour: inside the raw retention, away from the continuous queries.
S = float((int(time.time()) // 3600 - 48) * 3600)


def write(url: str, database: str, lines: list[bytes]) -> None:
    request = influx_request(f"{url}/write?db={database}&precision=u",
                             data=b"\n".join(lines))
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


def telemetry(builder: LineBuilder, yard: str, node: str, ts: float, *, humidity: float,
              tray: str, wet: bool = False, tray_id: str = "t1") -> list[bytes]:
    return builder.telemetry_lines(yard, node, Telemetry(
        ts=ts, seq=int(ts - S) + 1000, temperature_c=30.0, humidity_pct=humidity, rain=wet,
        rain_mm=0.0, trays={tray_id: tray}))


def event(yard: str, node: str, ts: float, kind: str, tray: str | None = None) -> list[bytes]:
    return to_lines(list(event_points(yard, node, Event(ts=ts, seq=1, type=kind, tray=tray))))


def alert(yard: str, ts: float, kind: str, state: str, episode: int) -> bytes:
    return alert_line(Transition(ts, yard, kind, state, "critical", "Lluvia: recoger", episode)
                      ).encode()


def one_hour(yard: str) -> list[bytes]:
    """An hour of a batch on n1/t1 and n2/t1, readings every 10 s (n2 5 s after n1).

    - n1/t1 out from before the start; its ``tray_retracted`` event at S+1203;
    - n2/t1 in all along;
    - n2's plate wet S+1000 - S+1100, with its events; n1's plate wet in its
      readings of S+3000 - S+3050, with no event;
    - both nodes silent from S+1800 to S+2400;
    - a rain alert raised at S+1010, resolved at S+1500.
    """
    builder = LineBuilder()
    lines: list[bytes] = []
    for step in range(-12, 360):  # from two minutes before the start
        for node, offset in (("n1", 0), ("n2", 5)):
            ts = S + step * 10 + offset
            if S + 1800 <= ts < S + 2400:
                continue
            if node == "n1":
                tray = "extended" if ts < S + 1203 else "retracted"
                wet = S + 3000 <= ts < S + 3060
            else:
                tray, wet = "retracted", S + 1000 <= ts < S + 1100
            lines += telemetry(builder, yard, node, ts, humidity=60.0 if node == "n1" else 80.0,
                               tray=tray, wet=wet)
            # Beside the batch: another tray of n1, another node, another yard.
            if node == "n1":
                lines += telemetry(builder, yard, "n1", ts, humidity=60.0, tray="extended",
                                   wet=wet, tray_id="t9")
                lines += telemetry(builder, yard, "n3", ts, humidity=10.0, tray="extended",
                                   wet=True)
                lines += telemetry(builder, f"{yard}x", "n1", ts, humidity=10.0,
                                   tray="extended", wet=True)
    lines += event(yard, "n1", S + 1203, "tray_retracted", "t1")
    lines += event(yard, "n2", S + 1000, "rain_started")
    lines += event(yard, "n2", S + 1100, "rain_stopped")
    lines += event(yard, "n3", S + 500, "rain_started")
    lines.append(alert(yard, S + 1010, "rain_now", "raised", 3))
    lines.append(alert(yard, S + 1500, "rain_now", "resolved", 3))
    lines.append(alert(f"{yard}x", S + 700, "rain_now", "raised", 4))
    return lines


@pytest.fixture
def batch_db(influxdb: Any, unique_name: str) -> tuple[InfluxSettings, Batch]:
    settings = influxdb.settings(unique_name)
    writer = InfluxV1Writer(settings)
    writer.prepare()
    writer.close()
    yard = unique_name[:30]
    write(influxdb.url, unique_name, one_hour(yard))
    return settings, Batch(id="b-1", yard=yard, trays=(N1, N2), started_at=S)


@pytest.mark.integration
def test_a_batch_hour_read_in_one_minute_buckets(batch_db: tuple[InfluxSettings, Batch]) -> None:
    settings, batch = batch_db
    reader = SeriesReader(settings, gap_after_s=300, resolution_s=60)
    series = reader.read(batch, S + 3600)
    reader.close()

    assert (series.start, series.end) == (S, S + 3600)
    # One sample per node per minute with readings (60 - 10 silent minutes), n1 then n2.
    assert len(series.climate) == 2 * 50
    first, second = series.climate[:2]
    assert (first.ts, first.node, first.humidity_pct, first.temperature_c) == (S, "n1", 60, 30)
    assert first.vpd_kpa == pytest.approx(vpd_kpa(30.0, 60.0))
    assert (second.ts, second.node, second.humidity_pct) == (S, "n2", 80)
    assert {s.node for s in series.climate} == {"n1", "n2"}
    assert series.gaps == (Interval(S + 1800, S + 2400),)

    assert series.tray_changes == (
        TrayChange(S, N1, "extended"),  # its state at the start, from before it
        TrayChange(S, N2, "retracted"),
        TrayChange(S + 1203, N1, "retracted"),  # the event's instant, to the second
        # Tray buckets are three minutes: silent longer than 300 s after the S+1620
        # bucket, unknown; known again from the bucket of the first reading back
        # (stamped at its start: a bucket's state is timed to the bucket).
        TrayChange(S + 1920, N1, "unknown"),
        TrayChange(S + 1920, N2, "unknown"),
        TrayChange(S + 2340, N1, "retracted"),
        TrayChange(S + 2340, N2, "retracted"),
    )
    # n2's shower to the second (its events), n1's to its one-minute bucket.
    assert series.rain_wet == (Interval(S + 1000, S + 1100), Interval(S + 3000, S + 3060))
    assert series.alerts == (AlertMark(S + 1010, "rain_now", "raised", 3, "Lluvia: recoger"),
                             AlertMark(S + 1500, "rain_now", "resolved", 3, "Lluvia: recoger"))

    yard = YardSettings(id=batch.yard, name="Test", latitude=-5.64, longitude=-78.53)
    figures = metrics.compute(batch, series, [], BatchSettings(), yard)
    assert figures.rain_exposure_min == pytest.approx(100 / 60)  # n1/t1 out under n2's shower
    assert figures.responses == (RainResponse(3, S + 1010, S + 1203, pytest.approx(193 / 60)),)
    assert figures.humidity_mean_pct == pytest.approx(70.0)
    assert figures.gaps == (Interval(S + 1800, S + 2400),)


@pytest.mark.integration
def test_every_reading_at_one_second_resolution(batch_db: tuple[InfluxSettings, Batch]) -> None:
    settings, batch = batch_db
    reader = SeriesReader(settings, gap_after_s=300, resolution_s=1)
    series = reader.read(batch, S + 3600)
    # 300 readings per node in the hour, minus the 60 of the silent 10 minutes.
    assert len(series.climate) == 2 * 300
    # The last readings before the silence were at S+1790 (n1) and S+1795 (n2),
    # in the 3-second tray buckets of S+1788 and S+1794: each holds 300 s more.
    assert series.tray_changes[3:] == (
        TrayChange(S + 2088, N1, "unknown"), TrayChange(S + 2094, N2, "unknown"),
        TrayChange(S + 2400, N1, "retracted"), TrayChange(S + 2403, N2, "retracted"))
    assert series.gaps == (Interval(S + 1796, S + 2400),)
    assert series.rain_wet == (Interval(S + 1000, S + 1100), Interval(S + 3000, S + 3051))


@pytest.mark.integration
def test_an_ended_batch_is_read_to_its_end_and_until_before_start_is_refused(
        batch_db: tuple[InfluxSettings, Batch]) -> None:
    settings, batch = batch_db
    ended = Batch(id=batch.id, yard=batch.yard, trays=batch.trays, started_at=S,
                  ended_at=S + 1200)
    reader = SeriesReader(settings, resolution_s=60)
    series = reader.read(ended, S + 3600)
    assert series.end == S + 1200
    assert series.tray_changes == (TrayChange(S, N1, "extended"), TrayChange(S, N2, "retracted"))
    assert series.gaps == ()
    with pytest.raises(BatchError) as refused:
        reader.read(batch, S - 1)
    assert refused.value.field == "until"


def test_influxdb_down_is_a_clear_error_naming_the_span() -> None:
    settings = InfluxSettings(url=f"http://127.0.0.1:{free_port()}", database="x", timeout_s=2)
    batch = Batch(id="b-1", yard="y", trays=(N1,), started_at=S)
    with pytest.raises(SeriesUnavailable) as failed:
        SeriesReader(settings).read(batch, S + 60)
    assert failed.value.field == "until"
    assert f"InfluxDB at {settings.url} could not give the batch's series" in str(failed.value)


def test_string_literals_are_escaped() -> None:
    assert quote_string("norte") == "'norte'"
    assert quote_string("a'b\\c") == "'a\\'b\\\\c'"
