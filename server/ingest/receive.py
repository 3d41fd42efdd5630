"""The receive stage: decode, validate, tell the observers, build lines, queue. On paho's thread.

Each PUBLISH becomes one ``Item`` in the ``Handoff``, valid or not: a
rejected message is PUBACKed in order with the rest (through the writer),
and counts as done for its node's ack wherever its ``seq`` can be
established, so the node is never held for the gap timeout by a message the
server has already refused. The seq of a refused message is read once:
from the JSON object when the payload parsed (the field that failed was
another), else by ``contract.scan_seq`` over the first 4 KiB (too large,
not UTF-8, not JSON).

Everything here runs on paho's network thread, which has no one above it
to catch an exception: every failure becomes a counted rejection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from secadero.contract import (
    PEER_ROOT,
    Envelope,
    Event,
    NodeKey,
    Status,
    Telemetry,
    TimeWindow,
    decode_object,
    decode_peer_done,
    load_json_object,
    parse_topic,
    scan_seq,
)
from secadero.errors import ProtocolError
from secadero.server.downsample import LateHours
from secadero.server.ingest.items import NO_LINES, Handoff, Item
from secadero.server.ingest.link import BrokerLink
from secadero.server.ingest.liveness import Liveness
from secadero.server.ingest.warn import RateLimitedLog
from secadero.server.metrics import Metrics
from secadero.server.points import LineBuilder

log = logging.getLogger(__name__)

Observer = Callable[[Envelope, float], None]
_SEQ_KINDS = ("telemetry", "event")
PEER_PREFIX = PEER_ROOT + "/"
# A tuple: isinstance with it is quicker than with ``Telemetry | Event``.
_SEQ_TYPES = (Telemetry, Event)


class Receiver:
    """Turns each PUBLISH into an ``Item`` for the writer; counts what it received and refused."""

    def __init__(self, handoff: Handoff, link: BrokerLink, liveness: Liveness, late: LateHours,
                 metrics: Metrics, *, observers: list[Observer], horizon_s: float,
                 client_id: str, clock: Callable[[], float],
                 line_builder: LineBuilder | None = None,
                 warn: RateLimitedLog | None = None) -> None:
        self._put = handoff.put  # bound once: this runs for every message
        self._link = link
        self._liveness = liveness
        self._late = late
        self._late_after_s = late.after_s
        self._metrics = metrics
        self.observers = observers
        self._horizon_s = horizon_s
        self._client_id = client_id
        self._clock = clock
        self._warn = warn or RateLimitedLog()
        self._line_builder = line_builder or LineBuilder()
        self._accepting = True
        # A plain dict: only this thread writes it (the metrics lock and label
        # sorting cost more than the rest of ``receive``).
        self._received: dict[str, int] = {}
        metrics.labelled["messages_received_total"] = ("kind", self._received)

    def stop_accepting(self) -> None:
        """From now on messages are left unacknowledged: the broker keeps them for our next
        session."""
        self._accepting = False

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """The few publishes paho decodes itself (see mqtt_client.py)."""
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # Not UTF-8: the replacement characters fail the id rules, so it
            # is rejected (and acknowledged) like any bad topic.
            topic = msg._topic.decode("utf-8", "replace")
        self.receive(topic, msg.payload, msg.mid, msg.qos)

    def receive(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        """One PUBLISH from the broker: decode, tell the observers, queue its lines."""
        if not self._accepting:
            return
        received_at = self._clock()
        generation = self._link.generation
        if topic.startswith(PEER_PREFIX):  # is_peer_topic, without a call per message
            self._peer_done(payload, mid, qos)
            return
        obj = None
        try:
            parsed = parse_topic(topic)
            obj = load_json_object(payload)
            envelope = decode_object(parsed, obj, TimeWindow(received_at, self._horizon_s))
        except ProtocolError as exc:
            self._reject(topic, payload, mid, qos, exc, generation, obj)
            return
        self._received[envelope.kind] = self._received.get(envelope.kind, 0) + 1
        for observer in self.observers:
            try:
                observer(envelope, received_at)
            except Exception:
                self._metrics.inc("observer_errors_total")
                log.exception("observer %r failed on %s", observer, topic)
        message = envelope.message
        node_key = (envelope.yard, envelope.node) if envelope.node else None
        if node_key is not None:
            self._liveness.heard(node_key, received_at,
                                 message.state if isinstance(message, Status) else None)
        seq = message.seq if isinstance(message, _SEQ_TYPES) else None
        try:
            lines = self._line_builder.lines(envelope, received_at)
        except Exception as exc:
            # The contract should make this impossible; if a bug ever does
            # it, the message is rejected and counted, and the MQTT thread
            # keeps running.
            self._reject(topic, payload, mid, qos,
                         ProtocolError("unstorable", f"{type(exc).__name__}: {exc}"), generation,
                         obj)
            return
        # Lines, not the decoded message, wait in the queue: they are smaller
        # (measured: building them in the writer thread instead was no faster
        # under the GIL, and RSS went from ~57 to ~95 MB with a full queue).
        self._put(Item(lines, mid, qos, generation, node_key, seq))
        if seq is not None and received_at - message.ts > self._late_after_s:
            self._late.mark(message.ts)  # too late for the continuous queries

    def _reject(self, topic: str, payload: bytes, mid: int, qos: int, exc: ProtocolError,
                generation: int, obj: dict[str, Any] | None) -> None:
        self._received["invalid"] = self._received.get("invalid", 0) + 1
        self._metrics.inc("messages_rejected_total", reason=exc.reason)
        self._warn.warning(exc.reason, "rejected %s: %s: %s", topic[:120], exc.reason, exc)
        # Rejected for good: acknowledged (in order, through the writer) and
        # counted as done for the node's ack, so it does not wait for a gap.
        node_key, seq = rejected_seq(topic, payload, obj)
        self._put(Item(NO_LINES, mid, qos, generation, node_key, seq))

    def _peer_done(self, payload: bytes, mid: int, qos: int) -> None:
        """Another process of the share group stored (or refused) these seqs."""
        self._link.puback_one(mid, qos)
        try:
            announcement = decode_peer_done(payload)
        except ProtocolError as exc:
            self._metrics.inc("peer_messages_rejected_total", reason=exc.reason)
            self._warn.warning("peer", "ignoring a malformed share-group message: %s: %s",
                               exc.reason, exc)
            return
        if announcement.sender == self._client_id:
            return
        for key, ranges in announcement.done.items():
            for first, last in ranges:
                self._put(Item(NO_LINES, 0, 0, 0, key, first, peer=True,
                                       last_seq=last))


def rejected_seq(topic: str, payload: bytes, obj: dict[str, Any] | None
                 ) -> tuple[NodeKey | None, int | None]:
    """The node and ``seq`` of a refused message, so its seq counts as done (None: unknown).

    ``obj``: the payload's JSON object when it parsed; otherwise the payload
    is scanned (bounded, see ``contract.scan_seq``). Only telemetry and
    events carry a seq.
    """
    try:
        parsed = parse_topic(topic)
    except ProtocolError:
        return None, None
    if parsed.node is None or parsed.kind not in _SEQ_KINDS:
        return None, None
    key = (parsed.yard, parsed.node)
    if obj is None:
        return key, scan_seq(payload)
    seq = obj.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63:
        return key, seq
    return key, None
