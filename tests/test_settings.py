"""Settings files: typed, validated at start-up, every problem reported as file: key: reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from secadero.cli import main
from secadero.errors import ConfigError
from secadero.settings import (
    SWITCHABLE_RULES,
    YardRules,
    check_file,
    load_node_settings,
    load_server_settings,
)

SERVER = """
[mqtt]
host = "broker.local"
port = 1883
username = "ingest"
password_env = "TEST_MQTT_PASSWORD"

[influxdb]
url = "http://127.0.0.1:8086/"
database = "secadero"

[[yards]]
id = "chazuta"
name = "Tendal Chazuta"
latitude = -6.57
longitude = -76.14
"""

NODE = """
[node]
yard = "chazuta"
id = "norte-1"
trays = ["t1", "t2"]
sample_interval_s = 10

[outbox]
path = "state/outbox.sqlite3"
"""


def write(tmp_path: Path, text: str, name: str = "settings.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_server_settings_load(tmp_path: Path) -> None:
    settings = load_server_settings(write(tmp_path, SERVER), env={"TEST_MQTT_PASSWORD": "s3"})
    assert settings.mqtt.host == "broker.local"
    assert settings.mqtt.password == "s3"
    assert "s3" not in repr(settings.mqtt)
    assert settings.influxdb.url == "http://127.0.0.1:8086"
    assert settings.yards[0].id == "chazuta"
    assert settings.yards[0].timezone == "America/Lima"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.mqtt.host = "elsewhere"  # type: ignore[misc]


def test_node_settings_resolve_paths_beside_the_file(tmp_path: Path) -> None:
    settings = load_node_settings(write(tmp_path, NODE), env={})
    assert settings.node == "norte-1"
    assert settings.trays == ("t1", "t2")
    assert settings.outbox.path == tmp_path.resolve() / "state" / "outbox.sqlite3"
    assert settings.mqtt.client_id == "node-chazuta-norte-1"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.secret"
    secret.write_text("from-file\n")
    text = SERVER.replace('password_env = "TEST_MQTT_PASSWORD"', 'password_file = "mqtt.secret"')
    assert load_server_settings(write(tmp_path, text), env={}).mqtt.password == "from-file"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """
[mqtt]
port = 70000
password = "plain"
hots = "typo"

[influxdb]
url = "127.0.0.1:8086"

[[yards]]
id = "Chazuta Norte"
latitude = -100
longitude = "west"
timezone = "Peru/Nowhere"
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_server_settings(path, env={})
    assert info.value.problems == [
        f"{path}: yards[0].id: 'Chazuta Norte' is not an id: 1-32 of a-z, 0-9 and '-', "
        "starting with a letter or digit",
        f"{path}: yards[0].latitude: must be at least -90, got -100",
        f"{path}: yards[0].longitude: must be a number, got str 'west'",
        f"{path}: yards[0].timezone: 'Peru/Nowhere' is not a tz-database time zone "
        "(e.g. America/Lima)",
        f"{path}: mqtt.port: must be at most 65535, got 70000",
        f"{path}: mqtt.password: secrets do not belong in the file: use password_env or "
        "password_file",
        f"{path}: mqtt.hots: unknown key",
        f"{path}: influxdb.url: must start with http:// or https://, got '127.0.0.1:8086'",
    ]


def test_missing_environment_secret(tmp_path: Path) -> None:
    path = write(tmp_path, SERVER)
    assert check_file(path, env={}) == [
        f"{path}: mqtt.password_env: environment variable TEST_MQTT_PASSWORD is not set"
    ]


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert check_file(missing) == [f"{missing}: cannot read: No such file or directory"]
    broken = write(tmp_path, "[node\n", "broken.toml")
    (problem,) = check_file(broken)
    assert problem.startswith(f"{broken}: invalid TOML: ")


def test_node_requires_its_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "[node]\ntrays = ['T1']\n")
    assert check_file(path) == [
        f"{path}: node.yard: is required",
        f"{path}: node.id: is required",
        f"{path}: node.trays: 'T1' is not an id",
    ]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, NODE, "node.toml")
    bad = write(tmp_path, "[node]\nyard = 'y'\nid = 'n'\nsample_interval_s = 0\n", "bad.toml")
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"
    assert main(["check-config", str(good), str(bad)]) == 1
    assert capsys.readouterr().out == (
        f"{good}: ok\n{bad}: node.sample_interval_s: must be at least 0.05, got 0\n"
    )


