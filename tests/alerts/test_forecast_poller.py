"""The forecast poller's metrics, its watched thread, its points through the one InfluxDB output.

Open-Meteo is a local HTTP server answering with the real recorded response
(tests/data); the points go to the real InfluxDB the fixture starts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alert_helpers import (
    FakeService,
    service_fixture,  # noqa: F401 (fixtures, found by name)
)
from conftest import influx_query

from secadero.server.forecast.openmeteo import OpenMeteoClient
from secadero.server.forecast.poller import ForecastPoller
from secadero.server.influx import InfluxV1Writer, PointsDropped, PointWriter
from secadero.server.influx_points import ForecastPoints
from secadero.server.metrics import Health, Registry
from secadero.settings import YardSettings

DATA = Path(__file__).resolve().parent.parent / "data"
BERLIN = json.loads((DATA / "open-meteo_berlin_2023-06-30_hourly_precipitation_probability.json")
                    .read_text())
YARDS = [YardSettings(id="norte", name="Norte", latitude=-6.57, longitude=-76.14),
         YardSettings(id="sur", name="Sur", latitude=-6.61, longitude=-76.10)]
FETCHED_AT = 1000.0


def berlin_yesterday() -> dict[str, Any]:
    """The recorded response moved to yesterday: inside InfluxDB's 90-day retention."""
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    return dict(BERLIN, hourly=dict(BERLIN["hourly"], time=[
        t.replace("2023-06-30", day) for t in BERLIN["hourly"]["time"]]))


def clients(service: FakeService) -> dict[str, list[OpenMeteoClient]]:
    return {yard.id: [OpenMeteoClient(f"{service.url}/v1/forecast", retries=2, backoff_s=0.5,
                                      sleep=lambda s: None, clock=lambda: FETCHED_AT)]
            for yard in YARDS}


def exported(registry: Registry, name: str) -> list[str]:
    return [line for line in registry.render().splitlines() if line.startswith(name)]


def test_fetches_failures_and_the_age_of_each_yards_forecast_are_exported(
        service: FakeService) -> None:
    service.replies = [service.json_reply(BERLIN)]  # norte's; sur's get 503
    service.default = (503, {}, b"The service is overloaded")
    now = [FETCHED_AT + 60]
    registry = Registry()
    poller = ForecastPoller(YARDS, clients(service), clock=lambda: now[0], registry=registry)
    poller.poll_once()
    assert exported(registry, "secadero_forecast_fetch") == [
        'secadero_forecast_fetch_failures_total{provider="open-meteo",reason="http_503"} 1',
        'secadero_forecast_fetches_total{provider="open-meteo"} 2',
    ]
    assert exported(registry, "secadero_forecast_age_seconds") == [
        'secadero_forecast_age_seconds{yard="norte"} 60']  # sur has none yet
    now[0] = FETCHED_AT + 3600  # read at the scrape: it grows without a poll
    assert exported(registry, "secadero_forecast_age_seconds") == [
        'secadero_forecast_age_seconds{yard="norte"} 3600']


@pytest.mark.integration
def test_points_stored_and_refused_are_counted_through_the_point_writer(
        service: FakeService, influxdb: Any, unique_name: str) -> None:
    settings = influxdb.settings(unique_name)
    InfluxV1Writer(settings).prepare()
    # norte's forecast is recent; sur's is from 2023, older than the 90-day
    # retention, which InfluxDB refuses for good (400).
    service.replies = [service.json_reply(berlin_yesterday()), service.json_reply(BERLIN)]
    registry = Registry()
    points = PointWriter.from_settings(settings, registry=registry).start()
    poller = ForecastPoller(YARDS, clients(service), writer=ForecastPoints(points),
                            registry=registry)
    poller.poll_once()
    points.stop()  # writes what is queued; each future is done once it returns
    metrics = registry.part("forecast")
    assert metrics.get("points_stored_total") == 24
    assert metrics.by_label("points_failed_total", "reason") == {"refused": 24}
    rows = influx_query(influxdb.url, unique_name, "SELECT count(precip_prob_pct) FROM forecast "
                                                   "GROUP BY yard")
    assert [(row["yard"], row["count"]) for row in rows] == [("norte", 24)]


def test_a_writer_that_raises_is_counted_not_fatal(service: FakeService) -> None:
    def writer(yard: str, forecast: object) -> None:
        raise PointsDropped("10000 writes already wait for InfluxDB: dropped")

    service.default = service.json_reply(BERLIN)
    registry = Registry()
    poller = ForecastPoller(YARDS, clients(service), writer=writer, registry=registry)
    poller.poll_once()
    assert [poller.status(yard.id).forecast is not None for yard in YARDS] == [True, True]
    assert registry.part("forecast").get("points_failed_total", reason="dropped") == 48


def test_the_polling_thread_is_watched(service: FakeService) -> None:
    health = Health()
    service.default = service.json_reply(BERLIN)
    poller = ForecastPoller(YARDS, clients(service), health=health)
    poller.start()
    assert health.problems() == []
    poller.stop()
    assert health.problems() == ["the forecast polling thread has stopped; see the log"]
