"""Decoded messages -> InfluxDB points (the time-series schema of DESIGN.md).

A pure processor between the MQTT input and the InfluxDB output: no I/O, no
clock of its own. Line protocol is built by influxdb-client's ``Point`` (its
escaping of tags and strings is tested upstream; ours is never hand-written).
Telemetry, nine in ten messages, goes through ``LineBuilder``: the same bytes,
with each series' escaped measurement and tags made by ``Point`` once and
kept (see its docstring for why).

Schema (tags are ids only; time = the reading's own ``ts``, so a re-delivered
message overwrites itself and at-least-once delivery stores it once):

| measurement | tags | fields |
| --- | --- | --- |
| climate | yard, node | temperature_c, humidity_pct, dew_point_c, vpd_kpa, humidity_raw_pct |
| rain | yard, node | wet (bool), rain_mm |
| tray | yard, node, tray | state (string), extended (int 0/1) |
| node | yard, node | online (int), buffered, uptime_s, seq_gap; health (below) |
| event | yard, node | type, seq, tray, sensor, detail (one per ``event`` message) |

``humidity_raw_pct`` is a calibrated node's uncorrected reading. A status
with the node's ``health`` adds to its ``node`` point: throttled (the Pi's
bit mask), under_voltage, under_voltage_seen, throttled_now, throttled_seen
(int 0/1), wifi_rssi_dbm, disk_free_bytes, clock (string), clock_synced
(int 0/1), calibrated_ts (UNIX s); what the node could not know is absent.

``rain_*`` and ``tray_*`` events also give a ``rain`` / ``tray`` point at the
event's time, so the curves show the exact instant, not the next sample.
"""

from __future__ import annotations

from collections.abc import Iterator

from influxdb_client import Point, WritePrecision

from secadero.contract import Envelope, Event, NodeHealth, Status, Telemetry
from secadero.server import influx
from secadero.server.air import dew_point_c, vpd_kpa

# Timestamps are written in microseconds: a float UNIX time of today has
# about 16 significant digits, so nanoseconds would be noise and vary with
# rounding, while microseconds round the same way on every re-delivery.
PRECISION = WritePrecision.US
# The output's name for it; a test checks the two agree.
PRECISION_PARAM = influx.PRECISION_PARAM


def time_us(ts: float) -> int:
    """A UNIX time in seconds as the integer microseconds written to InfluxDB."""
    return round(ts * 1_000_000)


def _point(measurement: str, yard: str, node: str, at_us: int) -> Point:
    return Point(measurement).tag("yard", yard).tag("node", node).time(at_us, PRECISION)


def climate_point(yard: str, node: str, reading: Telemetry) -> Point | None:
    """The ``climate`` point of a telemetry message; ``None`` when both sensors failed."""
    temperature, humidity = reading.temperature_c, reading.humidity_pct
    if temperature is None and humidity is None:
        return None
    point = _point("climate", yard, node, time_us(reading.ts))
    if temperature is not None:
        point.field("temperature_c", float(temperature))
    if humidity is not None:
        # Always a float, even for a whole number: InfluxDB fixes a field's
        # type at its first write and a later 70i would conflict.
        point.field("humidity_pct", float(humidity))
    if reading.humidity_raw_pct is not None:
        point.field("humidity_raw_pct", float(reading.humidity_raw_pct))
    if temperature is not None and humidity is not None:
        dew = dew_point_c(temperature, humidity)
        if dew is not None:
            point.field("dew_point_c", dew)
        point.field("vpd_kpa", vpd_kpa(temperature, humidity))
    return point


def telemetry_points(yard: str, node: str, reading: Telemetry) -> Iterator[Point]:
    climate = climate_point(yard, node, reading)
    if climate is not None:
        yield climate
    at_us = time_us(reading.ts)
    if reading.rain is not None or reading.rain_mm is not None:
        rain = _point("rain", yard, node, at_us)
        if reading.rain is not None:
            rain.field("wet", reading.rain)
        if reading.rain_mm is not None:
            rain.field("rain_mm", float(reading.rain_mm))
        yield rain
    for tray, state in reading.trays.items():
        yield tray_point(yard, node, tray, state, at_us)


def tray_point(yard: str, node: str, tray: str, state: str, at_us: int) -> Point:
    return (_point("tray", yard, node, at_us).tag("tray", tray)
            .field("state", state).field("extended", 1 if state == "extended" else 0))


