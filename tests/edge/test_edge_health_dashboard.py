"""Node health and calibration travel from a node to the node-health dashboard's queries.

A node agent in this process on mock pins, its health readers pointed at
files in the Raspberry Pi firmware's and the kernel's formats (this PC has
neither), a calibration file beside its config; the real Mosquitto, the real
ingest (``secadero server run`` as a child process) and the real InfluxDB.
Then every query of dashboards/json/nodes.json runs, expanded as Grafana
would, and the panels must show what the node reported.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import influx_query, wait_until
from dashboard_day import by_tag, expand, load, run_query, shows_data
from node_helpers import (  # noqa: F401 (fixtures are found by their names)
    clear_retained,
    listener_factory_fixture,
    mock_hardware,
    wait_for_ingest,
    write_node_config,
)

from secadero import contract
from secadero.devservices import SERVER_USER
from secadero.edge.agent import NodeAgent
from secadero.edge.calibration import CalibrationPoint, HumidityCorrection
from secadero.firmware.health import ThrottleFlags, WifiSignal
from secadero.settings import load_node_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVER_TOML = """
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "ingest-{yard}"
{login}
[influxdb]
url = "{influx}"
database = "{yard}"
{influx_login}
[ingest]
http_port = 0
flush_interval_s = 0.05
state_file = "state.json"
set_aside_file = "set-aside.jsonl"

[alerts]
api_port = 0
"""

PROC_WIRELESS = """\
Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   52.  -58.  -256        0      0      0      0      0        0
"""


def test_health_and_calibration_reach_the_node_health_panels(
        mosquitto: Any, influxdb: Any, unique_name: str, tmp_path: Path,
        listener_factory: Any) -> None:
    yard = unique_name
    listener = listener_factory(yard)
    server_config = tmp_path / "server.toml"
    server_config.write_text(SERVER_TOML.format(
        port=mosquitto.port, yard=yard, influx=influxdb.url,
        login=mosquitto.toml_credentials(SERVER_USER),
        influx_login=influxdb.toml_credentials()))
    with (tmp_path / "server.log").open("ab") as server_log:
        server = subprocess.Popen([sys.executable, "-m", "secadero.cli", "server", "run",
                                   "--config", str(server_config)],
                                  stdout=subprocess.DEVNULL, stderr=server_log)
    agent: NodeAgent | None = None
    thread: threading.Thread | None = None
    try:
        wait_for_ingest(listener, yard)

        node_dir = tmp_path / "node"
        node_dir.mkdir()
        settings = load_node_settings(write_node_config(node_dir, yard=yard, node="n1",
                                                        broker=mosquitto,
                                                        sample_interval_s=0.2))
        calibrated_ts = round(time.time() - 3 * 86400, 3)
        HumidityCorrection.from_points(
            CalibrationPoint("mgcl2", 25.0, 30.0, 32.8, calibrated_ts - 3600),
            CalibrationPoint("nacl", 25.0, 78.0, 75.3, calibrated_ts),
            calibrated_ts=calibrated_ts).save(settings.calibration_file)
        firmware = node_dir / "get_throttled"
        firmware.write_text("50005\n")  # under-voltage and throttled, now and since boot
        wireless = node_dir / "wireless"
        wireless.write_text(PROC_WIRELESS)
        hardware = mock_hardware(settings, [(25.0, 60.0)])
        hardware.throttle = ThrottleFlags(sysfs_path=firmware, vcgencmd=None)
        hardware.wifi = WifiSignal(path=wireless)
        agent = NodeAgent(settings, hardware)
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()

        # The node's status at connect, with its health, seen on the broker...
        envelopes = listener.wait_for(lambda env: any(
            e.kind == "status" and e.node == "n1" and e.message.health is not None
            for e in env))
        [status] = [e.message for e in envelopes if e.kind == "status" and e.node == "n1"][:1]
        assert status.health.throttled == 0x50005
        assert status.health.wifi_rssi_dbm == -58.0
        assert status.health.calibrated_ts == calibrated_ts
        assert status.health.clock == "synced"
        # ... and a sample acknowledged, so it is stored.
        listener.wait_for(lambda env: any(e.kind == "ack" and e.node == "n1" for e in env))
        wait_until(lambda: influx_query(influxdb.url, yard,
                                        'SELECT last("wifi_rssi_dbm") FROM "node"'),
                   what="the status's health in InfluxDB")
    finally:
        if agent is not None:
            agent.stop()
        if thread is not None:
            thread.join(30)
        server.terminate()
        server.wait(30)
        clear_retained(mosquitto.port, [contract.node_topic(yard, "n1", "status")],
                       mosquitto.client_credentials())

    [climate] = influx_query(influxdb.url, yard, 'SELECT last("humidity_pct") AS "h", '
                             'last("humidity_raw_pct") AS "raw" FROM "climate" '
                             "WHERE \"node\" = 'n1'")
    correction = HumidityCorrection.load(settings.calibration_file)
    assert correction is not None
    assert (climate["raw"], climate["h"]) == (60.0, correction.apply(60.0))

    dashboard = load("nodes.json")
    now = time.time()
    values = {"yard": yard, "node": ".*"}
    results = {}
    for panel in dashboard["panels"]:
        series = []
        for target in panel["targets"]:
            series += run_query(influxdb.url, yard, expand(target["query"], dashboard, now,
                                                           values))
        results[panel["title"]] = series
    n1 = ("n1",)
    assert by_tag(results["Bajo voltaje / Under-voltage"], "node") == {n1: 3}  # now + seen
    assert by_tag(results["Limitación de CPU / Throttling"], "node") == {n1: 3}
    assert by_tag(results["Señal Wi-Fi"], "node") == {n1: -58.0}
    assert by_tag(results["Reloj / Clock"], "node") == {n1: 1}
    assert by_tag(results["Última calibración / Last calibration"], "node") == {
        n1: pytest.approx(calibrated_ts * 1000)}
    assert by_tag(results["En línea"], "node")[n1] in (0, 1)  # 0 once it said goodbye
    [disk] = by_tag(results["Disco libre / Disk free"], "node").values()
    assert disk > 0
    for title in ("Visto por última vez / Last seen", "Mensajes en espera / Buffered",
                  "Encendido hace / Uptime", "Señal Wi-Fi en el tiempo"):
        assert shows_data(results[title]), title
    # Nothing lost, no sensor fault: those panels show their "0" (noValue), not a series.
    assert results["Mensajes perdidos (saltos de seq)"] == []
    assert results["Fallas de sensor / Sensor faults"] == []
