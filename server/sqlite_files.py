"""What the server's SQLite files share: how they are opened, and versioned migrations.

The alert store, the batch store and the account store each keep their own
schema and their own transactions; opening a file and bringing its schema up
to date is the same for all three, and is written here once.

Migrations: ``PRAGMA user_version`` is a file's schema version; ``migrations[n]``
takes a file from version ``n`` to ``n + 1`` and runs, with the new version
number, in one transaction at open. A file newer than this code is refused
(an older secadero must not write into it). Never edit a released migration:
add one.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from secadero.errors import PermanentStorageError

Migration = Callable[[sqlite3.Connection], None]


class NewerSchema(PermanentStorageError):
    """The database was written by a newer secadero: this one must not touch it."""


def open_database(path: str | Path, *, synchronous: Literal["NORMAL", "FULL"],
                  busy_timeout_s: float = 5.0, foreign_keys: bool = False,
                  private: bool = False) -> sqlite3.Connection:
    """A connection shared between threads (each store guards it with its own lock),
    in WAL mode so a command reads while the server writes, rows as ``sqlite3.Row``.

    ``private``: a new file is created readable by its owner only (password hashes).
    ``isolation_level=None``: the stores say where their transactions begin.
    """
    if str(path) != ":memory:":
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        if private and not file.exists():
            file.touch(mode=0o600)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                         timeout=busy_timeout_s)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    if foreign_keys:
        db.execute("PRAGMA foreign_keys=ON")
    return db


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, path: str | Path, migrations: Sequence[Migration],
            transaction: Callable[[], AbstractContextManager[Any]]) -> None:
    """Bring the file up to ``len(migrations)``, each step in its own ``transaction()``
    (the store's BEGIN IMMEDIATE); ``NewerSchema`` for a file from a newer secadero."""
    version, latest = schema_version(db), len(migrations)
    if version > latest:
        raise NewerSchema(f"{path}: schema version {version} is newer than this "
                          f"secadero's {latest}: upgrade secadero")
    for number in range(version, latest):
        with transaction():
            # Read again under BEGIN IMMEDIATE: another process opening the same
            # file at the same moment (the CLI beside the server) may have migrated it.
            if schema_version(db) != number:
                continue
            migrations[number](db)
            # user_version is part of the transaction: both or neither.
            db.execute(f"PRAGMA user_version = {number + 1}")


@contextlib.contextmanager
def immediate_transaction(db: sqlite3.Connection,
                          lock: threading.RLock) -> Iterator[sqlite3.Connection]:
    """All or nothing, under the store's lock. BEGIN IMMEDIATE takes SQLite's write
    lock at once, so a second process (the CLI beside the server) waits its turn
    (busy timeout) instead of failing half-way through."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
