"""The receive stage alone, without a broker: what each PUBLISH becomes for the writer.

The stage is built as ``Ingest`` builds it, with a real ``BrokerLink`` that
never connects (nothing here needs a broker: the stage's input is the
``receive(topic, payload, mid, qos)`` call paho's thread makes, its output
the items the writer takes from the ``Handoff``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ingest_helpers import write_server_config

from secadero.contract import MAX_PAYLOAD_BYTES, Telemetry, encode
from secadero.server.downsample import LateHours
from secadero.server.ingest.items import NO_LINES, Handoff, Item
from secadero.server.ingest.link import BrokerLink
from secadero.server.ingest.liveness import Liveness
from secadero.server.ingest.receive import Receiver
from secadero.server.metrics import Metrics
from secadero.settings import ServerSettings, load_server_settings

NOW = 1_764_000_000.0
TOPIC = "secadero/v1/norte/n1/telemetry"


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return load_server_settings(write_server_config(
        tmp_path / "server.toml", mqtt_port=1, influx_url="http://127.0.0.1:1",
        database="unused", client_id="recv", ingest={"share_group": "g"}))


def build(settings: ServerSettings) -> tuple[Receiver, Handoff, Metrics]:
    metrics = Metrics()
    handoff = Handoff()
    receiver = Receiver(handoff, BrokerLink(settings), Liveness(600, metrics),
                        LateHours(settings, metrics, lambda: len(handoff)), metrics,
                        observers=[], horizon_s=30 * 86400.0, client_id="recv",
                        clock=lambda: NOW)
    return receiver, handoff, metrics


def taken(handoff: Handoff) -> list[Item]:
    return handoff.take(10_000, 0.0)


def test_each_refused_message_is_one_item_with_its_seq_where_it_can_be_known(
        settings: ServerSettings) -> None:
    receiver, handoff, metrics = build(settings)
    good = encode(Telemetry(ts=NOW - 5, seq=1, temperature_c=20.0))
    receiver.receive(TOPIC, good, 11, 1)
    receiver.receive(TOPIC, json.dumps({"ts": NOW, "seq": 2, "humidity_pct": 101}).encode(),
                     12, 1)
    receiver.receive(TOPIC, b'{"ts": 1, "seq": 3, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}',
                     13, 1)
    receiver.receive(TOPIC, b'{"seq": 4, "ts": ', 14, 1)
    receiver.receive(TOPIC, b"\xff", 15, 1)
    receiver.receive("secadero/v1/norte/N 1/telemetry", good, 16, 1)
    items = taken(handoff)
    assert [(i.mid, i.node, i.seq, i.lines is NO_LINES) for i in items] == [
        (11, ("norte", "n1"), 1, False),
        (12, ("norte", "n1"), 2, True),   # parsed: the seq from the object
        (13, ("norte", "n1"), 3, True),   # too large: scanned
        (14, ("norte", "n1"), 4, True),   # not JSON: scanned
        (15, ("norte", "n1"), None, True),  # no seq to be had
        (16, None, None, True),           # no node to be had
    ]
    assert metrics.by_label("messages_rejected_total", "reason") == {
        "out_of_range": 1, "too_large": 1, "invalid_json": 2, "bad_id": 1}


def test_a_malformed_share_group_announcement_is_counted_and_stores_nothing(
        settings: ServerSettings) -> None:
    receiver, handoff, metrics = build(settings)
    receiver.receive("secadero-ingest/v1/g/done", b'{"from": "other", "done": {"norte/n1": 5}}',
                     21, 1)
    receiver.receive("secadero-ingest/v1/g/done",
                     b'{"from": "other", "done": {"norte/n1": [[3, 7]]}}', 22, 1)
    receiver.receive("secadero-ingest/v1/g/done",
                     b'{"from": "recv", "done": {"norte/n1": [[8, 9]]}}', 23, 1)  # our own
    assert metrics.by_label("peer_messages_rejected_total", "reason") == {"wrong_type": 1}
    [item] = taken(handoff)
    assert (item.node, item.seq, item.last_seq, item.peer) == (("norte", "n1"), 3, 7, True)
