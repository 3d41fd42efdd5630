"""Property tests: no JSON a forecast provider answers makes a parser raise anything but
ForecastError, and what it accepts holds only finite, in-range numbers."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secadero.server.forecast import ForecastError, metno, openmeteo

NOW = 1_780_000_000.0
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                   max_examples=400)

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=10,
)
stamps = (st.text(max_size=20) | st.integers() | st.floats(allow_nan=True)
          | st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M"))
          | st.sampled_from(["2026-06-01T05:00", "0001-01-01T00:00", "9999-12-31T23:59"]))
numbers = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(
    max_size=5)


@st.composite
def open_meteo_bodies(draw: st.DrawFn) -> Any:
    """Shaped like an answer (hourly arrays of one length), any values inside."""
    length = draw(st.integers(0, 6))
    hourly: dict[str, Any] = {"time": draw(st.lists(stamps, min_size=length,
                                                     max_size=length))}
    for name in openmeteo.HOURLY:
        if draw(st.booleans()):
            hourly[name] = draw(st.lists(numbers, min_size=length, max_size=length)
                                | json_values)
    body: dict[str, Any] = {"hourly": hourly}
    if draw(st.booleans()):
        body["hourly_units"] = draw(st.sampled_from([{"time": "unixtime"},
                                                     {"time": "iso8601"}]) | json_values)
    if draw(st.booleans()):
        body["utc_offset_seconds"] = draw(numbers | st.integers(-10**12, 10**12))
    if draw(st.booleans()):
        body["error"] = draw(json_values)
        body["reason"] = draw(json_values)
    return body


@st.composite
def met_norway_bodies(draw: st.DrawFn) -> Any:
    steps = []
    for _ in range(draw(st.integers(0, 4))):
        details = draw(st.fixed_dictionaries({}, optional={
            "probability_of_precipitation": numbers, "precipitation_amount": numbers})
            | json_values)
        block = draw(st.fixed_dictionaries({"details": st.just(details)}) | json_values)
        data = draw(st.dictionaries(st.sampled_from(["next_1_hours", "next_6_hours",
                                                     "instant"]), st.just(block))
                    | json_values)
        time = draw(stamps | st.sampled_from(["2026-06-01T05:00:00Z", "0001-01-01T00:00:00Z",
                                              "9999-12-31T23:59:59+14:00"]))
        steps.append(draw(st.fixed_dictionaries({"time": st.just(time),
                                                 "data": st.just(data)}) | json_values))
    return {"type": "Feature", "properties": {"timeseries": steps}}


def _accepted_is_sane(parse: Any, body: Any) -> None:
    try:
        forecast = parse(body, fetched_at=NOW)
    except ForecastError as error:
        assert error.reason
        return
    for hour in forecast.hours:
        assert math.isfinite(hour.start_ts) and math.isfinite(hour.end_ts)
        assert hour.end_ts > hour.start_ts
        if hour.precip_prob_pct is not None:
            assert 0 <= hour.precip_prob_pct <= 100
        if hour.precip_mm is not None:
            assert math.isfinite(hour.precip_mm) and hour.precip_mm >= 0


@relaxed
@given(body=json_values)
def test_open_meteo_any_json(body: Any) -> None:
    _accepted_is_sane(openmeteo.parse, body)


@relaxed
@given(body=open_meteo_bodies())
def test_open_meteo_shaped_json(body: Any) -> None:
    _accepted_is_sane(openmeteo.parse, body)


@relaxed
@given(body=json_values)
def test_met_norway_any_json(body: Any) -> None:
    _accepted_is_sane(metno.parse, body)


@relaxed
@given(body=met_norway_bodies())
def test_met_norway_shaped_json(body: Any) -> None:
    _accepted_is_sane(metno.parse, body)
