"""The wire contract between nodes and the server: topics, payloads, QoS.

Written once, imported by the edge and the server. ``docs/protocol.md`` is
the human version of this module; ``tests/test_protocol_doc.py`` decodes every
example in it, so the two cannot drift apart.

Decoding is strict and total: for any topic string and any byte string,
``decode`` either returns a message object or raises ``ProtocolError`` with a
reason code and the offending field. Nothing else escapes, which the property
tests in ``tests/test_contract_fuzz.py`` check.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from secadero.errors import ProtocolError

ROOT: Final = "secadero/v1"
ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAX_PAYLOAD_BYTES: Final = 16 * 1024
MAX_FUTURE_S: Final = 300.0
DEFAULT_HORIZON_S: Final = 30 * 24 * 3600.0

TEMPERATURE_RANGE_C: Final = (-40.0, 85.0)  # the DHT22's and SHT31's rated range
HUMIDITY_RANGE_PCT: Final = (0.0, 100.0)
# seq and counters become InfluxDB int64 fields.
MAX_INT: Final = 2**63 - 1

TRAY_STATES: Final = frozenset({"extended", "retracted", "moving", "unknown"})
EVENT_TYPES: Final = frozenset(
    {
        "rain_started",
        "rain_stopped",
        "tray_extended",
        "tray_retracted",
        "sensor_fault",
        "sensor_recovered",
    }
)
NODE_STATES: Final = frozenset({"online", "offline"})
# The node's verdict on its own wall clock (edge/clock.py's ClockGuard states).
CLOCK_STATES: Final = frozenset({"synced", "unsynced", "implausible", "behind_issued", "unknown"})
# Wi-Fi signal levels a driver can report, in dBm (/proc/net/wireless).
WIFI_RSSI_RANGE_DBM: Final = (-120.0, 0.0)
ALERT_STATES: Final = frozenset({"raised", "clear"})
SEVERITIES: Final = frozenset({"info", "warning", "critical"})

# Per topic kind: MQTT QoS and retain flag.
QOS: Final = 1
RETAINED_KINDS: Final = frozenset({"status", "alert"})

NodeKind = Literal["telemetry", "event", "status", "ack"]
NODE_KINDS: Final = ("telemetry", "event", "status", "ack")


# --------------------------------------------------------------------------
# ids and topics


def check_id(value: object, *, field_name: str = "id") -> str:
    """Return ``value`` if it is a valid yard, node or tray id, else raise.

    Ids become MQTT topic levels and InfluxDB tags, so the allowlist keeps
    out wildcards, separators, whitespace, quotes and upper case.
    """
    if not isinstance(value, str):
        raise ProtocolError("bad_id", f"must be a string id, got {type(value).__name__}",
                            field=field_name)
    if not ID_PATTERN.fullmatch(value):
        raise ProtocolError(
            "bad_id",
            f"{value[:40]!r} is not an id: 1-32 of a-z, 0-9 and '-', starting with a letter "
            "or digit",
            field=field_name,
        )
    return value


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def node_topic(yard: str, node: str, kind: NodeKind) -> str:
    """The topic a node publishes (or receives its ``ack``) on."""
    check_id(yard, field_name="yard")
    check_id(node, field_name="node")
    if kind not in NODE_KINDS:
        raise ProtocolError("bad_topic", f"unknown node topic kind {kind!r}")
    return f"{ROOT}/{yard}/{node}/{kind}"


def alert_topic(yard: str) -> str:
    """The yard's retained current-alert topic, read by the nodes' beacons."""
    check_id(yard, field_name="yard")
    return f"{ROOT}/{yard}/alert"


def subscription(kind: NodeKind | Literal["alert"], *, yard: str = "+") -> str:
    """A subscription filter for one kind of message, in one yard or all."""
    if yard != "+":
        check_id(yard, field_name="yard")
    if kind == "alert":
        return f"{ROOT}/{yard}/alert"
    if kind not in NODE_KINDS:
        raise ProtocolError("bad_topic", f"unknown node topic kind {kind!r}")
    return f"{ROOT}/{yard}/+/{kind}"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: the yard, the node (``None`` for the yard's alert) and the kind."""

    yard: str
    node: str | None
    kind: str


# Valid topics seen, parsed: a fleet sends on the same few thousand topics
# all day, and parsing one costs more than looking it up. Bounded, as the
# ids are only validated, not known in advance.
_PARSED_TOPICS: dict[str, Topic] = {}
_PARSED_TOPICS_MAX = 100_000


