"""The notification record and the log the dispatcher keeps it in.

The dispatcher needs very little from a database: it updates a record after
each delivery (``sent``/``failed``, provider, error) and lists the ones
still ``pending`` (after a restart, or an act step that failed).
``NotificationLog`` says exactly that, so the dispatcher depends on this
small interface and not on the alert store;
``secadero.server.alerts.store.AlertStore`` implements it (and decides when a
record is created: in the same transaction as the episode change that
decided it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass
class Notification:
    """One message to one recipient on one channel, and what became of it."""

    episode_id: int
    yard: str
    created_at: float
    event: str
    kind: str
    recipient: str
    role: str
    channel: str
    language: str
    address: str
    title: str
    body: str
    severity: str
    status: str = "pending"  # pending, sent, failed
    attempts: int = 0
    provider: str | None = None
    provider_id: str | None = None
    error: str | None = None
    sent_at: float | None = None
    delivery: str | None = None
    id: int | None = None


@runtime_checkable
class NotificationLog(Protocol):
    """What the dispatcher reads and writes: the outcome of each notification."""

    def update_notification(self, note: Notification) -> None:
        """Store the record's current status, attempts, provider and error (by ``note.id``)."""

    def notifications(self, *, status: str | None = None) -> list[Notification]:
        """The records with this status (all if None), oldest first."""
