"""The demo yard's past two weeks, so the demo also shows a real batch's record.

The scripted day (day.py) runs the yard's clock about 100 times faster than the
real one, and the nodes stamp what they measure with the real clock: a batch
started during the demo spans minutes, and so does its report. So before the
day, ``secadero yard`` writes the yard's last ``DAYS`` local days as its nodes
would have sent them, and records one drying batch over them:

- **the weather** is the simulated yard's (``WeatherModel``, firmware/simulation.py:
  the daily cycle, showers with a humid lead-in), with afternoon and evening
  showers drawn from a seed, each day brighter or duller than the cycle (``SKY_C``,
  ``SKY_PCT``), and each node's sensor a little off and noisy;
- **the workers**: the trays go out at 08:00 when the plates are dry (earlier the
  air is above 80 % RH and would wet the beans again), come in
  ``RESPONSE_S`` after a plate gets wet (the first shower of the batch caught
  them out for longer: ``LATE_RESPONSE_S``), go out again after 45 dry minutes
  until 16:00, and come in for the night at 17:30;
- **what the nodes send**: a reading every ``STEP_S`` per node (climate, plate,
  trays) and an event at each change of plate or tray, a second apart per tray
  as limit switches are;
- **the alerts**: a ``rain_now`` alert per shower, raised when a plate gets wet
  and resolved 30 dry minutes after. Numbered from ``FIRST_EPISODE``: they have no
  rows in the alerts' SQLite file (the web app's alert list starts with the
  day), and their numbers never meet the day's;
- **the batch**: started on norte-1's trays ``BATCH_START_DAY`` days ago, a
  moisture reading every morning at 08:00, ended at the first reading at or
  below 7.5 %. The beans dry by Lewis' model in VPD-weighted drying hours (the
  estimate's model, server/batches/estimate.py), with a k a little above the
  published median (``K_PER_KPA_H``), from the trays' own drying hours (out,
  plate dry, air at or below 70 % RH).

The points are built by the server's own code (``LineBuilder``, ``event_points``,
``alert_line``) and written straight to InfluxDB (``write``): the ingest's acknowledgements
are for live nodes (writing the past through it would move their ``seq``), and
the alert engine's view of the yard is the live one. The batch is recorded
through the API (``record``). Everything else is pure.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from zoneinfo import ZoneInfo

from secadero.contract import Event, Telemetry
from secadero.firmware.simulation import Shower, WeatherModel
from secadero.server.air import vpd_kpa
from secadero.server.alerts.engine import Transition
from secadero.server.batches.estimate import EQUILIBRIUM_X
from secadero.server.influx import InfluxV1Writer
from secadero.server.influx_points import alert_line
from secadero.server.points import LineBuilder, event_points, to_lines
from secadero.settings import BatchSettings

DAYS = 16
STEP_S = 300
TICK_S = 60
SEED = 7
# Trays out at 08:00, in for the night at 17:30; after a shower, out again only when
# the plate has been dry this long, and not after 16:00.
OUT_HOUR, IN_HOUR, LAST_OUT_HOUR = 8.0, 17.5, 16.0
DRY_BEFORE_OUT_S = 45 * 60
# A day's sky: one standard deviation brighter is this much warmer and drier all day.
SKY_C, SKY_PCT = 1.0, 4.0
RESPONSE_S = 4 * 60
LATE_RESPONSE_S = 12 * 60
ALL_CLEAR_AFTER_S = 30 * 60
FIRST_EPISODE = 9001
# The batch: on norte-1's trays, from BATCH_START_DAY days ago at 07:30.
BATCH_START_DAY = 9
BATCH_TRAYS = ("t1", "t2")
START_MOISTURE_PCT = 54.0
# The demo's server runs with the default [batches] settings: its target and drying rule.
TARGET_PCT = BatchSettings().target_moisture_pct
DRYING_MAX_HUMIDITY_PCT = BatchSettings().drying_max_humidity_pct
# Lewis' k per kPa·h of drying: 0.06, a little above the estimate's prior median (0.051);
# in this yard's simulated weather the beans reach 7.5 % in five to six days.
K_PER_KPA_H = 0.06
METER_SD_PCT = 0.3
WET_WEIGHT_KG = 118.0


@dataclass(frozen=True)
class Reading:
    ts: float
    moisture_pct: float


@dataclass(frozen=True)
class PastBatch:
    """The example batch as the quality manager recorded it."""

    id: str
    lot: str
    member: str
    node: str
    trays: tuple[str, ...]
    started_at: float
    readings: tuple[Reading, ...]
    ended_at: float
    final_moisture_pct: float
    wet_weight_kg: float
    dry_weight_kg: float


@dataclass
class PastYard:
    """What the yard's nodes sent over the past days, and the batch dried over them."""

    yard: str
    since: float
    until: float
    showers: list[Shower]
    telemetry: list[tuple[str, Telemetry]] = field(default_factory=list)
    events: list[tuple[str, Event]] = field(default_factory=list)
    alerts: list[Transition] = field(default_factory=list)
    batch: PastBatch | None = None


