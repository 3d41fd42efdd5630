"""Temperature and humidity from a DHT22 (AM2302), the cheap sensor most yards already own.

Wiring (see docs/hardware.md): pin 1 VCC to 3.3 V (or to a GPIO output used
as a power switch, ``power_pin``), pin 2 DATA to a GPIO with a 10 kΩ pull-up
to 3.3 V, pin 4 GND. Boards sold as "DHT22 module" carry the pull-up.

Datasheet and library facts this driver is built around:

- The DHT22 needs at least 2 s between reads. adafruit_dht's ``measure()``
  silently returns the previous values when asked sooner, also after a
  failed read (it sets its timestamp before reading), so the driver spaces
  its own reads by ``min_interval_s`` (2.1 s) and never calls the library sooner.
- adafruit_dht raises a bare ``RuntimeError`` for everything: "DHT sensor not
  found, check wiring" becomes ``SensorNotConnected``, the "Try again."
  family becomes ``SensorReadError``.
- An all-zero frame passes the checksum, and humidity can stick at 99.9 %
  with condensation: ``firmware.filters.reject_reason`` and ``is_stuck``.
- A DHT22 that stopped answering often recovers after a power cycle, so
  after ``power_cycle_after`` failed reads in a row the driver switches its
  supply off and on through ``power_pin`` (field practice).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from gpiozero import DigitalOutputDevice

from secadero.errors import SensorError, SensorNotConnected, SensorReadError
from secadero.firmware.filters import is_stuck, median, reject_reason

log = logging.getLogger(__name__)

# The library's message for "no pulses at all": a wiring or power fault.
_NOT_FOUND = "DHT sensor not found"


class DHTBackend(Protocol):
    """One raw DHT frame: ``(temperature_c, humidity_pct)``.

    Raises ``RuntimeError`` with adafruit_dht's messages on a failed read, so
    the real library and the fakes fail alike.
    """

    def read(self) -> tuple[float | None, float | None]: ...

    def close(self) -> None: ...


class AdafruitDHTBackend:
    """The real DHT22 through adafruit-circuitpython-dht (installed on ARM only).

    Imported lazily: the library needs Blinka and libgpiod, which exist on a
    Raspberry Pi and not on a laptop running the simulated yard.
    """

    def __init__(self, gpio: int, *, use_pulseio: bool = True) -> None:
        import adafruit_dht  # ARM only, see pyproject's edge extra
        import board

        self._device: Any = adafruit_dht.DHT22(getattr(board, f"D{gpio}"),
                                               use_pulseio=use_pulseio)

    def read(self) -> tuple[float | None, float | None]:
        self._device.measure()
        # After measure() both properties return the values of that one frame.
        return self._device.temperature, self._device.humidity

    def close(self) -> None:
        self._device.exit()


class ScriptedDHT:
    """A fake DHT backend that plays a script of frames and failures, for tests.

    Each script item is a ``(temperature_c, humidity_pct)`` frame or an
    exception instance to raise (use ``dht_error(kind)`` for the library's
    exact messages). When the script runs out, the last item repeats.
    """

    def __init__(self, script: Iterable[tuple[float | None, float | None] | BaseException]
                 ) -> None:
        self._script = list(script)
        if not self._script:
            raise ValueError("a script needs at least one item")
        self._index = 0
        self.reads = 0
        self.closed = False

    def read(self) -> tuple[float | None, float | None]:
        item = self._script[min(self._index, len(self._script) - 1)]
        self._index += 1
        self.reads += 1
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


DHT_ERRORS = {
    "not_found": "DHT sensor not found, check wiring",
    "short_buffer": "A full buffer was not returned. Try again.",
    "checksum": "Checksum did not validate. Try again.",
    "unplausible": "Received unplausible data. Try again.",
    "timeout": "Timed out waiting for PulseIn message. Make sure libgpiod is installed.",
}


def dht_error(kind: str) -> RuntimeError:
    """The ``RuntimeError`` adafruit_dht raises for a failure ``kind`` (see ``DHT_ERRORS``)."""
    return RuntimeError(DHT_ERRORS[kind])


def translate_error(exc: BaseException) -> SensorError:
    """adafruit_dht's bare RuntimeError as one of our typed sensor errors."""
    text = str(exc)
    if _NOT_FOUND in text:
        return SensorNotConnected(text)
    return SensorReadError(text or type(exc).__name__)


@dataclass(frozen=True, slots=True)
class Reading:
    """A good climate reading: the median of the good frames of one sample."""

    temperature_c: float
    humidity_pct: float
    frames: int