def parse_topic(topic: str) -> Topic:
    parsed = _PARSED_TOPICS.get(topic)
    if parsed is None:
        parsed = _parse_topic(topic)
        if len(_PARSED_TOPICS) >= _PARSED_TOPICS_MAX:
            _PARSED_TOPICS.clear()
        _PARSED_TOPICS[topic] = parsed
    return parsed


def _parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != ROOT:
        raise ProtocolError("bad_topic", f"not a {ROOT} topic: {topic[:80]!r}")
    if len(parts) == 4 and parts[3] == "alert":
        return Topic(check_id(parts[2], field_name="yard"), None, "alert")
    if len(parts) != 5 or parts[4] not in NODE_KINDS:
        raise ProtocolError("bad_topic", f"unknown topic shape: {topic[:80]!r}")
    return Topic(
        check_id(parts[2], field_name="yard"), check_id(parts[3], field_name="node"), parts[4]
    )


# --------------------------------------------------------------------------
# message types


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One sample of a node: climate, rain and tray positions.

    A value the sensor failed to give is ``None``; never a made-up number.
    """

    ts: float
    seq: int
    temperature_c: float | None = None
    humidity_pct: float | None = None
    rain: bool | None = None
    rain_mm: float | None = None
    trays: dict[str, str] = field(default_factory=dict)
    # The sensor's own humidity before the node's salt-test correction, kept
    # for audit; ``None`` when the node has no calibration (then
    # ``humidity_pct`` is the sensor's value itself). Added after v1's first
    # nodes: absent on the wire means ``None``.
    humidity_raw_pct: float | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at once: the plate got wet, a tray moved, a sensor failed.

    ``tray`` names the tray for ``tray_*`` events; ``sensor`` and ``detail``
    describe ``sensor_*`` events.
    """

    ts: float
    seq: int
    type: str
    tray: str | None = None
    sensor: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """What a node knows about its own condition, sent inside its ``status``.

    Every field is ``None`` when the node cannot know it (no Raspberry Pi
    firmware on a PC, no Wi-Fi on a wired node, never calibrated): never a
    made-up value. Nodes older than this block send no ``health`` at all.

    ``throttled`` is the Raspberry Pi firmware's ``get_throttled`` bit mask
    as it reads it (bit 0 under-voltage now, 1 ARM frequency capped now, 2
    throttled now, 3 soft temperature limit now; bits 16-19 the same since
    boot). ``clock`` is one of ``CLOCK_STATES``; ``calibrated_ts`` the UNIX
    time of the humidity sensor's last salt-test calibration.
    """

    throttled: int | None = None
    wifi_rssi_dbm: float | None = None
    disk_free_bytes: int | None = None
    clock: str | None = None
    calibrated_ts: float | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """A node's retained presence message; also its Last Will (``state='offline'``)."""

    state: str
    ts: float
    version: str = ""
    buffered: int = 0
    uptime_s: float = 0.0
    health: NodeHealth | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """Server -> node: every message of the node up to ``seq`` is stored or rejected for good."""

    seq: int


@dataclass(frozen=True, slots=True)
class Alert:
    """Server -> nodes: the yard's current alert, retained."""

    state: str
    kind: str = ""
    severity: str = "info"
    message: str = ""
    since: float | None = None


