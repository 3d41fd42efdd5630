"""Settings: one TOML file per process, validated at start-up into frozen dataclasses.

Every problem is collected (not just the first) and reported as
``file: key: reason`` so a technician fixes a config in one pass. Secrets are
never written in the file: a key ``password_env`` names an environment
variable, ``password_file`` a file (mode 0600) holding the secret.

The commented samples are ``server/server.example.toml`` and
``edge/node.example.toml``.

Each subsystem adds its own section: a frozen dataclass here, a ``_read_*``
function that fills it from a ``Section``, and one line in the loader.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from secadero.contract import is_valid_id
from secadero.errors import ConfigError

T = TypeVar("T")
_MISSING = object()


class Section:
    """A view of one TOML table that reads typed keys and records problems.

    Reading never raises: a bad or missing key records ``file: key: reason``
    and returns the default, so one pass finds every problem.
    """

    def __init__(self, data: Mapping[str, Any], *, path: str, problems: list[str], file: str,
                 base_dir: Path, env: Mapping[str, str]) -> None:
        self._data = data
        self._path = path
        self._problems = problems
        self._file = file
        self._seen: set[str] = set()
        self.base_dir = base_dir
        self.env = env

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def problem(self, name: str, reason: str) -> None:
        self._problems.append(f"{self._file}: {self.key(name)}: {reason}")

    def has(self, name: str) -> bool:
        return name in self._data

    def _get(self, name: str, default: Any, kinds: tuple[type, ...], kind_name: str) -> Any:
        self._seen.add(name)
        if name not in self._data:
            if default is _MISSING:
                self.problem(name, "is required")
                return None
            return default
        value = self._data[name]
        if isinstance(value, bool) and bool not in kinds:
            self.problem(name, f"must be {kind_name}, got a boolean")
            return None if default is _MISSING else default
        if not isinstance(value, kinds):
            self.problem(name, f"must be {kind_name}, got {type(value).__name__} {value!r}")
            return None if default is _MISSING else default
        return value

    def string(self, name: str, default: Any = _MISSING, *,
               choices: tuple[str, ...] | None = None) -> Any:
        value = self._get(name, default, (str,), "a string")
        if value is not None and choices is not None and value not in choices:
            self.problem(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def identifier(self, name: str, default: Any = _MISSING) -> Any:
        value = self.string(name, default)
        if isinstance(value, str) and not is_valid_id(value):
            self.problem(name, f"{value!r} is not an id: 1-32 of a-z, 0-9 and '-', "
                               "starting with a letter or digit")
        return value

    def number(self, name: str, default: Any = _MISSING, *, minimum: float | None = None,
               maximum: float | None = None) -> Any:
        value = self._get(name, default, (int, float), "a number")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if minimum is not None and value < minimum:
                self.problem(name, f"must be at least {minimum:g}, got {value:g}")
            if maximum is not None and value > maximum:
                self.problem(name, f"must be at most {maximum:g}, got {value:g}")
            return float(value)
        return value

    def integer(self, name: str, default: Any = _MISSING, *, minimum: int | None = None,
                maximum: int | None = None) -> Any:
        value = self._get(name, default, (int,), "an integer")
        if isinstance(value, int):
            if minimum is not None and value < minimum:
                self.problem(name, f"must be at least {minimum}, got {value}")
            if maximum is not None and value > maximum:
                self.problem(name, f"must be at most {maximum}, got {value}")
        return value

    def port(self, name: str, default: Any = _MISSING) -> Any:
        return self.integer(name, default, minimum=1, maximum=65535)

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        return self._get(name, default, (bool,), "true or false")

    def path(self, name: str, default: Any = _MISSING) -> Path | None:
        value = self.string(name, default)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def timezone(self, name: str, default: str) -> str:
        value = self.string(name, default)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            self.problem(name, f"{value!r} is not a tz-database time zone (e.g. America/Lima)")
        return value

    def secret(self, name: str, *, required: bool = False) -> str | None:
        """A secret from ``<name>_env`` (environment variable) or ``<name>_file``."""
        self._seen.add(name)
        if name in self._data:
            self.problem(name, f"secrets do not belong in the file: use {name}_env or "
                               f"{name}_file")
        env_name = self._get(f"{name}_env", None, (str,), "a string")
        file_path = self.path(f"{name}_file", None)
        if env_name and file_path:
            self.problem(name, f"give {name}_env or {name}_file, not both")
            return None
        if env_name:
            if env_name not in self.env:
                self.problem(f"{name}_env", f"environment variable {env_name} is not set")
                return None
            return self.env[env_name]
        if file_path:
            try:
                return file_path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problem(f"{name}_file", f"cannot read {file_path}: {exc.strerror}")
                return None
        if required:
            self.problem(name, f"is required: set {name}_env or {name}_file")
        return None

    def table(self, name: str, *, required: bool = False) -> Section:
        self._seen.add(name)
        raw = self._data.get(name, {})
        if name not in self._data and required:
            self.problem(name, "section is required")
        if not isinstance(raw, dict):
            self.problem(name, "must be a table")
            raw = {}
        return self._child(raw, self.key(name))

    def tables(self, name: str) -> list[Section]:
        """An array of tables (``[[name]]``)."""
        self._seen.add(name)
        raw = self._data.get(name, [])
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            self.problem(name, "must be an array of tables ([[" + name + "]])")
            return []
        return [self._child(item, f"{self.key(name)}[{index}]") for index, item in enumerate(raw)]

    def _child(self, data: Mapping[str, Any], path: str) -> Section:
        return Section(data, path=path, problems=self._problems, file=self._file,
                       base_dir=self.base_dir, env=self.env)

    def finish(self) -> None:
        """Report keys nobody read: almost always a typo that would silently do nothing."""
        for name in self._data:
            if name not in self._seen:
                self.problem(name, "unknown key")


# --------------------------------------------------------------------------
# shared sections


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    keepalive_s: int = 30
    client_id: str | None = None


def _read_mqtt(section: Section, *, default_client_id: str | None) -> MqttSettings:
    tls = section.boolean("tls", False)
    settings = MqttSettings(
        host=section.string("host", "127.0.0.1"),
        port=section.port("port", 8883 if tls else 1883),
        username=section.string("username", None),
        password=section.secret("password"),
        tls=tls,
        ca_file=section.path("ca_file", None),
        keepalive_s=section.integer("keepalive_s", 30, minimum=5, maximum=3600),
        client_id=section.string("client_id", default_client_id),
    )
    section.finish()
    return settings


# --------------------------------------------------------------------------
# server


@dataclass(frozen=True)
class InfluxSettings:
    url: str = "http://127.0.0.1:8086"
    database: str = "secadero"
    # 1: the 1.x HTTP API (/write, /query), also served by 2.x and 3.x.
    # 2: native 2.x writes through influxdb-client (token, org, bucket).
    api: int = 1
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    org: str | None = None
    bucket: str | None = None
    timeout_s: float = 10.0
    raw_retention_days: int = 90
    hourly_retention_days: int = 3650


def _read_influx(section: Section) -> InfluxSettings:
    api = section.integer("api", 1, minimum=1, maximum=2)
    url = section.string("url", "http://127.0.0.1:8086")
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        section.problem("url", f"must start with http:// or https://, got {url!r}")
    settings = InfluxSettings(
        url=url.rstrip("/") if isinstance(url, str) else url,
        database=section.string("database", "secadero"),
        api=api,
        username=section.string("username", None),
        password=section.secret("password"),
        token=section.secret("token", required=api == 2),
        org=section.string("org", None if api == 1 else _MISSING),
        bucket=section.string("bucket", None if api == 1 else _MISSING),
        timeout_s=section.number("timeout_s", 10.0, minimum=0.1, maximum=300),
        raw_retention_days=section.integer("raw_retention_days", 90, minimum=1),
        hourly_retention_days=section.integer("hourly_retention_days", 3650, minimum=1),
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class IngestSettings:
    batch_size: int = 5000
    flush_interval_s: float = 0.2
    # Also the MQTT 5 Receive Maximum: ~1.5 KB of memory per message waiting.
    queue_max: int = 10_000
    # How old a measurement may be and still be stored: the nodes' outbox horizon.
    horizon_days: float = 30.0
    # A node silent for longer than this is marked offline.
    offline_after_s: float = 120.0
    # A gap in a node's seq that stays open this long is counted as lost and skipped.
    gap_timeout_s: float = 600.0
    http_host: str = "127.0.0.1"
    http_port: int = 9108
    session_expiry_s: int = 7 * 24 * 3600
    # MQTT 5 shared subscription group ($share/GROUP/...) when several ingest
    # processes split the load; empty = a plain subscription.
    share_group: str = ""
    # Per-node acknowledged seq, kept across restarts (relative to the config file).
    state_file: Path | None = None
    # Points InfluxDB refused for good, one JSON line each with the reason.
    set_aside_file: Path | None = None
    # /healthz turns unhealthy when InfluxDB or the broker is unreachable this long.
    unhealthy_after_s: float = 60.0
    # InfluxDB 1.x: hours of readings that came too late for the continuous
    # queries are downsampled again at most this often (server/downsample.py) ...
    downsample_interval_s: float = 60.0
    # ... and wait in this file meanwhile, so a restart does not forget them.
    downsample_pending_file: Path | None = None


def _read_ingest(section: Section) -> IngestSettings:
    settings = IngestSettings(
        batch_size=section.integer("batch_size", 5000, minimum=1, maximum=100_000),
        flush_interval_s=section.number("flush_interval_s", 0.2, minimum=0.01, maximum=60),
        queue_max=section.integer("queue_max", 10_000, minimum=1, maximum=65535),
        horizon_days=section.number("horizon_days", 30.0, minimum=0.01),
        offline_after_s=section.number("offline_after_s", 120.0, minimum=1),
        gap_timeout_s=section.number("gap_timeout_s", 600.0, minimum=1),
        http_host=section.string("http_host", "127.0.0.1"),
        http_port=section.integer("http_port", 9108, minimum=0, maximum=65535),
        session_expiry_s=section.integer("session_expiry_s", 7 * 24 * 3600, minimum=0),
        share_group=section.string("share_group", ""),
        state_file=section.path("state_file", "var/ingest-state.json"),
        set_aside_file=section.path("set_aside_file", "var/set-aside.jsonl"),
        unhealthy_after_s=section.number("unhealthy_after_s", 60.0, minimum=1),
        downsample_interval_s=section.number("downsample_interval_s", 60.0, minimum=0.1,
                                             maximum=3600),
        downsample_pending_file=section.path("downsample_pending_file",
                                             "var/downsample-pending.json"),
    )
    section.finish()
    return settings


# --------------------------------------------------------------------------
# rain alerts, forecasts, recipients and notifiers (server/alerts, server/forecast,
# server/notifiers; documented in docs/alerts.md)

ROLES = ("worker", "supervisor", "quality", "technician")
CHANNELS = ("sms", "push", "webhook")
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


def _read_recipient(section: Section) -> RecipientSettings:
    channels = section._get("channels", ["sms"], (list,), "a list of channels")
    channel_tuple: tuple[str, ...] = ()
    if isinstance(channels, list):
        for channel in channels:
            if channel not in CHANNELS:
                section.problem("channels", f"{channel!r} is not one of {', '.join(CHANNELS)}")
        channel_tuple = tuple(str(c) for c in channels)
    phone = section.string("phone", None)
    if isinstance(phone, str) and not (phone.startswith("+") and phone[1:].isdigit()
                                       and 8 <= len(phone) <= 16):
        section.problem("phone", f"{phone!r} is not an E.164 number like +51987654321")
    topic = section.string("ntfy_topic", None)
    if "sms" in channel_tuple and phone is None:
        section.problem("phone", "is required for the sms channel")
    if "push" in channel_tuple and topic is None:
        section.problem("ntfy_topic", "is required for the push channel")
    settings = RecipientSettings(
        name=section.string("name"),
        role=section.string("role", "worker", choices=ROLES),
        language=section.string("language", "es", choices=LANGUAGES),
        phone=phone,
        ntfy_topic=topic,
        channels=channel_tuple,
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class AlertSettings:
    """Thresholds and timing of the rain-alert rules and the episode lifecycle."""

    database: Path = Path("var/alerts.sqlite3")
    evaluate_interval_s: float = 30.0
    # rain_forecast: raise when, within the look-ahead, the probability or the amount
    # reaches these; stay raised until below the lower (clear) values: hysteresis.
    lookahead_min: float = 90.0
    raise_prob_pct: float = 60.0
    clear_prob_pct: float = 30.0
    raise_mm_per_h: float = 0.5
    clear_mm_per_h: float = 0.2
    # The all-clear must hold this long without a break before the episode ends.
    min_hold_min: float = 30.0
    # rain_now: a bucket tip this recent counts as raining.
    tip_window_min: float = 10.0
    # trays_still_out: escalate when a tray is still extended this long after the raise.
    trays_out_after_min: float = 10.0
    # all_clear: no rain forecast for this long ahead and plates dry for this long.
    all_clear_hours: float = 2.0
    all_clear_dry_min: float = 30.0
    # Drying hours, local time of the yard: outside them only a tray still out is news.
    drying_start: str = "07:00"
    drying_end: str = "18:00"
    repeat_interval_min: float = 15.0
    max_repeats: int = 3
    escalation: tuple[str, ...] = ("worker", "supervisor", "quality")
    # humidity_surge
    humidity_rise_pct: float = 15.0
    humidity_window_min: float = 30.0
    dew_point_spread_c: float = 1.5
    humidity_min_nodes: int = 2
    # to the technician
    node_silent_min: float = 10.0
    forecast_stale_min: float = 90.0
    # Older forecasts are not used at all (the rules fall back on the sensors).
    forecast_max_age_h: float = 6.0
    # HTTP API and acknowledge links
    api_host: str = "127.0.0.1"
    api_port: int = 9110
    public_url: str = "http://127.0.0.1:9110"
    ack_secret: str | None = field(default=None, repr=False)
    ack_token_ttl_h: float = 12.0


def _hhmm(section: Section, name: str, default: str) -> str:
    value = section.string(name, default)
    try:
        hours, minutes = (int(part) for part in str(value).split(":"))
        if not (0 <= hours <= 24 and 0 <= minutes < 60):
            raise ValueError
    except ValueError:
        section.problem(name, f"must be a local time HH:MM, got {value!r}")
        return default
    return value


def _read_alerts(section: Section) -> AlertSettings:
    d = AlertSettings()
    escalation = section._get("escalation", list(d.escalation), (list,), "a list of roles")
    if isinstance(escalation, list):
        for role in escalation:
            if role not in ROLES:
                section.problem("escalation", f"{role!r} is not one of {', '.join(ROLES)}")
    raise_prob = section.number("raise_prob_pct", d.raise_prob_pct, minimum=1, maximum=100)
    clear_prob = section.number("clear_prob_pct", d.clear_prob_pct, minimum=0, maximum=100)
    if isinstance(raise_prob, float) and isinstance(clear_prob, float) and clear_prob > raise_prob:
        section.problem("clear_prob_pct", "must not be above raise_prob_pct (hysteresis)")
    settings = AlertSettings(
        database=section.path("database", str(d.database)),
        evaluate_interval_s=section.number("evaluate_interval_s", d.evaluate_interval_s,
                                           minimum=0.1, maximum=3600),
        lookahead_min=section.number("lookahead_min", d.lookahead_min, minimum=10, maximum=720),
        raise_prob_pct=raise_prob,
        clear_prob_pct=clear_prob,
        raise_mm_per_h=section.number("raise_mm_per_h", d.raise_mm_per_h, minimum=0.01),
        clear_mm_per_h=section.number("clear_mm_per_h", d.clear_mm_per_h, minimum=0),
        min_hold_min=section.number("min_hold_min", d.min_hold_min, minimum=0),
        tip_window_min=section.number("tip_window_min", d.tip_window_min, minimum=1),
        trays_out_after_min=section.number("trays_out_after_min", d.trays_out_after_min,
                                           minimum=0),
        all_clear_hours=section.number("all_clear_hours", d.all_clear_hours, minimum=0,
                                       maximum=48),
        all_clear_dry_min=section.number("all_clear_dry_min", d.all_clear_dry_min, minimum=0),
        drying_start=_hhmm(section, "drying_start", d.drying_start),
        drying_end=_hhmm(section, "drying_end", d.drying_end),
        repeat_interval_min=section.number("repeat_interval_min", d.repeat_interval_min,
                                           minimum=1),
        max_repeats=section.integer("max_repeats", d.max_repeats, minimum=0, maximum=50),
        escalation=tuple(escalation) if isinstance(escalation, list) else d.escalation,
        humidity_rise_pct=section.number("humidity_rise_pct", d.humidity_rise_pct, minimum=1),
        humidity_window_min=section.number("humidity_window_min", d.humidity_window_min,
                                           minimum=1),
        dew_point_spread_c=section.number("dew_point_spread_c", d.dew_point_spread_c, minimum=0),
        humidity_min_nodes=section.integer("humidity_min_nodes", d.humidity_min_nodes, minimum=1),
        node_silent_min=section.number("node_silent_min", d.node_silent_min, minimum=1),
        forecast_stale_min=section.number("forecast_stale_min", d.forecast_stale_min, minimum=1),
        forecast_max_age_h=section.number("forecast_max_age_h", d.forecast_max_age_h,
                                          minimum=0.1),
        api_host=section.string("api_host", d.api_host),
        api_port=section.integer("api_port", d.api_port, minimum=0, maximum=65535),
        public_url=str(section.string("public_url", d.public_url)).rstrip("/"),
        ack_secret=section.secret("ack_secret"),
        ack_token_ttl_h=section.number("ack_token_ttl_h", d.ack_token_ttl_h, minimum=0.1),
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class ForecastSettings:
    """Where forecasts come from and how often; base URLs point at a self-hosted server too.

    Without a ``[forecast]`` section the server fetches none (providers = ()).
    """

    providers: tuple[str, ...] = ("open-meteo",)
    open_meteo_url: str = "https://api.open-meteo.com/v1/forecast"
    met_norway_url: str = "https://api.met.no/weatherapi/locationforecast/2.0/compact"
    # MET Norway answers 403 to a missing or generic User-Agent.
    user_agent: str = "secadero/0.1 github.com/secadero"
    poll_interval_s: float = 900.0
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 2.0


def _read_forecast(section: Section) -> ForecastSettings:
    d = ForecastSettings()
    providers = section._get("providers", list(d.providers), (list,), "a list of providers")
    if isinstance(providers, list):
        for provider in providers:
            if provider not in ("open-meteo", "met-norway"):
                section.problem("providers", f"{provider!r} is not open-meteo or met-norway")
    settings = ForecastSettings(
        providers=tuple(providers) if isinstance(providers, list) else d.providers,
        open_meteo_url=section.string("open_meteo_url", d.open_meteo_url),
        met_norway_url=section.string("met_norway_url", d.met_norway_url),
        user_agent=section.string("user_agent", d.user_agent),
        poll_interval_s=section.number("poll_interval_s", d.poll_interval_s, minimum=60),
        timeout_s=section.number("timeout_s", d.timeout_s, minimum=0.1, maximum=120),
        retries=section.integer("retries", d.retries, minimum=0, maximum=10),
        backoff_s=section.number("backoff_s", d.backoff_s, minimum=0),
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class NtfySettings:
    url: str = "https://ntfy.sh"
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str = ""
    auth_token: str | None = field(default=None, repr=False)
    from_number: str = ""
    api_url: str = "https://api.twilio.com"
    # The public URL Twilio calls back (status and inbound); also what signatures cover.
    callback_base_url: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True)
class GammuSettings:
    """Gammu SMSD with a USB GSM modem: SMS without the internet."""

    smsdrc: Path = Path("/etc/gammu-smsdrc")
    inject_command: str = "gammu-smsd-inject"
    # False: fold á í ó ú to GSM-7 so a message stays one 160-character segment.
    unicode: bool = False
    timeout_s: float = 20.0


@dataclass(frozen=True)
class WebhookSettings:
    url: str = ""
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class NotifierSettings:
    """Which notifiers are configured (None = off) and the SMS route, tried in order."""

    ntfy: NtfySettings | None = None
    twilio: TwilioSettings | None = None
    gammu: GammuSettings | None = None
    webhook: WebhookSettings | None = None
    sms_route: tuple[str, ...] = ("twilio", "gammu")
    attempts: int = 3
    backoff_s: float = 2.0


def _read_notifiers(section: Section) -> NotifierSettings:
    def sub(name: str) -> Section | None:
        return section.table(name) if section.has(name) else None

    ntfy = twilio = gammu = webhook = None
    if (s := sub("ntfy")) is not None:
        ntfy = NtfySettings(url=str(s.string("url", "https://ntfy.sh")).rstrip("/"),
                            token=s.secret("token"),
                            timeout_s=s.number("timeout_s", 10.0, minimum=0.1))
        s.finish()
    if (s := sub("twilio")) is not None:
        twilio = TwilioSettings(
            account_sid=s.string("account_sid"),
            auth_token=s.secret("auth_token", required=True),
            from_number=s.string("from_number"),
            api_url=str(s.string("api_url", "https://api.twilio.com")).rstrip("/"),
            callback_base_url=s.string("callback_base_url", None),
            timeout_s=s.number("timeout_s", 10.0, minimum=0.1),
        )
        s.finish()
    if (s := sub("gammu")) is not None:
        gammu = GammuSettings(smsdrc=s.path("smsdrc", "/etc/gammu-smsdrc"),
                              inject_command=s.string("inject_command", "gammu-smsd-inject"),
                              unicode=s.boolean("unicode", False),
                              timeout_s=s.number("timeout_s", 20.0, minimum=0.1))
        s.finish()
    if (s := sub("webhook")) is not None:
        webhook = WebhookSettings(url=s.string("url"), secret=s.secret("secret"),
                                  timeout_s=s.number("timeout_s", 10.0, minimum=0.1))
        s.finish()
    route = section._get("sms_route", ["twilio", "gammu"], (list,), "a list of notifiers")
    if isinstance(route, list):
        for name in route:
            if name not in ("twilio", "gammu"):
                section.problem("sms_route", f"{name!r} is not twilio or gammu")
    settings = NotifierSettings(
        ntfy=ntfy, twilio=twilio, gammu=gammu, webhook=webhook,
        sms_route=tuple(route) if isinstance(route, list) else ("twilio", "gammu"),
        attempts=section.integer("attempts", 3, minimum=1, maximum=20),
        backoff_s=section.number("backoff_s", 2.0, minimum=0),
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class YardSettings:
    id: str
    name: str
    latitude: float
    longitude: float
    timezone: str = "America/Lima"
    recipients: tuple[RecipientSettings, ...] = ()


def _read_yard(section: Section) -> YardSettings:
    yard_id = section.identifier("id")
    settings = YardSettings(
        id=yard_id,
        name=section.string("name", yard_id if isinstance(yard_id, str) else ""),
        latitude=section.number("latitude", minimum=-90, maximum=90),
        longitude=section.number("longitude", minimum=-180, maximum=180),
        timezone=section.timezone("timezone", "America/Lima"),
        recipients=tuple(_read_recipient(r) for r in section.tables("recipients")),
    )
    section.finish()
    return settings


@dataclass(frozen=True)
class ServerSettings:
    source: Path
    mqtt: MqttSettings
    influxdb: InfluxSettings
    ingest: IngestSettings
    yards: tuple[YardSettings, ...]
    alerts: AlertSettings = AlertSettings()
    forecast: ForecastSettings = ForecastSettings()
    notifiers: NotifierSettings = NotifierSettings()


def _read_server(root: Section) -> ServerSettings:
    yards = tuple(_read_yard(s) for s in root.tables("yards"))
    seen: set[str] = set()
    for index, yard in enumerate(yards):
        if yard.id in seen:
            root.problem(f"yards[{index}].id", f"{yard.id!r} appears twice")
        seen.add(yard.id)
    return ServerSettings(
        source=root.base_dir,
        mqtt=_read_mqtt(root.table("mqtt"), default_client_id="secadero-ingest"),
        influxdb=_read_influx(root.table("influxdb")),
        ingest=_read_ingest(root.table("ingest")),
        yards=yards,
        alerts=_read_alerts(root.table("alerts")),
        # No [forecast] section: no forecasts (and no request to the internet).
        forecast=(_read_forecast(root.table("forecast")) if root.has("forecast")
                  else ForecastSettings(providers=())),
        notifiers=_read_notifiers(root.table("notifiers")),
    )


# --------------------------------------------------------------------------
# node


@dataclass(frozen=True)
class OutboxSettings:
    path: Path
    max_bytes: int = 64 * 1024 * 1024
    resend_after_s: float = 30.0


# Tray limit switches when [hardware.trays] does not name them: (sheltered end, open end).
DEFAULT_TRAY_PINS: tuple[tuple[int, int], ...] = ((5, 6), (12, 13), (16, 19), (20, 21))


@dataclass(frozen=True)
class HardwareSettings:
    """The node's wiring (BCM GPIO numbers); docs/hardware.md shows each connection.

    The simulated yard uses the same numbers on gpiozero's mock pins.
    """

    climate_sensor: str = "dht22"  # "dht22", "sht31" or "none"
    dht_pin: int = 4
    dht_power_pin: int | None = None
    sht31_address: int = 0x44
    i2c_bus: int = 1
    rain_plate_pin: int = 17
    rain_plate_active_low: bool = True
    wet_after_s: float = 0.05
    dry_after_s: float = 30.0
    gauge_pin: int | None = 27
    mm_per_tip: float = 0.2794
    beacon_pin: int | None = 23
    beacon_active_high: bool = True
    buzzer_pin: int | None = 24
    silence_pin: int | None = 25
    # (tray, sheltered-end switch, open-end switch or None)
    tray_pins: tuple[tuple[str, int, int | None], ...] = ()


def _read_hardware(section: Section, trays: tuple[str, ...]) -> HardwareSettings:
    def pin(name: str, default: int | None) -> int | None:
        return section.integer(name, default, minimum=0, maximum=27)

    tray_table = section.table("trays")
    tray_pins: list[tuple[str, int, int | None]] = []
    for index, tray in enumerate(trays):
        if tray_table.has(tray):
            value = tray_table._get(tray, None, (list,), "a list [sheltered_pin, open_pin]")
            if (isinstance(value, list) and 1 <= len(value) <= 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 27
                            for v in value)):
                tray_pins.append((tray, value[0], value[1] if len(value) == 2 else None))
            else:
                tray_table.problem(tray, "must be [sheltered_pin] or [sheltered_pin, open_pin], "
                                         "GPIO 0..27")
        elif index < len(DEFAULT_TRAY_PINS):
            tray_pins.append((tray, *DEFAULT_TRAY_PINS[index]))
        else:
            tray_table.problem(tray, "no default pins for a fifth tray: give [sheltered, open]")
    tray_table.finish()
    settings = HardwareSettings(
        climate_sensor=section.string("climate_sensor", "dht22",
                                      choices=("dht22", "sht31", "none")),
        dht_pin=pin("dht_pin", 4),
        dht_power_pin=pin("dht_power_pin", None),
        sht31_address=section.integer("sht31_address", 0x44, minimum=0x44, maximum=0x45),
        i2c_bus=section.integer("i2c_bus", 1, minimum=0, maximum=10),
        rain_plate_pin=pin("rain_plate_pin", 17),
        rain_plate_active_low=section.boolean("rain_plate_active_low", True),
        wet_after_s=section.number("wet_after_s", 0.05, minimum=0.0, maximum=0.9),
        dry_after_s=section.number("dry_after_s", 30.0, minimum=0.0, maximum=3600),
        # gauge = false: a node without a tipping bucket (rain_mm is then null).
        gauge_pin=pin("gauge_pin", 27) if section.boolean("gauge", True) else None,
        mm_per_tip=section.number("mm_per_tip", 0.2794, minimum=0.01, maximum=10),
        beacon_pin=pin("beacon_pin", 23),
        beacon_active_high=section.boolean("beacon_active_high", True),
        buzzer_pin=pin("buzzer_pin", 24),
        silence_pin=pin("silence_pin", 25),
        tray_pins=tuple(tray_pins),
    )
    used: dict[int, str] = {}
    named = [("dht_pin", settings.dht_pin), ("dht_power_pin", settings.dht_power_pin),
             ("rain_plate_pin", settings.rain_plate_pin), ("gauge_pin", settings.gauge_pin),
             ("beacon_pin", settings.beacon_pin), ("buzzer_pin", settings.buzzer_pin),
             ("silence_pin", settings.silence_pin)]
    if settings.climate_sensor == "sht31":
        named = [*named[2:], ("i2c SDA", 2), ("i2c SCL", 3)]
    for tray, sheltered, open_end in settings.tray_pins:
        named += [(f"trays.{tray}", sheltered), (f"trays.{tray}", open_end)]
    for name, number in named:
        if isinstance(number, int):
            if number in used:
                section.problem(name, f"GPIO {number} is already used by {used[number]}")
            used[number] = name
    section.finish()
    return settings


@dataclass(frozen=True)
class NodeSettings:
    source: Path
    yard: str
    node: str
    sample_interval_s: float
    mqtt: MqttSettings
    outbox: OutboxSettings
    trays: tuple[str, ...]
    # "simulated" drives the same drivers through gpiozero's mock pins.
    hardware: str = "simulated"
    simulation_seed: int = 1
    simulation_speed: float = 1.0
    # "ntp": hold readings until the kernel says the clock is synchronised (a Pi
    # without an RTC); "trusted": the wall clock is right from boot (RTC, simulation).
    clock: str = "trusted"
    pins: HardwareSettings = field(default_factory=HardwareSettings)


def _read_node(root: Section) -> NodeSettings:
    node = root.table("node", required=True)
    yard_id = node.identifier("yard")
    node_id = node.identifier("id")
    trays = node._get("trays", ["t1"], (list,), "a list of tray ids")
    tray_ids: tuple[str, ...] = ()
    if isinstance(trays, list):
        for tray in trays:
            if not is_valid_id(tray):
                node.problem("trays", f"{tray!r} is not an id")
        tray_ids = tuple(str(t) for t in trays)
    sample = node.number("sample_interval_s", 10.0, minimum=0.05, maximum=3600)
    hardware = node.string("hardware", "simulated", choices=("simulated", "raspberry-pi"))
    seed = node.integer("simulation_seed", 1)
    speed = node.number("simulation_speed", 1.0, minimum=0.001, maximum=10_000)
    clock = node.string("clock", "ntp" if hardware == "raspberry-pi" else "trusted",
                        choices=("ntp", "trusted"))
    node.finish()

    outbox = root.table("outbox")
    outbox_settings = OutboxSettings(
        path=outbox.path("path", "var/outbox.sqlite3"),
        max_bytes=outbox.integer("max_bytes", 64 * 1024 * 1024, minimum=64 * 1024),
        resend_after_s=outbox.number("resend_after_s", 30.0, minimum=0.1),
    )
    outbox.finish()
    client_id = f"node-{yard_id}-{node_id}" if yard_id and node_id else None
    return NodeSettings(
        source=root.base_dir,
        yard=yard_id,
        node=node_id,
        sample_interval_s=sample,
        mqtt=_read_mqtt(root.table("mqtt"), default_client_id=client_id),
        outbox=outbox_settings,
        trays=tray_ids,
        hardware=hardware,
        simulation_seed=seed,
        simulation_speed=speed,
        clock=clock,
        pins=_read_hardware(root.table("hardware"), tray_ids),
    )


# --------------------------------------------------------------------------
# loading


def _load(path: Path, reader: Callable[[Section], T], env: Mapping[str, str] | None) -> T:
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: not UTF-8 text: {exc.reason}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: invalid TOML: {exc}"]) from exc
    problems: list[str] = []
    root = Section(data, path="", problems=problems, file=file, base_dir=path.parent.resolve(),
                   env=os.environ if env is None else env)
    settings = reader(root)
    root.finish()
    if problems:
        raise ConfigError(problems)
    return settings


def load_server_settings(path: str | Path, env: Mapping[str, str] | None = None
                         ) -> ServerSettings:
    return _load(Path(path), _read_server, env)


def load_node_settings(path: str | Path, env: Mapping[str, str] | None = None) -> NodeSettings:
    return _load(Path(path), _read_node, env)


def load_or_report(loader: Callable[[str | Path], T], path: str | Path) -> T | None:
    """``loader(path)``, or ``None`` after printing every problem to stderr.

    For commands that start a process: they exit with status 2 on ``None``.
    """
    try:
        return loader(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def detect_kind(path: str | Path) -> str:
    """``node`` if the file has a ``[node]`` table, else ``server``."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "server"  # the loader reports the real problem
    return "node" if "node" in data else "server"


def check_file(path: str | Path, env: Mapping[str, str] | None = None) -> list[str]:
    """Every problem in a config file, as ``file: key: reason`` lines (empty when fine)."""
    loader = load_node_settings if detect_kind(path) == "node" else load_server_settings
    try:
        loader(path, env)
    except ConfigError as exc:
        return exc.problems
    return []