def simulate(yard: str, nodes: Sequence[str], *, today: dt.date, timezone: ZoneInfo,
             days: int = DAYS, seed: int = SEED) -> PastYard:
    """The ``days`` local days before ``today`` in the yard, and its example batch."""
    midnight = dt.datetime.combine(today, dt.time(), timezone)
    since = (midnight - dt.timedelta(days=days)).timestamp()
    until = midnight.timestamp()
    rng = random.Random(seed)
    showers = _showers(rng, midnight, days)
    weather = WeatherModel(seed, start_s=since, showers=showers,
                           utc_offset_h=_utc_offset_h(midnight))
    past = PastYard(yard, since, until, showers)
    batch_start = (midnight - dt.timedelta(days=BATCH_START_DAY, hours=-7.5)).timestamp()
    # The first shower on the batch's trays out: the workers were slow to pull them in.
    late_shower = next((s for s in showers if s.start_s > batch_start
                        and OUT_HOUR <= _local_hour(s.start_s, timezone) < LAST_OUT_HOUR),
                       None)
    # Each day its own sky, the same over the whole yard: a bright day drier and warmer.
    skies = {(midnight - dt.timedelta(days=day)).date(): rng.gauss(0.0, 1.0)
             for day in range(days, 0, -1)}
    for index, node in enumerate(nodes):
        _node_days(past, node, index, weather, timezone, late_shower, skies)
    _alerts(past)
    past.batch = _batch(past, nodes[0], batch_start, timezone, rng)
    return past


class Api(Protocol):
    """The server's HTTP API, logged in with the right to write batches (``DemoApi``)."""

    def call(self, method: str, path: str, body: dict[str, object] | None = None) -> bytes: ...


def record(api: Api, past: PastYard) -> str:
    """The quality manager's record of the example batch, made through the API as she
    would have made it over the days: started, read every morning, ended. Its id."""
    batch = past.batch
    if batch is None:
        raise ValueError("the past days have no batch")
    api.call("POST", "/api/batches", {
        "id": batch.id, "yard": past.yard,
        "trays": [f"{batch.node}/{tray}" for tray in batch.trays],
        "lot": batch.lot, "member": batch.member,
        "wet_weight_kg": batch.wet_weight_kg, "at": batch.started_at, "by": "carmen"})
    for reading in batch.readings:
        api.call("POST", f"/api/batches/{batch.id}/moisture",
                 {"moisture_pct": reading.moisture_pct, "at": reading.ts, "by": "carmen"})
    api.call("POST", f"/api/batches/{batch.id}/end", {
        "at": batch.ended_at, "final_moisture_pct": batch.final_moisture_pct,
        "dry_weight_kg": batch.dry_weight_kg, "by": "carmen"})
    return batch.id