Message = Telemetry | Event | Status | Ack | Alert


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message with the ids its topic carried."""

    yard: str
    node: str | None
    kind: str
    message: Message


# --------------------------------------------------------------------------
# encoding


def _compact(obj: dict[str, Any]) -> bytes:
    # allow_nan=False: a NaN would make the whole payload invalid JSON for other readers.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def encode(message: Message) -> bytes:
    """The JSON payload for a message, as it goes on the wire."""
    if isinstance(message, Telemetry):
        telemetry: dict[str, Any] = {
            "ts": message.ts,
            "seq": message.seq,
            "temperature_c": message.temperature_c,
            "humidity_pct": message.humidity_pct,
            "rain": message.rain,
            "rain_mm": message.rain_mm,
            "trays": dict(message.trays),
        }
        # Only a calibrated node sends it, so an uncalibrated node's bytes stay as in v1.
        if message.humidity_raw_pct is not None:
            telemetry["humidity_raw_pct"] = message.humidity_raw_pct
        return _compact(telemetry)
    if isinstance(message, Event):
        body: dict[str, Any] = {"ts": message.ts, "seq": message.seq, "type": message.type}
        for key in ("tray", "sensor", "detail"):
            value = getattr(message, key)
            if value is not None:
                body[key] = value
        return _compact(body)
    if isinstance(message, Status):
        status: dict[str, Any] = {
            "state": message.state,
            "ts": message.ts,
            "version": message.version,
            "buffered": message.buffered,
            "uptime_s": message.uptime_s,
        }
        if message.health is not None:
            # Every key, null included: "null" tells a reader the node cannot know.
            health = message.health
            status["health"] = {"throttled": health.throttled,
                                "wifi_rssi_dbm": health.wifi_rssi_dbm,
                                "disk_free_bytes": health.disk_free_bytes,
                                "clock": health.clock,
                                "calibrated_ts": health.calibrated_ts}
        return _compact(status)
    if isinstance(message, Ack):
        return _compact({"seq": message.seq})
    if isinstance(message, Alert):
        return _compact(
            {
                "state": message.state,
                "kind": message.kind,
                "severity": message.severity,
                "message": message.message,
                "since": message.since,
            }
        )
    raise TypeError(f"not a contract message: {type(message).__name__}")


# --------------------------------------------------------------------------
# decoding


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN, Infinity and -Infinity literals; JSON does not.
    raise ProtocolError("not_finite", f"{name} is not valid JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ProtocolError("duplicate_key", "appears twice", field=key)
        result[key] = value
    return result


# One decoder for every message: json.loads builds a new one per call when
# given hooks.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant,
                                 object_pairs_hook=_unique_object)


def load_json_object(payload: bytes) -> dict[str, Any]:
    """Parse a payload into a JSON object, enforcing size, UTF-8 and strict JSON."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ProtocolError("invalid_json", f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(
            "too_large", f"payload is {len(payload)} bytes, the limit is {MAX_PAYLOAD_BYTES}"
        )
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("invalid_json", f"not UTF-8: {exc.reason}") from exc
    try:
        obj = _JSON_DECODER.decode(text)
    except ProtocolError:
        raise
    except json.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"invalid JSON: {exc.msg} at {exc.pos}") from exc
    except (RecursionError, ValueError) as exc:
        # Deep nesting and absurdly long integers are refused by the parser itself.
        raise ProtocolError("invalid_json", f"invalid JSON: {type(exc).__name__}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("not_object",
                            f"payload must be a JSON object, got {_json_type(obj)}")
    return obj


def _number(obj: dict[str, Any], key: str, *, required: bool = True,
            lo: float | None = None, hi: float | None = None) -> float | None:
    if key not in obj or obj[key] is None:
        if required:
            raise ProtocolError("missing_field", "is required", field=key)
        return None
    value = obj[key]
    # bool is an int in Python but true/false is not a number on the wire.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("wrong_type", f"must be a number, got {_json_type(value)}", field=key)
    try:
        number = float(value)
    except OverflowError as exc:
        raise ProtocolError("out_of_range", "is too large", field=key) from exc
    if not math.isfinite(number):
        raise ProtocolError("not_finite", "must be finite", field=key)
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ProtocolError("out_of_range", f"{number:g} is outside {lo:g}..{hi:g}", field=key)
    return number


def _integer(obj: dict[str, Any], key: str, *, required: bool = True, default: int = 0) -> int:
    if key not in obj or obj[key] is None:
        if required:
            raise ProtocolError("missing_field", "is required", field=key)
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("wrong_type", f"must be an integer, got {_json_type(value)}",
                            field=key)
    if not 0 <= value <= MAX_INT:
        raise ProtocolError("out_of_range", f"must be between 0 and {MAX_INT}", field=key)
    return value


def _string(obj: dict[str, Any], key: str, *, required: bool = True, allowed: frozenset[str]
            | None = None, max_len: int = 500) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise ProtocolError("missing_field", "is required", field=key)
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise ProtocolError("wrong_type", f"must be a string, got {_json_type(value)}", field=key)
    if allowed is not None and value not in allowed:
        raise ProtocolError("bad_value", f"{value[:40]!r} is not one of {sorted(allowed)}",
                            field=key)
    if len(value) > max_len:
        raise ProtocolError("out_of_range", f"longer than {max_len} characters", field=key)
    return value


