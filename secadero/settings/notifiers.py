"""The notifier registry: each provider's name, channel, settings section and notifier class.

A provider (ntfy, twilio, twilio_voice, gammu, webhook) is one notifier module in
``server/notifiers/`` plus its entry here: a frozen dataclass for its
``[notifiers.<name>]`` section, the reader that fills it, and where its
notifier class lives. ``NotifierSettings``, ``secadero check-config`` and the
server's ``build_notifiers`` all go through ``PROVIDERS``; adding a provider
touches nothing else. (A new *channel* also needs an address in
``RecipientSettings``: phone for sms and voice, ntfy_topic for push.)

The notifier class is named by its import path and imported only when the
server builds its notifiers, so reading a config (on a node too) never imports
``requests``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secadero.settings._reader import Defaults, Section

# The ways a message reaches a person, in the order the recipients' check lists them.
# The dispatcher runs one worker per channel.
CHANNELS = ("sms", "push", "webhook", "voice")


@dataclass(frozen=True)
class Provider:
    """One notifier provider, as the registry knows it."""

    name: str  # the section [notifiers.<name>] and the notifier's ``name``
    channel: str  # one of CHANNELS
    settings: type  # the section's frozen dataclass
    read: Callable[[Section], Any]  # fills ``settings`` from the section
    # "module:Class": the notifier, called with the settings; imported only when built.
    notifier: str


# --------------------------------------------------------------------------
# the providers' sections


@dataclass(frozen=True)
class NtfySettings:
    url: str = "https://ntfy.sh"
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0


def read_ntfy(section: Section) -> NtfySettings:
    d = Defaults(NtfySettings)
    settings = NtfySettings(url=str(section.string("url", d.url)).rstrip("/"),
                            token=section.secret("token", d.token),
                            timeout_s=section.number("timeout_s", d.timeout_s, minimum=0.1))
    section.finish()
    return settings


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str = field(repr=False)
    from_number: str
    api_url: str = "https://api.twilio.com"
    # The public URL Twilio calls back (status and inbound); also what signatures cover.
    callback_base_url: str | None = None
    timeout_s: float = 10.0


def read_twilio(section: Section) -> TwilioSettings:
    d = Defaults(TwilioSettings)
    settings = TwilioSettings(
        account_sid=section.string("account_sid", d.account_sid),
        auth_token=section.secret("auth_token", d.auth_token),
        from_number=section.string("from_number", d.from_number),
        api_url=str(section.string("api_url", d.api_url)).rstrip("/"),
        callback_base_url=section.string("callback_base_url", d.callback_base_url),
        timeout_s=section.number("timeout_s", d.timeout_s, minimum=0.1),
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class TwilioVoiceSettings:
    """Twilio Programmable Voice: the ladder's last step, a call that reads the alert."""

    account_sid: str
    auth_token: str = field(repr=False)
    from_number: str  # a Twilio number able to place calls
    api_url: str = "https://api.twilio.com"
    # The <Say> language and how many times the message is read (a worker at the trays
    # may pick up late).
    language: str = "es-MX"
    loop: int = 2
    timeout_s: float = 10.0
    # The public URL Twilio reports each call's end to (POST /api/twilio/call-status,
    # signed): without it nobody knows whether a call was answered, and an unanswered
    # one is not placed again.
    callback_base_url: str | None = None
    # Twilio's answering-machine detection (MachineDetection=Enable, charged per call): a
    # voicemail that picks up then counts as unanswered, not as "completed". The message
    # starts after the detection, a few seconds late.
    machine_detection: bool = False


