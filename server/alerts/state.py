"""The live state of every yard as the alert rules need it, built from decoded messages.

Fed straight from the ingest (before any InfluxDB write), so a wet plate
reaches the rules at once. Pure bookkeeping: the receive time is passed in.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from secadero.contract import Envelope, Event, Status, Telemetry
from secadero.server.alerts.rules import NodeView, YardView
from secadero.settings import YardSettings

# Humidity history kept per node: enough for a 30-min window at one sample per 10 s.
_HISTORY_MAX = 400


@dataclass
class _Node:
    node: str
    last_seen_ts: float | None = None
    online: bool = True
    rain_wet: bool | None = None
    rain_changed_ts: float | None = None
    last_tip_ts: float | None = None
    trays: dict[str, str] = field(default_factory=dict)
    temperature_c: float | None = None
    humidity_pct: float | None = None
    humidity: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=_HISTORY_MAX))
    # Latest measurement time seen per kind: an old message re-sent from a
    # node's outbox must not overwrite a newer state.
    newest_rain_ts: float = float("-inf")
    newest_tray_ts: dict[str, float] = field(default_factory=dict)


class YardTracker:
    """Per yard, per node: plate, gauge, trays, humidity, presence."""

    def __init__(self, yards: list[YardSettings] | tuple[YardSettings, ...], *,
                 humidity_window_s: float = 1800.0) -> None:
        self._yards = {y.id: y for y in yards}
        self._nodes: dict[str, dict[str, _Node]] = {y.id: {} for y in yards}
        self._window_s = humidity_window_s
        self._lock = threading.Lock()
        self.ignored = 0  # messages for yards we do not know

    def observe(self, envelope: Envelope, received_at: float) -> bool:
        """Take one decoded message; True if it may change a rain decision (evaluate now)."""
        nodes = self._nodes.get(envelope.yard)
        if nodes is None or envelope.node is None:
            self.ignored += 1
            return False
        with self._lock:
            node = nodes.get(envelope.node)
            if node is None:
                node = nodes[envelope.node] = _Node(envelope.node)
            message = envelope.message
            if isinstance(message, Status):
                node.online = message.state == "online"
                if node.online:
                    node.last_seen_ts = received_at
                return not node.online
            node.last_seen_ts = received_at
            node.online = True
            if isinstance(message, Telemetry):
                return self._telemetry(node, message)
            if isinstance(message, Event):
                return self._event(node, message)
        return False

    def _telemetry(self, node: _Node, message: Telemetry) -> bool:
        urgent = False
        if message.ts >= node.newest_rain_ts:
            node.newest_rain_ts = message.ts
            if message.rain is not None and message.rain != node.rain_wet:
                node.rain_changed_ts = message.ts
                node.rain_wet = message.rain
                urgent = True
            if message.rain_mm:
                node.last_tip_ts = message.ts
                urgent = True
            if message.humidity_pct is not None:
                node.humidity.append((message.ts, message.humidity_pct))
                while node.humidity and message.ts - node.humidity[0][0] > self._window_s:
                    node.humidity.popleft()
            node.humidity_pct = message.humidity_pct
            node.temperature_c = message.temperature_c
        for tray, state in message.trays.items():
            if message.ts >= node.newest_tray_ts.get(tray, float("-inf")):
                node.newest_tray_ts[tray] = message.ts
                urgent |= node.trays.get(tray) != state
                node.trays[tray] = state
        return urgent

    def _event(self, node: _Node, message: Event) -> bool:
        if message.type in ("rain_started", "rain_stopped"):
            if message.ts < node.newest_rain_ts:
                return False
            node.newest_rain_ts = message.ts
            wet = message.type == "rain_started"
            if node.rain_wet != wet:
                node.rain_wet, node.rain_changed_ts = wet, message.ts
            return True
        if message.type in ("tray_extended", "tray_retracted") and message.tray:
            if message.ts < node.newest_tray_ts.get(message.tray, float("-inf")):
                return False
            node.newest_tray_ts[message.tray] = message.ts
            node.trays[message.tray] = "extended" if message.type == "tray_extended" \
                else "retracted"
            return True
        return False

    def yards(self) -> list[str]:
        return list(self._yards)

    def view(self, yard: str) -> YardView:
        settings = self._yards[yard]
        with self._lock:
            nodes = tuple(
                NodeView(node=n.node, last_seen_ts=n.last_seen_ts, online=n.online,
                         rain_wet=n.rain_wet, rain_changed_ts=n.rain_changed_ts,
                         last_tip_ts=n.last_tip_ts, trays=dict(n.trays),
                         temperature_c=n.temperature_c, humidity_pct=n.humidity_pct,
                         humidity_history=tuple(n.humidity))
                for n in self._nodes[yard].values())
        return YardView(yard=yard, name=settings.name, timezone=settings.timezone, nodes=nodes)
