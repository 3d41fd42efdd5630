"""The agent in-process on mock pins: local alarm, bad input from the broker, the clock.

The broker is the real Mosquitto from the session fixture (or a port where
nothing listens, for "broker down"); the tests play the server.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from node_helpers import (  # noqa: F401 (fixtures are found by their names)
    clear_retained,
    listener_factory_fixture,
    mock_hardware,
    node_processes_fixture,
    write_node_config,
)

from secadero import contract
from secadero.devservices import Mosquitto, free_port
from secadero.edge.agent import NodeAgent
from secadero.firmware.dht import dht_error
from secadero.settings import load_node_settings

REAL_S = 1_790_000_000.0


def make_agent(tmp_path: Path, yard: str, broker: Mosquitto | int, *,
               script: list | None = None, sample_interval_s: float = 0.1,
               **kwargs: Any) -> NodeAgent:
    """An agent logged in to ``broker`` as the harness, or pointed at a port (int) with
    no broker."""
    where: dict[str, Any] = {"port": broker} if isinstance(broker, int) else {"broker": broker}
    config = write_node_config(tmp_path, yard=yard, **where,
                               sample_interval_s=sample_interval_s,
                               extra="[hardware]\ndry_after_s = 0.2\n")
    settings = load_node_settings(config)
    return NodeAgent(settings, mock_hardware(settings, script), **kwargs)


class Running:
    """Runs ``agent.run()`` in a thread for the length of a ``with`` block."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.thread = threading.Thread(target=agent.run, daemon=True)

    def __enter__(self) -> NodeAgent:
        self.thread.start()
        return self.agent

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()
        settings = self.agent.settings
        mqtt_settings = settings.mqtt
        credentials = ((mqtt_settings.username, mqtt_settings.password or "")
                       if mqtt_settings.username else None)
        clear_retained(mqtt_settings.port,
                       [contract.node_topic(settings.yard, settings.node, "status")], credentials)


