"""Every Grafana panel, variable and annotation query runs against the real InfluxDB and finds
the series it is meant to show.

Grafana cannot run here (it is not packaged for Debian). Its macros
(``$timeFilter``, ``$__interval``) and template variables are expanded the
way its InfluxQL datasource does (``dashboard_day.expand``) and each query
goes to the InfluxDB fixture, filled with a simulated day of a working yard
written by the server's own point builders (``dashboard_day.simulated_day``).
A query that InfluxDB refuses, or that returns nothing on this working yard
(Grafana's "No data"), fails; so do wrong values in the panels that matter most.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import create_database_and_write
from dashboard_day import (
    ACTIVE_ALERT,
    CURRENT_HOUR_PROB,
    NODES,
    SEQ_GAP_NORTE,
    QueryFailed,
    Series,
    by_tag,
    expand,
    load,
    run_query,
    shows_data,
    simulated_day,
)

from secadero.devservices import INFLUX_READER

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def yard_day(influxdb: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One database holding the simulated day, shared by the tests of this module."""
    yard = f"dash-{int(time.time()) % 100000}"
    now = float(int(time.time()))  # whole seconds: the day's 5-min grid lands exactly on the shower
    lines, facts = simulated_day(yard, now)
    create_database_and_write(influxdb.url, yard, "\n".join(lines).encode(), precision="u")
    # Every query below runs as Grafana's user: read-only, as the datasource logs in.
    influxdb.grant(yard, INFLUX_READER, "READ")
    return {"url": influxdb.url, "db": yard, "yard": yard, "now": now,
            "auth": influxdb.credentials(INFLUX_READER), **facts}


def grafana_query(day: dict[str, Any], text: str) -> list[Series]:
    return run_query(day["url"], day["db"], text, auth=day["auth"])


def test_the_datasource_logs_in_as_the_read_only_user_these_queries_use() -> None:
    text = (Path(__file__).resolve().parent.parent / "dashboards" / "provisioning"
            / "datasources" / "secadero.yaml").read_text()
    assert re.search(rf"^\s+user: {INFLUX_READER}$", text, re.MULTILINE)


def variable_values(day: dict[str, Any]) -> dict[str, str]:
    # Ids match [a-z0-9-]: nothing in them needs escaping inside /^...$/.
    return {"yard": day["yard"], "node": ".*", "batch": day["batch"]}


def panel_results(day: dict[str, Any], dashboard: dict[str, Any]) -> dict[str, list[Series]]:
    """Each panel's series (all its targets), by panel title; raises on a refused query."""
    results: dict[str, list[Series]] = {}
    for panel in dashboard["panels"]:
        series: list[Series] = []
        for target in panel["targets"]:
            text = expand(target["query"], dashboard, day["now"], variable_values(day))
            # A "$" before a name is a macro or variable left; "$/" is the regex's anchor.
            assert not re.search(r"\$\w", text), f"unexpanded macro or variable: {text}"
            series += grafana_query(day, text)
        results[panel["title"]] = series
    return results


@pytest.mark.parametrize("name", ["wall.json", "yard.json", "batch.json", "nodes.json"])
def test_every_panel_shows_data_on_a_working_yard(yard_day: dict[str, Any], name: str) -> None:
    dashboard = load(name)
    for panel, series in panel_results(yard_day, dashboard).items():
        assert shows_data(series), f"{name}: panel {panel!r} would show No data"
        for one in series:
            # Each series belongs to this yard's nodes (GROUP BY tags) or to the whole yard.
            assert one.tags.get("node", "norte-1") in NODES, (panel, one.tags)


@pytest.mark.parametrize("name", ["wall.json", "yard.json", "batch.json", "nodes.json"])
def test_every_variable_lists_the_yard_s_values(yard_day: dict[str, Any], name: str) -> None:
    dashboard = load(name)
    expected = {"yard": {yard_day["yard"]}, "node": set(NODES), "batch": {yard_day["batch"]}}
    for variable in dashboard["templating"]["list"]:
        text = expand(variable["query"], dashboard, yard_day["now"], variable_values(yard_day))
        values = {row[1] for one in grafana_query(yard_day, text)
                  for row in one.values}
        assert expected[variable["name"]] <= values, (variable["name"], values)


def test_every_batch_annotation_finds_its_marks(yard_day: dict[str, Any]) -> None:
    dashboard = load("batch.json")
    counts = {}
    for annotation in dashboard["annotations"]["list"]:
        text = expand(annotation["target"]["query"], dashboard, yard_day["now"],
                      variable_values(yard_day))
        series = grafana_query(yard_day, text)
        counts[annotation["name"]] = sum(len(one.values) for one in series)
        assert all("text" in one.columns for one in series), annotation["name"]
    # Batch start + 2 moisture; 2 rain events per node; 2 tray events per tray; 4 alert
    # transitions (raised, acknowledged, resolved; raised again).
    assert counts == {"Lote": 3, "Lluvia": 4, "Bandejas": 6, "Alertas": 4}


