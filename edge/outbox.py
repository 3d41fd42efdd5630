"""The node's durable outbox: every message is on disk before it is sent.

SQLite in WAL mode with ``synchronous=FULL``: a commit is fsynced before
``add()`` returns, so a message that has a ``seq`` survives a SIGKILL or a
power cut (with ``NORMAL`` a commit "might roll back following a power
loss", sqlite.org/pragma.html). Both pragmas are read back at open and the
store refuses to start if the file system would not honour them.

A message stays until the server's ``ack`` covers its ``seq`` (the server
acks after InfluxDB accepted the write); the publisher re-sends what is not
acked. ``seq`` is assigned inside the same transaction that stores the
message, so a sample that was not committed was never "produced" and no
``seq`` is ever used twice, across restarts too.

The store is bounded by ``max_bytes`` (payload bytes plus a per-row
allowance). When a new message would exceed it, the oldest *telemetry* goes
first; events (rain started, tray moved) go only when nothing but events is
left. Every drop is counted by kind. A drop leaves a gap in ``seq`` that the
server cannot fill: it waits ``gap_timeout_s`` and then counts the gap as
lost and acks past it (docs/hardware.md, "What the node promises").

Messages taken while the clock was not trusted are *held*: stored with
their monotonic time and the kernel boot they belong to, and no ``ts``. They
are stamped (``stamp_held``) when the clock is trusted again; held rows of
an earlier kernel boot cannot be stamped (the monotonic clock restarted)
and are dropped and counted as ``dropped_unstampable``, never sent with a
made-up time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from secadero.contract import Event, Telemetry, decode_event, decode_telemetry, encode
from secadero.errors import PermanentStorageError, RetryableStorageError

log = logging.getLogger(__name__)

# WAL size (in 4 KiB pages) at which a commit checkpoints by itself.
AUTOCHECKPOINT_PAGES = 4000

# SQLite's own cost per row (rowid, record header, index entry), roughly.
ROW_OVERHEAD_BYTES = 48

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('telemetry', 'event')),
    ts          REAL,
    mono_s      REAL NOT NULL,
    kernel_boot TEXT NOT NULL,
    payload     BLOB NOT NULL
);
"""

_COUNTERS = ("dropped_telemetry", "dropped_events", "dropped_unstampable", "acks",
             "acks_ignored")


