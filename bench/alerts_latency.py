"""Benchmark: plate wet on a node -> push request leaves the server (target: p99 under 1 s).

Run by hand:  .venv/bin/python bench/alerts_latency.py [--yards 300] [--burst 100]

Everything real but the push service: a private Mosquitto and InfluxDB
(secadero.devservices, loopback, temp dir), the real ingest with the alert
service as its observer (as ``secadero server run`` wires them), and a
local ntfy-shaped HTTP server on 127.0.0.1 that timestamps each request.

A plain paho client plays the nodes: for each yard (one rain episode per
yard, so every event is a new alert) it publishes ``rain_started`` (QoS 1)
and we measure from just before ``publish`` to the push request arriving.

- sequential: one yard at a time (the latency of a single shower);
- burst: ``--burst`` yards get wet within one loop (a squall over a region).

Both with Mosquitto's defaults and with ``set_tcp_nodelay true``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import math
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from secadero.contract import Event, encode, node_topic
from secadero.devservices import SERVER_USER, InfluxDB, Mosquitto, free_port
from secadero.server.app import Server
from secadero.settings import load_server_settings


class Ntfy:
    """Records (topic, perf_counter at arrival) for each published message."""

    def __init__(self) -> None:
        self.arrivals: queue.Queue[tuple[str, float]] = queue.Queue()
        arrivals = self.arrivals

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Buffered: the response leaves in one segment, as from ntfy's Go server.
            # Unbuffered, headers and body go as two writes and Nagle + delayed ACK
            # add 40 ms to every request.
            wbufsize = -1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.perf_counter()
                topic = json.loads(body)["topic"]
                reply = b'{"id":"x","event":"message"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                arrivals.put((topic, arrived))

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def config(path: Path, *, broker: Mosquitto, influx: InfluxDB, ntfy_url: str,
           yards: int) -> Path:
    text = f"""
[mqtt]
port = {broker.port}
client_id = "bench-alerts"
{broker.toml_credentials(SERVER_USER)}
[influxdb]
url = "{influx.url}"
database = "bench_alerts"
{influx.toml_credentials()}
[ingest]
http_port = 0
state_file = "state.json"
set_aside_file = "set-aside.jsonl"
[alerts]
database = "alerts.sqlite3"
api_port = {free_port()}
drying_start = "00:00"
drying_end = "24:00"
[notifiers.ntfy]
url = "{ntfy_url}"
"""
    for i in range(yards):
        text += (f'[[yards]]\nid = "y{i}"\nname = "Tendal {i}"\nlatitude = -6.57\n'
                 f'longitude = -76.14\n[[yards.recipients]]\nname = "w{i}"\nrole = "worker"\n'
                 f'channels = ["push"]\nntfy_topic = "y{i}"\n')
    path.write_text(text)
    return path


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    # nearest rank
    return ordered[max(math.ceil(pct / 100 * len(ordered)) - 1, 0)]


def report(name: str, latencies_s: list[float]) -> None:
    ms = [v * 1000 for v in latencies_s]
    print(f"{name}: n={len(ms)} p50 {statistics.median(ms):.1f} ms, p95 "
          f"{percentile(ms, 95):.1f} ms, p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms")


def measure(args: argparse.Namespace, *, nodelay: bool) -> None:
    label = "set_tcp_nodelay true" if nodelay else "Mosquitto defaults"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(workdir=tmp / "mosquitto",
                           extra_config="set_tcp_nodelay true\n" if nodelay else "").start()
        influx = InfluxDB(workdir=tmp / "influxdb").start()
        ntfy = Ntfy()
        settings = load_server_settings(config(
            tmp / "server.toml", broker=broker, influx=influx,
            ntfy_url=ntfy.url, yards=args.yards))
        # The parts as `secadero server run` builds and starts them.
        server = Server(settings)
        node = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        try:
            server.start()
            assert server.ingest.wait_ready(20), "ingest not ready"
            node.username_pw_set(*broker.client_credentials())
            node.connect("127.0.0.1", broker.port)
            node.loop_start()
            sequential_n = args.yards - args.burst
            latencies = []
            for i in range(sequential_n):
                payload = encode(Event(ts=time.time(), seq=1, type="rain_started"))
                started = time.perf_counter()
                node.publish(node_topic(f"y{i}", "n1", "event"), payload, qos=1)
                topic, arrived = ntfy.arrivals.get(timeout=10)
                assert topic == f"y{i}", topic
                latencies.append(arrived - started)
            report(f"{label}, sequential", latencies)
            sent: dict[str, float] = {}
            for i in range(sequential_n, args.yards):
                payload = encode(Event(ts=time.time(), seq=1, type="rain_started"))
                sent[f"y{i}"] = time.perf_counter()
                node.publish(node_topic(f"y{i}", "n1", "event"), payload, qos=1)
            burst = []
            for _ in range(args.burst):
                topic, arrived = ntfy.arrivals.get(timeout=30)
                burst.append(arrived - sent[topic])
            report(f"{label}, burst of {args.burst}", burst)
        finally:
            node.disconnect()
            node.loop_stop()
            server.stop()
            influx.stop()
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--yards", type=int, default=300)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    # Same run, two brokers: Mosquitto's default lets Nagle hold a small PUBLISH
    # until the previous segment is ACKed (up to the 40 ms delayed ACK).
    measure(args, nodelay=False)
    measure(args, nodelay=True)


if __name__ == "__main__":
    main()
