"""Token buckets per key (a client address, an account name) for login and acknowledge.

A bucket holds up to ``burst`` attempts and gets ``per_min`` back each minute;
an attempt takes one, and with none left it is refused (the API answers 429).
The time comes from the caller (``now``), so tests drive it with their own
clock. In memory: a restart refills every bucket, which costs an attacker a
restart of the server per burst, not worth a database write per request.
Memory is bounded: past ``max_keys`` the least recently used bucket is dropped
(a dropped bucket is a full one again, the same as after a restart).
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class RateLimiter:
    def __init__(self, *, burst: int, per_min: float, max_keys: int = 10_000) -> None:
        if burst < 1 or per_min <= 0:
            raise ValueError("burst must be >= 1 and per_min > 0")
        self.burst, self.per_s, self.max_keys = burst, per_min / 60.0, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time
        self._lock = threading.Lock()

    def allow(self, key: str, now: float) -> bool:
        """Take one attempt from ``key``'s bucket; False if it is empty."""
        with self._lock:
            tokens, then = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - then) * self.per_s)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return allowed
