"""The yard's own alarm: works with no broker, no server and no internet.

Rules (decided in ``alarm_outputs``, a pure function):

- the beacon is on while the plate is wet *or* the yard's retained alert
  from the server is raised (a forecast warning reaches the yard before the
  first drop);
- the buzzer sounds while the plate is wet, unless someone pressed the
  silence button during this wet episode; the next episode sounds again.

``LocalAlarm`` applies the rules to the beacon and buzzer drivers. It is
called straight from the rain plate's callback, never through the outbox or
the network, so the outputs switch within the plate's ``wet_after_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Switchable(Protocol):
    def on(self) -> None: ...

    def off(self) -> None: ...

    @property
    def is_active(self) -> bool: ...


def alarm_outputs(*, wet: bool, alert_raised: bool, silenced: bool) -> tuple[bool, bool]:
    """``(beacon_on, buzzer_on)`` for the current inputs."""
    return wet or alert_raised, wet and not silenced


class LocalAlarm:
    """Drives the beacon and buzzer from the plate, the server's alert and the silence button."""

    def __init__(self, beacon: Switchable | None, buzzer: Switchable | None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._beacon = beacon
        self._buzzer = buzzer
        self._clock = clock
        self._lock = threading.Lock()
        self.wet = False
        self.alert_raised = False
        self.silenced = False
        self.episodes = 0
        self.last_change_s: float | None = None
        self._apply_locked()

    def plate(self, wet: bool) -> None:
        with self._lock:
            if wet and not self.wet:
                self.episodes += 1
                self.silenced = False
            if not wet:
                self.silenced = False
            self.wet = wet
            self._apply_locked()

    def alert(self, raised: bool) -> None:
        with self._lock:
            self.alert_raised = raised
            self._apply_locked()

    def silence(self) -> None:
        """Quiet the buzzer until the plate dries; the beacon stays on."""
        with self._lock:
            if self.wet:
                self.silenced = True
            self._apply_locked()

    @property
    def beacon_on(self) -> bool:
        return self._beacon is not None and self._beacon.is_active

    @property
    def buzzer_on(self) -> bool:
        return self._buzzer is not None and self._buzzer.is_active

    def _apply_locked(self) -> None:
        beacon_on, buzzer_on = alarm_outputs(wet=self.wet, alert_raised=self.alert_raised,
                                             silenced=self.silenced)
        for device, want in ((self._beacon, beacon_on), (self._buzzer, buzzer_on)):
            if device is None or device.is_active == want:
                continue
            if want:
                device.on()
            else:
                device.off()
            self.last_change_s = self._clock()
