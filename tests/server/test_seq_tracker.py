"""The node ack's sequence bookkeeping: contiguous watermark, gaps, timeouts (clock injected)."""

from __future__ import annotations

from pathlib import Path

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


def test_unreadable_state_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert load_state(path) == {}
    assert load_state(tmp_path / "missing.json") == {}
