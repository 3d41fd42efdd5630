"""The wire contract: topics, ids, encoding and strict decoding. No broker needed."""

from __future__ import annotations

import json

import pytest

from secadero import contract
from secadero.contract import (
    Ack,
    Alert,
    Event,
    Status,
    Telemetry,
    TimeWindow,
    decode,
    encode,
)
from secadero.errors import ProtocolError

NOW = 1_780_000_000.0
WINDOW = TimeWindow(now=NOW, horizon_s=7 * 86400)
TOPIC = "secadero/v1/chazuta/norte-1/telemetry"


def reading(**overrides: object) -> bytes:
    body = {"ts": NOW - 10, "seq": 7, "temperature_c": 31.5, "humidity_pct": 64.2,
            "rain": False, "rain_mm": None, "trays": {"t1": "extended"}}
    body.update(overrides)
    return json.dumps(body).encode()


def rejection(topic: str, payload: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(topic, payload, WINDOW)
    return info.value


def test_topics_are_built_from_validated_ids() -> None:
    assert contract.node_topic("chazuta", "norte-1", "telemetry") == TOPIC
    assert contract.alert_topic("chazuta") == "secadero/v1/chazuta/alert"
    assert contract.subscription("event") == "secadero/v1/+/+/event"
    assert contract.subscription("alert", yard="chazuta") == "secadero/v1/chazuta/alert"
    with pytest.raises(ProtocolError, match="node"):
        contract.node_topic("chazuta", "+", "telemetry")


def test_parse_topic() -> None:
    assert contract.parse_topic(TOPIC) == contract.Topic("chazuta", "norte-1", "telemetry")
    assert contract.parse_topic("secadero/v1/chazuta/alert") == contract.Topic(
        "chazuta", None, "alert")
    for bad in ("secadero/v1/chazuta/norte-1", "secadero/v2/a/b/telemetry",
                "secadero/v1/a/b/telemetry/extra", "secadero/v1/A/b/telemetry",
                "secadero/v1/a/b/reboot", ""):
        with pytest.raises(ProtocolError) as info:
            contract.parse_topic(bad)
        assert info.value.reason in {"bad_topic", "bad_id"}


@pytest.mark.parametrize("good", ["a", "0", "norte-1", "a" * 32, "yard-9-b"])
def test_valid_ids(good: str) -> None:
    assert contract.check_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "-a", "A", "norte 1", "a/b", "+", "#", "a,b", 'a"b', "a'b", "a\nb", "a" * 33,
     "a=b", "ñandu", "a_b"],
)
def test_invalid_ids(bad: str) -> None:
    with pytest.raises(ProtocolError) as info:
        contract.check_id(bad, field_name="node")
    assert info.value.reason == "bad_id"
    assert info.value.field == "node"


def test_telemetry_round_trip() -> None:
    message = Telemetry(ts=NOW - 1, seq=3, temperature_c=28.25, humidity_pct=71.5, rain=True,
                        rain_mm=0.2, trays={"t1": "retracted", "t2": "moving"})
    envelope = decode(TOPIC, encode(message), WINDOW)
    assert envelope.yard == "chazuta"
    assert envelope.node == "norte-1"
    assert envelope.kind == "telemetry"
    assert envelope.message == message


def test_null_readings_stay_null() -> None:
    message = decode(TOPIC, reading(temperature_c=None, humidity_pct=None, rain=None),
                     WINDOW).message
    assert isinstance(message, Telemetry)
    assert (message.temperature_c, message.humidity_pct, message.rain) == (None, None, None)


def test_unknown_keys_are_ignored() -> None:
    message = decode(TOPIC, reading(firmware="2.1", battery_v=4.9), WINDOW).message
    assert isinstance(message, Telemetry)
    assert message.seq == 7


