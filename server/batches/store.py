"""The batches and their moisture readings in SQLite: the durable record of each batch.

Why SQLite: the record is what a buyer or certifier asks for; it must outlive
power cuts and upgrades. WAL with ``synchronous=FULL``: a command that said
"stored" has reached the disk, and ``secadero batch`` reads and writes while
the server runs (``busy_timeout`` makes one wait for the other).

Each operation is one transaction: a refused command leaves the file as it
was. The schema itself refuses what must never be stored, so a second
writer (the CLI beside the server's API) cannot slip past a check made in
Python: a tray in two open batches (a partial unique index), moisture
outside 0..100, a weight that is not positive.

Migrations: ``MIGRATIONS[n]`` takes a file from schema version ``n`` to
``n + 1``, run at open by ``server/sqlite_files.py`` (a file newer than this
code is refused). Never edit a released migration: add one.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from secadero.server import sqlite_files
from secadero.server.batches.model import (
    Batch,
    BatchError,
    MoistureReading,
    TrayRef,
    TypicalDay,
    UnknownBatch,
)

# Callers catch it from the store that raised it.
from secadero.server.sqlite_files import NewerSchema as NewerSchema

# How long a writer waits for the other process's transaction (CLI vs. server).
BUSY_TIMEOUT_MS = 10_000


def _v1_initial(db: sqlite3.Connection) -> None:
    """Batches, their trays, their moisture readings."""
    db.execute("""
        CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            yard TEXT NOT NULL,
            started_at REAL NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            member TEXT NOT NULL DEFAULT '',
            fermentation_end TEXT,                 -- ISO date
            wet_weight_kg REAL CHECK (wet_weight_kg > 0),
            notes TEXT NOT NULL DEFAULT '',
            started_by TEXT NOT NULL DEFAULT '',
            ended_at REAL CHECK (ended_at >= started_at),
            final_moisture_pct REAL CHECK (final_moisture_pct BETWEEN 0 AND 100),
            dry_weight_kg REAL CHECK (dry_weight_kg > 0),
            ended_by TEXT NOT NULL DEFAULT ''
        )""")
    # released_at: NULL while the batch is open (copied from the batch's end), so the
    # partial index below can say "one open batch per tray" with this table's columns.
    db.execute("""
        CREATE TABLE batch_trays (
            batch TEXT NOT NULL REFERENCES batches(id),
            yard TEXT NOT NULL,
            node TEXT NOT NULL,
            tray TEXT NOT NULL,
            released_at REAL,
            PRIMARY KEY (batch, node, tray)
        )""")
    db.execute("CREATE UNIQUE INDEX one_open_batch_per_tray ON batch_trays (yard, node, tray) "
               "WHERE released_at IS NULL")
    db.execute("""
        CREATE TABLE moisture_readings (
            batch TEXT NOT NULL REFERENCES batches(id),
            ts REAL NOT NULL,
            moisture_pct REAL NOT NULL CHECK (moisture_pct BETWEEN 0 AND 100),
            by TEXT NOT NULL DEFAULT '',
            node TEXT NOT NULL DEFAULT '',         -- '' and '': not on one tray
            tray TEXT NOT NULL DEFAULT ''
        )""")
    db.execute("CREATE INDEX moisture_by_batch ON moisture_readings (batch, ts)")


def _v2_one_reading_per_instant(db: sqlite3.Connection) -> None:
    """A reading sent twice (a phone retrying over a bad link) is stored once.

    Version 1 kept both copies; the first of each is kept, the later
    copies (same batch, time and tray) are deleted before the index exists.
    """
    db.execute("DELETE FROM moisture_readings WHERE rowid NOT IN (SELECT min(rowid) FROM "
               "moisture_readings GROUP BY batch, ts, node, tray)")
    db.execute("CREATE UNIQUE INDEX one_reading_per_instant ON moisture_readings "
               "(batch, ts, node, tray)")


def _v3_typical_days(db: sqlite3.Connection) -> None:
    """The yards' typical drying days as learnt (server/batches/typical.py): their days
    are past, so the weeks of a yard's climate are read once, not at every `batch show`."""
    db.execute("""
        CREATE TABLE typical_days (
            yard TEXT NOT NULL,
            since REAL NOT NULL,
            until REAL NOT NULL,
            kpa_h REAL NOT NULL CHECK (kpa_h > 0),
            sigma REAL NOT NULL CHECK (sigma >= 0),
            source TEXT NOT NULL CHECK (source IN ('learnt', 'built-in')),
            days INTEGER NOT NULL CHECK (days >= 0),
            reason TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (yard, since, until)
        )""")


