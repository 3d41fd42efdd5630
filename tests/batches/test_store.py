"""The batch store: SQLite with versioned migrations; every refusal leaves the file as it was."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from secadero.server.batches.model import (
    Batch,
    BatchError,
    MoistureReading,
    TrayRef,
    TypicalDay,
    UnknownBatch,
)
from secadero.server.batches.store import SCHEMA_VERSION, BatchStore, NewerSchema

T0 = 1_780_000_000.0
T1 = TrayRef("norte-1", "t1")
T2 = TrayRef("norte-1", "t2")


def batch(batch_id: str = "lote-1", *trays: TrayRef, **kw: object) -> Batch:
    return Batch(id=batch_id, yard="norte", trays=trays or (T1,), started_at=T0, **kw)


def dump(path: Path) -> list[str]:
    """Every row of every table, to compare a file before and after a refused command."""
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


@pytest.fixture
def store(tmp_path: Path) -> BatchStore:
    with BatchStore(tmp_path / "batches.sqlite3") as opened:
        yield opened


def test_a_batch_is_stored_whole_and_read_back(store: BatchStore) -> None:
    started = store.add_batch(batch("lote-1", T2, T1, lot="L-07", member="Familia Ruiz",
                                    fermentation_end="2026-05-30", wet_weight_kg=120.5,
                                    notes="caja 3", started_by="ana"))
    assert started == Batch(id="lote-1", yard="norte", trays=(T1, T2), started_at=T0,
                            lot="L-07", member="Familia Ruiz", fermentation_end="2026-05-30",
                            wet_weight_kg=120.5, notes="caja 3", started_by="ana")
    store.add_moisture(MoistureReading("lote-1", T0 + 86400, 40.0, by="ana", tray=T1))
    ended = store.end_batch("lote-1", ended_at=T0 + 5 * 86400, final_moisture_pct=7.2,
                            dry_weight_kg=55.0, ended_by="luis")
    assert (ended.ended_at, ended.final_moisture_pct, ended.dry_weight_kg, ended.ended_by) == (
        T0 + 5 * 86400, 7.2, 55.0, "luis")
    # The final moisture is a reading too (the estimate and time to target see it).
    assert store.readings("lote-1") == [
        MoistureReading("lote-1", T0 + 86400, 40.0, by="ana", tray=T1),
        MoistureReading("lote-1", T0 + 5 * 86400, 7.2, by="luis", tray=None)]
    assert [b.id for b in store.batches()] == ["lote-1"]
    assert store.batches(open_only=True) == []


def test_a_tray_is_free_again_once_its_batch_ends(store: BatchStore) -> None:
    store.add_batch(batch("lote-1", T1))
    assert store.open_batch_on_tray("norte", T1) == "lote-1"
    store.end_batch("lote-1", ended_at=T0 + 10, final_moisture_pct=None, dry_weight_kg=None)
    assert store.open_batch_on_tray("norte", T1) is None
    store.add_batch(batch("lote-2", T1))
    assert store.open_batch_on_tray("norte", T1) == "lote-2"
    # The same node and tray ids in another yard are another tray.
    store.add_batch(Batch(id="lote-3", yard="sur", trays=(T1,), started_at=T0))
    assert [b.id for b in store.batches(open_only=True)] == ["lote-2", "lote-3"]
    assert [b.id for b in store.batches(yard="sur")] == ["lote-3"]


@pytest.mark.parametrize(("command", "field"), [
    (lambda s: s.add_batch(batch("lote-1", T2)), "id"),          # the id is taken
    (lambda s: s.add_batch(batch("lote-2", T2, T1)), "trays"),   # T1 is in lote-1
    (lambda s: s.end_batch("lote-1", ended_at=T0 - 1, final_moisture_pct=7.0,
                           dry_weight_kg=50.0), "at"),           # end before start
    (lambda s: s.add_moisture(MoistureReading("lote-1", T0 + 60, 41.0, tray=T1)), "at"),
    (lambda s: s.end_batch("nada", ended_at=T0, final_moisture_pct=None,
                           dry_weight_kg=None), "id"),           # unknown
    (lambda s: s.add_moisture(MoistureReading("nada", T0, 41.0)), "id"),
])
def test_a_refused_command_leaves_the_file_as_it_was(tmp_path: Path, command, field) -> None:
    path = tmp_path / "batches.sqlite3"
    with BatchStore(path) as store:
        store.add_batch(batch("lote-1", T1))
        store.add_moisture(MoistureReading("lote-1", T0 + 60, 40.0, tray=T1))
        before = dump(path)
        with pytest.raises(BatchError) as refused:
            command(store)
        assert refused.value.field == field
        assert dump(path) == before


def test_an_ended_batch_takes_no_reading_and_no_second_end(store: BatchStore) -> None:
    store.add_batch(batch("lote-1"))
    store.end_batch("lote-1", ended_at=T0 + 10, final_moisture_pct=None, dry_weight_kg=None)
    with pytest.raises(BatchError, match="already ended"):
        store.end_batch("lote-1", ended_at=T0 + 20, final_moisture_pct=None, dry_weight_kg=None)
    with pytest.raises(BatchError, match="has ended"):
        store.add_moisture(MoistureReading("lote-1", T0 + 5, 30.0))


def test_the_schema_refuses_what_python_should_have_refused(store: BatchStore,
                                                           tmp_path: Path) -> None:
    """A second writer (an older CLI, a hand-made script) cannot store impossible values."""
    store.add_batch(batch("lote-1"))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        store.add_moisture(MoistureReading("lote-1", T0, 101.0))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        store.add_batch(batch("lote-2", T2, wet_weight_kg=0.0))
    db = sqlite3.connect(tmp_path / "batches.sqlite3")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        # Straight into the table, past every Python check: the partial index refuses.
        db.execute("INSERT INTO batches (id, yard, started_at) VALUES ('x', 'norte', 0)")
        db.execute("INSERT INTO batch_trays (batch, yard, node, tray) VALUES "
                   "('x', 'norte', 'norte-1', 't1')")
    db.close()


def test_unknown_batch_names_the_id(store: BatchStore) -> None:
    with pytest.raises(UnknownBatch) as unknown:
        store.batch("nada")
    assert (unknown.value.field, unknown.value.message) == ("id", "no batch 'nada'")
    with pytest.raises(UnknownBatch):
        store.readings("nada")


def test_the_same_reading_twice_is_stored_once(store: BatchStore) -> None:
    store.add_batch(batch("lote-1"))
    reading = MoistureReading("lote-1", T0 + 60, 40.0, by="ana", tray=T1)
    store.add_moisture(reading)
    store.add_moisture(reading)
    store.add_moisture(MoistureReading("lote-1", T0 + 60, 40.0, by="ana"))  # no tray: another
    assert store.readings("lote-1") == [MoistureReading("lote-1", T0 + 60, 40.0, by="ana"),
                                        reading]


# The schema as version 1 wrote it (frozen here: this is the file a cooperative has).
VERSION_1 = """
CREATE TABLE batches (id TEXT PRIMARY KEY, yard TEXT NOT NULL, started_at REAL NOT NULL,
    lot TEXT NOT NULL DEFAULT '', member TEXT NOT NULL DEFAULT '', fermentation_end TEXT,
    wet_weight_kg REAL CHECK (wet_weight_kg > 0), notes TEXT NOT NULL DEFAULT '',
    started_by TEXT NOT NULL DEFAULT '', ended_at REAL CHECK (ended_at >= started_at),
    final_moisture_pct REAL CHECK (final_moisture_pct BETWEEN 0 AND 100),
    dry_weight_kg REAL CHECK (dry_weight_kg > 0), ended_by TEXT NOT NULL DEFAULT '');