def event_points(yard: str, node: str, event: Event) -> Iterator[Point]:
    at_us = time_us(event.ts)
    record = _point("event", yard, node, at_us).field("type", event.type).field("seq", event.seq)
    for key in ("tray", "sensor", "detail"):
        value = getattr(event, key)
        if value is not None:
            record.field(key, value)
    yield record
    if event.type in ("rain_started", "rain_stopped"):
        yield _point("rain", yard, node, at_us).field("wet", event.type == "rain_started")
    elif event.type in ("tray_extended", "tray_retracted") and event.tray is not None:
        yield tray_point(yard, node, event.tray, event.type.removeprefix("tray_"), at_us)


def node_point(yard: str, node: str, at_s: float, *, online: bool | None = None,
               buffered: int | None = None, uptime_s: float | None = None,
               seq_gap: int | None = None) -> Point:
    """A ``node`` point: presence (from ``status`` or silence) and/or lost sequence numbers."""
    point = _point("node", yard, node, time_us(at_s))
    if online is not None:
        point.field("online", 1 if online else 0)
    if buffered is not None:
        point.field("buffered", buffered)
    if uptime_s is not None:
        point.field("uptime_s", float(uptime_s))
    if seq_gap is not None:
        point.field("seq_gap", seq_gap)
    return point


def status_points(yard: str, node: str, status: Status, received_at: float) -> Iterator[Point]:
    # A status is stamped with the time the server received it, not its
    # ``ts``: the Last Will carries the time the node connected, which would
    # overwrite the "online" point written at that same instant.
    point = node_point(yard, node, received_at, online=status.state == "online",
                       buffered=status.buffered, uptime_s=status.uptime_s)
    if status.health is not None:
        add_health_fields(point, status.health)
    yield point


# Raspberry Pi firmware get_throttled bits (raspberrypi.com/documentation, "vcgencmd").
UNDER_VOLTAGE_NOW = 1 << 0
THROTTLED_NOW = 1 << 2
UNDER_VOLTAGE_SEEN = 1 << 16
THROTTLED_SEEN = 1 << 18


def add_health_fields(point: Point, health: NodeHealth) -> None:
    """A node's self-report as ``node`` fields; what the node could not know is left out.

    The flags are written as 0/1 integers beside the raw mask so a panel can
    colour "under-voltage now" without bit arithmetic (InfluxQL has none).
    """
    if health.throttled is not None:
        mask = health.throttled
        point.field("throttled", mask)
        point.field("under_voltage", 1 if mask & UNDER_VOLTAGE_NOW else 0)
        point.field("under_voltage_seen", 1 if mask & UNDER_VOLTAGE_SEEN else 0)
        point.field("throttled_now", 1 if mask & THROTTLED_NOW else 0)
        point.field("throttled_seen", 1 if mask & THROTTLED_SEEN else 0)
    if health.wifi_rssi_dbm is not None:
        point.field("wifi_rssi_dbm", float(health.wifi_rssi_dbm))
    if health.disk_free_bytes is not None:
        point.field("disk_free_bytes", health.disk_free_bytes)
    if health.clock is not None:
        point.field("clock", health.clock)
        point.field("clock_synced", 1 if health.clock == "synced" else 0)
    if health.calibrated_ts is not None:
        point.field("calibrated_ts", float(health.calibrated_ts))


def points_for(envelope: Envelope, received_at: float) -> list[Point]:
    """Every point a decoded node message gives (an empty list for kinds not stored)."""
    message = envelope.message
    node = envelope.node
    if node is None:
        return []
    if isinstance(message, Telemetry):
        return list(telemetry_points(envelope.yard, node, message))
    if isinstance(message, Event):
        return list(event_points(envelope.yard, node, message))
    if isinstance(message, Status):
        return list(status_points(envelope.yard, node, message, received_at))
    return []


def to_lines(points: list[Point]) -> list[bytes]:
    """Line protocol for each point, by the library (one ``bytes`` line per point)."""
    return [point.to_line_protocol(PRECISION).encode() for point in points]


# --------------------------------------------------------------------------
# the ingest's fast path for telemetry


def _number(value: float) -> str:
    # As influxdb-client formats a float field: repr, without a trailing ".0".
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


