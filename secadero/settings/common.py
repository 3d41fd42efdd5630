"""Sections more than one part reads: the MQTT broker, InfluxDB, and the yards with their
recipients (the ingest, the alerts and the forecasts all work per yard)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from secadero.settings._reader import REQUIRED, Defaults, Section
from secadero.settings.notifiers import CHANNELS

# MQTT over TLS listens here unless the file says otherwise (IANA's secure-mqtt).
MQTT_TLS_PORT = 8883


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883  # MQTT_TLS_PORT when tls = true
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    keepalive_s: int = 30
    client_id: str | None = None  # each role gives its own default


def read_mqtt(section: Section, *, default_client_id: str | None) -> MqttSettings:
    d = Defaults(MqttSettings)
    tls = section.boolean("tls", d.tls)
    settings = MqttSettings(
        host=section.string("host", d.host),
        port=section.port("port", MQTT_TLS_PORT if tls else d.port),
        username=section.string("username", d.username),
        password=section.secret("password", d.password),
        tls=tls,
        ca_file=section.path("ca_file", d.ca_file),
        keepalive_s=section.integer("keepalive_s", d.keepalive_s, minimum=5, maximum=3600),
        client_id=section.string("client_id", default_client_id),
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class InfluxSettings:
    url: str = "http://127.0.0.1:8086"
    database: str = "secadero"
    # 1: the 1.x HTTP API (/write, /query), also served by 2.x and 3.x.
    # 2: native 2.x writes through influxdb-client (token, org, bucket).
    api: int = 1
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)  # required with api = 2
    org: str | None = None  # required with api = 2
    bucket: str | None = None  # required with api = 2
    timeout_s: float = 10.0
    raw_retention_days: int = 90
    hourly_retention_days: int = 3650


def read_influx(section: Section) -> InfluxSettings:
    d = Defaults(InfluxSettings)
    api = section.integer("api", d.api, minimum=1, maximum=2)
    url = section.string("url", d.url)
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        section.problem("url", f"must start with http:// or https://, got {url!r}")
    settings = InfluxSettings(
        url=url.rstrip("/") if isinstance(url, str) else url,
        database=section.string("database", d.database),
        api=api,
        username=section.string("username", d.username),
        password=section.secret("password", d.password),
        token=section.secret("token", d.token, required=api == 2),
        org=section.string("org", d.org if api == 1 else REQUIRED),
        bucket=section.string("bucket", d.bucket if api == 1 else REQUIRED),
        timeout_s=section.number("timeout_s", d.timeout_s, minimum=0.1, maximum=300),
        raw_retention_days=section.integer("raw_retention_days", d.raw_retention_days,
                                           minimum=1),
        hourly_retention_days=section.integer("hourly_retention_days", d.hourly_retention_days,
                                              minimum=1),
    )
    section.finish()
    return settings


# --------------------------------------------------------------------------
# yards and the people who receive their alerts (documented in docs/alerts.md)

ROLES = ("worker", "supervisor", "quality", "technician")
LANGUAGES = ("es", "en")


@dataclass(frozen=True)
class RecipientSettings:
    """One person who receives alerts: role decides which alerts, language the text."""

    name: str
    role: str = "worker"
    language: str = "es"
    phone: str | None = None  # E.164, for SMS (Twilio or the Gammu modem)
    ntfy_topic: str | None = None  # for push
    channels: tuple[str, ...] = ("sms",)


def read_recipient(section: Section) -> RecipientSettings:
    d = Defaults(RecipientSettings)
    channels = section.list_of("channels", d.channels, "a list of channels")
    channel_tuple: tuple[str, ...] = ()
    if isinstance(channels, list):
        for channel in channels:
            if channel not in CHANNELS:
                section.problem("channels", f"{channel!r} is not one of {', '.join(CHANNELS)}")
        channel_tuple = tuple(str(c) for c in channels)
    phone = section.string("phone", d.phone)
    if isinstance(phone, str) and not (phone.startswith("+") and phone[1:].isdigit()
                                       and 8 <= len(phone) <= 16):
        section.problem("phone", f"{phone!r} is not an E.164 number like +51987654321")
    topic = section.string("ntfy_topic", d.ntfy_topic)
    if "sms" in channel_tuple and phone is None:
        section.problem("phone", "is required for the sms channel")
    if "voice" in channel_tuple and phone is None:
        section.problem("phone", "is required for the voice channel")
    if "push" in channel_tuple and topic is None:
        section.problem("ntfy_topic", "is required for the push channel")
    settings = RecipientSettings(
        name=section.string("name", d.name),
        role=section.string("role", d.role, choices=ROLES),
        language=section.string("language", d.language, choices=LANGUAGES),
        phone=phone,
        ntfy_topic=topic,
        channels=channel_tuple,
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class YardSettings:
    id: str
    name: str  # the file's default: the id
    latitude: float
    longitude: float
    timezone: str = "America/Lima"
    recipients: tuple[RecipientSettings, ...] = ()


def read_yard(section: Section) -> YardSettings:
    d = Defaults(YardSettings)
    yard_id = section.identifier("id", d.id)
    settings = YardSettings(
        id=yard_id,
        name=section.string("name", yard_id if isinstance(yard_id, str) else ""),
        latitude=section.number("latitude", d.latitude, minimum=-90, maximum=90),
        longitude=section.number("longitude", d.longitude, minimum=-180, maximum=180),
        timezone=section.timezone("timezone", d.timezone),
        recipients=tuple(read_recipient(r) for r in section.tables("recipients")),
    )
    section.finish()
    return settings
