"""The yard's local alarm hardware: a beacon, a buzzer and a silence button.

Wiring (see docs/hardware.md): the beacon (a 12 V rotating light) through a
relay module or a logic-level MOSFET on ``beacon_pin``; the buzzer (an active
5 V piezo siren) through an NPN transistor on ``buzzer_pin``; never drive
either straight from a GPIO. The silence button between ``silence_pin`` and
GND, internal pull-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpiozero import Button, DigitalOutputDevice


class _Output:
    def __init__(self, pin: int | str, *, active_high: bool, pin_factory: Any) -> None:
        self._device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False,
                                           pin_factory=pin_factory)

    @property
    def is_active(self) -> bool:
        return bool(self._device.value)

    @property
    def value(self) -> int:
        return int(self._device.value)

    def on(self) -> None:
        self._device.on()

    def off(self) -> None:
        self._device.off()

    def close(self) -> None:
        self._device.close()

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Beacon(_Output):
    """The rotating light on a relay. ``active_high=False`` for the common low-trigger relays."""

    def __init__(self, pin: int | str, *, active_high: bool = True,
                 pin_factory: Any = None) -> None:
        super().__init__(pin, active_high=active_high, pin_factory=pin_factory)


class Buzzer(_Output):
    """The active buzzer or siren on a transistor."""

    def __init__(self, pin: int | str, *, active_high: bool = True,
                 pin_factory: Any = None) -> None:
        super().__init__(pin, active_high=active_high, pin_factory=pin_factory)


class SilenceButton:
    """The push button that quiets the buzzer; ``when_pressed`` runs in gpiozero's thread."""

    def __init__(self, pin: int | str, *, bounce_s: float = 0.05,
                 pin_factory: Any = None) -> None:
        self.when_pressed: Callable[[], None] | None = None
        self._button = Button(pin, pull_up=True, bounce_time=bounce_s, pin_factory=pin_factory)
        self._button.when_pressed = self._pressed

    @property
    def is_pressed(self) -> bool:
        return bool(self._button.is_pressed)

    def _pressed(self) -> None:
        if self.when_pressed is not None:
            self.when_pressed()

    def close(self) -> None:
        self._button.close()

    def __enter__(self) -> SilenceButton:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
