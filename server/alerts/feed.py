"""The alerts' own MQTT feed: every yard's telemetry, events and status, for the alert engine.

In a share group (``[ingest] share_group``) each ingest process receives only
its share of the messages, so an alert engine fed by its process's ingest
would miss a wet plate delivered to another process. The feed is the alert
engine's own connection: a plain (not shared) QoS 1 subscription to
``telemetry``, ``event`` and ``status`` of every yard, decoded with
``secadero.contract.decode`` and handed to the same observer the ingest would
call (``AlertService.observe(envelope, received_at)``). Without a share group
the ingest already sees everything and no feed is made (``alert_feed_for``).

Session: client id ``<client_id>-alerts``, MQTT 5, Clean Start on the first
connection of the process and off on its reconnects, with a Session Expiry
of ``SESSION_EXPIRY_S``. The alert state is rebuilt from live messages (node
status is retained, every telemetry message carries the plate's wet/dry), so
a restarted server must not be handed hours of old readings as if they were
news; but a broker blip of a few minutes must not lose the ``rain_started``
sent meanwhile, and the resumed session re-sends it. Messages are PUBACKed
after the observer has taken them, all those of one socket read at once.

Bad messages are counted by reason and logged (rate-limited), never raise;
an observer that raises is counted and logged, and the message is acked
(its fault is ours, not the broker's: a re-delivery would raise again). The
network thread is watched by ``Health``, and so is the subscription: no feed
for longer than ``[ingest] unhealthy_after_s`` makes ``/healthz`` fail.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from secadero.contract import QOS, Envelope, TimeWindow, decode, subscription
from secadero.errors import ProtocolError
from secadero.server.metrics import Health, Registry
from secadero.server.mqtt_client import FastReadClient, fast_read_client
from secadero.settings import ServerSettings

log = logging.getLogger(__name__)

Observer = Callable[[Envelope, float], None]

KINDS = ("telemetry", "event", "status")
CLIENT_ID_SUFFIX = "-alerts"
# Long enough to ride out a broker restart or a Wi-Fi drop, short enough
# that what the broker keeps for us is still news when it comes.
SESSION_EXPIRY_S = 600
# Messages the broker may have in flight to us unacknowledged (MQTT 5
# Receive Maximum). Mosquitto's default of 20 would allow one round trip per
# 20 messages; the feed must keep up with the whole fleet.
RECEIVE_MAXIMUM = 1000
# At most one warning per reason in this many seconds (all are counted).
WARN_INTERVAL_S = 10.0

# Exported as secadero_alert_feed_<name>.
ALERT_FEED_METRICS = {
    "messages_received_total": ("counter", "messages the alerts' own subscription received "
                                "and decoded, by topic kind"),
    "messages_rejected_total": ("counter", "messages of the alerts' feed that failed "
                                "decoding or validation, by reason"),
    "observer_errors_total": ("counter", "exceptions raised by the alert observer"),
    "handler_errors_total": ("counter", "messages whose handling raised (left unacknowledged, "
                             "re-sent by the broker on the next connection)"),
    "mqtt_connected": ("gauge", "1 while the alerts' feed is subscribed"),
}


def alert_feed_for(settings: ServerSettings, observe: Observer, *,
                   registry: Registry | None = None,
                   health: Health | None = None) -> AlertFeed | None:
    """The alerts' own feed if the ingest shares its messages with other processes, else None.

    Without a share group the ingest receives every message and calls the
    alert observer itself, so no second connection is made; with one, the
    feed calls the observer and the ingest must not (no double observation)::

        feed = alert_feed_for(settings, service.observe, registry=r, health=h)
        ingest = Ingest(settings, observers=[] if feed else [service.observe], ...)
    """
    if not settings.ingest.share_group:
        return None
    return AlertFeed(settings, observe, registry=registry, health=health)


class AlertFeed:
    """Every yard's telemetry, events and status from the broker to the alert observer."""

    def __init__(self, settings: ServerSettings, observe: Observer, *,
                 registry: Registry | None = None, health: Health | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.observe = observe
        self.clock = clock
        self.metrics = (registry or Registry()).part("alert_feed", ALERT_FEED_METRICS)
        self.health = health or Health()
        self._horizon_s = settings.ingest.horizon_days * 86400.0
        # Only the network thread writes these (no lock per message); read at scrapes.
        self._received: dict[str, int] = {}
        self._rejected: dict[str, int] = {}
        self.metrics.labelled["messages_received_total"] = ("kind", self._received)
        self.metrics.labelled["messages_rejected_total"] = ("reason", self._rejected)
        self._warned_at: dict[str, float] = {}
        # Message ids taken since the last socket read ended: PUBACKed together.
        self._unacked: list[int] = []
        self._subscribed = threading.Event()
        self._down_since: float | None = time.monotonic()
        self._stopping = False
        self._client = self._make_client()
        self.metrics.gauges["mqtt_connected"] = lambda: 1 if self._subscribed.is_set() else 0
        self.metrics.gauges["handler_errors_total"] = lambda: self._client.handler_errors

    @property
    def client_id(self) -> str:
        return f"{self.settings.mqtt.client_id or 'secadero'}{CLIENT_ID_SUFFIX}"

    # -- life

    def start(self) -> AlertFeed:
        m = self.settings.mqtt
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self._client.connect_async(m.host, m.port, keepalive=m.keepalive_s,
                                   clean_start=MQTT_CLEAN_START_FIRST_ONLY,
                                   properties=properties)
        thread = self._client.start_network_thread("alert-feed-mqtt")
        self.health.watch_thread("alerts' MQTT feed", thread)
        self.health.add_check(self._check)
        log.info("alerts' own feed %s: every yard's %s from %s:%d", self.client_id,
                 ", ".join(KINDS), m.host, m.port)
        return self

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.stop_network_thread()
        self._subscribed.clear()

    def wait_subscribed(self, timeout_s: float = 10.0) -> bool:
        return self._subscribed.wait(timeout_s)

    def _check(self) -> list[str]:
        limit = self.settings.ingest.unhealthy_after_s
        down_since = self._down_since
        if self._stopping or down_since is None or time.monotonic() - down_since <= limit:
            return []
        return [f"the alerts' MQTT feed has been unsubscribed for "
                f"{time.monotonic() - down_since:.0f} s: alerts see no messages"]

    # -- MQTT (the network thread)

    def _make_client(self) -> FastReadClient:
        client = fast_read_client(self.settings.mqtt, client_id=self.client_id)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_publish_received = self._receive
        client.on_message = self._on_message
        client.on_read_done = self._ack_taken
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the alerts' feed %s: %s", self.client_id, reason_code)
            return
        self._unacked.clear()  # ids of an old connection mean nothing on this one
        # On every connect: a broker that lost the session would send nothing.
        client.subscribe([(subscription(kind), mqtt.SubscribeOptions(qos=QOS))  # type: ignore[arg-type]
                          for kind in KINDS])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[Any], properties: Any) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused the alerts' subscriptions (check the ACL): %s", failed)
            return
        self._down_since = None
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        self._unacked.clear()
        self._subscribed.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()
        if not self._stopping:
            log.warning("alerts' feed disconnected from the broker: %s; reconnecting",
                        reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # The few publishes paho decodes itself (with properties; see mqtt_client.py).
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "(a topic that is not UTF-8)"  # rejected as a bad topic, and counted
        self._receive(topic, msg.payload, msg.mid, msg.qos)

    def _receive(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        """One message: decode, hand to the observer, PUBACK after the read."""
        received_at = self.clock()
        try:
            envelope = decode(topic, payload, TimeWindow(received_at, self._horizon_s))
        except ProtocolError as exc:
            self._rejected[exc.reason] = self._rejected.get(exc.reason, 0) + 1
            self._warn(exc.reason, "alerts' feed rejected %s: %s: %s", topic[:120],
                       exc.reason, exc)
        else:
            self._received[envelope.kind] = self._received.get(envelope.kind, 0) + 1
            try:
                self.observe(envelope, received_at)
            except Exception:
                self.metrics.inc("observer_errors_total")
                log.exception("the alert observer failed on %s", topic[:120])
        if qos:
            self._unacked.append(mid)

    def _ack_taken(self) -> None:
        if self._unacked:
            taken, self._unacked = self._unacked, []
            self._client.ack_many(taken)

    def _warn(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at.get(key, -WARN_INTERVAL_S) >= WARN_INTERVAL_S:
            self._warned_at[key] = now
            log.warning(message, *args)


__all__ = ["ALERT_FEED_METRICS", "AlertFeed", "alert_feed_for"]
