"""The notifier registry: each provider is found through ``PROVIDERS``, by the settings
(its ``[notifiers.<name>]`` section), by ``check-config`` and by ``build_notifiers``."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from secadero.errors import ConfigError
from secadero.server.notifiers import CHANNELS, Outgoing, build_notifiers, notifier_class
from secadero.server.notifiers.gammu import GammuNotifier
from secadero.server.notifiers.ntfy import NtfyNotifier
from secadero.server.notifiers.twilio import TwilioNotifier
from secadero.server.notifiers.twilio_voice import TwilioVoiceNotifier
from secadero.server.notifiers.webhook import WebhookNotifier
from secadero.settings import (
    PROVIDERS,
    GammuSettings,
    NotifierSettings,
    Provider,
    Section,
    check_file,
    load_server_settings,
)

ALL_FOUR = """
[notifiers]
sms_route = ["gammu", "twilio"]

[notifiers.webhook]
url = "https://chat.example/hook"

[notifiers.gammu]
smsdrc = "gammu-smsdrc"

[notifiers.ntfy]
url = "https://ntfy.example/"

[notifiers.twilio]
account_sid = "AC1"
auth_token_env = "TWILIO_TOKEN"
from_number = "+15005550006"
"""


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "server.toml"
    config.write_text(text)
    return config


def test_the_registry_names_each_notifier_by_its_own_name_and_channel() -> None:
    assert CHANNELS == ("sms", "push", "webhook", "voice")
    assert {name: (p.channel, notifier_class(p)) for name, p in PROVIDERS.items()} == {
        "ntfy": ("push", NtfyNotifier), "twilio": ("sms", TwilioNotifier),
        "twilio_voice": ("voice", TwilioVoiceNotifier),
        "gammu": ("sms", GammuNotifier), "webhook": ("webhook", WebhookNotifier)}
    for provider in PROVIDERS.values():
        cls = notifier_class(provider)
        assert (cls.name, cls.channel) == (provider.name, provider.channel)


def test_build_notifiers_makes_one_per_configured_section_in_registry_order(
        tmp_path: Path) -> None:
    settings = load_server_settings(write(tmp_path, ALL_FOUR), env={"TWILIO_TOKEN": "t0ken"})
    notifiers = settings.notifiers
    built = build_notifiers(notifiers)
    try:
        assert [(type(n), n.settings) for n in built] == [  # type: ignore[attr-defined]
            (NtfyNotifier, notifiers.ntfy), (TwilioNotifier, notifiers.twilio),
            (GammuNotifier, notifiers.gammu), (WebhookNotifier, notifiers.webhook)]
    finally:
        for notifier in built:
            notifier.close()
    assert notifiers.ntfy.url == "https://ntfy.example"
    assert notifiers.twilio.auth_token == "t0ken"
    assert notifiers.gammu == GammuSettings(smsdrc=tmp_path.resolve() / "gammu-smsdrc")
    assert notifiers.sms_route == ("gammu", "twilio")


def test_a_provider_without_a_section_is_off(tmp_path: Path) -> None:
    settings = load_server_settings(write(tmp_path, "[notifiers.ntfy]\n"), env={})
    assert [name for name, _ in settings.notifiers.configured] == ["ntfy"]
    assert (settings.notifiers.twilio, settings.notifiers.gammu,
            settings.notifiers.webhook) == (None, None, None)
    assert [type(n) for n in build_notifiers(settings.notifiers)] == [NtfyNotifier]


def test_only_registered_providers_are_attributes() -> None:
    with pytest.raises(KeyError, match="no notifier provider 'telegram'"):
        NotifierSettings().get("telegram")
    with pytest.raises(AttributeError, match="has no attribute 'telegram'"):
        NotifierSettings().telegram  # noqa: B018


def test_unknown_providers_and_routes_are_reported_as_before(tmp_path: Path) -> None:
    config = write(tmp_path, """
[notifiers]
sms_route = ["twilio", "fax"]
[notifiers.telegram]
token_env = "X"

[[yards]]
id = "norte"
latitude = -6.57
longitude = -76.14
[[yards.recipients]]
name = "Rosa"
channels = ["pigeon"]
""")
    assert check_file(config, env={}) == [
        f"{config}: yards[0].recipients[0].channels: "
        "'pigeon' is not one of sms, push, webhook, voice",
        f"{config}: notifiers.sms_route: 'fax' is not twilio or gammu",
        f"{config}: notifiers.telegram: unknown key",
    ]


@dataclass(frozen=True)
class EchoSettings:
    prefix: str = ">"


def read_echo(section: Section) -> EchoSettings:
    settings = EchoSettings(prefix=section.string("prefix", EchoSettings.prefix))
    section.finish()
    return settings


class EchoNotifier:
    """A provider that is no part of secadero: it only keeps what it was asked to send."""

    name = "echo"
    channel = "push"

    def __init__(self, settings: EchoSettings) -> None:
        self.settings = settings
        self.sent: list[str] = []

    def send(self, message: Outgoing) -> str | None:
        self.sent.append(f"{self.settings.prefix} {message.body}")
        return None

    def close(self) -> None:
        pass


def test_a_new_provider_is_its_module_and_one_registry_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROVIDERS, "echo", Provider(
        "echo", "push", EchoSettings, read_echo, f"{__name__}:EchoNotifier"))
    config = write(tmp_path, '[notifiers.echo]\nprefix = "!"\n')
    settings = load_server_settings(config, env={})
    assert settings.notifiers.echo == EchoSettings(prefix="!")
    [notifier] = build_notifiers(settings.notifiers)
    assert isinstance(notifier, EchoNotifier) and notifier.settings == EchoSettings(prefix="!")
    with pytest.raises(ConfigError) as caught:
        load_server_settings(write(tmp_path, "[notifiers.echo]\nprefix = 1\n"), env={})
    assert caught.value.problems == [
        f"{config}: notifiers.echo.prefix: must be a string, got int 1"]


def test_reading_a_config_with_every_notifier_never_imports_requests(repo_root: Path) -> None:
    """A node (without the server's packages) can check a server's file."""
    sample = repo_root / "server" / "alerts" / "alerts.example.toml"
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('requests', 'influxdb_client'):\n"
        "            raise ImportError('imported ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from secadero.settings import check_file, load_server_settings\n"
        "env = {'SECADERO_TWILIO_TOKEN': 't'}\n"
        f"assert check_file({str(sample)!r}, env=env) == []\n"
        f"notifiers = load_server_settings({str(sample)!r}, env=env).notifiers\n"
        "print(*[name for name, _ in notifiers.configured])\n"
        "print(*sorted(name for name in sys.modules if name.startswith('secadero.server')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ntfy twilio twilio_voice gammu\n\n"
