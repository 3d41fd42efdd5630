"""The ``alert`` measurement: each raise, acknowledge and resolve, for the wall display.

Tags ``yard`` and ``kind``; fields ``state``, ``severity``, ``message`` and
``episode`` (DESIGN.md, "Time series"). Written from a background thread
with a small queue: the alert cycle never waits on InfluxDB. A write that
fails is retried a few times, then dropped with a log line and a counter
(the SQLite store remains the record of every episode).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import requests
from influxdb_client import Point, WritePrecision

from secadero.server.alerts.engine import Transition
from secadero.settings import InfluxSettings

log = logging.getLogger(__name__)


def alert_line(transition: Transition) -> str:
    return (Point("alert").tag("yard", transition.yard).tag("kind", transition.kind)
            .field("state", transition.state).field("severity", transition.severity)
            .field("message", transition.message).field("episode", transition.episode)
            .time(int(transition.ts * 1000), WritePrecision.MS).to_line_protocol())


class AlertPointWriter:
    """Queues transitions and writes them to InfluxDB's 1.x /write API."""

    def __init__(self, settings: InfluxSettings, *, attempts: int = 5, retry_s: float = 5.0,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.attempts = attempts
        self.retry_s = retry_s
        self.session = session or requests.Session()
        self._sleep = sleep
        self._queue: queue.Queue[Transition | None] = queue.Queue(maxsize=10_000)
        self._thread = threading.Thread(target=self._run, name="alert-points", daemon=True)
        self.written = 0
        self.dropped = 0

    def __call__(self, transition: Transition) -> None:
        try:
            self._queue.put_nowait(transition)
        except queue.Full:
            self.dropped += 1

    def start(self) -> AlertPointWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(10)
        self.session.close()

    def _run(self) -> None:
        while True:
            transition = self._queue.get()
            if transition is None:
                return
            self._write(transition)

    def _write(self, transition: Transition) -> None:
        params = {"db": self.settings.database, "precision": "ms"}
        if self.settings.username:
            params.update(u=self.settings.username, p=self.settings.password or "")
        line = alert_line(transition).encode()
        for attempt in range(self.attempts):
            try:
                response = self.session.post(f"{self.settings.url}/write", params=params,
                                             data=line, timeout=self.settings.timeout_s)
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}"
            else:
                if response.status_code in (200, 204):
                    self.written += 1
                    return
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code == 400:
                    break  # refused for good
            if attempt < self.attempts - 1:
                self._sleep(self.retry_s)
        self.dropped += 1
        log.warning("alert point for %s/%s not stored: %s", transition.yard, transition.kind,
                    error)
