"""The server's own sections: the ingest, the rain alerts, the forecasts, and the root
that gathers them with the shared sections and the notifiers (docs/alerts.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from secadero.settings._reader import Defaults, Section, load
from secadero.settings.broker import BrokerSettings, read_broker
from secadero.settings.common import (
    ROLES,
    InfluxSettings,
    MqttSettings,
    YardRules,
    YardSettings,
    read_influx,
    read_mqtt,
    read_yard,
)
from secadero.settings.notifiers import NotifierSettings, read_notifiers


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
    # The files: relative paths are beside the config file (the loader resolves them
    # there); None, which only code can give, keeps nothing.
    # Per-node acknowledged seq, kept across restarts.
    state_file: Path | None = Path("var/ingest-state.json")
    # Points InfluxDB refused for good, one JSON line each with the reason.
    set_aside_file: Path | None = Path("var/set-aside.jsonl")
    # /healthz turns unhealthy when InfluxDB or the broker is unreachable this long.
    unhealthy_after_s: float = 60.0
    # InfluxDB 1.x: hours of readings that came too late for the continuous
    # queries are downsampled again at most this often (server/downsample.py) ...
    downsample_interval_s: float = 60.0
    # ... and wait in this file meanwhile, so a restart does not forget them.
    downsample_pending_file: Path | None = Path("var/downsample-pending.json")


def read_ingest(section: Section) -> IngestSettings:
    d = Defaults(IngestSettings)
    settings = IngestSettings(
        batch_size=section.integer("batch_size", d.batch_size, minimum=1, maximum=100_000),
        flush_interval_s=section.number("flush_interval_s", d.flush_interval_s, minimum=0.01,
                                        maximum=60),
        queue_max=section.integer("queue_max", d.queue_max, minimum=1, maximum=65535),
        horizon_days=section.number("horizon_days", d.horizon_days, minimum=0.01),
        offline_after_s=section.number("offline_after_s", d.offline_after_s, minimum=1),
        gap_timeout_s=section.number("gap_timeout_s", d.gap_timeout_s, minimum=1),
        http_host=section.string("http_host", d.http_host),
        http_port=section.integer("http_port", d.http_port, minimum=0, maximum=65535),
        session_expiry_s=section.integer("session_expiry_s", d.session_expiry_s, minimum=0),
        share_group=section.string("share_group", d.share_group),
        state_file=section.path("state_file", d.state_file),
        set_aside_file=section.path("set_aside_file", d.set_aside_file),
        unhealthy_after_s=section.number("unhealthy_after_s", d.unhealthy_after_s, minimum=1),
        downsample_interval_s=section.number("downsample_interval_s", d.downsample_interval_s,
                                             minimum=0.1, maximum=3600),
        downsample_pending_file=section.path("downsample_pending_file",
                                             d.downsample_pending_file),
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
    # After the ladder (repeats, then trays_still_out escalations): a slower reminder
    # until every tray switch says retracted, the rain episode ends, or it is closed.
    slow_reminder_min: float = 30.0
    # An acknowledgement pauses the slower reminder this long, not for ever.
    ack_pause_min: float = 30.0
    # No recipient gets more reminders than this from one episode in any hour (a stuck
    # switch floods nobody); the raise and the upgrade to "raining" always go.
    max_per_recipient_per_hour: int = 6
    # The ladder's last step: after this many trays rounds (trays_still_out escalations and
    # slower reminders) a voice call to recipients with "voice" in their channels (needs
    # [notifiers.twilio_voice]); again only if nobody answered it. 0: no call.
    voice_after_escalations: int = 3
    # A call nobody answered (busy, no answer, failed, a voicemail when Twilio can tell)
    # is placed again at the next trays round, up to this many calls per episode.
    voice_max_calls: int = 3
    # humidity_surge: a change against the recent past, never a level (an Amazon dawn
    # reaches 94-97 % RH, the dew point within 1 °C, every morning): humidity up this
    # many points within the window, or up dew_point_rise_pct points with the dew point
    # within dew_point_spread_c of the air.
    humidity_rise_pct: float = 15.0
    humidity_window_min: float = 30.0
    dew_point_spread_c: float = 1.5
    dew_point_rise_pct: float = 8.0
    humidity_min_nodes: int = 2
    # to the technician
    node_silent_min: float = 10.0
    forecast_stale_min: float = 90.0
    # One provider failing this long is told even while another covers for it.
    provider_failing_min: float = 60.0
    # Older forecasts are not used at all (the rules fall back on the sensors).
    forecast_max_age_h: float = 6.0
    # HTTP API and acknowledge links
    api_host: str = "127.0.0.1"
    api_port: int = 9110
    public_url: str = "http://127.0.0.1:9110"
    ack_secret: str | None = field(default=None, repr=False)
    ack_token_ttl_h: float = 12.0


def _hhmm(section: Section, name: str, default: str) -> str:
    """A local time of day, ``HH:MM`` (``24:00`` is the end of the day)."""
    value = section.string(name, default)
    try:
        hours, minutes = (int(part) for part in str(value).split(":"))
        if not (0 <= hours <= 24 and 0 <= minutes < 60):
            raise ValueError
    except ValueError:
        section.problem(name, f"must be a local time HH:MM, got {value!r}")
        return default
    return value


# The alert rules, each with the [alerts] thresholds it reads. A yard switches a rule
# off or tunes its thresholds in [yards.rules.<rule>] (docs/alerts.md); [alerts] holds
# the values of every yard that does not.
RULE_THRESHOLDS: dict[str, tuple[str, ...]] = {
    "rain_forecast": ("lookahead_min", "raise_prob_pct", "clear_prob_pct", "raise_mm_per_h",
                      "clear_mm_per_h"),
    "rain_now": ("tip_window_min",),
    "all_clear": ("min_hold_min", "all_clear_hours", "all_clear_dry_min"),
    "repeats": ("repeat_interval_min", "max_repeats", "max_per_recipient_per_hour"),
    "trays_out": ("trays_out_after_min", "slow_reminder_min", "ack_pause_min",
                  "voice_after_escalations", "voice_max_calls"),
    "humidity_surge": ("humidity_rise_pct", "humidity_window_min", "dew_point_spread_c",
                       "dew_point_rise_pct", "humidity_min_nodes"),
    "node_offline": ("node_silent_min",),
    "forecast_stale": ("forecast_stale_min",),
    "provider_failing": ("provider_failing_min",),
}
# Tuned, never switched off: the all-clear is how a rain episode ends, and the repeats
# are how an unanswered alert is heard (max_repeats = 0 sends none).
NOT_SWITCHABLE = {"all_clear": "it is how a rain episode ends",
                  "repeats": "set max_repeats = 0 for no repeats"}
SWITCHABLE_RULES = tuple(r for r in RULE_THRESHOLDS if r not in NOT_SWITCHABLE)

# Each threshold's bounds (minimum, maximum); an int default reads as an integer.
_BOUNDS: dict[str, tuple[float, float | None]] = {
    "lookahead_min": (10, 720), "raise_prob_pct": (1, 100), "clear_prob_pct": (0, 100),
    "raise_mm_per_h": (0.01, None), "clear_mm_per_h": (0, None),
    "tip_window_min": (1, None),
    "min_hold_min": (0, None), "all_clear_hours": (0, 48), "all_clear_dry_min": (0, None),
    "repeat_interval_min": (1, None), "max_repeats": (0, 50),
    "max_per_recipient_per_hour": (1, 60),
    "trays_out_after_min": (0, None), "slow_reminder_min": (5, None), "ack_pause_min": (0, None),
    "voice_after_escalations": (0, 50), "voice_max_calls": (1, 10),
    "humidity_rise_pct": (1, None), "humidity_window_min": (1, None),
    "dew_point_spread_c": (0, None), "dew_point_rise_pct": (1, None),
    "humidity_min_nodes": (1, None),
    "node_silent_min": (1, None), "forecast_stale_min": (1, None),
    "provider_failing_min": (1, None),
}


def _threshold(section: Section, name: str, default: float | int) -> float | int:
    """One rule threshold, in ``[alerts]`` or a yard's ``[yards.rules.<rule>]``."""
    minimum, maximum = _BOUNDS[name]
    if isinstance(default, int):
        return section.integer(name, default, minimum=int(minimum),
                               maximum=None if maximum is None else int(maximum))
    return section.number(name, default, minimum=minimum, maximum=maximum)


