"""Property tests: no topic and no byte string makes the decoder raise but ProtocolError."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secadero import contract
from secadero.contract import Telemetry, TimeWindow, decode, encode
from secadero.errors import ProtocolError

NOW = 1_780_000_000.0
WINDOW = TimeWindow(now=NOW)
TOPICS = st.sampled_from([
    "secadero/v1/y/n/telemetry", "secadero/v1/y/n/event", "secadero/v1/y/n/status",
    "secadero/v1/y/n/ack", "secadero/v1/y/alert",
])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=8,
)
# The suite shares two cores with Mosquitto and InfluxDB: time limits would
# make these tests fail on load, not on behaviour.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Objects that look like contract payloads, with any values in the known keys.
near_payloads = st.fixed_dictionaries(
    {},
    optional={key: json_values for key in (
        "ts", "seq", "temperature_c", "humidity_pct", "rain", "rain_mm", "trays", "type",
        "tray", "state", "version", "buffered", "uptime_s", "kind", "severity", "message",
        "since")},
)


def decodes_or_rejects(topic: str, payload: bytes) -> None:
    try:
        decode(topic, payload, WINDOW)
    except ProtocolError as error:
        assert error.reason
        assert str(error)


@settings(relaxed, max_examples=600)
@given(topic=TOPICS, payload=st.binary(max_size=400))
def test_any_bytes(topic: str, payload: bytes) -> None:
    decodes_or_rejects(topic, payload)


@settings(relaxed, max_examples=600)
@given(topic=TOPICS, body=near_payloads)
def test_any_json_object_with_contract_keys(topic: str, body: dict) -> None:
    payload = json.dumps(body, allow_nan=True).encode()
    decodes_or_rejects(topic, payload)


@settings(relaxed, max_examples=300)
@given(topic=st.text(max_size=80), payload=st.binary(max_size=50))
def test_any_topic(topic: str, payload: bytes) -> None:
    decodes_or_rejects(topic, payload)


@settings(relaxed, max_examples=300)
@given(
    ts=st.floats(min_value=NOW - 86400, max_value=NOW + 299),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    temperature=st.none() | st.floats(min_value=-40, max_value=85),
    humidity=st.none() | st.floats(min_value=0, max_value=100),
    rain=st.none() | st.booleans(),
)
def test_every_valid_reading_round_trips(ts: float, seq: int, temperature: float | None,
                                         humidity: float | None, rain: bool | None) -> None:
    message = Telemetry(ts=ts, seq=seq, temperature_c=temperature, humidity_pct=humidity,
                        rain=rain)
    decoded = decode("secadero/v1/y/n/telemetry", encode(message), WINDOW).message
    assert decoded == message


@relaxed
@given(st.text(max_size=40))
def test_ids_accepted_exactly_when_they_match_the_rule(text: str) -> None:
    ok = (
        1 <= len(text) <= 32
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in text)
        and text[0] != "-"
    )
    assert contract.is_valid_id(text) is ok


@relaxed
@given(st.floats())
def test_non_finite_numbers_never_pass(value: float) -> None:
    body = json.dumps({"ts": NOW, "seq": 1, "temperature_c": value}, allow_nan=True).encode()
    try:
        message = decode("secadero/v1/y/n/telemetry", body, WINDOW).message
    except ProtocolError:
        return
    assert isinstance(message, Telemetry)
    assert message.temperature_c is not None and math.isfinite(message.temperature_c)
    assert -40 <= message.temperature_c <= 85