class DHT22Sensor:
    """A DHT22 read with spacing, retries, plausibility checks and a median.

    ``read()`` makes up to ``tries`` attempts, spaced at least
    ``min_interval_s`` apart, until ``good_reads`` frames passed the checks,
    and returns their median; it raises ``SensorNotConnected`` or
    ``SensorReadError`` when no frame was good. ``temperature_c`` and
    ``humidity_pct`` give the last good reading (``None`` before the first).
    ``clock`` and ``sleep`` are injected so tests do not wait.
    """

    def __init__(self, backend: DHTBackend, *, min_interval_s: float = 2.1, tries: int = 4,
                 good_reads: int = 1, power_pin: int | None = None,
                 power_cycle_after: int = 5, power_off_s: float = 2.0,
                 pin_factory: Any = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if tries < good_reads or good_reads < 1:
            raise ValueError("need 1 <= good_reads <= tries")
        self._backend = backend
        self.min_interval_s = min_interval_s
        self.tries = tries
        self.good_reads = good_reads
        self.power_cycle_after = power_cycle_after
        self.power_off_s = power_off_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_attempt_s: float | None = None
        self._last_good: tuple[float, float, float] | None = None
        self._humidity_history: deque[float] = deque(maxlen=64)
        self.failures_in_row = 0
        self.power_cycles = 0
        self.rejected: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._power: DigitalOutputDevice | None = None
        self._closed = False
        if power_pin is not None:
            self._power = DigitalOutputDevice(power_pin, initial_value=True,
                                              pin_factory=pin_factory)

    @property
    def temperature_c(self) -> float | None:
        return None if self._last_good is None else self._last_good[1]

    @property
    def humidity_pct(self) -> float | None:
        return None if self._last_good is None else self._last_good[2]

    def _wait_turn(self) -> None:
        if self._last_attempt_s is not None:
            wait_s = self._last_attempt_s + self.min_interval_s - self._clock()
            if wait_s > 0:
                self._sleep(wait_s)
        self._last_attempt_s = self._clock()

    def _attempt(self) -> tuple[float, float]:
        self._wait_turn()
        try:
            temperature_c, humidity_pct = self._backend.read()
        except RuntimeError as exc:
            error = translate_error(exc)
            key = type(error).__name__
            self.errors[key] = self.errors.get(key, 0) + 1
            raise error from exc
        except OSError as exc:
            # Blinka raises OSError when the GPIO line is busy or gone.
            self.errors["OSError"] = self.errors.get("OSError", 0) + 1
            raise SensorNotConnected(f"GPIO error: {exc}") from exc
        now_s = self._clock()
        reason = reject_reason(temperature_c, humidity_pct, previous=self._last_good,
                               now_s=now_s)
        if reason is not None:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            raise SensorReadError(f"implausible frame ({reason}): "
                                  f"{temperature_c!r} °C, {humidity_pct!r} %RH")
        assert temperature_c is not None and humidity_pct is not None
        self._humidity_history.append(humidity_pct)
        if is_stuck(list(self._humidity_history)):
            self.rejected["stuck"] = self.rejected.get("stuck", 0) + 1
            raise SensorReadError("humidity stuck at 99.9 %: condensation on the element")
        return temperature_c, humidity_pct

    def read(self) -> Reading:
        with self._lock:
            if self._closed:
                raise SensorNotConnected("sensor is closed")
            good: list[tuple[float, float]] = []
            last_error: SensorError | None = None
            for _ in range(self.tries):
                try:
                    good.append(self._attempt())
                except SensorError as exc:
                    last_error = exc
                    continue
                if len(good) >= self.good_reads:
                    break
            if not good:
                self.failures_in_row += 1
                if self._power is not None and self.failures_in_row % self.power_cycle_after == 0:
                    self._power_cycle()
                assert last_error is not None
                raise last_error
            self.failures_in_row = 0
            reading = Reading(
                temperature_c=round(median([t for t, _ in good]), 2),
                humidity_pct=round(median([h for _, h in good]), 2),
                frames=len(good),
            )
            self._last_good = (self._clock(), reading.temperature_c, reading.humidity_pct)
            return reading

    def _power_cycle(self) -> None:
        assert self._power is not None
        log.warning("DHT22 failed %d reads in a row: power cycling it", self.failures_in_row)
        self._power.off()
        self._sleep(self.power_off_s)
        self._power.on()
        self.power_cycles += 1
        # The sensor needs its 2 s after power-up before the first read.
        self._last_attempt_s = self._clock()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._backend.close()
        finally:
            if self._power is not None:
                self._power.close()

    def __enter__(self) -> DHT22Sensor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