def test_the_commented_samples_are_valid(repo_root: Path) -> None:
    """The samples a technician copies load cleanly, once their secrets exist."""
    server = repo_root / "server" / "server.example.toml"
    assert check_file(server, env={}) == []
    alerts = repo_root / "server" / "alerts" / "alerts.example.toml"
    assert check_file(alerts, env={"SECADERO_TWILIO_TOKEN": "token"}) == []
    # The node's sample reads its broker password from a file on the Pi.
    node = repo_root / "edge" / "node.example.toml"
    assert check_file(node, env={}) == [
        f"{node}: mqtt.password_file: cannot read /etc/secadero/mqtt-password: "
        "No such file or directory"
    ]


def test_defaults_that_follow_other_keys(tmp_path: Path) -> None:
    """The few defaults that depend on another key: the TLS port, InfluxDB 2.x's keys."""
    text = SERVER.replace("port = 1883\n", "tls = true\n")
    assert load_server_settings(write(tmp_path, text), env={"TEST_MQTT_PASSWORD": "s"}
                                ).mqtt.port == 8883
    path = write(tmp_path, "[influxdb]\napi = 2\n")
    assert check_file(path, env={}) == [
        f"{path}: influxdb.token: is required: set token_env or token_file",
        f"{path}: influxdb.org: is required",
        f"{path}: influxdb.bucket: is required",
    ]


AREAS = """
[[yards.areas]]
name = "Norte"
nodes = ["norte-1"]

[[yards.areas]]
name = "Sur"
nodes = ["sur-1"]
trays = ["norte-1/t3"]
"""


def test_yard_areas_load(tmp_path: Path) -> None:
    settings = load_server_settings(write(tmp_path, SERVER + AREAS),
                                    env={"TEST_MQTT_PASSWORD": "s3"})
    (yard,) = settings.yards
    assert [(a.name, a.nodes, a.trays) for a in yard.areas] == [
        ("Norte", ("norte-1",), ()), ("Sur", ("sur-1",), ("norte-1/t3",))]
    # A node's trays are in its area, unless a tray is listed in another by itself.
    assert yard.area_of_tray("norte-1/t1") == "Norte"
    assert yard.area_of_tray("norte-1/t3") == "Sur"
    assert yard.place_names(trays=["sur-1/t1", "norte-1/t3", "norte-1/t2"]) == ("Norte", "Sur")
    assert yard.place_names(nodes=["oeste-1"]) == ("oeste-1",)


def test_a_yard_without_areas_names_no_places(tmp_path: Path) -> None:
    settings = load_server_settings(write(tmp_path, SERVER), env={"TEST_MQTT_PASSWORD": "s3"})
    assert settings.yards[0].areas == ()
    assert settings.yards[0].place_names(trays=["norte-1/t1"]) == ()


def test_check_config_refuses_a_node_or_tray_in_two_areas_or_in_none(tmp_path: Path) -> None:
    text = SERVER + """
[[yards.areas]]
name = "Norte"
nodes = ["norte-1", "sur-1"]
trays = ["oeste-1/t1", "norte-1/t2"]

[[yards.areas]]
name = "Sur"
nodes = ["sur-1"]
trays = ["norte-1/t2"]

[[yards.areas]]
name = "Sur"
nodes = ["Sur 2"]
trays = ["t1"]

[[yards.areas]]
name = "Vacio"
nodes = []
"""
    path = write(tmp_path, text)
    assert check_file(path, env={"TEST_MQTT_PASSWORD": "s3"}) == [
        f"{path}: yards[0].areas[2].nodes: 'Sur 2' is not a node id like 'sur-1'",
        f"{path}: yards[0].areas[2].trays: 't1' is not a node/tray id like 'sur-1/t1'",
        f"{path}: yards[0].areas[3].nodes: an area needs at least one node or tray",
        f"{path}: yards[0].areas: two areas are named 'Sur'",
        f"{path}: yards[0].areas: node 'sur-1' is in two areas: 'Norte' and 'Sur'",
        f"{path}: yards[0].areas: tray 'norte-1/t2' is in two areas: 'Norte' and 'Sur'",
        f"{path}: yards[0].areas: node 'oeste-1' (of tray 'oeste-1/t1') is in no area: "
        "list it in the nodes of one",
    ]