def test_other_kinds_round_trip() -> None:
    cases = [
        ("secadero/v1/y/n/event", Event(ts=NOW, seq=9, type="tray_retracted", tray="t2")),
        ("secadero/v1/y/n/event", Event(ts=NOW, seq=10, type="sensor_fault", sensor="dht22",
                                         detail="no answer")),
        ("secadero/v1/y/n/status", Status(state="online", ts=NOW, version="0.1.0",
                                          buffered=12, uptime_s=3600.0)),
        ("secadero/v1/y/n/ack", Ack(seq=42)),
        ("secadero/v1/y/alert", Alert(state="raised", kind="rain_now", severity="critical",
                                      message="Lluvia ahora. Recoger bandejas.", since=NOW)),
    ]
    for topic, message in cases:
        assert decode(topic, encode(message), WINDOW).message == message


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        (b"{not json", "invalid_json", None),
        (b"\xff\xfe", "invalid_json", None),
        (b"[1, 2]", "not_object", None),
        (b'"text"', "not_object", None),
        (reading(humidity_pct=100.5), "out_of_range", "humidity_pct"),
        (reading(humidity_pct=-0.1), "out_of_range", "humidity_pct"),
        (reading(temperature_c=85.1), "out_of_range", "temperature_c"),
        (reading(temperature_c=-40.5), "out_of_range", "temperature_c"),
        (reading(temperature_c="31"), "wrong_type", "temperature_c"),
        (reading(humidity_pct=True), "wrong_type", "humidity_pct"),
        (reading(seq=1.5), "wrong_type", "seq"),
        (reading(seq=-1), "out_of_range", "seq"),
        (reading(seq=2**63), "out_of_range", "seq"),
        (reading(rain="yes"), "wrong_type", "rain"),
        (reading(trays=["t1"]), "wrong_type", "trays"),
        (reading(trays={"t1": "open"}), "bad_value", "trays.t1"),
        (reading(trays={"T1": "extended"}), "bad_id", "trays"),
        (reading(ts=NOW + 301), "ts_future", "ts"),
        (reading(ts=NOW - 8 * 86400), "ts_too_old", "ts"),
        (reading(ts=0), "ts_too_old", "ts"),
        (reading(ts="now"), "wrong_type", "ts"),
        (b'{"seq": 1}', "missing_field", "ts"),
        (reading(seq=None), "missing_field", "seq"),
        (b'{"ts": NaN, "seq": 1}', "not_finite", None),
        (b'{"ts": 1780000000, "seq": 1, "temperature_c": Infinity}', "not_finite", None),
        (b'{"ts": 1780000000, "seq": 1, "seq": 2}', "duplicate_key", "seq"),
        (b'{"ts": 1e400, "seq": 1}', "not_finite", "ts"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json", None),
        (b" " * (16 * 1024 + 1), "too_large", None),
    ],
)
def test_bad_telemetry_is_rejected_with_reason_and_field(payload: bytes, reason: str,
                                                         field: str | None) -> None:
    error = rejection(TOPIC, payload)
    assert (error.reason, error.field) == (reason, field)


def test_error_message_names_the_field() -> None:
    error = rejection(TOPIC, reading(humidity_pct=120))
    assert str(error) == "humidity_pct: 120 is outside 0..100"


def test_event_rules() -> None:
    topic = "secadero/v1/y/n/event"
    assert rejection(topic, b'{"ts": 1780000000, "seq": 1, "type": "explode"}').reason \
        == "bad_value"
    error = rejection(topic, b'{"ts": 1780000000, "seq": 1, "type": "tray_extended"}')
    assert (error.reason, error.field) == ("missing_field", "tray")


def test_status_will_is_accepted_whatever_its_age() -> None:
    # The Last Will is registered at connect and published much later.
    will = contract.offline_will(NOW - 30 * 86400, "0.1.0")
    message = decode("secadero/v1/y/n/status", will, WINDOW).message
    assert message == Status(state="offline", ts=NOW - 30 * 86400, version="0.1.0")


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode(Telemetry(ts=NOW, seq=1, temperature_c=float("nan")))
