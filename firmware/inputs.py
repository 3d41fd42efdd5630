"""A digital input accepted only after it held steady: the base of the plate and switches.

gpiozero's own ``bounce_time`` drops edges that come too soon after the
previous one, which can leave a device in the wrong state when the last edge
of a burst is the one dropped. Here every edge restarts a confirmation timer
and the state is taken from the pin when the timer fires, so the accepted
state always ends equal to the pin.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice

from secadero.firmware.filters import Debounced, debounce


class SteadyInput:
    """A GPIO input whose ``value`` changes only after the pin held for a while.

    ``on_after_s`` and ``off_after_s`` may differ (hysteresis in time).
    ``when_changed(state)`` runs in a timer thread when the accepted state
    changes. ``pull_up=True`` is for contacts to GND (reed switches, limit
    switches, comparator outputs): the active state is then LOW.
    """

    def __init__(self, pin: int | str, *, pull_up: bool | None = True,
                 active_state: bool | None = None, on_after_s: float = 0.05,
                 off_after_s: float = 0.05, pin_factory: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.on_after_s = on_after_s
        self.off_after_s = off_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False
        self.when_changed: Callable[[bool], None] | None = None
        self.edges = 0
        self._device = DigitalInputDevice(pin, pull_up=pull_up, active_state=active_state,
                                          pin_factory=pin_factory)
        raw = bool(self._device.value)
        # At start the pin's level is taken as settled: there is no history to doubt it.
        self._state = Debounced(state=raw, raw=raw, raw_since_s=clock())
        self._device.when_activated = self._edge
        self._device.when_deactivated = self._edge

    @property
    def value(self) -> bool:
        """The accepted (debounced) state."""
        return bool(self._state.state)

    @property
    def raw_value(self) -> bool:
        return bool(self._device.value)

    def _edge(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.edges += 1
            changed = self._evaluate_locked()
            state = bool(self._state.state)
        if changed and self.when_changed is not None:
            self.when_changed(state)

    def _confirm(self) -> None:
        with self._lock:
            if self._closed:
                return
            changed = self._evaluate_locked()
            state = bool(self._state.state)
        if changed and self.when_changed is not None:
            self.when_changed(state)

    def _evaluate_locked(self) -> bool:
        """Fold the pin's level into the state; re-arm the timer; True if the state changed."""
        before = self._state.state
        raw = bool(self._device.value)
        self._state = debounce(self._state, raw, self._clock(), on_after_s=self.on_after_s,
                               off_after_s=self.off_after_s)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._state.state != raw:
            wait_s = self.on_after_s if raw else self.off_after_s
            remaining_s = max(0.0, self._state.raw_since_s + wait_s - self._clock())
            # A little extra so the timer never fires a hair before the hold time is over.
            self._timer = threading.Timer(remaining_s + 0.002, self._confirm)
            self._timer.daemon = True
            self._timer.start()
        return self._state.state != before

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        self._device.close()

    def __enter__(self) -> SteadyInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
