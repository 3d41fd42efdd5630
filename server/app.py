"""The server assembled: every part built from the settings, started and stopped in order.

This is the composition root: the one place that knows which parts exist and
how they meet. Each part owns its state and its threads and is handed what it
needs through small interfaces; nothing else in ``server/`` builds another
part. ``secadero server run`` is ``Server(settings)``; ``secadero server
ingest`` (an extra process of a share group) is ``Server(settings,
alerts=False)``. docs/architecture.md draws the same picture for people.

Parts and what they are handed::

    Registry, Health ─────────────── every part (its metrics, its threads, its checks)
    PointWriter (influx.py) ──────── the one InfluxDB output for points other than readings
    Ingest (ingest/) ─────────────── the readings' own InfluxDB writer; observers; publish
    AlertService (alerts/service.py)
        ├─ ForecastPoller (forecast/) ── writes through ForecastPoints(PointWriter)
        ├─ Dispatcher (notifiers/) ───── the notifiers the registry builds; the alert store
        │                                as its notification log
        ├─ ModemMonitor (notifiers/gammu_monitor.py) ── only with [notifiers.gammu]:
        │                                why the modem cannot send (modem_failing)
        ├─ points ────────────────────── AlertPoints(PointWriter): the wall display
        └─ publish ───────────────────── Ingest.publish: the yard's retained alert topic
    ForecastSkillReporter (alerts/skill_report.py) ── the alert store; the PointWriter
    AlertFeed (alerts/feed.py) ───── only in a share group: the alerts' own subscription
    BatchService (batches/) ──────── the batch store (SQLite), the PointWriter for the
                                     batch points, InfluxDB for the trays and series
    ApiServer (api.py) ───────────── the AlertService; the BatchService
    MetricsServer (metrics.py) ───── /metrics from the Registry, /healthz from Health

Threads of one ``secadero server run`` process (``name``: what it owns; how
it hands work over):

=====================  ============================================  =======================
thread                 owns                                          hands over
=====================  ============================================  =======================
``ingest-mqtt``        the ingest's broker connection; decoding,     items to the writer's
(paho's loop, ours)    validation, line building (receive stage);    queue; each message to
                       who was heard when (liveness)                 the alert observer
``ingest-writer``      batches, retries and every write-failure      PUBACKs and node acks
                       policy; sequence tracking, node acks, share-  through paho; the state
                       group announcements, the state file           file (fsync)
``ingest-downsample``  hours of late readings to downsample again    InfluxQL to InfluxDB
``alerts``             the evaluation cycle: decide, commit (SQLite  notifications to the
                       store), swap, act; the open episodes          dispatcher's queues;
                                                                     points; publish
``alert-feed-mqtt``    the alerts' own broker connection             each message to the
(share group only)                                                   alert observer
``forecast``           the last good forecast per yard; each         status read by the
                       provider's own state                          alerts under a lock
``forecast-skill``     when each yard's forecast_skill point is due  points
``influx-points``      the queue of alert, forecast, batch points    InfluxDB /write
``notify-<channel>``   one channel's deliveries (sms, push,          the notification log
                       webhook), retries, fallback                   (SQLite)
``modem-monitor``      the GSM modem's last state (gammu-smsd-       problem() read by the
(with Gammu only)      monitor every monitor_interval_s)             alerts under a lock
``alerts-api``         the HTTP API's requests (a thread each)       acknowledgements to the
                                                                     AlertService; batch
                                                                     operations to the
                                                                     BatchService (SQLite)
``batch-series_0``     one of a batch's two InfluxDB queries, run    its rows to the
(on demand)            beside the other (``SeriesReader``)           caller
``metrics-http``       nothing: reads counters and health on         /metrics, /healthz
                       request
=====================  ============================================  =======================

The observer is the one call across threads on the hot path: it runs on
``ingest-mqtt`` (or ``alert-feed-mqtt``), only updates the yard's view under the
tracker's lock and wakes ``alerts``; the alerts never wait on InfluxDB.

Order: the health endpoint first (it answers while the rest starts); the
point writer; the ingest (connects, prepares the database); the alerts
(dispatcher, resending what was decided before a restart, forecasts, the
evaluation thread) once the ingest is ready or after ``READY_WAIT_S`` (the
alerts never depend on the database); the feed; the API. Stopping goes the
other way round, after telling ``Health`` that threads ending now are not a
fault: the API and the feed stop taking input, the alerts stop deciding, the
ingest stores and acknowledges what it holds, the point writer writes what
is queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from secadero.server.alerts.feed import AlertFeed, alert_feed_for
from secadero.server.alerts.service import AlertService
from secadero.server.alerts.skill_report import ForecastSkillReporter
from secadero.server.api import ApiServer
from secadero.server.batches.service import BatchService
from secadero.server.batches.warnings import open_batches_from
from secadero.server.forecast.poller import ForecastPoller, make_clients
from secadero.server.influx import PointWriter
from secadero.server.influx_points import AlertPoints, ForecastPoints
from secadero.server.ingest import Ingest
from secadero.server.ingest.link import ClientFactory
from secadero.server.metrics import Health, MetricsServer, Registry
from secadero.server.mqtt_client import fast_read_client
from secadero.server.notifiers import Notifier, build_notifiers
from secadero.server.notifiers.gammu_monitor import ModemMonitor
from secadero.settings import ServerSettings

log = logging.getLogger(__name__)

# How long the alerts wait for the broker and the database before starting anyway.
READY_WAIT_S = 10.0


class Server:
    """One server process: its parts, built from ``settings``, started and stopped in order.

    ``alerts=False`` builds the ingest alone (``secadero server ingest``).
    ``notifiers`` replaces the ones the settings name (a test's own);
    ``client_factory`` builds the ingest's MQTT client (a test's instrumented
    one); ``clock`` is the alerts' wall clock. After ``start()``, ``http_port`` and
    ``api_port`` say where the endpoints listen (port 0 in the settings picks
    a free one).
    """

    def __init__(self, settings: ServerSettings, *, alerts: bool = True,
                 notifiers: Sequence[Notifier] | None = None,
                 client_factory: ClientFactory = fast_read_client,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.registry = Registry()
        self.health = Health()
        self.points = PointWriter.from_settings(settings.influxdb, registry=self.registry,
                                                health=self.health)
        self.ingest = Ingest(settings, client_factory=client_factory, serve_metrics=False,
                             registry=self.registry, health=self.health)
        self.alerts: AlertService | None = None
        self.feed: AlertFeed | None = None
        self.skill: ForecastSkillReporter | None = None
        self.api: ApiServer | None = None
        self.batches: BatchService | None = None
        # The GSM modem's watcher, only where SMS go through Gammu SMSD.
        self.modem: ModemMonitor | None = None
        if alerts and settings.notifiers.gammu is not None:
            self.modem = ModemMonitor(settings.notifiers.gammu, registry=self.registry,
                                      health=self.health)
        if alerts:
            # The batch records: the API's (no thread of their own); the alerts read the
            # open batches for the quality warnings.
            self.batches = BatchService.from_settings(settings, points=self.points,
                                                      registry=self.registry,
                                                      health=self.health, clock=clock)
            self.alerts = self._build_alerts(notifiers, clock)
            # In a share group the ingest sees only its share: the alerts get their
            # own feed of every message, and the ingest does not observe (none twice).
            self.feed = alert_feed_for(settings, self.alerts.observe, registry=self.registry,
                                       health=self.health)
            if self.feed is None:
                self.ingest.add_observer(self.alerts.observe)
            self.api = self._build_api(self.alerts, self.batches)
        self.http = MetricsServer(self.registry, self.health, host=settings.ingest.http_host,
                                  port=settings.ingest.http_port)
        self._started = False

    def _build_alerts(self, notifiers: Sequence[Notifier] | None,
                      clock: Callable[[], float]) -> AlertService:
        s = self.settings
        clients = {yard.id: make_clients(s.forecast, yard) for yard in s.yards}
        poller = ForecastPoller(s.yards, clients, writer=ForecastPoints(self.points),
                                interval_s=s.forecast.poll_interval_s, registry=self.registry,
                                health=self.health)
        # The quality warnings read the open batches from the batch records.
        open_batches = (open_batches_from(self.batches.store) if self.batches is not None
                        else None)
        service = AlertService(
            s, notifiers=build_notifiers(s.notifiers) if notifiers is None else notifiers,
            poller=poller, publish=self.ingest.publish, clock=clock, registry=self.registry,
            health=self.health, open_batches=open_batches,
            modem_error=self.modem.problem if self.modem is not None else lambda: None)
        service.points = AlertPoints(self.points)
        # The forecast's skill per yard, for the dashboards (its own thread, same store).
        self.skill = ForecastSkillReporter(service.store, self.points,
                                           [y.id for y in s.yards], clock=clock,
                                           registry=self.registry, health=self.health)
        return service

    def _build_api(self, service: AlertService, batches: BatchService) -> ApiServer | None:
        s = self.settings.alerts
        try:
            return ApiServer(service, host=s.api_host, port=s.api_port, registry=self.registry,
                             health=self.health, batches=batches)
        except OSError as exc:
            # Alerts matter more than their API: run without it, say so loudly.
            log.error("alert API cannot listen on %s:%d (%s); alerts run without it",
                      s.api_host, s.api_port, exc)
            return None

    # ------------------------------------------------------------ life

    def start(self) -> Server:
        self.http.start()
        self.health.watch_thread("metrics and health endpoint", self.http.thread)
        self.points.start()
        self.ingest.start()
        self._started = True
        if self.alerts is not None:
            # The forecast poller stores into the database the ingest creates; but the
            # alerts must not wait long for InfluxDB (they never depend on it).
            if not self.ingest.wait_ready(READY_WAIT_S):
                log.warning("alerts start before the ingest is ready (broker or InfluxDB down)")
            if self.modem is not None:
                self.modem.start()
            self.alerts.start()
            if self.skill is not None:
                self.skill.start()
            if self.feed is not None:
                self.feed.start()
            if self.api is not None:
                self.api.start()
                log.info("alerts: %d yards, API on http://%s:%d", len(self.settings.yards),
                         self.settings.alerts.api_host, self.api.port)
        log.info("server started: /metrics and /healthz on http://%s:%d",
                 self.settings.ingest.http_host, self.http.port)
        return self

    def stop(self) -> None:
        """Stop in reverse order; what is queued is stored and acknowledged first."""
        self.health.stopping()
        if self.api is not None:
            self.api.stop()
        if self.feed is not None:
            self.feed.stop()
        if self.skill is not None:
            self.skill.stop()  # before the alerts, which close the store it reads
        if self.alerts is not None:
            self.alerts.stop()
        if self.modem is not None:
            self.modem.stop()
        if self.batches is not None:
            self.batches.close()
        if self._started:
            self.ingest.stop()
        self.points.stop()
        self.http.close()
        log.info("server stopped")

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_while_running(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set; raise SystemExit if a watched thread has died.

        A part that stopped working (a bug) must not hide behind a live
        process: exiting non-zero lets systemd restart it, and nothing is lost
        meanwhile (unacknowledged messages wait in the broker session,
        committed notifications in SQLite).
        """
        while not stop.wait(1.0):
            dead = self.health.dead_threads()
            if dead:
                raise SystemExit(f"stopped unexpectedly: {', '.join(dead)}; exiting")

    @property
    def http_port(self) -> int:
        return self.http.port

    @property
    def api_port(self) -> int | None:
        return self.api.port if self.api is not None else None


def run(settings: ServerSettings, stop: threading.Event, *, alerts: bool = True) -> None:
    """Run the server until ``stop`` is set (the body of ``secadero server run|ingest``)."""
    server = Server(settings, alerts=alerts)
    try:
        server.start()
        server.wait_while_running(stop)
    finally:
        server.stop()
