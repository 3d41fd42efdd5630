"""What the "Yard now" page and the wall show: one yard's state at this instant.

Where each part comes from, so nothing is measured twice:

- trays, rain plates, temperature and humidity, who was heard when: the alert
  service's ``YardTracker``, fed by the ingest before any InfluxDB write (the
  same view the alert rules decide on);
- a node the tracker has not heard since the server started (a restart): its
  last stored values, read from InfluxDB through the server's one read path
  (``InfluxV1Writer.query``, as ``batches/series.py`` reads), marked as such;
- silent nodes: the alert rules' own ``silent_nodes``;
- the next hours' rain probability: the forecast poller's last good forecast;
- the alert: the alert service's open episodes.

``yard_now`` is pure over those inputs and the clock; ``LastStored`` is the
one part that does I/O.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from secadero.errors import SecaderoError
from secadero.server.alerts import rules
from secadero.server.alerts.rules import NodeView, YardView
from secadero.server.alerts.store import Episode
from secadero.server.batches.series import quote_string
from secadero.server.forecast.types import ForecastStatus
from secadero.server.influx import InfluxV1Writer
from secadero.settings import AlertSettings, InfluxSettings, YardSettings

log = logging.getLogger(__name__)

# Forecast hours shown: the next six.
FORECAST_HOURS = 6
# How far back the stored values of a node the tracker has not heard are looked for.
LAST_STORED_WINDOW = "2d"


@dataclass(frozen=True)
class TrayNow:
    node: str
    tray: str
    state: str  # extended, retracted, moving, unknown
    area: str | None


@dataclass(frozen=True)
class NodeNow:
    node: str
    area: str | None
    online: bool
    silent: bool
    last_seen_ts: float | None
    rain_wet: bool | None
    temperature_c: float | None
    humidity_pct: float | None
    trays: tuple[TrayNow, ...]
    # True: from InfluxDB (the server has not heard the node since it started).
    stored: bool = False


@dataclass(frozen=True)
class HourNow:
    start_ts: float
    prob_pct: float | None
    precip_mm: float | None


@dataclass(frozen=True)
class YardNow:
    yard: str
    name: str
    timezone: str
    now: float
    nodes: tuple[NodeNow, ...]
    raining: tuple[str, ...]  # nodes whose plate is wet
    hours: tuple[HourNow, ...]
    forecast_provider: str | None
    forecast_fetched_at: float | None
    forecast_error: str | None
    alert: Episode | None  # the yard's rain (or other yard-wide) alert, if one is open
    others: tuple[Episode, ...] = field(default=())  # other open episodes: nodes, forecast

    @property
    def trays(self) -> tuple[TrayNow, ...]:
        return tuple(t for n in self.nodes for t in n.trays)

    @property
    def trays_out(self) -> tuple[TrayNow, ...]:
        return tuple(t for t in self.trays if t.state != "retracted")

    @property
    def silent(self) -> tuple[str, ...]:
        return tuple(n.node for n in self.nodes if n.silent)


# Which open episode the page shows as "the alert": rain first, then by severity.
_ALERT_ORDER = {"rain": 0, "humidity_surge": 1}
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def yard_now(settings: YardSettings, view: YardView, *, now: float, alerts: AlertSettings,
             forecast: ForecastStatus, episodes: Sequence[Episode],
             stored: Sequence[NodeView] = ()) -> YardNow:
    """The yard at ``now`` from the tracker's ``view``, completed by ``stored`` nodes."""
    silent = set(rules.silent_nodes(view, now, alerts))
    heard = {n.node for n in view.nodes}
    nodes = [_node(settings, n, n.node in silent, stored=False) for n in view.nodes]
    nodes += [_node(settings, n, True, stored=True) for n in stored if n.node not in heard]
    nodes.sort(key=lambda n: (n.area or "", n.node))
    hours: list[HourNow] = []
    if forecast.forecast is not None:
        hours = [HourNow(h.start_ts, h.precip_prob_pct, h.precip_mm)
                 for h in forecast.forecast.hours if h.end_ts > now][:FORECAST_HOURS]
    mine = sorted((e for e in episodes if e.yard == settings.id and e.active),
                  key=lambda e: (_ALERT_ORDER.get(e.kind, 9),
                                 _SEVERITY_ORDER.get(e.severity, 9), -e.raised_at))
    alert = next((e for e in mine if e.kind in _ALERT_ORDER), None)
    return YardNow(
        yard=settings.id, name=settings.name, timezone=settings.timezone, now=now,
        nodes=tuple(nodes), raining=tuple(n.node for n in nodes if n.rain_wet),
        hours=tuple(hours),
        forecast_provider=forecast.forecast.provider if forecast.forecast else None,
        forecast_fetched_at=forecast.forecast.fetched_at if forecast.forecast else None,
        forecast_error=forecast.error, alert=alert,
        others=tuple(e for e in mine if e is not alert))


def _node(settings: YardSettings, view: NodeView, silent: bool, *, stored: bool) -> NodeNow:
    trays = tuple(TrayNow(view.node, tray, state, settings.area_of_tray(f"{view.node}/{tray}"))
                  for tray, state in sorted(view.trays.items()))
    return NodeNow(node=view.node, area=settings.area_of_node(view.node),
                   online=view.online and not stored, silent=silent,
                   last_seen_ts=view.last_seen_ts, rain_wet=view.rain_wet,
                   temperature_c=view.temperature_c, humidity_pct=view.humidity_pct,
                   trays=trays, stored=stored)