class LineBuilder:
    """Line protocol for decoded messages, byte for byte what ``Point`` would write.

    ``Point.to_line_protocol`` escapes the measurement and every tag key and
    value on each call: about 10 us a point, three points a reading, which
    was a third of the ingest's CPU. A series (measurement + tags) repeats
    for every reading of a node, so its escaped key is made by ``Point`` once
    and kept; what varies per reading is numbers (formatted as the library
    formats them), booleans, the tray state (one of four values, its field
    made by ``Point`` too) and the time. Every text that comes from a node
    therefore still goes through the library's escaping.
    ``tests/server/test_points.py`` checks the output equals ``Point``'s for
    arbitrary ids and values. Events and status messages, rare, use ``Point``.
    """

    def __init__(self, max_series: int = 200_000) -> None:
        # Bounded: ids are validated but a misbehaving fleet could invent
        # many; dropping the cache only costs speed.
        self.max_series = max_series
        self._keys: dict[tuple[str, ...], str] = {}
        self._tray_fields: dict[str, str] = {}

    @property
    def cached_series(self) -> int:
        """Series keys held in the cache (at most ``max_series``)."""
        return len(self._keys)

    def lines(self, envelope: Envelope, received_at: float) -> list[bytes]:
        """Every line a decoded node message gives (none for kinds not stored)."""
        message = envelope.message
        if isinstance(message, Telemetry) and envelope.node is not None:
            return self.telemetry_lines(envelope.yard, envelope.node, message)
        return to_lines(points_for(envelope, received_at))

    def telemetry_lines(self, yard: str, node: str, reading: Telemetry) -> list[bytes]:
        when = f" {time_us(reading.ts)}"
        lines: list[bytes] = []
        temperature, humidity = reading.temperature_c, reading.humidity_pct
        if temperature is not None or humidity is not None:
            fields = []
            # Sorted by field name, as Point writes them.
            if temperature is not None and humidity is not None:
                dew = dew_point_c(temperature, humidity)
                if dew is not None:
                    fields.append(f"dew_point_c={_number(dew)}")
            if humidity is not None:
                fields.append(f"humidity_pct={_number(float(humidity))}")
            if reading.humidity_raw_pct is not None:
                fields.append(f"humidity_raw_pct={_number(float(reading.humidity_raw_pct))}")
            if temperature is not None:
                fields.append(f"temperature_c={_number(float(temperature))}")
            if temperature is not None and humidity is not None:
                fields.append(f"vpd_kpa={_number(vpd_kpa(temperature, humidity))}")
            lines.append(f"{self._key('climate', yard, node)} {','.join(fields)}{when}".encode())
        if reading.rain is not None or reading.rain_mm is not None:
            fields = []
            if reading.rain_mm is not None:
                fields.append(f"rain_mm={_number(float(reading.rain_mm))}")
            if reading.rain is not None:
                fields.append("wet=true" if reading.rain else "wet=false")
            lines.append(f"{self._key('rain', yard, node)} {','.join(fields)}{when}".encode())
        for tray, state in reading.trays.items():
            lines.append(f"{self._key('tray', yard, node, tray)} "
                         f"{self._tray_field(state)}{when}".encode())
        return lines

    def _key(self, measurement: str, yard: str, node: str, tray: str | None = None) -> str:
        """The escaped ``measurement,tag=value,...`` of a series, made by ``Point``."""
        cache_key = (measurement, yard, node) if tray is None else (measurement, yard, node, tray)
        key = self._keys.get(cache_key)
        if key is None:
            point = Point(measurement).tag("yard", yard).tag("node", node)
            if tray is not None:
                point.tag("tray", tray)
            # A placeholder field: the key is everything before the first
            # unescaped space, and "x=0i" (no time) has none.
            key = point.field("x", 0).to_line_protocol().rpartition(" ")[0]
            if len(self._keys) >= self.max_series:
                self._keys.clear()
            self._keys[cache_key] = key
        return key

    def _tray_field(self, state: str) -> str:
        fields = self._tray_fields.get(state)
        if fields is None:
            line = (Point("tray").field("state", state)
                    .field("extended", 1 if state == "extended" else 0).to_line_protocol())
            fields = line.partition(" ")[2]
            if len(self._tray_fields) < 64:  # the contract allows four states
                self._tray_fields[state] = fields
        return fields
