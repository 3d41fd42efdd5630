"""Node acks: cumulative, so at most one waits in paho per node; the newest wins.

The same holds for a share group's announcements: at most one waits, later
batches' sequence numbers join the next one.

At full speed the broker's PUBACKs for our acks come behind thousands of
incoming messages; publishing one ack per node per batch piled them up in
paho (4,900 after 200,000 readings). The ingest's paho client is replaced
here by a recorder, so which acks go out when is exact; the end-to-end ack
behaviour against the real broker is in test_ingest_integration.py and
test_ingest_faults.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
from ingest_helpers import write_server_config

from secadero.server.ingest import Ingest
from secadero.settings import load_server_settings

NODE = ("norte", "n1")


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, mqtt.MQTTMessageInfo]] = []

    def __call__(self, topic: str, payload: bytes, qos: int = 0,
                 retain: bool = False) -> mqtt.MQTTMessageInfo:
        info = mqtt.MQTTMessageInfo(len(self.sent) + 1)
        self.sent.append((topic, payload, info))
        return info

    def payloads(self) -> list[bytes]:
        return [payload for _, payload, _ in self.sent]


def make_ingest(tmp_path: Path, **ingest: str) -> tuple[Ingest, RecordingPublisher]:
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", mqtt_port=1, influx_url="http://127.0.0.1:1",
        database="unused", client_id="acks", ingest=ingest))
    ingest = Ingest(settings)
    recorder = RecordingPublisher()
    ingest._client.publish = recorder  # type: ignore[method-assign]
    return ingest, recorder


def test_newer_watermarks_wait_behind_an_undelivered_ack_and_only_the_newest_goes(
        tmp_path: Path) -> None:
    ingest, recorder = make_ingest(tmp_path)
    ingest._send_ack(NODE, 5)
    ingest._send_ack(NODE, 6)
    ingest._send_ack(NODE, 7)
    assert recorder.payloads() == [b'{"seq":5}']
    ingest._send_waiting_acks()
    assert recorder.payloads() == [b'{"seq":5}']  # the broker has not taken the first yet
    recorder.sent[0][2]._set_as_published()
    ingest._send_waiting_acks()
    assert recorder.payloads() == [b'{"seq":5}', b'{"seq":7}']
    assert recorder.sent[1][0] == "secadero/v1/norte/n1/ack"
    ingest._send_waiting_acks()
    assert len(recorder.sent) == 2


def test_nodes_do_not_hold_each_other_back(tmp_path: Path) -> None:
    ingest, recorder = make_ingest(tmp_path)
    ingest._send_ack(NODE, 5)
    ingest._send_ack(("norte", "n2"), 9)
    assert recorder.payloads() == [b'{"seq":5}', b'{"seq":9}']


def test_stopping_sends_what_waits(tmp_path: Path) -> None:
    ingest, recorder = make_ingest(tmp_path)
    ingest._send_ack(NODE, 5)
    ingest._send_ack(NODE, 8)
    ingest._send_waiting_acks(all_now=True)
    assert recorder.payloads() == [b'{"seq":5}', b'{"seq":8}']
    assert ingest._acks_waiting == {}


def test_an_ack_stuck_for_long_no_longer_holds_newer_ones(tmp_path: Path) -> None:
    ingest, recorder = make_ingest(tmp_path)
    ingest._send_ack(NODE, 5)
    ingest._send_ack(NODE, 6)
    info, _ = ingest._acks_in_flight[NODE]
    ingest._acks_in_flight[NODE] = (info, -1e9)  # published long ago, never confirmed
    ingest._send_waiting_acks()
    assert recorder.payloads() == [b'{"seq":5}', b'{"seq":6}']


def test_share_group_announcements_wait_and_merge(tmp_path: Path) -> None:
    ingest, recorder = make_ingest(tmp_path, share_group="g")
    ingest._announce({NODE: [1, 2, 3]})
    ingest._announce({NODE: [5, 4]})
    ingest._announce({("norte", "n2"): [7]})
    assert [json.loads(p) for p in recorder.payloads()] == [
        {"from": "acks", "done": {"norte/n1": [[1, 3]]}}]
    recorder.sent[0][2]._set_as_published()
    ingest._send_announcement()
    assert json.loads(recorder.payloads()[1]) == {
        "from": "acks", "done": {"norte/n1": [[4, 5]], "norte/n2": [[7, 7]]}}
    assert recorder.sent[1][0] == "secadero-ingest/v1/g/done"
    ingest._send_announcement()
    assert len(recorder.sent) == 2
