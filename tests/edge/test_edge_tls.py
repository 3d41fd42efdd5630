"""TLS and username/password from the node's settings, against a real Mosquitto TLS listener.

Certificates are made for the test by the ``openssl`` command (a throw-away
CA and a server certificate for 127.0.0.1, conftest's ``make_certificates``); the
node's user by the broker's ``add_node`` (the code of ``secadero nodes add``).
A wrong password is refused by the broker: the node
keeps running, keeps measuring and keeps trying.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import make_certificates
from node_helpers import (  # noqa: F401 (fixtures are found by their names)
    Listener,
    node_processes_fixture,
    outbox_seqs,
    wait_until,
    write_node_config,
)

from secadero.devservices import Mosquitto, free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (shutil.which("openssl") and shutil.which(
                  "mosquitto_passwd")), reason="needs openssl and mosquitto_passwd")]


@pytest.fixture
def tls_broker(tmp_path: Path) -> Any:
    """The private broker (its users and ACL as in production) with a TLS listener too."""
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs)
    tls_port = free_port()
    broker = Mosquitto(workdir=tmp_path / "mosquitto", extra_config=(
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\n"
        f"keyfile {certs / 'server.key'}\ntls_version tlsv1.2\n")).start()
    broker.tls_port = tls_port  # type: ignore[attr-defined]
    broker.certs = certs  # type: ignore[attr-defined]
    yield broker
    broker.stop()


def tls_config(tmp_path: Path, broker: Any, yard: str, *, wrong_password: bool = False
               ) -> Path:
    """The node's settings as `secadero nodes add` prints them: its own user, over TLS."""
    username, _ = broker.add_node(yard, "n1")
    if wrong_password:
        broker.secret_file(username).write_text("wrong\n")
    config = write_node_config(tmp_path, yard=yard, broker=broker, username=username,
                               port=broker.tls_port)
    text = config.read_text().replace(
        "[mqtt]\n", f'[mqtt]\ntls = true\nca_file = "{broker.certs / "ca.crt"}"\n')
    config.write_text(text)
    return config


def test_node_connects_over_tls_with_its_password(tls_broker: Any, unique_name: str,
                                                  tmp_path: Path, node_processes: Any) -> None:
    listener = Listener(tls_broker, unique_name)  # the plain loopback listener
    try:
        node = node_processes(tls_config(tmp_path, tls_broker, unique_name))
        listener.wait_for(lambda env: len(listener.seqs()) >= 3)
        assert node.terminate()[0] == 0
    finally:
        listener.close()


def test_wrong_password_is_refused_and_the_node_keeps_measuring(
        tls_broker: Any, unique_name: str, tmp_path: Path, node_processes: Any) -> None:
    listener = Listener(tls_broker, unique_name)
    try:
        config = tls_config(tmp_path, tls_broker, unique_name, wrong_password=True)
        node = node_processes(config)
        db = tmp_path / "n1.sqlite3"
        status = tmp_path / "n1.sqlite3.status.json"

        def refused_twice() -> bool:
            try:
                report = json.loads(status.read_text())
            except (OSError, ValueError):
                return False
            return report["mqtt"]["connected"] is False and report["counters"].get(
                "samples", 0) >= 10

        wait_until(refused_twice, timeout_s=15)
        assert node.process.poll() is None
        assert len(outbox_seqs(db)) >= 10
        assert listener.seqs() == []
        assert node.terminate()[0] == 0
        assert "not authorised" in node.stderr().lower() or \
            "not authorized" in node.stderr().lower()
    finally:
        listener.close()
