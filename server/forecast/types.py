"""What a forecast is, as the clients deliver it and the alert rules read it.

These types belong to the forecast side: the clients (``openmeteo``,
``metno``) build them, the poller keeps them, and the alert rules and engine
only read them. Nothing here imports the alerts, so a new provider is written
against this module alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ForecastHour:
    """One forecast interval: [start_ts, end_ts) in UTC, and what is expected in it.

    Open-Meteo stamps a value with the *end* of the hour it describes
    ("preceding hour"); MET Norway with the start ("next_1_hours"). The
    clients convert both to this explicit interval.
    """

    start_ts: float
    end_ts: float
    precip_prob_pct: float | None = None
    precip_mm: float | None = None
    weather_code: int | None = None


@dataclass(frozen=True, slots=True)
class Forecast:
    """The last good forecast for a yard: who gave it, when we fetched it, its hours."""

    provider: str
    fetched_at: float
    hours: tuple[ForecastHour, ...]


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One provider's own state for one yard, whether or not another covers for it.

    ``failing_since``: when its current run of failures began (None: its last
    try answered, or it was never tried); ``error``: its last failure's reason;
    ``last_ok_at``: when it last answered (None: not since the poller started).
    """

    provider: str
    failing_since: float | None = None
    error: str | None = None
    last_ok_at: float | None = None


@dataclass(frozen=True, slots=True)
class ForecastStatus:
    """The last good forecast for a yard and, if the last try failed, why.

    ``providers``: each configured provider's own state, in the configured
    order (a provider the poller did not need to try keeps its last state).
    """

    forecast: Forecast | None = None
    error: str | None = None
    providers: tuple[ProviderStatus, ...] = ()
