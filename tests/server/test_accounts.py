"""Staff accounts (server/accounts): the permission table, password hashes, sessions,
migrations, the rate limiter and ``secadero users``. No server needed: the store is
SQLite in a temporary directory, the clock a number the test sets."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from secadero.cli import main
from secadero.server.accounts import (
    ACTIONS,
    AccountError,
    AccountStore,
    NewerSchema,
    Role,
    allowed,
)
from secadero.server.accounts.ratelimit import RateLimiter
from secadero.server.accounts.store import SCHEMA_VERSION, check_password, hash_password

PASSWORD = "correct horse battery"


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    with AccountStore(tmp_path / "accounts.sqlite3", session_ttl_s=3600) as accounts:
        yield accounts  # type: ignore[misc]


def test_the_permission_table_is_the_agreed_one() -> None:
    table = {action: sorted(r.value for r in Role if allowed(r, action)) for action in ACTIONS}
    everyone = sorted(r.value for r in Role)
    assert table == {
        "yard.read": everyone,
        "alerts.read": everyone,
        "alerts.ack": everyone,
        "alerts.close": ["admin", "supervisor"],
        "batches.read": ["admin", "quality", "supervisor", "technician"],
        "batches.write": ["admin", "quality", "supervisor"],
        "nodes.read": ["admin", "supervisor", "technician"],
        "users.admin": ["admin"],
    }
    assert allowed("worker", "no.such.action") is False
    assert allowed("boss", "yard.read") is False


def test_a_password_is_stored_as_a_salted_scrypt_hash(store: AccountStore) -> None:
    store.add("rosa", "worker", PASSWORD, full_name="Rosa Quispe", now=1000.0)
    with sqlite3.connect(store.path) as db:
        [(stored,)] = db.execute("SELECT password_hash FROM accounts").fetchall()
    kind, n, r, p, salt, digest = stored.split("$")
    assert (kind, n, r, p) == ("scrypt", "16384", "8", "1")
    assert PASSWORD not in stored and len(salt) == 22 and len(digest) == 43
    # The same password twice: two salts, two hashes.
    assert hash_password(PASSWORD) != hash_password(PASSWORD)
    assert check_password(PASSWORD, stored) and not check_password(PASSWORD + "x", stored)
    assert check_password(PASSWORD, "md5$nonsense") is False
    [account] = store.list()
    assert (account.name, account.role, account.full_name, account.created_at) == (
        "rosa", Role.WORKER, "Rosa Quispe", 1000.0)


def test_verify(store: AccountStore) -> None:
    store.add("rosa", "worker", PASSWORD)
    assert store.verify("rosa", PASSWORD) is not None
    assert store.verify("rosa", "wrong password") is None
    assert store.verify("nobody", PASSWORD) is None
    assert store.verify("rosa", "x" * 5000) is None


def test_an_old_hash_is_upgraded_at_the_next_login(store: AccountStore) -> None:
    store.add("rosa", "worker", PASSWORD)
    weak = hash_password(PASSWORD, n=2**10)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE accounts SET password_hash = ?", (weak,))
    assert store.verify("rosa", PASSWORD) is not None
    with sqlite3.connect(store.path) as db:
        [(stored,)] = db.execute("SELECT password_hash FROM accounts").fetchall()
    assert stored.startswith("scrypt$16384$8$1$") and check_password(PASSWORD, stored)


@pytest.mark.parametrize(("name", "role", "password", "field"), [
    ("Rosa", "worker", PASSWORD, "name"),
    ("ro sa", "worker", PASSWORD, "name"),
    ("", "worker", PASSWORD, "name"),
    ("a" * 41, "worker", PASSWORD, "name"),
    ("rosa", "boss", PASSWORD, "role"),
    ("rosa", "worker", "short", "password"),
])
def test_bad_accounts_are_refused_naming_the_field(store: AccountStore, name: str, role: str,
                                                   password: str, field: str) -> None:
    with pytest.raises(AccountError) as refused:
        store.add(name, role, password)
    assert refused.value.field == field
    assert store.list() == []


def test_a_name_is_taken_once(store: AccountStore) -> None:
    store.add("rosa", "worker", PASSWORD)
    with pytest.raises(AccountError, match="name: 'rosa' already exists"):
        store.add("rosa", "admin", PASSWORD)
    assert [a.role for a in store.list()] == [Role.WORKER]


def test_sessions_expire_and_end(store: AccountStore) -> None:
    store.add("ana", "supervisor", PASSWORD)
    assert store.login("ana", "wrong password", 100.0) is None
    session = store.login("ana", PASSWORD, 100.0)
    assert session is not None
    assert (session.name, session.role, session.expires_at) == ("ana", Role.SUPERVISOR, 3700.0)
    assert len(session.token) == 43 and len(session.csrf) == 32
    assert store.lookup(session.token, 3699.0) == session
    assert store.lookup(session.token, 3700.0) is None  # expired
    assert store.lookup(session.token + "x", 200.0) is None
    assert store.lookup("", 200.0) is None
    # Only the token's SHA-256 is stored.
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT * FROM sessions").fetchall()
    assert session.token not in repr(rows)
    store.logout(session.token)
    assert store.lookup(session.token, 200.0) is None


def test_a_new_password_or_a_removal_ends_the_sessions(store: AccountStore) -> None:
    store.add("ana", "supervisor", PASSWORD)
    store.add("luis", "worker", PASSWORD)
    first = store.login("ana", PASSWORD, 0.0)
    other = store.login("luis", PASSWORD, 0.0)
    assert first is not None and other is not None
    store.set_password("ana", "a new password here")
    assert store.lookup(first.token, 1.0) is None
    assert store.login("ana", PASSWORD, 1.0) is None
    assert store.login("ana", "a new password here", 1.0) is not None
    store.remove("luis")
    assert store.lookup(other.token, 1.0) is None
    with pytest.raises(AccountError, match="no account 'luis'"):
        store.remove("luis")
    with pytest.raises(AccountError, match="no account 'luis'"):
        store.set_password("luis", PASSWORD)


def test_a_role_change_applies_to_live_sessions(store: AccountStore) -> None:
    store.add("ana", "supervisor", PASSWORD)
    session = store.login("ana", PASSWORD, 0.0)
    assert session is not None
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE accounts SET role = 'worker'")
    looked_up = store.lookup(session.token, 1.0)
    assert looked_up is not None and looked_up.role == Role.WORKER


def test_migrations_and_a_newer_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.sqlite3"
    with AccountStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 1
        store.add("ana", "admin", PASSWORD)
    with AccountStore(path) as again:  # opening again migrates nothing, keeps the data
        assert [a.name for a in again.list()] == ["ana"]
    assert path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(NewerSchema, match="schema version 99 is newer than this secadero's 1"):
        AccountStore(path)


def test_the_token_bucket() -> None:
    limiter = RateLimiter(burst=3, per_min=1.0)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0) is True  # each key its own bucket
    assert limiter.allow("a", 59.0) is False
    assert limiter.allow("a", 60.0) is True  # one back per minute
    assert limiter.allow("a", 60.0) is False
    assert [limiter.allow("a", 10_000.0) for _ in range(4)] == [True, True, True, False]
    small = RateLimiter(burst=1, per_min=1.0, max_keys=2)
    assert small.allow("x", 0.0) and small.allow("y", 0.0) and small.allow("z", 0.0)
    assert small.allow("x", 0.0) is True  # dropped (least recently used): full again
    with pytest.raises(ValueError):
        RateLimiter(burst=0, per_min=1.0)


def _config(tmp_path: Path) -> str:
    config = tmp_path / "server.toml"
    config.write_text('[accounts]\ndatabase = "var/accounts.sqlite3"\n')
    return str(config)


def test_secadero_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "add", "ana", "--role", "supervisor", "--full-name", "Ana Ríos",
                 "--password-stdin", "--config", config]) == 0
    assert capsys.readouterr().out == "account ana (supervisor) created\n"
    # From a prompt: asked twice, not echoed.
    answers = iter(["another password", "another password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert main(["users", "add", "rosa", "--role", "worker", "--config", config]) == 0
    answers = iter(["another password", "a typo in it"])
    assert main(["users", "add", "luis", "--role", "worker", "--config", config]) == 1
    assert "the two passwords differ; nothing changed" in capsys.readouterr().err
    assert main(["users", "add", "Bad Name", "--role", "worker", "--config", config]) == 1
    assert capsys.readouterr().err.startswith("error: name: 1 to 40 characters")
    assert main(["users", "add", "x", "--role", "boss", "--config", config]) == 1
    assert "error: role: must be one of worker, supervisor, quality, technician, admin" in (
        capsys.readouterr().err)
    assert main(["users", "list", "--json", "--config", config]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(a["name"], a["role"], a["full_name"]) for a in listed] == [
        ("ana", "supervisor", "Ana Ríos"), ("rosa", "worker", "")]
    assert main(["users", "list", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ana                  supervisor  since ")
    assert lines[0].endswith("  Ana Ríos")
    monkeypatch.setattr("sys.stdin", io.StringIO("a new password\n"))
    assert main(["users", "passwd", "ana", "--password-stdin", "--config", config]) == 0
    assert capsys.readouterr().out == "password of ana changed; its sessions ended\n"
    with AccountStore(tmp_path / "var" / "accounts.sqlite3") as store:
        assert store.verify("ana", "a new password") is not None
    assert main(["users", "remove", "rosa", "--config", config]) == 0
    assert main(["users", "remove", "rosa", "--config", config]) == 1
    assert "error: name: no account 'rosa'" in capsys.readouterr().err
    assert main(["users", "passwd", "rosa", "--config", config]) == 1


def test_no_password_on_the_command_line() -> None:
    with pytest.raises(SystemExit):
        main(["users", "add", "ana", "--role", "admin", "--password", "x", "--config", "c"])
