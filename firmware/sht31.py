"""Temperature and humidity from a Sensirion SHT31 on I2C: the more reliable choice.

Wiring (see docs/hardware.md): VIN to 3.3 V, GND, SDA to GPIO 2 (pin 3),
SCL to GPIO 3 (pin 5); breakout boards carry the I2C pull-ups. Address 0x44
(ADDR low) or 0x45. Enable I2C with ``raspi-config nonint do_i2c 0``.

Unlike the DHT22 each frame carries a CRC-8 per value, and the part has no
2-second rule: a single-shot, high-repeatability measurement takes 15 ms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from secadero.errors import SensorNotConnected, SensorReadError
from secadero.firmware.dht import Reading
from secadero.firmware.filters import reject_reason

# Single shot, high repeatability, no clock stretching (datasheet table 9).
MEASURE_COMMAND = (0x24, 0x00)
MEASURE_TIME_S = 0.016


class I2CBus(Protocol):
    """The two calls the driver needs (smbus2's ``i2c_rdwr`` does both on a real Pi)."""

    def write(self, address: int, data: bytes) -> None: ...

    def read(self, address: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class SMBus2Bus:
    """The real I2C bus through smbus2 (imported lazily; ``pip install smbus2`` on the Pi)."""

    def __init__(self, bus: int = 1) -> None:
        import smbus2  # only on a node with an SHT31

        self._smbus2 = smbus2
        self._bus = smbus2.SMBus(bus)

    def write(self, address: int, data: bytes) -> None:
        self._bus.i2c_rdwr(self._smbus2.i2c_msg.write(address, list(data)))

    def read(self, address: int, length: int) -> bytes:
        message = self._smbus2.i2c_msg.read(address, length)
        self._bus.i2c_rdwr(message)
        return bytes(message)

    def close(self) -> None:
        self._bus.close()


def crc8(data: bytes) -> int:
    """Sensirion's CRC-8 (polynomial 0x31, init 0xFF)."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def decode_frame(frame: bytes) -> tuple[float, float]:
    """``(temperature_c, humidity_pct)`` from the 6-byte answer; raises on a bad CRC."""
    if len(frame) != 6:
        raise SensorReadError(f"SHT31 answered {len(frame)} bytes, expected 6")
    if crc8(frame[0:2]) != frame[2] or crc8(frame[3:5]) != frame[5]:
        raise SensorReadError("SHT31 CRC mismatch")
    raw_t = (frame[0] << 8) | frame[1]
    raw_h = (frame[3] << 8) | frame[4]
    return round(-45 + 175 * raw_t / 65535, 2), round(100 * raw_h / 65535, 2)


class SHT31Sensor:
    """An SHT31 read as one single-shot measurement, checked like the DHT22's frames."""

    def __init__(self, bus: I2CBus, *, address: int = 0x44, tries: int = 3,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._bus = bus
        self.address = address
        self.tries = tries
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last: Reading | None = None
        self._closed = False

    @property
    def temperature_c(self) -> float | None:
        return None if self._last is None else self._last.temperature_c

    @property
    def humidity_pct(self) -> float | None:
        return None if self._last is None else self._last.humidity_pct

    def read(self) -> Reading:
        with self._lock:
            last_error: Exception | None = None
            for _ in range(self.tries):
                try:
                    self._bus.write(self.address, bytes(MEASURE_COMMAND))
                    self._sleep(MEASURE_TIME_S)
                    temperature_c, humidity_pct = decode_frame(self._bus.read(self.address, 6))
                except OSError as exc:
                    # No ACK on the bus (errno 121 Remote I/O error): unplugged or wrong address.
                    raise SensorNotConnected(f"SHT31 at 0x{self.address:02x}: {exc}") from exc
                except SensorReadError as exc:
                    last_error = exc
                    continue
                reason = reject_reason(temperature_c, humidity_pct)
                if reason is not None:
                    last_error = SensorReadError(f"implausible SHT31 frame ({reason})")
                    continue
                self._last = Reading(temperature_c, humidity_pct, frames=1)
                return self._last
            assert last_error is not None
            raise last_error

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus.close()
