"""The alert service: wires tracker, engine, forecasts, dispatcher, API and the alert topic.

Plugs into the ingest as an observer: ``observe(envelope, received_at)`` is
called on the MQTT thread for every valid message *before* storage; it only
updates the yard's state and, when the message may change a rain decision
(a wet plate, a tip, a tray moving), wakes the evaluation thread, which
evaluates that yard at once. Everything else is evaluated every
``evaluate_interval_s``. The yard's current alert is published, retained, on
``secadero/v1/{yard}/alert`` whenever it changes, for the nodes' beacons.

Usage (what ``secadero server run`` does)::

    service = AlertService.from_settings(settings)
    ingest = Ingest(settings, observers=[service.observe])
    service.publish = ingest.publish
    service.start(); ingest.start()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from secadero import contract
from secadero.contract import Envelope
from secadero.server.alerts.engine import AlertEngine, ForecastStatus
from secadero.server.alerts.influx import AlertPointWriter
from secadero.server.alerts.state import YardTracker
from secadero.server.alerts.store import AlertStore, Notification
from secadero.server.alerts.tokens import AckTokens, load_or_create_secret
from secadero.server.forecast.poller import ForecastPoller, InfluxForecastWriter, make_clients
from secadero.server.notifiers import Notifier
from secadero.server.notifiers.dispatch import DeliveryHealth, Dispatcher
from secadero.settings import ServerSettings

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], Any]


def build_notifiers(settings: ServerSettings) -> list[Notifier]:
    """One notifier per configured ``[notifiers.*]`` section."""
    from secadero.server.notifiers.gammu import GammuNotifier
    from secadero.server.notifiers.ntfy import NtfyNotifier
    from secadero.server.notifiers.twilio import TwilioNotifier
    from secadero.server.notifiers.webhook import WebhookNotifier

    n = settings.notifiers
    notifiers: list[Notifier] = []
    if n.ntfy is not None:
        notifiers.append(NtfyNotifier(n.ntfy))
    if n.twilio is not None:
        notifiers.append(TwilioNotifier(n.twilio))
    if n.gammu is not None:
        notifiers.append(GammuNotifier(n.gammu))
    if n.webhook is not None:
        notifiers.append(WebhookNotifier(n.webhook))
    return notifiers


class AlertService:
    """Runs the rain alerts inside the server process."""

    def __init__(self, settings: ServerSettings, *, notifiers: Sequence[Notifier],
                 poller: ForecastPoller | None, publish: Publish | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        s = settings.alerts
        self.settings = settings
        self.clock = clock
        self.publish = publish
        self.store = AlertStore(s.database)
        self.tracker = YardTracker(settings.yards, humidity_window_s=s.humidity_window_min * 60)
        self.engine = AlertEngine(self.store, s, settings.yards, started_at=clock(),
                                  forecast_enabled=bool(settings.forecast.providers))
        secret = s.ack_secret or load_or_create_secret(s.database.with_suffix(".secret"))
        self.tokens = AckTokens(secret, s.ack_token_ttl_h * 3600)
        self.poller = poller
        self.dispatcher = Dispatcher(
            self.store, notifiers, sms_route=settings.notifiers.sms_route,
            attempts=settings.notifiers.attempts, backoff_s=settings.notifiers.backoff_s,
            ack_url=self.ack_url, clock=clock, on_done=self._delivered)
        self.delivery = DeliveryHealth()
        self.points: AlertPointWriter | None = None
        self._published: dict[str, bytes] = {}
        self._urgent: set[str] = set()
        self._urgent_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.evaluations = 0
        self.errors = 0

    @classmethod
    def from_settings(cls, settings: ServerSettings, *, publish: Publish | None = None
                      ) -> AlertService:
        clients = {yard.id: make_clients(settings.forecast, yard) for yard in settings.yards}
        poller = ForecastPoller(settings.yards, clients,
                                writer=InfluxForecastWriter(settings.influxdb),
                                interval_s=settings.forecast.poll_interval_s)
        service = cls(settings, notifiers=build_notifiers(settings), poller=poller,
                      publish=publish)
        service.points = AlertPointWriter(settings.influxdb)
        service.engine.on_transition = service.points
        return service

    # ------------------------------------------------------------ inputs

    def observe(self, envelope: Envelope, received_at: float) -> None:
        """The ingest observer: quick, never blocks, never raises on bad input."""
        if envelope.kind == "alert":
            return
        if self.tracker.observe(envelope, received_at):
            with self._urgent_lock:
                self._urgent.add(envelope.yard)
            self._wake.set()

    def acknowledge(self, episode_id: int, by: str) -> bool:
        episode = self.engine.acknowledge(episode_id, by, self.clock())
        if episode is not None:
            self._publish_alert(episode.yard)
        return episode is not None

    def _delivered(self, note: Notification) -> None:
        self.delivery.record(note)
        if note.status == "failed":
            with self._urgent_lock:
                self._urgent.add(note.yard)  # tell the technician now, not at the next tick
            self._wake.set()

    def ack_url(self, note: Notification) -> str | None:
        if note.channel != "push":
            return None
        token = self.tokens.make(note.episode_id, self.clock())
        return f"{self.settings.alerts.public_url}/api/alerts/{note.episode_id}/ack?token={token}"

    # ------------------------------------------------------- evaluation

    def forecast_status(self, yard: str) -> ForecastStatus:
        return self.poller.status(yard) if self.poller is not None else ForecastStatus()

    def evaluate(self, yards: Sequence[str] | None = None) -> list[Notification]:
        """Evaluate some (or all) yards now; queue what must be sent; publish alerts."""
        now = self.clock()
        notes: list[Notification] = []
        targets = list(yards if yards is not None else self.tracker.yards())
        # One transaction per cycle, not per yard: 500 yards raising at once is one commit.
        with self.engine.cycle():
            for yard in targets:
                try:
                    notes += self.engine.evaluate(
                        self.tracker.view(yard), self.forecast_status(yard), now,
                        delivery_error=self.delivery.error(yard))
                except Exception:
                    self.errors += 1
                    log.exception("evaluating yard %s", yard)
        for yard in targets:
            self._publish_alert(yard)
        self.evaluations += 1
        if notes:
            self.dispatcher.submit(notes)
        return notes

    def _publish_alert(self, yard: str) -> None:
        if self.publish is None:
            return
        payload = contract.encode(self.engine.current_alert(yard))
        if self._published.get(yard) == payload:
            return
        try:
            self.publish(contract.alert_topic(yard), payload, True)
            self._published[yard] = payload
        except Exception:
            log.exception("publishing the alert of yard %s", yard)

    def _loop(self) -> None:
        interval_s = self.settings.alerts.evaluate_interval_s
        next_full = 0.0
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_full - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._urgent_lock:
                urgent, self._urgent = sorted(self._urgent), set()
            try:
                if time.monotonic() >= next_full:
                    next_full = time.monotonic() + interval_s
                    self.evaluate()
                elif urgent:
                    self.evaluate(urgent)
            except Exception:  # the top of the alerts thread: log, count, carry on
                self.errors += 1
                log.exception("alert evaluation cycle failed")

    # ------------------------------------------------------------ life

    def start(self) -> AlertService:
        if self.points is not None:
            self.points.start()
        self.dispatcher.start()
        resumed = self.dispatcher.resume(max_age_s=3600, now=self.clock())
        if resumed:
            log.info("resending %d notifications decided before the restart", resumed)
        if self.poller is not None:
            self.poller.start()
        self._thread = threading.Thread(target=self._loop, name="alerts", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.poller is not None:
            self.poller.stop()
        self.dispatcher.stop()
        if self.points is not None:
            self.points.stop()
        self.store.close()


def run_with_alerts(settings: ServerSettings, stop: threading.Event) -> None:
    """``secadero server run`` with the rain alerts and their HTTP API beside the ingest."""
    from secadero.server.alerts.feed import alert_feed_for
    from secadero.server.api import ApiServer
    from secadero.server.ingest import Ingest
    from secadero.server.metrics import Health, Registry

    registry, health = Registry(), Health()
    service = AlertService.from_settings(settings)
    # In a share group the ingest sees only its share: the alerts get their own
    # feed of every message, and the ingest does not observe (none seen twice).
    feed = alert_feed_for(settings, service.observe, registry=registry, health=health)
    ingest = Ingest(settings, observers=[] if feed else [service.observe], registry=registry,
                    health=health)
    service.publish = ingest.publish
    try:
        api: ApiServer | None = ApiServer(service, host=settings.alerts.api_host,
                                          port=settings.alerts.api_port)
    except OSError as exc:
        # Alerts matter more than their API: run without it, say so loudly.
        log.error("alert API cannot listen on %s:%d (%s); alerts run without it",
                  settings.alerts.api_host, settings.alerts.api_port, exc)
        api = None
    ingest.start()
    if feed is not None:
        feed.start()
    # The forecast poller stores into the database the ingest creates; but the
    # alerts must not wait long for InfluxDB (they never depend on it).
    if not ingest.wait_ready(10):
        log.warning("alerts start before the ingest is ready (broker or InfluxDB down)")
    service.start()
    if api is not None:
        api.start()
        log.info("alerts: %d yards, API on http://%s:%d", len(settings.yards),
                 settings.alerts.api_host, api.port)
    try:
        ingest.wait_while_running(stop)
    finally:
        ingest.stop()
        if feed is not None:
            feed.stop()
        if api is not None:
            api.stop()
        service.stop()
        log.info("ingest and alerts stopped")
