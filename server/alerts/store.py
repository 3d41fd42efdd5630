"""SQLite state of the alert engine: episodes and the notification log.

Why SQLite: a restart (power cut, upgrade) must neither forget an open
episode nor send it again. ``commit(decision)`` writes what one evaluation
of one yard decided (the changed episodes and the notifications) in one
transaction, or in one SAVEPOINT of the cycle's transaction, so a yard whose
commit fails leaves the other yards' commits whole. A notification is
created ``pending`` and only the dispatcher moves it to ``sent`` or
``failed``, so after a crash or a failed act step the pending ones are
delivered once (``Dispatcher.resubmit_pending``), and nothing is decided
twice: the episodes say it was already decided.

Migrations: ``MIGRATIONS[n]`` takes a file from schema version ``n`` to ``n + 1``,
run at open by ``server/sqlite_files.py``; a file newer than this code is refused.
Never edit a released migration: add one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from secadero.server.alerts.engine import Decision

from secadero.server import sqlite_files
from secadero.server.notifiers.notification_log import Notification

# Callers catch it from the store that raised it.
from secadero.server.sqlite_files import NewerSchema as NewerSchema

# Version 1: the file as the server first wrote it (no user_version yet: 0), so each
# statement keeps IF NOT EXISTS.
SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY,
    yard TEXT NOT NULL,
    kind TEXT NOT NULL,            -- rain, humidity_surge, node_offline, forecast_stale
    key TEXT NOT NULL DEFAULT '',  -- the node for node_offline
    cause TEXT NOT NULL,           -- rain_forecast / rain_now for rain; else = kind
    severity TEXT NOT NULL,
    state TEXT NOT NULL,           -- raised, acknowledged, resolved
    raised_at REAL NOT NULL,
    acked_at REAL, acked_by TEXT,
    resolved_at REAL,
    level INTEGER NOT NULL DEFAULT 0,
    notify_count INTEGER NOT NULL DEFAULT 0,
    repeats INTEGER NOT NULL DEFAULT 0,
    escalations INTEGER NOT NULL DEFAULT 0,
    last_notified_at REAL,
    upgrade_pending INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}'
);
-- One open episode per yard, kind and key: the database itself refuses a second.
CREATE UNIQUE INDEX IF NOT EXISTS one_open_episode
    ON episodes (yard, kind, key) WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS episodes_by_time ON episodes (raised_at);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    episode_id INTEGER NOT NULL REFERENCES episodes(id),
    yard TEXT NOT NULL,
    created_at REAL NOT NULL,
    event TEXT NOT NULL,           -- raise, upgrade, escalate, repeat, all_clear, recovered
    kind TEXT NOT NULL,            -- the message template
    recipient TEXT NOT NULL,
    role TEXT NOT NULL,
    channel TEXT NOT NULL,         -- sms, push, webhook
    language TEXT NOT NULL,
    address TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending, sent, failed
    attempts INTEGER NOT NULL DEFAULT 0,
    provider TEXT, provider_id TEXT, error TEXT,
    sent_at REAL,
    delivery TEXT                  -- the provider's delivery status (Twilio callback)
);
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (status);
CREATE INDEX IF NOT EXISTS notifications_provider_id ON notifications (provider_id);
"""


