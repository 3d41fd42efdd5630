"""Pure filters over plain lists: median, plausibility, stuck humidity, debounce, hysteresis."""

from __future__ import annotations

import math

import pytest

from secadero.firmware.filters import (
    Debounced,
    debounce,
    dew_point_c,
    hysteresis,
    is_stuck,
    median,
    reject_reason,
)


def test_median_odd_even_and_empty() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError, match="empty"):
        median([])


@pytest.mark.parametrize(
    ("temperature_c", "humidity_pct", "reason"),
    [
        (0.0, 0.0, "all_zero"),            # passes the DHT checksum
        (6553.5, 50.0, "all_ones"),
        (25.0, 6553.5, "all_ones"),
        (math.nan, 50.0, "not_finite"),
        (25.0, math.inf, "not_finite"),
        (None, 50.0, "missing"),
        (25.0, 100.1, "humidity_range"),
        (25.0, -0.1, "humidity_range"),
        (60.1, 50.0, "temperature_range"),
        (-10.1, 50.0, "temperature_range"),
        (25.0, 55.0, None),
        (0.0, 55.0, None),                  # a cold night is not an all-zero frame
        (-10.0, 100.0, None),
    ],
)
def test_reject_reason_table(temperature_c: float | None, humidity_pct: float | None,
                             reason: str | None) -> None:
    assert reject_reason(temperature_c, humidity_pct) == reason


def test_jumps_no_air_makes_are_rejected_relative_to_elapsed_time() -> None:
    previous = (100.0, 25.0, 60.0)
    assert reject_reason(36.0, 60.0, previous=previous, now_s=102.0) == "temperature_jump"
    assert reject_reason(34.0, 60.0, previous=previous, now_s=102.0) is None
    assert reject_reason(25.0, 95.0, previous=previous, now_s=102.0) == "humidity_jump"
    # Twenty seconds later twice the step is allowed.
    assert reject_reason(44.0, 60.0, previous=previous, now_s=120.0) is None


def test_stuck_humidity_needs_a_full_run_of_99_9() -> None:
    assert not is_stuck([99.9] * 29)
    assert is_stuck([50.0] + [99.9] * 30)
    assert not is_stuck([99.9] * 29 + [99.8])


def test_debounce_wet_fast_dry_slow() -> None:
    state = Debounced(state=False, raw=False, raw_since_s=0.0)
    state = debounce(state, True, 10.0, on_after_s=0.05, off_after_s=30.0)
    assert state.state is False                      # not held yet
    state = debounce(state, True, 10.06, on_after_s=0.05, off_after_s=30.0)
    assert state.state is True
    state = debounce(state, False, 11.0, on_after_s=0.05, off_after_s=30.0)
    state = debounce(state, False, 40.0, on_after_s=0.05, off_after_s=30.0)
    assert state.state is True                       # dry for 29 s only
    state = debounce(state, True, 40.5, on_after_s=0.05, off_after_s=30.0)
    state = debounce(state, False, 41.0, on_after_s=0.05, off_after_s=30.0)
    state = debounce(state, False, 70.9, on_after_s=0.05, off_after_s=30.0)
    assert state.state is True                       # the re-wetting restarted the wait
    state = debounce(state, False, 71.0, on_after_s=0.05, off_after_s=30.0)
    assert state.state is False


def test_hysteresis_holds_between_thresholds() -> None:
    values = [10, 50, 61, 55, 45, 39, 45, 61]
    assert hysteresis(values, on_at=60, off_at=40) == [
        False, False, True, True, True, False, False, True]
    with pytest.raises(ValueError):
        hysteresis(values, on_at=40, off_at=60)


def test_dew_point_known_value() -> None:
    assert dew_point_c(25.0, 60.0) == pytest.approx(16.69, abs=0.05)
