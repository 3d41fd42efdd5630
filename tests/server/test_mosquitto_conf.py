"""The shipped production broker config (server/mosquitto.conf) runs on the real Mosquitto.

Paths and ports are rewritten to a temp folder and free loopback ports; the
certificates are made with openssl and the password file with mosquitto_passwd,
as docs/operations.md tells an operator to. Checks: anonymous clients are
refused, the ACL keeps a node to its own topics, the ingest user gets in.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from secadero.devservices import free_port, wait_for_port

pytestmark = pytest.mark.integration

ACL = """\
# The server: reads what the nodes send, writes acks and alerts.
user ingest
topic read secadero/v1/+/+/telemetry
topic read secadero/v1/+/+/event
topic read secadero/v1/+/+/status
topic write secadero/v1/+/+/ack
topic readwrite secadero/v1/+/alert
topic readwrite secadero-ingest/v1/#

# One block per node: its own topics only.
user norte-n1
topic write secadero/v1/norte/n1/telemetry
topic write secadero/v1/norte/n1/event
topic readwrite secadero/v1/norte/n1/status
topic read secadero/v1/norte/n1/ack
topic read secadero/v1/norte/alert
"""


def _conf_for_test(repo_root: Path, tmp: Path, plain_port: int, tls_port: int) -> Path:
    text = (repo_root / "server" / "mosquitto.conf").read_text()
    text = text.replace("listener 1883 127.0.0.1", f"listener {plain_port} 127.0.0.1")
    text = text.replace("listener 8883", f"listener {tls_port} 127.0.0.1")
    text = text.replace("/etc/mosquitto/certs/", f"{tmp}/")
    text = text.replace("/etc/mosquitto/", f"{tmp}/")
    text = text.replace("/var/lib/mosquitto/", f"{tmp}/data/")
    text = text.replace("log_dest syslog", f"log_dest file {tmp}/mosquitto.log")
    assert "/etc/" not in text and "/var/" not in text
    conf = tmp / "mosquitto.conf"
    conf.write_text(text)
    return conf


def _connect(port: int, username: str | None, password: str | None) -> Any:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{username}",
                         protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(c: Any, u: Any, flags: Any, reason_code: Any, props: Any) -> None:
        result["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert done.wait(10)
    return client, result["rc"]


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp folder the ``mosquitto`` user can read: started as root, Mosquitto drops
    to that user, and pytest's own temp folders are private to root."""
    path = Path(tempfile.mkdtemp(prefix="secadero-mosquitto-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_production_config_refuses_anonymous_and_enforces_the_acl(
        open_tmp: Path, repo_root: Path) -> None:
    tmp_path = open_tmp
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(tmp_path / "server.key"),
                    "-out", str(tmp_path / "server.crt")], check=True, capture_output=True)
    shutil.copy(tmp_path / "server.crt", tmp_path / "ca.crt")
    passwd = tmp_path / "secadero.passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "ingest", "ingest-pw"],
                   check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "norte-n1", "n1-pw"], check=True)
    (tmp_path / "secadero.acl").write_text(ACL)
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    (tmp_path / "data").mkdir()
    (tmp_path / "data").chmod(0o777)
    (tmp_path / "mosquitto.log").touch(mode=0o666)
    (tmp_path / "mosquitto.log").chmod(0o666)
    plain_port, tls_port = free_port(), free_port()
    conf = _conf_for_test(repo_root, tmp_path, plain_port, tls_port)
    # The queue limits the doc promises are really in the file.
    text = conf.read_text()
    assert int(re.search(r"^max_queued_messages (\d+)", text, re.M).group(1)) >= 200_000
    assert re.search(r"^max_queued_bytes \d+", text, re.M)
    assert re.search(r"^persistence true", text, re.M)
    assert re.search(r"^allow_anonymous false", text, re.M)
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        wait_for_port(plain_port, process=broker, log=tmp_path / "mosquitto.log")
        wait_for_port(tls_port, process=broker, log=tmp_path / "mosquitto.log")
        anonymous, rc = _connect(plain_port, None, None)
        assert rc.is_failure and str(rc) == "Not authorized"
        anonymous.loop_stop()
        wrong, rc = _connect(plain_port, "ingest", "wrong")
        assert rc.is_failure
        wrong.loop_stop()

        ingest, rc = _connect(plain_port, "ingest", "ingest-pw")
        assert not rc.is_failure
        received: list[str] = []
        got = threading.Event()
        subscribed = threading.Event()
        ingest.on_message = lambda c, u, m: (received.append(m.topic), got.set())
        ingest.on_subscribe = lambda *a: subscribed.set()
        ingest.subscribe([("secadero/v1/+/+/telemetry", 1)])
        assert subscribed.wait(5)
        node, rc = _connect(plain_port, "norte-n1", "n1-pw")
        assert not rc.is_failure
        # Another node's topic is dropped by the ACL; its own goes through.
        node.publish("secadero/v1/norte/n2/telemetry", b"{}", qos=1).wait_for_publish(5)
        node.publish("secadero/v1/norte/n1/telemetry", b"{}", qos=1).wait_for_publish(5)
        assert got.wait(5)
        assert received == ["secadero/v1/norte/n1/telemetry"]
        for client in (ingest, node):
            client.disconnect()
            client.loop_stop()
    finally:
        broker.terminate()
        broker.wait(10)