def _v1_initial(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript() would COMMIT the migration's transaction.
    # (Not split on ";": a comment has one.)
    statement = ""
    for line in SCHEMA.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""


def _v2_one_row_per_story(db: sqlite3.Connection) -> None:
    """A humidity warning followed by rain is one episode (issue 13), not two rows.

    Version 1 resolved the warning's row and opened a rain row that named it
    (``details["warning_episode"]``). Here the rain row takes the warning's
    notifications and the history of raises the engine now keeps
    (``details["raises"]``: the warning's raise, then the rain's when it took
    over, rain_now or rain_forecast as its plates said), and the warning's row
    is deleted. ``merged_from`` keeps the old id: the ``alert`` points already
    in InfluxDB name it.
    """
    rows = db.execute("SELECT id, details FROM episodes WHERE kind = 'rain' "
                      "AND details LIKE '%warning_episode%' ORDER BY id").fetchall()
    for rain_id, text in rows:
        details = json.loads(text)
        warning_id = details.pop("warning_episode", None)
        warning = db.execute("SELECT raised_at, resolved_at, cause, severity, acked_at, "
                             "acked_by, details FROM episodes WHERE id = ?",
                             (warning_id,)).fetchone()
        if warning is not None:
            raised_at, took_over_at, cause, severity, acked_at, acked_by, warning_text = warning
            first: dict[str, Any] = {"ts": raised_at, "cause": cause, "severity": severity}
            if acked_at is not None:
                first.update(acked_at=acked_at, acked_by=acked_by)
            wet_ts = details.get("wet_ts")
            wet_at_once = wet_ts is not None and took_over_at is not None \
                and wet_ts <= took_over_at
            raises = [first, {"ts": took_over_at,
                              "cause": "rain_now" if wet_at_once else "rain_forecast",
                              "severity": "critical" if wet_at_once else "warning"}]
            if wet_ts is not None and not wet_at_once:
                raises.append({"ts": wet_ts, "cause": "rain_now", "severity": "critical"})
            details.update(raises=raises, merged_from=warning_id,
                           humidity_nodes=json.loads(warning_text).get("nodes", []))
            db.execute("UPDATE notifications SET episode_id = ? WHERE episode_id = ?",
                       (rain_id, warning_id))
            db.execute("DELETE FROM episodes WHERE id = ?", (warning_id,))
        db.execute("UPDATE episodes SET details = ? WHERE id = ?",
                   (json.dumps(details, sort_keys=True), rain_id))


def _v3_used_ack_tokens(db: sqlite3.Connection) -> None:
    """Acknowledge links are single-use (issue 9): the used ones, by their MAC, kept until
    they expire (``claim_ack_token``), so a restart does not make them good again."""
    db.execute("""
        CREATE TABLE used_ack_tokens (
            mac TEXT PRIMARY KEY,
            episode_id INTEGER NOT NULL,
            used_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""")


# MIGRATIONS[n] takes a file from version n to n + 1.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _v1_initial,
    _v2_one_row_per_story,
    _v3_used_ack_tokens,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class Episode:
    """One alert episode: raised -> acknowledged -> resolved."""

    yard: str
    kind: str
    cause: str
    severity: str
    raised_at: float
    key: str = ""
    state: str = "raised"
    acked_at: float | None = None
    acked_by: str | None = None
    resolved_at: float | None = None
    level: int = 0
    notify_count: int = 0
    repeats: int = 0
    escalations: int = 0
    last_notified_at: float | None = None
    upgrade_pending: bool = False
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    @property
    def active(self) -> bool:
        return self.state != "resolved"


_EPISODE_COLUMNS = [f.name for f in fields(Episode) if f.name != "id"]
_NOTIFICATION_COLUMNS = [f.name for f in fields(Notification) if f.name != "id"]


class AlertStore:
    """Episodes and notifications in one SQLite file; safe to share between threads.

    It is the dispatcher's ``NotificationLog`` (``update_notification``,
    ``notifications``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._savepoints = itertools.count(1)
        # WAL (`secadero alerts` reads while the server writes); NORMAL: a power cut
        # may lose the last commit, never corrupt the file.
        self._db = sqlite_files.open_database(path, synchronous="NORMAL")
        with self._lock:
            sqlite_files.migrate(self._db, self.path, MIGRATIONS, self.transaction)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return sqlite_files.schema_version(self._db)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing. Nested inside another, a SAVEPOINT: an exception undoes only
        the inner part (and propagates); the outer transaction still commits the rest."""
        with self._lock:
            if self._db.in_transaction:
                name = f"part_{next(self._savepoints)}"
                self._db.execute(f"SAVEPOINT {name}")
                try:
                    yield
                except BaseException:
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                    raise
                self._db.execute(f"RELEASE {name}")
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def commit(self, decision: Decision) -> Decision:
        """Store a decision (episodes, then their notifications) all or nothing.

        Returns the stored decision: episodes, notifications and transitions
        with their ids. The decision given is not changed (it may be dropped).
        """
        with self.transaction():
            ids = [self.save_episode(replace(episode)).id or 0
                   for episode in decision.episodes]
            stored = decision.with_ids(ids)
            for note in stored.notifications:
                self.add_notification(note)
        return stored

    # -- episodes

    @staticmethod
    def _episode(row: sqlite3.Row) -> Episode:
        data = dict(row)
        data["details"] = json.loads(data["details"])
        data["upgrade_pending"] = bool(data["upgrade_pending"])
        return Episode(**data)

    def save_episode(self, episode: Episode) -> Episode:
        values = asdict(episode)
        values["details"] = json.dumps(values["details"], sort_keys=True)
        values["upgrade_pending"] = int(values["upgrade_pending"])
        with self._lock:
            if episode.id is None:
                cursor = self._db.execute(
                    f"INSERT INTO episodes ({', '.join(_EPISODE_COLUMNS)}) VALUES "
                    f"({', '.join('?' for _ in _EPISODE_COLUMNS)})",
                    [values[c] for c in _EPISODE_COLUMNS])
                episode.id = cursor.lastrowid
            else:
                self._db.execute(
                    f"UPDATE episodes SET {', '.join(c + ' = ?' for c in _EPISODE_COLUMNS)} "
                    "WHERE id = ?", [*(values[c] for c in _EPISODE_COLUMNS), episode.id])
        return episode

    def active_episodes(self, yard: str | None = None) -> list[Episode]:
        query = "SELECT * FROM episodes WHERE state != 'resolved'"
        args: list[Any] = []
        if yard is not None:
            query += " AND yard = ?"
            args.append(yard)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY raised_at, id", args).fetchall()
        return [self._episode(r) for r in rows]

    def episode(self, episode_id: int) -> Episode | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM episodes WHERE id = ?",
                                   (episode_id,)).fetchone()
        return self._episode(row) if row else None

    def history(self, *, yard: str | None = None, since: float | None = None,
                limit: int = 100) -> list[Episode]:
        """Episodes newest first, resolved or not."""
        query = "SELECT * FROM episodes WHERE 1=1"
        args: list[Any] = []
        if yard is not None:
            query += " AND yard = ?"
            args.append(yard)
        if since is not None:
            query += " AND raised_at >= ?"
            args.append(since)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY raised_at DESC, id DESC LIMIT ?",
                                    [*args, limit]).fetchall()
        return [self._episode(r) for r in rows]

    def claim_ack_token(self, mac: str, episode_id: int, expires_at: float,
                        now: float) -> bool:
        """Mark an acknowledge link used: True the first time, False if it was already.

        Forgets the links that have expired (their signature check refuses them anyway).
        """
        with self.transaction():
            self._db.execute("DELETE FROM used_ack_tokens WHERE expires_at < ?", (now,))
            try:
                self._db.execute("INSERT INTO used_ack_tokens (mac, episode_id, used_at, "
                                 "expires_at) VALUES (?, ?, ?, ?)",
                                 (mac, episode_id, now, expires_at))
            except sqlite3.IntegrityError:
                return False
        return True

    # -- notifications

    def add_notification(self, note: Notification) -> Notification:
        values = asdict(note)
        with self._lock:
            cursor = self._db.execute(
                f"INSERT INTO notifications ({', '.join(_NOTIFICATION_COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in _NOTIFICATION_COLUMNS)})",
                [values[c] for c in _NOTIFICATION_COLUMNS])
            note.id = cursor.lastrowid
        return note

    def update_notification(self, note: Notification) -> None:
        values = asdict(note)
        with self._lock:
            self._db.execute(
                f"UPDATE notifications SET {', '.join(c + ' = ?' for c in _NOTIFICATION_COLUMNS)}"
                " WHERE id = ?", [*(values[c] for c in _NOTIFICATION_COLUMNS), note.id])

    def notifications(self, *, status: str | None = None, episode_id: int | None = None,
                      yard: str | None = None, limit: int = 1000) -> list[Notification]:
        query = "SELECT * FROM notifications WHERE 1=1"
        args: list[Any] = []
        for column, value in (("status", status), ("episode_id", episode_id), ("yard", yard)):
            if value is not None:
                query += f" AND {column} = ?"
                args.append(value)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()
        return [Notification(**dict(r)) for r in rows]

    def notification_by_provider_id(self, provider_id: str) -> Notification | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM notifications WHERE provider_id = ?",
                                   (provider_id,)).fetchone()
        return Notification(**dict(row)) if row else None
