"""Forecast clients against a local HTTP server playing Open-Meteo and MET Norway.

The Open-Meteo answers are the real recorded response in tests/data (Weather
data by Open-Meteo.com, CC BY 4.0; provenance in the README beside it) and
variations of it: 429 with Open-Meteo's reason, 500, malformed JSON, nulls,
a renamed field. The MET Norway answers follow the documented compact
GeoJSON shape (metno/weatherapi-docs); no recording was available.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from alert_helpers import (
    FakeService,
    at,
    service_fixture,  # noqa: F401 (fixtures, found by name)
)

from secadero.server.alerts.rules import first_rain_hour, rain_forecast
from secadero.server.forecast import ForecastError
from secadero.server.forecast.metno import MetNorwayClient
from secadero.server.forecast.openmeteo import OpenMeteoClient, parse
from secadero.server.forecast.poller import ForecastPoller
from secadero.server.influx_points import forecast_lines
from secadero.settings import AlertSettings, YardSettings

DATA = Path(__file__).resolve().parent.parent / "data"
BERLIN = json.loads((DATA / "open-meteo_berlin_2023-06-30_hourly_precipitation_probability.json")
                    .read_text())


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def client(service: FakeService, **kw: object) -> OpenMeteoClient:
    return OpenMeteoClient(f"{service.url}/v1/forecast", retries=2, backoff_s=0.5,
                           sleep=lambda s: None, clock=lambda: 1000.0, **kw)  # type: ignore


def test_the_recorded_response_parses_with_preceding_hour_intervals() -> None:
    forecast = parse(BERLIN, fetched_at=utc("2023-06-30T00:00"))
    assert len(forecast.hours) == 24
    first = forecast.hours[0]
    # stamped 2023-06-30T00:00 (GMT): the hour *before* it
    assert (first.start_ts, first.end_ts, first.precip_prob_pct) == (
        utc("2023-06-29T23:00"), utc("2023-06-30T00:00"), 32.0)
    assert [h.precip_prob_pct for h in forecast.hours[:4]] == [32.0, 54.0, 75.0, 97.0]
    assert all(h.precip_mm is None for h in forecast.hours)
    # first hour >= 60 % is the one stamped 02:00, covering 01:00-02:00
    hour = first_rain_hour(forecast, utc("2023-06-30T00:30"), 180, prob_pct=60, mm_per_h=99)
    assert hour is not None and hour.start_ts == utc("2023-06-30T01:00")
    expected = rain_forecast(forecast, utc("2023-06-30T00:10"), AlertSettings(),
                             active=False).expected
    assert expected is not None
    assert (expected.start_ts, expected.lead_min, expected.prob_pct) == (
        utc("2023-06-30T01:00"), 50.0, 75.0)


def test_local_times_use_the_utc_offset_for_lima() -> None:
    body = copy.deepcopy(BERLIN)
    body.update(timezone="America/Lima", utc_offset_seconds=-18000)
    forecast = parse(body, fetched_at=0)
    assert forecast.hours[0].end_ts == utc("2023-06-30T05:00")


def test_fetch_sends_the_documented_query(service: FakeService) -> None:
    service.default = service.json_reply(BERLIN)
    forecast = client(service).fetch(-6.57, -76.14)
    assert forecast.fetched_at == 1000.0 and len(forecast.hours) == 24
    [request] = service.requests
    assert request.path == "/v1/forecast"
    assert request.query == {
        "latitude": ["-6.5700"], "longitude": ["-76.1400"],
        "hourly": ["precipitation_probability,precipitation,weather_code"],
        "timezone": ["America/Lima"], "forecast_days": ["2"]}


def test_429_is_retried_with_backoff_then_succeeds(service: FakeService) -> None:
    sleeps: list[float] = []
    limit = service.json_reply({"error": True, "reason": "Minutely API request limit "
                                "exceeded. Please try again in one minute."}, status=429)
    service.replies = [limit, service.json_reply(BERLIN)]
    om = OpenMeteoClient(f"{service.url}/v1/forecast", retries=2, backoff_s=0.5,
                         sleep=sleeps.append)
    assert len(om.fetch(0, 0).hours) == 24
    assert sleeps == [0.5] and len(service.requests) == 2


def test_500_three_times_is_a_clear_error(service: FakeService) -> None:
    service.default = (500, {}, b"Internal Server Error")
    with pytest.raises(ForecastError) as info:
        client(service).fetch(0, 0)
    assert info.value.reason == "http_500"
    assert len(service.requests) == 3  # first try + 2 retries


def test_400_with_the_api_reason_is_not_retried(service: FakeService) -> None:
    service.default = service.json_reply(
        {"error": True, "reason": "Latitude must be in range of -90 to 90°. Given: 91.0."},
        status=400)
    with pytest.raises(ForecastError, match="Latitude must be in range") as info:
        client(service).fetch(91, 0)
    assert info.value.reason == "http_400" and len(service.requests) == 1


def test_malformed_json(service: FakeService) -> None:
    service.default = (200, {"Content-Type": "application/json"}, b'{"hourly": {"time": [')
    with pytest.raises(ForecastError) as info:
        client(service).fetch(0, 0)
    assert info.value.reason == "invalid_json"


def test_nulls_are_no_evidence_not_zero() -> None:
    body = copy.deepcopy(BERLIN)
    body["hourly"]["precipitation_probability"][2] = None
    body["hourly"]["precipitation"] = [None] * 24
    forecast = parse(body, fetched_at=0)
    assert forecast.hours[2].precip_prob_pct is None
    assert forecast.hours[3].precip_prob_pct == 97.0


def test_a_renamed_field_is_an_error_not_a_dry_forecast() -> None:
    body = copy.deepcopy(BERLIN)
    body["hourly"]["precipitation_probability_ecmwf_ifs025"] = \
        body["hourly"].pop("precipitation_probability")
    with pytest.raises(ForecastError, match=r"neither hourly\.precipitation_probability"):
        parse(body, fetched_at=0)


@pytest.mark.parametrize("mutate", [
    lambda b: b["hourly"]["precipitation_probability"].pop(),
    lambda b: b["hourly"].__setitem__("time", "2023-06-30T00:00"),
    lambda b: b["hourly"]["time"].__setitem__(0, "30/06/2023 00:00"),
    lambda b: b.__setitem__("utc_offset_seconds", "GMT"),
])
def test_bad_shapes_are_errors(mutate: object) -> None:
    body = copy.deepcopy(BERLIN)
    mutate(body)  # type: ignore[operator]
    with pytest.raises(ForecastError) as info:
        parse(body, fetched_at=0)
    assert info.value.reason == "bad_format"


def test_connection_refused_is_a_connection_error() -> None:
    from secadero.devservices import free_port
    om = OpenMeteoClient(f"http://127.0.0.1:{free_port()}/v1/forecast", retries=1,
                         backoff_s=0, sleep=lambda s: None)
    with pytest.raises(ForecastError) as info:
        om.fetch(0, 0)
    assert info.value.reason == "connection"


def metno_body() -> dict[str, object]:
    return {"type": "Feature",
            "geometry": {"type": "Point", "coordinates": [-76.14, -6.57, 250]},
            "properties": {"meta": {"updated_at": "2026-06-15T17:04:26Z",
                                    "units": {"precipitation_amount": "mm"}},
                           "timeseries": [
                {"time": "2026-06-15T18:00:00Z", "data": {
                    "instant": {"details": {"air_temperature": 29.1}},
                    "next_1_hours": {"summary": {"symbol_code": "rain"},
                                     "details": {"precipitation_amount": 2.4}}}},
                {"time": "2026-06-16T00:00:00Z", "data": {
                    "instant": {"details": {}},
                    "next_6_hours": {"summary": {"symbol_code": "cloudy"},
                                     "details": {"precipitation_amount": 0.0}}}}]}}


def test_met_norway_user_agent_expires_and_if_modified_since(service: FakeService) -> None:
    now = [at("12:00")]
    expires = format_datetime(datetime.fromtimestamp(at("12:30"), UTC), usegmt=True)
    modified = "Mon, 15 Jun 2026 17:04:26 GMT"
    service.replies = [service.json_reply(metno_body(), Expires=expires,
                                          **{"Last-Modified": modified}),
                       (304, {"Expires": expires}, b"")]
    met = MetNorwayClient(f"{service.url}/weatherapi/locationforecast/2.0/compact",
                          user_agent="secadero/0.1 tecnico@example.org",
                          clock=lambda: now[0], sleep=lambda s: None)
    first = met.fetch(-6.57001, -76.14)
    assert [(h.start_ts, h.end_ts, h.precip_mm) for h in first.hours] == [
        (utc("2026-06-15T18:00"), utc("2026-06-15T19:00"), 2.4),
        (utc("2026-06-16T00:00"), utc("2026-06-16T06:00"), 0.0)]
    request = service.requests[0]
    assert request.headers["user-agent"] == "secadero/0.1 tecnico@example.org"
    assert request.query == {"lat": ["-6.5700"], "lon": ["-76.1400"]}  # max 4 decimals
    now[0] = at("12:20")
    assert met.fetch(-6.57, -76.14).hours == first.hours
    assert len(service.requests) == 1  # before Expires: no request at all
    now[0] = at("12:31")
    again = met.fetch(-6.57, -76.14)
    assert len(service.requests) == 2
    assert service.requests[1].headers["if-modified-since"] == modified
    assert again.hours == first.hours and again.fetched_at == at("12:31")


def test_met_norway_refuses_a_generic_user_agent() -> None:
    with pytest.raises(ValueError, match="User-Agent"):
        MetNorwayClient("http://127.0.0.1:9/x", user_agent="python-requests/2.32")


def test_poller_keeps_the_last_good_forecast_and_says_why(service: FakeService) -> None:
    yard = YardSettings(id="norte", name="Norte", latitude=-6.57, longitude=-76.14)
    written: list[tuple[str, int]] = []
    service.replies = [service.json_reply(BERLIN)]
    service.default = (503, {}, b"The service is overloaded")
    poller = ForecastPoller([yard], {"norte": [client(service)]},
                            writer=lambda y, f: written.append((y, len(f.hours))))
    poller.poll_once()
    good = poller.status("norte")
    assert good.error is None and good.forecast is not None
    poller.poll_once()
    status = poller.status("norte")
    assert status.forecast is good.forecast
    assert status.error == "open-meteo http_503"
    assert poller.age_s("norte", 1060.0) == 60.0
    assert written == [("norte", 24)]
    assert poller.metrics.get("fetches_total", provider="open-meteo") == 2
    assert poller.metrics.by_label("fetch_failures_total", "reason") == {"http_503": 1}
    assert poller.metrics.get("points_stored_total") == 24


def test_forecast_points_for_influxdb() -> None:
    lines = forecast_lines("norte", parse(BERLIN, fetched_at=0))
    # Microseconds, as every write of the one InfluxDB output.
    assert lines[0] == f"forecast,provider=open-meteo,yard=norte precip_prob_pct=32 " \
                       f"{int(utc('2023-06-29T23:00')) * 1_000_000}"
    assert len(lines) == 24


def test_the_forecast_package_does_not_import_the_alerts() -> None:
    """The clients own their data types: a new provider needs nothing from alerts/."""
    code = ("import sys, secadero.server.forecast.openmeteo, secadero.server.forecast.metno, "
            "secadero.server.forecast.poller; "
            "print(sorted(m for m in sys.modules if m.startswith('secadero.server.alerts')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout == "[]\n"


def test_the_rules_read_the_forecast_packages_types() -> None:
    from secadero.server import forecast
    from secadero.server.alerts import rules
    from secadero.server.forecast import types

    assert (forecast.Forecast, forecast.ForecastHour, forecast.ForecastStatus) == (
        types.Forecast, types.ForecastHour, types.ForecastStatus)
    hour = forecast.ForecastHour(utc("2026-06-15T15:00"), utc("2026-06-15T16:00"), 80.0, 1.0)
    found = rules.first_rain_hour(forecast.Forecast("open-meteo", 0.0, (hour,)),
                                  utc("2026-06-15T14:30"), 120, prob_pct=60, mm_per_h=5)
    assert found is hour
