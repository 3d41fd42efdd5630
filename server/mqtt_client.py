"""paho-mqtt's client with a faster receive path, for the ingest.

paho 2.x reads each packet with three ``recv`` calls (command byte, length,
body), keeps its state in a dict, decodes MQTT 5 properties into objects and
builds an ``MQTTMessage`` per PUBLISH. At tens of thousands of messages a
second that was half of the ingest's CPU (profiled: ``bench/ingest_receive.py
--profile``). This client reads the socket in 64 KiB chunks, splits the chunk
into packets itself, and hands each plain PUBLISH (QoS 0 or 1, no
properties) straight to ``on_publish_received(topic, payload, mid, qos)``.
Every other packet (CONNACK, SUBACK, PINGRESP, DISCONNECT, PUBACK of our own
publishes, QoS 2, a PUBLISH with properties or a topic that is not UTF-8)
goes through paho's own handlers unchanged, so connecting, keepalive,
reconnecting and publishing stay paho's.

It overrides and calls private parts of paho-mqtt, listed in
``PAHO_PRIVATE_SURFACE``; pyproject.toml pins the one paho version CI tests,
and ``tests/server/test_mqtt_client.py`` checks that every name there exists
with the expected kind and signature, that the keepalive clock still
advances on a fast read and that PUBACKs still go out (real broker), so an
upgrade that changes them fails there first. Kept rather than dropped: paho's
own path cost ~4 x the CPU per reading (docs/performance.md).

Two things paho's own path does not do, done here because the ingest
depends on them:

- An exception raised by a handler (``on_publish_received``, or
  ``on_message`` for what paho decodes) is contained: logged (rate-limited),
  counted (``handler_errors``, and ``on_handler_error`` if set), and the
  message is *not* acknowledged, so the broker delivers it again on the next
  connection of the session. paho would let it kill its network thread.
- The network thread is started by ``start_network_thread()`` and exposed
  as ``network_thread``, so ``Health.watch_thread`` can watch it; an
  exception that ends it is logged.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTT_LOG_DEBUG, MQTT_LOG_ERR, MQTTErrorCode
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.exception import MalformedPacket

from secadero.settings import MqttSettings

log = logging.getLogger(__name__)

READ_SIZE = 65536
# How long loop_read waits while reading is paused before paho's loop goes round.
PAUSE_S = 0.005
# PUBACK: packet type, remaining length 2, message id (MQTT 5 allows the
# reason code and properties to be left out on success).
_PUBACK = struct.Struct("!BBH")
_ACKS_PER_WRITE = 4096
_PUBLISH = 0x30

# A handler's error is logged at most once per this many seconds (counted always).
HANDLER_ERROR_LOG_INTERVAL_S = 10.0

PublishHandler = Callable[[str, bytes, int, int], None]
HandlerErrorHook = Callable[[str, Exception], None]

# Every private name of paho's Client this module uses: kind, and for methods the
# parameters after ``self``. Checked against the installed paho by the tests.
PAHO_PRIVATE_SURFACE: dict[str, tuple[str, tuple[str, ...]]] = {
    # read / written
    "_sock": ("attribute", ()),
    "_protocol": ("attribute", ()),
    "_in_packet": ("attribute", ()),  # the dict shape: see _fresh_in_packet
    "_msgtime_mutex": ("attribute", ()),
    "_last_bytes_received": ("attribute", ()),  # the keepalive clock of incoming bytes
    "_in_callback_mutex": ("attribute", ()),
    "_userdata": ("attribute", ()),
    "_thread": ("attribute", ()),  # read once, right after loop_start()
    # called
    "_sock_recv": ("method", ("bufsize",)),
    "_loop_rc_handle": ("method", ("rc",)),
    "_packet_handle": ("method", ()),
    "_packet_queue": ("method", ("command", "packet", "mid", "qos", "info")),
    "_easy_log": ("method", ("level", "fmt", "args")),
    # overridden (and called through super())
    "_handle_on_message": ("method", ("message",)),
    "_sock_close": ("method", ()),
    "_thread_main": ("method", ()),
}


def _fresh_in_packet() -> dict[str, object]:
    # The shape paho keeps between reads (paho.mqtt.client.Client._in_packet).
    return {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
            "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}


class FastReadClient(mqtt.Client):
    """A paho ``Client`` whose plain PUBLISH packets skip paho's per-packet machinery.

    Set ``on_publish_received`` to receive them as ``(topic, payload, mid,
    qos)``; publishes paho handles itself still reach ``on_message``, so a
    user of this class sets both (see ``server/ingest/link.py``). Nothing is
    acknowledged for the user (``manual_ack=True`` is required): a handler
    takes each QoS 1 message and PUBACKs it with ``ack_many`` once it is
    safe, e.g. after the write; ``on_read_done`` is the place to PUBACK what
    the handlers of one socket read took.

    Run the network loop with ``start_network_thread()`` /
    ``stop_network_thread()`` (paho's ``loop_start``/``loop_stop`` work too,
    without ``network_thread``).
    """

    on_publish_received: PublishHandler | None = None
    # Called with (topic, exception) after a handler raised; must not raise itself.
    on_handler_error: HandlerErrorHook | None = None
    # Called on the network thread after the packets of one socket read were handled.
    on_read_done: Callable[[], None] | None = None
    # Back-pressure: while this says True, the socket is not read (see loop_read).
    pause_reading: Callable[[], bool] | None = None
    # Bytes of a packet that has not fully arrived yet.
    _pending: bytes = b""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # first: paho's __del__ needs its attributes
        if kwargs.get("manual_ack") is not True:
            # The fast path sends no PUBACK itself: without manual_ack the
            # broker would wait for acknowledgements nobody sends.
            raise ValueError("FastReadClient needs manual_ack=True: its users PUBACK each "
                             "message themselves (ack_many) once it is safe")
        self._handler_errors = 0
        self._handler_error_logged_at = -HANDLER_ERROR_LOG_INTERVAL_S
        self._handler_errors_not_logged = 0
        self._network_thread: threading.Thread | None = None

    # -- the network thread

    @property
    def network_thread(self) -> threading.Thread | None:
        """The thread running paho's network loop (None before ``start_network_thread``)."""
        return self._network_thread

    def start_network_thread(self, name: str | None = None) -> threading.Thread:
        """Run paho's network loop (connecting, reconnecting) in a thread; returns it.

        The thread is paho's ``loop_start()`` one, which runs
        ``loop_forever(retry_first_connection=True)``; it is returned (and
        kept as ``network_thread``) so ``Health.watch_thread`` can watch it.
        Call ``connect_async`` first.
        """
        if self.loop_start() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RuntimeError("the MQTT network thread is already running")
        thread = self._thread
        assert thread is not None  # loop_start() has just created it
        if name:
            thread.name = name
        self._network_thread = thread
        return thread

    def stop_network_thread(self) -> None:
        """Stop the network loop (after ``disconnect()``, to send the DISCONNECT first)."""
        self.loop_stop()

    def _thread_main(self) -> None:
        # paho's loop_start() runs this in its thread. An exception that ends
        # it would otherwise reach only stderr (threading.excepthook); logged
        # here, and Health sees the thread gone. It also ends, without an
        # exception, after disconnect() or loop_stop(): both are ours to call.
        try:
            super()._thread_main()
        except Exception:
            log.exception("MQTT network thread %s stopped by an unexpected error",
                          threading.current_thread().name)

    # -- handler errors

    @property
    def handler_errors(self) -> int:
        """How many messages' handlers raised (those messages were not acknowledged)."""
        return self._handler_errors

    def _call_handler(self, handler: Callable[..., None], topic: str, *args: Any) -> None:
        """Call a message handler; contain, count and log what it raises.

        The message is left unacknowledged: the broker delivers it again when
        the session resumes, so a passing fault (or a fixed bug, after a
        restart) loses nothing. It holds one place of the Receive Maximum
        until then.
        """
        try:
            with self._in_callback_mutex:
                handler(*args)
        except Exception as exc:
            self._handler_errors += 1
            self._log_handler_error(topic, exc)
            if self.on_handler_error is not None:
                try:
                    self.on_handler_error(topic, exc)
                except Exception:
                    log.exception("on_handler_error raised (ignored)")

    def _log_handler_error(self, topic: str, exc: Exception) -> None:
        # A bug that raises on every message must not write 20,000 tracebacks a second.
        now = time.monotonic()
        if now - self._handler_error_logged_at < HANDLER_ERROR_LOG_INTERVAL_S:
            self._handler_errors_not_logged += 1
            return
        more = self._handler_errors_not_logged
        self._handler_error_logged_at, self._handler_errors_not_logged = now, 0
        log.error("the handler of a message on %s raised; the message is left "
                  "unacknowledged for the broker to deliver again%s", topic[:120],
                  f" ({more} more since the last report)" if more else "", exc_info=exc)

    # -- reading

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read what the socket has (one chunk) and handle every whole packet in it."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if self.pause_reading is not None and self.pause_reading():
            # The consumer is full: leave the bytes in the socket, so TCP
            # holds the broker back and the broker queues for our session.
            # A short sleep, not a blocking wait: paho's loop must go on
            # sending PUBACKs and keepalive pings meanwhile.
            time.sleep(PAUSE_S)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            data = self._sock_recv(READ_SIZE)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        except OSError as err:
            self._easy_log(MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if not data:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        buffer = self._pending + data if self._pending else data
        rc, used = self._handle_packets(buffer)
        # A handler may have closed the socket (and with it cleared _pending).
        self._pending = buffer[used:] if self._sock is not None else b""
        if self.on_read_done is not None and self._sock is not None:
            self._call_handler(self.on_read_done, "(after a read)")
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return self._loop_rc_handle(rc)
        # A TLS socket may hold decrypted bytes that select() does not see;
        # paho's loop checks ``pending()`` before it waits, so one chunk per
        # call is enough.
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_packets(self, buffer: bytes) -> tuple[MQTTErrorCode, int]:
        """Handle each complete packet in ``buffer``; the error (if any) and the bytes used."""
        pos, end_of_data = 0, len(buffer)
        while pos < end_of_data:
            header = buffer[pos]
            # Remaining Length: 1 to 4 bytes, 7 bits each, low bits first.
            length, shift, i = 0, 0, pos + 1
            while True:
                if i >= end_of_data:
                    return MQTTErrorCode.MQTT_ERR_SUCCESS, pos  # the rest is still coming
                byte = buffer[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    self._easy_log(MQTT_LOG_ERR, "malformed packet: remaining length too long")
                    return MQTTErrorCode.MQTT_ERR_PROTOCOL, pos
            end = i + length
            if end > end_of_data:
                return MQTTErrorCode.MQTT_ERR_SUCCESS, pos
            if header & 0xF0 != _PUBLISH or not self._fast_publish(header, buffer, i, end):
                rc = self._paho_handle(header, buffer[i:end])
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return rc, end
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_SUCCESS, end
            pos = end
        return MQTTErrorCode.MQTT_ERR_SUCCESS, pos

    def _fast_publish(self, header: int, buffer: bytes, start: int, end: int) -> bool:
        """Hand a plain PUBLISH to ``on_publish_received``; False to leave it to paho."""
        handler = self.on_publish_received
        qos = (header >> 1) & 0x03
        if handler is None or qos == 2:
            return False  # QoS 2 has a handshake paho keeps state for
        if end - start < 2:
            return False  # malformed: paho's decoder says so
        topic_end = start + 2 + ((buffer[start] << 8) | buffer[start + 1])
        mid = 0
        header_end = topic_end + (2 if qos else 0)
        if self._protocol == mqtt.MQTTv5:
            header_end += 1
        if header_end > end:
            return False  # malformed: paho's decoder says so
        if qos:
            mid = (buffer[topic_end] << 8) | buffer[topic_end + 1]
            if mid == 0:
                return False  # a QoS 1 packet id of 0 is a protocol error (paho)
        if self._protocol == mqtt.MQTTv5 and buffer[header_end - 1] != 0:
            return False  # properties (e.g. a topic alias): paho decodes them
        try:
            topic = buffer[start + 2:topic_end].decode("utf-8")
        except UnicodeDecodeError:
            return False
        self._call_handler(handler, topic, topic, buffer[header_end:end], mid, qos)
        return True

    def _paho_handle(self, header: int, body: bytes) -> MQTTErrorCode:
        """Let paho handle one complete packet, as its own reader would have."""
        self._in_packet = _fresh_in_packet()
        self._in_packet.update(command=header, have_remaining=1, remaining_length=len(body),
                               packet=bytearray(body))
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = _fresh_in_packet()
        return rc

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # paho walks its per-topic callback matcher for every message; this
        # client's users register none, so go straight to on_message.
        if self.on_message is None:
            return
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = "(a topic that is not UTF-8)"
        self._call_handler(self.on_message, topic, self, self._userdata, message)

    def _sock_close(self) -> None:
        # Bytes of the old connection must never be read as the new one's.
        self._pending = b""
        super()._sock_close()

    # -- acknowledging

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACK many QoS 1 messages in one write.

        paho's ``ack()`` queues one 4-byte packet per message, wakes its loop
        through a socket pair and sends each with its own system call; here
        the packets are concatenated and queued as one.
        """
        for first in range(0, len(mids), _ACKS_PER_WRITE):
            packet = b"".join(_PUBACK.pack(mqtt.PUBACK, 2, mid)
                              for mid in mids[first:first + _ACKS_PER_WRITE])
            self._packet_queue(mqtt.PUBACK, packet, 0, 1)


def fast_read_client(settings: MqttSettings, *, client_id: str | None = None,
                     client_class: type[FastReadClient] | None = None) -> FastReadClient:
    """A server client: MQTT 5, ``manual_ack``, credentials and TLS from the settings.

    The ingest's and the alert feed's connections are both made here, so the
    broker sees them the same way. ``client_id``: another than the settings'
    (the feed's); ``client_class``: a subclass to build instead (a test's
    instrumented client).
    """
    cls = client_class or FastReadClient
    client = cls(CallbackAPIVersion.VERSION2, client_id=client_id or settings.client_id or "",
                            protocol=mqtt.MQTTv5, manual_ack=True)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client