def _check_hysteresis(section: Section, raise_prob: object, clear_prob: object) -> None:
    if isinstance(raise_prob, float) and isinstance(clear_prob, float) and clear_prob > raise_prob:
        section.problem("clear_prob_pct", f"must not be above raise_prob_pct "
                                          f"({clear_prob:g} > {raise_prob:g}: hysteresis)")


def read_alerts(section: Section) -> AlertSettings:
    d = Defaults(AlertSettings)
    escalation = section.list_of("escalation", d.escalation, "a list of roles")
    if isinstance(escalation, list):
        for role in escalation:
            if role not in ROLES:
                section.problem("escalation", f"{role!r} is not one of {', '.join(ROLES)}")
    thresholds = {name: _threshold(section, name, getattr(d, name))
                  for names in RULE_THRESHOLDS.values() for name in names}
    _check_hysteresis(section, thresholds["raise_prob_pct"], thresholds["clear_prob_pct"])
    settings = AlertSettings(
        database=section.path("database", d.database),
        evaluate_interval_s=section.number("evaluate_interval_s", d.evaluate_interval_s,
                                           minimum=0.1, maximum=3600),
        drying_start=_hhmm(section, "drying_start", d.drying_start),
        drying_end=_hhmm(section, "drying_end", d.drying_end),
        escalation=tuple(escalation) if isinstance(escalation, list) else d.escalation,
        forecast_max_age_h=section.number("forecast_max_age_h", d.forecast_max_age_h,
                                          minimum=0.1),
        api_host=section.string("api_host", d.api_host),
        api_port=section.integer("api_port", d.api_port, minimum=0, maximum=65535),
        public_url=str(section.string("public_url", d.public_url)).rstrip("/"),
        ack_secret=section.secret("ack_secret"),
        ack_token_ttl_h=section.number("ack_token_ttl_h", d.ack_token_ttl_h, minimum=0.1),
        **thresholds,
    )
    section.finish()
    return settings


