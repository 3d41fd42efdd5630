"""Poll the forecast providers for every yard; keep the last good one and why the last try
failed; store each forecast in InfluxDB (measurement ``forecast``).

Providers are tried in the configured order; the first that answers wins.
A failure keeps the previous forecast (the rules may still use it while it
is young enough, ``forecast_max_age_h``) and records the reason, which the
engine turns into a ``forecast_stale`` message for the technician.

Each provider's own state is kept too (``ForecastStatus.providers``): when
it began failing and why. A provider answering 429 all day while the next
one covers for it leaves the yard with a good forecast, and only that state
says so; the engine turns it into ``provider_failing`` for the technician.

Storing is handed to the one InfluxDB output: the ``writer`` is usually
``ForecastPoints`` (server/influx_points.py), which queues the points on the
server's ``PointWriter`` and returns a future; that writer does the retrying,
the poller only counts what was stored and what failed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Protocol

from secadero.errors import PermanentStorageError, StorageError
from secadero.server.forecast import Forecast, ForecastError, ForecastStatus, ProviderStatus
from secadero.server.forecast.metno import MetNorwayClient
from secadero.server.forecast.openmeteo import OpenMeteoClient
from secadero.server.metrics import Health, Help, Registry
from secadero.settings import ForecastSettings, YardSettings

log = logging.getLogger(__name__)

FORECAST_METRICS: Help = {
    "fetches_total": ("counter", "Forecast requests, per provider (each provider tried for a "
                                 "yard counts once, its own retries included)."),
    "fetch_failures_total": ("counter", "Forecast requests that gave no forecast, per provider "
                                        "and reason (timeout, http_503, invalid ...)."),
    "age_seconds": ("gauge", "Age of the last good forecast, per yard (absent until the first)."),
    "points_stored_total": ("counter", "Forecast points InfluxDB stored."),
    "points_failed_total": ("counter", "Forecast points not stored, per reason: refused "
                                       "(by InfluxDB, for good), dropped (queue full or "
                                       "stopping), error (a bug, see the log)."),
}

# What the poller hands each good forecast to: returns None once stored, or a
# future that says later (ForecastPoints); raises StorageError if it could not.
ForecastWriter = Callable[[str, Forecast], Future[None] | None]


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


class ForecastPoller:
    """Forecast status per yard; ``poll_once`` is synchronous, ``start`` runs it on a timer."""

    def __init__(self, yards: Sequence[YardSettings], clients: dict[str, list[ForecastClient]], *,
                 writer: ForecastWriter | None = None, interval_s: float = 900.0,
                 clock: Callable[[], float] = time.time, registry: Registry | None = None,
                 health: Health | None = None) -> None:
        self.yards = list(yards)
        self.clients = clients
        self.writer = writer
        self.interval_s = interval_s
        self._clock = clock
        self._status: dict[str, ForecastStatus] = {y.id: ForecastStatus() for y in yards}
        # (yard, provider) -> that provider's own state; written by poll_once only.
        self._providers: dict[tuple[str, str], ProviderStatus] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.metrics = (registry or Registry()).part("forecast", FORECAST_METRICS)
        self.metrics.labelled_gauges["age_seconds"] = ("yard", self._ages_s)
        self.health = health or Health()

    def status(self, yard: str) -> ForecastStatus:
        with self._lock:
            return self._status.get(yard, ForecastStatus())

    def age_s(self, yard: str, now: float) -> float | None:
        forecast = self.status(yard).forecast
        return None if forecast is None else now - forecast.fetched_at

    def _ages_s(self) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            return {yard: now - status.forecast.fetched_at
                    for yard, status in self._status.items() if status.forecast is not None}

    def poll_once(self, yards: Iterable[YardSettings] | None = None) -> None:
        for yard in yards if yards is not None else self.yards:
            errors = []
            forecast: Forecast | None = None
            for client in self.clients.get(yard.id, []):
                self.metrics.inc("fetches_total", provider=client.name)
                try:
                    forecast = client.fetch(yard.latitude, yard.longitude)
                except ForecastError as exc:
                    errors.append(f"{client.name} {exc.reason}")
                    self.metrics.inc("fetch_failures_total", provider=client.name,
                                     reason=exc.reason)
                    log.warning("forecast for %s from %s failed: %s", yard.id, client.name, exc)
                    self._provider_failed(yard.id, client.name, exc.reason)
                    continue
                self._providers[yard.id, client.name] = ProviderStatus(
                    client.name, last_ok_at=self._clock())
                break
            providers = tuple(self._providers.get((yard.id, client.name),
                                                  ProviderStatus(client.name))
                              for client in self.clients.get(yard.id, []))
            with self._lock:
                if forecast is not None:
                    self._status[yard.id] = ForecastStatus(forecast, None, providers)
                else:
                    previous = self._status.get(yard.id, ForecastStatus())
                    self._status[yard.id] = ForecastStatus(
                        previous.forecast, "; ".join(errors) or "no provider", providers)
            if forecast is not None:
                self._store(yard.id, forecast)

    def _provider_failed(self, yard: str, provider: str, reason: str) -> None:
        """Start (or continue) the provider's run of failures: its start is what counts."""
        previous = self._providers.get((yard, provider), ProviderStatus(provider))
        since = (previous.failing_since if previous.failing_since is not None
                 else self._clock())
        self._providers[yard, provider] = ProviderStatus(provider, since, reason,
                                                         previous.last_ok_at)

    def _store(self, yard: str, forecast: Forecast) -> None:
        """Hand the forecast to the writer; storage is for the record, alerts never wait on it."""
        if self.writer is None:
            return
        # As many points as forecast_lines writes: the hours with a value.
        points = sum(1 for hour in forecast.hours
                     if hour.precip_prob_pct is not None or hour.precip_mm is not None)
        try:
            pending = self.writer(yard, forecast)
        except StorageError as exc:
            self._stored(yard, points, exc)
            return
        if pending is None:
            self._stored(yard, points, None)
        else:
            pending.add_done_callback(lambda done: self._stored(yard, points, done.exception()))

    def _stored(self, yard: str, points: int, error: BaseException | None) -> None:
        """Count one forecast's points (on the point writer's thread when it answers later)."""
        if error is None:
            self.metrics.inc("points_stored_total", points)
            return
        if isinstance(error, PermanentStorageError):
            reason = "refused"
        elif isinstance(error, StorageError):
            reason = "dropped"
        else:
            reason = "error"
        self.metrics.inc("points_failed_total", points, reason=reason)
        log.warning("the forecast for %s was not stored (%s): %s", yard, reason, error)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="forecast")
        self._thread.start()
        self.health.watch_thread("forecast polling", self._thread)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the top of the polling thread: log, poll again next time
                log.exception("forecast poll")
            # MET Norway asks not to poll on the dot: add a few random minutes' jitter.
            self._stop.wait(self.interval_s + random.uniform(0, min(120, self.interval_s / 10)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for clients in self.clients.values():
            for client in clients:
                client.close()
