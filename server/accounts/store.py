"""Staff accounts and their sessions in SQLite.

Passwords: ``hashlib.scrypt`` (RFC 7914) with a random 16-byte salt; the
parameters are stored with each hash (``scrypt$n$r$p$salt$hash``), so raising
them later still verifies old hashes, and a successful login re-hashes an old
one with the current parameters. Comparison is constant-time, and an unknown
name costs the same scrypt as a known one (no user enumeration by timing).

Sessions: a random 256-bit token given once to the client; the database
keeps only its SHA-256 (a stolen database file holds no usable token; a KDF is
not needed for a random 256-bit value). Each session expires ``session_ttl_s``
after login, carries a random CSRF value for the browser's forms, and reads its
role from the account on every lookup: a role change or a removal takes effect
at once. A new password ends every session of the account.

Migrations: ``MIGRATIONS[n]`` takes a file from schema version ``n`` to
``n + 1``, run at open by ``server/sqlite_files.py``; a newer file is refused.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from secadero.errors import SecaderoError
from secadero.server import sqlite_files
from secadero.server.accounts.roles import Role

# Callers catch it from the store that raised it.
from secadero.server.sqlite_files import NewerSchema as NewerSchema

BUSY_TIMEOUT_MS = 10_000
# scrypt's cost: N=2**14, r=8 uses 16 MiB and ~50 ms on a Raspberry Pi 4 class CPU
# (the parameters of RFC 7914's interactive-login example). Stored with each hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # scrypt takes any length; a megabyte "password" is a DoS, not a secret
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
DEFAULT_SESSION_TTL_S = 12 * 3600.0


class AccountError(SecaderoError, ValueError):
    """A refused account operation: ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Account:
    name: str
    role: Role
    full_name: str
    created_at: float


@dataclass(frozen=True)
class Session:
    """A logged-in client. ``token`` is what the client sends back (Bearer or cookie)."""

    token: str
    name: str
    role: Role
    expires_at: float
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P,
                  salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES,
                            maxmem=2 * 128 * n * r * p + 1024 * 1024)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    """Constant-time comparison of ``password`` with a stored ``scrypt$...`` hash."""
    try:
        kind, n, r, p, salt, _ = stored.split("$")
        if kind != "scrypt":
            return False
        again = hash_password(password, n=int(n), r=int(r), p=int(p), salt=_unb64(salt))
    except ValueError:
        return False
    return hmac.compare_digest(again.encode(), stored.encode())


