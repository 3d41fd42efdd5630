"""Open-Meteo forecast API (https://open-meteo.com/en/docs): hourly rain probability.

Facts that shape this code (docs/alerts.md has the rest):
- ``precipitation_probability`` and ``precipitation`` describe the
  *preceding* hour: the value stamped 15:00 covers 14:00-15:00, so each value
  becomes the interval [stamp - 1 h, stamp). Lead times start there.
- With ``timezone=America/Lima`` times are local ``YYYY-MM-DDTHH:MM`` without
  an offset; ``utc_offset_seconds`` turns them into UTC (Lima has no DST).
  With ``timeformat=unixtime`` they are UTC seconds; both are accepted.
- Non-finite values come as ``null``; errors as HTTP 400
  ``{"error": true, "reason": ...}``; rate limits as 429.
- The free tier is for non-commercial use; ``base_url`` points at a
  self-hosted server (or the paid ``customer-`` host) instead.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from secadero.server.forecast import Forecast, ForecastError, ForecastHour
from secadero.server.forecast import http as forecast_http

log = logging.getLogger(__name__)

PROVIDER = "open-meteo"
HOURLY = ("precipitation_probability", "precipitation", "weather_code")
# Year 9999: a later "UNIX time" is not one (and makes no date).
MAX_UNIX_S = 253_402_300_799


def parse(body: Any, *, fetched_at: float) -> Forecast:
    """An Open-Meteo JSON response -> Forecast. Raises ForecastError on a bad shape."""
    if not isinstance(body, dict):
        raise ForecastError("bad_format", f"expected a JSON object, got {type(body).__name__}")
    if body.get("error"):
        raise ForecastError("api_error", str(body.get("reason"))[:200])
    hourly = body.get("hourly")
    if not isinstance(hourly, dict) or not isinstance(hourly.get("time"), list):
        raise ForecastError("bad_format", "no hourly.time array")
    times = hourly["time"]
    series: dict[str, list[Any]] = {}
    for name in HOURLY:
        values = hourly.get(name)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != len(times):
            raise ForecastError("bad_format", f"hourly.{name} does not match hourly.time")
        series[name] = values
    if "precipitation_probability" not in series and "precipitation" not in series:
        # A renamed field (a model suffix, an API change) must not read as "dry".
        raise ForecastError("bad_format", "neither hourly.precipitation_probability nor "
                            f"hourly.precipitation; got {sorted(hourly)[:8]}")
    units = body.get("hourly_units") or {}
    if not isinstance(units, dict):
        raise ForecastError("bad_format", "hourly_units is not an object")
    unit = units.get("time", "iso8601")
    offset_s = body.get("utc_offset_seconds", 0)
    # A real offset is within a day (UTC-12 .. UTC+14); anything else is not an offset.
    if isinstance(offset_s, bool) or not isinstance(offset_s, int | float) \
            or not -86400 <= offset_s <= 86400:
        raise ForecastError("bad_format", "utc_offset_seconds is not an offset in seconds")
    hours = []
    for index, stamp in enumerate(times):
        end_ts = _utc(stamp, unit, offset_s)
        hours.append(ForecastHour(
            start_ts=end_ts - 3600, end_ts=end_ts,
            precip_prob_pct=_number(series, "precipitation_probability", index, 0, 100),
            precip_mm=_number(series, "precipitation", index, 0, 1000),
            weather_code=_code(series, index)))
    return Forecast(provider=PROVIDER, fetched_at=fetched_at, hours=tuple(hours))


def _utc(stamp: Any, unit: str, offset_s: float) -> float:
    if unit == "unixtime":
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) \
                or not 0 <= stamp <= MAX_UNIX_S:
            raise ForecastError("bad_format", f"time {stamp!r} is not UNIX seconds")
        return float(stamp)
    if not isinstance(stamp, str):
        raise ForecastError("bad_format", f"time {stamp!r} is not a string")
    try:
        local = datetime.strptime(stamp, "%Y-%m-%dT%H:%M")
    except ValueError as exc:
        raise ForecastError("bad_format", f"time {stamp[:40]!r} is not YYYY-MM-DDTHH:MM") from exc
    try:
        return (local - timedelta(seconds=offset_s)).replace(tzinfo=UTC).timestamp()
    except OverflowError as exc:  # year 1 minus an offset: no date at all
        raise ForecastError("bad_format", f"time {stamp[:40]!r} is out of range") from exc


def _number(series: dict[str, list[Any]], name: str, index: int, lo: float,
            hi: float) -> float | None:
    values = series.get(name)
    if values is None:
        return None
    value = values[index]
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not lo <= value <= hi:
        return None
    return float(value)


def _code(series: dict[str, list[Any]], index: int) -> int | None:
    values = series.get("weather_code")
    value = values[index] if values is not None else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


class OpenMeteoClient:
    """Fetches the next two days of hourly rain for one place."""

    name = PROVIDER

    def __init__(self, base_url: str, *, session: requests.Session | None = None,
                 timeout_s: float = 10.0, retries: int = 2, backoff_s: float = 2.0,
                 user_agent: str = "secadero", timezone_name: str = "America/Lima",
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url
        self.session = session or requests.Session()
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.user_agent = user_agent
        self.timezone_name = timezone_name
        self._clock, self._sleep = clock, sleep

    def fetch(self, latitude: float, longitude: float) -> Forecast:
        params = {
            "latitude": f"{latitude:.4f}", "longitude": f"{longitude:.4f}",
            "hourly": ",".join(HOURLY), "timezone": self.timezone_name, "forecast_days": 2,
        }
        response = forecast_http.get(
            self.session, self.base_url, params=params,
            headers={"User-Agent": self.user_agent, "Accept": "application/json"},
            timeout_s=self.timeout_s, retries=self.retries, backoff_s=self.backoff_s,
            sleep=self._sleep)
        return parse(forecast_http.json_body(response), fetched_at=self._clock())

    def close(self) -> None:
        self.session.close()
