"""Property tests: no frame a DHT can send makes the driver return a non-finite or absurd value."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from secadero.errors import SensorError
from secadero.firmware.dht import DHT22Sensor, ScriptedDHT
from secadero.firmware.filters import TRAY_TEMPERATURE_RANGE_C

values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 6553.5, -6553.5, 99.9, 100.0, -40.0, 80.0]))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(values, values), min_size=1, max_size=8))
def test_driver_returns_finite_plausible_values_or_raises(frames: list) -> None:
    now = [0.0]
    sensor = DHT22Sensor(ScriptedDHT(frames), tries=len(frames), clock=lambda: now[0],
                         sleep=lambda s: now.__setitem__(0, now[0] + s))
    try:
        reading = sensor.read()
    except SensorError:
        return
    assert math.isfinite(reading.temperature_c) and math.isfinite(reading.humidity_pct)
    assert TRAY_TEMPERATURE_RANGE_C[0] <= reading.temperature_c <= TRAY_TEMPERATURE_RANGE_C[1]
    assert 0.0 <= reading.humidity_pct <= 100.0
