"""The alert rules: pure functions of what the yard and the forecast say, and the time.

Nothing here reads a clock, a socket or a file: ``now`` (UNIX seconds, UTC)
is an argument, so the scenario tests drive whole days in milliseconds.
The lifecycle (``engine``) decides what to send; these functions only say
what is true right now.

Rules (docs/alerts.md explains them for people):
- ``rain_forecast``: two answers. Whether the episode holds: within the
  look-ahead an hour reaches the raise probability or amount, and once raised
  until every hour is below the lower clear values. When the rain is
  expected: always the first hour at the raise values.
- ``rain_now``: any plate wet, or the gauge tipped recently.
- ``humidity_surge``: a fast humidity rise, or a rise with the dew point
  closing in, at several nodes (a change, never a level the dawn reaches).
- ``trays_out``: which trays still say ``extended``.
- ``all_clear``: no rain forecast for the next hours and plates dry a while.
- ``silent_nodes``, ``forecast_age_s``: for the technician.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import itemgetter
from typing import Final
from zoneinfo import ZoneInfo

from secadero.server.forecast import Forecast, ForecastHour
from secadero.settings import AlertSettings

_SECOND = itemgetter(1)


@dataclass(frozen=True, slots=True)
class NodeView:
    """What one node last told us (built by ``state.YardTracker``)."""

    node: str
    last_seen_ts: float | None = None
    online: bool = True
    rain_wet: bool | None = None
    # Since when the plate says what it says now (its last change).
    rain_changed_ts: float | None = None
    last_tip_ts: float | None = None
    trays: Mapping[str, str] = field(default_factory=dict)
    temperature_c: float | None = None
    humidity_pct: float | None = None
    # (ts, humidity_pct) over the last humidity window, oldest first.
    humidity_history: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class YardView:
    yard: str
    name: str
    timezone: str
    nodes: tuple[NodeView, ...]


@dataclass(frozen=True, slots=True)
class RainExpected:
    """The first forecast hour that triggers ``rain_forecast``."""

    start_ts: float  # when the rain is expected to start (never before now)
    lead_min: float
    prob_pct: float | None
    precip_mm: float | None
    provider: str
    hour_start_ts: float  # the start of that forecast hour (before now if it is running)


@dataclass(frozen=True, slots=True)
class RainNow:
    nodes: tuple[str, ...]
    since_ts: float


def usable_forecast(forecast: Forecast | None, now: float,
                    settings: AlertSettings) -> Forecast | None:
    """The forecast if it is young enough to be believed, else None (sensors only)."""
    if forecast is None or now - forecast.fetched_at > settings.forecast_max_age_h * 3600:
        return None
    return forecast


def _hour_is_rain(hour: ForecastHour, prob_pct: float, mm_per_h: float) -> bool:
    # Nulls (a model without probability for this region) count as "no evidence".
    if hour.precip_prob_pct is not None and hour.precip_prob_pct >= prob_pct:
        return True
    if hour.precip_mm is not None:
        length_h = max((hour.end_ts - hour.start_ts) / 3600, 1e-9)
        if hour.precip_mm / length_h >= mm_per_h:
            return True
    return False


def first_rain_hour(forecast: Forecast | None, now: float, horizon_min: float, *,
                    prob_pct: float, mm_per_h: float) -> ForecastHour | None:
    """The first hour overlapping [now, now + horizon) that reaches either threshold."""
    if forecast is None:
        return None
    horizon_end = now + horizon_min * 60
    for hour in sorted(forecast.hours, key=lambda h: h.start_ts):
        if hour.end_ts <= now or hour.start_ts >= horizon_end:
            continue
        if _hour_is_rain(hour, prob_pct, mm_per_h):
            return hour
    return None


@dataclass(frozen=True, slots=True)
class ForecastAnswer:
    """The forecast rule's two answers, which are different questions.

    ``holds``: the rain episode stays (or would be) raised. Hysteresis: once
    raised, the episode holds while an hour in the look-ahead stays at or above
    the lower clear thresholds, so a forecast flapping 58/62/57 % around the
    raise threshold is one alert, not three.
    ``expected``: when the rain is expected to start. Always the first hour at
    the *raise* thresholds, never the clear ones: an hour at 40 % is reason
    enough to keep an alert, not evidence that the rain starts then. None while
    the episode only holds (no hour reaches the raise thresholds any more); the
    engine then keeps the last expected start it had.
    """

    holds: bool
    expected: RainExpected | None


NO_RAIN_FORECAST: Final = ForecastAnswer(holds=False, expected=None)


def rain_forecast(forecast: Forecast | None, now: float, settings: AlertSettings, *,
                  active: bool) -> ForecastAnswer:
    """Whether the forecast keeps a rain episode raised, and when the rain is expected.

    ``active``: an episode is already open, so the clear thresholds decide
    ``holds``; otherwise only the raise thresholds can raise one.
    """
    forecast = usable_forecast(forecast, now, settings)
    if forecast is None:
        return NO_RAIN_FORECAST
    hour = first_rain_hour(forecast, now, settings.lookahead_min,
                           prob_pct=settings.raise_prob_pct, mm_per_h=settings.raise_mm_per_h)
    expected = None
    if hour is not None:
        start = max(hour.start_ts, now)
        expected = RainExpected(start_ts=start, lead_min=(start - now) / 60,
                                prob_pct=hour.precip_prob_pct, precip_mm=hour.precip_mm,
                                provider=forecast.provider, hour_start_ts=hour.start_ts)
    holds = expected is not None or (active and first_rain_hour(
        forecast, now, settings.lookahead_min, prob_pct=settings.clear_prob_pct,
        mm_per_h=settings.clear_mm_per_h) is not None)
    return ForecastAnswer(holds=holds, expected=expected)


def rain_now(yard: YardView, now: float, settings: AlertSettings) -> RainNow | None:
    """Any plate wet or a recent bucket tip: it is raining at the yard, whatever the forecast."""
    wet: list[str] = []
    since: list[float] = []
    for node in yard.nodes:
        tipped = (node.last_tip_ts is not None
                  and now - node.last_tip_ts <= settings.tip_window_min * 60)
        if node.rain_wet or tipped:
            wet.append(node.node)
            candidates = [t for t in (node.rain_changed_ts if node.rain_wet else None,
                                      node.last_tip_ts if tipped else None) if t is not None]
            since.append(min(candidates) if candidates else now)
    if not wet:
        return None
    return RainNow(nodes=tuple(sorted(wet)), since_ts=min(since))


def without_rain_sensors(yard: YardView) -> YardView:
    """The yard as if it had no plates and no gauges (``rain_now`` switched off there)."""
    return replace(yard, nodes=tuple(replace(node, rain_wet=None, rain_changed_ts=None,
                                             last_tip_ts=None) for node in yard.nodes))


def plates_dry_for_s(yard: YardView, now: float) -> float:
    """How long every plate and gauge has been dry; ``inf`` when the yard has neither."""
    dry_s = math.inf
    for node in yard.nodes:
        if node.rain_wet:
            return 0.0
        if node.rain_wet is False:
            dry_s = min(dry_s, now - (node.rain_changed_ts if node.rain_changed_ts is not None
                                      else now))
        if node.last_tip_ts is not None:
            dry_s = min(dry_s, now - node.last_tip_ts)
    return max(dry_s, 0.0)


def all_clear(yard: YardView, forecast: Forecast | None, now: float,
              settings: AlertSettings) -> bool:
    """No rain forecast for the next hours (clear thresholds) and plates dry long enough.

    Without a usable forecast the plates decide alone (docs/alerts.md says so).
    """
    if rain_now(yard, now, settings) is not None:
        return False
    if plates_dry_for_s(yard, now) < settings.all_clear_dry_min * 60:
        return False
    forecast = usable_forecast(forecast, now, settings)
    hour = first_rain_hour(forecast, now, settings.all_clear_hours * 60,
                           prob_pct=settings.clear_prob_pct, mm_per_h=settings.clear_mm_per_h)
    return hour is None


def trays_out(yard: YardView) -> tuple[str, ...]:
    """Trays whose switch still says ``extended``, as ``node/tray``."""
    return tuple(sorted(f"{node.node}/{tray}" for node in yard.nodes
                        for tray, state in node.trays.items() if state == "extended"))


def trays_unknown(yard: YardView) -> tuple[str, ...]:
    """Trays whose switch says ``unknown`` (neither in nor out), as ``node/tray``."""
    return tuple(sorted(f"{node.node}/{tray}" for node in yard.nodes
                        for tray, state in node.trays.items() if state == "unknown"))


def trays_not_in(yard: YardView) -> tuple[str, ...]:
    """Trays no switch confirms ``retracted`` (out, unknown, or anything else)."""
    return tuple(sorted(f"{node.node}/{tray}" for node in yard.nodes
                        for tray, state in node.trays.items() if state != "retracted"))


def trays_all_in(yard: YardView) -> bool:
    """True when the yard reports trays and every one of them says ``retracted``."""
    states = [state for node in yard.nodes for state in node.trays.values()]
    return bool(states) and all(state == "retracted" for state in states)


def dew_point_c(temperature_c: float, humidity_pct: float) -> float:
    """Magnus formula (Sonntag 1990 constants), good to ~0.1 °C over -45..60 °C."""
    a, b = 17.62, 243.12
    gamma = math.log(max(humidity_pct, 0.1) / 100) + a * temperature_c / (b + temperature_c)
    return b * gamma / (a - gamma)


def humidity_rise(node: NodeView, now: float, window_s: float) -> float:
    """How many points the node's humidity rose over its lowest of the last ``window_s``."""
    if node.humidity_pct is None:
        return 0.0
    # History is oldest first: bisect to the window, then min() in C.
    recent = node.humidity_history[bisect_left(node.humidity_history, (now - window_s,)):]
    return node.humidity_pct - min(recent, key=_SECOND)[1] if recent else 0.0


