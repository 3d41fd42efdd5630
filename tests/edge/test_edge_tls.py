"""TLS and username/password from the node's settings, against a real Mosquitto TLS listener.

Certificates are made for the test by the ``openssl`` command (a throw-away
CA and a server certificate for 127.0.0.1); the password file by
``mosquitto_passwd``. A wrong password is refused by the broker: the node
keeps running, keeps measuring and keeps trying.
"""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
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


def make_certificates(directory: Path) -> None:
    def run(*argv: str) -> None:
        subprocess.run(argv, cwd=directory, check=True, capture_output=True, timeout=60)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "2", "-subj", "/CN=secadero test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
        "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    for name in ("server.key", "server.crt", "ca.crt"):
        (directory / name).chmod(0o644)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Any:
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(certs / "passwords"), "norte-n1",
                    "right horse battery"], check=True, capture_output=True, timeout=30)
    (certs / "passwords").chmod(0o644)
    tls_port = free_port()
    # Started as root, Mosquitto drops to the "mosquitto" user and then cannot read
    # pytest's private temporary directory; keep the user we run as.


    broker = Mosquitto(workdir=tmp_path / "mosquitto", extra_config=(
        f"user {getpass.getuser()}\n"
        f"password_file {certs / 'passwords'}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\n"
        f"keyfile {certs / 'server.key'}\ntls_version tlsv1.2\n")).start()
    broker.tls_port = tls_port  # type: ignore[attr-defined]
    broker.certs = certs  # type: ignore[attr-defined]
    yield broker
    broker.stop()


def tls_config(tmp_path: Path, broker: Any, yard: str, password: str) -> Path:
    secret = tmp_path / "mqtt-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    config = write_node_config(tmp_path, yard=yard, port=broker.tls_port)
    text = config.read_text().replace(
        "[mqtt]\n", f'[mqtt]\ntls = true\nca_file = "{broker.certs / "ca.crt"}"\n'
                    f'username = "norte-n1"\npassword_file = "{secret}"\n')
    config.write_text(text)
    return config


def test_node_connects_over_tls_with_its_password(tls_broker: Any, unique_name: str,
                                                  tmp_path: Path, node_processes: Any) -> None:
    listener = Listener(tls_broker.port, unique_name)  # plain loopback listener, anonymous
    try:
        node = node_processes(tls_config(tmp_path, tls_broker, unique_name,
                                         "right horse battery"))
        listener.wait_for(lambda env: len(listener.seqs()) >= 3)
        assert node.terminate()[0] == 0
    finally:
        listener.close()


def test_wrong_password_is_refused_and_the_node_keeps_measuring(
        tls_broker: Any, unique_name: str, tmp_path: Path, node_processes: Any) -> None:
    listener = Listener(tls_broker.port, unique_name)
    try:
        config = tls_config(tmp_path, tls_broker, unique_name, "wrong")
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