def _rule_of(name: str) -> str | None:
    return next((rule for rule, names in RULE_THRESHOLDS.items() if name in names), None)


def read_yard_rules(section: Section, alerts: AlertSettings) -> YardRules:
    """A yard's ``[yards.rules]``: one table per rule, ``enabled`` and that rule's own
    thresholds; what a yard leaves out is the ``[alerts]`` value."""
    off: set[str] = set()
    tuned: dict[str, float | int] = {}
    enabled_default = Defaults(_RuleSwitch).enabled
    for rule in RULE_THRESHOLDS:
        if not section.has(rule):
            continue
        table = section.table(rule)
        if rule in NOT_SWITCHABLE:
            table.refuse("enabled", f"{rule} cannot be switched off: {NOT_SWITCHABLE[rule]}")
        elif table.boolean("enabled", enabled_default) is False:
            off.add(rule)
        for name in RULE_THRESHOLDS[rule]:
            if table.has(name):
                tuned[name] = _threshold(table, name, getattr(alerts, name))
        for name in table.names():
            owner = _rule_of(name)
            if owner not in (None, rule):
                table.refuse(name, f"a threshold of rule {owner}: write it in "
                                   f"[yards.rules.{owner}]")
        table.finish()
        if rule == "rain_forecast":
            _check_hysteresis(table, tuned.get("raise_prob_pct", alerts.raise_prob_pct),
                              tuned.get("clear_prob_pct", alerts.clear_prob_pct))
    for name in section.names():
        if name not in RULE_THRESHOLDS:
            owner = _rule_of(name)
            section.refuse(name, f"a threshold of rule {owner}: write it in "
                                 f"[yards.rules.{owner}]" if owner else
                           f"is not a rule; the rules are {', '.join(RULE_THRESHOLDS)}")
    section.finish()
    return YardRules(off=frozenset(off), tuned=tuple(sorted(tuned.items())))


@dataclass(frozen=True)
class _RuleSwitch:
    """``[yards.rules.<rule>] enabled``: every rule runs unless a yard switches it off."""

    enabled: bool = True


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


# The forecast providers server/forecast knows.
FORECAST_PROVIDERS = ("open-meteo", "met-norway")


def read_forecast(section: Section) -> ForecastSettings:
    d = Defaults(ForecastSettings)
    providers = section.list_of("providers", d.providers, "a list of providers")
    if isinstance(providers, list):
        for provider in providers:
            if provider not in FORECAST_PROVIDERS:
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


# The server's MQTT client id unless [mqtt] client_id says otherwise.
INGEST_CLIENT_ID = "secadero-ingest"


@dataclass(frozen=True)
class BatchSettings:
    """Drying batches (server/batches, docs/batches.md): their record and their metrics."""

    database: Path = Path("var/batches.sqlite3")
    # Moisture (% wet basis) the estimate aims for: ISO 2451's limit on discharge.
    target_moisture_pct: float = 7.5
    # A bean near the target is in balance with air of about 65 % RH (GAB isotherm,
    # Sandoval et al. 2020): hours above this RH with trays out are not drying hours ...
    drying_max_humidity_pct: float = 70.0
    # ... and at or above this RH trays left out rewet the beans.
    rewetting_humidity_pct: float = 80.0
    # No climate reading from any of the batch's nodes for this long is a gap in the data.
    gap_after_s: float = 300.0
    # Quality warnings: a batch this old without reaching mould_moisture_pct (mould risk),
    mould_after_days: float = 7.0
    mould_moisture_pct: float = 8.0
    # and a reading below this (brittle beans).
    brittle_moisture_pct: float = 5.0
    # The estimate's typical drying day is learnt from the yard's climate over this many
    # local days before a batch's start (server/batches/typical.py); 0: the built-in day.
    typical_day_days: int = 28