def write(writer: InfluxV1Writer, past: PastYard) -> int:
    """Write the past days' points (the server's own builders); how many lines."""
    builder = LineBuilder()
    lines: list[bytes] = []
    for node, reading in past.telemetry:
        lines += builder.telemetry_lines(past.yard, node, reading)
    for node, event in past.events:
        lines += to_lines(list(event_points(past.yard, node, event)))
    lines += [alert_line(transition).encode() for transition in past.alerts]
    for start in range(0, len(lines), 5000):
        writer.write(b"\n".join(lines[start:start + 5000]))
    return len(lines)


# ------------------------------------------------------------------ the simulation


def _utc_offset_h(local: dt.datetime) -> float:
    offset = local.utcoffset()
    return 0.0 if offset is None else offset.total_seconds() / 3600.0


def _showers(rng: random.Random, midnight: dt.datetime, days: int) -> list[Shower]:
    """Up to two showers a day, most in the afternoon or the night, as in the Amazon."""
    showers: list[Shower] = []
    for day in range(days, 0, -1):
        start_of_day = (midnight - dt.timedelta(days=day)).timestamp()
        hours = sorted(rng.choice((rng.uniform(11.0, 16.0), rng.uniform(19.0, 23.0)))
                       for _ in range(rng.choice((0, 1, 1, 2))))
        for hour in hours:
            start_s = start_of_day + hour * 3600.0
            if showers and start_s < showers[-1].end_s + 3600.0:
                continue  # one shower at a time, an hour apart at least
            showers.append(Shower(start_s=start_s, duration_s=rng.uniform(15, 50) * 60.0,
                                  intensity_mm_h=rng.uniform(3.0, 15.0)))
    return showers


def _local_hour(ts: float, timezone: ZoneInfo) -> float:
    local = dt.datetime.fromtimestamp(ts, timezone)
    return local.hour + local.minute / 60.0 + local.second / 3600.0


def _node_days(past: PastYard, node: str, index: int, weather: WeatherModel,
               timezone: ZoneInfo, late_shower: Shower | None,
               skies: dict[dt.date, float]) -> None:
    """One node's readings and events: its plate, its two trays, the workers' moves.

    The yard is followed minute by minute (a plate or a worker's move to the
    minute) and a reading sent every ``STEP_S``."""
    noise = random.Random(f"{past.yard}/{node}")
    # Each node a second after the one before it, and its own small bias of the air.
    offset_s, bias_c, bias_pct = float(index), noise.uniform(-0.4, 0.4), noise.uniform(-2, 2)
    seq = 0
    wet, extended = False, False
    dry_since = past.since
    wet_since = past.since
    ts = past.since + offset_s
    while ts < past.until:
        now_wet = weather.is_raining(ts)
        if now_wet != wet:
            seq += 1
            past.events.append((node, Event(ts=ts, seq=seq,
                                            type="rain_started" if now_wet else "rain_stopped")))
            wet = now_wet
            if wet:
                wet_since = ts
            else:
                dry_since = ts
        hour = _local_hour(ts, timezone)
        if extended:
            late = late_shower is not None and late_shower.start_s <= ts < late_shower.end_s
            if hour >= IN_HOUR or (wet and ts - wet_since >= (LATE_RESPONSE_S if late
                                                               else RESPONSE_S)):
                extended = False
                seq = _tray_events(past, node, ts, seq, "tray_retracted")
        elif (OUT_HOUR <= hour < LAST_OUT_HOUR and not wet
              and ts - dry_since >= DRY_BEFORE_OUT_S):
            extended = True
            seq = _tray_events(past, node, ts, seq, "tray_extended")
        if round(ts - past.since - offset_s) % STEP_S == 0:
            seq += 1
            temperature_c, humidity_pct = weather.climate(ts)
            sky = skies.get(dt.datetime.fromtimestamp(ts, timezone).date(), 0.0)
            temperature_c += bias_c + SKY_C * sky + noise.gauss(0.0, 0.2)
            humidity_pct += bias_pct - SKY_PCT * sky + noise.gauss(0.0, 0.8)
            state = "extended" if extended else "retracted"
            past.telemetry.append((node, Telemetry(
                ts=ts, seq=seq, temperature_c=round(temperature_c, 1),
                humidity_pct=round(min(99.0, max(5.0, humidity_pct)), 1), rain=wet,
                rain_mm=(round(weather.rain_rate_mm_h(ts) * STEP_S / 3600.0, 1) if wet
                         else 0.0),
                trays={tray: state for tray in BATCH_TRAYS})))
        ts += TICK_S


