"""A simulated day of a working yard, as the server writes it, and Grafana's query expansion.

Used by the dashboard tests. The points are made by the server's own point
builders from contract messages (telemetry, events, status with node health),
alert transitions, a forecast and batch events, so the dashboards are tested
against the schema the server really writes. ``expand`` fills in Grafana's
InfluxQL macros and template variables the way its InfluxDB datasource does.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from secadero import contract
from secadero.devservices import influx_request
from secadero.server.batches.service import batch_line
from secadero.server.forecast.types import Forecast, ForecastHour
from secadero.server.influx_points import alert_line, forecast_lines
from secadero.server.points import node_point, points_for, to_lines

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards" / "json"
STEP_S = 300
DAY_S = 24 * 3600
NODES = {"norte-1": ("t1", "t2"), "sur-1": ("t3",)}
ACTIVE_ALERT = "Lluvia en ~40 min (80%). Recoger bandejas del tendal Norte."
BATCH = "2026-12-04-norte"
# norte-1 is a calibrated Pi that saw under-voltage since boot (0x50000), sur-1 a healthy one.
HEALTH = {"norte-1": dict(throttled=0x50000, wifi_rssi_dbm=-63.0, disk_free_bytes=5_000_000_000,
                          clock="synced"),
          "sur-1": dict(throttled=0, wifi_rssi_dbm=-71.0, disk_free_bytes=900_000_000,
                        clock="synced", calibrated_ts=None)}
SEQ_GAP_NORTE = 3
CURRENT_HOUR_PROB = 90.0


@dataclass(frozen=True)
class Transition:
    """What ``alert_line`` reads of the alert engine's transition."""

    ts: float
    yard: str
    kind: str
    state: str
    severity: str
    message: str
    episode: int


