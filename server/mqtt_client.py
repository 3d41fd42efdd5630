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

Overrides private methods of paho-mqtt 2.x (pinned < 3 in pyproject.toml);
``tests/server/test_mqtt_client.py`` checks the split against paho's own
decoding, so an upgrade that changes them fails there first.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTT_LOG_DEBUG, MQTT_LOG_ERR, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

READ_SIZE = 65536
# How long loop_read waits while reading is paused before paho's loop goes round.
PAUSE_S = 0.005
# PUBACK: packet type, remaining length 2, message id (MQTT 5 allows the
# reason code and properties to be left out on success).
_PUBACK = struct.Struct("!BBH")
_ACKS_PER_WRITE = 4096
_PUBLISH = 0x30

PublishHandler = Callable[[str, bytes, int, int], None]


def _fresh_in_packet() -> dict[str, object]:
    # The shape paho keeps between reads (paho.mqtt.client.Client._in_packet).
    return {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
            "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}


class FastReadClient(mqtt.Client):
    """A paho ``Client`` whose plain PUBLISH packets skip paho's per-packet machinery.

    Set ``on_publish_received`` to receive them as ``(topic, payload, mid,
    qos)``; publishes paho handles itself still reach ``on_message``, so a
    user of this class sets both (see ``Ingest._make_client``).
    """

    on_publish_received: PublishHandler | None = None
    # Back-pressure: while this says True, the socket is not read (see loop_read).
    pause_reading: Callable[[], bool] | None = None
    # Bytes of a packet that has not fully arrived yet.
    _pending: bytes = b""

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
        with self._in_callback_mutex:
            handler(topic, buffer[header_end:end], mid, qos)
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
        with self._in_callback_mutex:
            self.on_message(self, self._userdata, message)  # type: ignore[misc]

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