def humidity_surge(yard: YardView, now: float, settings: AlertSettings) -> tuple[str, ...]:
    """Nodes whose humidity rose fast, or rose while the dew point closed in; empty if
    fewer than the required number of nodes agree (one odd sensor is not weather).

    A change against the recent past, never a level: an Amazon dawn brings 94-97 %
    and the dew point within 1 °C of the air every morning, slowly (a few points an
    hour), and that is no sign of rain. A near dew point counts only together with a
    rise of ``dew_point_rise_pct`` points within the window.
    """
    surging: list[str] = []
    reporting = 0
    window_s = settings.humidity_window_min * 60
    for node in yard.nodes:
        if node.humidity_pct is None:
            continue
        reporting += 1
        rise = humidity_rise(node, now, window_s)
        close = (node.temperature_c is not None and node.temperature_c
                 - dew_point_c(node.temperature_c, node.humidity_pct)
                 <= settings.dew_point_spread_c)
        if rise >= settings.humidity_rise_pct or (close and rise >= settings.dew_point_rise_pct):
            surging.append(node.node)
    needed = min(settings.humidity_min_nodes, reporting)
    return tuple(sorted(surging)) if reporting and len(surging) >= needed else ()


def silent_nodes(yard: YardView, now: float, settings: AlertSettings) -> tuple[str, ...]:
    """Nodes that said ``offline`` (or whose will did) or sent nothing for too long."""
    limit_s = settings.node_silent_min * 60
    return tuple(sorted(
        node.node for node in yard.nodes
        if not node.online or node.last_seen_ts is None or now - node.last_seen_ts > limit_s
    ))


def forecast_age_s(last_good_ts: float | None, started_ts: float, now: float) -> float:
    """Age of the last good forecast (or of the service, if none came yet)."""
    return now - (last_good_ts if last_good_ts is not None else started_ts)


def _minutes(hhmm: str) -> int:
    hours, minutes = (int(part) for part in hhmm.split(":"))
    return hours * 60 + minutes


def in_drying_hours(now: float, timezone: str, settings: AlertSettings) -> bool:
    """True between ``drying_start`` and ``drying_end`` in the yard's local time."""
    local = datetime.fromtimestamp(now, ZoneInfo(timezone))
    minute = local.hour * 60 + local.minute
    return _minutes(settings.drying_start) <= minute < _minutes(settings.drying_end)


def local_hhmm(ts: float, timezone: str) -> str:
    """Clock time in the yard, as the workers read it (14:20)."""
    return datetime.fromtimestamp(ts, ZoneInfo(timezone)).strftime("%H:%M")


def nodes_with(yard: YardView, names: Sequence[str]) -> tuple[NodeView, ...]:
    wanted = set(names)
    return tuple(node for node in yard.nodes if node.node in wanted)
