"""The node ack's sequence bookkeeping: contiguous watermark, gaps, timeouts (clock injected)."""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secadero.server.ingest import SeqTracker, load_state, save_state

NODE = ("norte", "n1")


def test_in_order_messages_advance_the_watermark() -> None:
    tracker = SeqTracker(gap_timeout_s=60)
    for seq in (1, 2, 3):
        tracker.done(NODE, seq, now=0)
    assert tracker.watermark(NODE) == 3
    assert tracker.watermark(("norte", "n2")) is None


def test_a_new_node_is_not_acked_past_readings_never_received() -> None:
    # The node measured before this server ever ran: 1-4 wait in its outbox
    # (sent before anyone subscribed) and come when it re-sends them.
    tracker = SeqTracker(gap_timeout_s=60)
    tracker.done(NODE, 5, now=0)
    assert tracker.watermark(NODE) == 0
    for seq in (1, 2, 3, 4):
        tracker.done(NODE, seq, now=30)
    assert tracker.watermark(NODE) == 5


def test_a_gap_holds_the_watermark_until_filled() -> None:
    tracker = SeqTracker(gap_timeout_s=60)
    tracker.done(NODE, 1, now=0)
    tracker.done(NODE, 3, now=1)
    tracker.done(NODE, 4, now=2)
    assert tracker.watermark(NODE) == 1
    tracker.done(NODE, 2, now=3)
    assert tracker.watermark(NODE) == 4
    assert tracker.expire(now=1000) == []


def test_duplicates_do_not_move_anything() -> None:
    tracker = SeqTracker(gap_timeout_s=60)
    for seq in (1, 2, 2, 1, 3):
        tracker.done(NODE, seq, now=0)
    assert tracker.watermark(NODE) == 3


def test_a_gap_open_past_the_timeout_is_counted_lost_and_skipped() -> None:
    tracker = SeqTracker(gap_timeout_s=60)
    tracker.done(NODE, 1, now=0)
    tracker.done(NODE, 5, now=10)
    tracker.done(NODE, 6, now=20)
    tracker.done(NODE, 9, now=30)
    assert tracker.expire(now=69) == []
    assert tracker.expire(now=70) == [(NODE, 3)]  # 2, 3, 4 never came
    assert tracker.watermark(NODE) == 6
    # The gap at 7-8 is newer: it gets its own full timeout.
    assert tracker.expire(now=129) == []
    assert tracker.expire(now=130) == [(NODE, 2)]
    assert tracker.watermark(NODE) == 9
    assert tracker.expire(now=10_000) == []


def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "var" / "state.json"
    tracker = SeqTracker(gap_timeout_s=60, watermarks={NODE: 40})
    tracker.done(NODE, 41, now=0)
    tracker.done(("sur", "n-2"), 1, now=0)
    save_state(path, tracker.snapshot())
    restored = SeqTracker(gap_timeout_s=60, watermarks=load_state(path))
    assert restored.watermark(NODE) == 41
    assert restored.watermark(("sur", "n-2")) == 1
    restored.done(NODE, 43, now=0)  # 42 is missing after the restart: a gap
    assert restored.watermark(NODE) == 41


def test_the_state_file_is_fsynced_before_and_after_its_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data reaches the disk before the rename, the rename before save_state returns
    (the acks go out right after): os.fsync is watched, and still does its work."""
    path = tmp_path / "state.json"
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def watching_fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        synced.append(("directory" if is_dir else "file", path.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watching_fsync)
    save_state(path, {NODE: 7})
    # The temp file before the rename (state.json not there yet), then the directory.
    assert synced == [("file", False), ("directory", True)]
    assert load_state(path) == {NODE: 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_unreadable_state_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert load_state(path) == {}
    assert load_state(tmp_path / "missing.json") == {}


# --------------------------------------------------------------------------
# done_range and the ranges kept for gaps: the same answers as one number at
# a time in a plain set (the tracker before ranges, kept here as the model)


class SetModel:
    def __init__(self, gap_timeout_s: float) -> None:
        self.gap_timeout_s = gap_timeout_s
        self.watermark = 0
        self.pending: set[int] = set()
        self.gap_since: float | None = None

    def done(self, seq: int, now: float) -> None:
        if seq <= self.watermark:
            return
        if seq == self.watermark + 1:
            self.watermark = seq
            self._advance(now)
        else:
            self.pending.add(seq)
            if self.gap_since is None:
                self.gap_since = now

    def _advance(self, now: float) -> None:
        while self.watermark + 1 in self.pending:
            self.pending.remove(self.watermark + 1)
            self.watermark += 1
        if self.pending:
            if self.gap_since is not None:
                self.gap_since = now
        else:
            self.gap_since = None

    def expire(self, now: float) -> list[int]:
        if self.gap_since is None or now - self.gap_since < self.gap_timeout_s:
            return []
        first = min(self.pending)
        lost = first - self.watermark - 1
        self.watermark = first - 1
        self.gap_since = None
        self._advance(now)
        if self.pending:
            self.gap_since = now
        return [lost]


_operations = st.lists(st.one_of(
    st.tuples(st.just("done"), st.integers(1, 60), st.integers(0, 8)),
    st.tuples(st.just("expire"), st.integers(0, 0), st.integers(0, 0)),
), max_size=60)


@settings(max_examples=500, deadline=None)
@given(operations=_operations)
def test_ranges_answer_as_single_numbers_in_a_set(operations: list[tuple[str, int, int]]
                                                  ) -> None:
    tracker = SeqTracker(gap_timeout_s=10, watermarks={NODE: 0})
    model = SetModel(gap_timeout_s=10)
    for step, (what, first, length) in enumerate(operations):
        now = step * 3.0
        if what == "done":
            tracker.done_range(NODE, first, first + length, now)
            for seq in range(first, first + length + 1):
                model.done(seq, now)
        else:
            assert [lost for _, lost in tracker.expire(now)] == model.expire(now)
        assert tracker.watermark(NODE) == model.watermark
        pending = tracker.pending(NODE)
        assert {seq for a, b in pending for seq in range(a, b + 1)} == model.pending
        assert all(b + 1 < c for (_, b), (c, _) in itertools.pairwise(pending))


def test_a_share_groups_out_of_step_ranges_stay_a_few_entries() -> None:
    tracker = SeqTracker(gap_timeout_s=60)
    # The other process stored every second block of 1,000 first.
    for block in range(1, 100, 2):
        tracker.done_range(NODE, block * 1000 + 1, block * 1000 + 1000, now=0)
    assert len(tracker.pending(NODE)) == 50
    for block in range(0, 100, 2):
        tracker.done_range(NODE, block * 1000 + 1, block * 1000 + 1000, now=1)
    assert tracker.watermark(NODE) == 100_000
    assert tracker.pending(NODE) == []