# MIGRATIONS[n] takes a file from version n to n + 1.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _v1_initial,
    _v2_one_reading_per_instant,
    _v3_typical_days,
)
SCHEMA_VERSION = len(MIGRATIONS)


class BatchStore:
    """The batch records in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = sqlite_files.open_database(path, synchronous="FULL",
                                              busy_timeout_s=BUSY_TIMEOUT_MS / 1000,
                                              foreign_keys=True)
        with self._lock:
            sqlite_files.migrate(self._db, self.path, MIGRATIONS, self._transaction)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return sqlite_files.schema_version(self._db)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_files.immediate_transaction(self._db, self._lock)

    # ------------------------------------------------------------ batches

    def add_batch(self, batch: Batch) -> Batch:
        """Store a new open batch with its trays; ``BatchError`` if the id or a tray is taken."""
        with self._transaction() as db:
            if self._row(batch.id) is not None:
                raise BatchError("id", f"batch {batch.id!r} already exists")
            for tray in batch.trays:
                holder = self.open_batch_on_tray(batch.yard, tray)
                if holder is not None:
                    raise BatchError("trays", f"tray {tray} is in open batch {holder!r}; "
                                              "end that batch first")
            db.execute(
                "INSERT INTO batches (id, yard, started_at, lot, member, fermentation_end, "
                "wet_weight_kg, notes, started_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (batch.id, batch.yard, batch.started_at, batch.lot, batch.member,
                 batch.fermentation_end, batch.wet_weight_kg, batch.notes, batch.started_by))
            try:
                db.executemany(
                    "INSERT INTO batch_trays (batch, yard, node, tray) VALUES (?, ?, ?, ?)",
                    [(batch.id, batch.yard, t.node, t.tray) for t in batch.trays])
            except sqlite3.IntegrityError as exc:
                # The check above ran in this transaction; only a tray named twice gets here.
                raise BatchError("trays", "a tray is named twice") from exc
        return self.batch(batch.id)

    def end_batch(self, batch_id: str, *, ended_at: float, final_moisture_pct: float | None,
                  dry_weight_kg: float | None, ended_by: str = "") -> Batch:
        """End an open batch and free its trays; the final moisture is also a reading."""
        with self._transaction() as db:
            batch = self.batch(batch_id)
            if not batch.open:
                raise BatchError("id", f"batch {batch_id!r} already ended")
            if ended_at < batch.started_at:
                raise BatchError("at", "the end is before the batch's start")
            db.execute("UPDATE batches SET ended_at = ?, final_moisture_pct = ?, "
                       "dry_weight_kg = ?, ended_by = ? WHERE id = ?",
                       (ended_at, final_moisture_pct, dry_weight_kg, ended_by, batch_id))
            db.execute("UPDATE batch_trays SET released_at = ? WHERE batch = ?",
                       (ended_at, batch_id))
            if final_moisture_pct is not None:
                self._insert_reading(MoistureReading(batch_id, ended_at, final_moisture_pct,
                                                     by=ended_by))
        return self.batch(batch_id)

    def batch(self, batch_id: str) -> Batch:
        """The batch, or ``UnknownBatch``."""
        with self._lock:
            row = self._row(batch_id)
            if row is None:
                raise UnknownBatch("id", f"no batch {batch_id!r}")
            return self._batch(row)

    def batches(self, *, yard: str | None = None, open_only: bool = False) -> list[Batch]:
        """Batches, oldest start first."""
        query = "SELECT * FROM batches WHERE 1=1"
        args: list[Any] = []
        if yard is not None:
            query += " AND yard = ?"
            args.append(yard)
        if open_only:
            query += " AND ended_at IS NULL"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY started_at, id", args).fetchall()
            return [self._batch(row) for row in rows]

    def open_batch_on_tray(self, yard: str, tray: TrayRef) -> str | None:
        """The id of the open batch on ``tray``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT batch FROM batch_trays WHERE yard = ? AND node = ? AND tray = ? AND "
                "released_at IS NULL", (yard, tray.node, tray.tray)).fetchone()
        return row["batch"] if row else None

    def _row(self, batch_id: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()

    def _batch(self, row: sqlite3.Row) -> Batch:
        trays = self._db.execute("SELECT node, tray FROM batch_trays WHERE batch = ? "
                                 "ORDER BY node, tray", (row["id"],)).fetchall()
        data = dict(row)
        return Batch(trays=tuple(TrayRef(t["node"], t["tray"]) for t in trays), **data)

    # ------------------------------------------------------------ moisture

    def add_moisture(self, reading: MoistureReading) -> MoistureReading:
        """Store a reading of an open batch. The same reading again is stored once;
        another value at the same time and tray is refused."""
        with self._transaction():
            batch = self.batch(reading.batch)
            if not batch.open:
                raise BatchError("at", f"batch {batch.id!r} has ended; no more readings")
            self._insert_reading(reading)
        return reading

    def _insert_reading(self, reading: MoistureReading) -> None:
        node, tray = (reading.tray.node, reading.tray.tray) if reading.tray else ("", "")
        try:
            self._db.execute("INSERT INTO moisture_readings (batch, ts, moisture_pct, by, node, "
                             "tray) VALUES (?, ?, ?, ?, ?, ?)",
                             (reading.batch, reading.ts, reading.moisture_pct, reading.by,
                              node, tray))
        except sqlite3.IntegrityError as exc:
            same = self._db.execute(
                "SELECT moisture_pct, by FROM moisture_readings WHERE batch = ? AND ts = ? "
                "AND node = ? AND tray = ?", (reading.batch, reading.ts, node, tray)).fetchone()
            if same is None:
                raise
            if (same["moisture_pct"], same["by"]) != (reading.moisture_pct, reading.by):
                raise BatchError("at", "another reading at that time on that tray is already "
                                       f"stored ({same['moisture_pct']} %)") from exc
            # The same reading sent again: stored once already.

    # ------------------------------------------------------------ typical days

    def typical_day(self, yard: str, since: float, until: float) -> TypicalDay | None:
        """The typical day kept for the yard over ``[since, until)``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT kpa_h, sigma, source, days, reason FROM typical_days "
                "WHERE yard = ? AND since = ? AND until = ?", (yard, since, until)).fetchone()
        if row is None:
            return None
        return TypicalDay(row["kpa_h"], row["sigma"], row["source"], row["days"], since,
                          until, row["reason"])

    def keep_typical_day(self, yard: str, day: TypicalDay) -> None:
        """Keep a typical day learnt over ``[day.since, day.until)`` (replacing one)."""
        if day.since is None or day.until is None:
            raise BatchError("typical_day", "a typical day to keep needs its span")
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO typical_days VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (yard, day.since, day.until, day.kpa_h, day.sigma, day.source,
                        day.days, day.reason))

    def readings(self, batch_id: str) -> list[MoistureReading]:
        """The batch's moisture readings, oldest first (``UnknownBatch`` if none such)."""
        with self._lock:
            self.batch(batch_id)
            rows = self._db.execute("SELECT * FROM moisture_readings WHERE batch = ? "
                                    "ORDER BY ts, node, tray", (batch_id,)).fetchall()
        return [MoistureReading(batch=r["batch"], ts=r["ts"], moisture_pct=r["moisture_pct"],
                                by=r["by"], tray=TrayRef(r["node"], r["tray"]) if r["node"]
                                else None) for r in rows]
