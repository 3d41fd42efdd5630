"""The acknowledgements stage: MQTT PUBACKs, sequence tracking, node acks, the state file.

Runs on the writer thread, after each batch InfluxDB accepted (``stored``)
and on each turn of its loop (``tick``); nothing here is touched by another
thread, so it has no lock. In order, for a stored batch:

1. PUBACK each QoS 1 message to the broker (only those of the current
   connection: the broker re-sends the others with new ids);
2. mark each message's ``seq`` done in ``SeqTracker``;
3. write the state file (temp file, fsync, rename, fsync of the directory):
   a node must never hold an ack above what a restarted server remembers,
   or the server would wait ``gap_timeout_s`` for readings the node deleted;
4. publish each touched node's ``ack`` (at most one in flight per node);
5. in a share group, announce the seqs this process stored to the others.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from secadero.contract import (
    Ack,
    NodeKey,
    PeerDone,
    encode,
    encode_peer_done,
    node_topic,
    peer_topic,
    seq_ranges,
)
from secadero.server.ingest.items import Item
from secadero.server.ingest.warn import RateLimitedLog
from secadero.server.metrics import Metrics
from secadero.server.points import node_point, to_lines

log = logging.getLogger(__name__)

# A node's first message has seq 1 (edge/outbox.py).
FIRST_SEQ = 1
# An ack paho has held this long without the broker's PUBACK (a lost
# connection paho will re-send it on) no longer holds newer ones back.
ACK_STUCK_S = 30.0

Publish = Callable[[str, bytes], mqtt.MQTTMessageInfo]


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
    ``expire()`` closes gaps that stayed open longer than ``gap_timeout_s``
    and says how many sequence numbers each skipped. A node not in the
    state file starts at 0 (nodes count from 1): a node that measured before
    this server ever ran has its first readings still in its outbox, and
    acknowledging from the first ``seq`` seen would make it delete readings
    never stored. If the state file was lost, the first ack of a
    long-running node waits ``gap_timeout_s`` and counts a gap that was in
    fact stored before.
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

    def pending(self, key: NodeKey) -> list[tuple[int, int]]:
        """The ranges done above the watermark, waiting for a gap below them to close."""
        state = self._nodes.get(key)
        return [] if state is None else [(first, last) for first, last in state.pending]

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


# --------------------------------------------------------------------------
# the state file


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
    """Write the state file durably: temp file, fsync, rename, fsync of the directory.

    Without the fsyncs a power cut (a yard's Pi on a solar battery) could
    leave the rename on disk before the data, or neither: the acks already
    sent would then be above what the server remembers.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    body = json.dumps({"acked_seq": {f"{y}/{n}": s for (y, n), s in
                                     sorted(watermarks.items())}}).encode()
    with tmp.open("wb") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# --------------------------------------------------------------------------
# acknowledging


def waiting_for_broker(sent: tuple[mqtt.MQTTMessageInfo, float] | None, now: float) -> bool:
    """True while a publish (paho's handle, when) still waits for the broker's PUBACK.

    One held longer than ``ACK_STUCK_S`` (a lost connection paho will re-send
    it on) no longer counts: newer ones go out.
    """
    return sent is not None and not sent[0].is_published() and now - sent[1] < ACK_STUCK_S


class Acknowledger:
    """Tells the broker, the nodes and the share group what is stored; keeps the state file.

    ``publish(topic, payload)`` sends at QoS 1 on the ingest's connection;
    ``puback(items)`` PUBACKs the messages of the current connection.
    ``share_group`` empty: no announcements. ``monotonic``: the clock for
    "stuck in paho" (a test moves it).
    """

    def __init__(self, tracker: SeqTracker, *, publish: Publish,
                 puback: Callable[[Sequence[Item]], None], metrics: Metrics,
                 state_file: Path | None = None, client_id: str = "", share_group: str = "",
                 warn: RateLimitedLog | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.tracker = tracker
        self._publish = publish
        self._puback = puback
        self._metrics = metrics
        self._state_file = state_file
        self._client_id = client_id
        self._peer_topic = peer_topic(share_group) if share_group else None
        self._warn = warn or RateLimitedLog()
        self._monotonic = monotonic
        # Per node: the last ack published (paho's handle, when) and a newer
        # watermark waiting for it to be delivered (see send_ack).
        self._acks_in_flight: dict[NodeKey, tuple[mqtt.MQTTMessageInfo, float]] = {}
        self._acks_waiting: dict[NodeKey, int] = {}
        # The same for this process's announcements to its share group.
        self._announce_in_flight: tuple[mqtt.MQTTMessageInfo, float] | None = None
        self._announce_waiting: dict[NodeKey, list[int]] = {}

    def stored(self, batch: Sequence[Item], now: float) -> None:
        """InfluxDB accepted ``batch`` (or it held nothing to write): acknowledge it all."""
        self._puback(batch)
        tracker = self.tracker
        touched: set[NodeKey] = set()
        mine: dict[NodeKey, list[int]] = {}
        for item in batch:
            key = item.node
            if key is None:
                continue
            touched.add(key)
            if item.last_seq is not None:
                tracker.done_range(key, item.seq, item.last_seq, now)  # type: ignore[arg-type]
            elif item.seq is not None:
                tracker.done(key, item.seq, now)
                if not item.peer:
                    mine.setdefault(key, []).append(item.seq)
        if touched:
            self.save()  # before the acks go out: see the module docstring
            self.ack_nodes(touched)
        if self._peer_topic and mine:
            self.announce(mine)

    def tick(self, now: float) -> list[bytes]:
        """Send what waited behind delivered acks; skip expired gaps (their node points)."""
        self.send_waiting()
        self.send_announcement()
        skipped = self.tracker.expire(now)
        lines: list[bytes] = []
        for (yard, node), lost in skipped:
            self._metrics.inc("seq_gap_total", lost)
            log.warning("%s/%s: %d sequence numbers never arrived within %g s; counted as lost",
                        yard, node, lost, self.tracker.gap_timeout_s)
            lines.extend(to_lines([node_point(yard, node, now, seq_gap=lost)]))
        if skipped:
            self.save()
            self.ack_nodes(key for key, _ in skipped)
        return lines

    def flush(self) -> None:
        """At stop: the last word each node and the group are owed, and the state file."""
        self.send_waiting(all_now=True)
        self.send_announcement(all_now=True)
        self.save()

    def save(self) -> None:
        if self._state_file is None:
            return
        try:
            save_state(self._state_file, self.tracker.snapshot())
        except OSError as exc:
            self._warn.warning("state", "cannot save %s: %s", self._state_file, exc)

    # -- node acks

    def ack_nodes(self, nodes: Iterable[NodeKey]) -> None:
        for key in nodes:
            watermark = self.tracker.watermark(key)
            if watermark is not None and watermark >= 0:
                self.send_ack(key, watermark)

    def send_ack(self, key: NodeKey, watermark: int) -> None:
        """Publish a node's ack, at most one in flight per node.

        Acks are cumulative, so while the previous one still waits in paho
        for the broker's PUBACK, a newer watermark replaces any that waits
        behind it instead of queueing up: at full speed the broker's PUBACKs
        come behind thousands of incoming messages, and one ack per node per
        batch piled up in paho (4,900 after 200,000 readings, measured).
        """
        now = self._monotonic()
        if waiting_for_broker(self._acks_in_flight.get(key), now):
            self._acks_waiting[key] = watermark
            return
        self._acks_waiting.pop(key, None)
        yard, node = key
        info = self._publish(node_topic(yard, node, "ack"), encode(Ack(watermark)))
        self._acks_in_flight[key] = (info, now)

    def send_waiting(self, *, all_now: bool = False) -> None:
        now = self._monotonic()
        for key, watermark in list(self._acks_waiting.items()):
            if all_now or not waiting_for_broker(self._acks_in_flight.get(key), now):
                self._acks_in_flight.pop(key, None)
                self.send_ack(key, watermark)

    @property
    def acks_waiting(self) -> dict[NodeKey, int]:
        """Watermarks waiting behind an ack paho has not delivered yet (a copy)."""
        return dict(self._acks_waiting)

    # -- share-group announcements

    def announce(self, done: dict[NodeKey, list[int]]) -> None:
        """Tell the share group which seqs this process stored, as ranges.

        Like node acks, at most one announcement waits in paho for the
        broker: what later batches stored joins the next one.
        """
        for key, seqs in done.items():
            self._announce_waiting.setdefault(key, []).extend(seqs)
        self.send_announcement()

    def send_announcement(self, *, all_now: bool = False) -> None:
        if not self._announce_waiting or self._peer_topic is None:
            return
        now = self._monotonic()
        if not all_now and waiting_for_broker(self._announce_in_flight, now):
            return
        done, self._announce_waiting = self._announce_waiting, {}
        body = encode_peer_done(PeerDone(self._client_id, {
            key: seq_ranges(seqs) for key, seqs in done.items()}))
        self._announce_in_flight = (self._publish(self._peer_topic, body), now)


__all__ = ["ACK_STUCK_S", "Acknowledger", "SeqTracker", "load_state", "save_state",
           "waiting_for_broker"]
