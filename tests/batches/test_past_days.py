"""The demo's past two weeks (secadero/past_days.py) and the example batch over them.

The simulation is checked as a story the yard would tell (pure), then written
to the real InfluxDB and recorded through the real server's API as the demo
does, and the server's own metrics must find in it what the story put there:
one shower on the batch's trays, caught 12 minutes late, the beans at 7.5 %
or below on the last reading, no gap.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pypdf
import pytest

from secadero import past_days
from secadero.devservices import INFLUX_WRITER, SERVER_USER, free_port
from secadero.server.app import Server
from secadero.server.influx import InfluxV1Writer
from secadero.settings import load_server_settings
from secadero.yard import DemoApi

LIMA = ZoneInfo("America/Lima")
TODAY = dt.date(2026, 12, 6)
NODES = ("norte-1", "centro-2", "sur-3")


@pytest.fixture(scope="module")
def past() -> past_days.PastYard:
    return past_days.simulate("chazuta", NODES, today=TODAY, timezone=LIMA)


def local_hour(ts: float) -> float:
    local = dt.datetime.fromtimestamp(ts, LIMA)
    return local.hour + local.minute / 60


def test_the_past_ends_before_the_yards_today_and_every_node_reports_all_of_it(
        past: past_days.PastYard) -> None:
    midnight = dt.datetime.combine(TODAY, dt.time(), LIMA).timestamp()
    assert past.until == midnight
    assert past.since == midnight - past_days.DAYS * 86400
    for node in NODES:
        times = [reading.ts for name, reading in past.telemetry if name == node]
        assert len(times) == past_days.DAYS * 86400 // past_days.STEP_S
        assert past.since <= times[0] and times[-1] < past.until
        # Every STEP_S, without a gap: a gap in the batch's report would be a made-up outage.
        assert {round(b - a) for a, b in itertools.pairwise(times)} == {
            past_days.STEP_S}
    events = [event.ts for _, event in past.events]
    assert all(past.since <= ts < past.until for ts in events)


def test_the_workers_keep_the_trays_in_at_night_and_pull_them_in_when_it_rains(
        past: past_days.PastYard) -> None:
    late = 0
    for node in NODES:
        readings = [reading for name, reading in past.telemetry if name == node]
        for reading in readings:
            if reading.trays["t1"] == "extended":
                assert past_days.OUT_HOUR <= local_hour(reading.ts) < past_days.IN_HOUR
        events = [event for name, event in past.events if name == node]
        wet_since = None
        for event in events:
            if event.type == "rain_started":
                wet_since = event.ts
            elif event.type == "tray_retracted" and event.tray == "t1" \
                    and wet_since is not None and local_hour(event.ts) < past_days.IN_HOUR:
                waited = event.ts - wet_since
                assert waited in (past_days.RESPONSE_S, past_days.LATE_RESPONSE_S), event
                late += waited == past_days.LATE_RESPONSE_S
            elif event.type == "rain_stopped":
                wet_since = None
        # The two trays of a node move a second apart, always together.
        moves = [(e.ts, e.type, e.tray) for e in events if e.type.startswith("tray_")]
        assert [(ts + 1, kind, "t2") for ts, kind, tray in moves if tray == "t1"] == [
            move for move in moves if move[2] == "t2"]
    assert late == len(NODES)  # one slow response, seen at every node


def test_each_shower_is_one_rain_alert_raised_and_resolved(
        past: past_days.PastYard) -> None:
    episodes: dict[int, list[str]] = {}
    for transition in past.alerts:
        episodes.setdefault(transition.episode, []).append(transition.state)
        assert transition.kind == "rain_now"
    assert list(episodes) == list(range(past_days.FIRST_EPISODE,
                                        past_days.FIRST_EPISODE + len(past.showers)))
    assert set(map(tuple, episodes.values())) == {("raised", "resolved")}


def test_the_example_batch_dries_to_the_target_and_ends_before_today(
        past: past_days.PastYard) -> None:
    batch = past.batch
    assert batch is not None
    pcts = [reading.moisture_pct for reading in batch.readings]
    assert pcts[0] == past_days.START_MOISTURE_PCT
    assert pcts[-1] == batch.final_moisture_pct <= past_days.TARGET_PCT < pcts[-2]
    assert pcts == sorted(pcts, reverse=True)
    assert 4 <= len(pcts) - 1 <= 8  # drying days, as published for sun drying (2-10)
    assert batch.started_at < batch.ended_at < past.until
    # The dry weight keeps the dry matter: 118 kg at 54 % is 54.3 kg of it.
    dry_matter = batch.wet_weight_kg * (1 - pcts[0] / 100)
    assert batch.dry_weight_kg * (1 - batch.final_moisture_pct / 100) == pytest.approx(
        dry_matter, abs=0.1)


def test_the_same_day_gives_the_same_past() -> None:
    one = past_days.simulate("chazuta", NODES[:1], today=TODAY, timezone=LIMA)
    two = past_days.simulate("chazuta", NODES[:1], today=TODAY, timezone=LIMA)
    assert (one.telemetry, one.events, one.batch) == (two.telemetry, two.events, two.batch)


# ------------------------------------------------------------ through the real server


@pytest.fixture
def api(tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str
        ) -> Iterator[tuple[DemoApi, str]]:
    config = tmp_path / "server.toml"
    port = free_port()
    config.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
client_id = "ingest-{unique_name}"
{mosquitto.toml_credentials(SERVER_USER)}[influxdb]
url = "{influxdb.url}"
database = "{unique_name}"
{influxdb.toml_credentials()}[ingest]
http_port = 0
state_file = "state.json"
set_aside_file = "set-aside.jsonl"
[alerts]
database = "alerts.sqlite3"
api_port = {port}
[batches]
database = "batches.sqlite3"
[[yards]]
id = "{unique_name}"
name = "Chazuta"
latitude = -6.57
longitude = -76.14
timezone = "America/Lima"
""")
    server = Server(load_server_settings(config)).start()
    assert server.api is not None and server.ingest.wait_ready(15)  # the database made
    server.api.accounts.add("carmen", "quality", "quality password")
    client = DemoApi(f"http://127.0.0.1:{port}")
    client.log_in("carmen", "quality password")
    try:
        yield client, unique_name
    finally:
        server.stop()