def _json_type(value: object) -> str:
    return {
        bool: "boolean", int: "integer", float: "number", str: "string",
        list: "array", dict: "object", type(None): "null",
    }.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Which measurement times are acceptable: not in the future, not older than the horizon.

    The horizon is how long a node may have been offline with its outbox
    full; older timestamps point to a broken clock (a Pi without an RTC
    that booted in 1970) and would overwrite real data if stored.
    """

    now: float
    horizon_s: float = DEFAULT_HORIZON_S

    def check(self, ts: float) -> float:
        if ts > self.now + MAX_FUTURE_S:
            raise ProtocolError(
                "ts_future", f"{ts:.0f} is {ts - self.now:.0f} s in the future", field="ts"
            )
        if ts < self.now - self.horizon_s:
            raise ProtocolError(
                "ts_too_old",
                f"{ts:.0f} is older than the {self.horizon_s / 86400:g}-day horizon",
                field="ts",
            )
        return ts


def _ts(obj: dict[str, Any], window: TimeWindow | None) -> float:
    ts = _number(obj, "ts")
    assert ts is not None
    return window.check(ts) if window is not None else ts


def decode_telemetry(obj: dict[str, Any], window: TimeWindow | None = None) -> Telemetry:
    trays_raw = obj.get("trays")
    trays: dict[str, str] = {}
    if trays_raw is not None:
        if not isinstance(trays_raw, dict):
            raise ProtocolError("wrong_type", f"must be an object, got {_json_type(trays_raw)}",
                                field="trays")
        if len(trays_raw) > 64:
            raise ProtocolError("out_of_range", "more than 64 trays", field="trays")
        for tray, state in trays_raw.items():
            check_id(tray, field_name="trays")
            # isinstance first: an unhashable state (a list) must not raise TypeError.
            if not isinstance(state, str) or state not in TRAY_STATES:
                raise ProtocolError(
                    "bad_value", f"{str(state)[:40]!r} is not one of {sorted(TRAY_STATES)}",
                    field=f"trays.{tray}",
                )
            trays[tray] = state
    rain = obj.get("rain")
    if rain is not None and not isinstance(rain, bool):
        raise ProtocolError("wrong_type", f"must be true, false or null, got {_json_type(rain)}",
                            field="rain")
    return Telemetry(
        ts=_ts(obj, window),
        seq=_integer(obj, "seq"),
        temperature_c=_number(obj, "temperature_c", required=False,
                              lo=TEMPERATURE_RANGE_C[0], hi=TEMPERATURE_RANGE_C[1]),
        humidity_pct=_number(obj, "humidity_pct", required=False,
                             lo=HUMIDITY_RANGE_PCT[0], hi=HUMIDITY_RANGE_PCT[1]),
        rain=rain,
        rain_mm=_number(obj, "rain_mm", required=False, lo=0.0, hi=1000.0),
        trays=trays,
        humidity_raw_pct=_number(obj, "humidity_raw_pct", required=False,
                                 lo=HUMIDITY_RANGE_PCT[0], hi=HUMIDITY_RANGE_PCT[1]),
    )


def decode_event(obj: dict[str, Any], window: TimeWindow | None = None) -> Event:
    event_type = _string(obj, "type", allowed=EVENT_TYPES)
    assert event_type is not None
    tray = obj.get("tray")
    if tray is not None:
        check_id(tray, field_name="tray")
    if event_type.startswith("tray_") and tray is None:
        raise ProtocolError("missing_field", f"is required for {event_type}", field="tray")
    return Event(
        ts=_ts(obj, window),
        seq=_integer(obj, "seq"),
        type=event_type,
        tray=tray,
        sensor=_string(obj, "sensor", required=False, max_len=64),
        detail=_string(obj, "detail", required=False),
    )


def decode_status(obj: dict[str, Any], window: TimeWindow | None = None) -> Status:
    state = _string(obj, "state", allowed=NODE_STATES)
    assert state is not None
    uptime = _number(obj, "uptime_s", required=False, lo=0.0, hi=float(MAX_INT))
    # The Last Will carries the time the node connected; status is not a
    # reading, so only the future bound applies.
    ts = _number(obj, "ts")
    assert ts is not None
    if window is not None and ts > window.now + MAX_FUTURE_S:
        raise ProtocolError("ts_future", f"{ts:.0f} is in the future", field="ts")
    return Status(
        state=state,
        ts=ts,
        version=_string(obj, "version", required=False, max_len=64) or "",
        buffered=_integer(obj, "buffered", required=False),
        uptime_s=uptime or 0.0,
        health=decode_health(obj.get("health")),
    )


def decode_health(raw: object) -> NodeHealth | None:
    """The ``health`` object of a status; ``None`` when absent (a node older than it).

    Field names in errors are dotted (``health.wifi_rssi_dbm``) so the log
    says which reading was wrong.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProtocolError("wrong_type", f"must be an object, got {_json_type(raw)}",
                            field="health")
    try:
        throttled = _integer(raw, "throttled", required=False, default=-1)
        disk_free = _integer(raw, "disk_free_bytes", required=False, default=-1)
        return NodeHealth(
            throttled=None if throttled < 0 else throttled,
            wifi_rssi_dbm=_number(raw, "wifi_rssi_dbm", required=False,
                                  lo=WIFI_RSSI_RANGE_DBM[0], hi=WIFI_RSSI_RANGE_DBM[1]),
            disk_free_bytes=None if disk_free < 0 else disk_free,
            clock=_string(raw, "clock", required=False, allowed=CLOCK_STATES),
            calibrated_ts=_number(raw, "calibrated_ts", required=False, lo=0.0),
        )
    except ProtocolError as exc:
        detail = str(exc).removeprefix(f"{exc.field}: ")
        raise ProtocolError(exc.reason, detail, field=f"health.{exc.field}") from None


