"""Node acks: cumulative, so at most one waits in paho per node; the newest wins.

The same holds for a share group's announcements: at most one waits, later
batches' sequence numbers join the next one.

At full speed the broker's PUBACKs for our acks come behind thousands of
incoming messages; publishing one ack per node per batch piled them up in
paho (4,900 after 200,000 readings). The acknowledgements stage is built
here with a recording publisher in place of the broker connection (its
constructor takes the publish function), so which acks go out when is
exact; the end-to-end ack behaviour against the real broker is in
test_ingest_integration.py and test_ingest_faults.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt

from secadero.contract import decode_peer_done
from secadero.server.ingest.acks import ACK_STUCK_S, Acknowledger, SeqTracker, load_state
from secadero.server.ingest.items import NO_LINES, Item
from secadero.server.metrics import Registry

NODE = ("norte", "n1")


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, mqtt.MQTTMessageInfo]] = []

    def __call__(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        info = mqtt.MQTTMessageInfo(len(self.sent) + 1)
        self.sent.append((topic, payload, info))
        return info

    def payloads(self) -> list[bytes]:
        return [payload for _, payload, _ in self.sent]

    def delivered(self, index: int) -> None:
        """The broker's PUBACK for the index-th publish arrived."""
        self.sent[index][2]._set_as_published()  # paho's own handle, not the code under test


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_acks(tmp_path: Path | None = None, *, share_group: str = ""
              ) -> tuple[Acknowledger, RecordingPublisher, FakeMonotonic, list[list[int]]]:
    recorder = RecordingPublisher()
    clock = FakeMonotonic()
    pubacked: list[list[int]] = []

    def puback(items: Sequence[Item]) -> None:
        pubacked.append([item.mid for item in items])

    acks = Acknowledger(SeqTracker(600), publish=recorder, puback=puback,
                        metrics=Registry().part("ingest"),
                        state_file=tmp_path / "state.json" if tmp_path else None,
                        client_id="acks", share_group=share_group, monotonic=clock)
    return acks, recorder, clock, pubacked


def test_newer_watermarks_wait_behind_an_undelivered_ack_and_only_the_newest_goes() -> None:
    acks, recorder, _, _ = make_acks()
    acks.send_ack(NODE, 5)
    acks.send_ack(NODE, 6)
    acks.send_ack(NODE, 7)
    assert recorder.payloads() == [b'{"seq":5}']
    acks.send_waiting()
    assert recorder.payloads() == [b'{"seq":5}']  # the broker has not taken the first yet
    recorder.delivered(0)
    acks.send_waiting()
    assert recorder.payloads() == [b'{"seq":5}', b'{"seq":7}']
    assert recorder.sent[1][0] == "secadero/v1/norte/n1/ack"
    acks.send_waiting()
    assert len(recorder.sent) == 2


def test_nodes_do_not_hold_each_other_back() -> None:
    acks, recorder, _, _ = make_acks()
    acks.send_ack(NODE, 5)
    acks.send_ack(("norte", "n2"), 9)
    assert recorder.payloads() == [b'{"seq":5}', b'{"seq":9}']


def test_stopping_sends_what_waits(tmp_path: Path) -> None:
    acks, recorder, _, _ = make_acks(tmp_path)
    acks.send_ack(NODE, 5)
    acks.send_ack(NODE, 8)
    acks.flush()
    assert recorder.payloads() == [b'{"seq":5}', b'{"seq":8}']
    assert acks.acks_waiting == {}


def test_an_ack_stuck_for_long_no_longer_holds_newer_ones() -> None:
    acks, recorder, clock, _ = make_acks()
    acks.send_ack(NODE, 5)
    acks.send_ack(NODE, 6)
    clock.now += ACK_STUCK_S - 0.1
    acks.send_waiting()
    assert recorder.payloads() == [b'{"seq":5}']
    clock.now += 0.2  # published long ago, never confirmed (a lost connection)
    acks.send_waiting()
    assert recorder.payloads() == [b'{"seq":5}', b'{"seq":6}']


def test_share_group_announcements_wait_and_merge() -> None:
    acks, recorder, _, _ = make_acks(share_group="g")
    acks.announce({NODE: [1, 2, 3]})
    acks.announce({NODE: [5, 4]})
    acks.announce({("norte", "n2"): [7]})
    assert [json.loads(p) for p in recorder.payloads()] == [
        {"from": "acks", "done": {"norte/n1": [[1, 3]]}}]
    recorder.delivered(0)
    acks.send_announcement()
    assert json.loads(recorder.payloads()[1]) == {
        "from": "acks", "done": {"norte/n1": [[4, 5]], "norte/n2": [[7, 7]]}}
    assert recorder.sent[1][0] == "secadero-ingest/v1/g/done"
    acks.send_announcement()
    assert len(recorder.sent) == 2


def test_a_stored_batch_is_pubacked_saved_then_acked_and_announced(tmp_path: Path) -> None:
    """The order the module promises: PUBACK, state file, node ack, announcement."""
    acks, recorder, _, pubacked = make_acks(tmp_path, share_group="g")
    state = tmp_path / "state.json"
    saved_at_ack: list[dict[tuple[str, str], int]] = []

    def publish_after_checking_state(topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        saved_at_ack.append(load_state(state))
        return recorder(topic, payload)

    acks = Acknowledger(acks.tracker, publish=publish_after_checking_state,
                        puback=lambda items: pubacked.append([i.mid for i in items]),
                        metrics=Registry().part("ingest"), state_file=state, client_id="acks",
                        share_group="g")
    batch = [Item([b"climate x=1 1"], 11, 1, 1, NODE, 1),
             Item(NO_LINES, 12, 1, 1, NODE, 2),  # rejected: counts as done all the same
             Item([b"climate x=1 3"], 13, 1, 1, NODE, 3),
             Item(NO_LINES, 0, 0, 0, NODE, 4, peer=True, last_seq=9)]
    acks.stored(batch, now=0.0)
    assert pubacked == [[11, 12, 13, 0]]
    assert recorder.payloads()[0] == b'{"seq":9}'
    assert saved_at_ack[0] == {NODE: 9}
    assert decode_peer_done(recorder.payloads()[1]).done == {NODE: [(1, 3)]}
