"""When the sun is up over a yard: the daylight half of a batch's sun-drying hours.

Sunrise and sunset come from ``astral`` (NOAA's solar equations, as published
by the NOAA Global Monitoring Laboratory), at the yard's latitude and
longitude, for each local day of the yard's time zone. Pure: no clock, no I/O.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import elevation, sun

from secadero.server.batches.model import Interval


def daylight(latitude: float, longitude: float, timezone: str, start: float,
             end: float) -> tuple[Interval, ...]:
    """The spans between sunrise and sunset that overlap ``[start, end)``, clipped to it."""
    if end <= start:
        return ()
    zone = ZoneInfo(timezone)
    observer = Observer(latitude=latitude, longitude=longitude)
    first = dt.datetime.fromtimestamp(start, zone).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(end, zone).date() + dt.timedelta(days=1)
    spans: list[Interval] = []
    day = first
    while day <= last:
        up, down = _sun_up(observer, day, zone)
        lo, hi = max(up, start), min(down, end)
        if hi > lo:
            spans.append(Interval(lo, hi))
        day += dt.timedelta(days=1)
    return tuple(spans)


def _sun_up(observer: Observer, day: dt.date, zone: ZoneInfo) -> tuple[float, float]:
    """Sunrise and sunset of one local day, as UNIX times."""
    try:
        times = sun(observer, date=day, tzinfo=zone)
    except ValueError:
        # astral raises when the sun never rises or never sets that day (polar
        # day or night): the whole day is daylight, or none of it.
        midnight = dt.datetime.combine(day, dt.time(), zone)
        noon = midnight + dt.timedelta(hours=12)
        if elevation(observer, noon) > 0:
            return midnight.timestamp(), (midnight + dt.timedelta(days=1)).timestamp()
        return midnight.timestamp(), midnight.timestamp()
    return times["sunrise"].timestamp(), times["sunset"].timestamp()
