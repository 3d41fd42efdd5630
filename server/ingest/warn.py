"""A warning logged at most once per interval per key, counting the ones it held back."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("secadero.server.ingest")


class RateLimitedLog:
    """Log a repeated warning at most once per ``interval_s`` per key, counting the rest."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-1e9, 0))
        if now - last < self.interval_s:
            self._last[key] = (last, suppressed + 1)
            return
        self._last[key] = (now, 0)
        if suppressed:
            message += f" ({suppressed} more like it not logged)"
        log.warning(message, *args)
