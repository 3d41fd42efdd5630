"""The points written beside the readings: ``alert`` and ``forecast`` (DESIGN.md, "Time series").

Both are for the wall display and are written through the one InfluxDB
output (``server/influx.py``): the alert service and the forecast poller hand
their points to a ``PointWriter`` and never wait on InfluxDB. The line
protocol is built by influxdb-client's ``Point`` (escaping is its business,
not ours), with the microsecond timestamps every ``Writer`` writes.

The types here are what the lines need, as protocols, so this module depends
on neither the alerts nor the forecast clients: ``Transition`` (alerts) and
``Forecast`` (forecast) satisfy them as they are.

- ``alert``: tags ``yard``, ``kind``; fields ``state``, ``severity``,
  ``message``, ``episode``; time = the transition, to the millisecond.
- ``forecast``: tags ``yard``, ``provider``; fields ``precip_prob_pct``,
  ``precip_mm`` (whichever the provider gave); time = the start of the hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol

from influxdb_client import Point

from secadero.server.influx import PointWriter
from secadero.server.points import PRECISION

MICROSECONDS = 1_000_000


class AlertTransition(Protocol):
    """An alert episode changed state (``secadero.server.alerts.engine.Transition``)."""

    @property
    def ts(self) -> float: ...
    @property
    def yard(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def episode(self) -> int: ...


class ForecastHourValues(Protocol):
    @property
    def start_ts(self) -> float: ...
    @property
    def precip_prob_pct(self) -> float | None: ...
    @property
    def precip_mm(self) -> float | None: ...


class ProviderForecast(Protocol):
    """A provider's forecast for a yard (``secadero.server.forecast.Forecast``)."""

    @property
    def provider(self) -> str: ...
    @property
    def hours(self) -> Sequence[ForecastHourValues]: ...


def alert_line(transition: AlertTransition) -> str:
    """The ``alert`` point of one transition."""
    # To the millisecond, as the wall display has always shown it. round(), not
    # int(): 1796000000.123 * 1000 is 1796000000122.9999 in binary floating point.
    at_us = round(transition.ts * 1000) * 1000
    return (Point("alert").tag("yard", transition.yard).tag("kind", transition.kind)
            .field("state", transition.state).field("severity", transition.severity)
            .field("message", transition.message).field("episode", transition.episode)
            .time(at_us, PRECISION).to_line_protocol())


def forecast_lines(yard: str, forecast: ProviderForecast) -> list[str]:
    """The ``forecast`` points of one forecast; hours with neither value are left out."""
    lines = []
    for hour in forecast.hours:
        if hour.precip_prob_pct is None and hour.precip_mm is None:
            continue
        point = Point("forecast").tag("yard", yard).tag("provider", forecast.provider)
        if hour.precip_prob_pct is not None:
            point = point.field("precip_prob_pct", float(hour.precip_prob_pct))
        if hour.precip_mm is not None:
            point = point.field("precip_mm", float(hour.precip_mm))
        at_us = int(hour.start_ts) * MICROSECONDS
        lines.append(point.time(at_us, PRECISION).to_line_protocol())
    return lines


class AlertPoints:
    """The alert engine's ``on_transition``: queues each transition's point, never waits."""

    source = "alert"

    def __init__(self, points: PointWriter) -> None:
        self.points = points

    def __call__(self, transition: AlertTransition) -> Future[None]:
        return self.points.submit([alert_line(transition)], source=self.source)


class ForecastPoints:
    """The forecast poller's ``writer``: queues each forecast's points, never waits.

    Returns the submission's future, which the poller watches to count the
    points stored and failed.
    """

    source = "forecast"

    def __init__(self, points: PointWriter) -> None:
        self.points = points

    def __call__(self, yard: str, forecast: ProviderForecast) -> Future[None]:
        return self.points.submit(forecast_lines(yard, forecast), source=self.source)
