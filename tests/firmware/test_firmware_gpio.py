"""Rain plate, tipping bucket, tray switches and outputs on gpiozero's mock pins."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from secadero.firmware.outputs import Beacon, Buzzer, SilenceButton
from secadero.firmware.rain import RainPlate, TippingBucket
from secadero.firmware.trays import TrayLimitSwitch, tray_state


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


def test_plate_is_wet_only_after_holding_and_dry_only_after_the_dry_time(
        factory: MockFactory) -> None:
    plate = RainPlate(17, wet_after_s=0.05, dry_after_s=0.3, pin_factory=factory)
    wet, dry = threading.Event(), threading.Event()
    plate.when_wet = wet.set
    plate.when_dry = dry.set
    pin = factory.pin(17)
    assert pin.state is True and plate.is_wet is False  # pull-up, comparator high = dry
    # A 10 ms splash is bounce, not rain.
    pin.drive_low()
    pin.drive_high()
    assert not wet.wait(0.15)
    started = time.monotonic()
    pin.drive_low()
    assert wet.wait(1.0)
    assert 0.04 <= time.monotonic() - started < 0.5
    assert plate.is_wet and plate.value == 1
    # Drying for less than dry_after_s, then wet again: still wet, no dry event.
    pin.drive_high()
    time.sleep(0.1)
    pin.drive_low()
    assert not dry.wait(0.4)
    pin.drive_high()
    assert dry.wait(1.0)
    assert not plate.is_wet
    plate.close()
    plate.close()


def test_plate_active_high_boards(factory: MockFactory) -> None:
    plate = RainPlate(17, active_low=False, wet_after_s=0.0, pin_factory=factory)
    wet = threading.Event()
    plate.when_wet = wet.set
    factory.pin(17).drive_high()
    assert wet.wait(1.0) and plate.is_wet
    plate.close()


def test_tipping_bucket_counts_mm_and_ignores_bounce(factory: MockFactory) -> None:
    now = [100.0]
    gauge = TippingBucket(27, mm_per_tip=0.5, min_tip_interval_s=0.2, pin_factory=factory,
                          clock=lambda: now[0])
    pin = factory.pin(27)
    for step_s in (0.0, 0.05, 0.3, 1.0):  # the 0.05 s one is contact bounce
        now[0] += step_s
        pin.drive_low()
        pin.drive_high()
    assert gauge.tips == 3 and gauge.bounces == 1
    assert gauge.take_mm() == 1.5
    assert gauge.take_mm() == 0.0
    assert gauge.total_mm == 1.5
    with pytest.raises(ValueError):
        TippingBucket(5, mm_per_tip=0, pin_factory=factory)
    gauge.close()


@pytest.mark.parametrize(("retracted", "extended", "state"), [
    (True, False, "retracted"), (False, True, "extended"), (False, False, "moving"),
    (True, True, "unknown"), (True, None, "retracted"), (False, None, "extended")])
def test_tray_state_table(retracted: bool, extended: bool | None, state: str) -> None:
    assert tray_state(retracted, extended) == state


def test_tray_switch_reports_each_debounced_state(factory: MockFactory) -> None:
    tray = TrayLimitSwitch(5, 6, debounce_s=0.02, pin_factory=factory)
    assert tray.state == "moving"  # neither switch pressed (pull-ups high)
    seen: list[str] = []
    changed = threading.Condition()

    def record(state: str) -> None:
        with changed:
            seen.append(state)
            changed.notify_all()

    tray.when_changed = record
    sheltered, open_end = factory.pin(5), factory.pin(6)
    open_end.drive_low()
    with changed:
        assert changed.wait_for(lambda: seen == ["extended"], 1.0)
    open_end.drive_high()
    with changed:
        assert changed.wait_for(lambda: seen == ["extended", "moving"], 1.0)
    sheltered.drive_low()
    with changed:
        assert changed.wait_for(lambda: seen[-1] == "retracted", 1.0)
    open_end.drive_low()  # both pressed: a wiring fault
    with changed:
        assert changed.wait_for(lambda: seen[-1] == "unknown", 1.0)
    assert tray.state == "unknown"
    tray.close()


def test_outputs_and_silence_button(factory: MockFactory) -> None:
    beacon = Beacon(23, pin_factory=factory)
    buzzer = Buzzer(24, active_high=False, pin_factory=factory)
    assert not beacon.is_active and factory.pin(23).state is False
    assert factory.pin(24).state is True  # active-low buzzer idles high
    beacon.on()
    buzzer.on()
    assert factory.pin(23).state is True and factory.pin(24).state is False
    assert beacon.value == 1 and buzzer.is_active
    pressed = threading.Event()
    button = SilenceButton(25, pin_factory=factory)
    button.when_pressed = pressed.set
    factory.pin(25).drive_low()
    assert pressed.wait(1.0) and button.is_pressed
    for device in (beacon, buzzer, button):
        device.close()
        device.close()
