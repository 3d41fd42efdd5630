"""The composition root (server/app.py) against the real Mosquitto and InfluxDB.

One registry and one health for the whole process: every part's metrics on one
``/metrics``, and ``/healthz`` red as soon as any long-lived thread has died,
paho's network thread included; a process whose part died exits (systemd
restarts it).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ingest_helpers import (  # noqa: F401 (fixtures are found by their names)
    NodeSide,
    node_side_fixture,
    wait_until,
    write_server_config,
)

from secadero.server.app import Server
from secadero.server.mqtt_client import FastReadClient, fast_read_client
from secadero.settings import MqttSettings, load_server_settings

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def settings_with_alerts(tmp_path: Path, mosquitto: Any, influxdb: Any, name: str) -> Any:
    config = write_server_config(tmp_path / "server.toml", broker=mosquitto,
                                 influx_url=influxdb.url, database=name,
                                 client_id=f"ingest-{name}")
    with config.open("a") as out:
        out.write('[alerts]\napi_port = 0\ndatabase = "alerts.sqlite3"\n'
                  f'[[yards]]\nid = "{name}"\nlatitude = -6.57\nlongitude = -76.14\n')
    return load_server_settings(config)


def test_every_part_is_served_on_one_metrics_endpoint(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> None:
    server = Server(settings_with_alerts(tmp_path, mosquitto, influxdb, unique_name)).start()
    try:
        assert server.ingest.wait_ready(15)
        status, text = get(server.http_port, "/metrics")
        assert status == 200
        for part in ("ingest", "alerts", "notify", "forecast", "forecast_skill", "api",
                     "influx"):
            assert f"\n# TYPE secadero_{part}_" in text, part
        assert server.api_port is not None
        wait_until(lambda: get(server.http_port, "/healthz") == (200, "ok\n"),
                   what="a healthy server")
    finally:
        server.stop()


def test_the_servers_api_takes_the_accounts_secadero_users_makes(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The composition root: the API reads the accounts the admin made with
    ``secadero users add`` on the same config (its ``[accounts] database``)."""
    import io
    import json

    from secadero.cli import main

    settings = settings_with_alerts(tmp_path, mosquitto, influxdb, unique_name)
    config = str(tmp_path / "server.toml")
    server = Server(settings).start()
    try:
        assert server.api_port is not None
        assert get(server.api_port, "/api/alerts/active") == (
            401, '{"error": "login required"}')
        monkeypatch.setattr("sys.stdin", io.StringIO("supervisor password\n"))
        assert main(["users", "add", "ana", "--role", "supervisor", "--password-stdin",
                     "--config", config]) == 0
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.api_port}/api/login", method="POST",
            data=json.dumps({"name": "ana", "password": "supervisor password"}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            token = json.loads(response.read())["token"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.api_port}/api/alerts/active",
            headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert (response.status, json.loads(response.read())) == (200, [])
        assert (tmp_path / "var" / "accounts.sqlite3").exists()
    finally:
        server.stop()


def test_ingest_only_builds_no_alert_parts_and_stores(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str,
        node_side: NodeSide) -> None:
    """``secadero server ingest``: the ingest with its endpoint, nothing of the alerts."""
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}"))
    server = Server(settings, alerts=False).start()
    try:
        assert (server.alerts, server.feed, server.api) == (None, None, None)
        assert server.ingest.wait_ready(15)
        node_side.telemetry("n1", 1, time.time(), humidity_pct=70.0)
        # Stored and acknowledged: the ack is sent after InfluxDB's 204.
        assert node_side.wait_ack("n1", 1)
        assert get(server.http_port, "/metrics")[0] == 200
        text = get(server.http_port, "/metrics")[1]
        assert "secadero_ingest_messages_stored_total 1\n" in text
        assert "secadero_alerts_" not in text
    finally:
        server.stop()


class DyingClient(FastReadClient):
    """The fast-read client, made to raise on its network thread once ``die`` is set.

    Stands in for a bug in the receive path that escapes every handler: paho's
    network thread ends, and nothing but Health can tell.
    """

    die = threading.Event()

    def loop_read(self, max_packets: int = 1) -> Any:
        if self.die.is_set():
            raise RuntimeError("injected: the receive path broke")
        return super().loop_read(max_packets)


def test_a_dead_paho_network_thread_turns_healthz_red_and_ends_the_process(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str,
        node_side: NodeSide) -> None:
    settings = load_server_settings(write_server_config(
        tmp_path / "server.toml", broker=mosquitto, influx_url=influxdb.url,
        database=unique_name, client_id=f"ingest-{unique_name}"))
    DyingClient.die = threading.Event()

    def factory(mqtt_settings: MqttSettings) -> FastReadClient:
        return fast_read_client(mqtt_settings, client_class=DyingClient)

    server = Server(settings, alerts=False, client_factory=factory).start()
    try:
        assert server.ingest.wait_ready(15)
        assert get(server.http_port, "/healthz") == (200, "ok\n")
        DyingClient.die.set()
        # The next bytes from the broker reach loop_read on paho's thread.
        node_side.telemetry("n1", 1, time.time(), wait=False)
        wait_until(lambda: get(server.http_port, "/healthz")[0] == 503,
                   what="/healthz to turn red")
        assert "the ingest MQTT network thread has stopped; see the log\n" in get(
            server.http_port, "/healthz")[1]
        with pytest.raises(SystemExit, match="ingest MQTT network"):
            server.wait_while_running(threading.Event())
    finally:
        server.stop()
