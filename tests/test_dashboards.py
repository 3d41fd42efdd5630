"""Every Grafana panel query runs against the real InfluxDB and finds the data it is meant to show.

Grafana is not packaged for Debian, so Grafana itself does not run here; its
macros are expanded the way Grafana's InfluxQL datasource does, and the
queries go to the InfluxDB fixture holding points in the schema of
DESIGN.md (written here as raw line protocol, independent of the server code).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import create_database_and_write, influx_query

from secadero.devservices import INFLUX_READER, InfluxDB

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"


def expand(query: str, yard: str) -> str:
    """Grafana's InfluxQL macros for a 12 h window ending 6 h ahead (as the dashboard shows)."""
    return (query.replace("$timeFilter", "time > now() - 12h and time < now() + 6h")
            .replace("$__interval", "1m")
            .replace("$yard", re.escape(yard)))


def write_lines(url: str, database: str, lines: list[str]) -> None:
    create_database_and_write(url, database, "\n".join(lines).encode())


def sample_points(yard: str, now: int) -> list[str]:
    lines = []
    for minutes_ago in range(0, 120, 10):
        ts = now - minutes_ago * 60
        for node in ("norte-1", "sur-3"):
            tags = f"yard={yard},node={node}"
            lines += [
                f"climate,{tags} temperature_c=31.5,humidity_pct=58.0,dew_point_c=22.1,"
                f"vpd_kpa=1.93 {ts}",
                f"rain,{tags} wet=false,rain_mm=0.0 {ts}",
                f'tray,{tags},tray=t1 state="extended",extended=1i {ts}',
                f"node,{tags} online=1i,buffered=0i,uptime_s=3600.0,seq_gap=0i {ts}",
            ]
    for hours_ahead in range(-2, 6):
        lines.append(f"forecast,yard={yard},provider=open-meteo precip_prob_pct={20 + hours_ahead}"
                     f",precip_mm=0.4 {now + hours_ahead * 3600}")
    lines.append(f'alert,yard={yard},kind=rain_forecast state="raised",severity="warning",'
                 f'message="Lluvia en ~40 min (80%). Recoger bandejas.",episode="e1" {now}')
    return lines


def dashboards() -> list[Path]:
    return sorted((DASHBOARDS / "json").glob("*.json"))


def test_provisioning_points_at_the_dashboards_datasource() -> None:
    datasource = (DASHBOARDS / "provisioning" / "datasources" / "secadero.yaml").read_text()
    assert "uid: secadero-influx" in datasource
    assert f"user: {INFLUX_READER}\n" in datasource  # the read-only user tested below
    assert "dbName: secadero" in datasource
    for path in dashboards():
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "secadero-influx", panel["title"]


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_every_panel_query_returns_data(path: Path, influxdb: InfluxDB, unique_name: str) -> None:
    """As Grafana's read-only user (the datasource's ``user``), with READ on the database."""
    yard = unique_name
    database = unique_name
    write_lines(influxdb.url, database, sample_points(yard, int(time.time())))
    influxdb.grant(database, INFLUX_READER, "READ")
    grafana = influxdb.credentials(INFLUX_READER)
    dashboard = json.loads(path.read_text())

    for variable in dashboard["templating"]["list"]:
        values = influx_query(influxdb.url, database, variable["query"], auth=grafana)
        assert {"key": "yard", "value": yard} in values

    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            rows = influx_query(influxdb.url, database, expand(target["query"], yard),
                                auth=grafana)
            assert rows, f"panel {panel['title']!r} shows nothing: {target['query']}"
