"""MQTT -> InfluxDB ingest: every valid reading stored once in effect, acknowledged after the write.

The pipeline (input -> processors -> output, as in Telegraf)::

    broker --(paho network thread, receive path of mqtt_client.py)--> decode + validate
        --> observers --> lines (points.LineBuilder) --> bounded queue
        --> writer thread: batch by size/time --> InfluxDB /write --> 204
        --> MQTT PUBACK of each message --> node ``ack``

Delivery: a fixed client id, MQTT 5 with Clean Start off and a Session Expiry
Interval of days, QoS 1 and ``manual_ack``. The broker re-sends every message
we have not PUBACKed, so a crash between receive and write loses nothing;
points carry the reading's own time, so the re-sent copy overwrites itself.
The MQTT 5 Receive Maximum equals the queue bound: the broker never has more
unacknowledged messages in flight to us than the queue holds, which is the
back-pressure when InfluxDB is slow or down (the broker and the nodes'
outboxes hold the rest).

Node ``ack``: after each stored batch, each node that sent messages in it
gets ``{"seq": N}``, N the highest sequence number up to which everything is
stored (or rejected for good). A gap that stays open longer than
``gap_timeout_s`` is counted as lost (``seq_gap``) and skipped, so a node that
lost messages itself is not held back forever. The acknowledged sequence
numbers are kept in ``state_file`` across restarts.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from secadero.contract import (
    QOS,
    Ack,
    Envelope,
    Event,
    Status,
    Telemetry,
    TimeWindow,
    decode,
    encode,
    load_json_object,
    node_topic,
    parse_topic,
    subscription,
)
from secadero.errors import PermanentStorageError, ProtocolError, RetryableStorageError
from secadero.server.downsample import LateHours
from secadero.server.influx import (
    BatchTooLarge,
    DatabaseMissing,
    Writer,
    WriteRejected,
    make_writer,
)
from secadero.server.metrics import Health, MetricsServer, Registry
from secadero.server.mqtt_client import FastReadClient
from secadero.server.partial_write import Rejections
from secadero.server.points import LineBuilder, node_point, to_lines
from secadero.settings import ServerSettings

log = logging.getLogger(__name__)

Observer = Callable[[Envelope, float], None]
NodeKey = tuple[str, str]

# The MQTT 5 Receive Maximum is a two-byte integer.
MAX_RECEIVE_MAXIMUM = 65535
SUBSCRIBED_KINDS = ("telemetry", "event", "status")
_NO_LINES: list[bytes] = []
# A node's first message has seq 1 (edge/outbox.py).
FIRST_SEQ = 1
# Where the processes of a share group tell each other what they stored.
PEER_ROOT = "secadero-ingest/v1"
# An ack paho has held this long without the broker's PUBACK (a lost
# connection paho will re-send it on) no longer holds newer ones back.
_ACK_STUCK_S = 30.0
# How often the writer looks for new messages while its batch is not full:
# polling costs far less than a condition variable per message.
_POLL_S = 0.005
# Batch write latency buckets (seconds), for the histogram.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Exported as secadero_ingest_<name>.
INGEST_METRICS = {
    "messages_received_total": ("counter", "MQTT messages received, by topic kind"),
    "messages_rejected_total": ("counter", "messages rejected for good, by reason"),
    "messages_stored_total": ("counter", "messages whose points InfluxDB accepted"),
    "points_stored_total": ("counter", "points InfluxDB accepted"),
    "points_set_aside_total": ("counter", "points InfluxDB refused for good (see set_aside_file)"),
    "write_errors_total": ("counter", "failed write attempts, by kind (retried)"),
    "write_isolation_fallbacks_total": ("counter", "400s whose answer did not account for "
                                        "every point: rest written again (step=retry), "
                                        "then bisected (step=bisect)"),
    "seq_gap_total": ("counter", "sequence numbers counted as lost after the gap timeout"),
    "observer_errors_total": ("counter", "exceptions raised by observers (alert engine)"),
    "nodes_offline_total": ("counter", "nodes marked offline after silence"),
    "downsample_runs_total": ("counter", "rounds that downsampled hours of late readings again"),
    "downsample_hours_total": ("counter", "hours downsampled again for late readings"),
    "downsample_errors_total": ("counter", "failed downsampling of late hours, by kind"),
    "downsample_hours_pending": ("gauge", "hours of late readings waiting to be downsampled"),
    "queue_depth": ("gauge", "messages waiting for the writer"),
    "mqtt_connected": ("gauge", "1 while connected to the broker"),
    "influx_up": ("gauge", "1 when the last write or start-up check succeeded"),
}


# --------------------------------------------------------------------------
# sequence tracking (pure: the clock is an argument)


@dataclass
class _NodeSeq:
    watermark: int
    # Sequence numbers done above the watermark, as sorted, disjoint,
    # non-adjacent inclusive ranges [first, last]: in a share group the
    # other process's numbers come as ranges, and single numbers here would
    # mean one entry per reading while the processes are out of step.
    pending: list[list[int]] = field(default_factory=list)
    gap_since: float | None = None


def _add_range(ranges: list[list[int]], first: int, last: int) -> None:
    """Add [first, last] to sorted disjoint ranges, merging what overlaps or touches."""
    i = bisect.bisect_left(ranges, first - 1, key=lambda r: r[1])
    j = i
    while j < len(ranges) and ranges[j][0] <= last + 1:
        first, last = min(first, ranges[j][0]), max(last, ranges[j][1])
        j += 1
    ranges[i:j] = [[first, last]]


def _drop_through(ranges: list[list[int]], last: int) -> None:
    """Remove every number up to ``last`` from sorted disjoint ranges."""
    while ranges and ranges[0][1] <= last:
        ranges.pop(0)
    if ranges and ranges[0][0] <= last:
        ranges[0][0] = last + 1


class SeqTracker:
    """Per node, the highest ``seq`` up to which every message is stored or rejected.

    ``done()`` records one finished message, ``done_range()`` a run of them;
    ``expire()`` closes gaps that
    stayed open longer than ``gap_timeout_s`` and says how many sequence
    numbers each skipped. A node not in the state file starts at 0 (nodes
    count from 1): a node that measured before this server ever ran has its
    first readings still in its outbox, and acknowledging from the first
    ``seq`` seen would make it delete readings never stored. If the state
    file was lost, the first ack of a long-running node waits
    ``gap_timeout_s`` and counts a gap that was in fact stored before.
    """

    def __init__(self, gap_timeout_s: float, watermarks: dict[NodeKey, int] | None = None
                 ) -> None:
        self.gap_timeout_s = gap_timeout_s
        self._nodes: dict[NodeKey, _NodeSeq] = {
            key: _NodeSeq(value) for key, value in (watermarks or {}).items()}
        self._gapped: set[NodeKey] = set()

    def watermark(self, key: NodeKey) -> int | None:
        state = self._nodes.get(key)
        return None if state is None else state.watermark

    def done(self, key: NodeKey, seq: int, now: float) -> None:
        self.done_range(key, seq, seq, now)

    def done_range(self, key: NodeKey, first: int, last: int, now: float) -> None:
        """Every ``seq`` from ``first`` to ``last`` is done (as ``done()`` on each, in order)."""
        state = self._nodes.get(key)
        if state is None:
            state = self._nodes[key] = _NodeSeq(FIRST_SEQ - 1)
        if last <= state.watermark:
            return  # duplicate deliveries, or a node that restarted its counter
        first = max(first, state.watermark + 1)
        if first == state.watermark + 1:
            state.watermark = last
            _drop_through(state.pending, last)
            self._advance(key, state, now)
        else:
            _add_range(state.pending, first, last)
            if state.gap_since is None:
                state.gap_since = now
                self._gapped.add(key)

    def _advance(self, key: NodeKey, state: _NodeSeq, now: float) -> None:
        pending = state.pending
        if pending and pending[0][0] == state.watermark + 1:
            state.watermark = pending.pop(0)[1]
        if pending:
            if state.gap_since is not None:
                state.gap_since = now  # the old gap closed; a new one starts now
        else:
            state.gap_since = None
            self._gapped.discard(key)

    def expire(self, now: float) -> list[tuple[NodeKey, int]]:
        """Skip gaps older than the timeout: ``(node, sequence numbers lost)`` for each."""
        skipped: list[tuple[NodeKey, int]] = []
        for key in list(self._gapped):
            state = self._nodes[key]
            if state.gap_since is None or now - state.gap_since < self.gap_timeout_s:
                continue
            first = state.pending[0][0]
            skipped.append((key, first - state.watermark - 1))
            state.watermark = first - 1
            state.gap_since = None
            self._advance(key, state, now)
            if state.pending:
                state.gap_since = now
                self._gapped.add(key)
        return skipped

    def snapshot(self) -> dict[NodeKey, int]:
        return {key: state.watermark for key, state in self._nodes.items()}


def load_state(path: Path | None) -> dict[NodeKey, int]:
    """Acknowledged sequence numbers from the state file (empty if missing or unreadable)."""
    if path is None or not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {tuple(k.split("/", 1)): int(v)  # type: ignore[misc]
                for k, v in raw.get("acked_seq", {}).items() if k.count("/") == 1}
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return {}


def save_state(path: Path, watermarks: dict[NodeKey, int]) -> None:
    """Write the state file atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"acked_seq": {f"{y}/{n}": s for (y, n), s in
                                             sorted(watermarks.items())}}), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# the ingest


