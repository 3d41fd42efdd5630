"""The node-health block of ``status`` and the calibrated node's raw humidity: forward compatible.

Old nodes (no ``health``, no ``humidity_raw_pct``) stay valid; a new field
with a wrong type or range is refused naming the dotted field.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secadero import contract
from secadero.errors import ProtocolError
from secadero.server.points import points_for, to_lines

STATUS_TOPIC = "secadero/v1/chazuta/norte-1/status"
TELEMETRY_TOPIC = "secadero/v1/chazuta/norte-1/telemetry"
OLD_STATUS = b'{"state":"online","ts":1780000000.0,"version":"0.1.0","buffered":0,"uptime_s":1}'


def test_a_status_without_health_is_still_valid_and_stores_as_before() -> None:
    envelope = contract.decode(STATUS_TOPIC, OLD_STATUS)
    assert envelope.message.health is None
    assert to_lines(points_for(envelope, 1780000001.0)) == [
        b"node,node=norte-1,yard=chazuta buffered=0i,online=1i,uptime_s=1 1780000001000000"]


def test_health_round_trips_with_nulls_for_what_the_node_cannot_know() -> None:
    health = contract.NodeHealth(throttled=None, wifi_rssi_dbm=None, disk_free_bytes=123456789,
                                 clock="synced", calibrated_ts=None)
    status = contract.Status(state="online", ts=1780000000.0, version="0.2.0", buffered=3,
                             uptime_s=60.0, health=health)
    payload = contract.encode(status)
    assert json.loads(payload)["health"] == {
        "throttled": None, "wifi_rssi_dbm": None, "disk_free_bytes": 123456789,
        "clock": "synced", "calibrated_ts": None}
    assert contract.decode(STATUS_TOPIC, payload).message == status


def test_health_becomes_node_fields_with_the_pi_flags_spelled_out() -> None:
    payload = json.dumps({"state": "online", "ts": 1780000000.0, "buffered": 2, "uptime_s": 5,
                          "health": {"throttled": 0x50005, "wifi_rssi_dbm": -67,
                                     "disk_free_bytes": 2_000_000_000, "clock": "unsynced",
                                     "calibrated_ts": 1779000000.5}}).encode()
    envelope = contract.decode(STATUS_TOPIC, payload)
    [line] = to_lines(points_for(envelope, 1780000001.0))
    assert line == (
        b'node,node=norte-1,yard=chazuta buffered=2i,calibrated_ts=1779000000.5,'
        b'clock="unsynced",clock_synced=0i,disk_free_bytes=2000000000i,online=1i,'
        b'throttled=327685i,throttled_now=1i,throttled_seen=1i,under_voltage=1i,'
        b'under_voltage_seen=1i,uptime_s=5,wifi_rssi_dbm=-67 1780000001000000')


@pytest.mark.parametrize(("health", "reason", "field"), [
    ("[]", "wrong_type", "health"),
    ('{"throttled": "0x5"}', "wrong_type", "health.throttled"),
    ('{"throttled": -1}', "out_of_range", "health.throttled"),
    ('{"wifi_rssi_dbm": 20}', "out_of_range", "health.wifi_rssi_dbm"),
    ('{"disk_free_bytes": 1.5}', "wrong_type", "health.disk_free_bytes"),
    ('{"clock": "fine"}', "bad_value", "health.clock"),
    ('{"calibrated_ts": "yesterday"}', "wrong_type", "health.calibrated_ts"),
])
def test_bad_health_is_refused_naming_the_field(health: str, reason: str, field: str) -> None:
    payload = f'{{"state": "online", "ts": 1780000000.0, "health": {health}}}'.encode()
    with pytest.raises(ProtocolError) as info:
        contract.decode(STATUS_TOPIC, payload)
    assert (info.value.reason, info.value.field) == (reason, field)


def test_raw_humidity_is_optional_checked_and_stored_beside_the_corrected() -> None:
    old = b'{"ts":1780000000.0,"seq":1,"temperature_c":25.0,"humidity_pct":60.0}'
    assert contract.decode(TELEMETRY_TOPIC, old).message.humidity_raw_pct is None
    reading = contract.Telemetry(ts=1780000000.0, seq=2, temperature_c=25.0,
                                 humidity_pct=75.3, humidity_raw_pct=77.9)
    envelope = contract.decode(TELEMETRY_TOPIC, contract.encode(reading))
    assert envelope.message == reading
    [climate] = [line for line in to_lines(points_for(envelope, 0.0))
                 if line.startswith(b"climate")]
    assert b"humidity_pct=75.3,humidity_raw_pct=77.9," in climate
    with pytest.raises(ProtocolError) as info:
        contract.decode(TELEMETRY_TOPIC, old.replace(b"}", b',"humidity_raw_pct":101}'))
    assert (info.value.reason, info.value.field) == ("out_of_range", "humidity_raw_pct")


# JSON values (json.dumps would write NaN and Infinity, which are not JSON).
_json = st.recursive(st.none() | st.booleans() | st.integers()
                     | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
_health_keys = st.sampled_from(["throttled", "wifi_rssi_dbm", "disk_free_bytes", "clock",
                                "calibrated_ts", "other"])


@settings(max_examples=300, deadline=None)
@given(health=_json | st.dictionaries(_health_keys, _json, max_size=5))
def test_any_health_value_decodes_or_is_refused_naming_health(health: object) -> None:
    payload = json.dumps({"state": "online", "ts": 1780000000.0, "health": health}).encode()
    try:
        decoded = contract.decode(STATUS_TOPIC, payload).message.health
    except ProtocolError as exc:
        assert exc.field is not None and exc.field.startswith("health"), exc
    else:
        assert decoded is None or isinstance(decoded, contract.NodeHealth)
        assert (decoded is None) == (health is None)
