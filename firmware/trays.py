"""Where a drying tray is: out in the sun, in under the roof, or on its way.

Wiring (see docs/hardware.md): a roller lever microswitch at the sheltered
end (``retracted_pin``) and optionally one at the open end
(``extended_pin``), each between its GPIO and GND (COM and NO), the Pi's
internal pull-up; pressed = LOW. Use shielded or twisted cable beyond a few
metres and keep the debounce: long runs pick up noise from the trays' motors.

States: ``retracted`` (sheltered switch pressed), ``extended`` (open-end
switch pressed, or with a single switch: not retracted), ``moving`` (two
switches, neither pressed), ``unknown`` (both pressed: a wiring fault).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from secadero.firmware.inputs import SteadyInput


def tray_state(retracted: bool, extended: bool | None) -> str:
    """The tray's state from its switches (``extended`` is ``None`` with a single switch)."""
    if extended is None:
        return "retracted" if retracted else "extended"
    if retracted and extended:
        return "unknown"
    if retracted:
        return "retracted"
    if extended:
        return "extended"
    return "moving"


class TrayLimitSwitch:
    """A tray's limit switches as one state, debounced.

    ``when_changed(state)`` runs in a timer thread on every state change.
    """

    def __init__(self, retracted_pin: int | str, extended_pin: int | str | None = None, *,
                 debounce_s: float = 0.1, pin_factory: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.when_changed: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._retracted = SteadyInput(retracted_pin, pull_up=True, on_after_s=debounce_s,
                                      off_after_s=debounce_s, pin_factory=pin_factory,
                                      clock=clock)
        self._extended: SteadyInput | None = None
        try:
            if extended_pin is not None:
                self._extended = SteadyInput(extended_pin, pull_up=True, on_after_s=debounce_s,
                                             off_after_s=debounce_s, pin_factory=pin_factory,
                                             clock=clock)
        except Exception:
            self._retracted.close()
            raise
        self._state = self._compute()
        self._retracted.when_changed = self._changed
        if self._extended is not None:
            self._extended.when_changed = self._changed

    def _compute(self) -> str:
        return tray_state(self._retracted.value,
                          None if self._extended is None else self._extended.value)

    @property
    def state(self) -> str:
        return self._state

    @property
    def value(self) -> str:
        return self._state

    def _changed(self, _level: bool) -> None:
        with self._lock:
            new = self._compute()
            if new == self._state:
                return
            self._state = new
        if self.when_changed is not None:
            self.when_changed(new)

    def close(self) -> None:
        self._retracted.close()
        if self._extended is not None:
            self._extended.close()

    def __enter__(self) -> TrayLimitSwitch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
