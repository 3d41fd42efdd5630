"""The records and series of a drying batch: the shared vocabulary of ``server/batches``.

Times are UNIX seconds UTC (float); intervals are half-open ``[start, end)``.
Moisture is in percent on a wet basis (water / total mass), as a meter reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secadero.errors import SecaderoError


class BatchError(SecaderoError, ValueError):
    """A batch operation refused: ``field`` names the input at fault (for the CLI and API)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownBatch(BatchError):
    """No batch with that id."""


class SeriesUnavailable(BatchError):
    """InfluxDB could not answer for the batch's span (down, refused, partial answer):
    no figures or report from half the data (the API answers 503)."""


@dataclass(frozen=True, slots=True, order=True)
class TrayRef:
    """One tray of one node: ``norte-1/t1`` (ids as in the wire contract)."""

    node: str
    tray: str

    def __str__(self) -> str:
        return f"{self.node}/{self.tray}"


@dataclass(frozen=True, slots=True)
class Batch:
    """One drying batch: a lot of fermented beans on some trays, from start to end."""

    id: str
    yard: str
    trays: tuple[TrayRef, ...]
    started_at: float
    lot: str = ""
    member: str = ""  # the member (farming family) or supplier
    fermentation_end: str | None = None  # ISO date, the end of fermentation
    wet_weight_kg: float | None = None
    notes: str = ""
    started_by: str = ""
    ended_at: float | None = None
    final_moisture_pct: float | None = None
    dry_weight_kg: float | None = None
    ended_by: str = ""

    @property
    def open(self) -> bool:
        return self.ended_at is None

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted({t.node for t in self.trays}))


@dataclass(frozen=True, slots=True)
class MoistureReading:
    """One reading of a moisture meter on a batch's beans."""

    batch: str
    ts: float
    moisture_pct: float  # wet basis
    by: str = ""
    tray: TrayRef | None = None


# ---------------------------------------------------------------- series


@dataclass(frozen=True, slots=True)
class Interval:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ClimateSample:
    """One climate reading of one of the batch's nodes (``None``: the sensor gave nothing)."""

    ts: float
    node: str
    temperature_c: float | None
    humidity_pct: float | None
    vpd_kpa: float | None


@dataclass(frozen=True, slots=True)
class TrayChange:
    """A tray of the batch changed state (``extended``, ``retracted``, ``moving``, ``unknown``)."""

    ts: float
    tray: TrayRef
    state: str


@dataclass(frozen=True, slots=True)
class AlertMark:
    """A rain alert episode's transition in the batch's yard (``alert`` measurement)."""

    ts: float
    kind: str  # rain_forecast, rain_now, humidity_surge ...
    state: str  # raised, acknowledged, resolved
    episode: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class BatchSeries:
    """What the batch's trays lived through between ``start`` and ``end``, from InfluxDB.

    ``climate``: the batch nodes' readings, sorted by time. ``tray_changes``:
    every state change of the batch's trays, sorted, with each tray's state at
    ``start`` first (time ``start``) when it is known. ``rain_wet``: when any
    of the batch nodes' rain plates was wet (merged intervals). ``gaps``: the
    spans with no climate reading from any batch node for longer than the
    gap threshold: no data, never interpolated.
    """

    start: float
    end: float
    climate: tuple[ClimateSample, ...] = ()
    tray_changes: tuple[TrayChange, ...] = ()
    rain_wet: tuple[Interval, ...] = ()
    alerts: tuple[AlertMark, ...] = ()
    gaps: tuple[Interval, ...] = ()


@dataclass(frozen=True, slots=True)
class DryingPeriod:
    """A span in which the batch dried: trays out, plate dry, air dry enough.

    ``vpd_kpa``: the mean vapour-pressure deficit over the span (the drying
    power of the air), ``None`` when no reading gave it; the estimate may
    weight the span by it. ``share``: the part of the batch's trays that dried
    in the span (1.0: all of them; 0.5: half of them were out): the batch's
    drying hours are the sum of ``hours * share`` (server/batches/metrics.py).
    """

    start: float
    end: float
    vpd_kpa: float | None = None
    share: float = 1.0

    @property
    def hours(self) -> float:
        return (self.end - self.start) / 3600.0


@dataclass(frozen=True, slots=True)
class DryingSchedule:
    """When trays are normally out in the yard, local time: the estimate's future drying hours."""

    timezone: str
    start_hhmm: str = "07:00"
    end_hhmm: str = "18:00"


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class RainResponse:
    """One rain episode during the batch: how long its trays stayed out after the alert."""

    episode: int
    raised_at: float
    retracted_at: float | None  # when the last of the batch's trays came in; None: never
    minutes: float | None


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    """The quality figures of one batch up to ``until`` (docs/batches.md says what each means)."""

    until: float
    sun_drying_h: float  # trays extended, plate dry, daylight
    drying_h: float  # trays extended, plate dry, RH at or below the drying threshold
    rewetting_h: float  # trays extended with RH at or above the rewetting threshold
    rain_exposure_min: float  # plate wet while a batch tray was extended
    responses: tuple[RainResponse, ...]
    humidity_mean_pct: float | None
    humidity_min_pct: float | None
    humidity_max_pct: float | None
    temperature_mean_c: float | None
    temperature_min_c: float | None
    temperature_max_c: float | None
    vpd_mean_kpa: float | None
    time_to_target_h: float | None  # start -> first moisture reading at or below the target
    gaps: tuple[Interval, ...] = ()


@dataclass(frozen=True, slots=True)
class Estimate:
    """When the batch reaches ``target_pct``: a range of times, or why there is none."""

    target_pct: float
    p20_ts: float | None = None
    p50_ts: float | None = None
    p80_ts: float | None = None
    reached_at: float | None = None  # already reached (a reading at or below the target)
    reason: str | None = None  # why no estimate: "needs two moisture readings" ...
    details: dict[str, float] = field(default_factory=dict)  # the fitted model's values


@dataclass(frozen=True, slots=True)
class TypicalDay:
    """The yard's typical drying day given to the estimate, and where it came from
    (server/batches/typical.py).

    ``source``: ``"learnt"`` (from ``days`` days of the yard's climate between
    ``since`` and ``until``) or ``"built-in"`` (``reason`` says why). ``kpa_h``: the
    mean day's VPD-weighted open-tray drying; ``sigma``: the day-to-day spread of its
    logarithm (the built-in's for the built-in day).
    """

    kpa_h: float
    sigma: float
    source: str
    days: int = 0
    since: float | None = None
    until: float | None = None
    reason: str = ""