def test_check_config_refuses_a_node_file_whose_node_is_in_no_area(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", "s3")
    server = write(tmp_path, SERVER + AREAS, "server.toml")
    placed = write(tmp_path, NODE, "norte-1.toml")
    stray = write(tmp_path, NODE.replace('id = "norte-1"', 'id = "oeste-2"'), "oeste-2.toml")
    assert main(["check-config", str(server), str(placed)]) == 0
    capsys.readouterr()
    assert main(["check-config", str(server), str(placed), str(stray)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{server}: ok",
        f"{placed}: ok",
        f"{stray}: node.id: node 'oeste-2' and its trays t1, t2 are in no area of yard "
        "'chazuta': add the node to one of its [[yards.areas]]",
    ]
    # A node file checked alone, or with a yard without areas, is fine as before.
    assert main(["check-config", str(stray)]) == 0
    assert main(["check-config", "-q", str(write(tmp_path, SERVER, "plain.toml")),
                 str(stray)]) == 0


YARD_RULES = """
[alerts]
raise_prob_pct = 60
node_silent_min = 10

[yards.rules.humidity_surge]
enabled = false

[yards.rules.rain_forecast]
raise_prob_pct = 75
clear_prob_pct = 40

[yards.rules.node_offline]
node_silent_min = 30
"""


def test_every_rule_can_be_switched_off_or_tuned_per_yard(tmp_path: Path) -> None:
    env = {"TEST_MQTT_PASSWORD": "s3"}
    plain = load_server_settings(write(tmp_path, SERVER), env=env).yards[0]
    assert plain.rules == YardRules()
    assert all(plain.rule_on(rule) for rule in SWITCHABLE_RULES)
    assert SWITCHABLE_RULES == ("rain_forecast", "rain_now", "trays_out", "humidity_surge",
                                "node_offline", "forecast_stale", "provider_failing")
    tuned = load_server_settings(write(tmp_path, SERVER + YARD_RULES), env=env)
    assert tuned.yards[0].rules == YardRules(
        off=frozenset({"humidity_surge"}),
        tuned=(("clear_prob_pct", 40.0), ("node_silent_min", 30.0), ("raise_prob_pct", 75.0)))
    assert not tuned.yards[0].rule_on("humidity_surge")
    assert tuned.yards[0].rule_on("rain_forecast")
    # [alerts] stays every other yard's value.
    assert (tuned.alerts.raise_prob_pct, tuned.alerts.node_silent_min) == (60.0, 10.0)


def test_check_config_names_each_bad_yard_rule(tmp_path: Path) -> None:
    env = {"TEST_MQTT_PASSWORD": "s3"}
    bad = write(tmp_path, SERVER + """
[yards.rules]
raise_prob_pct = 70

[yards.rules.humidity_surge]
enabled = "no"
raise_prob_pct = 70
humidity_rise_pct = 0

[yards.rules.rain_forecast]
clear_prob_pct = 80

[yards.rules.all_clear]
enabled = false
all_clear_hours = 72

[yards.rules.trays_out]
voice_after_escalations = 2.5

[yards.rules.rain_soon]
enabled = false
""")
    assert check_file(bad, env=env) == [
        f"{bad}: yards[0].rules.rain_forecast.clear_prob_pct: must not be above raise_prob_pct "
        "(80 > 60: hysteresis)",
        f"{bad}: yards[0].rules.all_clear.enabled: all_clear cannot be switched off: it is how "
        "a rain episode ends",
        f"{bad}: yards[0].rules.all_clear.all_clear_hours: must be at most 48, got 72",
        f"{bad}: yards[0].rules.trays_out.voice_after_escalations: must be an integer, got "
        "float 2.5",
        f"{bad}: yards[0].rules.humidity_surge.enabled: must be true or false, got str 'no'",
        f"{bad}: yards[0].rules.humidity_surge.humidity_rise_pct: must be at least 1, got 0",
        f"{bad}: yards[0].rules.humidity_surge.raise_prob_pct: a threshold of rule "
        "rain_forecast: write it in [yards.rules.rain_forecast]",
        f"{bad}: yards[0].rules.raise_prob_pct: a threshold of rule rain_forecast: write it in "
        "[yards.rules.rain_forecast]",
        f"{bad}: yards[0].rules.rain_soon: is not a rule; the rules are rain_forecast, "
        "rain_now, all_clear, repeats, trays_out, humidity_surge, node_offline, "
        "forecast_stale, provider_failing",
    ]
    # The flat switch of before says where it went.
    old = write(tmp_path, SERVER.replace('longitude = -76.14\n',
                                         'longitude = -76.14\nhumidity_surge = false\n'),
                "old.toml")
    assert check_file(old, env=env) == [
        f"{old}: yards[0].humidity_surge: moved: write [yards.rules.humidity_surge] with "
        "enabled = false"]
