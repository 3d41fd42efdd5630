"""The liveness stage: when each node was last heard, which are offline, their node points.

``heard`` runs on paho's network thread (the receive stage calls it for
every valid node message); ``stored`` and ``check`` run on the writer thread
and return ``node`` points (online/offline) for it to write. ``last heard``
has one writer (paho's thread) and is read as a snapshot; the offline set
changes on both threads, rarely (a status message, a silence, a return), so
it alone has a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from secadero.contract import NodeKey
from secadero.server.ingest.items import Item
from secadero.server.metrics import Metrics
from secadero.server.points import node_point, to_lines

log = logging.getLogger(__name__)


class Liveness:
    """Marks a node offline after ``offline_after_s`` of silence, online when it is back."""

    def __init__(self, offline_after_s: float, metrics: Metrics) -> None:
        self.offline_after_s = offline_after_s
        self._metrics = metrics
        self._last_heard: dict[NodeKey, float] = {}
        self._offline: set[NodeKey] = set()
        self._lock = threading.Lock()

    def heard(self, key: NodeKey, at: float, status: str | None = None) -> None:
        """A valid message from the node; ``status``: the state a status message says."""
        self._last_heard[key] = at
        if status is not None:
            # The node said so itself (its Last Will or a fresh start): silence is not news.
            with self._lock:
                if status == "offline":
                    self._offline.add(key)
                else:
                    self._offline.discard(key)

    def is_offline(self, key: NodeKey) -> bool:
        return key in self._offline

    def stored(self, batch: Sequence[Item], now: float) -> list[bytes]:
        """Readings of an offline node were stored: it is back (an ``online`` point)."""
        lines: list[bytes] = []
        offline = self._offline
        if not offline:
            return lines
        for item in batch:
            key = item.node
            if key is not None and item.seq is not None and item.lines and key in offline:
                with self._lock:
                    if key not in self._offline:
                        continue
                    self._offline.discard(key)
                lines.extend(to_lines([node_point(*key, now, online=True)]))
        return lines

    def check(self, now: float) -> list[bytes]:
        """Mark the nodes silent for longer than ``offline_after_s`` (an ``offline`` point)."""
        lines: list[bytes] = []
        for key, heard in list(self._last_heard.items()):
            if key in self._offline or now - heard <= self.offline_after_s:
                continue
            with self._lock:
                self._offline.add(key)
            self._metrics.inc("nodes_offline_total")
            log.info("%s/%s silent for %.0f s: marked offline", *key, now - heard)
            lines.extend(to_lines([node_point(*key, now, online=False)]))
        return lines
