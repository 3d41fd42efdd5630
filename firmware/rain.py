"""Rain at the trays: the rain plate (wet/dry) and the tipping-bucket gauge (mm).

Rain plate wiring (see docs/hardware.md): the common "raindrop sensor" is a
plate plus an LM393 comparator board. Board VCC to 3.3 V, GND to GND, DO to
a GPIO. DO goes LOW when the plate is wet (the board's LED lights), so the
input uses the Pi's pull-up and is active-low. Set the trip point with the
board's trimmer on a few drops of water.

Tipping-bucket gauge wiring: the reed switch between a GPIO and GND, the
Pi's internal pull-up; each tip closes the switch for ~100 ms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice

from secadero.firmware.inputs import SteadyInput

# Most hobby gauges (e.g. the Misol/Sparkfun WH-SP-RG) tip every 0.2794 mm.
DEFAULT_MM_PER_TIP = 0.2794


class RainPlate:
    """The rain plate's wet/dry, debounced, with hysteresis in time.

    Declared wet after the plate read wet for ``wet_after_s`` (short: the
    alarm must sound within 1 s of the first drops) and dry after it read
    dry for ``dry_after_s`` (long: drizzle dries and re-wets the plate, and a
    flapping alarm teaches people to ignore it). ``when_wet`` / ``when_dry``
    run in a timer thread.
    """

    def __init__(self, pin: int | str, *, active_low: bool = True, wet_after_s: float = 0.05,
                 dry_after_s: float = 30.0, pin_factory: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.when_wet: Callable[[], None] | None = None
        self.when_dry: Callable[[], None] | None = None
        self._input = SteadyInput(pin, pull_up=active_low, on_after_s=wet_after_s,
                                  off_after_s=dry_after_s, pin_factory=pin_factory, clock=clock)
        self._input.when_changed = self._changed

    @property
    def is_wet(self) -> bool:
        return self._input.value

    @property
    def value(self) -> int:
        return int(self._input.value)

    def _changed(self, wet: bool) -> None:
        callback = self.when_wet if wet else self.when_dry
        if callback is not None:
            callback()

    def close(self) -> None:
        self._input.close()

    def __enter__(self) -> RainPlate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TippingBucket:
    """A tipping-bucket rain gauge: counts tips, reports millimetres.

    Tips closer than ``min_tip_interval_s`` are contact bounce, not rain (a
    real bucket cannot tip faster than a few times per second).
    ``take_mm()`` returns the rain since its previous call.
    """

    def __init__(self, pin: int | str, *, mm_per_tip: float = DEFAULT_MM_PER_TIP,
                 min_tip_interval_s: float = 0.2, pin_factory: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mm_per_tip <= 0:
            raise ValueError("mm_per_tip must be positive")
        self.mm_per_tip = mm_per_tip
        self.min_tip_interval_s = min_tip_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_tip_s: float | None = None
        self.tips = 0
        self._tips_taken = 0
        self.bounces = 0
        self._device = DigitalInputDevice(pin, pull_up=True, pin_factory=pin_factory)
        self._device.when_activated = self._tip

    def _tip(self) -> None:
        now_s = self._clock()
        with self._lock:
            if (self._last_tip_s is not None
                    and now_s - self._last_tip_s < self.min_tip_interval_s):
                self.bounces += 1
                return
            self._last_tip_s = now_s
            self.tips += 1

    @property
    def total_mm(self) -> float:
        return round(self.tips * self.mm_per_tip, 4)

    def take_mm(self) -> float:
        """Rain since the previous call, in mm."""
        with self._lock:
            new_tips = self.tips - self._tips_taken
            self._tips_taken = self.tips
        return round(new_tips * self.mm_per_tip, 4)

    def close(self) -> None:
        self._device.close()

    def __enter__(self) -> TippingBucket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