CREATE TABLE batch_trays (batch TEXT NOT NULL REFERENCES batches(id), yard TEXT NOT NULL,
    node TEXT NOT NULL, tray TEXT NOT NULL, released_at REAL, PRIMARY KEY (batch, node, tray));
CREATE UNIQUE INDEX one_open_batch_per_tray ON batch_trays (yard, node, tray)
    WHERE released_at IS NULL;
CREATE TABLE moisture_readings (batch TEXT NOT NULL REFERENCES batches(id), ts REAL NOT NULL,
    moisture_pct REAL NOT NULL CHECK (moisture_pct BETWEEN 0 AND 100),
    by TEXT NOT NULL DEFAULT '', node TEXT NOT NULL DEFAULT '', tray TEXT NOT NULL DEFAULT '');
CREATE INDEX moisture_by_batch ON moisture_readings (batch, ts);
INSERT INTO batches (id, yard, started_at, lot) VALUES ('lote-1', 'norte', 1780000000, 'L-1');
INSERT INTO batch_trays (batch, yard, node, tray) VALUES ('lote-1', 'norte', 'norte-1', 't1');
INSERT INTO moisture_readings VALUES ('lote-1', 1780086400, 40.0, 'ana', 'norte-1', 't1');
INSERT INTO moisture_readings VALUES ('lote-1', 1780086400, 40.0, 'ana', 'norte-1', 't1');
INSERT INTO moisture_readings VALUES ('lote-1', 1780172800, 30.0, 'ana', '', '');
PRAGMA user_version = 1;
"""


def test_a_version_1_file_is_migrated_at_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
    with BatchStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        assert store.batch("lote-1") == Batch(id="lote-1", yard="norte", trays=(T1,),
                                              started_at=T0, lot="L-1")
        # Version 2 keeps one of a reading stored twice, and refuses a third copy's rival.
        assert store.readings("lote-1") == [
            MoistureReading("lote-1", T0 + 86400, 40.0, by="ana", tray=T1),
            MoistureReading("lote-1", T0 + 2 * 86400, 30.0, by="ana")]
        with pytest.raises(BatchError, match="another reading"):
            store.add_moisture(MoistureReading("lote-1", T0 + 86400, 39.0, by="ana", tray=T1))
    # Opening again finds nothing to do.
    with BatchStore(path) as store:
        assert store.schema_version == 3
        assert len(store.readings("lote-1")) == 2


def test_a_failed_migration_leaves_the_file_at_its_old_version(tmp_path: Path) -> None:
    """The migration and its version number are one transaction."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
        # A version-1 file someone gave an index of the name version 2 creates.
        db.execute("CREATE INDEX one_reading_per_instant ON moisture_readings (ts)")
    before = dump(path)
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        BatchStore(path)
    assert dump(path) == before
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1