@dataclass(slots=True)
class _Item:
    """One received message on its way to the writer."""

    lines: list[bytes]
    mid: int
    qos: int
    generation: int
    node: NodeKey | None
    seq: int | None
    # Stored by another process of the share group (counts for the ack only):
    # seq to last_seq, one item for the whole range.
    peer: bool = False
    last_seq: int | None = None


class _RateLimitedLog:
    """Log a repeated warning at most once per ``interval_s`` per key, counting the rest."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-1e9, 0))
        if now - last < self.interval_s:
            self._last[key] = (last, suppressed + 1)
            return
        self._last[key] = (now, 0)
        if suppressed:
            message += f" ({suppressed} more like it not logged)"
        log.warning(message, *args)


class Ingest:
    """Subscribes to every yard, stores readings in InfluxDB, acknowledges after the write.

    Usable in-process (tests, the demo) and by ``secadero server run``::

        with Ingest(settings, observers=[engine.on_message]) as ingest:
            ...

    ``observers`` are called for every valid message right after decoding,
    before storage, on the MQTT thread: alert evaluation never waits on
    storage. They must be quick and must not block; an exception is logged
    and counted, never stops the ingest.
    """

    def __init__(self, settings: ServerSettings, *, observers: Iterable[Observer] = (),
                 writer: Writer | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, registry: Registry | None = None,
                 health: Health | None = None) -> None:
        self.settings = settings
        self.observers: list[Observer] = list(observers)
        self.clock = clock
        self.registry = registry or Registry()
        self.metrics = self.registry.part("ingest", INGEST_METRICS)
        self.metrics.histogram("batch_write_seconds", LATENCY_BUCKETS_S,
                               "time from a batch's first write attempt to InfluxDB's 204")
        self.health_checks = health or Health()
        self._rng = rng or random.Random()
        s = settings.ingest
        self._writer: Writer = writer or make_writer(settings.influxdb)
        # Filled by the MQTT thread, emptied by the writer. A deque, not a
        # queue.Queue: its lock and condition cost ~10 us a message (profiled).
        # Bounded twice: the MQTT 5 Receive Maximum asks the broker for no
        # more unacknowledged messages than queue_max, and, because Mosquitto
        # 2.0.11 was measured sending far more than that while PUBACKs flow
        # (190,000 queued against a Receive Maximum of 10,000), the MQTT
        # thread stops reading the socket while the queue is full.
        self._queue: collections.deque[_Item] = collections.deque()
        self._queue_max = s.queue_max
        self._receive_maximum = min(s.queue_max, MAX_RECEIVE_MAXIMUM)
        self._horizon_s = s.horizon_days * 86400.0
        self._tracker = SeqTracker(s.gap_timeout_s, load_state(s.state_file))
        self._late = LateHours(settings, self.metrics, lambda: len(self._queue), clock)
        self._last_heard: dict[NodeKey, float] = {}
        self._offline: set[NodeKey] = set()
        self._extra_lines: list[bytes] = []
        self._line_builder = LineBuilder()
        # Per node: the last ack published (paho's handle, when) and a newer
        # watermark waiting for it to be delivered (see _send_ack).
        self._acks_in_flight: dict[NodeKey, tuple[mqtt.MQTTMessageInfo, float]] = {}
        self._acks_waiting: dict[NodeKey, int] = {}
        # The same for this process's announcements to its share group.
        self._announce_in_flight: tuple[mqtt.MQTTMessageInfo, float] | None = None
        self._announce_waiting: dict[NodeKey, list[int]] = {}
        self._ack_lock = threading.Lock()
        self._generation = 0
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._draining = False
        self._idle = False
        self._wake = threading.Event()
        self._drain_deadline = 0.0
        self._prepared = threading.Event()
        self._mqtt_down_since: float | None = time.monotonic()
        self._influx_down_since: float | None = None
        self._last_batch_log = 0.0
        self._batch_log: tuple[int, int] = (0, 0)
        self._warn = _RateLimitedLog()
        self._writer_thread = threading.Thread(target=self._writer_main, name="ingest-writer",
                                               daemon=True)
        self._client: FastReadClient = self._make_client()
        self._http: MetricsServer | None = None
        self.metrics.gauges["queue_depth"] = lambda: len(self._queue)
        self._received: dict[str, int] = {}
        self.metrics.labelled["messages_received_total"] = ("kind", self._received)
        self.metrics.gauges["mqtt_connected"] = lambda: 1 if self._connected.is_set() else 0
        self.metrics.gauges["influx_up"] = lambda: 0 if self._influx_down_since else 1

    # -- public API

    def add_observer(self, observer: Observer) -> None:
        self.observers.append(observer)

    def start(self) -> Ingest:
        s = self.settings
        self._http = MetricsServer(self.registry, self.health, host=s.ingest.http_host,
                                   port=s.ingest.http_port).start()
        self._writer_thread.start()
        self._late.start()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = s.ingest.session_expiry_s
        properties.ReceiveMaximum = self._receive_maximum
        self._client.connect_async(s.mqtt.host, s.mqtt.port, keepalive=s.mqtt.keepalive_s,
                                   clean_start=False, properties=properties)
        self._client.loop_start()
        log.info("ingest %s: broker %s:%d, InfluxDB %s (%s), batch %d / %g s",
                 s.mqtt.client_id, s.mqtt.host, s.mqtt.port, s.influxdb.url,
                 s.influxdb.database if s.influxdb.api == 1 else s.influxdb.bucket,
                 s.ingest.batch_size, s.ingest.flush_interval_s)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop cleanly: store and acknowledge what is queued (up to ``timeout_s``), disconnect.

        Messages that arrive meanwhile are left unacknowledged; the broker
        keeps them in our session for the next start.
        """
        self._draining = True
        self._drain_deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self._wake.set()
        if self._writer_thread.is_alive():
            self._writer_thread.join(timeout_s + 5)
        self._send_waiting_acks(all_now=True)  # the last word each node is owed
        self._send_announcement(all_now=True)
        self._late.stop()
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._writer.close()
        if self._http is not None:
            self._http.close()
        self._save_state()

    def __enter__(self) -> Ingest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def publish(self, topic: str, payload: bytes, retain: bool = False,
                qos: int = QOS) -> mqtt.MQTTMessageInfo:
        """Publish through the ingest's broker connection (the alert engine's output)."""
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        return self._connected.wait(timeout_s)

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """True once subscribed to the broker and the database is prepared."""
        return self._connected.wait(timeout_s) and self._prepared.wait(timeout_s)

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    @property
    def running(self) -> bool:
        """False once the writer thread has died (a bug): the process should exit."""
        return self._writer_thread.is_alive() or self._stopping.is_set()

    def wait_while_running(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set; raise SystemExit if the writer thread dies.

        Exiting non-zero lets systemd restart the process: an ingest that stopped
        storing must not hide behind a live one, and unacknowledged messages
        wait in the broker session meanwhile.
        """
        while not stop.wait(1.0):
            if not self.running:
                raise SystemExit("ingest writer stopped unexpectedly; exiting")

    def health(self) -> list[str]:
        """Reasons to be unhealthy (empty = healthy)."""
        problems: list[str] = []
        if not self.running:
            problems.append("the writer thread stopped; see the log")
        limit = self.settings.ingest.unhealthy_after_s
        now = time.monotonic()
        if self._mqtt_down_since is not None and now - self._mqtt_down_since > limit:
            problems.append(f"broker unreachable for {now - self._mqtt_down_since:.0f} s")
        if self._influx_down_since is not None and now - self._influx_down_since > limit:
            problems.append(f"InfluxDB unreachable for {now - self._influx_down_since:.0f} s")
        return problems + self.health_checks.problems()

    # -- MQTT (paho network thread)

    def _make_client(self) -> FastReadClient:
        m = self.settings.mqtt
        client = FastReadClient(CallbackAPIVersion.VERSION2, client_id=m.client_id or "",
                                protocol=mqtt.MQTTv5, manual_ack=True)
        if m.username:
            client.username_pw_set(m.username, m.password)
        if m.tls:
            client.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish_received = self._receive
        # Strictly above: with InfluxDB down no PUBACKs flow, the broker keeps
        # to the Receive Maximum and the queue stays at or below queue_max, so
        # the socket is still read (PINGRESPs: a paused reader for longer than
        # the keepalive would be taken for a dead connection).
        client.pause_reading = lambda: len(self._queue) > self._queue_max
        return client

    def _topics(self) -> list[str]:
        group = self.settings.ingest.share_group
        topics = [subscription(kind) for kind in SUBSCRIBED_KINDS]  # type: ignore[arg-type]
        if not group:
            return topics
        # Shared: each message goes to one process of the group. Every
        # process also hears what the others stored (a plain subscription),
        # so each can compute the nodes' cumulative acks.
        return [f"$share/{group}/{t}" for t in topics] + [self._peer_topic]

    @property
    def _peer_topic(self) -> str:
        return f"{PEER_ROOT}/{self.settings.ingest.share_group}/done"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        with self._ack_lock:
            self._generation += 1
        if not flags.session_present:
            log.info("new broker session for %s (nothing was queued for us)",
                     self.settings.mqtt.client_id)
        # Subscribing on every connect: a broker that lost its state (no
        # persistence, expired session) would otherwise send us nothing.
        client.subscribe([(t, mqtt.SubscribeOptions(qos=QOS)) for t in self._topics()])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[Any], properties: Any) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused subscriptions %s: %s", self._topics(), failed)
            return
        self._mqtt_down_since = None
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        with self._ack_lock:
            # Message ids of the old connection must never be acknowledged on
            # the new one: the broker re-sends those messages with new ids.
            self._generation += 1
        self._connected.clear()
        if self._mqtt_down_since is None:
            self._mqtt_down_since = time.monotonic()
        if not self._draining:
            log.warning("disconnected from the broker: %s; reconnecting", reason_code)
            # Jitter: a whole region's ingest processes must not reconnect in step.
            client.reconnect_delay_set(min_delay=self._rng.uniform(0.5, 1.5), max_delay=30)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # The few publishes paho decodes itself (see mqtt_client.py).
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # Not UTF-8: the replacement characters fail the id rules, so it
            # is rejected (and acknowledged) like any bad topic.
            topic = msg._topic.decode("utf-8", "replace")
        self._receive(topic, msg.payload, msg.mid, msg.qos)

    def _receive(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        """One PUBLISH from the broker: decode, tell the observers, queue its lines."""
        if self._draining:
            return  # not acknowledged: the broker keeps it for our next session
        received_at = self.clock()
        generation = self._generation
        if topic.startswith(PEER_ROOT):
            self._on_peer_done(payload, mid, qos)
            return
        try:
            envelope = decode(topic, payload, TimeWindow(received_at, self._horizon_s))
        except ProtocolError as exc:
            self._reject(topic, payload, mid, qos, exc, generation)
            return
        # A plain dict: only this thread writes it (the metrics lock and label
        # sorting cost more than the rest of this function).
        self._received[envelope.kind] = self._received.get(envelope.kind, 0) + 1
        for observer in self.observers:
            try:
                observer(envelope, received_at)
            except Exception:
                self.metrics.inc("observer_errors_total")
                log.exception("observer %r failed on %s", observer, topic)
        message = envelope.message
        node_key = (envelope.yard, envelope.node) if envelope.node else None
        if node_key is not None:
            self._last_heard[node_key] = received_at
            if isinstance(message, Status):
                # The node said so itself (its Last Will or a fresh start):
                # silence is not news.
                if message.state == "offline":
                    self._offline.add(node_key)
                else:
                    self._offline.discard(node_key)
        seq = message.seq if isinstance(message, Telemetry | Event) else None
        try:
            lines = self._line_builder.lines(envelope, received_at)
        except Exception as exc:
            # The contract should make this impossible; if a bug ever does
            # it, the message is rejected and counted, and the MQTT thread
            # (which has no one above it to catch this) keeps running.
            self._reject(topic, payload, mid, qos,
                         ProtocolError("unstorable", f"{type(exc).__name__}: {exc}"), generation)
            return
        # Lines, not the decoded message, wait in the queue: they are smaller
        # (measured: building them in the writer thread instead was no faster
        # under the GIL, and RSS went from ~57 to ~95 MB with a full queue).
        self._queue.append(_Item(lines, mid, qos, generation, node_key, seq))
        if seq is not None and received_at - message.ts > self._late.after_s:
            self._late.mark(message.ts)  # too late for the continuous queries
        if self._idle:
            self._wake.set()

    def _on_peer_done(self, payload: bytes, mid: int, qos: int) -> None:
        """Another process of the share group stored (or rejected) these seqs."""
        with self._ack_lock:
            self._client.ack(mid, qos)
        try:
            body = json.loads(payload)
            if body.get("from") == self.settings.mqtt.client_id:
                return
            for key, ranges in body["done"].items():
                yard, node = key.split("/", 1)
                for first, last in ranges:
                    self._queue.append(_Item(_NO_LINES, 0, 0, 0, (yard, node), int(first),
                                             peer=True, last_seq=int(last)))
            if self._idle:
                self._wake.set()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._warn.warning("peer", "ignoring a malformed share-group message: %s", exc)

    def _reject(self, topic: str, payload: bytes, mid: int, qos: int, exc: ProtocolError,
                generation: int) -> None:
        self._received["invalid"] = self._received.get("invalid", 0) + 1
        self.metrics.inc("messages_rejected_total", reason=exc.reason)
        self._warn.warning(exc.reason, "rejected %s: %s: %s", topic[:120], exc.reason, exc)
        # Rejected for good: acknowledged (in order, through the writer) and
        # counted as done for the node's ack, so it does not wait for a gap.
        node_key, seq = _seq_of_rejected(topic, payload)
        self._queue.append(_Item(_NO_LINES, mid, qos, generation, node_key, seq))
        if self._idle:
            self._wake.set()

    # -- writer thread

    def _writer_main(self) -> None:
        try:
            self._prepare()
            while True:
                batch = self._collect()
                if batch or self._extra_lines:
                    self._store(batch)
                self._late.stored(len(batch))
                self._periodic()
                if self._stopping.is_set() and (not self._queue or not self._in_time()):
                    break
        except Exception:
            log.exception("ingest writer stopped by an unexpected error")
            raise

    def _in_time(self) -> bool:
        return not self._draining or time.monotonic() < self._drain_deadline

    def _prepare(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._writer.prepare()
                self._influx_down_since = None
                self._prepared.set()
                return
            except RetryableStorageError as exc:
                attempt += 1
                self._influx_down(exc)
                self._stopping.wait(self._backoff_s(attempt))
            except PermanentStorageError as exc:
                # e.g. a write-only user may not create databases: carry on,
                # the writes will say whether the database is there.
                log.warning("could not prepare the database (continuing): %s", exc)
                self._prepared.set()
                return

    def _backoff_s(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): spreads retries of many processes.
        return self._rng.uniform(0, min(30.0, 0.2 * 2 ** min(attempt, 10)))

    def _influx_down(self, exc: Exception) -> None:
        if self._influx_down_since is None:
            self._influx_down_since = time.monotonic()
        self.metrics.inc("write_errors_total", kind="retryable")
        self._warn.warning("influx", "InfluxDB write failed, retrying: %s", exc)

    def _collect(self) -> list[_Item]:
        """Up to ``batch_size`` points, or what came within ``flush_interval_s`` of the first."""
        s = self.settings.ingest
        pending = self._queue
        if not pending:
            # Idle: sleep until the MQTT thread hands over a message (it sets
            # the event only while we wait, so a busy stream costs no syscalls).
            self._wake.clear()
            self._idle = True
            if not pending:
                self._wake.wait(0.25)
            self._idle = False
            if not pending:
                return []
        batch: list[_Item] = []
        points = 0
        deadline = time.monotonic() + s.flush_interval_s
        popleft = pending.popleft
        while points < s.batch_size:
            try:
                item = popleft()
            except IndexError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(remaining, _POLL_S))
                continue
            batch.append(item)
            points += len(item.lines)
        return batch

    def _store(self, batch: Sequence[_Item]) -> None:
        lines = [line for item in batch for line in item.lines]
        extra, self._extra_lines = self._extra_lines, []
        lines.extend(extra)
        started = time.monotonic()
        if lines and not self._write_with_retry(lines):
            self._extra_lines = extra + self._extra_lines
            return  # stopping with InfluxDB down: leave the messages unacknowledged
        self.metrics.observe("batch_write_seconds", time.monotonic() - started)
        now = self.clock()
        touched: set[NodeKey] = set()
        with self._ack_lock:
            generation = self._generation
            self._client.ack_many([item.mid for item in batch
                                   if item.qos == 1 and item.generation == generation])
        tracker = self._tracker
        done: dict[NodeKey, list[int]] = {}
        for item in batch:
            if item.node is not None:
                if item.last_seq is not None:
                    tracker.done_range(item.node, item.seq, item.last_seq, now)
                elif item.seq is not None:
                    tracker.done(item.node, item.seq, now)
                    if not item.peer:
                        done.setdefault(item.node, []).append(item.seq)
                touched.add(item.node)
                if item.seq is not None and item.lines and item.node in self._offline:
                    self._offline.discard(item.node)
                    self._extra_lines.append(to_lines([node_point(*item.node, now,
                                                                  online=True)])[0])
        stored = sum(1 for item in batch if item.lines is not _NO_LINES)
        self.metrics.inc("messages_stored_total", stored)
        self.metrics.inc("points_stored_total", len(lines))
        if touched:
            # Written before the acks go out: a node must never hold an ack
            # above what a restarted server remembers, or the server would
            # wait gap_timeout_s for readings the node has already deleted.
            self._save_state()
            self._ack_nodes(touched)
        if self.settings.ingest.share_group and done:
            self._announce(done)
        self._log_batch(stored, len(lines), time.monotonic() - started)

    def _write_with_retry(self, lines: list[bytes]) -> bool:
        attempt = 0
        while True:
            try:
                self._write_lines(lines)
                if self._influx_down_since is not None:
                    log.info("InfluxDB writes succeed again after %.0f s",
                             time.monotonic() - self._influx_down_since)
                self._influx_down_since = None
                return True
            except RetryableStorageError as exc:
                attempt += 1
                self._influx_down(exc)
                if isinstance(exc, DatabaseMissing):
                    with contextlib.suppress(RetryableStorageError, PermanentStorageError):
                        self._writer.prepare()
                        log.warning("the database was missing: created it again")
                        continue
                if self._draining and not self._in_time():
                    return False
                delay = self._backoff_s(attempt)
                if self._draining:
                    delay = min(delay, max(0.0, self._drain_deadline - time.monotonic()))
                    time.sleep(delay)
                else:
                    self._stopping.wait(delay)

    def _write_lines(self, lines: list[bytes]) -> None:
        """Write, splitting on 413; on 400 set aside exactly what InfluxDB refused.

        InfluxDB 1.x answers 400 "partial write" after storing the valid
        points. ``Rejections`` (partial_write.py) reads which lines it
        refused from the answer and sets them aside with the server's
        reason, writing nothing again when the answer accounts for every
        line; otherwise it retries the rest once, then bisects.
        """
        try:
            self._writer.write(b"\n".join(lines))
        except BatchTooLarge as exc:
            self.metrics.inc("write_errors_total", kind="too_large")
            if len(lines) == 1:
                self._set_aside(lines[0], str(exc))
                return
            self._write_halves(lines)
        except WriteRejected as exc:
            self.metrics.inc("write_errors_total", kind="rejected")
            Rejections(self._writer, self._set_aside, self.metrics,
                       warn=self._warn.warning).handle(lines, exc)

    def _write_halves(self, lines: list[bytes]) -> None:
        middle = len(lines) // 2
        self._write_lines(lines[:middle])
        self._write_lines(lines[middle:])

    def _set_aside(self, line: bytes, reason: str) -> None:
        self.metrics.inc("points_set_aside_total")
        text = line.decode("utf-8", "replace")
        self._warn.warning("set_aside", "InfluxDB refused a point for good (set aside): %s: %s",
                           reason[:300], text[:300])
        path = self.settings.ingest.set_aside_file
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"at": self.clock(), "reason": reason, "line": text}) + "\n")
        except OSError as exc:
            log.error("cannot write %s: %s", path, exc)

    def _announce(self, done: dict[NodeKey, list[int]]) -> None:
        """Tell the share group which seqs this process stored, as ranges.

        Like node acks (``_send_ack``), at most one announcement waits in
        paho for the broker: what later batches stored joins the next one.
        """
        for key, seqs in done.items():
            self._announce_waiting.setdefault(key, []).extend(seqs)
        self._send_announcement()

    def _send_announcement(self, *, all_now: bool = False) -> None:
        if not self._announce_waiting:
            return
        in_flight = self._announce_in_flight
        if not all_now and _waiting_for_broker(in_flight):
            return
        done, self._announce_waiting = self._announce_waiting, {}
        body = {"from": self.settings.mqtt.client_id,
                "done": {f"{y}/{n}": _ranges(seqs) for (y, n), seqs in done.items()}}
        info = self._client.publish(self._peer_topic, json.dumps(body, separators=(",", ":")),
                                    qos=QOS)
        self._announce_in_flight = (info, time.monotonic())

    def _ack_nodes(self, nodes: Iterable[NodeKey]) -> None:
        for key in nodes:
            watermark = self._tracker.watermark(key)
            if watermark is not None and watermark >= 0:
                self._send_ack(key, watermark)

    def _send_ack(self, key: NodeKey, watermark: int) -> None:
        """Publish a node's ack, at most one in flight per node.

        Acks are cumulative, so while the previous one still waits in paho
        for the broker's PUBACK, a newer watermark replaces any that waits
        behind it instead of queueing up: at full speed the broker's PUBACKs
        come behind thousands of incoming messages, and one ack per node per
        batch piled up in paho (4,900 after 200,000 readings, measured).
        """
        in_flight = self._acks_in_flight.get(key)
        if _waiting_for_broker(in_flight):
            self._acks_waiting[key] = watermark
            return
        self._acks_waiting.pop(key, None)
        yard, node = key
        info = self._client.publish(node_topic(yard, node, "ack"), encode(Ack(watermark)),
                                    qos=QOS)
        self._acks_in_flight[key] = (info, time.monotonic())

    def _send_waiting_acks(self, *, all_now: bool = False) -> None:
        for key, watermark in list(self._acks_waiting.items()):
            if all_now or not _waiting_for_broker(self._acks_in_flight.get(key)):
                self._acks_in_flight.pop(key, None)
                self._send_ack(key, watermark)

    def _periodic(self) -> None:
        self._send_waiting_acks()
        self._send_announcement()
        now = self.clock()
        s = self.settings.ingest
        skipped = self._tracker.expire(now)
        for (yard, node), lost in skipped:
            self.metrics.inc("seq_gap_total", lost)
            log.warning("%s/%s: %d sequence numbers never arrived within %g s; counted as lost",
                        yard, node, lost, s.gap_timeout_s)
            self._extra_lines.append(to_lines([node_point(yard, node, now, seq_gap=lost)])[0])
        if skipped:
            self._save_state()
            self._ack_nodes(key for key, _ in skipped)
        for key, heard in list(self._last_heard.items()):
            if key not in self._offline and now - heard > s.offline_after_s:
                self._offline.add(key)
                self.metrics.inc("nodes_offline_total")
                log.info("%s/%s silent for %.0f s: marked offline", *key, now - heard)
                self._extra_lines.append(to_lines([node_point(*key, now, online=False)])[0])

    def _save_state(self) -> None:
        path = self.settings.ingest.state_file
        if path is None:
            return
        try:
            save_state(path, self._tracker.snapshot())
        except OSError as exc:
            self._warn.warning("state", "cannot save %s: %s", path, exc)

    def _log_batch(self, messages: int, points: int, seconds: float) -> None:
        # At most one INFO line per 10 s, summing the batches in between.
        total_messages, total_points = self._batch_log
        total_messages += messages
        total_points += points
        now = time.monotonic()
        if now - self._last_batch_log >= 10.0:
            log.info("stored %d messages (%d points); last batch %.0f ms; queue %d",
                     total_messages, total_points, seconds * 1000, len(self._queue))
            self._last_batch_log = now
            total_messages = total_points = 0
        self._batch_log = (total_messages, total_points)


def _waiting_for_broker(sent: tuple[mqtt.MQTTMessageInfo, float] | None) -> bool:
    """True while a publish (paho's handle, when) still waits for the broker's PUBACK.

    An ack or announcement held longer than ``_ACK_STUCK_S`` (a lost
    connection paho will re-send it on) no longer counts: newer ones go out.
    """
    return (sent is not None and not sent[0].is_published()
            and time.monotonic() - sent[1] < _ACK_STUCK_S)


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7, 8] -> [(1, 3), (7, 8)]."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def _seq_of_rejected(topic: str, payload: bytes) -> tuple[NodeKey | None, int | None]:
    """Best effort: the node and ``seq`` of a rejected message, so its seq counts as done."""
    with contextlib.suppress(ProtocolError):
        parsed = parse_topic(topic)
        if parsed.node is None or parsed.kind not in ("telemetry", "event"):
            return None, None
        obj = load_json_object(payload)
        seq = obj.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63:
            return (parsed.yard, parsed.node), seq
        return (parsed.yard, parsed.node), None
    return None, None


def run(settings: ServerSettings, stop: threading.Event,
        observers: Sequence[Observer] = ()) -> None:
    """Run the ingest until ``stop`` is set (the body of ``secadero server run``)."""
    ingest = Ingest(settings, observers=observers).start()
    try:
        ingest.wait_while_running(stop)
    finally:
        ingest.stop()
        log.info("ingest stopped")


__all__ = ["Ingest", "Observer", "SeqTracker", "run"]
