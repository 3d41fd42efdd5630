"""The node's MQTT connection: paho-mqtt 2.x, QoS 1, retained status with a Last Will.

paho's own reconnect doubles a fixed delay; hundreds of nodes that lost the
same Wi-Fi access point would then all reconnect in lock-step. This link
runs its own network thread and waits a *jittered* exponential backoff
(``backoff_delays``) between attempts, and never exits because the first
connect failed (a node boots before its Wi-Fi is up, reference N5).

Subscriptions (the node's ``ack`` and the yard's ``alert``) are made inside
``on_connect``, so every reconnect renews them. paho keeps its session in
RAM only, so the outbox, not paho, is what makes delivery durable.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from secadero import contract
from secadero.errors import ProtocolError
from secadero.settings import MqttSettings

log = logging.getLogger(__name__)

# A connection that held this long resets the reconnect backoff.
STABLE_AFTER_S = 30.0
# A connection closed sooner than this counts as a short session (N9: duplicate client id).
SHORT_SESSION_S = 10.0


def backoff_delays(*, min_s: float = 1.0, max_s: float = 60.0,
                   rng: random.Random | None = None) -> Iterator[float]:
    """Reconnect delays: doubling from ``min_s`` to ``max_s``, each "full jitter" in [d/2, d]."""
    rng = rng or random.Random()
    delay = min_s
    while True:
        yield rng.uniform(delay / 2, delay)
        delay = min(max_s, delay * 2)


class NodeLink:
    """One node's MQTT session; calls back into the agent from the network thread.

    ``on_connected()``, ``on_disconnected()``, ``on_ack(seq)``,
    ``on_alert(alert)``, ``on_bad_message(kind, reason)`` and
    ``on_published(count)`` are plain attributes the agent sets.
    """

    def __init__(self, settings: MqttSettings, *, yard: str, node: str, version: str,
                 will_ts: float, min_backoff_s: float = 0.5, max_backoff_s: float = 60.0,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.yard = yard
        self.node = node
        self.version = version
        self.status_topic = contract.node_topic(yard, node, "status")
        self.ack_topic = contract.node_topic(yard, node, "ack")
        self.alert_topic = contract.alert_topic(yard)
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._rng = rng or random.Random()
        self.on_connected: Callable[[], None] = lambda: None
        self.on_disconnected: Callable[[], None] = lambda: None
        self.on_ack: Callable[[int], None] = lambda seq: None
        self.on_alert: Callable[[contract.Alert], None] = lambda alert: None
        self.on_bad_message: Callable[[str, str], None] = lambda kind, reason: None
        self.on_published: Callable[[int], None] = lambda mid: None
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.connects = 0
        self.connect_failures = 0
        self.short_sessions = 0
        client_id = settings.client_id or f"node-{yard}-{node}"
        self.client_id = client_id
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        # paho keeps unsent QoS 1 messages in RAM without limit; the agent
        # bounds what it hands over (its in-flight window), this is a second guard.
        self.client.max_inflight_messages_set(100)
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            context = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self.client.tls_set_context(context)
        self.client.will_set(self.status_topic, contract.offline_will(will_ts, version),
                             qos=contract.QOS, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    # -- paho callbacks (network thread) -------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        # paho leaves Nagle's algorithm on: a small PUBLISH (a rain event) then waits
        # for the ACK of whatever went before it, tens of ms on a delayed-ACK peer.
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        result, _ = client.subscribe([(self.ack_topic, contract.QOS),
                                      (self.alert_topic, contract.QOS)])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning("subscribe failed: %s", result)
        self.connects += 1
        self.connected.set()
        log.info("connected to %s:%d", self.settings.host, self.settings.port)
        self.on_connected()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was:
            log.info("disconnected from the broker: %s", reason)
            self.on_disconnected()

    def _on_message(self, client: mqtt.Client, userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        kind = "ack" if message.topic == self.ack_topic else "alert"
        if kind == "alert" and not message.payload:
            # An empty retained message is how MQTT deletes a retained alert: no alert.
            self.on_alert(contract.Alert(state="clear"))
            return
        try:
            envelope = contract.decode(message.topic, message.payload)
        except ProtocolError as exc:
            log.warning("ignored a malformed %s on %s: %s", kind, message.topic, exc)
            self.on_bad_message(kind, exc.reason)
            return
        if isinstance(envelope.message, contract.Ack):
            self.on_ack(envelope.message.seq)
        elif isinstance(envelope.message, contract.Alert):
            self.on_alert(envelope.message)
        else:
            self.on_bad_message(kind, "unexpected_kind")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self.on_published(mid)

    # -- network thread ------------------------------------------------------

    def _run(self) -> None:
        delays = backoff_delays(min_s=self._min_backoff_s, max_s=self._max_backoff_s,
                                rng=self._rng)
        first = True
        stable = False
        while not self._stop.is_set():
            try:
                if first:
                    self.client.connect(self.settings.host, self.settings.port,
                                        keepalive=self.settings.keepalive_s)
                else:
                    self.client.reconnect()
                first = False
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.connect_failures += 1
                delay = next(delays)
                log.debug("connect to %s:%d failed (%s); retrying in %.1f s",
                          self.settings.host, self.settings.port, exc, delay)
                self._stop.wait(delay)
                continue
            connected_at: float | None = None
            while True:
                rc = self.client.loop(timeout=0.2)
                if self.connected.is_set() and connected_at is None:
                    connected_at = time.monotonic()
                if (connected_at is not None and not stable
                        and time.monotonic() - connected_at >= STABLE_AFTER_S):
                    # Only a connection that held resets the backoff: a link that
                    # drops at once (flapping Wi-Fi, a second device with our
                    # client id taking the session over) must not become a hot loop.
                    stable = True
                    delays = backoff_delays(min_s=self._min_backoff_s,
                                            max_s=self._max_backoff_s, rng=self._rng)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._stop.is_set():
                    break
            stable = False
            if connected_at is not None and not self._closing:
                lasted_s = time.monotonic() - connected_at
                if lasted_s < SHORT_SESSION_S:
                    self.short_sessions += 1
                    if self.short_sessions in (3, 10) or self.short_sessions % 100 == 0:
                        log.warning("the broker closed %d connections within %g s of "
                                    "connecting; if this goes on, another device may be "
                                    "using this node's client id %r", self.short_sessions,
                                    SHORT_SESSION_S, self.client_id)
            if self.connected.is_set():
                self.connected.clear()
                self.on_disconnected()
            if self._closing:
                break
            self._stop.wait(next(delays))

    def start(self) -> NodeLink:
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()
        return self

    def publish(self, topic: str, payload: bytes, *, retain: bool = False
                ) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=contract.QOS, retain=retain)

    def stop(self, *, farewell: bytes | None = None, timeout_s: float = 2.0) -> None:
        """Publish ``farewell`` (the retained offline status) if connected, then disconnect."""
        if farewell is not None and self.connected.is_set():
            info = self.publish(self.status_topic, farewell, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=timeout_s)
        self._closing = True
        if self.connected.is_set():
            # The network thread sends DISCONNECT, sees the socket close and exits.
            self.client.disconnect()
        else:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._stop.set()
            self._thread.join(timeout=timeout_s)