def read_twilio_voice(section: Section) -> TwilioVoiceSettings:
    d = Defaults(TwilioVoiceSettings)
    settings = TwilioVoiceSettings(
        account_sid=section.string("account_sid", d.account_sid),
        auth_token=section.secret("auth_token", d.auth_token),
        from_number=section.string("from_number", d.from_number),
        api_url=str(section.string("api_url", d.api_url)).rstrip("/"),
        language=section.string("language", d.language),
        loop=section.integer("loop", d.loop, minimum=1, maximum=5),
        timeout_s=section.number("timeout_s", d.timeout_s, minimum=0.1),
        callback_base_url=section.string("callback_base_url", d.callback_base_url),
        machine_detection=section.boolean("machine_detection", d.machine_detection),
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class GammuSettings:
    """Gammu SMSD with a USB GSM modem: SMS without the internet."""

    smsdrc: Path = Path("/etc/gammu-smsdrc")
    inject_command: str = "gammu-smsd-inject"
    # False: fold á í ó ú to GSM-7 so a message stays one 160-character segment.
    unicode: bool = False
    timeout_s: float = 20.0
    # The modem watcher (server/notifiers/gammu_monitor.py): how often it reads
    # gammu-smsd-monitor, and how long a problem must last before the technician hears
    # (longer than the smsdrc's statusfrequency: a daemon just started reads signal 0).
    monitor_command: str = "gammu-smsd-monitor"
    monitor_interval_s: float = 60.0
    monitor_grace_s: float = 300.0


def read_gammu(section: Section) -> GammuSettings:
    d = Defaults(GammuSettings)
    settings = GammuSettings(smsdrc=section.path("smsdrc", d.smsdrc),
                             inject_command=section.string("inject_command", d.inject_command),
                             unicode=section.boolean("unicode", d.unicode),
                             timeout_s=section.number("timeout_s", d.timeout_s, minimum=0.1),
                             monitor_command=section.string("monitor_command",
                                                            d.monitor_command),
                             monitor_interval_s=section.number(
                                 "monitor_interval_s", d.monitor_interval_s, minimum=1),
                             monitor_grace_s=section.number("monitor_grace_s",
                                                            d.monitor_grace_s, minimum=0))
    section.finish()
    return settings


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0


def read_webhook(section: Section) -> WebhookSettings:
    d = Defaults(WebhookSettings)
    settings = WebhookSettings(url=section.string("url", d.url),
                               secret=section.secret("secret", d.secret),
                               timeout_s=section.number("timeout_s", d.timeout_s, minimum=0.1))
    section.finish()
    return settings


# --------------------------------------------------------------------------
# the registry

_MODULE = "secadero.server.notifiers"

# In the order their sections are read (and their problems reported).
PROVIDERS: dict[str, Provider] = {provider.name: provider for provider in (
    Provider("ntfy", "push", NtfySettings, read_ntfy, f"{_MODULE}.ntfy:NtfyNotifier"),
    Provider("twilio", "sms", TwilioSettings, read_twilio, f"{_MODULE}.twilio:TwilioNotifier"),
    Provider("twilio_voice", "voice", TwilioVoiceSettings, read_twilio_voice,
             f"{_MODULE}.twilio_voice:TwilioVoiceNotifier"),
    Provider("gammu", "sms", GammuSettings, read_gammu, f"{_MODULE}.gammu:GammuNotifier"),
    Provider("webhook", "webhook", WebhookSettings, read_webhook,
             f"{_MODULE}.webhook:WebhookNotifier"),
)}


def providers_of(channel: str) -> tuple[str, ...]:
    """The providers that can carry ``channel``, in registry order."""
    return tuple(name for name, p in PROVIDERS.items() if p.channel == channel)


@dataclass(frozen=True)
class NotifierSettings:
    """Which providers are configured and the SMS route, tried in order.

    ``configured`` holds ``(provider name, its settings)`` for each
    ``[notifiers.<name>]`` section present, in registry order. A provider's
    settings are also an attribute: ``settings.notifiers.twilio`` is the
    ``TwilioSettings``, or ``None`` when that section is absent (provider off).
    """

    configured: tuple[tuple[str, Any], ...] = ()
    sms_route: tuple[str, ...] = ("twilio", "gammu")
    attempts: int = 3
    backoff_s: float = 2.0

    def get(self, provider: str) -> Any:
        """The provider's settings, or ``None`` when it is not configured."""
        if provider not in PROVIDERS:
            raise KeyError(f"no notifier provider {provider!r}")
        return dict(self.configured).get(provider)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not fields: ``.ntfy``, ``.twilio`` ...
        if name in PROVIDERS:
            return self.get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


def read_notifiers(section: Section) -> NotifierSettings:
    d = Defaults(NotifierSettings)
    configured = tuple((name, provider.read(section.table(name)))
                       for name, provider in PROVIDERS.items() if section.has(name))
    sms_providers = providers_of("sms")
    route = section.list_of("sms_route", d.sms_route, "a list of notifiers")
    if isinstance(route, list):
        for name in route:
            if name not in sms_providers:
                section.problem("sms_route", f"{name!r} is not {' or '.join(sms_providers)}")
    settings = NotifierSettings(
        configured=configured,
        sms_route=tuple(route) if isinstance(route, list) else d.sms_route,
        attempts=section.integer("attempts", d.attempts, minimum=1, maximum=20),
        backoff_s=section.number("backoff_s", d.backoff_s, minimum=0),
    )
    section.finish()
    return settings
