"""MET Norway Locationforecast 2.0 (https://api.met.no/doc/): the second provider.

Terms of service we follow (metno/weatherapi-docs, HowTO and TermsOfService):
- an identifying User-Agent with a contact, or the answer is 403;
- no request before the ``Expires`` time of the last answer; after it,
  ``If-Modified-Since`` with the stored ``Last-Modified``; 304 = keep ours;
- coordinates with at most 4 decimals (5+ gives 403);
- 203 means a deprecated product version: log a warning.
Times are UTC ``Z``; ``next_1_hours`` looks *forward* from ``time`` (unlike
Open-Meteo); where steps become 6-hourly only ``next_6_hours`` exists.
``probability_of_precipitation`` is only in ``complete`` and not everywhere;
``compact`` gives the amount only, which the rules also use.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from secadero.server.forecast import Forecast, ForecastError, ForecastHour
from secadero.server.forecast import http as forecast_http

log = logging.getLogger(__name__)

PROVIDER = "met-norway"


def parse(body: Any, *, fetched_at: float) -> Forecast:
    """A Locationforecast GeoJSON response -> Forecast. Raises ForecastError."""
    try:
        series = body["properties"]["timeseries"]
    except (TypeError, KeyError) as exc:
        raise ForecastError("bad_format", "no properties.timeseries") from exc
    if not isinstance(series, list):
        raise ForecastError("bad_format", "properties.timeseries is not a list")
    hours = []
    for step in series:
        try:
            start = datetime.fromisoformat(str(step["time"]).replace("Z", "+00:00")).timestamp()
            data = step["data"]
        except (TypeError, KeyError, ValueError, OverflowError) as exc:
            raise ForecastError("bad_format", f"bad timeseries entry: {str(step)[:80]}") from exc
        for period, length_h in (("next_1_hours", 1), ("next_6_hours", 6)):
            block = data.get(period) if isinstance(data, dict) else None
            if isinstance(block, dict):
                details = block.get("details") or {}
                if not isinstance(details, dict):
                    raise ForecastError("bad_format", f"{period}.details is not an object")
                hours.append(ForecastHour(
                    start_ts=start, end_ts=start + length_h * 3600,
                    precip_prob_pct=_number(details.get("probability_of_precipitation")),
                    precip_mm=_number(details.get("precipitation_amount"))))
                break
    return Forecast(provider=PROVIDER, fetched_at=fetched_at, hours=tuple(hours))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 <= value < math.inf:
        return None  # also NaN, which no comparison lets through
    return float(value)


@dataclass
class _Cached:
    forecast: Forecast
    expires_ts: float
    last_modified: str | None


class MetNorwayClient:
    """Fetches and caches one place's forecast the way api.met.no asks."""

    name = PROVIDER

    def __init__(self, base_url: str, *, user_agent: str,
                 session: requests.Session | None = None, timeout_s: float = 10.0,
                 retries: int = 2, backoff_s: float = 2.0,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not user_agent or user_agent.split("/")[0].lower() in ("python-requests", "curl",
                                                                   "wget"):
            raise ValueError("MET Norway needs an identifying User-Agent with a contact")
        self.base_url = base_url
        self.user_agent = user_agent
        self.session = session or requests.Session()
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._clock, self._sleep = clock, sleep
        self._cache: dict[tuple[str, str], _Cached] = {}
        self.requests_made = 0

    def fetch(self, latitude: float, longitude: float) -> Forecast:
        key = (f"{latitude:.4f}", f"{longitude:.4f}")
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now < cached.expires_ts:
            return cached.forecast  # the terms: no new request before Expires
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if cached is not None and cached.last_modified:
            headers["If-Modified-Since"] = cached.last_modified
        self.requests_made += 1
        response = forecast_http.get(
            self.session, self.base_url, params={"lat": key[0], "lon": key[1]},
            headers=headers, timeout_s=self.timeout_s, retries=self.retries,
            backoff_s=self.backoff_s, sleep=self._sleep,
            ok_status=frozenset({200, 203, 304}))
        if response.status_code == 203:
            log.warning("MET Norway: 203, this product version is deprecated or beta")
        expires = _http_date(response.headers.get("Expires")) or now + 1800
        if response.status_code == 304:
            if cached is None:
                raise ForecastError("bad_format", "304 Not Modified without a cached forecast")
            cached.expires_ts = expires
            cached.forecast = Forecast(PROVIDER, now, cached.forecast.hours)
            return cached.forecast
        forecast = parse(forecast_http.json_body(response), fetched_at=now)
        self._cache[key] = _Cached(forecast, expires, response.headers.get("Last-Modified"))
        return forecast

    def close(self) -> None:
        self.session.close()


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