def yard_now_json(state: YardNow) -> dict[str, Any]:
    """The same state as JSON (``GET /api/yard``)."""
    def episode(e: Episode | None) -> dict[str, Any] | None:
        if e is None:
            return None
        return {"id": e.id, "kind": e.kind, "cause": e.cause, "severity": e.severity,
                "state": e.state, "raised_at": e.raised_at, "acked_at": e.acked_at,
                "acked_by": e.acked_by, "message": e.message}
    return {
        "yard": state.yard, "name": state.name, "now": state.now,
        "raining": list(state.raining), "silent": list(state.silent),
        "nodes": [{"node": n.node, "area": n.area, "online": n.online, "silent": n.silent,
                   "stored": n.stored, "last_seen_ts": n.last_seen_ts, "rain_wet": n.rain_wet,
                   "temperature_c": n.temperature_c, "humidity_pct": n.humidity_pct,
                   "trays": {t.tray: t.state for t in n.trays}} for n in state.nodes],
        "forecast": {"provider": state.forecast_provider,
                     "fetched_at": state.forecast_fetched_at, "error": state.forecast_error,
                     "hours": [{"start_ts": h.start_ts, "prob_pct": h.prob_pct,
                                "precip_mm": h.precip_mm} for h in state.hours]},
        "alert": episode(state.alert), "others": [episode(e) for e in state.others],
    }


class LastStored:
    """The last stored values of a yard's nodes, from InfluxDB (one read of three statements).

    Only asked for when the tracker does not know every node of the yard (after
    a server restart, before each node has spoken), so a page load does not
    cost InfluxDB a query once the yard is live. Safe to share between threads.
    """

    def __init__(self, influx: InfluxSettings) -> None:
        self._influx = InfluxV1Writer(influx)
        self._lock = threading.Lock()  # one HTTP connection, the API's threads

    def close(self) -> None:
        with self._lock:
            self._influx.close()

    def nodes(self, yard: str) -> list[NodeView]:
        """Each node's last tray states, plate and climate; [] if InfluxDB does not answer."""
        where = f'WHERE "yard" = {quote_string(yard)} AND time > now() - {LAST_STORED_WINDOW}'
        statement = (
            f'SELECT last("state") AS "state" FROM "tray" {where} GROUP BY "node", "tray"; '
            f'SELECT last("wet") AS "wet" FROM "rain" {where} GROUP BY "node"; '
            # One selector and a plain field: both from the node's last reading, at its
            # time (two selectors would answer the query's start time instead).
            f'SELECT last("humidity_pct") AS "humidity_pct", "temperature_c" FROM "climate" '
            f'{where} GROUP BY "node"')
        try:
            with self._lock:
                results = self._influx.query(statement, epoch="s")
        except SecaderoError as exc:
            log.warning("yard now: the last stored values of %s are not available: %s",
                        yard, exc)
            return []
        found: dict[str, dict[str, Any]] = {}

        def rows(index: int) -> list[tuple[dict[str, str], dict[str, Any]]]:
            if index >= len(results):
                return []
            out = []
            for series in results[index].get("series", []) or []:  # type: ignore[union-attr]
                for values in series["values"]:
                    out.append((series.get("tags", {}),
                                dict(zip(series["columns"], values, strict=True))))
            return out

        for tags, row in rows(0):
            node = found.setdefault(tags["node"], {"trays": {}, "ts": 0.0})
            node["trays"][tags["tray"]] = str(row["state"])
            node["ts"] = max(node["ts"], float(row["time"]))
        for tags, row in rows(1):
            node = found.setdefault(tags["node"], {"trays": {}, "ts": 0.0})
            node["wet"] = bool(row["wet"])
            node["ts"] = max(node["ts"], float(row["time"]))
        for tags, row in rows(2):
            node = found.setdefault(tags["node"], {"trays": {}, "ts": 0.0})
            node["temperature_c"], node["humidity_pct"] = row["temperature_c"], row["humidity_pct"]
            node["ts"] = max(node["ts"], float(row["time"]))
        return [NodeView(node=name, last_seen_ts=data["ts"] or None, online=False,
                         rain_wet=data.get("wet"), trays=data["trays"],
                         temperature_c=data.get("temperature_c"),
                         humidity_pct=data.get("humidity_pct"))
                for name, data in sorted(found.items())]

    def last_retracted(self, yard: str, since: float, until: float) -> float | None:
        """When the last tray of ``yard`` was reported retracted in [since, until], if any."""
        statement = (f'SELECT last("type") FROM "event" WHERE "yard" = {quote_string(yard)} '
                     f"AND \"type\" = 'tray_retracted' AND time >= {int(since)}s "
                     f"AND time <= {int(until) + 1}s")
        try:
            with self._lock:
                results = self._influx.query(statement, epoch="s")
        except SecaderoError as exc:
            log.warning("alerts page: tray events of %s not available: %s", yard, exc)
            return None
        for result in results:
            for series in result.get("series", []) or []:  # type: ignore[union-attr]
                for values in series["values"]:
                    return float(values[0])
        return None
