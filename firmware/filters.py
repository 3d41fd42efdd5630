"""Pure filter functions for sensor values: no I/O, no clock of their own.

The drivers call these with plain lists and explicit times, so each rule is
tested with plain lists (tests/firmware/test_filters.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Plausible air at drying trays. The DHT22 is rated -40..80 °C, but a tray
# reading outside -10..60 °C is a fault, not weather (reference N8).
TRAY_TEMPERATURE_RANGE_C = (-10.0, 60.0)
HUMIDITY_RANGE_PCT = (0.0, 100.0)
# Air does not change this fast; a bigger step between two good reads is a bad frame.
MAX_TEMPERATURE_STEP_C_PER_10_S = 10.0
MAX_HUMIDITY_STEP_PCT_PER_10_S = 30.0
# The DHT22 "sticks" at 99.9 % RH when condensation sits on the element.
STUCK_HUMIDITY_PCT = 99.9
# 0xFFFF / 10: what a DHT frame of all ones decodes to.
ALL_ONES_VALUE = 6553.5


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence (mean of the middle two for an even count)."""
    if not values:
        raise ValueError("median of an empty sequence")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def reject_reason(temperature_c: float | None, humidity_pct: float | None, *,
                  previous: tuple[float, float, float] | None = None,
                  now_s: float | None = None) -> str | None:
    """Why a DHT frame is not air (a short reason code), or ``None`` if it is plausible.

    ``previous`` is ``(time_s, temperature_c, humidity_pct)`` of the last good
    read; with ``now_s`` it bounds the step between reads.
    """
    if temperature_c is None or humidity_pct is None:
        return "missing"
    if not (math.isfinite(temperature_c) and math.isfinite(humidity_pct)):
        return "not_finite"
    # An all-zero frame passes the DHT checksum (0 + 0 + 0 + 0 == 0) and 0 % RH
    # passes the library's 0..100 check, so it arrives as a "good" read.
    if temperature_c == 0.0 and humidity_pct == 0.0:
        return "all_zero"
    if ALL_ONES_VALUE in (abs(temperature_c), humidity_pct):
        return "all_ones"
    if not HUMIDITY_RANGE_PCT[0] <= humidity_pct <= HUMIDITY_RANGE_PCT[1]:
        return "humidity_range"
    if not TRAY_TEMPERATURE_RANGE_C[0] <= temperature_c <= TRAY_TEMPERATURE_RANGE_C[1]:
        return "temperature_range"
    if previous is not None and now_s is not None:
        then_s, last_t, last_h = previous
        # Allow at least one 10-s budget: two reads 2 s apart may still differ a little.
        periods = max(1.0, (now_s - then_s) / 10.0)
        if abs(temperature_c - last_t) > MAX_TEMPERATURE_STEP_C_PER_10_S * periods:
            return "temperature_jump"
        if abs(humidity_pct - last_h) > MAX_HUMIDITY_STEP_PCT_PER_10_S * periods:
            return "humidity_jump"
    return None


def is_stuck(humidity_history_pct: Sequence[float], *, count: int = 30) -> bool:
    """True when the last ``count`` humidity reads are all the DHT22's stuck 99.9 %.

    One or two 99.9 % reads happen in real fog; half an hour of exactly 99.9 %
    at a 1-min cadence is a wet element, not weather.
    """
    if len(humidity_history_pct) < count:
        return False
    return all(h == STUCK_HUMIDITY_PCT for h in humidity_history_pct[-count:])


@dataclass(frozen=True, slots=True)
class Debounced:
    """The output of ``debounce``: the accepted state and since when the raw input held."""

    state: bool | None
    raw: bool
    raw_since_s: float


def debounce(current: Debounced, raw: bool, now_s: float, *, on_after_s: float,
             off_after_s: float) -> Debounced:
    """Accept a raw boolean input only after it held steady long enough.

    Different times for on and off give hysteresis in time: a rain plate is
    declared wet quickly (the alarm must sound within 1 s) and dry only
    after it stayed dry for a while, so drizzle does not flap the alarm.
    """
    raw_since = current.raw_since_s if raw == current.raw else now_s
    held_s = now_s - raw_since
    state = current.state
    if raw and state is not True and held_s >= on_after_s:
        state = True
    elif not raw and state is not False and held_s >= off_after_s:
        state = False
    return Debounced(state=state, raw=raw, raw_since_s=raw_since)


def hysteresis(values: Sequence[float], *, on_at: float, off_at: float,
               initial: bool = False) -> list[bool]:
    """Wet/dry (or on/off) from an analogue series: on at >= ``on_at``, off at <= ``off_at``.

    For analogue rain plates (a resistance or ADC value): between the two
    thresholds the previous state holds.
    """
    if off_at > on_at:
        raise ValueError(f"off_at {off_at} must not exceed on_at {on_at}")
    state = initial
    out: list[bool] = []
    for value in values:
        if value >= on_at:
            state = True
        elif value <= off_at:
            state = False
        out.append(state)
    return out


def dew_point_c(temperature_c: float, humidity_pct: float) -> float:
    """Dew point by the Magnus formula (Alduchov & Eskridge constants), for the model."""
    if humidity_pct <= 0:
        raise ValueError("humidity must be positive for a dew point")
    a, b = 17.625, 243.04
    gamma = math.log(humidity_pct / 100.0) + a * temperature_c / (b + temperature_c)
    return b * gamma / (a - gamma)