def decode_ack(obj: dict[str, Any]) -> Ack:
    return Ack(seq=_integer(obj, "seq"))


def decode_alert(obj: dict[str, Any]) -> Alert:
    state = _string(obj, "state", allowed=ALERT_STATES)
    assert state is not None
    return Alert(
        state=state,
        kind=_string(obj, "kind", required=False, max_len=64) or "",
        severity=_string(obj, "severity", required=False, allowed=SEVERITIES) or "info",
        message=_string(obj, "message", required=False, max_len=1000) or "",
        since=_number(obj, "since", required=False),
    )


def decode(topic: str, payload: bytes, window: TimeWindow | None = None) -> Envelope:
    """Decode and validate one MQTT message.

    ``window`` bounds the measurement time (pass one on the server; a node
    decoding ``ack`` and ``alert`` has no need). Raises ``ProtocolError``
    and nothing else.
    """
    if not isinstance(topic, str):
        raise ProtocolError("bad_topic", "topic must be a string")
    return decode_object(parse_topic(topic), load_json_object(payload), window)


def decode_object(parsed: Topic, obj: dict[str, Any], window: TimeWindow | None = None
                  ) -> Envelope:
    """The last step of ``decode``: a parsed topic and JSON object to a message.

    For a caller that needs the object when the message is refused (the
    server reads a refused message's ``seq`` from it instead of parsing again).
    """
    message: Message
    if parsed.kind == "telemetry":
        message = decode_telemetry(obj, window)
    elif parsed.kind == "event":
        message = decode_event(obj, window)
    elif parsed.kind == "status":
        message = decode_status(obj, window)
    elif parsed.kind == "ack":
        message = decode_ack(obj)
    else:
        message = decode_alert(obj)
    return Envelope(parsed.yard, parsed.node, parsed.kind, message)


def offline_will(ts: float, version: str) -> bytes:
    """The Last Will payload a node registers at connect: retained ``offline``."""
    return encode(Status(state="offline", ts=ts, version=version, buffered=0, uptime_s=0.0))


# --------------------------------------------------------------------------
# the sequence number of a message the server refused


# How much of a payload ``scan_seq`` reads. A node's encoder writes ``seq``
# among the first keys of a message of a few hundred bytes, so the first
# 4 KiB hold it in every payload a node can produce; a payload whose seq is
# further in was not written by a node and is not acknowledged.
SEQ_SCAN_BYTES: Final = 4096
# JSON tokens: a string (escapes kept), a structural character, or a run of
# anything else (numbers, literals, and any garbage up to the next delimiter).
_SCAN_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^"{}\[\]:,\s]+', re.DOTALL)
_DIGITS = re.compile(rb"0|[1-9][0-9]*")