def _tray_events(past: PastYard, node: str, ts: float, seq: int, kind: str) -> int:
    for offset_s, tray in enumerate(BATCH_TRAYS):
        seq += 1
        past.events.append((node, Event(ts=ts + offset_s, seq=seq, type=kind, tray=tray)))
    return seq


def _alerts(past: PastYard) -> None:
    """A ``rain_now`` alert per shower the plates saw, resolved after 30 dry minutes."""
    episode = FIRST_EPISODE
    for shower in past.showers:
        if shower.start_s >= past.until - ALL_CLEAR_AFTER_S:
            continue
        raised = past.since + math.ceil((shower.start_s - past.since) / TICK_S) * TICK_S
        resolved = shower.end_s + ALL_CLEAR_AFTER_S
        for ts, state in ((raised, "raised"), (resolved, "resolved")):
            past.alerts.append(Transition(ts=ts, yard=past.yard, kind="rain_now", state=state,
                                          severity="critical",
                                          message="LLUEVE en el tendal. Recoger las bandejas YA.",
                                          episode=episode))
        episode += 1


def _batch(past: PastYard, node: str, started_at: float, timezone: ZoneInfo,
           rng: random.Random) -> PastBatch:
    """The batch on ``node``'s trays: its beans dry by Lewis' model in the trays' drying."""
    x0 = START_MOISTURE_PCT / (100.0 - START_MOISTURE_PCT)
    drying_kpa_h = 0.0
    readings = [Reading(started_at, START_MOISTURE_PCT)]
    mornings = {dt.datetime.fromtimestamp(started_at, timezone).date()}
    ended_at, final = None, None
    for _, reading in (item for item in past.telemetry if item[0] == node):
        if reading.ts < started_at:
            continue
        out = reading.trays.get(BATCH_TRAYS[0]) == "extended"
        if (out and not reading.rain and reading.humidity_pct is not None
                and reading.temperature_c is not None
                and reading.humidity_pct <= DRYING_MAX_HUMIDITY_PCT):
            drying_kpa_h += vpd_kpa(reading.temperature_c, reading.humidity_pct) * STEP_S / 3600
        local = dt.datetime.fromtimestamp(reading.ts, timezone)
        if local.hour == 8 and local.date() not in mornings:
            mornings.add(local.date())
            x = EQUILIBRIUM_X + (x0 - EQUILIBRIUM_X) * math.exp(-K_PER_KPA_H * drying_kpa_h)
            pct = round(100.0 * x / (1.0 + x) + rng.gauss(0.0, METER_SD_PCT), 1)
            readings.append(Reading(reading.ts, pct))
            if pct <= TARGET_PCT:
                ended_at, final = reading.ts + 3600.0, pct
                break
    if ended_at is None or final is None:
        # Not dry by the last morning (another seed's weather): ended then, as it is.
        ended_at, final = readings[-1].ts + 3600.0, readings[-1].moisture_pct
    started_local = dt.datetime.fromtimestamp(started_at, timezone)
    dry_weight = WET_WEIGHT_KG * (100.0 - START_MOISTURE_PCT) / (100.0 - final)
    return PastBatch(id=f"lote-{started_local:%m%d}-ejemplo",
                     lot=f"cosecha {started_local:%Y-%m}", member="Familia Huamán",
                     node=node, trays=BATCH_TRAYS,
                     started_at=started_at, readings=tuple(readings), ended_at=ended_at,
                     final_moisture_pct=final, wet_weight_kg=WET_WEIGHT_KG,
                     dry_weight_kg=round(dry_weight, 1))
