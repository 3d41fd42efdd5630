"""Weather forecasts over HTTP: Open-Meteo and MET Norway, turned into ``ForecastHour``s.

Clients fetch and parse (``openmeteo``, ``metno``); ``poller`` runs them per
yard on a schedule, keeps the last good forecast and its age, and stores
each one in InfluxDB's ``forecast`` measurement. The data types
(``Forecast``, ``ForecastHour``, ``ForecastStatus``, in ``types``) belong here,
not to the alerts that read them: this package imports nothing from
``secadero.server.alerts``.
"""

from __future__ import annotations

from secadero.errors import SecaderoError
from secadero.server.forecast.types import Forecast, ForecastHour, ForecastStatus, ProviderStatus

__all__ = ["Forecast", "ForecastError", "ForecastHour", "ForecastStatus", "ProviderStatus"]


class ForecastError(SecaderoError):
    """A forecast could not be had. ``reason`` is a short code for counters and the
    technician's message (``http_429``, ``http_500``, ``timeout``, ``connection``,
    ``invalid_json``, ``bad_format``, ``api_error``)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}")