def simulated_day(yard: str, now: float) -> tuple[list[str], dict[str, Any]]:
    """The line protocol of the day ending at ``now`` (microseconds), and facts to expect."""
    start = now - DAY_S
    shower = (now - 5 * 3600, now - 4 * 3600)
    trays_in = (now - 5 * 3600 - 600, now - 3 * 3600)
    calibrated_ts = round(now - 40 * 86400, 3)
    lines: list[bytes] = []
    seqs = dict.fromkeys(NODES, 0)

    def emit(node: str, kind: str, message: contract.Message, received_at: float) -> None:
        lines.extend(to_lines(points_for(contract.Envelope(yard, node, kind, message),
                                         received_at)))

    def next_seq(node: str) -> int:
        seqs[node] += 1
        return seqs[node]

    def tray_state(node: str, tray: str, ts: float) -> str:
        if trays_in[0] <= ts < trays_in[1]:
            return "retracted"
        if node == "sur-1" and ts >= now - 900:
            return "retracted"  # the last quarter hour: sur-1 took its tray in
        return "extended"

    ts = start
    while ts <= now:
        for node, trays in NODES.items():
            hours = (ts - start) / 3600
            humidity = 60 + 15 * abs(12 - hours) / 12
            raining = shower[0] <= ts < shower[1]
            raw = round(humidity + 2.5, 1) if node == "norte-1" else None
            emit(node, "telemetry", contract.Telemetry(
                ts=ts, seq=next_seq(node), temperature_c=round(31 - (humidity - 60) / 3, 1),
                humidity_pct=round(humidity, 1), rain=raining,
                rain_mm=1.2 if raining else 0.0,
                trays={tray: tray_state(node, tray, ts) for tray in trays},
                humidity_raw_pct=raw), ts)
            health = {**HEALTH[node]}
            health.setdefault("calibrated_ts", calibrated_ts)
            emit(node, "status", contract.Status(
                state="online", ts=ts, version="0.1.0", buffered=2 if node == "sur-1" else 0,
                uptime_s=ts - start + 60, health=contract.NodeHealth(**health)), ts + 0.5)
        ts += STEP_S

    def event(node: str, at: float, kind: str, **extra: Any) -> None:
        emit(node, "event", contract.Event(ts=at, seq=next_seq(node), type=kind, **extra), at)

    for node, trays in NODES.items():
        event(node, shower[0] + 1, "rain_started")
        event(node, shower[1] + 1, "rain_stopped")
        # A second apart: an event point's series is (yard, node), so two at one instant
        # would be one point.
        for index, tray in enumerate(trays):
            event(node, trays_in[0] + 5 + index, "tray_retracted", tray=tray)
            event(node, trays_in[1] + 5 + index, "tray_extended", tray=tray)
    event("sur-1", now - 8 * 3600, "sensor_fault", sensor="dht22", detail="no answer")
    event("sur-1", now - 8 * 3600 + 600, "sensor_recovered", sensor="dht22")
    text = [line.decode() for line in lines]
    text += to_lines_str([node_point(yard, "norte-1", now - 6 * 3600, seq_gap=SEQ_GAP_NORTE)])

    first_hour = int(start // 3600) * 3600
    this_hour = int(now // 3600) * 3600
    hours = []
    for hour_start in range(first_hour, int(now) + 12 * 3600, 3600):
        if hour_start == this_hour:
            probability = CURRENT_HOUR_PROB  # the hour in course: rain is close
        elif this_hour < hour_start <= this_hour + 2 * 3600:
            probability = 80.0
        elif shower[0] - 3600 <= hour_start < shower[1]:
            probability = 85.0
        else:
            probability = 10.0
        hours.append(ForecastHour(start_ts=hour_start, end_ts=hour_start + 3600,
                                  precip_prob_pct=probability, precip_mm=0.5))
    text += forecast_lines(yard, Forecast(provider="open-meteo", fetched_at=now,
                                          hours=tuple(hours)))

    text += [
        alert_line(Transition(shower[0] - 900, yard, "rain_forecast", "raised", "warning",
                              "Lluvia en ~15 min (85%). Recoger bandejas.", 1)),
        alert_line(Transition(trays_in[0] + 60, yard, "rain_forecast", "acknowledged", "warning",
                              "Lluvia en ~15 min (85%). Recoger bandejas.", 1)),
        alert_line(Transition(trays_in[1], yard, "rain_forecast", "resolved", "info",
                              "Pasó la lluvia. Pueden sacar las bandejas.", 1)),
        alert_line(Transition(now - 1200, yard, "rain_forecast", "raised", "warning",
                              ACTIVE_ALERT, 2)),
    ]

    batch = SimpleNamespace(yard=yard, id=BATCH)
    text += [batch_line(batch, "start", now - 20 * 3600, note="tendal norte"),
             batch_line(batch, "moisture", now - 12 * 3600, moisture_pct=35.0),
             batch_line(batch, "moisture", now - 2 * 3600, moisture_pct=18.5)]
    facts = {"calibrated_ts": calibrated_ts, "batch": BATCH}
    return text, facts


def to_lines_str(points: list[Any]) -> list[str]:
    return [line.decode() for line in to_lines(points)]


# --------------------------------------------------------------------------
# Grafana's side: time range, macros, variables


_RELATIVE = re.compile(r"now(?:([+-])(\d+)([smhdw]))?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Grafana rounds $__interval to one of these (its rangeutil's interval table, abridged).
_NICE_INTERVALS_S = (10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800,
                     21600, 43200, 86400)


def resolve(relative: str, now: float) -> float:
    """``now-24h`` -> a UNIX time, as Grafana's time picker does."""
    match = _RELATIVE.match(relative)
    if match is None:
        raise ValueError(f"not a relative time: {relative!r}")
    sign, amount, unit = match.groups()
    if sign is None:
        return now
    delta = int(amount) * _UNIT_S[unit]
    return now + delta if sign == "+" else now - delta


def interval(range_s: float, max_points: int = 1000, minimum_s: int = 10) -> str:
    """Grafana's ``$__interval``: the range over the panel's width in points, rounded up."""
    raw = max(minimum_s, range_s / max_points)
    for nice in _NICE_INTERVALS_S:
        if nice >= raw:
            return f"{nice}s"
    return f"{int(raw)}s"


def expand(query: str, dashboard: dict[str, Any], now: float, values: dict[str, str]) -> str:
    """The InfluxQL Grafana sends for ``query`` on ``dashboard`` at ``now``.

    ``values`` holds each template variable's value as Grafana formats it for
    an InfluxQL regex (an "All" with ``allValue`` ``.*`` is ``.*``).
    """
    start = resolve(dashboard["time"]["from"], now)
    end = resolve(dashboard["time"]["to"], now)
    text = query.replace("$timeFilter",
                         f"time >= {int(start * 1000)}ms and time <= {int(end * 1000)}ms")
    text = text.replace("$__interval", interval(end - start))
    for name in sorted(values, key=len, reverse=True):
        text = text.replace(f"${name}", values[name])
    return text


@dataclass(frozen=True)
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]


class QueryFailed(AssertionError):
    """InfluxDB refused the query (a syntax error answers 400 "error parsing query")."""


def run_query(url: str, database: str, query: str, *,
              auth: tuple[str, str] | None = None) -> list[Series]:
    """Every series InfluxDB returns for one InfluxQL query, via the 1.x HTTP API, logged in
    as ``auth`` (Grafana's read-only user) or else the admin of the private InfluxDB."""
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "ms"})
    try:
        with urllib.request.urlopen(influx_request(f"{url}/query?{params}", auth=auth),
                                    timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise QueryFailed(f"{exc.code} {exc.read().decode(errors='replace')}: {query}") from exc
    found = []
    for result in body.get("results", []):
        if "error" in result:
            raise QueryFailed(f"{result['error']}: {query}")
        for series in result.get("series", []):
            found.append(Series(series["name"], series.get("tags", {}), series["columns"],
                                series["values"]))
    return found


def by_tag(series: list[Series], *tags: str) -> dict[tuple[str, ...], Any]:
    """The last non-null value of each series, keyed by the given tags."""
    found = {}
    for one in series:
        values = [row[1] for row in one.values if row[1] is not None]
        found[tuple(one.tags.get(tag, "") for tag in tags)] = values[-1] if values else None
    return found


def load(name: str) -> dict[str, Any]:
    """A dashboard of dashboards/json/."""
    return json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))


def shows_data(series: list[Series]) -> bool:
    """What Grafana would draw: at least one series with a non-null value beside the time."""
    return any(value is not None for one in series for row in one.values
               for value in row[1:])