@dataclass(frozen=True, slots=True)
class Pending:
    """A stored message ready to send."""

    seq: int
    kind: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What ``status`` reports about the store."""

    buffered: int
    held: int
    bytes: int
    max_bytes: int
    next_seq: int
    acked_seq: int
    oldest_ts: float | None
    boot_count: int
    node_boot_id: str
    counters: dict[str, int]


class Outbox:
    """The on-disk queue of telemetry and events; see the module docstring.

    Thread-safe: one connection behind a lock (the sampler, the rain
    callbacks and the publisher all use it).
    """

    def __init__(self, path: str | Path, *, max_bytes: int = 64 * 1024 * 1024,
                 readonly: bool = False) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._readonly = readonly
        self._conn = self._open()
        self._bytes = 0
        self._count = 0
        self._load_totals()
        if not readonly:
            with self._transaction() as conn:
                boot_count = int(self._meta(conn, "boot_count", "0")) + 1
                self._set_meta(conn, "boot_count", str(boot_count))
                # One id per start of the agent: distinguishes "the node restarted" in logs
                # and status, next to the kernel's own boot id.
                self._set_meta(conn, "node_boot_id", uuid.uuid4().hex)

    # -- connection --------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._readonly:
            uri = f"file:{self.path}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                   timeout=5.0)
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None,
                                   check_same_thread=False, timeout=5.0)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            # The agent checkpoints from its main loop (``checkpoint()``); SQLite's own
            # automatic checkpoint, done inside whichever commit crosses the limit,
            # would land on a rain event's commit now and then and delay it by up to
            # a few hundred ms. This higher limit is only the safety net.
            conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            sync = conn.execute("PRAGMA synchronous").fetchone()[0]
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise PermanentStorageError(f"cannot open outbox {self.path}: {exc}") from exc
        # Read back: a file system without shared memory silently stays in "delete" mode.
        if mode.lower() != "wal" or sync != 2:
            conn.close()
            raise PermanentStorageError(
                f"outbox {self.path}: journal_mode={mode} synchronous={sync}; need wal and 2 "
                "(FULL) so a stored message survives a power cut")
        return conn

    def pragmas(self) -> tuple[str, int]:
        """``(journal_mode, synchronous)`` as SQLite reports them now."""
        with self._lock:
            mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = self._conn.execute("PRAGMA synchronous").fetchone()[0]
        return mode, sync

    def _load_totals(self) -> None:
        row = self._conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
        self._count = int(row[0])
        self._bytes = int(row[1]) + self._count * ROW_OVERHEAD_BYTES

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                # The in-memory totals may be off after a failed transaction.
                with contextlib.suppress(sqlite3.Error):
                    self._load_totals()
                raise RetryableStorageError(f"outbox {self.path}: {exc}") from exc
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                with contextlib.suppress(sqlite3.Error):
                    self._load_totals()
                raise

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str, default: str) -> str:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def _bump(self, conn: sqlite3.Connection, key: str, by: int = 1) -> None:
        if by:
            self._set_meta(conn, key, str(int(self._meta(conn, key, "0")) + by))

    # -- writing -----------------------------------------------------------

    def add(self, message: Telemetry | Event, *, mono_s: float, kernel_boot: str,
            held: bool = False) -> int:
        """Store one message, assigning its ``seq``; return the ``seq`` once it is on disk.

        ``held=True`` stores it without a trusted time (its ``ts`` is
        ignored until ``stamp_held``). Raises ``RetryableStorageError`` when
        the disk is full or failing; nothing is stored then.
        """
        kind = "telemetry" if isinstance(message, Telemetry) else "event"
        with self._transaction() as conn:
            seq = int(self._meta(conn, "next_seq", "1"))
            stored = dataclasses.replace(message, seq=seq, ts=0.0 if held else message.ts)
            payload = encode(stored)
            conn.execute(
                "INSERT INTO outbox (seq, kind, ts, mono_s, kernel_boot, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (seq, kind, None if held else stored.ts, mono_s, kernel_boot, payload))
            self._set_meta(conn, "next_seq", str(seq + 1))
            if not held:
                self._set_meta(conn, "last_issued_ts", repr(stored.ts))
            self._count += 1
            self._bytes += len(payload) + ROW_OVERHEAD_BYTES
            self._enforce_cap(conn)
        return seq

    def _enforce_cap(self, conn: sqlite3.Connection) -> None:
        if self._bytes <= self.max_bytes:
            return
        for kind, counter in (("telemetry", "dropped_telemetry"), ("event", "dropped_events")):
            while self._bytes > self.max_bytes:
                rows = conn.execute(
                    "SELECT seq, length(payload) FROM outbox WHERE kind = ? ORDER BY seq "
                    "LIMIT 256", (kind,)).fetchall()
                if not rows:
                    break
                dropped = 0
                for seq, size in rows:
                    if self._bytes <= self.max_bytes:
                        break
                    conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                    self._bytes -= size + ROW_OVERHEAD_BYTES
                    self._count -= 1
                    dropped += 1
                self._bump(conn, counter, dropped)
                log.warning("outbox full (%d bytes): dropped %d oldest %s", self.max_bytes,
                            dropped, kind)

    def stamp_held(self, kernel_boot: str, offset_s: float) -> tuple[int, int]:
        """Give held messages their time: ``ts = mono_s + offset_s`` for this kernel boot.

        Held messages of other kernel boots are dropped (their monotonic time
        means nothing now). Returns ``(stamped, dropped)``.
        """
        stamped = dropped = 0
        with self._transaction() as conn:
            rows = conn.execute("SELECT seq, kind, mono_s, kernel_boot, payload FROM outbox "
                                "WHERE ts IS NULL ORDER BY seq").fetchall()
            for seq, kind, mono_s, boot, payload in rows:
                if boot != kernel_boot:
                    conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                    self._bytes -= len(payload) + ROW_OVERHEAD_BYTES
                    self._count -= 1
                    dropped += 1
                    continue
                ts = round(mono_s + offset_s, 3)
                obj = json.loads(payload)
                message: Telemetry | Event = (decode_telemetry(obj) if kind == "telemetry"
                                              else decode_event(obj))
                new_payload = encode(dataclasses.replace(message, ts=ts))
                conn.execute("UPDATE outbox SET ts = ?, payload = ? WHERE seq = ?",
                             (ts, new_payload, seq))
                self._bytes += len(new_payload) - len(payload)
                stamped += 1
            self._bump(conn, "dropped_unstampable", dropped)
        return stamped, dropped

    def ack(self, seq: int) -> int:
        """Delete every message up to ``seq`` (the server stored them); return how many.

        An ack beyond the last ``seq`` this node ever assigned is counted in
        ``acks_ignored`` and ignored: it cannot be about our messages.
        """
        with self._transaction() as conn:
            next_seq = int(self._meta(conn, "next_seq", "1"))
            if seq >= next_seq:
                self._bump(conn, "acks_ignored")
                return 0
            acked = int(self._meta(conn, "acked_seq", "0"))
            if seq <= acked:
                self._bump(conn, "acks")
                return 0
            row = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox "
                               "WHERE seq <= ?", (seq,)).fetchone()
            conn.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
            self._count -= int(row[0])
            self._bytes -= int(row[1]) + int(row[0]) * ROW_OVERHEAD_BYTES
            self._set_meta(conn, "acked_seq", str(seq))
            self._bump(conn, "acks")
            return int(row[0])

    # -- reading -----------------------------------------------------------

    def pending(self, after_seq: int, limit: int = 500) -> list[Pending]:
        """Up to ``limit`` sendable messages with ``seq > after_seq``, in ``seq`` order.

        Stops before the first held message: order is kept, and nothing
        without a trusted time is sent.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, kind, ts, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit)).fetchall()
        out: list[Pending] = []
        for seq, kind, ts, payload in rows:
            if ts is None:
                break
            out.append(Pending(int(seq), str(kind), bytes(payload)))
        return out

    @property
    def buffered(self) -> int:
        return self._count

    @property
    def bytes_used(self) -> int:
        return self._bytes

    @property
    def acked_seq(self) -> int:
        with self._lock:
            return int(self._meta(self._conn, "acked_seq", "0"))

    @property
    def last_seq(self) -> int:
        with self._lock:
            return int(self._meta(self._conn, "next_seq", "1")) - 1

    @property
    def last_issued_ts(self) -> float:
        with self._lock:
            return float(self._meta(self._conn, "last_issued_ts", "0"))

    def stats(self) -> OutboxStats:
        with self._lock:
            conn = self._conn
            held = conn.execute("SELECT count(*) FROM outbox WHERE ts IS NULL").fetchone()[0]
            oldest = conn.execute("SELECT min(ts) FROM outbox").fetchone()[0]
            return OutboxStats(
                buffered=self._count,
                held=int(held),
                bytes=self._bytes,
                max_bytes=self.max_bytes,
                next_seq=int(self._meta(conn, "next_seq", "1")),
                acked_seq=int(self._meta(conn, "acked_seq", "0")),
                oldest_ts=oldest,
                boot_count=int(self._meta(conn, "boot_count", "0")),
                node_boot_id=self._meta(conn, "node_boot_id", ""),
                counters={name: int(self._meta(conn, name, "0")) for name in _COUNTERS},
            )

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (PASSIVE: never waits for readers).

        Called from the agent's main loop every few seconds, off the path
        of the rain callbacks.
        """
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                raise RetryableStorageError(f"outbox {self.path}: checkpoint: {exc}") from exc

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            with contextlib.suppress(sqlite3.Error):
                if not self._readonly:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_outbox(path: str | Path, *, max_bytes: int) -> Outbox:
    """Open the outbox; a file that is not a readable SQLite database is set aside.

    A corrupt store must not keep the node (and its rain alarm) from
    starting: the file is renamed ``<name>.corrupt-<unix time>`` (kept for a
    technician, with its -wal and -shm) and a new, empty outbox is created.
    """
    path = Path(path)
    try:
        outbox = Outbox(path, max_bytes=max_bytes)
    except PermanentStorageError as exc:
        if not path.exists() or not _is_corruption(exc.__cause__):
            raise
        reason = str(exc.__cause__)
    except sqlite3.DatabaseError as exc:
        if not path.exists() or not _is_corruption(exc):
            raise
        reason = str(exc)
    else:
        try:
            result = outbox.integrity_check()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                outbox.close()
                raise
            result = str(exc)
        if result == "ok":
            return outbox
        with contextlib.suppress(sqlite3.Error):
            outbox.close()
        reason = f"integrity_check: {result}"
    stamp = int(time.time())
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            old.rename(f"{path}.corrupt-{stamp}{suffix}")
    log.error("outbox %s is corrupt (%s): set aside as %s.corrupt-%d, starting a new one",
              path, reason, path.name, stamp)
    return Outbox(path, max_bytes=max_bytes)


def _is_corruption(exc: BaseException | None) -> bool:
    """"file is not a database", "disk image is malformed": not "database is locked" or I/O."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def kernel_boot_id() -> str:
    """Linux's id of the current boot: monotonic times are comparable only within one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        # Not Linux: the monotonic clock is per boot too, but we cannot tell boots
        # apart, so treat every start of the process as a new boot (safe side).
        return f"process-{os.getpid()}-{uuid.uuid4().hex[:8]}"
