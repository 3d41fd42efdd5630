"""The ingest's broker connection: the MQTT client (from a factory), its session, its acks.

Connect and subscribe callbacks run on paho's network thread; ``puback`` is
called by the writer thread. ``generation`` counts connections: a message
id belongs to the connection that delivered it and must never be PUBACKed
on another (the broker re-sends those messages with new ids), so the
generation is changed and read under one lock.

The client comes from ``client_factory(mqtt_settings)`` (default
``mqtt_client.fast_read_client``): tests pass their own instead of patching.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from secadero.contract import QOS, peer_topic, subscription
from secadero.server.ingest.items import Item
from secadero.server.mqtt_client import FastReadClient, PublishHandler, fast_read_client
from secadero.settings import MqttSettings, ServerSettings

log = logging.getLogger(__name__)

SUBSCRIBED_KINDS = ("telemetry", "event", "status")
# The MQTT 5 Receive Maximum is a two-byte integer.
MAX_RECEIVE_MAXIMUM = 65535

ClientFactory = Callable[[MqttSettings], FastReadClient]


NETWORK_THREAD_NAME = "ingest-mqtt"


class BrokerLink:
    """One persistent MQTT 5 session (Clean Start off, QoS 1, manual PUBACKs)."""

    def __init__(self, settings: ServerSettings, client_factory: ClientFactory = fast_read_client,
                 *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.client = client_factory(settings.mqtt)
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        # The current connection: changed under the lock on paho's thread,
        # read without it by the receive stage (on that same thread).
        self.generation = 0
        self._connected = threading.Event()
        self._closing = False
        self.down_since: float | None = time.monotonic()
        client = self.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def deliver_to(self, receive: PublishHandler,
                   on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None],
                   pause_reading: Callable[[], bool]) -> None:
        """Where PUBLISHes go (the fast path and paho's), and when to stop reading the socket."""
        self.client.on_publish_received = receive
        self.client.on_message = on_message
        self.client.pause_reading = pause_reading

    def topics(self) -> list[str]:
        group = self.settings.ingest.share_group
        topics = [subscription(kind) for kind in SUBSCRIBED_KINDS]  # type: ignore[arg-type]
        if not group:
            return topics
        # Shared: each message goes to one process of the group. Every
        # process also hears what the others stored (a plain subscription),
        # so each can compute the nodes' cumulative acks.
        return [f"$share/{group}/{t}" for t in topics] + [peer_topic(group)]

    def start(self) -> None:
        s = self.settings
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = s.ingest.session_expiry_s
        properties.ReceiveMaximum = min(s.ingest.queue_max, MAX_RECEIVE_MAXIMUM)
        self.client.connect_async(s.mqtt.host, s.mqtt.port, keepalive=s.mqtt.keepalive_s,
                                  clean_start=False, properties=properties)
        # Our own handle on paho's network thread, so Health can watch it.
        self.client.start_network_thread(NETWORK_THREAD_NAME)

    @property
    def network_alive(self) -> bool:
        """paho's network thread is running (False before ``start`` and once it died)."""
        thread = self.client.network_thread
        return thread is not None and thread.is_alive()

    @property
    def handler_errors(self) -> int:
        """Messages whose handling raised on the network thread (left unacknowledged)."""
        return self.client.handler_errors

    def closing(self) -> None:
        """Disconnects from now on are ours: not logged as faults."""
        self._closing = True

    def stop(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.stop_network_thread()
        self._connected.clear()

    def publish(self, topic: str, payload: bytes, *, qos: int = QOS,
                retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def puback(self, items: Sequence[Item]) -> None:
        """PUBACK the QoS 1 messages among ``items`` that came on the current connection."""
        with self._lock:
            generation = self.generation
            self.client.ack_many([item.mid for item in items
                                  if item.qos == 1 and item.generation == generation])

    def puback_one(self, mid: int, qos: int) -> None:
        with self._lock:
            self.client.ack(mid, qos)

    # -- paho's network thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        with self._lock:
            self.generation += 1
        if not flags.session_present:
            log.info("new broker session for %s (nothing was queued for us)",
                     self.settings.mqtt.client_id)
        # Subscribing on every connect: a broker that lost its state (no
        # persistence, expired session) would otherwise send us nothing.
        client.subscribe([(t, mqtt.SubscribeOptions(qos=QOS)) for t in self.topics()])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[Any], properties: Any) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused subscriptions %s: %s", self.topics(), failed)
            return
        self.down_since = None
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        with self._lock:
            # Message ids of the old connection must never be acknowledged on
            # the new one: the broker re-sends those messages with new ids.
            self.generation += 1
        self._connected.clear()
        if self.down_since is None:
            self.down_since = time.monotonic()
        if not self._closing:
            log.warning("disconnected from the broker: %s; reconnecting", reason_code)
            # Jitter: a whole region's ingest processes must not reconnect in step.
            client.reconnect_delay_set(min_delay=self._rng.uniform(0.5, 1.5), max_delay=30)
