"""What the receive stage hands the writer: one ``Item`` per message, through a ``Handoff``."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from secadero.contract import NodeKey

# The lines of a message that stores nothing (rejected, or a share-group
# announcement): one shared empty list, so "stored nothing" is ``is NO_LINES``.
NO_LINES: list[bytes] = []
# How often the writer looks for new messages while its batch is not full:
# polling costs far less than a condition variable per message.
POLL_S = 0.005


@dataclass(slots=True)
class Item:
    """One received message on its way to the writer."""

    lines: list[bytes]
    mid: int
    qos: int
    # The broker connection it came on (``BrokerLink.generation``): a message
    # id is only PUBACKed on the connection that delivered it.
    generation: int
    node: NodeKey | None
    seq: int | None
    # Stored by another process of the share group (counts for the ack only):
    # seq to last_seq, one item for the whole range.
    peer: bool = False
    last_seq: int | None = None


class Handoff:
    """The queue from the receive stage (paho's thread) to the writer thread.

    A deque, not a ``queue.Queue``: its lock and condition cost ~10 us a
    message (profiled); ``append`` and ``popleft`` are atomic. The writer
    sleeps on an event only while the queue is empty, and the receiver sets
    it only then, so a busy stream costs no system calls.
    """

    def __init__(self) -> None:
        self._items: collections.deque[Item] = collections.deque()
        self._wake = threading.Event()
        self._idle = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> None:
        """From the receiving thread."""
        self._items.append(item)
        if self._idle:
            self._wake.set()

    def wake(self) -> None:
        """Make a waiting ``take`` return now (at stop)."""
        self._wake.set()

    def take(self, max_points: int, flush_interval_s: float) -> list[Item]:
        """From the writer: up to ``max_points`` points, or what came within
        ``flush_interval_s`` of the first; [] after 0.25 s of nothing."""
        pending = self._items
        if not pending:
            self._wake.clear()
            self._idle = True
            if not pending:
                self._wake.wait(0.25)
            self._idle = False
            if not pending:
                return []
        batch: list[Item] = []
        points = 0
        deadline = time.monotonic() + flush_interval_s
        popleft = pending.popleft
        while points < max_points:
            try:
                item = popleft()
            except IndexError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(remaining, POLL_S))
                continue
            batch.append(item)
            points += len(item.lines)
        return batch
