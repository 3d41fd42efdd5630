"""The quality warnings of the open drying batches: pure rules, decided by the alert engine.

Three causes spoil a batch on the way, each one a warning for the ``quality``
role (docs/batches.md, "Quality warnings"):

- ``rewetting``: trays of the batch left out at night (outside the yard's
  drying hours) in air at or above ``rewetting_humidity_pct``: a bean is in
  balance with 80 % RH air at about 10 % moisture (GAB isotherm, Sandoval et
  al. 2020), so beans near the target take water back, and Amazon nights are
  that humid; beans must be covered at night (Wood & Lass, *Cocoa*);
- ``mould_risk``: the batch is ``mould_after_days`` old and no moisture
  reading has come down to ``mould_moisture_pct``: above about 8 % moulds
  grow inside the beans (Fowler), and open-sun drying takes about a week;
  dull weather that stretches it further brings moulds (Wood & Lass);
- ``brittle``: the latest moisture reading is below ``brittle_moisture_pct``:
  below about 5 % beans turn brittle (Fowler) and break in the sack.

These functions only say what is true now; like ``server.alerts.rules`` they
read no clock, no store and no socket. The alert engine gives each cause its
own episode, keyed by the batch (``batch_rewetting/<batch>`` ...), so one
night with trays out is one message, not one per evaluation, and sends it
through the notifiers like every alert. The batches reach the engine as
``OpenBatch`` values, a small read-only view of the records
(``open_batch(batch, readings)`` builds one), through an ``OpenBatches``
callable the alert service is given: ``open_batches_from(store)`` makes one
from the batch records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from secadero.server.alerts.rules import YardView
from secadero.server.batches.model import Batch, MoistureReading, TrayRef
from secadero.settings import BatchSettings

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class OpenBatch:
    """What the quality warnings need to know of one open batch.

    ``last_moisture_pct``/``last_moisture_ts``: the latest reading (by its
    time), ``min_moisture_pct``: the lowest reading so far; ``None`` while the
    batch has no reading.
    """

    id: str
    yard: str
    trays: tuple[TrayRef, ...]
    started_at: float
    last_moisture_pct: float | None = None
    last_moisture_ts: float | None = None
    min_moisture_pct: float | None = None


# The input the alert service takes: the open batches of one yard (the batch store behind it).
OpenBatches = Callable[[str], Sequence[OpenBatch]]


def open_batch(batch: Batch, readings: Iterable[MoistureReading]) -> OpenBatch:
    """The quality warnings' view of a batch record and its moisture readings."""
    own = sorted((r for r in readings if r.batch == batch.id), key=lambda r: r.ts)
    last = own[-1] if own else None
    return OpenBatch(
        id=batch.id, yard=batch.yard, trays=batch.trays, started_at=batch.started_at,
        last_moisture_pct=last.moisture_pct if last else None,
        last_moisture_ts=last.ts if last else None,
        min_moisture_pct=min(r.moisture_pct for r in own) if own else None)


class BatchRecords(Protocol):
    """What the quality warnings read of the batch records (``store.BatchStore``)."""

    def batches(self, *, yard: str | None = None, open_only: bool = False) -> list[Batch]: ...

    def readings(self, batch_id: str) -> list[MoistureReading]: ...


def open_batches_from(records: BatchRecords) -> OpenBatches:
    """The alert service's ``open_batches`` input, read from the batch records."""
    def open_batches(yard: str) -> list[OpenBatch]:
        return [open_batch(b, records.readings(b.id))
                for b in records.batches(yard=yard, open_only=True)]
    return open_batches


@dataclass(frozen=True, slots=True)
class Rewetting:
    """The batch's trays out at night in humid air."""

    trays: tuple[str, ...]  # node/tray, sorted
    humidity_pct: float  # the most humid air among those trays


@dataclass(frozen=True, slots=True)
class MouldRisk:
    age_days: float
    last_moisture_pct: float | None  # None: no reading at all


@dataclass(frozen=True, slots=True)
class Brittle:
    moisture_pct: float
    ts: float


def rewetting(batch: OpenBatch, view: YardView, settings: BatchSettings, *,
              drying: bool) -> Rewetting | None:
    """The batch's trays whose switch says ``extended`` at night in air at or above the
    rewetting humidity; None by day (``drying``: in the yard's drying hours), with the
    trays in, or in drier air.

    The air at a tray is its node's humidity; when that sensor gives nothing,
    the most humid reading of the yard's other nodes (the same air a few metres
    away), so a failed sensor does not hide wet trays.
    """
    if drying:
        return None
    nodes = {node.node: node for node in view.nodes}
    readings = [n.humidity_pct for n in view.nodes if n.humidity_pct is not None]
    yard_air = max(readings) if readings else None
    wet: list[tuple[str, float]] = []
    for tray in batch.trays:
        node = nodes.get(tray.node)
        if node is None or node.trays.get(tray.tray) != "extended":
            continue
        air = node.humidity_pct if node.humidity_pct is not None else yard_air
        if air is not None and air >= settings.rewetting_humidity_pct:
            wet.append((str(tray), air))
    if not wet:
        return None
    return Rewetting(trays=tuple(sorted(t for t, _ in wet)),
                     humidity_pct=max(air for _, air in wet))


def mould_risk(batch: OpenBatch, now: float, settings: BatchSettings) -> MouldRisk | None:
    """The batch is past ``mould_after_days`` and no reading reached ``mould_moisture_pct``."""
    age_days = (now - batch.started_at) / DAY_S
    if age_days < settings.mould_after_days:
        return None
    if batch.min_moisture_pct is not None and batch.min_moisture_pct <= settings.mould_moisture_pct:
        return None
    return MouldRisk(age_days=age_days, last_moisture_pct=batch.last_moisture_pct)


def brittle(batch: OpenBatch, settings: BatchSettings) -> Brittle | None:
    """The latest moisture reading is below ``brittle_moisture_pct``.

    The latest, not the lowest: a reading retaken at 6 % (a meter misread, or
    another tray) ends the warning, and a new one below the limit starts another.
    """
    if batch.last_moisture_pct is None or batch.last_moisture_ts is None:
        return None
    if batch.last_moisture_pct >= settings.brittle_moisture_pct:
        return None
    return Brittle(moisture_pct=batch.last_moisture_pct, ts=batch.last_moisture_ts)
