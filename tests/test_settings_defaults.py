"""Each default is written once, in its dataclass: a file that leaves a key out gets it.

The first tests load files whose sections are empty (or give only the keys the
file must give) and compare with the dataclasses built from their own defaults:
a reader that grows a literal of its own that differs fails them. The last one
reads the readers' source and fails on any literal default at all, so a second
copy cannot creep in even while it still agrees.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

import secadero.settings
from secadero.errors import ConfigError
from secadero.settings import (
    AlertSettings,
    ForecastSettings,
    GammuSettings,
    InfluxSettings,
    IngestSettings,
    MqttSettings,
    NotifierSettings,
    NtfySettings,
    RecipientSettings,
    TwilioSettings,
    WebhookSettings,
    YardSettings,
    load_server_settings,
)

EMPTY_SECTIONS = """
[mqtt]
[influxdb]
[ingest]
[alerts]
[forecast]
[notifiers]
[notifiers.ntfy]
[notifiers.gammu]

[notifiers.twilio]
account_sid = "AC1"
auth_token_env = "TWILIO_TOKEN"
from_number = "+15005550006"

[notifiers.webhook]
url = "https://chat.example/hook"

[[yards]]
id = "norte"
latitude = -6.57
longitude = -76.14

[[yards.recipients]]
name = "Rosa"
phone = "+51987654321"
"""


def beside(settings: Any, directory: Path) -> Any:
    """``settings`` with each relative path default resolved beside the config file."""
    return dataclasses.replace(settings, **{
        item.name: directory / value for item in dataclasses.fields(settings)
        if isinstance(value := getattr(settings, item.name), Path) and not value.is_absolute()})


@pytest.fixture
def loaded(tmp_path: Path) -> secadero.settings.ServerSettings:
    config = tmp_path / "server.toml"
    config.write_text(EMPTY_SECTIONS)
    return load_server_settings(config, env={"TWILIO_TOKEN": "t0ken"})


def test_empty_shared_sections_give_the_dataclass_defaults(
        loaded: secadero.settings.ServerSettings) -> None:
    # The client id is the one default that depends on the role reading the file.
    assert loaded.mqtt == MqttSettings(client_id="secadero-ingest")
    assert loaded.influxdb == InfluxSettings()
    assert loaded.yards == (YardSettings(
        id="norte", name="norte", latitude=-6.57, longitude=-76.14,
        recipients=(RecipientSettings(name="Rosa", phone="+51987654321"),)),)


def test_empty_server_sections_give_the_dataclass_defaults(
        loaded: secadero.settings.ServerSettings, tmp_path: Path) -> None:
    directory = tmp_path.resolve()
    assert loaded.ingest == beside(IngestSettings(), directory)
    assert loaded.ingest.state_file == directory / "var" / "ingest-state.json"
    assert loaded.alerts == beside(AlertSettings(), directory)
    assert loaded.forecast == ForecastSettings()


def test_empty_notifier_sections_give_the_dataclass_defaults(
        loaded: secadero.settings.ServerSettings) -> None:
    notifiers = loaded.notifiers
    assert notifiers.ntfy == NtfySettings()
    assert notifiers.gammu == GammuSettings()
    assert notifiers.twilio == TwilioSettings(account_sid="AC1", auth_token="t0ken",
                                              from_number="+15005550006")
    assert notifiers.webhook == WebhookSettings(url="https://chat.example/hook")
    assert dataclasses.replace(notifiers, configured=()) == NotifierSettings()


def test_a_file_of_nothing_is_a_server_with_every_default(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("")
    settings = load_server_settings(config, env={})
    assert settings.ingest == beside(IngestSettings(), tmp_path.resolve())
    assert settings.notifiers == NotifierSettings()
    # No [forecast] section: no forecasts, and no request to the internet.
    assert settings.forecast == ForecastSettings(providers=())


def test_the_keys_without_a_default_are_required(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("[notifiers.twilio]\n[notifiers.webhook]\n[[yards]]\n")
    with pytest.raises(ConfigError) as caught:
        load_server_settings(config, env={})
    assert caught.value.problems == [
        f"{config}: yards[0].id: is required",
        f"{config}: yards[0].latitude: is required",
        f"{config}: yards[0].longitude: is required",
        f"{config}: notifiers.twilio.account_sid: is required",
        f"{config}: notifiers.twilio.auth_token: is required: set auth_token_env or "
        "auth_token_file",
        f"{config}: notifiers.twilio.from_number: is required",
        f"{config}: notifiers.webhook.url: is required",
    ]


# The reading methods of Section whose second argument is the default.
READS = {"string", "identifier", "number", "integer", "port", "boolean", "list_of", "path",
         "timezone", "secret"}
# Keys that are no field of any dataclass, so their one default is where they are read.
NOT_FIELDS = {
    "'gauge'",  # [hardware] gauge = false switches gauge_pin off
    "tray",  # [hardware.trays] t1 = [...]: no pins of its own unless given
}


def is_literal(node: ast.expr) -> bool:
    """A constant, or a tuple, list or arithmetic made only of constants."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple | ast.List):
        return all(is_literal(item) for item in node.elts)
    if isinstance(node, ast.BinOp):
        return is_literal(node.left) and is_literal(node.right)
    return isinstance(node, ast.UnaryOp) and is_literal(node.operand)


def test_no_reader_writes_a_default_of_its_own() -> None:
    package = Path(secadero.settings.__file__).parent
    # Every module but the machinery (_reader.py; show.py prints settings) holds sections.
    modules = sorted(set(package.glob("*.py")) - {package / "_reader.py", package / "show.py"})
    found: list[str] = []
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in READS and len(node.args) >= 2
                    and is_literal(node.args[1])
                    and ast.unparse(node.args[0]) not in NOT_FIELDS):
                found.append(f"{module.name}:{node.lineno}: {ast.unparse(node)}")
    assert [m.name for m in modules] == ["__init__.py", "broker.py", "common.py", "edge.py",
                                         "notifiers.py", "server.py"]
    assert found == []
