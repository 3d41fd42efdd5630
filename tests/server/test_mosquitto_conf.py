"""The production broker config: written from the [broker] settings, and run on the real
Mosquitto.

``server/mosquitto.conf`` is the generator's output for the default settings.
For the run, the settings point at a temp folder and free loopback ports; the
certificates are made with openssl (a private CA, as docs/security.md tells a
technician) and the users by the code of ``secadero broker init`` / ``nodes add``.
Checks: anonymous and wrong-password clients are refused on both listeners, a node
gets in over TLS with the CA's certificate and publishes its own telemetry to the
server's user. The whole ACL matrix is in test_broker_acl.py.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import make_certificates
from paho.mqtt.enums import CallbackAPIVersion

from secadero.devservices import free_port, wait_for_port
from secadero.server.broker.config import render_mosquitto_conf
from secadero.server.broker.users import BrokerFiles, BrokerUser, new_secret
from secadero.settings import BrokerSettings
from secadero.settings.broker import load_broker_settings


def test_the_shipped_file_is_the_generators_output_for_the_default_settings(
        repo_root: Path) -> None:
    shipped = (repo_root / "server" / "mosquitto.conf").read_text()
    assert render_mosquitto_conf(BrokerSettings()) == shipped, (
        "server/mosquitto.conf is out of date: `secadero broker config > server/mosquitto.conf`")


def test_the_settings_are_the_values_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[broker]\nusers_dir = "broker"\nlocal_port = 1884\ntls_port = 8884\n'
                      'tls_bind = "192.168.4.1"\nmax_queued_messages = 200000\n'
                      'max_queued_bytes = 300000000\nlog_dest = "/var/log/m.log"\n')
    text = render_mosquitto_conf(load_broker_settings(config))
    lines = set(text.splitlines())
    assert {"listener 1884 127.0.0.1", "listener 8884 192.168.4.1",
            f"password_file {tmp_path}/broker/passwd", f"acl_file {tmp_path}/broker/acl",
            "max_queued_messages 200000", "max_queued_bytes 300000000",
            "log_dest file /var/log/m.log", "allow_anonymous false",
            "tls_version tlsv1.2"} <= lines


def test_wrong_broker_settings_name_the_key(tmp_path: Path) -> None:
    from secadero.errors import ConfigError

    config = tmp_path / "server.toml"
    config.write_text('[broker]\ntls_port = 1883\nmax_queued_messages = 10\nlog_dest = "a b"\n'
                      'colour = "red"\n')
    with pytest.raises(ConfigError) as caught:
        load_broker_settings(config)
    assert caught.value.problems == [
        f"{config}: broker.max_queued_messages: must be at least 1000, got 10",
        f"{config}: broker.tls_port: must differ from local_port",
        f"{config}: broker.log_dest: 'a b' must not contain spaces",
        f"{config}: broker.colour: unknown key",
    ]


# ------------------------------------------------------------ on the real broker


def _connect(port: int, username: str | None, password: str | None, *,
             ca_file: Path | None = None) -> tuple[Any, Any]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{username}",
                         protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    if ca_file:
        client.tls_set(ca_certs=str(ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(c: Any, u: Any, flags: Any, reason_code: Any, props: Any) -> None:
        result["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert done.wait(10)
    if result["rc"].is_failure:
        client.loop_stop()
    return client, result["rc"]


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp folder the ``mosquitto`` user can read: started as root, Mosquitto drops
    to that user (the generated config has no ``user`` line, as in production), and
    pytest's own temp folders are private to root."""
    path = Path(tempfile.mkdtemp(prefix="secadero-mosquitto-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_generated_config_refuses_strangers_and_lets_a_node_in_over_tls(
        open_tmp: Path) -> None:
    tmp = open_tmp
    certs = tmp / "certs"
    certs.mkdir()
    make_certificates(certs)
    (tmp / "data").mkdir()
    (tmp / "data").chmod(0o777)
    log = tmp / "mosquitto.log"
    log.touch()
    log.chmod(0o666)
    settings = replace(
        BrokerSettings(), users_dir=tmp / "users", local_port=free_port(),
        tls_port=free_port(), tls_bind="127.0.0.1", cert_file=certs / "server.crt",
        key_file=certs / "server.key", ca_file=certs / "ca.crt", persistence_dir=tmp / "data",
        log_dest=str(log))
    files = BrokerFiles(settings.users_dir)
    secrets = {name: new_secret() for name in ("secadero-server", "norte.n1")}
    files.add(BrokerUser("secadero-server", "server"), secrets["secadero-server"])
    files.add(BrokerUser("norte.n1", "node", "norte", "n1"), secrets["norte.n1"])
    # Written by root, the files are root:mosquitto 0640 (BrokerFiles), as in production.
    conf = tmp / "mosquitto.conf"
    conf.write_text(render_mosquitto_conf(settings))
    text = conf.read_text()
    # The queue limits docs/operations.md promises are really in the file.
    assert int(re.search(r"^max_queued_messages (\d+)", text, re.M).group(1)) >= 200_000
    assert re.search(r"^max_queued_bytes \d+", text, re.M)
    assert re.search(r"^persistence true", text, re.M)
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        wait_for_port(settings.local_port, process=broker, log=log)
        wait_for_port(settings.tls_port, process=broker, log=log)
        for port, ca in ((settings.local_port, None), (settings.tls_port, certs / "ca.crt")):
            _, rc = _connect(port, None, None, ca_file=ca)
            assert str(rc) == "Not authorized"
            # Mosquitto 2.0.11 answers a wrong password with 0x87 too (MQTT 5).
            _, rc = _connect(port, "norte.n1", "wrong", ca_file=ca)
            assert str(rc) == "Not authorized"

        server, rc = _connect(settings.local_port, "secadero-server",
                              secrets["secadero-server"])
        assert not rc.is_failure
        received: list[str] = []
        got = threading.Event()
        subscribed = threading.Event()
        server.on_message = lambda c, u, m: (received.append(m.topic), got.set())
        server.on_subscribe = lambda *a: subscribed.set()
        server.subscribe([("secadero/v1/+/+/telemetry", 1)])
        assert subscribed.wait(5)
        node, rc = _connect(settings.tls_port, "norte.n1", secrets["norte.n1"],
                            ca_file=certs / "ca.crt")
        assert not rc.is_failure
        node.publish("secadero/v1/norte/n1/telemetry", b"{}", qos=1).wait_for_publish(5)
        assert got.wait(5)
        assert received == ["secadero/v1/norte/n1/telemetry"]
        for client in (server, node):
            client.disconnect()
            client.loop_stop()
    finally:
        broker.terminate()
        broker.wait(10)


def test_broker_config_prints_or_writes_the_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from secadero.cli import main

    config = tmp_path / "server.toml"
    config.write_text(f'[broker]\nconf_file = "{tmp_path}/conf.d/secadero.conf"\n'
                      'max_queued_messages = 250000\n')
    expected = render_mosquitto_conf(load_broker_settings(config))
    assert main(["broker", "config", "--config", str(config)]) == 0
    assert capsys.readouterr().out == expected
    assert main(["broker", "config", "--config", str(config), "--write", "--no-reload"]) == 0
    assert (tmp_path / "conf.d" / "secadero.conf").read_text() == expected
    assert "max_queued_messages 250000\n" in expected
