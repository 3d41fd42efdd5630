"""The share-group protocol and the seq scan of refused payloads, without a broker."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secadero.contract import (
    MAX_INT,
    MAX_PAYLOAD_BYTES,
    SEQ_SCAN_BYTES,
    PeerDone,
    Telemetry,
    decode_peer_done,
    encode,
    encode_peer_done,
    is_peer_topic,
    peer_topic,
    scan_seq,
    seq_ranges,
)
from secadero.errors import ProtocolError

# --------------------------------------------------------------------------
# the share group


def test_topic() -> None:
    assert peer_topic("ingest") == "secadero-ingest/v1/ingest/done"
    assert is_peer_topic(peer_topic("g"))
    assert not is_peer_topic("secadero/v1/norte/n1/telemetry")
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ProtocolError):
            peer_topic(bad)


def test_ranges() -> None:
    assert seq_ranges([8, 1, 2, 3, 7, 2]) == [(1, 3), (7, 8)]
    assert seq_ranges([]) == []


def test_an_announcement_is_compact_json_with_ranges() -> None:
    message = PeerDone("ingest-a", {("norte", "n1"): [(1, 3), (7, 7)], ("sur", "n2"): [(5, 9)]})
    payload = encode_peer_done(message)
    assert json.loads(payload) == {"from": "ingest-a",
                                   "done": {"norte/n1": [[1, 3], [7, 7]], "sur/n2": [[5, 9]]}}
    assert b" " not in payload
    assert decode_peer_done(payload) == message


_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}", fullmatch=True)
_range = st.tuples(st.integers(0, MAX_INT), st.integers(0, 1000)).map(
    lambda r: (r[0], min(MAX_INT, r[0] + r[1])))


@given(sender=st.text(min_size=1, max_size=20),
       done=st.dictionaries(st.tuples(_ids, _ids), st.lists(_range, max_size=4), max_size=4))
def test_encode_then_decode_gives_the_announcement_back(
        sender: str, done: dict[tuple[str, str], list[tuple[int, int]]]) -> None:
    message = PeerDone(sender, done)
    assert decode_peer_done(encode_peer_done(message)) == message


@pytest.mark.parametrize("payload", [
    b"not json",
    b"[]",
    b'{"done": {}}',
    b'{"from": "", "done": {}}',
    b'{"from": 3, "done": {}}',
    b'{"from": "a"}',
    b'{"from": "a", "done": []}',
    b'{"from": "a", "done": {"norte": [[1, 2]]}}',
    b'{"from": "a", "done": {"Norte/n1": [[1, 2]]}}',
    b'{"from": "a", "done": {"norte/n1": [1, 2]}}',
    b'{"from": "a", "done": {"norte/n1": [[2, 1]]}}',
    b'{"from": "a", "done": {"norte/n1": [[1, 2, 3]]}}',
    b'{"from": "a", "done": {"norte/n1": [[-1, 2]]}}',
    b'{"from": "a", "done": {"norte/n1": [[1.0, 2]]}}',
    b'{"from": "a", "done": {"norte/n1": [[true, 2]]}}',
    b'{"from": "a", "done": {"norte/n1": [[1, 9223372036854775808]]}}',
    b'{"from": "a", "done": {"norte/n1": {"1": 2}}}',
    b'{"from": "a", "from": "b", "done": {}}',
])
def test_a_malformed_announcement_raises_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_peer_done(payload)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_protocol_error(payload: bytes) -> None:
    """Nothing but ProtocolError escapes (anything else fails the test)."""
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode_peer_done(payload), PeerDone)


# --------------------------------------------------------------------------
# the seq of a payload that did not decode


def test_the_seq_of_an_oversized_node_payload_is_read_from_its_start() -> None:
    reading = encode(Telemetry(ts=1_764_000_000.0, seq=123456, temperature_c=21.5))
    oversized = reading[:-1] + b',"pad":"' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    assert scan_seq(oversized) == 123456


@pytest.mark.parametrize(("payload", "seq"), [
    (b'{"seq":7,"ts":1}', 7),
    (b'{ "ts" : 1 , "seq" : 0 }', 0),
    (b'{"ts": 1, "seq": 8, "temperature_c": 21.5', 8),  # cut short: still its own seq
    (b'{"ts": 1, "seq": 9, "bad": "\xff\xfe"}', 9),  # not UTF-8 after the seq
    (b'{"note": "say \\"seq\\": 5", "seq": 6}', 6),  # a quoted "seq" inside a string
    (b'{"nested": {"seq": 5}, "seq": 6}', 6),
    (b'{"list": [{"seq": 5}], "seq": 6}', 6),
    (b'{"seq": 9223372036854775807}', MAX_INT),
])
def test_a_top_level_seq_is_found(payload: bytes, seq: int) -> None:
    assert scan_seq(payload) == seq


@pytest.mark.parametrize("payload", [
    b"",
    b"seq 7",
    b'["seq", 7]',
    b'{"nested": {"seq": 5}}',  # only a nested one: not the message's
    b'{"note": "\\"seq\\": 5"}',
    b'{"seq": "7"}',
    b'{"seq": -1}',
    b'{"seq": 7.5}',
    b'{"seq": 07}',
    b'{"seq": 1e3}',
    b'{"seq": true}',
    b'{"seq": 9223372036854775808}',  # over int64
    b'{"seq": 1, "seq": 2}',  # twice: which one?
    b'{"seq": 12',  # the number may go on
    b'{"seq"',
    b'{"seq": }',
    b'{"a" "seq": 3}',  # not a key
    b'{"ts": 1} {"seq": 3}',  # after the object ended
])
def test_anything_uncertain_is_none(payload: bytes) -> None:
    assert scan_seq(payload) is None


def test_the_scan_reads_no_further_than_its_window() -> None:
    late = b'{"pad": "' + b"x" * SEQ_SCAN_BYTES + b'", "seq": 4}'
    assert scan_seq(late) is None
    assert scan_seq(late, limit=len(late) + 1) == 4
    # A number that the window cuts could be longer: not trusted.
    cut = b'{"pad": "' + b"x" * (SEQ_SCAN_BYTES - 20) + b'", "seq": 1234567890123}'
    assert scan_seq(cut) is None


@given(st.binary(max_size=300))
def test_any_bytes_give_a_seq_or_none(payload: bytes) -> None:
    seq = scan_seq(payload)
    assert seq is None or 0 <= seq <= MAX_INT


@given(seq=st.integers(0, MAX_INT), extra=st.dictionaries(
    st.text(max_size=8).filter(lambda k: k != "seq"),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8),
    max_size=5))
def test_on_valid_json_the_scan_agrees_with_the_parser(seq: int, extra: dict[str, object]
                                                       ) -> None:
    payload = json.dumps({**extra, "seq": seq}).encode()
    if len(payload) < SEQ_SCAN_BYTES:
        assert scan_seq(payload) == seq
    # No top-level seq: a nested one is never taken for the message's.
    assert scan_seq(json.dumps(extra).encode()) is None
