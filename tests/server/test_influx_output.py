"""The one InfluxDB output for the alert and forecast points: ``PointWriter`` over ``make_writer``.

``api = 1`` runs against the real InfluxDB 1.x the fixture starts (authentication
on: the admin, the server's writer, the read-only user). InfluxDB 2.x is not packaged for
Debian: for ``api = 2`` a local HTTP server (tests/server/influx_fakes.py)
stands in for it, answering ``/api/v2/write`` as 2.x documents and recording
each request, so the test sees the token, org, bucket, precision and body
influxdb-client sends. The same server, answering ``/write`` as 1.x does,
shows the 1.x requests (where the credentials travel).
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query
from influx_fakes import (  # noqa: F401 (fixtures, found by name)
    RESET,
    FakeInflux2,
    fake_influx2_fixture,
)

from secadero.devservices import INFLUX_READER, INFLUX_WRITER, InfluxDB, free_port
from secadero.errors import PermanentStorageError, RetryableStorageError
from secadero.server.alerts.engine import Transition
from secadero.server.forecast.openmeteo import parse
from secadero.server.influx import (
    AuthenticationFailed,
    InfluxV1Writer,
    PointsDropped,
    PointWriter,
    WriteRejected,
)
from secadero.server.influx_points import AlertPoints, ForecastPoints, alert_line, forecast_lines
from secadero.server.metrics import Health, Registry
from secadero.settings import InfluxSettings

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data"
BERLIN = json.loads((DATA / "open-meteo_berlin_2023-06-30_hourly_precipitation_probability.json")
                    .read_text())
WAIT_S = 10


def yesterday_forecast() -> Any:
    """The recorded Open-Meteo response moved to yesterday (inside the 90-day retention)."""
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    body = dict(BERLIN, hourly=dict(BERLIN["hourly"], time=[
        t.replace("2023-06-30", day) for t in BERLIN["hourly"]["time"]]))
    return parse(body, fetched_at=datetime.now(UTC).timestamp())


# A minute ago, to the millisecond (InfluxDB refuses points older than its retention).
RAISED_MS = (int(time.time()) - 60) * 1000 + 123
RAISED = Transition(ts=RAISED_MS / 1000, yard="norte", kind="rain_now", state="raised",
                    severity="critical", message='LLUEVE en el tendal "Norte"', episode=7)


def v2_settings(url: str) -> InfluxSettings:
    return InfluxSettings(url=url, api=2, token="s3cret", org="coop", bucket="secadero",
                          timeout_s=2)


def started(settings: InfluxSettings, registry: Registry, **kw: Any) -> PointWriter:
    return PointWriter.from_settings(settings, registry=registry, **kw).start()


# -------------------------------------------------------------- api = 1


def test_alert_and_forecast_points_are_stored_through_api_1(influxdb: Any,
                                                           unique_name: str) -> None:
    settings = influxdb.settings(unique_name)
    InfluxV1Writer(settings).prepare()
    registry = Registry()
    points = started(settings, registry)
    forecast = yesterday_forecast()
    try:
        assert AlertPoints(points)(RAISED).result(WAIT_S) is None
        assert ForecastPoints(points)("norte", forecast).result(WAIT_S) is None
    finally:
        points.stop()
    (alert,) = influx_query(influxdb.url, unique_name, "SELECT * FROM alert")
    assert alert == {"time": RAISED_MS, "yard": "norte", "kind": "rain_now",
                     "state": "raised", "severity": "critical",
                     "message": 'LLUEVE en el tendal "Norte"', "episode": 7}
    rows = influx_query(influxdb.url, unique_name,
                        "SELECT precip_prob_pct FROM forecast WHERE yard = 'norte' "
                        "AND provider = 'open-meteo'")
    assert [row["time"] for row in rows] == [int(h.start_ts) * 1000 for h in forecast.hours]
    assert [row["precip_prob_pct"] for row in rows] == [h.precip_prob_pct
                                                        for h in forecast.hours]
    metrics = registry.part("influx")
    assert metrics.by_label("points_written_total", "source") == {"alert": 1, "forecast": 24}
    assert metrics.total("points_dropped_total") == 0


def test_a_point_beyond_the_retention_is_refused_once_and_counted(influxdb: Any,
                                                                 unique_name: str) -> None:
    settings = influxdb.settings(unique_name)
    InfluxV1Writer(settings).prepare()
    registry = Registry()
    points = started(settings, registry)
    try:
        # 2023: older than the 90-day raw policy, which 1.x refuses with a 400.
        refused = ForecastPoints(points)("norte", parse(BERLIN, fetched_at=0))
        assert isinstance(refused.exception(WAIT_S), WriteRejected)
        assert AlertPoints(points)(RAISED).result(WAIT_S) is None  # the writer carries on
    finally:
        points.stop()
    metrics = registry.part("influx")
    assert metrics.get("points_refused_total", source="forecast") == 24
    assert metrics.total("write_retries_total") == 0
    assert influx_query(influxdb.url, unique_name, "SELECT * FROM forecast") == []


# ---------------------------------------------- api = 1 with authentication on


@pytest.fixture
def yard_db(influxdb: InfluxDB, unique_name: str) -> str:
    """A database of this test's own on the session InfluxDB (authentication on), made by
    the admin, on which the server's writer may write (and nothing more)."""
    influxdb.query(f'CREATE DATABASE "{unique_name}" WITH NAME raw')
    influxdb.grant(unique_name, INFLUX_WRITER, "WRITE")
    return unique_name


