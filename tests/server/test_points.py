"""Messages -> points: derived values against published tables, schema, escaping by the library."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secadero.contract import TRAY_STATES, Envelope, Event, Status, Telemetry
from secadero.server.air import dew_point_c, saturation_vapour_pressure_kpa, vpd_kpa
from secadero.server.points import LineBuilder, points_for, time_us, to_lines


@pytest.mark.parametrize(("temperature_c", "humidity_pct", "expected_c"), [
    (25.0, 60.0, 16.7),   # psychrometric tables
    (30.0, 80.0, 26.2),
    (20.0, 100.0, 20.0),  # saturated air: dew point = temperature
    (0.0, 50.0, -9.2),
])
def test_dew_point_matches_tables(temperature_c: float, humidity_pct: float,
                                  expected_c: float) -> None:
    assert dew_point_c(temperature_c, humidity_pct) == pytest.approx(expected_c, abs=0.1)


def test_dew_point_is_undefined_in_perfectly_dry_air() -> None:
    assert dew_point_c(25.0, 0.0) is None


def test_vpd_against_fao56() -> None:
    # FAO-56 annex 2, table 2.3: es(25 degC) = 3.168 kPa, es(30 degC) = 4.243 kPa.
    assert saturation_vapour_pressure_kpa(25.0) == pytest.approx(3.168, abs=0.001)
    assert saturation_vapour_pressure_kpa(30.0) == pytest.approx(4.243, abs=0.001)
    assert vpd_kpa(25.0, 60.0) == pytest.approx(3.168 * 0.4, abs=0.001)
    assert vpd_kpa(25.0, 100.0) == 0.0


def _lines(envelope: Envelope, received_at: float = 1_800_000_000.0) -> list[str]:
    return [line.decode() for line in to_lines(points_for(envelope, received_at))]


def test_telemetry_gives_climate_rain_and_one_point_per_tray() -> None:
    reading = Telemetry(ts=1_764_000_000.5, seq=3, temperature_c=25.0, humidity_pct=60.0,
                        rain=False, rain_mm=0.0, trays={"t1": "extended", "t2": "moving"})
    lines = _lines(Envelope("norte", "n1", "telemetry", reading))
    dew, vpd = dew_point_c(25.0, 60.0), vpd_kpa(25.0, 60.0)
    assert lines == [
        f"climate,node=n1,yard=norte dew_point_c={dew},humidity_pct=60,temperature_c=25,"
        f"vpd_kpa={vpd} 1764000000500000",
        "rain,node=n1,yard=norte rain_mm=0,wet=false 1764000000500000",
        "tray,node=n1,tray=t1,yard=norte extended=1i,state=\"extended\" 1764000000500000",
        "tray,node=n1,tray=t2,yard=norte extended=0i,state=\"moving\" 1764000000500000",
    ]


def test_failed_sensors_store_nothing_made_up() -> None:
    reading = Telemetry(ts=1_764_000_000.0, seq=4, temperature_c=None, humidity_pct=55.0)
    assert _lines(Envelope("norte", "n1", "telemetry", reading)) == [
        "climate,node=n1,yard=norte humidity_pct=55 1764000000000000"]
    empty = Telemetry(ts=1_764_000_000.0, seq=5)
    assert _lines(Envelope("norte", "n1", "telemetry", empty)) == []


def test_events_give_an_event_point_and_the_state_at_that_instant() -> None:
    rain = Event(ts=1_764_000_001.0, seq=9, type="rain_started")
    assert _lines(Envelope("norte", "n1", "event", rain)) == [
        'event,node=n1,yard=norte seq=9i,type="rain_started" 1764000001000000',
        "rain,node=n1,yard=norte wet=true 1764000001000000",
    ]
    tray = Event(ts=1_764_000_002.0, seq=10, type="tray_retracted", tray="t2")
    assert _lines(Envelope("norte", "n1", "event", tray))[1] == (
        'tray,node=n1,tray=t2,yard=norte extended=0i,state="retracted" 1764000002000000')
    fault = Event(ts=1_764_000_003.0, seq=11, type="sensor_fault", sensor="dht22",
                  detail='no answer, "twice"\nthen =, ok')
    # The library escapes quotes; a newline stays inside the quoted string,
    # which InfluxDB's parser accepts (checked against the real server in
    # test_ingest_faults.py).
    assert _lines(Envelope("norte", "n1", "event", fault)) == [
        'event,node=n1,yard=norte detail="no answer, \\"twice\\"\nthen =, ok",'
        'sensor="dht22",seq=11i,type="sensor_fault" 1764000003000000']


def test_status_is_stamped_with_the_receive_time() -> None:
    status = Status(state="offline", ts=1_700_000_000.0, version="1.2", buffered=0, uptime_s=0)
    assert _lines(Envelope("norte", "n1", "status", status), received_at=1_800_000_000.25) == [
        "node,node=n1,yard=norte buffered=0i,online=0i,uptime_s=0 1800000000250000"]


def test_time_rounds_to_the_same_microsecond_on_every_delivery() -> None:
    assert time_us(1_764_000_000.123456) == 1_764_000_000_123_456
    assert time_us(0.0000005) == 0  # banker's rounding, but deterministic


# --------------------------------------------------------------------------
# LineBuilder: the ingest's cached path must write exactly what Point writes

_any_text = st.text(min_size=1, max_size=12)
_temperature = st.floats(min_value=-40, max_value=85) | st.integers(-40, 85) | st.none()
_humidity = st.floats(min_value=0, max_value=100) | st.integers(0, 100) | st.none()


@settings(max_examples=400, deadline=None)
@given(yard=_any_text, node=_any_text,
       ts=st.floats(min_value=0, max_value=4_000_000_000),
       temperature=_temperature, humidity=_humidity,
       rain=st.booleans() | st.none(),
       rain_mm=st.floats(min_value=0, max_value=1000) | st.none(),
       trays=st.dictionaries(_any_text, st.sampled_from(sorted(TRAY_STATES)), max_size=3),
       humidity_raw=_humidity)
def test_line_builder_writes_what_point_writes(yard: str, node: str, ts: float,
                                              temperature: float | None, humidity: float | None,
                                              rain: bool | None, rain_mm: float | None,
                                              trays: dict[str, str],
                                              humidity_raw: float | None) -> None:
    """Any text in the ids (spaces, commas, equals signs, quotes, backslashes, newlines)."""
    reading = Telemetry(ts=ts, seq=1, temperature_c=temperature, humidity_pct=humidity,
                        rain=rain, rain_mm=rain_mm, trays=trays, humidity_raw_pct=humidity_raw)
    envelope = Envelope(yard, node, "telemetry", reading)
    builder = LineBuilder()
    expected = to_lines(points_for(envelope, 0.0))
    assert builder.lines(envelope, 0.0) == expected
    assert builder.lines(envelope, 0.0) == expected  # and again, from the cache


def test_line_builder_cache_is_bounded_and_still_right() -> None:
    builder = LineBuilder(max_series=10)
    for i in range(50):
        reading = Telemetry(ts=1_764_000_000.0, seq=i, temperature_c=20.0, humidity_pct=50.0)
        envelope = Envelope("y", f"n{i}", "telemetry", reading)
        assert builder.lines(envelope, 0.0) == to_lines(points_for(envelope, 0.0))
    assert builder.cached_series <= 10


def test_line_builder_writes_the_exact_lines_of_events_and_status() -> None:
    """The ingest's builder (what the receive stage calls) on the rarer kinds, against the
    bytes InfluxDB must get, written out (not recomputed by the code under test)."""
    builder = LineBuilder()
    event = Envelope("y", "n1", "event", Event(ts=1_764_000_000.0, seq=2, type="sensor_fault",
                                               sensor="dht22", detail='say "hi"\nback\\slash'))
    assert builder.lines(event, 1_764_000_100.0) == [
        b'event,node=n1,yard=y detail="say \\"hi\\"\nback\\\\slash",sensor="dht22",'
        b'seq=2i,type="sensor_fault" 1764000000000000']
    rain = Envelope("y", "n1", "event", Event(ts=1_764_000_001.0, seq=3, type="rain_started"))
    assert builder.lines(rain, 1_764_000_100.0) == [
        b'event,node=n1,yard=y seq=3i,type="rain_started" 1764000001000000',
        b"rain,node=n1,yard=y wet=true 1764000001000000"]
    status = Envelope("y", "n1", "status", Status(state="online", ts=1.0, buffered=3))
    assert builder.lines(status, 1_764_000_100.25) == [
        b"node,node=n1,yard=y buffered=3i,online=1i,uptime_s=0 1764000100250000"]


def test_a_vanishingly_small_humidity_still_gives_a_dew_point() -> None:
    # Found by the property test above: 5e-324 % divided by 100 underflowed to 0.
    dew = dew_point_c(0.0, 5e-324)
    assert dew is not None and -243.04 < dew < -200


def test_the_lines_and_the_output_agree_on_the_time_precision() -> None:
    """points.py writes microseconds; the InfluxDB output tells both APIs so."""
    from secadero.server import influx, points

    assert (points.PRECISION, points.PRECISION_PARAM) == (influx.PRECISION_V2, "u")