def read_batches(section: Section) -> BatchSettings:
    d = Defaults(BatchSettings)
    settings = BatchSettings(
        database=section.path("database", d.database),
        target_moisture_pct=section.number("target_moisture_pct", d.target_moisture_pct,
                                           minimum=1, maximum=60),
        drying_max_humidity_pct=section.number("drying_max_humidity_pct",
                                               d.drying_max_humidity_pct, minimum=1, maximum=100),
        rewetting_humidity_pct=section.number("rewetting_humidity_pct",
                                              d.rewetting_humidity_pct, minimum=1, maximum=100),
        gap_after_s=section.number("gap_after_s", d.gap_after_s, minimum=10),
        mould_after_days=section.number("mould_after_days", d.mould_after_days, minimum=0.1),
        mould_moisture_pct=section.number("mould_moisture_pct", d.mould_moisture_pct,
                                          minimum=1, maximum=60),
        brittle_moisture_pct=section.number("brittle_moisture_pct", d.brittle_moisture_pct,
                                            minimum=0, maximum=60),
        typical_day_days=section.integer("typical_day_days", d.typical_day_days, minimum=0,
                                         maximum=60),
    )
    if (isinstance(settings.drying_max_humidity_pct, float)
            and isinstance(settings.rewetting_humidity_pct, float)
            and settings.rewetting_humidity_pct < settings.drying_max_humidity_pct):
        section.problem("rewetting_humidity_pct", "must not be below drying_max_humidity_pct")
    section.finish()
    return settings


@dataclass(frozen=True)
class AccountSettings:
    """Staff accounts of the HTTP API (server/accounts, docs/security.md)."""

    database: Path = Path("var/accounts.sqlite3")
    # A session ends this long after its login (a shift and a half).
    session_ttl_h: float = 12.0
    # Token buckets per client address and per account name: ``burst`` attempts at
    # once, then ``per_min`` each minute (429 beyond).
    login_burst: int = 5
    login_per_min: float = 1.0
    ack_burst: int = 10
    ack_per_min: float = 6.0
    # Behind a reverse proxy every request comes from the proxy's address: take the
    # client's from the last X-Forwarded-For entry (the one the proxy added). Only
    # when the API listens on 127.0.0.1 behind that proxy, else anyone can forge it.
    trust_forwarded_for: bool = False


def read_accounts(section: Section) -> AccountSettings:
    d = Defaults(AccountSettings)
    settings = AccountSettings(
        database=section.path("database", d.database),
        session_ttl_h=section.number("session_ttl_h", d.session_ttl_h, minimum=0.1,
                                     maximum=24 * 30),
        login_burst=section.integer("login_burst", d.login_burst, minimum=1, maximum=1000),
        login_per_min=section.number("login_per_min", d.login_per_min, minimum=0.01,
                                     maximum=6000),
        ack_burst=section.integer("ack_burst", d.ack_burst, minimum=1, maximum=1000),
        ack_per_min=section.number("ack_per_min", d.ack_per_min, minimum=0.01, maximum=6000),
        trust_forwarded_for=section.boolean("trust_forwarded_for", d.trust_forwarded_for),
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
    alerts: AlertSettings = field(default_factory=AlertSettings)
    forecast: ForecastSettings = field(default_factory=ForecastSettings)
    notifiers: NotifierSettings = field(default_factory=NotifierSettings)
    batches: BatchSettings = field(default_factory=BatchSettings)
    accounts: AccountSettings = field(default_factory=AccountSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)


def read_server(root: Section) -> ServerSettings:
    alerts = read_alerts(root.table("alerts"))
    yards = tuple(read_yard(s, partial(read_yard_rules, alerts=alerts))
                  for s in root.tables("yards"))
    seen: set[str] = set()
    for index, yard in enumerate(yards):
        if yard.id in seen:
            root.problem(f"yards[{index}].id", f"{yard.id!r} appears twice")
        seen.add(yard.id)
    return ServerSettings(
        source=root.base_dir,
        mqtt=read_mqtt(root.table("mqtt"), default_client_id=INGEST_CLIENT_ID),
        influxdb=read_influx(root.table("influxdb")),
        ingest=read_ingest(root.table("ingest")),
        yards=yards,
        alerts=alerts,
        # No [forecast] section: no forecasts (and no request to the internet).
        forecast=(read_forecast(root.table("forecast")) if root.has("forecast")
                  else ForecastSettings(providers=())),
        notifiers=read_notifiers(root.table("notifiers")),
        batches=read_batches(root.table("batches")),
        accounts=read_accounts(root.table("accounts")),
        broker=read_broker(root.table("broker")),
    )


def load_server_settings(path: str | Path, env: Mapping[str, str] | None = None
                         ) -> ServerSettings:
    """The server's settings from ``path``; raises ``ConfigError`` with every problem."""
    return load(Path(path), read_server, env)