def wait(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def test_wet_plate_sounds_the_alarm_within_1_s_with_the_broker_down(
        tmp_path: Path, unique_name: str) -> None:
    agent = make_agent(tmp_path, unique_name, free_port())  # nothing listens there
    pin = agent.hardware.pin_factory.pin(agent.settings.pins.rain_plate_pin)
    with Running(agent):
        started = time.monotonic()
        pin.drive_low()  # the comparator pulls DO low: wet
        wait(lambda: agent.alarm.beacon_on and agent.alarm.buzzer_on, 1.0)
        latency_s = time.monotonic() - started
        # The silence button quiets the buzzer for this episode only.
        button = agent.hardware.pin_factory.pin(agent.settings.pins.silence_pin)
        button.drive_low()
        wait(lambda: not agent.alarm.buzzer_on, 1.0)
        button.drive_high()
        assert agent.alarm.beacon_on
        pin.drive_high()
        wait(lambda: not agent.alarm.beacon_on, 2.0)
        pin.drive_low()
        wait(lambda: agent.alarm.buzzer_on, 1.0)
        assert not agent.link.connected.is_set()
        wait(lambda: agent.outbox.stats().next_seq > 5)
    assert latency_s < 1.0
    # The rain events were stored while offline, in seq order with the telemetry.
    kinds = [row[0] for row in sqlite3.connect(tmp_path / "n1.sqlite3").execute(
        "SELECT payload FROM outbox WHERE kind = 'event' ORDER BY seq")]
    assert [json.loads(k)["type"] for k in kinds] == ["rain_started", "rain_stopped",
                                                       "rain_started"]


@pytest.mark.integration
def test_malformed_ack_and_alert_are_counted_and_ignored(
        mosquitto: Any, tmp_path: Path, unique_name: str, listener_factory: Any) -> None:
    listener = listener_factory(unique_name)
    agent = make_agent(tmp_path, unique_name, mosquitto)
    ack_topic = contract.node_topic(unique_name, "n1", "ack")
    alert_topic = contract.alert_topic(unique_name)
    with Running(agent):
        listener.wait_for(lambda env: len(listener.seqs()) >= 3)
        for payload in (b"not json", b'{"seq": -1}', b'{"seq": "3"}', b"{\"seq\": NaN}",
                        b"\xff\xfe", b'{"seq": 1, "seq": 2}'):
            listener.publish(ack_topic, payload)
        for payload in (b"[]", b'{"state": "panic"}', b'{"state": "raised", "since": "x"}'):
            listener.publish(alert_topic, payload)
        wait(lambda: agent.counters["bad_ack"] == 6 and agent.counters["bad_alert"] == 3)
        assert not agent.alarm.beacon_on
        assert agent.outbox.acked_seq == 0
        # A good retained alert from the server lights the beacon; a clear puts it out.
        listener.publish(alert_topic, contract.encode(contract.Alert(
            state="raised", kind="forecast", severity="warning", message="Lluvia en ~40 min")),
            retain=True)
        wait(lambda: agent.alarm.beacon_on)
        assert not agent.alarm.buzzer_on
        listener.publish(alert_topic, b'{"state": 7}', retain=True)
        listener.publish(alert_topic, contract.encode(contract.Alert(state="clear")),
                         retain=True)
        wait(lambda: not agent.alarm.beacon_on)
        # Deleting the retained alert (an empty retained message) also means "no alert".
        listener.publish(alert_topic, contract.encode(contract.Alert(state="raised")),
                         retain=True)
        wait(lambda: agent.alarm.beacon_on)
        listener.publish(alert_topic, b"", retain=True)
        wait(lambda: not agent.alarm.beacon_on)
        assert agent.counters["bad_alert"] == 4
        # A good ack after all that garbage still works.
        listener.ack("n1", 2)
        wait(lambda: agent.outbox.acked_seq == 2)
        # An ack beyond anything the node sent is ignored and counted.
        listener.ack("n1", 10**9)
        wait(lambda: agent.outbox.stats().counters["acks_ignored"] == 1)
        assert agent.outbox.acked_seq == 2
        # ... and does not mask the real acks that follow it.
        listener.ack("n1", 3)
        wait(lambda: agent.outbox.acked_seq == 3)
        assert agent.outbox.stats().counters["acks_ignored"] == 1
        assert agent.link.connected.is_set()
    listener.publish(alert_topic, b"", retain=True)  # clear the retained alert


@pytest.mark.integration
def test_readings_before_clock_sync_are_held_then_sent_with_rebased_times(
        mosquitto: Any, tmp_path: Path, unique_name: str, listener_factory: Any) -> None:
    listener = listener_factory(unique_name)
    synced = threading.Event()
    offset_s = [REAL_S - 10 * 365 * 86400 - time.monotonic()]  # booted "in 2016"

    def wall() -> float:
        return time.monotonic() + offset_s[0]

    agent = make_agent(tmp_path, unique_name, mosquitto, wall=wall,
                       clock_synced=synced.is_set)
    with Running(agent):
        wait(lambda: agent.outbox.stats().held >= 5)
        assert listener.seqs() == []          # nothing without a trusted time goes out
        # NTP arrives: the clock steps to the real time and is synchronised.
        offset_s[0] = REAL_S - time.monotonic()
        synced.set()
        listener.wait_for(lambda env: len(listener.seqs()) >= 8)
    telemetry = [e.message for e in listener.decoded if e.kind == "telemetry"]
    assert [t.seq for t in telemetry[:8]] == list(range(1, 9))
    # Every reading carries a time on the new clock; held ones are earlier than the sync.
    for reading in telemetry:
        assert REAL_S - 60 < reading.ts < REAL_S + 60
    # The held readings come first and are stamped before the moment of the sync,
    # about 0.1 s apart as they were taken (rebased by the monotonic clock; a loaded
    # machine delays some samples).
    held = [t for t in telemetry if t.ts < REAL_S]
    assert len(held) >= 5 and held == telemetry[:len(held)]
    steps = [b.ts - a.ts for a, b in itertools.pairwise(held)]
    assert all(0.05 < step < 1.0 for step in steps), steps
    assert [t.ts for t in telemetry] == sorted(t.ts for t in telemetry)


def test_unplugged_sensor_gives_null_readings_and_a_fault_event_then_recovery(
        tmp_path: Path, unique_name: str) -> None:
    script: list = [dht_error("not_found")] * 3 * 4 + [(25.0, 60.0)]
    agent = make_agent(tmp_path, unique_name, free_port(), script=script)
    with Running(agent):
        wait(lambda: agent.counters["samples"] >= 6)
    conn = sqlite3.connect(tmp_path / "n1.sqlite3")
    rows = [(kind, json.loads(payload)) for kind, payload in
            conn.execute("SELECT kind, payload FROM outbox ORDER BY seq")]
    conn.close()
    telemetry = [body for kind, body in rows if kind == "telemetry"]
    events = [body for kind, body in rows if kind == "event"]
    assert [t["temperature_c"] for t in telemetry[:4]] == [None, None, None, 25.0]
    assert [t["humidity_pct"] for t in telemetry[:4]] == [None, None, None, 60.0]
    assert [(e["type"], e.get("sensor")) for e in events] == [
        ("sensor_fault", "dht22"), ("sensor_recovered", "dht22")]
    assert "check wiring" in events[0]["detail"]
