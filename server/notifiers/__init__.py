"""Notifiers: one module per channel (ntfy, twilio, gammu, webhook), each isolated.

A notifier turns one ``Outgoing`` message into one request to its service
and raises ``NotifierError`` (retryable or not) when that fails; it knows
nothing about episodes or the database. ``dispatch.Dispatcher`` routes,
retries, falls back (Twilio -> Gammu for SMS) and writes the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from secadero.errors import SecaderoError


class NotifierError(SecaderoError):
    """A message did not leave. ``retryable``: the same request may succeed later."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to one address, as a notifier needs it."""

    notification_id: int
    episode_id: int
    yard: str
    recipient: str
    address: str  # phone number, ntfy topic, or recipient name (webhook)
    title: str
    body: str
    severity: str  # info, warning, critical
    kind: str  # message template: rain_forecast, rain_now, all_clear ...
    event: str  # raise, repeat, escalate, upgrade, all_clear, recovered
    language: str = "es"
    ack_url: str | None = None  # signed, expiring link that acknowledges the episode


class Notifier(Protocol):
    """What the dispatcher needs from a notifier module."""

    name: str
    channel: str  # sms, push, webhook

    def send(self, message: Outgoing) -> str | None:
        """Send; return the provider's message id if it gives one. Raise NotifierError."""

    def close(self) -> None: ...
