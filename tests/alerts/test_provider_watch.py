"""The technician hears of a failing forecast provider, even while another covers for it.

A simulated day (``alert_helpers.SimYard``) whose forecasts come from the
real poller and the real Open-Meteo and MET Norway clients, each talking to
a local HTTP server that answers in that provider's documented format:
Open-Meteo's JSON (``hourly.time`` in UNIX seconds, the hour's end) or its
429 error object, MET Norway's Locationforecast GeoJSON. The engine, the
store and the dispatcher are the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alert_helpers import (
    YARD,
    FakeService,
    Recorded,
    Reply,
    SimYard,
    at,
    service_fixture,  # noqa: F401 (fixtures, found by name)
)

from secadero.server.alerts.engine import AlertEngine
from secadero.server.alerts.rules import YardView
from secadero.server.alerts.store import Episode
from secadero.server.forecast import Forecast, ForecastStatus, ProviderStatus
from secadero.server.forecast.metno import MetNorwayClient
from secadero.server.forecast.openmeteo import OpenMeteoClient
from secadero.server.forecast.poller import ForecastPoller
from secadero.settings import AlertSettings

# Open-Meteo's answer once the free tier's daily limit is spent (HTTP 429).
RATE_LIMITED = b'{"error": true, "reason": "Daily API request limit exceeded. Please try again tomorrow."}'  # noqa: E501


def open_meteo_body(day0: float) -> dict[str, object]:
    """Two dry days, Open-Meteo style: each value stamped with the end of its hour."""
    return {"utc_offset_seconds": 0, "hourly_units": {"time": "unixtime"},
            "hourly": {"time": [day0 + (h + 1) * 3600 for h in range(48)],
                       "precipitation_probability": [5] * 48, "precipitation": [0.0] * 48}}


def met_norway_body(day0: float) -> dict[str, object]:
    """Two dry days, Locationforecast style: ``next_1_hours`` from each step's start."""
    return {"type": "Feature", "properties": {"timeseries": [
        {"time": datetime.fromtimestamp(day0 + h * 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "data": {"next_1_hours": {"details": {"probability_of_precipitation": 5.0,
                                               "precipitation_amount": 0.0}}}}
        for h in range(48)]}}


class PolledYard(SimYard):
    """A SimYard whose quarter-hourly forecast poll is the real poller's."""

    def __init__(self, tmp_path: Path, open_meteo: FakeService, met_norway: FakeService,
                 **overrides: object) -> None:
        super().__init__(tmp_path, **overrides)
        self.open_meteo, self.met_norway = open_meteo, met_norway
        self.poller = self._poller()

    def _poller(self) -> ForecastPoller:
        def clock() -> float:
            return self.now

        clients = [OpenMeteoClient(f"{self.open_meteo.url}/v1/forecast", retries=0,
                                   clock=clock, sleep=lambda s: None),
                   MetNorwayClient(
                       f"{self.met_norway.url}/weatherapi/locationforecast/2.0/compact",
                       user_agent="secadero-test/1.0 tech@example.org", retries=0,
                       clock=clock, sleep=lambda s: None)]
        return ForecastPoller([self.yard_settings], {"norte": clients}, clock=clock)

    def restart(self) -> None:
        """The server restarts: a new poller, knowing nothing, polls at once (as its
        thread does at start)."""
        super().restart()
        self.poller = self._poller()
        self._poll_forecast()

    def _poll_forecast(self) -> None:
        self.poller.poll_once()
        self.forecast_status = self.poller.status("norte")


@pytest.fixture(name="met_norway")
def met_norway_fixture() -> Iterator[FakeService]:
    fake = FakeService()
    fake.default = fake.json_reply(met_norway_body(at("00:00")))
    yield fake
    fake.close()


def open_meteo_down(service: FakeService, yard: list[SimYard], until: str,
                    since: str = "00:00") -> None:
    """Open-Meteo answers 429 from ``since`` until ``until`` (the yard's simulated clock),
    the forecast otherwise. ``yard`` holds the SimYard once it is built."""
    good = service.json_reply(open_meteo_body(at("00:00")))

    def reply(_: Recorded) -> Reply:
        if at(since) <= yard[0].now < at(until):
            return (429, {"Content-Type": "application/json"}, RATE_LIMITED)
        return good
    service.default = reply


def test_open_meteo_429_all_day_while_met_norway_answers_tells_the_technician_twice(
        tmp_path: Path, service: FakeService, met_norway: FakeService) -> None:
    holder: list[SimYard] = []
    open_meteo_down(service, holder, until="15:00")
    yard = PolledYard(tmp_path, service, met_norway)
    holder.append(yard)
    yard.run("11:00")
    # MET Norway covers: the yard's forecast is good, only Open-Meteo's own state says no.
    assert yard.forecast_status.forecast is not None
    assert yard.forecast_status.forecast.provider == "met-norway"
    assert yard.forecast_status.error is None
    assert yard.forecast_status.providers == (
        ProviderStatus("open-meteo", at("06:00"), "http_429"),
        ProviderStatus("met-norway", last_ok_at=at("11:00")))
    yard.run("17:00")

    assert yard.sent == [("07:00", "Tito", "twilio", "provider_failing", "raise"),
                         ("15:00", "Tito", "twilio", "provider_back", "recovered")]
    assert yard.bodies == [
        "Técnico: el proveedor de pronostico open-meteo falla para Norte desde las 06:00 "
        "(http_429). Revisar la cuota o la URL.",
        "Técnico: el proveedor de pronostico open-meteo responde de nuevo para Norte."]
    # The technician's episode is never the yard's alert: the beacons stay dark.
    assert yard.transitions == [("07:00", "provider_failing", "raised", "warning"),
                                ("15:00", "provider_failing", "resolved", "warning")]
    assert yard.alerts.current_alert("norte").state == "clear"
    # MET Norway is not asked while Open-Meteo answers: its state is its last answer's.
    assert yard.forecast_status.providers == (
        ProviderStatus("open-meteo", last_ok_at=at("17:00")),
        ProviderStatus("met-norway", last_ok_at=at("14:45")))
    assert yard.forecast_status.forecast.provider == "open-meteo"


def test_a_restart_during_the_failure_neither_forgets_nor_repeats_it(
        tmp_path: Path, service: FakeService, met_norway: FakeService) -> None:
    holder: list[SimYard] = []
    open_meteo_down(service, holder, until="13:00")
    yard = PolledYard(tmp_path, service, met_norway)
    holder.append(yard)
    yard.run("09:00")
    yard.restart()
    yard.run("14:00")
    assert yard.sent == [("07:00", "Tito", "twilio", "provider_failing", "raise"),
                         ("13:00", "Tito", "twilio", "provider_back", "recovered")]
    assert yard.transitions == [("07:00", "provider_failing", "raised", "warning"),
                                ("13:00", "provider_failing", "resolved", "warning")]


def test_a_failure_shorter_than_the_threshold_tells_nobody(
        tmp_path: Path, service: FakeService, met_norway: FakeService) -> None:
    holder: list[SimYard] = []
    open_meteo_down(service, holder, since="08:00", until="08:45")  # 45 min: three polls
    yard = PolledYard(tmp_path, service, met_norway)
    holder.append(yard)
    yard.run("12:00")
    assert yard.sent == []
    assert yard.transitions == []


def test_a_provider_failing_at_night_is_told_at_the_start_of_the_drying_hours(
        tmp_path: Path, service: FakeService, met_norway: FakeService) -> None:
    holder: list[SimYard] = []
    open_meteo_down(service, holder, until="09:30")
    yard = PolledYard(tmp_path, service, met_norway, drying_start="08:00")
    holder.append(yard)
    yard.run("10:00")
    assert yard.sent == [("08:00", "Tito", "twilio", "provider_failing", "raise"),
                         ("09:30", "Tito", "twilio", "provider_back", "recovered")]
    assert yard.transitions == [("07:00", "provider_failing", "raised", "warning"),
                                ("09:30", "provider_failing", "resolved", "warning")]


def test_the_poller_keeps_each_providers_own_state(service: FakeService,
                                                   met_norway: FakeService) -> None:
    now = [at("06:00")]
    service.default = (429, {"Content-Type": "application/json"}, RATE_LIMITED)
    clients = [OpenMeteoClient(f"{service.url}/v1/forecast", retries=0, clock=lambda: now[0],
                               sleep=lambda s: None),
               MetNorwayClient(f"{met_norway.url}/compact", user_agent="secadero-test/1.0",
                               retries=0, clock=lambda: now[0], sleep=lambda s: None)]
    poller = ForecastPoller([YARD], {"norte": clients}, clock=lambda: now[0])
    poller.poll_once()
    now[0] = at("07:00")
    poller.poll_once()
    status = poller.status("norte")
    # The run of failures started at the first one; MET Norway answered both times.
    assert status.providers == (ProviderStatus("open-meteo", at("06:00"), "http_429"),
                                ProviderStatus("met-norway", last_ok_at=at("07:00")))
    assert status.forecast is not None and status.forecast.provider == "met-norway"
    assert poller.metrics.get("fetch_failures_total", provider="open-meteo",
                              reason="http_429") == 2
    met_norway.default = (503, {}, b"overloaded")
    now[0] = at("08:00")
    poller.poll_once()
    status = poller.status("norte")
    assert status.providers == (ProviderStatus("open-meteo", at("06:00"), "http_429"),
                                ProviderStatus("met-norway", at("08:00"), "http_503",
                                               last_ok_at=at("07:00")))
    assert status.error == "open-meteo http_429; met-norway http_503"
    assert ForecastStatus().providers == ()


def test_a_provider_nobody_asked_since_a_restart_keeps_its_episode() -> None:
    """After a restart Open-Meteo answers at once, so MET Norway is not asked: nothing is
    known of it, and its open episode is neither resolved nor announced as back."""
    engine = AlertEngine(AlertSettings(), [YARD], started_at=at("09:00"))
    episode = Episode(yard="norte", kind="provider_failing", key="met-norway",
                      cause="provider_failing", severity="warning", raised_at=at("07:00"),
                      notify_count=1, details={"failing_since": at("06:00"),
                                               "error": "http_503"}, id=7)
    forecast = Forecast("open-meteo", at("09:00"), ())
    view = YardView(yard="norte", name="Norte", timezone="America/Lima", nodes=())
    status = ForecastStatus(forecast, None, (
        ProviderStatus("open-meteo", last_ok_at=at("09:00")), ProviderStatus("met-norway")))
    decision = engine.decide(view, status, {("provider_failing", "met-norway"): episode},
                             at("09:00"))
    assert decision.empty
    answered = ForecastStatus(forecast, None, (
        ProviderStatus("open-meteo", last_ok_at=at("09:00")),
        ProviderStatus("met-norway", last_ok_at=at("09:15"))))
    decision = engine.decide(view, answered, {("provider_failing", "met-norway"): episode},
                             at("09:15"))
    assert [(e.kind, e.key, e.state) for e in decision.episodes] == [
        ("provider_failing", "met-norway", "resolved")]
    assert [(n.recipient, n.kind, n.event) for n in decision.notifications] == [
        ("Tito", "provider_back", "recovered")]
