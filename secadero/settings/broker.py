"""The server's ``[broker]`` section: the Mosquitto that the server and the nodes use.

``secadero broker config`` writes Mosquitto's configuration from it and
``secadero nodes ...`` keeps its users; the server itself connects with ``[mqtt]``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from secadero.errors import ConfigError
from secadero.settings._reader import Defaults, Section


@dataclass(frozen=True)
class BrokerSettings:
    # users.json (who may connect), passwd (their hashes) and acl (what each may do).
    users_dir: Path = Path("/etc/mosquitto/secadero")
    # Where `secadero broker config --write` puts the configuration; Debian's
    # /etc/mosquitto/mosquitto.conf includes conf.d/ and sets pid_file.
    conf_file: Path = Path("/etc/mosquitto/conf.d/secadero.conf")
    pid_file: Path = Path("/run/mosquitto/mosquitto.pid")
    # Plain MQTT for the server on the same machine: loopback only.
    local_port: int = 1883
    # MQTT over TLS for the nodes on the yard's Wi-Fi; "" listens on every interface.
    tls_port: int = 8883
    tls_bind: str = ""
    cert_file: Path = Path("/etc/mosquitto/certs/server.crt")
    key_file: Path = Path("/etc/mosquitto/certs/server.key")
    ca_file: Path = Path("/etc/mosquitto/certs/ca.crt")
    # The name the nodes connect to (it must be in the server certificate).
    public_host: str = "broker.local"
    # Where the node's settings block says the CA certificate and its secret go on the Pi.
    node_ca_file: str = "/etc/secadero/ca.crt"
    node_password_file: str = "/etc/secadero/mqtt-password"
    persistence_dir: Path = Path("/var/lib/mosquitto")
    autosave_interval_s: int = 60
    persistent_client_expiration_days: int = 14
    # A day of backlog for the server's session: messages/day = nodes x 8640.
    max_queued_messages: int = 5_000_000
    max_queued_bytes: int = 1_500_000_000
    max_inflight_messages: int = 100
    # The contract's 16 KiB payload plus topic and headers.
    max_packet_size: int = 20_000
    max_keepalive_s: int = 300
    # "syslog", or a file path.
    log_dest: str = "syslog"
    server_user: str = "secadero-server"
    readonly_user: str = "secadero-readonly"


def read_broker(section: Section) -> BrokerSettings:
    d = Defaults(BrokerSettings)
    settings = BrokerSettings(
        users_dir=section.path("users_dir", d.users_dir),
        conf_file=section.path("conf_file", d.conf_file),
        pid_file=section.path("pid_file", d.pid_file),
        local_port=section.port("local_port", d.local_port),
        tls_port=section.port("tls_port", d.tls_port),
        tls_bind=section.string("tls_bind", d.tls_bind),
        cert_file=section.path("cert_file", d.cert_file),
        key_file=section.path("key_file", d.key_file),
        ca_file=section.path("ca_file", d.ca_file),
        public_host=section.string("public_host", d.public_host),
        node_ca_file=section.string("node_ca_file", d.node_ca_file),
        node_password_file=section.string("node_password_file", d.node_password_file),
        persistence_dir=section.path("persistence_dir", d.persistence_dir),
        autosave_interval_s=section.integer("autosave_interval_s", d.autosave_interval_s,
                                            minimum=1, maximum=86_400),
        persistent_client_expiration_days=section.integer(
            "persistent_client_expiration_days", d.persistent_client_expiration_days,
            minimum=1, maximum=365),
        # Mosquitto: 0 means no limit, which drops nothing but can eat all memory.
        max_queued_messages=section.integer("max_queued_messages", d.max_queued_messages,
                                            minimum=1000),
        max_queued_bytes=section.integer("max_queued_bytes", d.max_queued_bytes,
                                         minimum=1_000_000),
        max_inflight_messages=section.integer("max_inflight_messages",
                                              d.max_inflight_messages, minimum=1,
                                              maximum=65_535),
        max_packet_size=section.integer("max_packet_size", d.max_packet_size,
                                        minimum=17_000, maximum=268_435_455),
        max_keepalive_s=section.integer("max_keepalive_s", d.max_keepalive_s, minimum=10,
                                        maximum=65_535),
        log_dest=section.string("log_dest", d.log_dest),
        server_user=section.string("server_user", d.server_user),
        readonly_user=section.string("readonly_user", d.readonly_user),
    )
    if settings.local_port == settings.tls_port:
        section.problem("tls_port", "must differ from local_port")
    for key in ("tls_bind", "public_host", "log_dest", "server_user", "readonly_user",
                "node_ca_file", "node_password_file"):
        value = getattr(settings, key)
        if isinstance(value, str) and any(c.isspace() for c in value):
            section.problem(key, f"{value!r} must not contain spaces")
    section.finish()
    return settings


def load_broker_settings(path: Path, env: Mapping[str, str] | None = None) -> BrokerSettings:
    """Only the ``[broker]`` section of the server's settings file.

    ``secadero nodes`` runs as root in a shell that lacks the server's environment
    (its secrets' variables): the other sections are not read, so they cannot fail.
    """
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror}"]) from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{file}: not a TOML file: {exc}"]) from exc
    problems: list[str] = []
    raw = data.get("broker", {})
    if not isinstance(raw, dict):
        raise ConfigError([f"{file}: broker: must be a table"])
    section = Section(raw, path="broker", problems=problems, file=file,
                      base_dir=path.parent.resolve(), env=os.environ if env is None else env)
    settings = read_broker(section)
    if problems:
        raise ConfigError(problems)
    return settings
