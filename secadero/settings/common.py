"""Sections more than one part reads: the MQTT broker, InfluxDB, and the yards with their
recipients (the ingest, the alerts and the forecasts all work per yard)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from secadero.contract import is_valid_id
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
class AreaSettings:
    """A part of the yard the workers call by name ("Norte", "Sur"): the messages say
    "las bandejas del sector Sur" rather than listing tray ids. A node's trays are in
    its area unless a tray is listed in another area by itself (``node/tray``)."""

    name: str
    nodes: tuple[str, ...] = ()
    trays: tuple[str, ...] = ()  # "node/tray", as the trays' topics name them


@dataclass(frozen=True)
class YardRules:
    """A yard's own alert rules: the ones switched off, and thresholds of ``[alerts]``
    tuned for this yard. The names and bounds are the server's (``settings.server``
    reads ``[yards.rules.<rule>]``); the engine lays ``tuned`` over ``[alerts]``."""

    off: frozenset[str] = frozenset()
    tuned: tuple[tuple[str, float | int], ...] = ()


@dataclass(frozen=True)
class YardSettings:
    id: str
    name: str  # the file's default: the id
    latitude: float
    longitude: float
    timezone: str = "America/Lima"
    recipients: tuple[RecipientSettings, ...] = ()
    # Without areas the messages name trays and sensors by their ids, as before.
    areas: tuple[AreaSettings, ...] = ()
    # The alert rules switched off or tuned for this yard ([yards.rules.<rule>]).
    rules: YardRules = YardRules()

    def rule_on(self, rule: str) -> bool:
        """Whether the alert rule ``rule`` runs for this yard (not switched off)."""
        return rule not in self.rules.off

    def area_of_tray(self, tray: str) -> str | None:
        """The area of ``node/tray``: the area listing the tray, else its node's area."""
        for area in self.areas:
            if tray in area.trays:
                return area.name
        return self.area_of_node(tray.split("/", 1)[0])

    def area_of_node(self, node: str) -> str | None:
        for area in self.areas:
            if node in area.nodes:
                return area.name
        return None

    def unplaced(self, node: str, trays: Sequence[str]) -> str | None:
        """Why a node of this yard is in none of its areas, for ``check-config``; None
        when it is in one, or when the yard has no areas. (Its trays are then in none
        either: ``read_yard`` refuses a listed tray whose node is in no area.)"""
        if not self.areas or self.area_of_node(node) is not None:
            return None
        listed = f" and its trays {', '.join(trays)} are" if trays else " is"
        return (f"node {node!r}{listed} in no area of yard {self.id!r}: add the node to "
                "one of its [[yards.areas]]")

    def place_names(self, *, trays: Sequence[str] = (), nodes: Sequence[str] = ()
                    ) -> tuple[str, ...]:
        """The areas these trays and nodes are in, in the file's order, each once; a tray or
        node in no area keeps its id (never dropped). Empty for a yard without areas."""
        if not self.areas:
            return ()
        found = [self.area_of_tray(t) or t for t in trays]
        found += [self.area_of_node(n) or n for n in nodes]
        order = {area.name: index for index, area in enumerate(self.areas)}
        unique = dict.fromkeys(found)
        return tuple(sorted(unique, key=lambda name: order.get(name, len(order))))


def _id_list(section: Section, name: str, default: tuple[str, ...], *, tray: bool
             ) -> tuple[tuple[str, ...], int]:
    """The valid ids of a list of nodes (``sur-1``) or trays (``sur-1/t1``), and how many
    entries the list had (the bad ones are reported)."""
    what, example = ("a node/tray id", "'sur-1/t1'") if tray else ("a node id", "'sur-1'")
    values = section.list_of(name, default, f"a list of {what}s")
    if not isinstance(values, list):
        return (), 0
    ids: list[str] = []
    for value in values:
        parts = value.split("/") if isinstance(value, str) else []
        if len(parts) != (2 if tray else 1) or not all(is_valid_id(p) for p in parts):
            section.problem(name, f"{value!r} is not {what} like {example}")
            continue
        ids.append(value)
    return tuple(ids), len(values)


def read_area(section: Section) -> AreaSettings:
    d = Defaults(AreaSettings)
    name = section.string("name", d.name)
    nodes, listed_nodes = _id_list(section, "nodes", d.nodes, tray=False)
    trays, listed_trays = _id_list(section, "trays", d.trays, tray=True)
    if listed_nodes + listed_trays == 0:
        section.problem("nodes", "an area needs at least one node or tray")
    settings = AreaSettings(name=name, nodes=nodes, trays=trays)
    section.finish()
    return settings


def _check_areas(section: Section, areas: Sequence[AreaSettings]) -> None:
    """Each node and tray in exactly one area: a message must name one place for it."""
    node_area: dict[str, str] = {}
    tray_area: dict[str, str] = {}
    for area in areas:
        for node in area.nodes:
            if node in node_area:
                section.problem("areas", f"node {node!r} is in two areas: "
                                         f"{node_area[node]!r} and {area.name!r}")
            node_area.setdefault(node, area.name)
        for tray in area.trays:
            if tray in tray_area:
                section.problem("areas", f"tray {tray!r} is in two areas: "
                                         f"{tray_area[tray]!r} and {area.name!r}")
            tray_area.setdefault(tray, area.name)
    for tray in tray_area:
        node = tray.split("/", 1)[0]
        if node not in node_area:
            # The node's other trays, its sensors and its silence would be in no area.
            section.problem("areas", f"node {node!r} (of tray {tray!r}) is in no area: "
                                     "list it in the nodes of one")


def read_yard(section: Section, read_rules: Callable[[Section], YardRules] | None = None
              ) -> YardSettings:
    """One ``[[yards]]`` entry; ``read_rules`` reads its ``[yards.rules]`` (the server's
    alert rules; without it that table is an unknown key)."""
    d = Defaults(YardSettings)
    yard_id = section.identifier("id", d.id)
    areas = tuple(read_area(a) for a in section.tables("areas"))
    names = [a.name for a in areas]
    for name in sorted({n for n in names if names.count(n) > 1}):
        section.problem("areas", f"two areas are named {name!r}")
    _check_areas(section, areas)
    settings = YardSettings(
        id=yard_id,
        name=section.string("name", yard_id if isinstance(yard_id, str) else ""),
        latitude=section.number("latitude", d.latitude, minimum=-90, maximum=90),
        longitude=section.number("longitude", d.longitude, minimum=-180, maximum=180),
        timezone=section.timezone("timezone", d.timezone),
        recipients=tuple(read_recipient(r) for r in section.tables("recipients")),
        areas=areas,
        rules=read_rules(section.table("rules")) if read_rules is not None else d.rules,
    )
    # Before [yards.rules] this was the only rule a yard could switch off.
    section.refuse("humidity_surge",
                   "moved: write [yards.rules.humidity_surge] with enabled = false")
    section.finish()
    return settings
