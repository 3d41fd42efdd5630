"""GET JSON with a timeout, retries with exponential backoff, and clear errors."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from secadero.server.forecast import ForecastError

log = logging.getLogger(__name__)

# Worth another try: rate limits and server trouble. A 400 (bad request) is not.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def get(session: requests.Session, url: str, *, params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None, timeout_s: float, retries: int,
        backoff_s: float, sleep: Callable[[float], None] = time.sleep,
        ok_status: frozenset[int] = frozenset({200})) -> requests.Response:
    """One GET, retried on connection errors, timeouts, 429 and 5xx; else ForecastError."""
    error: ForecastError | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff_s * 2 ** (attempt - 1)
            retry_after = _retry_after(error)
            sleep(max(delay, retry_after or 0.0))
        try:
            response = session.get(url, params=params, headers=dict(headers or {}),
                                   timeout=timeout_s)
        except requests.Timeout as exc:
            error = ForecastError("timeout", f"no answer in {timeout_s:g} s from {url}")
            error.__cause__ = exc
            continue
        except requests.RequestException as exc:
            error = ForecastError("connection", f"{type(exc).__name__} for {url}")
            error.__cause__ = exc
            continue
        if response.status_code in ok_status:
            return response
        error = ForecastError(f"http_{response.status_code}",
                              _reason(response) or response.reason or "")
        error.response = response  # type: ignore[attr-defined]
        if response.status_code not in RETRY_STATUS:
            break
        log.warning("forecast %s: %s (attempt %d)", url, error, attempt + 1)
    assert error is not None
    raise error


def _retry_after(error: ForecastError | None) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None


def _reason(response: requests.Response) -> str | None:
    # Open-Meteo answers errors as {"error": true, "reason": "..."}.
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or None
    return str(body.get("reason"))[:200] if isinstance(body, dict) else None


def json_body(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ForecastError("invalid_json", f"{exc}"[:200]) from exc
