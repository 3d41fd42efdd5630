"""Clock sanity (N6), the local alarm rules and the reconnect backoff: pure logic."""

from __future__ import annotations

import itertools
import random

import pytest

from secadero.edge.alarm import LocalAlarm, alarm_outputs
from secadero.edge.clock import FLOOR_S, ClockGuard
from secadero.edge.link import backoff_delays

REAL_S = 1_790_000_000.0


class Clocks:
    def __init__(self, wall: float, mono: float = 50.0, synced: bool = False) -> None:
        self.wall = wall
        self.mono = mono
        self.synced = synced

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def guard(self, **kwargs: float) -> ClockGuard:
        return ClockGuard(synced=lambda: self.synced, wall=lambda: self.wall,
                          monotonic=lambda: self.mono, **kwargs)


@pytest.mark.parametrize("boot_wall", [0.0, REAL_S - 3600, REAL_S + 10 * 365 * 86400])
def test_readings_before_sync_are_held_then_rebased_exactly(boot_wall: float) -> None:
    """Boot at 1970, at fake-hwclock's last save -1 h, at +10 years; NTP syncs later."""
    clocks = Clocks(wall=boot_wall)
    guard = clocks.guard()
    held = guard.stamp()
    assert held.ts is None and guard.state == "unsynced"
    clocks.advance(30)
    # NTP steps the clock to the real time and says so.
    clocks.wall = REAL_S
    clocks.synced = True
    stamp = guard.stamp()
    assert guard.became_trusted and stamp.ts == REAL_S
    # The held reading, rebased with the monotonic offset, is 30 s earlier.
    assert held.mono_s + guard.offset_s == pytest.approx(REAL_S - 30)
    clocks.advance(1)
    assert guard.stamp().ts == REAL_S + 1 and not guard.became_trusted


def test_synced_flag_with_an_implausible_time_is_not_trusted() -> None:
    clocks = Clocks(wall=86400.0, synced=True)
    guard = clocks.guard()
    assert guard.stamp().ts is None and guard.state == "implausible"
    clocks.wall = FLOOR_S + 10
    assert guard.stamp().ts == FLOOR_S + 10


def test_a_clock_behind_what_was_already_issued_is_not_trusted() -> None:
    """A rolled-back clock would overwrite earlier readings in InfluxDB."""
    clocks = Clocks(wall=REAL_S - 3600, synced=True)
    guard = clocks.guard(last_issued_s=REAL_S)
    assert guard.stamp().ts is None and guard.state == "behind_issued"
    clocks.wall = REAL_S + 5
    assert guard.stamp().ts == REAL_S + 5


def test_jumps_while_trusted_are_counted() -> None:
    clocks = Clocks(wall=REAL_S, synced=True)
    guard = clocks.guard()
    guard.stamp()
    clocks.advance(10)
    guard.stamp()
    assert guard.jumps == 0
    clocks.wall += 120  # NTP stepped the clock forward
    clocks.advance(10)
    stamp = guard.stamp()
    assert guard.jumps == 1 and guard.last_jump_s == pytest.approx(120)
    assert stamp.ts == pytest.approx(REAL_S + 140)


def test_issued_times_never_go_backwards_past_the_tolerance() -> None:
    clocks = Clocks(wall=REAL_S, synced=True)
    guard = clocks.guard()
    issued = [guard.stamp().ts]
    clocks.wall -= 30  # stepped back 30 s
    assert guard.stamp().ts is None
    clocks.advance(31)
    issued.append(guard.stamp().ts)
    assert issued[1] is not None and issued[1] >= issued[0]


@pytest.mark.parametrize(("wet", "alert", "silenced", "beacon", "buzzer"), [
    (False, False, False, False, False),
    (True, False, False, True, True),
    (True, False, True, True, False),
    (False, True, False, True, False),
    (True, True, True, True, False),
])
def test_alarm_rules(wet: bool, alert: bool, silenced: bool, beacon: bool,
                     buzzer: bool) -> None:
    assert alarm_outputs(wet=wet, alert_raised=alert, silenced=silenced) == (beacon, buzzer)


class Lamp:
    def __init__(self) -> None:
        self.is_active = False
        self.switches = 0

    def on(self) -> None:
        self.is_active = True
        self.switches += 1

    def off(self) -> None:
        self.is_active = False
        self.switches += 1


def test_silence_lasts_for_this_episode_only() -> None:
    beacon, buzzer = Lamp(), Lamp()
    alarm = LocalAlarm(beacon, buzzer)
    alarm.silence()  # nothing to silence while dry
    alarm.plate(True)
    assert beacon.is_active and buzzer.is_active
    alarm.silence()
    assert beacon.is_active and not buzzer.is_active
    alarm.plate(True)  # still the same episode
    assert not buzzer.is_active
    alarm.plate(False)
    assert not beacon.is_active and not buzzer.is_active
    alarm.plate(True)  # a new episode sounds again
    assert buzzer.is_active and alarm.episodes == 2


def test_server_alert_drives_the_beacon_but_not_the_buzzer() -> None:
    beacon, buzzer = Lamp(), Lamp()
    alarm = LocalAlarm(beacon, buzzer)
    alarm.alert(True)
    assert beacon.is_active and not buzzer.is_active
    alarm.plate(True)
    alarm.plate(False)
    assert beacon.is_active  # the alert still holds it on
    alarm.alert(False)
    assert not beacon.is_active


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    delays = list(itertools.islice(backoff_delays(min_s=1, max_s=60, rng=random.Random(3)), 10))
    caps = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    # Two nodes with different random streams do not retry in lock-step.
    other = list(itertools.islice(backoff_delays(min_s=1, max_s=60, rng=random.Random(4)), 10))
    assert delays != other