@pytest.mark.integration
def test_the_server_finds_in_the_written_past_what_the_story_put_there(
        api: tuple[DemoApi, str], influxdb: Any) -> None:
    client, yard = api
    today = dt.datetime.now(LIMA).date()
    past = past_days.simulate(yard, NODES, today=today, timezone=LIMA)
    influxdb.grant(yard, INFLUX_WRITER, "ALL")  # the demo writes as the server's writer
    writer = InfluxV1Writer(influxdb.settings(yard, INFLUX_WRITER))
    try:
        assert past_days.write(writer, past) > len(past.telemetry)
    finally:
        writer.close()
    batch_id = past_days.record(client, past)
    assert past.batch is not None and batch_id == past.batch.id

    shown = json.loads(client.call("GET", f"/api/batches/{batch_id}"))
    metrics = shown["metrics"]
    assert metrics["gaps"] == []
    # One shower found the trays out; the workers pulled them in 12 minutes after the
    # plate got wet (the alert was raised at the same minute; the second tray 1 s later).
    # The batch's other showers came at night, the trays already in: a response of 0.
    assert metrics["rain_exposure_min"] == pytest.approx(12.0, abs=0.1)
    batch = past.batch
    by_day = [12.0 if past_days.OUT_HOUR <= local_hour(s.start_s) < past_days.IN_HOUR else 0.0
              for s in past.showers if batch.started_at <= s.start_s < batch.ended_at]
    assert sorted(by_day) == [0.0] * (len(by_day) - 1) + [12.0]
    assert [round(r["minutes"], 1) for r in metrics["responses"]] == by_day
    # The humid front before the late shower reached the trays out: the air above 80 %.
    assert metrics["rewetting_h"] == pytest.approx(sum(
        past_days.STEP_S / 3600 for node, reading in past.telemetry
        if node == batch.node and batch.started_at <= reading.ts < batch.ended_at
        and reading.trays["t1"] == "extended" and reading.humidity_pct > 80), abs=0.1)
    readings = batch.readings
    assert metrics["time_to_target_h"] == pytest.approx(
        (readings[-1].ts - readings[0].ts) / 3600, abs=0.01)
    assert 5 * (len(readings) - 1) < metrics["drying_h"] < 11 * (len(readings) - 1)
    assert shown["estimate"]["reached_at"] == pytest.approx(readings[-1].ts)
    # The typical day was learnt from the week before the batch (7 days are needed).
    assert shown["typical_day"]["source"] == "learnt"

    pdf = client.call("GET", f"/api/batches/{batch_id}/report.pdf?language=en")
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    for expected in (batch_id, "Familia Huamán", f"{past.batch.final_moisture_pct:.1f}",
                     f"{past.batch.dry_weight_kg:g}"):
        assert expected in text, (expected, text)