def test_wall_display_tells_trays_rain_forecast_alert_and_nodes(
        yard_day: dict[str, Any]) -> None:
    results = panel_results(yard_day, load("wall.json"))
    assert by_tag(results["Bandejas / Trays"], "node", "tray") == {
        ("norte-1", "t1"): 1, ("norte-1", "t2"): 1, ("sur-1", "t3"): 0}
    assert by_tag(results["Lluvia ahora / Rain now"], "node") == {
        ("norte-1",): False, ("sur-1",): False}
    [next_hours] = results["Lluvia próximas 3 h"]
    assert next_hours.values[0][1] == CURRENT_HOUR_PROB  # the hour in course counts
    [alert] = results["Alerta / Alert"]
    assert dict(zip(alert.columns, alert.values[0], strict=True))["mensaje"] == ACTIVE_ALERT
    [state] = results["Estado de alerta"]
    assert state.values[0][1] == "raised"
    assert by_tag(results["Nodos / Nodes"], "node") == {("norte-1",): 1, ("sur-1",): 1}
    [forecast] = results["Pronóstico por hora / Forecast"]
    assert [row[1] for row in forecast.values][-6:] == [80.0, 80.0, 10.0, 10.0, 10.0, 10.0]


def test_node_health_panels_show_each_node_s_condition(yard_day: dict[str, Any]) -> None:
    results = panel_results(yard_day, load("nodes.json"))
    assert by_tag(results["Bajo voltaje / Under-voltage"], "node") == {
        ("norte-1",): 1, ("sur-1",): 0}  # seen since boot; never
    assert by_tag(results["Limitación de CPU / Throttling"], "node") == {
        ("norte-1",): 1, ("sur-1",): 0}
    assert by_tag(results["Señal Wi-Fi"], "node") == {("norte-1",): -63.0, ("sur-1",): -71.0}
    assert by_tag(results["Disco libre / Disk free"], "node") == {
        ("norte-1",): 5_000_000_000, ("sur-1",): 900_000_000}
    assert by_tag(results["Reloj / Clock"], "node") == {("norte-1",): 1, ("sur-1",): 1}
    assert by_tag(results["Mensajes en espera / Buffered"], "node") == {
        ("norte-1",): 0, ("sur-1",): 2}
    assert by_tag(results["Mensajes perdidos (saltos de seq)"], "node") == {
        ("norte-1",): SEQ_GAP_NORTE}
    assert by_tag(results["Fallas de sensor / Sensor faults"], "node") == {("sur-1",): 1}
    # Grafana's dateTimeFromNow takes milliseconds: sur-1 was never calibrated.
    assert by_tag(results["Última calibración / Last calibration"], "node") == {
        ("norte-1",): pytest.approx(yard_day["calibrated_ts"] * 1000)}
    last_seen = {one.tags["node"]: one.values[-1][0]
                 for one in results["Visto por última vez / Last seen"]}
    # The last online status within the dashboard's range (each received 0.5 s after its
    # 5-min mark; the one at "now" + 0.5 s is after the range's end).
    last_status_ms = round((yard_day["now"] - 300 + 0.5) * 1000)
    assert last_seen == dict.fromkeys(NODES, last_status_ms)


def test_batch_review_gives_the_batch_s_numbers(yard_day: dict[str, Any]) -> None:
    results = panel_results(yard_day, load("batch.json"))
    [last] = results["Última humedad del grano"]
    assert last.values[0][1] == 18.5
    [count] = results["Mediciones de humedad"]
    assert count.values[0][1] == 2
    [rain] = results["Lluvia en el periodo"]
    assert rain.values[0][1] == pytest.approx(12 * 1.2)
    [alerts] = results["Alertas en el periodo"]
    assert alerts.values[0][1] == 2


def test_a_broken_query_or_an_empty_one_fails(yard_day: dict[str, Any]) -> None:
    dashboard = load("wall.json")
    values = variable_values(yard_day)
    query = dashboard["panels"][2]["targets"][0]["query"]
    with pytest.raises(QueryFailed, match="error parsing query"):
        grafana_query(yard_day, expand(query.replace('last("extended")', 'last("extended"'),
                                       dashboard, yard_day["now"], values))
    misspelt = expand(query.replace('"tray"', '"trays"', 1), dashboard, yard_day["now"], values)
    assert not shows_data(grafana_query(yard_day, misspelt))


def test_the_alert_state_tile_names_every_state_the_alert_engine_writes() -> None:
    """A state without a mapping would show as a bare English word on the wall."""
    engine = (Path(__file__).resolve().parent.parent / "server" / "alerts" /
              "engine.py").read_text()
    written = set(re.findall(r'\.transition\([^,]+,[^,]+,\s*"(\w+)"', engine))
    assert written == {"raised", "acknowledged", "resolved"}
    [tile] = [panel for panel in load("wall.json")["panels"]
              if panel["title"] == "Estado de alerta"]
    [mapping] = tile["fieldConfig"]["defaults"]["mappings"]
    assert set(mapping["options"]) == written