def _current_parameters(stored: str) -> bool:
    return stored.startswith(f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$")


@functools.cache
def _dummy_hash() -> str:
    """A hash nobody's password matches, verified against when the name is unknown, so an
    unknown name takes as long to refuse as a wrong password (made once, when needed)."""
    return hash_password(secrets.token_urlsafe(16))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _v1_initial(db: sqlite3.Connection) -> None:
    """Accounts and their sessions."""
    db.execute("""
        CREATE TABLE accounts (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('worker', 'supervisor', 'quality',
                                               'technician', 'admin')),
            full_name TEXT NOT NULL DEFAULT '',
            password_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            password_changed_at REAL NOT NULL
        )""")
    db.execute("""
        CREATE TABLE sessions (
            token_sha256 TEXT PRIMARY KEY,
            name TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            csrf TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX sessions_by_name ON sessions (name)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1_initial,)
SCHEMA_VERSION = len(MIGRATIONS)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise AccountError("name", "1 to 40 characters: lower-case letters, digits, '.', "
                                   "'_' or '-', starting with a letter or digit")
    return name


def check_new_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError("password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise AccountError("role", f"must be one of {', '.join(Role)}, got {role!r}") from None


class AccountStore:
    """The accounts and sessions in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path, *, session_ttl_s: float = DEFAULT_SESSION_TTL_S
                 ) -> None:
        self.path = Path(path)
        self.session_ttl_s = session_ttl_s
        self._lock = threading.RLock()
        # private: password hashes, readable by the server's user only.
        self._db = sqlite_files.open_database(path, synchronous="FULL",
                                              busy_timeout_s=BUSY_TIMEOUT_MS / 1000,
                                              foreign_keys=True, private=True)
        with self._lock:
            sqlite_files.migrate(self._db, self.path, MIGRATIONS, self._transaction)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AccountStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return sqlite_files.schema_version(self._db)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_files.immediate_transaction(self._db, self._lock)

    # -- accounts

    @staticmethod
    def _account(row: sqlite3.Row) -> Account:
        return Account(row["name"], Role(row["role"]), row["full_name"], row["created_at"])

    def add(self, name: str, role: str, password: str, *, full_name: str = "",
            now: float | None = None) -> Account:
        check_name(name)
        role = check_role(role)
        check_new_password(password)
        at = _now(now)
        hashed = hash_password(password)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise AccountError("name", f"{name!r} already exists")
            db.execute("INSERT INTO accounts (name, role, full_name, password_hash, "
                       "created_at, password_changed_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (name, role.value, full_name[:100], hashed, at, at))
        return Account(name, role, full_name[:100], at)

    def remove(self, name: str) -> None:
        """Remove the account and end its sessions; AccountError if there is none."""
        with self._transaction() as db:
            if db.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount == 0:
                raise AccountError("name", f"no account {name!r}")

    def list(self) -> list[Account]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM accounts ORDER BY name").fetchall()
        return [self._account(r) for r in rows]

    def get(self, name: str) -> Account | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM accounts WHERE name = ?", (name,)).fetchone()
        return self._account(row) if row else None

    def set_password(self, name: str, password: str, *, now: float | None = None) -> None:
        """A new password; every session of the account ends."""
        check_new_password(password)
        hashed = hash_password(password)
        with self._transaction() as db:
            if db.execute("UPDATE accounts SET password_hash = ?, password_changed_at = ? "
                          "WHERE name = ?", (hashed, _now(now), name)).rowcount == 0:
                raise AccountError("name", f"no account {name!r}")
            db.execute("DELETE FROM sessions WHERE name = ?", (name,))

    def verify(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is its password, else None (same cost either way)."""
        if not isinstance(name, str) or not isinstance(password, str) or \
                len(password) > MAX_PASSWORD:
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM accounts WHERE name = ?", (name,)).fetchone()
        if row is None:
            check_password(password, _dummy_hash())
            return None
        if not check_password(password, row["password_hash"]):
            return None
        if not _current_parameters(row["password_hash"]):
            with self._lock:
                self._db.execute("UPDATE accounts SET password_hash = ? WHERE name = ? AND "
                                 "password_hash = ?",
                                 (hash_password(password), name, row["password_hash"]))
        return self._account(row)

    # -- sessions

    def login(self, name: str, password: str, now: float) -> Session | None:
        """A new session for ``name`` if the password is right, else None."""
        account = self.verify(name, password)
        if account is None:
            return None
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        expires_at = now + self.session_ttl_s
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            db.execute("INSERT INTO sessions (token_sha256, name, created_at, expires_at, csrf) "
                       "VALUES (?, ?, ?, ?, ?)", (_token_hash(token), name, now, expires_at,
                                                  csrf))
        return Session(token, name, account.role, expires_at, csrf)

    def lookup(self, token: str, now: float) -> Session | None:
        """The live session of ``token``, None if unknown, expired or its account removed."""
        if not isinstance(token, str) or not 0 < len(token) <= 200:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT s.name, s.expires_at, s.csrf, a.role FROM sessions s JOIN accounts a "
                "ON a.name = s.name WHERE s.token_sha256 = ?", (_token_hash(token),)).fetchone()
        if row is None or row["expires_at"] <= now:
            return None
        return Session(token, row["name"], Role(row["role"]), row["expires_at"], row["csrf"])

    def logout(self, token: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_token_hash(token),))


def _now(now: float | None) -> float:
    import time

    return time.time() if now is None else now
