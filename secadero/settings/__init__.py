"""Settings: one TOML file per process, validated at start-up into frozen dataclasses.

Every problem is collected (not just the first) and reported as
``file: key: reason`` so a technician fixes a config in one pass. Secrets are
never written in the file: a key ``password_env`` names an environment
variable, ``password_file`` a file (mode 0600) holding the secret.

The commented samples are ``server/server.example.toml`` and
``edge/node.example.toml``.

The modules, by role:

- ``_reader``: ``Section`` (typed keys, problems), ``Defaults``, the loader;
- ``common``: ``[mqtt]``, ``[influxdb]``, ``[[yards]]`` and their recipients;
- ``server``: ``[ingest]``, ``[alerts]``, ``[forecast]`` and the server's root;
- ``notifiers``: the notifier registry and each provider's ``[notifiers.<name>]``;
- ``edge``: ``[node]``, ``[outbox]``, ``[hardware]``;
- ``broker``: the server's ``[broker]`` (Mosquitto's configuration and users).

Nothing in this package imports ``secadero.server`` or the server's libraries, so a
node loads its settings with only the core installed.

A section is a frozen dataclass, which holds its defaults (the only place they
are written), and a ``read_*`` function that fills it from a ``Section``,
taking each default from the dataclass through ``Defaults``.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from secadero.errors import ConfigError
from secadero.settings._reader import REQUIRED, Defaults, Section
from secadero.settings.broker import BrokerSettings
from secadero.settings.common import (
    LANGUAGES,
    ROLES,
    AreaSettings,
    InfluxSettings,
    MqttSettings,
    RecipientSettings,
    YardRules,
    YardSettings,
)
from secadero.settings.edge import (
    DEFAULT_TRAY_PINS,
    HardwareSettings,
    NodeSettings,
    OutboxSettings,
    load_node_settings,
)
from secadero.settings.notifiers import (
    CHANNELS,
    PROVIDERS,
    GammuSettings,
    NotifierSettings,
    NtfySettings,
    Provider,
    TwilioSettings,
    WebhookSettings,
)
from secadero.settings.server import (
    RULE_THRESHOLDS,
    SWITCHABLE_RULES,
    AccountSettings,
    AlertSettings,
    BatchSettings,
    ForecastSettings,
    IngestSettings,
    ServerSettings,
    load_server_settings,
)

__all__ = [
    "CHANNELS",
    "DEFAULT_TRAY_PINS",
    "LANGUAGES",
    "PROVIDERS",
    "REQUIRED",
    "ROLES",
    "RULE_THRESHOLDS",
    "SWITCHABLE_RULES",
    "AccountSettings",
    "AlertSettings",
    "AreaSettings",
    "BatchSettings",
    "BrokerSettings",
    "Defaults",
    "ForecastSettings",
    "GammuSettings",
    "HardwareSettings",
    "InfluxSettings",
    "IngestSettings",
    "MqttSettings",
    "NodeSettings",
    "NotifierSettings",
    "NtfySettings",
    "OutboxSettings",
    "Provider",
    "RecipientSettings",
    "Section",
    "ServerSettings",
    "TwilioSettings",
    "WebhookSettings",
    "YardRules",
    "YardSettings",
    "check_file",
    "check_files",
    "detect_kind",
    "load_node_settings",
    "load_or_report",
    "load_server_settings",
]

T = TypeVar("T")


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


def check_files(paths: Sequence[str | Path], env: Mapping[str, str] | None = None
                ) -> dict[str, list[str]]:
    """``check_file`` for each path, and the yards' layout across them: a node file whose
    yard has areas in a server file checked with it must have its node in an area."""
    problems = {str(path): check_file(path, env) for path in paths}
    valid = [path for path in paths if not problems[str(path)]]
    yards = {yard.id: yard for path in valid if detect_kind(path) == "server"
             for yard in load_server_settings(path, env).yards}
    for path in valid:
        if detect_kind(path) != "node":
            continue
        node = load_node_settings(path, env)
        yard = yards.get(node.yard)
        reason = yard.unplaced(node.node, node.trays) if yard is not None else None
        if reason is not None:
            problems[str(path)].append(f"{path}: node.id: {reason}")
    return problems