def test_a_file_from_a_newer_secadero_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(NewerSchema, match="newer than this secadero's 3"):
        BatchStore(path)


def test_a_new_file_is_at_the_latest_version_in_wal_mode(tmp_path: Path) -> None:
    with BatchStore(tmp_path / "new.sqlite3") as store:
        assert store.schema_version == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "new.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_typical_day_is_kept_by_yard_and_span_and_replaced_when_learnt_again(
        tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    learnt = TypicalDay(17.4, 0.34, "learnt", 14, T0 - 14 * 86400, T0)
    with BatchStore(path) as store:
        assert store.typical_day("norte", learnt.since, learnt.until) is None
        store.keep_typical_day("norte", learnt)
        store.keep_typical_day("sur", replace(learnt, kpa_h=12.0))
        too_few = TypicalDay(15.0, 0.35, "built-in", 3, T0 - 7 * 86400, T0,
                             "3 day(s) of the yard's climate; 7 needed")
        store.keep_typical_day("norte", too_few)
    with BatchStore(path) as store:  # it outlives the process
        assert store.typical_day("norte", learnt.since, learnt.until) == learnt
        assert store.typical_day("sur", learnt.since, learnt.until).kpa_h == 12.0
        assert store.typical_day("norte", too_few.since, too_few.until) == too_few
        store.keep_typical_day("norte", replace(learnt, kpa_h=16.0))
        assert store.typical_day("norte", learnt.since, learnt.until).kpa_h == 16.0
        with pytest.raises(BatchError, match="needs its span") as refused:
            store.keep_typical_day("norte", replace(learnt, since=None))
        assert refused.value.field == "typical_day"
