"""The local-service launcher behind the test fixtures and the demo yard.

These start their own Mosquitto and InfluxDB (not the session fixtures) to
show that each answers on its port, is stopped by its PID, and leaves nothing
running.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import create_database_and_write, influx_request

from secadero.devservices import InfluxDB, Mosquitto, ServiceError, find_binary

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); the launcher reaps its children, so check state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_mosquitto_carries_a_retained_message_and_stops_by_pid(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path).start()
    pid = broker.pid
    assert pid is not None and alive(pid)
    received = threading.Event()
    payloads: list[bytes] = []

    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.username_pw_set(*broker.client_credentials())
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    publisher.publish("secadero/v1/y/n/status", b'{"state":"online"}', qos=1,
                      retain=True).wait_for_publish(5)
    publisher.disconnect()
    publisher.loop_stop()

    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payloads.append(msg.payload)
        received.set()

    subscriber.on_message = on_message
    subscriber.username_pw_set(*broker.client_credentials())
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe("secadero/v1/#", qos=1)
    subscriber.loop_start()
    assert received.wait(5)
    subscriber.disconnect()
    subscriber.loop_stop()
    assert payloads == [b'{"state":"online"}']

    broker.stop()
    assert not alive(pid)
    broker.stop()  # idempotent


def test_influxdb_answers_and_keeps_data_across_a_restart(tmp_path: Path) -> None:
    database = InfluxDB(workdir=tmp_path).start()
    first_pid = database.pid
    try:
        create_database_and_write(database.url, "probe",
                                  b"climate,yard=y,node=n humidity_pct=60 1780000000")
        database.kill()
        assert first_pid is not None and not alive(first_pid)
        database.restart()
        with urllib.request.urlopen(influx_request(
                f"{database.url}/query?db=probe&q=SELECT+*+FROM+climate"),
                timeout=10) as response:
            body = json.load(response)
        assert body["results"][0]["series"][0]["values"] == [
            ["2026-05-28T20:26:40Z", 60, "n", "y"]]
    finally:
        database.stop()  # a failed assertion must not leave influxd running


def test_missing_binary_names_the_package() -> None:
    with pytest.raises(ServiceError, match=r"install the Debian package 'no-such-package'"):
        find_binary(("no-such-broker-binary",), "no-such-package")


def test_a_stranger_on_the_port_is_never_taken_for_our_influxdb(tmp_path: Path) -> None:
    """Another program took the port first (test runs in parallel on one machine): it
    answers /ping like an InfluxDB, but our influxd could not bind, and start() says so
    instead of handing the tests a server that is not ours."""
    import http.server

    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    stranger = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    thread = threading.Thread(target=stranger.serve_forever, daemon=True)
    thread.start()
    database = InfluxDB(workdir=tmp_path, port=stranger.server_address[1])
    try:
        with pytest.raises(ServiceError, match="influxd exited with code"):
            database.start()
    finally:
        database.stop()
        stranger.shutdown()
        stranger.server_close()
