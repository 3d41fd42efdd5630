"""The SHT31 driver against a fake I2C bus: CRC, decoding, unplugged, implausible frames."""

from __future__ import annotations

import pytest

from secadero.errors import SensorNotConnected, SensorReadError
from secadero.firmware.sht31 import MEASURE_COMMAND, SHT31Sensor, crc8, decode_frame


def frame(raw_t: int, raw_h: int, *, break_crc: bool = False) -> bytes:
    t = raw_t.to_bytes(2, "big")
    h = raw_h.to_bytes(2, "big")
    return t + bytes([crc8(t) ^ (1 if break_crc else 0)]) + h + bytes([crc8(h)])


class FakeBus:
    def __init__(self, answers: list[bytes | OSError]) -> None:
        self.answers = answers
        self.writes: list[tuple[int, bytes]] = []
        self.closed = False

    def write(self, address: int, data: bytes) -> None:
        self.writes.append((address, data))

    def read(self, address: int, length: int) -> bytes:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, OSError):
            raise answer
        return answer[:length]

    def close(self) -> None:
        self.closed = True


def test_crc8_datasheet_example() -> None:
    # Sensirion's datasheet: CRC of 0xBEEF is 0x92.
    assert crc8(bytes([0xBE, 0xEF])) == 0x92


def test_decode_frame_by_the_datasheet_formulas() -> None:
    # T = -45 + 175 * raw / 65535; RH = 100 * raw / 65535
    assert decode_frame(frame(0x6666, 0x8000)) == (25.0, 50.0)
    with pytest.raises(SensorReadError, match="CRC"):
        decode_frame(frame(0x6666, 0x8000, break_crc=True))
    with pytest.raises(SensorReadError, match="5 bytes"):
        decode_frame(frame(0x6666, 0x8000)[:5])


def test_read_sends_single_shot_command_and_retries_bad_crc() -> None:
    bus = FakeBus([frame(1, 1, break_crc=True), frame(0x6666, 0x8000)])
    sensor = SHT31Sensor(bus, address=0x45, sleep=lambda s: None)
    reading = sensor.read()
    assert (reading.temperature_c, reading.humidity_pct) == (25.0, 50.0)
    assert bus.writes == [(0x45, bytes(MEASURE_COMMAND))] * 2
    assert sensor.temperature_c == 25.0
    sensor.close()
    assert bus.closed


def test_unplugged_sensor_and_implausible_values() -> None:
    unplugged = SHT31Sensor(FakeBus([OSError(121, "Remote I/O error")]), sleep=lambda s: None)
    with pytest.raises(SensorNotConnected, match="0x44"):
        unplugged.read()
    # 0xFFFF raw temperature is 130 °C: not tray air.
    hot = SHT31Sensor(FakeBus([frame(0xFFFF, 0x8000)]), sleep=lambda s: None)
    with pytest.raises(SensorReadError, match="temperature_range"):
        hot.read()
