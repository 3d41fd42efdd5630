"""Plate wet -> ``rain_started`` event on the broker: latency with the broker up.

The node agent runs in this process on gpiozero's mock pins (no simulated
yard): the benchmark drives the rain plate's pin low (wet), and an MQTT
client in a separate process (so it does not share the node's GIL)
timestamps the ``rain_started`` event when the broker delivers it, and acks.
The latency includes the plate's wet debounce (``wet_after_s``, 50 ms by
default: the price of not alarming on a single splash), the fsynced outbox
commit and the publish. Also reports plate -> buzzer on (the local alarm).

Target (issue 3): p99 under 100 ms.  Usage: bench/edge_rain_latency.py [episodes]
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_common import event_listener_process, node_config, private_broker
from gpiozero.pins.mock import MockFactory

from secadero.edge.agent import NodeAgent
from secadero.edge.hardware import NodeHardware
from secadero.firmware.dht import DHT22Sensor, ScriptedDHT
from secadero.firmware.outputs import Beacon, Buzzer
from secadero.firmware.rain import RainPlate
from secadero.settings import load_node_settings


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    episodes = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    load_before = f"{os.getloadavg()[0]:.2f}"
    broker, _ = private_broker()
    yard = "bench-latency"
    directory = Path(tempfile.mkdtemp(prefix="secadero-latency-"))
    config = node_config(directory, yard=yard, broker=broker, sample_interval_s=1.0,
                         extra="[hardware]\ndry_after_s = 0.02\n")
    settings = load_node_settings(config)
    factory = MockFactory()
    pins = settings.pins
    hardware = NodeHardware(
        climate=DHT22Sensor(ScriptedDHT([(25.0, 60.0)]), min_interval_s=0.0),
        plate=RainPlate(pins.rain_plate_pin, wet_after_s=pins.wet_after_s,
                        dry_after_s=pins.dry_after_s, pin_factory=factory),
        gauge=None, trays={}, beacon=Beacon(pins.beacon_pin, pin_factory=factory),
        buzzer=Buzzer(pins.buzzer_pin, pin_factory=factory), silence=None,
        pin_factory=factory)
    context = multiprocessing.get_context("spawn")
    events: multiprocessing.Queue = context.Queue()
    ready = context.Event()
    listener = context.Process(target=event_listener_process,
                               args=(broker.port, broker.client_credentials(), yard, events,
                                     ready), daemon=True)
    listener.start()
    if not ready.wait(20):
        raise SystemExit("listener did not subscribe")
    agent = NodeAgent(settings, hardware)
    # Node-side split: when the event's PUBLISH was handed to the socket.
    handed: list[float] = []
    publish = agent.link.publish

    def timed_publish(topic: str, payload: bytes, **kwargs: bool) -> object:
        info = publish(topic, payload, **kwargs)
        if topic.endswith("/event"):
            handed.append(time.perf_counter())
        return info

    agent.link.publish = timed_publish  # type: ignore[method-assign,assignment]
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    if not agent.link.connected.wait(10):
        raise SystemExit("node did not connect")
    pin = factory.pin(pins.rain_plate_pin)
    event_ms: list[float] = []
    alarm_ms: list[float] = []
    sent_ms: list[float] = []
    try:
        for _ in range(episodes):
            started = time.perf_counter()
            pin.drive_low()
            while not hardware.buzzer.is_active:  # type: ignore[union-attr]
                time.sleep(0.0005)
            alarm_ms.append((time.perf_counter() - started) * 1000)
            arrived, body = events.get(timeout=5)
            if body["type"] != "rain_started":
                raise SystemExit(f"unexpected event {body}")
            event_ms.append((arrived - started) * 1000)
            sent_ms.append((handed[-1] - started) * 1000)
            pin.drive_high()
            arrived, body = events.get(timeout=5)
            if body["type"] != "rain_stopped":
                raise SystemExit(f"unexpected event {body}")
            time.sleep(0.02)
    finally:
        agent.stop()
        runner.join(15)
        listener.terminate()
        listener.join(5)
        broker.stop()
    print(f"{episodes} wet episodes, wet_after_s = {pins.wet_after_s * 1000:.0f} ms debounce "
          "included")
    print(f"load average before/after: {load_before} / {os.getloadavg()[0]:.2f} "
          "(2 cores shared with other engineers' test runs)")
    for name, values in (("plate -> rain_started at the broker's subscriber", event_ms),
                         ("plate -> event PUBLISH handed to the socket (node side)", sent_ms),
                         ("plate -> buzzer on (local alarm)", alarm_ms)):
        print(f"{name}: p50 {statistics.median(values):.1f} ms, p99 "
              f"{percentile(values, 99):.1f} ms, max {max(values):.1f} ms")


if __name__ == "__main__":
    main()
