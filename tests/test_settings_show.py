"""``secadero check-config --show``: the effective settings, every secret redacted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secadero.cli import main
from secadero.settings.show import effective, redact_url

SECRETS = {"TEST_MQTT_PW": "mqtt-Secret-1", "TEST_INFLUX_PW": "influx-Secret-2",
           "TEST_TWILIO": "twilio-Secret-3", "TEST_ACK": "ack-secret-long-enough-4",
           "TEST_NTFY": "ntfy-Secret-5"}
URL_PASSWORD = "url-Secret-6"


def write_server(tmp_path: Path) -> Path:
    (tmp_path / "hook.secret").write_text("webhook-Secret-7\n")
    config = tmp_path / "server.toml"
    config.write_text(f"""
[mqtt]
username = "server"
password_env = "TEST_MQTT_PW"

[influxdb]
url = "http://writer:{URL_PASSWORD}@127.0.0.1:8086"
username = "writer"
password_env = "TEST_INFLUX_PW"

[alerts]
api_port = 9111
ack_secret_env = "TEST_ACK"

[notifiers.ntfy]
url = "https://ntfy.example"
token_env = "TEST_NTFY"

[notifiers.twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token_env = "TEST_TWILIO"
from_number = "+15005550006"

[notifiers.webhook]
url = "https://hooks.example/x"
secret_file = "hook.secret"

[[yards]]
id = "norte"
name = "Norte"
latitude = -6.57
longitude = -76.14
""")
    return config


def test_show_prints_the_effective_settings_without_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    config = write_server(tmp_path)
    assert main(["check-config", "--show", str(config)]) == 0
    out = capsys.readouterr().out
    for secret in [*SECRETS.values(), URL_PASSWORD, "webhook-Secret-7"]:
        assert secret not in out
    shown = json.loads(out)
    assert shown["file"] == str(config)
    settings = shown["settings"]
    assert settings["influxdb"]["url"] == "http://writer:***@127.0.0.1:8086"
    assert (settings["influxdb"]["username"], settings["influxdb"]["password"],
            settings["influxdb"]["token"]) == ("writer", "***", None)
    assert (settings["mqtt"]["username"], settings["mqtt"]["password"]) == ("server", "***")
    assert settings["alerts"]["ack_secret"] == "***"
    assert settings["alerts"]["api_port"] == 9111  # set in the file
    assert settings["alerts"]["ack_token_ttl_h"] == 12.0  # a default, filled in
    assert settings["alerts"]["database"] == str(tmp_path / "var" / "alerts.sqlite3")
    assert settings["accounts"]["session_ttl_h"] == 12.0
    notifiers = settings["notifiers"]
    assert notifiers["twilio"]["auth_token"] == "***"
    assert notifiers["ntfy"]["token"] == "***"
    assert notifiers["webhook"]["secret"] == "***"
    assert settings["yards"][0]["id"] == "norte"


def test_show_a_node_file_and_a_bad_file(tmp_path: Path, repo_root: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # The commented sample node file, its MQTT password in a file of its own.
    (tmp_path / "mqtt-password").write_text("node-Secret-8\n")
    node = tmp_path / "node.toml"
    node.write_text((repo_root / "edge" / "node.example.toml").read_text().replace(
        "/etc/secadero/mqtt-password", str(tmp_path / "mqtt-password")))
    assert main(["check-config", "--show", str(node)]) == 0
    out = capsys.readouterr().out
    assert "node-Secret-8" not in out
    shown = json.loads(out)["settings"]
    assert (shown["mqtt"]["password"], shown["mqtt"]["tls"]) == ("***", True)
    # A file with problems: the problems, no settings.
    config = write_server(tmp_path)
    assert main(["check-config", "--show", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"{config}: mqtt.password_env: environment variable TEST_MQTT_PW is not set" in out
    assert "{" not in out


@pytest.mark.parametrize(("url", "shown"), [
    ("http://u:p@h:8086/x?y=1", "http://u:***@h:8086/x?y=1"),
    ("https://user:p%40ss@host", "https://user:***@host"),
    ("http://:pw@host", "http://:***@host"),
    ("http://user@host", "http://user@host"),
    ("http://host:8086", "http://host:8086"),
    ("mqtts://a:b@broker:8883", "mqtts://a:***@broker:8883"),
    ("not a url @ all", "not a url @ all"),
    ("http://[bad@", "http://[bad@"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_effective_redacts_by_the_field_not_the_value() -> None:
    from secadero.settings import InfluxSettings

    shown = effective(InfluxSettings(password="", token=None))
    assert (shown["password"], shown["token"]) == ("***", None)
