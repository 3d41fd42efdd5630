"""Opt-in tests on a real Raspberry Pi with the parts wired as in docs/hardware.md.

Skipped unless ``SECADERO_HARDWARE_TEST=1``: they need GPIO, a DHT22 on
GPIO 4, the rain plate on GPIO 17 and the beacon relay on GPIO 23.
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("SECADERO_HARDWARE_TEST") != "1",
                                reason="real hardware: set SECADERO_HARDWARE_TEST=1 on a Pi")


def test_real_dht22_gives_a_plausible_reading() -> None:
    from secadero.firmware.dht import AdafruitDHTBackend, DHT22Sensor

    with DHT22Sensor(AdafruitDHTBackend(int(os.environ.get("SECADERO_DHT_PIN", "4")))) as dht:
        reading = dht.read()
    assert -10 <= reading.temperature_c <= 60
    assert 0 < reading.humidity_pct <= 100


def test_real_plate_reads_and_beacon_switches() -> None:
    from secadero.firmware.outputs import Beacon
    from secadero.firmware.rain import RainPlate

    with RainPlate(17) as plate, Beacon(23) as beacon:
        assert plate.is_wet in (True, False)
        beacon.on()
        time.sleep(0.5)
        assert beacon.is_active
        beacon.off()
        assert not beacon.is_active
