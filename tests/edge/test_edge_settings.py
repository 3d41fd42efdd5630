"""The node's settings: the commented sample loads, and the [hardware] wiring is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from secadero.errors import ConfigError
from secadero.settings import (
    DEFAULT_TRAY_PINS,
    HardwareSettings,
    MqttSettings,
    NodeSettings,
    OutboxSettings,
    load_node_settings,
)


def test_the_sample_config_loads(repo_root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    text = (repo_root / "edge" / "node.example.toml").read_text()
    text = text.replace("/etc/secadero/mqtt-password", str(secret))
    config = tmp_path / "node.toml"
    config.write_text(text)
    settings = load_node_settings(config)
    assert (settings.yard, settings.node, settings.trays) == ("norte", "n1", ("t1", "t2"))
    assert settings.hardware == "raspberry-pi" and settings.clock == "ntp"
    assert settings.mqtt.password == "s3cret" and settings.mqtt.tls
    pins = settings.pins
    assert (pins.dht_pin, pins.rain_plate_pin, pins.gauge_pin) == (4, 17, 27)
    assert pins.tray_pins == (("t1", 5, 6), ("t2", 12, 13))


def write(tmp_path: Path, hardware: str, trays: str = '["t1"]', node_extra: str = "") -> Path:
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nyard = "y"\nid = "n"\ntrays = {trays}\n{node_extra}\n'
                      f"[hardware]\n{hardware}\n")
    return config


def test_defaults_when_simulated(tmp_path: Path) -> None:
    settings = load_node_settings(write(tmp_path, "", trays='["a", "b", "c"]'))
    assert settings.clock == "trusted"
    assert settings.pins.tray_pins == (("a", 5, 6), ("b", 12, 13), ("c", 16, 19))
    assert settings.pins.gauge_pin == 27


def test_no_gauge_and_single_switch_trays(tmp_path: Path) -> None:
    settings = load_node_settings(write(tmp_path, "gauge = false\n[hardware.trays]\nt1 = [7]"))
    assert settings.pins.gauge_pin is None
    assert settings.pins.tray_pins == (("t1", 7, None),)


@pytest.mark.parametrize(("hardware", "trays", "problem"), [
    ("beacon_pin = 17", '["t1"]', "hardware.beacon_pin: GPIO 17 is already used by "
                                  "rain_plate_pin"),
    ("[hardware.trays]\nt1 = [4, 40]", '["t1"]', "hardware.trays.t1: must be"),
    ("", '["a", "b", "c", "d", "e"]', "hardware.trays.e: no default pins"),
    ("climate_sensor = \"bme280\"", '["t1"]', "hardware.climate_sensor: must be one of"),
    ("wet_after_s = 2", '["t1"]', "hardware.wet_after_s: must be at most 0.9"),
])
def test_wiring_problems_are_reported(tmp_path: Path, hardware: str, trays: str,
                                      problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_node_settings(write(tmp_path, hardware, trays))
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_clock_choice_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.clock: must be one of ntp, trusted"):
        load_node_settings(write(tmp_path, "", node_extra='clock = "gps"'))


def test_empty_node_sections_give_the_dataclass_defaults(tmp_path: Path) -> None:
    """Each default is written once, in its dataclass; the reader takes it from there."""
    config = tmp_path / "node.toml"
    config.write_text('[node]\nyard = "y"\nid = "n"\n[outbox]\n[mqtt]\n[hardware]\n')
    settings = load_node_settings(config, env={})
    directory = tmp_path.resolve()
    assert settings == NodeSettings(
        source=directory, yard="y", node="n",
        # The two defaults that depend on the rest of the file: the client id on the
        # node's ids, the tray switches on the node's trays.
        mqtt=MqttSettings(client_id="node-y-n"),
        outbox=OutboxSettings(path=directory / OutboxSettings().path),
        pins=HardwareSettings(tray_pins=(("t1", *DEFAULT_TRAY_PINS[0]),)),
        calibration_file=directory / "humidity-calibration.json")
    assert settings.outbox.path == directory / "var" / "outbox.sqlite3"
    assert (settings.trays, settings.sample_interval_s) == (("t1",), 10.0)


def test_a_raspberry_pi_waits_for_ntp_unless_told(tmp_path: Path) -> None:
    settings = load_node_settings(write(tmp_path, "", node_extra='hardware = "raspberry-pi"'))
    assert settings.clock == "ntp"
    settings = load_node_settings(write(tmp_path, "", node_extra='hardware = "raspberry-pi"\n'
                                                                 'clock = "trusted"'))
    assert settings.clock == "trusted"