def test_credentials_go_in_the_authorization_header(influxdb: InfluxDB, yard_db: str) -> None:
    settings = influxdb.settings(yard_db, INFLUX_WRITER)
    points = started(settings, Registry())
    try:
        assert AlertPoints(points)(RAISED).result(WAIT_S) is None
    finally:
        points.stop()
    assert [row["episode"] for row in influx_query(influxdb.url, yard_db,
                                                   "SELECT * FROM alert")] == [7]


def test_the_1x_request_carries_basic_auth_and_no_password_in_its_url(
        fake_influx2: FakeInflux2) -> None:
    """The fake answers ``/write`` as 1.x: it shows the request InfluxDB 1.x receives."""
    settings = InfluxSettings(url=fake_influx2.url, database="yard", username="writer",
                              password="writer-pw")
    points = started(settings, Registry())
    try:
        assert AlertPoints(points)(RAISED).result(WAIT_S) is None
    finally:
        points.stop()
    (request,) = fake_influx2.write_requests()
    assert request["path"] == "/write?db=yard&rp=raw&precision=u"
    assert request["headers"]["Authorization"] == (
        "Basic " + base64.b64encode(b"writer:writer-pw").decode())
    assert request["body"] == alert_line(RAISED).encode()


def test_a_wrong_password_says_what_to_fix_and_never_shows_it(
        influxdb: InfluxDB, yard_db: str) -> None:
    settings = InfluxSettings(url=influxdb.url, database=yard_db, username=INFLUX_WRITER,
                              password="not-the-password")
    with pytest.raises(AuthenticationFailed) as raised:
        InfluxV1Writer(settings).write(alert_line(RAISED).encode())
    assert str(raised.value) == (
        f"InfluxDB at {influxdb.url} answered 401 (authorization failed): check "
        f"[influxdb] username '{INFLUX_WRITER}' and its password (password_env or "
        "password_file)")


def test_a_user_without_the_grant_is_told_which_grant(influxdb: InfluxDB,
                                                      yard_db: str) -> None:
    """The read-only user (Grafana's) has no grant on this database at all."""
    settings = influxdb.settings(yard_db, INFLUX_READER)
    writer = InfluxV1Writer(settings)
    with pytest.raises(AuthenticationFailed) as raised:
        writer.write(alert_line(RAISED).encode())
    assert str(raised.value) == (
        f"InfluxDB at {influxdb.url} answered 403 (\"{INFLUX_READER}\" user is not authorized "
        f"to write to database \"{yard_db}\"): user '{INFLUX_READER}' may not write to "
        f"database '{yard_db}': GRANT WRITE ON \"{yard_db}\" TO \"{INFLUX_READER}\"")
    # prepare() of a user who may not create databases carries on (permanent, not retried).
    with pytest.raises(PermanentStorageError) as preparing:
        writer.prepare()
    assert type(preparing.value) is PermanentStorageError
    assert "requires admin privilege" in str(preparing.value)
    writer.close()


def test_a_password_in_the_url_never_reaches_an_error_or_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens: the transport error
    settings = InfluxSettings(url=f"http://writer:url-secret@127.0.0.1:{port}",
                              database="yard", password="writer-pw", username="writer")
    registry = Registry()
    points = started(settings, registry, backoff_s=0.001)
    with caplog.at_level(logging.DEBUG):
        pending = AlertPoints(points)(RAISED)
        points.stop()
    error = pending.exception(WAIT_S)
    assert isinstance(error, RetryableStorageError)
    assert str(error).startswith(f"InfluxDB at http://127.0.0.1:{port}: ConnectionRefusedError")
    assert caplog.records  # the outage was logged ...
    assert "url-secret" not in caplog.text and "writer-pw" not in caplog.text  # ... safely
    assert registry.part("influx").get("points_dropped_total", source="alert",
                                       reason="stopped") == 1


# -------------------------------------------------------------- api = 2


