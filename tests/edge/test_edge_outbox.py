"""The durable outbox: seq, acks, the byte cap and its drop policy, held readings, disk full."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from secadero.contract import Event, Telemetry
from secadero.edge.outbox import ROW_OVERHEAD_BYTES, Outbox
from secadero.errors import RetryableStorageError

BOOT = "boot-a"


def telemetry(ts: float = 1_790_000_000.0, humidity_pct: float = 60.0) -> Telemetry:
    return Telemetry(ts=ts, seq=0, temperature_c=25.0, humidity_pct=humidity_pct, rain=False,
                     rain_mm=None, trays={"t1": "extended"})


def rain_event(ts: float = 1_790_000_000.0) -> Event:
    return Event(ts=ts, seq=0, type="rain_started")


def test_pragmas_are_wal_and_full(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        assert box.pragmas() == ("wal", 2)


def test_seq_is_assigned_at_commit_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        assert [box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT) for _ in range(3)] == [1, 2, 3]
        assert box.stats().boot_count == 1
    with Outbox(path) as box:
        assert box.add(rain_event(), mono_s=2.0, kernel_boot=BOOT) == 4
        pending = box.pending(0)
        assert [p.seq for p in pending] == [1, 2, 3, 4]
        assert [p.kind for p in pending] == ["telemetry"] * 3 + ["event"]
        assert json.loads(pending[3].payload) == {"ts": 1_790_000_000.0, "seq": 4,
                                                  "type": "rain_started"}
        assert box.stats().boot_count == 2
        assert box.last_issued_ts == 1_790_000_000.0


def test_ack_deletes_up_to_seq_and_ignores_acks_beyond_the_last_seq(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        for _ in range(5):
            box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT)
        assert box.ack(3) == 3
        assert [p.seq for p in box.pending(0)] == [4, 5]
        assert box.ack(2) == 0           # an old ack, re-delivered
        assert box.ack(99) == 0          # not about our messages
        assert box.acked_seq == 3 and box.buffered == 2
        counters = box.stats().counters
        assert counters["acks_ignored"] == 1 and counters["acks"] == 2


def test_ack_covering_a_gap_the_node_made_itself(tmp_path: Path) -> None:
    """Drops leave seq gaps; the server acks past them after its gap timeout."""
    with Outbox(tmp_path / "o.db", max_bytes=4 * 1024) as box:
        for _ in range(200):
            box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT)
        first = box.pending(0)[0].seq
        assert first > 1                      # 1..first-1 were dropped
        assert box.ack(first + 2) == 3        # the ack covers the gap without complaint
        assert box.pending(0)[0].seq == first + 3


def test_cap_drops_oldest_telemetry_first_and_events_last(tmp_path: Path) -> None:
    cap = 64 * 1024
    with Outbox(tmp_path / "o.db", max_bytes=cap) as box:
        box.add(rain_event(), mono_s=0.0, kernel_boot=BOOT)                     # seq 1
        for _ in range(2000):
            box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT)
        assert box.bytes_used <= cap
        stats = box.stats()
        seqs = [p.seq for p in box.pending(0, limit=10_000)]
        assert seqs[0] == 1                    # the event survived
        assert seqs[-1] == 2001                # the newest reading is kept
        kept = len(seqs)
        assert stats.counters["dropped_telemetry"] == 2001 - kept
        assert stats.counters["dropped_events"] == 0
        assert seqs[1:] == list(range(2001 - kept + 2, 2002))  # oldest telemetry went
        # Only events left and still over the cap: then the oldest event goes.
    with Outbox(tmp_path / "e.db", max_bytes=cap) as box:
        for _ in range(2000):
            box.add(rain_event(), mono_s=0.0, kernel_boot=BOOT)
        stats = box.stats()
        assert stats.counters["dropped_events"] == 2000 - stats.buffered
        assert box.pending(0, limit=10_000)[-1].seq == 2000


def test_byte_accounting_matches_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        for _ in range(10):
            box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT)
        box.ack(4)
        used = box.bytes_used
    conn = sqlite3.connect(path)
    count, payload = conn.execute("SELECT count(*), sum(length(payload)) FROM outbox").fetchone()
    conn.close()
    assert used == payload + count * ROW_OVERHEAD_BYTES


def test_held_messages_are_not_sent_until_stamped(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        box.add(telemetry(ts=0.0), mono_s=100.0, kernel_boot="old-boot", held=True)   # 1
        box.add(telemetry(ts=0.0), mono_s=10.0, kernel_boot=BOOT, held=True)          # 2
        box.add(rain_event(ts=0.0), mono_s=12.5, kernel_boot=BOOT, held=True)         # 3
        assert box.pending(0) == []
        assert box.stats().held == 3
        stamped, dropped = box.stamp_held(BOOT, offset_s=1_790_000_000.0)
        assert (stamped, dropped) == (2, 1)
        pending = box.pending(0)
        assert [p.seq for p in pending] == [2, 3]
        assert json.loads(pending[0].payload)["ts"] == 1_790_000_010.0
        assert json.loads(pending[1].payload)["ts"] == 1_790_000_012.5
        assert box.stats().counters["dropped_unstampable"] == 1
        # A held reading never set the "last issued" time.
        assert box.last_issued_ts == 0.0


def test_pending_stops_at_the_first_held_message(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT)
        box.add(telemetry(ts=0.0), mono_s=2.0, kernel_boot=BOOT, held=True)
        box.add(telemetry(), mono_s=3.0, kernel_boot=BOOT)
        assert [p.seq for p in box.pending(0)] == [1]


def test_disk_full_is_a_retryable_error_and_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT)
        # SQLite's own page limit gives the real SQLITE_FULL "database or disk is full".
        pages = box._conn.execute("PRAGMA page_count").fetchone()[0]
        box._conn.execute(f"PRAGMA max_page_count = {pages}")
        stored = 1
        with pytest.raises(RetryableStorageError, match="full"):
            for _ in range(500):
                box.add(telemetry(humidity_pct=61.0), mono_s=2.0, kernel_boot=BOOT)
                stored += 1
        assert box.integrity_check() == "ok"
        assert [p.seq for p in box.pending(0, 1000)] == list(range(1, stored + 1))
        assert box.buffered == stored
        box._conn.execute("PRAGMA max_page_count = 1073741823")
        assert box.add(telemetry(), mono_s=3.0, kernel_boot=BOOT) == stored + 1


def test_status_reader_opens_read_only(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT)
        with Outbox(path, readonly=True) as reader:
            stats = reader.stats()
            assert stats.buffered == 1 and stats.next_seq == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_outbox_is_set_aside_and_a_new_one_started(tmp_path: Path,
                                                              damage: str) -> None:
    from secadero.edge.outbox import open_outbox

    path = tmp_path / "o.db"
    if damage == "garbage":
        path.write_bytes(b"\x00" * 10 + b"not a database at all" * 100)
    else:
        with Outbox(path) as box:
            for _ in range(300):
                box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with open_outbox(path, max_bytes=1024 * 1024) as box:
        assert box.integrity_check() == "ok"
        assert box.buffered == 0
        assert box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT) == 1
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert aside and all(name.startswith("o.db.corrupt-") for name in aside)


def test_a_healthy_outbox_is_opened_as_it_is(tmp_path: Path) -> None:
    from secadero.edge.outbox import open_outbox

    path = tmp_path / "o.db"
    with Outbox(path) as box:
        box.add(telemetry(), mono_s=1.0, kernel_boot=BOOT)
    with open_outbox(path, max_bytes=1024 * 1024) as box:
        assert box.buffered == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.db"]
