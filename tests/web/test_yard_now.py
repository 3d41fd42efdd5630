"""The "yard now" state: built from the tracker, the forecast and the open episodes (pure),
completed from InfluxDB for nodes not heard since a restart (integration, real InfluxDB);
and the web app's words (every Spanish text has its English)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from secadero.server.alerts.rules import NodeView, YardView
from secadero.server.alerts.store import Episode
from secadero.server.forecast.types import Forecast, ForecastHour, ForecastStatus
from secadero.server.web.texts import TEXTS, text
from secadero.server.web.yard_now import LastStored, yard_now, yard_now_json
from secadero.settings import AlertSettings, AreaSettings, InfluxSettings, YardSettings
from tests.conftest import create_database_and_write

NOW = 1_780_000_000.0
YARD = YardSettings(id="chazuta", name="Chazuta", latitude=-6.57, longitude=-76.14,
                    areas=(AreaSettings(name="Norte", nodes=("norte-1",)),
                           AreaSettings(name="Sur", nodes=("sur-2",))))


def episode(kind: str, severity: str, raised_at: float, **kw: Any) -> Episode:
    return Episode(yard="chazuta", kind=kind, cause=kw.pop("cause", kind), severity=severity,
                   raised_at=raised_at, message=f"{kind} message", **kw)


def test_the_yard_from_the_tracker_the_forecast_and_the_open_episodes() -> None:
    view = YardView(yard="chazuta", name="Chazuta", timezone="America/Lima", nodes=(
        NodeView(node="sur-2", last_seen_ts=NOW - 5, rain_wet=True,
                 trays={"t1": "retracted"}, temperature_c=24.0, humidity_pct=91.0),
        NodeView(node="norte-1", last_seen_ts=NOW - 3600, rain_wet=False,
                 trays={"t2": "extended", "t1": "moving"}),
    ))
    hours = tuple(ForecastHour(NOW - 1800 + i * 3600, NOW + 1800 + i * 3600,
                               precip_prob_pct=10.0 * i, precip_mm=0.1 * i) for i in range(9))
    forecast = ForecastStatus(forecast=Forecast("open-meteo", NOW - 60, hours))
    rain = episode("rain", "critical", NOW - 600, id=7, cause="rain_now")
    offline = episode("node_offline", "warning", NOW - 300, id=8, key="norte-1")
    ended = episode("rain", "warning", NOW - 9000, id=3, state="resolved")
    elsewhere = Episode(yard="other", kind="rain", cause="rain_now", severity="critical",
                        raised_at=NOW, id=9)
    state = yard_now(YARD, view, now=NOW, alerts=AlertSettings(), forecast=forecast,
                     episodes=[offline, ended, rain, elsewhere])
    assert [(n.node, n.area, n.silent) for n in state.nodes] == [
        ("norte-1", "Norte", True), ("sur-2", "Sur", False)]
    assert [(t.node, t.tray, t.state, t.area) for t in state.trays] == [
        ("norte-1", "t1", "moving", "Norte"), ("norte-1", "t2", "extended", "Norte"),
        ("sur-2", "t1", "retracted", "Sur")]
    assert [t.tray for t in state.trays_out] == ["t1", "t2"]  # moving is not in
    assert state.raining == ("sur-2",)
    assert state.silent == ("norte-1",)
    # The hour running now first, six hours in all.
    assert [h.prob_pct for h in state.hours] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert (state.alert, state.others) == (rain, (offline,))
    data = yard_now_json(state)
    assert data["alert"]["id"] == 7 and data["others"][0]["kind"] == "node_offline"
    assert data["nodes"][0]["trays"] == {"t1": "moving", "t2": "extended"}


def test_a_node_not_heard_since_the_restart_comes_from_its_stored_values() -> None:
    view = YardView(yard="chazuta", name="Chazuta", timezone="America/Lima", nodes=(
        NodeView(node="sur-2", last_seen_ts=NOW - 5, trays={"t1": "extended"}),))
    stored = [NodeView(node="norte-1", last_seen_ts=NOW - 50, online=False, rain_wet=True,
                       trays={"t1": "retracted"}),
              NodeView(node="sur-2", last_seen_ts=NOW - 900, trays={"t1": "retracted"})]
    state = yard_now(YARD, view, now=NOW, alerts=AlertSettings(), forecast=ForecastStatus(),
                     episodes=[], stored=stored)
    # The live view wins for the node it heard; the other is marked as stored, not live.
    assert [(n.node, n.stored, n.online, n.trays[0].state) for n in state.nodes] == [
        ("norte-1", True, False, "retracted"), ("sur-2", False, True, "extended")]
    assert state.alert is None and state.hours == ()


@pytest.mark.integration
def test_last_stored_reads_each_nodes_last_values_from_influxdb(influxdb: Any,
                                                                unique_name: str) -> None:
    database = unique_name.replace("-", "_")
    # Now, not a fixed instant: the statements look back from InfluxDB's own clock (2 days).
    now = float(int(time.time()))
    ts = int(now)
    # The ingest's line shapes (server/points.py): tray, rain, climate; an older tray state
    # and another yard's node that must not appear.
    lines = [
        f'tray,node=norte-1,tray=t1,yard=chazuta extended=1i,state="extended" {ts - 600}',
        f'tray,node=norte-1,tray=t1,yard=chazuta extended=0i,state="retracted" {ts - 60}',
        f'tray,node=norte-1,tray=t2,yard=chazuta extended=1i,state="extended" {ts - 60}',
        f"rain,node=norte-1,yard=chazuta wet=true,rain_mm=0.2 {ts - 30}",
        f"climate,node=norte-1,yard=chazuta temperature_c=23.5,humidity_pct=90.5 {ts - 20}",
        f"climate,node=sur-2,yard=chazuta temperature_c=25.0,humidity_pct=80.0 {ts - 40}",
        f'tray,node=x-9,tray=t1,yard=other extended=1i,state="extended" {ts - 10}',
        f'event,node=norte-1,yard=chazuta type="tray_retracted",seq=5i,tray="t1" {ts - 60}',
        f'event,node=norte-1,yard=chazuta type="tray_extended",seq=6i,tray="t2" {ts - 50}',
    ]
    create_database_and_write(influxdb.url, database, "\n".join(lines).encode())
    reader = LastStored(influxdb.settings(database))  # as the admin: auth is on
    try:
        nodes = reader.nodes("chazuta")
        assert reader.last_retracted("chazuta", now - 3600, now) == now - 60
        assert reader.last_retracted("chazuta", now - 30, now) is None
    finally:
        reader.close()
    assert nodes == [
        NodeView(node="norte-1", last_seen_ts=now - 20, online=False, rain_wet=True,
                 trays={"t1": "retracted", "t2": "extended"}, temperature_c=23.5,
                 humidity_pct=90.5),
        NodeView(node="sur-2", last_seen_ts=now - 40, online=False, rain_wet=None, trays={},
                 temperature_c=25.0, humidity_pct=80.0)]


def test_last_stored_says_nothing_when_influxdb_does_not_answer() -> None:
    reader = LastStored(InfluxSettings(url="http://127.0.0.1:9", database="x", timeout_s=1))
    try:
        assert reader.nodes("chazuta") == []
        assert reader.last_retracted("chazuta", 0, 1) is None
    finally:
        reader.close()


def test_every_text_has_both_languages_and_fills_in() -> None:
    assert set(TEXTS["es"]) == set(TEXTS["en"])
    assert text("es", "yard.trays_out", count=3) == "3 afuera"
    assert text("en", "yard.trays_out", count=3) == "3 out"
    assert text("fr", "nav.yard") == "Tendal"  # an unknown language falls back to Spanish
