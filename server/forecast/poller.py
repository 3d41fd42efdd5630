"""Poll the forecast providers for every yard; keep the last good one and why the last try
failed; store each forecast in InfluxDB (measurement ``forecast``).

Providers are tried in the configured order; the first that answers wins.
A failure keeps the previous forecast (the rules may still use it while it
is young enough, ``forecast_max_age_h``) and records the reason, which the
engine turns into a ``forecast_stale`` message for the technician.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import requests
from influxdb_client import Point, WritePrecision

from secadero.errors import PermanentStorageError, RetryableStorageError
from secadero.server.forecast import Forecast, ForecastError, ForecastStatus
from secadero.server.forecast.metno import MetNorwayClient
from secadero.server.forecast.openmeteo import OpenMeteoClient
from secadero.settings import ForecastSettings, InfluxSettings, YardSettings

log = logging.getLogger(__name__)


class ForecastClient(Protocol):
    name: str

    def fetch(self, latitude: float, longitude: float) -> Forecast: ...

    def close(self) -> None: ...


def make_clients(settings: ForecastSettings, yard: YardSettings) -> list[ForecastClient]:
    clients: list[ForecastClient] = []
    for provider in settings.providers:
        if provider == "open-meteo":
            clients.append(OpenMeteoClient(
                settings.open_meteo_url, timeout_s=settings.timeout_s, retries=settings.retries,
                backoff_s=settings.backoff_s, user_agent=settings.user_agent,
                timezone_name=yard.timezone))
        elif provider == "met-norway":
            clients.append(MetNorwayClient(
                settings.met_norway_url, user_agent=settings.user_agent,
                timeout_s=settings.timeout_s, retries=settings.retries,
                backoff_s=settings.backoff_s))
    return clients


def forecast_lines(yard: str, forecast: Forecast) -> list[str]:
    """Line protocol for the ``forecast`` measurement; time = start of the forecast hour."""
    lines = []
    for hour in forecast.hours:
        point = Point("forecast").tag("yard", yard).tag("provider", forecast.provider)
        if hour.precip_prob_pct is None and hour.precip_mm is None:
            continue
        if hour.precip_prob_pct is not None:
            point = point.field("precip_prob_pct", float(hour.precip_prob_pct))
        if hour.precip_mm is not None:
            point = point.field("precip_mm", float(hour.precip_mm))
        lines.append(point.time(int(hour.start_ts), WritePrecision.S).to_line_protocol())
    return lines


class InfluxForecastWriter:
    """Writes forecast points through the InfluxDB 1.x HTTP API (/write)."""

    def __init__(self, settings: InfluxSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()

    def __call__(self, yard: str, forecast: Forecast) -> None:
        lines = forecast_lines(yard, forecast)
        if not lines:
            return
        params = {"db": self.settings.database, "precision": "s"}
        if self.settings.username:
            params.update(u=self.settings.username, p=self.settings.password or "")
        response = self.session.post(f"{self.settings.url}/write", params=params,
                                     data="\n".join(lines).encode(),
                                     timeout=self.settings.timeout_s)
        if response.status_code in (200, 204):
            return
        message = f"InfluxDB /write answered {response.status_code}: {response.text[:200]}"
        # 400 (e.g. "partial write: points beyond retention policy") will never succeed;
        # 404 (database not created yet), 5xx and timeouts may.
        if response.status_code == 400:
            raise PermanentStorageError(message)
        raise RetryableStorageError(message)


class ForecastPoller:
    """Forecast status per yard; ``poll_once`` is synchronous, ``start`` runs it on a timer."""

    def __init__(self, yards: Sequence[YardSettings], clients: dict[str, list[ForecastClient]], *,
                 writer: Callable[[str, Forecast], None] | None = None,
                 interval_s: float = 900.0, store_retry_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.yards = list(yards)
        self.clients = clients
        self.writer = writer
        self.interval_s = interval_s
        self.store_retry_s = store_retry_s
        # Forecasts not yet in InfluxDB (down, or its database not created yet).
        self._unstored: dict[str, Forecast] = {}
        self._clock = clock
        self._status: dict[str, ForecastStatus] = {y.id: ForecastStatus() for y in yards}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters: dict[str, int] = {}

    def status(self, yard: str) -> ForecastStatus:
        with self._lock:
            return self._status.get(yard, ForecastStatus())

    def age_s(self, yard: str, now: float) -> float | None:
        forecast = self.status(yard).forecast
        return None if forecast is None else now - forecast.fetched_at

    def poll_once(self, yards: Iterable[YardSettings] | None = None) -> None:
        for yard in yards if yards is not None else self.yards:
            errors = []
            for client in self.clients.get(yard.id, []):
                try:
                    forecast = client.fetch(yard.latitude, yard.longitude)
                except ForecastError as exc:
                    errors.append(f"{client.name} {exc.reason}")
                    self._count(f"{client.name}_{exc.reason}")
                    log.warning("forecast for %s from %s failed: %s", yard.id, client.name, exc)
                    continue
                with self._lock:
                    self._status[yard.id] = ForecastStatus(forecast, None)
                self._count(f"{client.name}_ok")
                self._store(yard.id, forecast)
                break
            else:
                with self._lock:
                    previous = self._status.get(yard.id, ForecastStatus())
                    self._status[yard.id] = ForecastStatus(previous.forecast,
                                                           "; ".join(errors) or "no provider")

    def _store(self, yard: str, forecast: Forecast) -> None:
        if self.writer is None:
            return
        try:
            self.writer(yard, forecast)
        except PermanentStorageError as exc:
            self._unstored.pop(yard, None)
            self._count("store_rejected")
            log.warning("InfluxDB refused the forecast for %s (not retried): %s", yard, exc)
        except (RetryableStorageError, OSError, requests.RequestException) as exc:
            # Storage is for the record; alerts never wait on it. Retried soon.
            self._unstored[yard] = forecast
            self._count("store_failed")
            log.warning("storing the forecast for %s failed: %s", yard, exc)
        else:
            self._unstored.pop(yard, None)

    def store_pending(self) -> None:
        """Retry the InfluxDB writes that failed."""
        for yard, forecast in list(self._unstored.items()):
            self._store(yard, forecast)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="forecast")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("forecast poll")
            # MET Norway asks not to poll on the dot: add a few random minutes' jitter.
            next_poll = time.monotonic() + self.interval_s + random.uniform(
                0, min(120, self.interval_s / 10))
            while not self._stop.is_set() and time.monotonic() < next_poll:
                self._stop.wait(min(self.store_retry_s, max(next_poll - time.monotonic(), 0)))
                if self._unstored:
                    self.store_pending()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for clients in self.clients.values():
            for client in clients:
                client.close()
