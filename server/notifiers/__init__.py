"""Notifiers: one module per provider (ntfy, twilio, gammu, webhook), each isolated.

A notifier turns one ``Outgoing`` message into one request to its service
and raises ``NotifierError`` (retryable or not) when that fails; it knows
nothing about episodes or the database. ``dispatch.Dispatcher`` routes,
retries, falls back (Twilio -> Gammu for SMS) and writes the log.

The registry is ``secadero.settings.notifiers.PROVIDERS``: each provider's
name, channel, settings section and notifier class. A new provider is a new
module here plus its entry there; ``build_notifiers`` and ``CHANNELS`` (one
dispatcher worker each) follow from it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from secadero.errors import SecaderoError
from secadero.settings.notifiers import CHANNELS, PROVIDERS, NotifierSettings, Provider

__all__ = ["CHANNELS", "Notifier", "NotifierError", "Outgoing", "build_notifiers",
           "notifier_class"]


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


def notifier_class(provider: Provider) -> type:
    """The provider's notifier class, imported now (its module may import ``requests``)."""
    module_name, _, class_name = provider.notifier.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_notifiers(settings: NotifierSettings) -> list[Notifier]:
    """One notifier per configured ``[notifiers.<name>]`` section, in registry order."""
    return [notifier_class(PROVIDERS[name])(provider_settings)
            for name, provider_settings in settings.configured]
