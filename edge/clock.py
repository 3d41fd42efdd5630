"""Clock sanity: never stamp a reading with a time the node cannot trust.

A Raspberry Pi has no real-time clock. It boots at the time fake-hwclock
saved at the last shutdown (or at 1970 without it) and jumps when NTP
synchronises. A reading stamped before that would be stored at a wrong
time, and InfluxDB overwrites a point with the same series and time, so a
rolled-back clock can destroy real data (reference N6).

``ClockGuard.stamp()`` says whether the wall clock may be used now. When it
may not, the agent stores the reading *held*, with its monotonic time, and
stamps it ``ts = monotonic + (wall - monotonic)`` once the clock is trusted
(``Outbox.stamp_held``). The wall clock is trusted when all hold:

- the kernel says the clock is synchronised (``clock = "ntp"``; adjtimex(2)
  does not return TIME_ERROR), or the operator vouches for it
  (``clock = "trusted"``: a node with an RTC, the simulated yard);
- it is after ``FLOOR_S`` (this software did not exist before) and before
  ``FLOOR_S`` + 50 years;
- it is not behind the last time this node already issued (minus a small
  tolerance): a clock stepped backwards would overwrite earlier readings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from dataclasses import dataclass

# 2026-01-01T00:00:00Z: no reading of this software can be older.
FLOOR_S = 1_767_225_600.0
CEILING_S = FLOOR_S + 50 * 365.25 * 86400
# adjtimex(2) returns TIME_ERROR (5) while the kernel's clock is unsynchronised.
_TIME_ERROR = 5


def kernel_clock_synced() -> bool:
    """True when the kernel reports an NTP-synchronised clock (Linux adjtimex)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buffer = ctypes.create_string_buffer(512)  # larger than struct timex; modes = 0: read
        return int(libc.adjtimex(buffer)) not in (-1, _TIME_ERROR)
    except (OSError, AttributeError):
        return False


def always_synced() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Stamp:
    """The time of one reading: ``ts`` is ``None`` when it must be held."""

    ts: float | None
    mono_s: float
    state: str


class ClockGuard:
    """Decides, per reading, whether the wall clock can stamp it; see the module docstring.

    ``became_trusted`` is set by ``stamp()`` on the transition to trusted
    (the caller then stamps held readings with ``offset_s``). ``jumps``
    counts steps of the wall clock against the monotonic clock larger than
    ``jump_tolerance_s`` while trusted; ``last_jump_s`` is the latest size.
    """

    def __init__(self, *, synced: Callable[[], bool] = kernel_clock_synced,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 last_issued_s: float = 0.0, floor_s: float = FLOOR_S,
                 jump_tolerance_s: float = 2.0, behind_tolerance_s: float = 1.0) -> None:
        self._synced = synced
        self._wall = wall
        self._monotonic = monotonic
        self.last_issued_s = last_issued_s
        self.floor_s = floor_s
        self.jump_tolerance_s = jump_tolerance_s
        self.behind_tolerance_s = behind_tolerance_s
        self.offset_s: float | None = None
        self.trusted = False
        self.became_trusted = False
        self.state = "unknown"
        self.jumps = 0
        self.last_jump_s = 0.0

    def check(self) -> tuple[bool, float, float]:
        """``(trusted, wall, mono)`` now, updating ``state``; does not issue a time."""
        mono = self._monotonic()
        wall = self._wall()
        if not self._synced():
            state = "unsynced"
        elif not self.floor_s <= wall <= CEILING_S:
            state = "implausible"
        elif wall < self.last_issued_s - self.behind_tolerance_s:
            state = "behind_issued"
        else:
            state = "synced"
        self.state = state
        return state == "synced", wall, mono

    def stamp(self) -> Stamp:
        trusted, wall, mono = self.check()
        self.became_trusted = trusted and not self.trusted
        self.trusted = trusted
        if not trusted:
            return Stamp(ts=None, mono_s=mono, state=self.state)
        offset = wall - mono
        if self.offset_s is not None and abs(offset - self.offset_s) > self.jump_tolerance_s:
            self.jumps += 1
            self.last_jump_s = offset - self.offset_s
        self.offset_s = offset
        ts = round(wall, 3)
        self.last_issued_s = max(self.last_issued_s, ts)
        return Stamp(ts=ts, mono_s=mono, state=self.state)
