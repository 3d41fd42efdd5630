"""``secadero nodes add|remove|list|rotate`` and ``secadero broker init``: the files they write.

The password file is made by the real ``mosquitto_passwd``; that the broker
accepts it and enforces the ACL is in tests/server/test_broker_acl.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from secadero.cli import main
from secadero.server.broker.users import (
    BrokerFiles,
    BrokerUser,
    BrokerUsersError,
    acl_lines,
    node_username,
    render_acl,
)

NODE_ACL = [
    "topic write secadero/v1/norte/n1/telemetry",
    "topic write secadero/v1/norte/n1/event",
    "topic write secadero/v1/norte/n1/status",
    "topic read secadero/v1/norte/n1/ack",
    "topic read secadero/v1/norte/alert",
]


def test_a_node_may_publish_its_own_topics_and_read_its_ack_and_yard_alert() -> None:
    assert acl_lines(BrokerUser("norte.n1", "node", "norte", "n1")) == NODE_ACL


def test_the_server_reads_every_node_and_writes_acks_alerts_and_its_share_group() -> None:
    assert acl_lines(BrokerUser("secadero-server", "server")) == [
        "topic read secadero/v1/+/+/telemetry",
        "topic read secadero/v1/+/+/event",
        "topic read secadero/v1/+/+/status",
        "topic write secadero/v1/+/+/ack",
        "topic readwrite secadero/v1/+/alert",
        "topic readwrite secadero-ingest/v1/#",
    ]


def test_the_read_only_user_reads_the_yards_and_the_broker_figures_only() -> None:
    assert acl_lines(BrokerUser("grafana", "readonly")) == [
        "topic read secadero/v1/#", "topic read $SYS/#"]


def test_the_acl_file_has_explicit_lines_per_user_and_no_patterns() -> None:
    text = render_acl([BrokerUser("norte.n1", "node", "norte", "n1"),
                       BrokerUser("secadero-server", "server")])
    assert "pattern" not in text.replace("No pattern lines", "")
    assert "%u" not in text
    blocks = text.split("\n\n")[1:]
    assert blocks[0].splitlines() == ["# node norte/n1", "user norte.n1", *NODE_ACL]
    assert blocks[1].splitlines()[:2] == ["# server", "user secadero-server"]


def test_node_usernames_cannot_collide_and_bad_ids_are_refused() -> None:
    assert node_username("a-b", "c") != node_username("a", "b-c")
    with pytest.raises(BrokerUsersError, match=r"^node: 'N1' is not an id"):
        node_username("norte", "N1")
    with pytest.raises(BrokerUsersError, match=r"^yard: 'a/b' is not an id"):
        node_username("a/b", "n1")


# ---------------------------------------------------------------------- the CLI


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()} \
        if directory.exists() else {}


def test_nodes_add_writes_the_user_its_acl_and_a_private_secret_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    users = tmp_path / "users"
    secret_file = tmp_path / "n1.secret"
    assert main(["nodes", "add", "norte", "n1", "--users-dir", str(users), "--no-reload",
                 "--secret-file", str(secret_file)]) == 0
    out = capsys.readouterr().out
    secret = secret_file.read_text().strip()
    assert len(secret) >= 40
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    # The secret is hashed (mosquitto_passwd's PBKDF2-SHA512, $7$), never stored or printed.
    (line,) = (users / "passwd").read_text().splitlines()
    assert line.startswith("norte.n1:$7$")
    assert secret not in line and secret not in out
    assert secret not in (users / "users.json").read_text()
    assert json.loads((users / "users.json").read_text())["users"] == [
        {"username": "norte.n1", "role": "node", "yard": "norte", "node": "n1"}]
    assert "user norte.n1\n" + "\n".join(NODE_ACL) + "\n" in (users / "acl").read_text()
    assert stat.S_IMODE((users / "passwd").stat().st_mode) == 0o640
    # The printed block is the node's [node] and [mqtt] settings, ready to paste.
    block = out.split("(edge/node.example.toml):\n", 1)[1]
    assert tomllib.loads(block) == {
        "node": {"yard": "norte", "id": "n1"},
        "mqtt": {"host": "broker.local", "port": 8883, "tls": True,
                 "ca_file": "/etc/secadero/ca.crt", "username": "norte.n1",
                 "password_file": "/etc/secadero/mqtt-password"}}


def test_the_block_names_the_settings_of_the_config_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[broker]\nusers_dir = "users"\npublic_host = "secadero.coop"\n'
                      f'tls_port = 8884\npid_file = "{tmp_path}/none.pid"\n'
                      # The rest of the server's file is not read (its secrets' variables
                      # are not set in a root shell): a broken [mqtt] does not matter.
                      '[mqtt]\npassword_env = "NOT_SET_HERE"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["nodes", "add", "sur", "s1", "--config", str(config), "--no-reload"]) == 0
    block = tomllib.loads(capsys.readouterr().out.split("(edge/node.example.toml):\n", 1)[1])
    assert (block["mqtt"]["host"], block["mqtt"]["port"]) == ("secadero.coop", 8884)
    assert (tmp_path / "users" / "passwd").exists()
    assert (tmp_path / "sur.s1.mqtt-password").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["nodes", "add", "norte", "n1"],
     "node norte/n1 exists already (user 'norte.n1'): `secadero nodes rotate` gives it a new "
     "secret"),
    (["nodes", "add", "Norte", "n2"],
     "yard: 'Norte' is not an id: 1-32 of a-z, 0-9 and '-', starting with a letter or digit"),
    (["nodes", "add", "norte", "n_2"],
     "node: 'n_2' is not an id: 1-32 of a-z, 0-9 and '-', starting with a letter or digit"),
    (["nodes", "remove", "norte", "n9"], "unknown node norte/n9: see `secadero nodes list`"),
    (["nodes", "rotate", "sur", "n1"], "unknown node sur/n1: see `secadero nodes list`"),
])
def test_wrong_input_exits_2_with_one_line_and_changes_no_file(monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        message: str) -> None:
    users = tmp_path / "users"
    monkeypatch.chdir(tmp_path)
    assert main(["nodes", "add", "norte", "n1", "--users-dir", str(users), "--no-reload"]) == 0
    before, files_before = _snapshot(users), _snapshot(tmp_path)
    capsys.readouterr()
    assert main([*argv, "--users-dir", str(users), "--no-reload"]) == 2
    assert capsys.readouterr().err == f"secadero nodes: {message}\n"
    assert _snapshot(users) == before
    assert _snapshot(tmp_path).keys() == files_before.keys()  # no secret file either


def test_rotate_replaces_the_hash_and_remove_deletes_every_trace(monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    users = tmp_path / "users"
    base = ["--users-dir", str(users), "--no-reload"]
    monkeypatch.chdir(tmp_path)
    assert main(["nodes", "add", "norte", "n1", *base]) == 0
    assert main(["nodes", "add", "norte", "n2", *base]) == 0
    first = (tmp_path / "norte.n1.mqtt-password").read_text()
    hashes = (users / "passwd").read_text().splitlines()
    assert main(["nodes", "rotate", "norte", "n1", *base]) == 0
    assert (tmp_path / "norte.n1.mqtt-password").read_text() != first
    after = (users / "passwd").read_text().splitlines()
    assert after[0].startswith("norte.n1:$7$") and after[0] != hashes[0]
    assert after[1] == hashes[1]  # the other node keeps its hash
    assert main(["nodes", "remove", "norte", "n1", *base]) == 0
    assert [line.split(":")[0] for line in (users / "passwd").read_text().splitlines()] == [
        "norte.n2"]
    assert "norte.n1" not in (users / "acl").read_text()
    assert [u.username for u in BrokerFiles(users).users()] == ["norte.n2"]
    capsys.readouterr()
    assert main(["nodes", "list", "--users-dir", str(users)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{'user':<40} {'role':<9} yard/node", f"{'norte.n2':<40} {'node':<9} norte/n2"]


def test_broker_init_makes_the_server_and_read_only_users_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    users = tmp_path / "users"
    argv = ["broker", "init", "--users-dir", str(users), "--no-reload",
            "--secrets-dir", str(tmp_path)]
    assert main(argv) == 0
    assert [(u.username, u.role) for u in BrokerFiles(users).users()] == [
        ("secadero-server", "server"), ("secadero-readonly", "readonly")]
    secret = (tmp_path / "secadero-server.mqtt-password").read_text()
    assert stat.S_IMODE((tmp_path / "secadero-server.mqtt-password").stat().st_mode) == 0o600
    assert main(argv) == 0
    assert "server user 'secadero-server' exists already: kept." in capsys.readouterr().out
    assert (tmp_path / "secadero-server.mqtt-password").read_text() == secret


def test_a_change_sends_sighup_to_the_pid_in_the_pid_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A child process stands in for Mosquitto here: it reports the SIGHUP it receives
    (the real broker's reload is in test_broker_acl.py)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys\n"
         "signal.signal(signal.SIGHUP, lambda *a: (print('HUP', flush=True), sys.exit(0)))\n"
         "print('ready', flush=True)\nsignal.pause()"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        (tmp_path / "mosquitto.pid").write_text(f"{child.pid}\n")
        config = tmp_path / "server.toml"
        config.write_text('[broker]\nusers_dir = "users"\npid_file = "mosquitto.pid"\n')
        monkeypatch.chdir(tmp_path)
        assert main(["nodes", "add", "norte", "n1", "--config", str(config)]) == 0
        assert child.stdout.readline() == "HUP\n"
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()


def test_the_printed_block_is_a_node_config_the_node_accepts(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The block pasted into a node's file (with its outbox and hardware) loads, and the
    node would log in as its user with the secret the command wrote."""
    from secadero.settings import load_node_settings

    ca = tmp_path / "ca.crt"
    ca.write_text("a certificate\n")
    secret_file = tmp_path / "on-the-pi" / "mqtt-password"
    config = tmp_path / "server.toml"
    config.write_text(f'[broker]\nusers_dir = "users"\nnode_ca_file = "{ca}"\n'
                      f'node_password_file = "{secret_file}"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["nodes", "add", "norte", "n1", "--config", str(config), "--no-reload",
                 "--secret-file", str(secret_file)]) == 0
    block = capsys.readouterr().out.split("(edge/node.example.toml):\n", 1)[1]
    node_file = tmp_path / "node.toml"
    node_file.write_text(block.replace("[mqtt]", 'trays = ["t1"]\nhardware = "simulated"\n\n'
                                                 "[mqtt]")
                         + f'\n[outbox]\npath = "{tmp_path / "outbox.sqlite3"}"\n')
    settings = load_node_settings(node_file)
    assert (settings.yard, settings.node) == ("norte", "n1")
    assert (settings.mqtt.username, settings.mqtt.password, settings.mqtt.tls,
            settings.mqtt.port, settings.mqtt.ca_file) == (
        "norte.n1", secret_file.read_text().strip(), True, 8883, ca)


def test_a_file_that_cannot_be_written_is_told_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """(As root no permission can be refused: a folder where the password file should be
    stands in for a file Mosquitto's technician cannot write.)"""
    users = tmp_path / "users"
    (users / "passwd").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert main(["nodes", "add", "norte", "n1", "--users-dir", str(users), "--no-reload"]) == 1
    assert capsys.readouterr().err == f"secadero nodes: {users / 'passwd'}: Is a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users"]  # no secret file left
    assert [p.name for p in users.iterdir()] == ["passwd"]  # no registry, no ACL