def test_alert_and_forecast_points_are_stored_through_api_2(fake_influx2: FakeInflux2) -> None:
    registry = Registry()
    points = started(v2_settings(fake_influx2.url), registry)
    forecast = yesterday_forecast()
    try:
        assert AlertPoints(points)(RAISED).result(WAIT_S) is None
        assert ForecastPoints(points)("norte", forecast).result(WAIT_S) is None
    finally:
        points.stop()
    alert, forecasts = fake_influx2.write_requests()
    for request in (alert, forecasts):
        path, _, query = request["path"].partition("?")
        assert (request["method"], path) == ("POST", "/api/v2/write")
        assert urllib.parse.parse_qs(query) == {"org": ["coop"], "bucket": ["secadero"],
                                                "precision": ["us"]}
        assert request["headers"]["Authorization"] == "Token s3cret"
    assert alert["body"] == (b'alert,kind=rain_now,yard=norte episode=7i,'
                             b'message="LLUEVE en el tendal \\"Norte\\"",severity="critical",'
                             b'state="raised" ' + str(RAISED_MS * 1000).encode())
    assert forecasts["body"] == "\n".join(forecast_lines("norte", forecast)).encode()
    first_hour = int(forecast.hours[0].start_ts) * 1_000_000
    assert forecasts["body"].split(b"\n")[0] == (
        f"forecast,provider=open-meteo,yard=norte precip_prob_pct=32 {first_hour}".encode())
    assert registry.part("influx").by_label("points_written_total", "source") == {
        "alert": 1, "forecast": 24}


def test_a_transport_error_is_retried_then_stored(fake_influx2: FakeInflux2) -> None:
    fake_influx2.write_replies = [RESET, 503]
    registry = Registry()
    points = started(v2_settings(fake_influx2.url), registry, backoff_s=0.001)
    try:
        assert AlertPoints(points)(RAISED).result(WAIT_S) is None
    finally:
        points.stop()
    bodies = [request["body"] for request in fake_influx2.write_requests()]
    assert bodies == [alert_line(RAISED).encode()] * 3
    metrics = registry.part("influx")
    assert metrics.get("write_retries_total", source="alert") == 2
    assert metrics.get("points_written_total", source="alert") == 1


def test_a_400_is_refused_once_counted_and_not_retried(fake_influx2: FakeInflux2) -> None:
    fake_influx2.write_replies = [400]
    fake_influx2.write_body = b"unable to parse 'alert': bad timestamp"
    registry = Registry()
    points = started(v2_settings(fake_influx2.url), registry, backoff_s=0.001)
    try:
        refused = AlertPoints(points)(RAISED).exception(WAIT_S)
        assert AlertPoints(points)(RAISED).result(WAIT_S) is None  # the next one goes through
    finally:
        points.stop()
    assert isinstance(refused, WriteRejected)
    assert (refused.status, refused.body) == (400, "unable to parse 'alert': bad timestamp")
    assert len(fake_influx2.write_requests()) == 2
    metrics = registry.part("influx")
    assert metrics.get("points_refused_total", source="alert") == 1
    assert metrics.get("points_written_total", source="alert") == 1
    assert metrics.total("write_retries_total") == 0


def test_a_bug_is_logged_and_dropped_not_retried(fake_influx2: FakeInflux2,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    points = started(v2_settings(fake_influx2.url), registry, backoff_s=0.001)
    try:
        with caplog.at_level(logging.ERROR):
            # A caller's bug: a line that is not text fails inside the writer's thread.
            broken = points.submit([alert_line(RAISED), 42], source="batch")  # type: ignore[list-item]
            assert isinstance(broken.exception(WAIT_S), TypeError)
        assert AlertPoints(points)(RAISED).result(WAIT_S) is None  # the thread lives on
    finally:
        points.stop()
    assert [r.getMessage() for r in caplog.records] == [
        "writing batch points to InfluxDB failed unexpectedly"]
    assert len(fake_influx2.write_requests()) == 1
    metrics = registry.part("influx")
    assert metrics.get("points_dropped_total", source="batch", reason="error") == 2
    assert metrics.total("write_retries_total") == 0


# ------------------------------------------------------- queue and health


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    settings = InfluxSettings(url=f"http://127.0.0.1:{free_port()}", database="yard")
    registry = Registry()
    points = PointWriter.from_settings(settings, registry=registry, max_queued=1)  # not started
    assert not AlertPoints(points)(RAISED).done()  # queued
    dropped = AlertPoints(points)(RAISED)
    assert isinstance(dropped.exception(0), PointsDropped)
    assert str(dropped.exception(0)) == "1 writes already wait for InfluxDB: dropped"
    metrics = registry.part("influx")
    assert metrics.get("points_dropped_total", source="alert", reason="queue_full") == 1
    assert "secadero_influx_queued_writes 1\n" in registry.render()


def test_the_writer_thread_is_watched(fake_influx2: FakeInflux2) -> None:
    health = Health()
    points = PointWriter.from_settings(v2_settings(fake_influx2.url), health=health).start()
    assert health.problems() == []
    points.stop()
    assert health.problems() == ["the InfluxDB point writing thread has stopped; see the log"]
    health.stopping()
    assert health.problems() == []