def scan_seq(payload: bytes, limit: int = SEQ_SCAN_BYTES) -> int | None:
    """The top-level ``seq`` of a payload that did not decode, or None when not certain.

    For payloads over ``MAX_PAYLOAD_BYTES`` or not JSON, so the node's ack
    can cover a message the server refused for good. Reads at most ``limit``
    bytes, never the whole payload. Sound because it only answers when the
    number is certainly the message's own ``seq``: the key is at depth 1 of
    the top-level object (not inside a nested object, array or string, since
    strings are skipped whole, escapes included), it is followed by ``:`` and
    a plain non-negative integer within int64 that ends inside the window
    (a number cut by the window could be longer), and ``seq`` appears once at
    top level in what was read. Anything else is None: the node then waits
    for its gap timeout, as for a lost message, which is safe; a wrong seq
    would not be (the node would delete a reading that was never stored).
    """
    window = bytes(payload[:limit])
    tokens = [(m.group(), m.end()) for m in _SCAN_TOKEN.finditer(window)]
    if not tokens or tokens[0][0] != b"{":
        return None
    found: int | None = None
    depth = 0
    for i, (token, _) in enumerate(tokens):
        if token in (b"{", b"["):
            depth += 1
        elif token in (b"}", b"]"):
            depth -= 1
            if depth <= 0:
                break
        elif (depth == 1 and token == b'"seq"' and tokens[i - 1][0] in (b"{", b",")
              and i + 2 < len(tokens) and tokens[i + 1][0] == b":"):
            value, value_end = tokens[i + 2]
            if (found is not None or not _DIGITS.fullmatch(value) or value_end >= len(window)
                    or int(value) > MAX_INT):
                return None
            found = int(value)
    return found


# --------------------------------------------------------------------------
# the share group: processes of one ingest group tell each other what they stored

PEER_ROOT: Final = "secadero-ingest/v1"
NodeKey = tuple[str, str]
SeqRange = tuple[int, int]


def peer_topic(group: str) -> str:
    """Where the processes of share group ``group`` announce the sequence numbers they stored."""
    if not group or any(c in group for c in "/+#"):
        raise ProtocolError("bad_id", f"{group[:40]!r} cannot be one topic level", field="group")
    return f"{PEER_ROOT}/{group}/done"


def is_peer_topic(topic: str) -> bool:
    return topic.startswith(PEER_ROOT + "/")


@dataclass(frozen=True, slots=True)
class PeerDone:
    """One process's announcement: per node, the ranges of seqs it stored or refused for good.

    ``sender`` is the process's MQTT client id (each process hears its own
    announcements too and skips them). Ranges are inclusive ``(first, last)``.
    """

    sender: str
    done: dict[NodeKey, list[SeqRange]]


def seq_ranges(seqs: list[int]) -> list[SeqRange]:
    """[1, 2, 3, 7, 8] -> [(1, 3), (7, 8)] (duplicates and order do not matter)."""
    ranges: list[SeqRange] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def encode_peer_done(message: PeerDone) -> bytes:
    """``{"from": sender, "done": {"yard/node": [[first, last], ...]}}``, compact."""
    return _compact({"from": message.sender,
                     "done": {f"{yard}/{node}": [[first, last] for first, last in ranges]
                              for (yard, node), ranges in message.done.items()}})


def decode_peer_done(payload: bytes) -> PeerDone:
    """Decode an announcement; anything malformed raises ``ProtocolError`` (and nothing else)."""
    obj = load_json_object(payload)
    sender = obj.get("from")
    if not isinstance(sender, str) or not sender:
        raise ProtocolError("wrong_type", "must be a non-empty string", field="from")
    raw = obj.get("done")
    if not isinstance(raw, dict):
        raise ProtocolError("wrong_type", f"must be an object, got {_json_type(raw)}",
                            field="done")
    done: dict[NodeKey, list[SeqRange]] = {}
    for key, ranges in raw.items():
        yard, _, node = key.partition("/")
        if not (is_valid_id(yard) and is_valid_id(node)):
            raise ProtocolError("bad_id", f"{key[:80]!r} is not yard/node", field="done")
        if not isinstance(ranges, list):
            raise ProtocolError("wrong_type", "must be a list of [first, last]", field=key)
        parsed: list[SeqRange] = []
        for pair in ranges:
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(type(n) is int and 0 <= n <= MAX_INT for n in pair)
                    or pair[0] > pair[1]):
                raise ProtocolError("out_of_range", f"{str(pair)[:40]} is not [first, last] "
                                    "with 0 <= first <= last", field=key)
            parsed.append((pair[0], pair[1]))
        done[(yard, node)] = parsed
    return PeerDone(sender, done)
