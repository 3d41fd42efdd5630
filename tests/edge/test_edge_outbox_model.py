"""A stateful property test of the outbox against a plain Python model.

Random sequences of adds (telemetry and events), acks (old, current,
beyond), reopenings (a restart) and a small byte cap: the store must always
hold exactly what the model says, in seq order, with drops counted.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from secadero.contract import Event, Telemetry, encode
from secadero.edge.outbox import ROW_OVERHEAD_BYTES, Outbox

CAP = 64 * 1024


class OutboxModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-model-"))
        self.box = Outbox(self.dir / "o.db", max_bytes=CAP)
        self.rows: dict[int, tuple[str, int]] = {}  # seq -> (kind, size)
        self.next_seq = 1
        self.acked = 0
        self.dropped = {"telemetry": 0, "event": 0}
        self.ignored = 0

    def _bytes(self) -> int:
        return sum(size + ROW_OVERHEAD_BYTES for _, size in self.rows.values())

    def _drop_to_cap(self) -> None:
        for kind in ("telemetry", "event"):
            for seq in sorted(self.rows):
                if self._bytes() <= CAP:
                    return
                if self.rows[seq][0] == kind:
                    del self.rows[seq]
                    self.dropped[kind] += 1

    @rule(kind=st.sampled_from(["telemetry", "event"]), pad=st.integers(0, 3000))
    def add(self, kind: str, pad: int) -> None:
        message: Telemetry | Event
        if kind == "telemetry":
            message = Telemetry(ts=1_790_000_000.0, seq=0, temperature_c=25.0,
                                humidity_pct=60.0, trays={"t1": "extended"})
        else:
            message = Event(ts=1_790_000_000.0, seq=0, type="sensor_fault", detail="x" * pad)
        seq = self.box.add(message, mono_s=1.0, kernel_boot="b")
        assert seq == self.next_seq
        size = len(encode(dataclasses.replace(message, seq=seq)))
        self.rows[seq] = (kind, size)
        self.next_seq += 1
        self._drop_to_cap()

    @rule(offset=st.integers(-5, 5))
    def ack(self, offset: int) -> None:
        seq = max(0, self.next_seq - 1 + offset)
        self.box.ack(seq)
        if seq >= self.next_seq:
            self.ignored += 1
            return
        if seq > self.acked:
            self.acked = seq
            for s in [s for s in self.rows if s <= seq]:
                del self.rows[s]

    @rule()
    def restart(self) -> None:
        self.box.close()
        self.box = Outbox(self.dir / "o.db", max_bytes=CAP)

    @invariant()
    def matches_the_model(self) -> None:
        assert [p.seq for p in self.box.pending(0, limit=100_000)] == sorted(self.rows)
        assert self.box.bytes_used == self._bytes()
        counters = self.box.stats().counters
        assert counters["dropped_telemetry"] == self.dropped["telemetry"]
        assert counters["dropped_events"] == self.dropped["event"]
        assert counters["acks_ignored"] == self.ignored
        assert self.box.bytes_used <= CAP

    def teardown(self) -> None:
        self.box.close()
        shutil.rmtree(self.dir, ignore_errors=True)


OutboxModel.TestCase.settings = settings(max_examples=30, stateful_step_count=40,
                                         deadline=None)
test_outbox_matches_its_model = OutboxModel.TestCase
