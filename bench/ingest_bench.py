"""Server ingest benchmark: throughput, CPU and memory, latency, against the real services.

Run by hand (not part of pytest)::

    .venv/bin/python bench/ingest_bench.py throughput [--messages 100000] [--processes 1]
    .venv/bin/python bench/ingest_bench.py latency [--rate 1000] [--seconds 30]
    .venv/bin/python bench/ingest_bench.py soak [--rate 2000] [--seconds 600]
    .venv/bin/python bench/ingest_bench.py compare [--messages 100000]
    .venv/bin/python bench/ingest_bench.py equal-load [--rate 5000] [--seconds 30]

Each run starts a fresh Mosquitto and InfluxDB 1.x (devservices) in a temp
folder and the server as a child process (``secadero server run``), so its
CPU time and RSS are its own. Publishers are ``mosquitto_pub -l`` (C) on 20
node topics at QoS 1; a reading is one telemetry message (~150 bytes: climate,
rain and one tray, i.e. 3 points). The clock stops when every node's ``ack``
covers its last message: acknowledged after InfluxDB answered 204, i.e.
stored and queryable. The baseline in the same run: the same publishers into
``mosquitto_sub`` (C) at QoS 1, i.e. Mosquitto's own pub->sub rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from secadero.devservices import SERVER_USER, InfluxDB, Mosquitto, free_port, influx_request

NODES = 20
YARD = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def payload(seq: int, ts: float) -> str:
    return json.dumps({"ts": round(ts, 3), "seq": seq, "temperature_c": 24.5 + (seq % 50) / 10,
                       "humidity_pct": 71.2, "rain": False, "rain_mm": 0.0,
                       "trays": {"t1": "extended"}}, separators=(",", ":"))


def start_services(work: Path) -> tuple[Mosquitto, InfluxDB]:
    broker = Mosquitto(workdir=work / "mosquitto").start()
    influx = InfluxDB(workdir=work / "influx").start()
    return broker, influx


def start_server(work: Path, broker: Mosquitto, influx: InfluxDB, index: int = 0,
                 share_group: str = "") -> tuple[subprocess.Popen[bytes], int]:
    http_port = free_port()
    config = work / f"server{index}.toml"
    config.write_text(
        f'[mqtt]\nport = {broker.port}\nclient_id = "bench-ingest-{index}"\n'
        f"{broker.toml_credentials(SERVER_USER)}"
        f'[influxdb]\nurl = "{influx.url}"\ndatabase = "bench"\n'
        f"{influx.toml_credentials()}"
        f"[ingest]\nhttp_port = {http_port}\nbatch_size = 5000\nflush_interval_s = 0.2\n"
        f'queue_max = 10000\nshare_group = "{share_group}"\n'
        f'state_file = "state{index}.json"\n')
    process = subprocess.Popen([sys.executable, "-m", "secadero.cli", "server", "ingest",
                                "--config", str(config)], cwd=work,
                               stdout=subprocess.DEVNULL, stderr=open(  # noqa: SIM115
                                   work / f"server{index}.log",
                                                                     "wb"))
    deadline = time.monotonic() + 30
    import urllib.request
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics",
                                        timeout=1) as response:
                if "secadero_ingest_mqtt_connected 1" in response.read().decode():
                    return process, http_port
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not connect; see " + str(work / f"server{index}.log"))


class AckWatcher:
    """Records when each node's ack first covers a given seq."""

    def __init__(self, broker: Mosquitto) -> None:
        self.highest: dict[str, int] = {}
        self.first_seen: dict[tuple[str, int], float] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-acks",
                                  protocol=mqtt.MQTTv5)
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe(f"secadero/v1/{YARD}/+/ack", qos=1)
        self.client.on_message = self._on_message
        self.client.username_pw_set(*broker.client_credentials())
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        ready.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        node = msg.topic.split("/")[3]
        seq = json.loads(msg.payload)["seq"]
        now = time.monotonic()
        with self.cond:
            if seq > self.highest.get(node, -1):
                self.highest[node] = seq
                self.first_seen[(node, seq)] = now
                self.cond.notify_all()

    def wait_all(self, last_seq: int, nodes: list[str], timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while any(self.highest.get(n, -1) < last_seq for n in nodes):
                if not self.cond.wait(deadline - time.monotonic()):
                    raise SystemExit(f"timed out; acks so far {self.highest}")
        return time.monotonic()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def login_args(broker: Mosquitto) -> list[str]:
    """mosquitto_pub/sub's login as the harness (a private broker's one-time secret)."""
    username, password = broker.client_credentials()
    return ["-u", username, "-P", password]


def publish_burst(broker: Mosquitto, per_node: int, work: Path, tag: str) -> float:
    """Start 20 mosquitto_pub -l at once; returns the start time (monotonic)."""
    now = time.time()
    files = []
    for n in range(NODES):
        path = work / f"{tag}-n{n}.txt"
        with path.open("w") as out:
            for seq in range(1, per_node + 1):
                # Live readings (not an hour late, which would also make the
                # server re-downsample that hour), one millisecond apart.
                out.write(payload(seq, now - 120 + seq * 0.001) + "\n")
        files.append(path)
    start = time.monotonic()
    procs = [subprocess.Popen(["mosquitto_pub", "-p", str(broker.port), *login_args(broker),
                               "-q", "1", "-l", "-i", f"{tag}-pub-{n}",
                               "-t", f"secadero/v1/{YARD}/n{n}/telemetry"],
                              stdin=open(files[n], "rb"))  # noqa: SIM115 (the child owns it)
             for n in range(NODES)]
    threading.Thread(target=lambda: [p.wait() for p in procs], daemon=True).start()
    return start


def baseline_c(broker: Mosquitto, per_node: int, work: Path) -> float:
    total = per_node * NODES
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), *login_args(broker),
                            "-q", "1", "-C", str(total),
                            "-i", "bench-csub", "-t", "baseline/#"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    now = time.time()
    files = []
    for n in range(NODES):
        path = work / f"base-n{n}.txt"
        path.write_text("".join(payload(s, now) + "\n" for s in range(1, per_node + 1)))
        files.append(path)
    start = time.monotonic()
    procs = [subprocess.Popen(["mosquitto_pub", "-p", str(broker.port), *login_args(broker),
                               "-q", "1", "-l", "-t", f"baseline/n{n}"],
                              stdin=open(files[n], "rb"))  # noqa: SIM115
             for n in range(NODES)]
    sub.wait(300)
    elapsed = time.monotonic() - start
    for p in procs:
        p.wait()
    return total / elapsed


def throughput(args: argparse.Namespace) -> tuple[float, float, float]:
    """Readings/s and server CPU us per reading of the ingest, and Mosquitto's own msg/s."""
    per_node = args.messages // NODES
    total = per_node * NODES
    assert per_node <= 50_000, "mosquitto_pub -l loses lines beyond ~65,535 (see performance.md)"
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        broker, influx = start_services(work)
        try:
            base_rate = baseline_c(broker, per_node, work)
            servers = [start_server(work, broker, influx, i,
                                    share_group="bench" if args.processes > 1 else "")
                       for i in range(args.processes)]
            watcher = AckWatcher(broker)
            spy = None
            if args.profile:
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                                        "--pid", str(servers[0][0].pid), "--format", "raw",
                                        "--output", args.profile, "--rate", "250",
                                        "--nonblocking"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                time.sleep(1)
            cpu0 = sum(cpu_s(p.pid) for p, _ in servers)
            start = publish_burst(broker, per_node, work, "run")
            end = watcher.wait_all(per_node, [f"n{n}" for n in range(NODES)], 600)
            cpu = sum(cpu_s(p.pid) for p, _ in servers) - cpu0
            rss = [rss_mb(p.pid) for p, _ in servers]
            elapsed = end - start
            rate = total / elapsed
            count = _count(influx)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            watcher.close()
            for p, _ in servers:
                p.terminate()
                p.wait(30)
        finally:
            broker.stop()
            influx.stop()
    print(f"readings: {total} ({NODES} nodes x {per_node}), ingest processes: {args.processes}")
    print(f"Mosquitto C pub -> C sub, QoS 1:           {base_rate:10,.0f} msg/s")
    print(f"ingest, stored + acked after 204:          {rate:10,.0f} readings/s "
          f"({rate / base_rate:.2f} x Mosquitto's pub->sub)")
    print(f"climate points in InfluxDB: {count} (expected {total})")
    print(f"server CPU per reading: {cpu / total * 1e6:.1f} us; RSS at end: "
          + ", ".join(f"{r:.0f} MB" for r in rss))
    return rate, cpu / total * 1e6, base_rate


def drain(args: argparse.Namespace) -> None:
    """A backlog queued in the broker while the server was down, drained at full speed.

    Publishers are finished before the server starts, so the server competes
    only with the broker and InfluxDB for the two cores.
    """
    per_node = args.messages // NODES
    total = per_node * NODES
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        broker, influx = start_services(work)
        try:
            servers = [start_server(work, broker, influx, i,
                                    share_group="bench" if args.processes > 1 else "")
                       for i in range(args.processes)]
            for process, _ in servers:  # the sessions exist now; stop to build a backlog
                process.terminate()
                process.wait(30)
            watcher = AckWatcher(broker)
            publish_burst(broker, per_node, work, "drain")
            _wait_queued(broker, total)
            start = time.monotonic()
            servers = [start_server(work, broker, influx, i,
                                    share_group="bench" if args.processes > 1 else "")
                       for i in range(args.processes)]
            cpu0 = sum(cpu_s(p.pid) for p, _ in servers)
            end = watcher.wait_all(per_node, [f"n{n}" for n in range(NODES)], 600)
            cpu = sum(cpu_s(p.pid) for p, _ in servers) - cpu0
            rss = [rss_mb(p.pid) for p, _ in servers]
            count = _count(influx)
            watcher.close()
            for p, _ in servers:
                p.terminate()
                p.wait(30)
        finally:
            broker.stop()
            influx.stop()
    rate = total / (end - start)
    print(f"backlog of {total} readings drained by {args.processes} process(es): "
          f"{rate:,.0f} readings/s (clock includes server start-up)")
    print(f"climate points in InfluxDB: {count} (expected {total})")
    print(f"server CPU per reading: {cpu / total * 1e6:.1f} us; RSS at end: "
          + ", ".join(f"{r:.0f} MB" for r in rss))


def _wait_queued(broker: Mosquitto, total: int) -> None:
    """Wait until the publishers are done (the broker has stored every message)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-f", "mosquitto_pub -p " + str(broker.port)],
                             capture_output=True, text=True).stdout.split()
        if not out:
            return
        time.sleep(0.2)
    raise SystemExit("publishers did not finish")


NODERED_PACKAGES = ("node-red@4", "node-red-contrib-influxdb@0.7")


def nodered_flow(broker_port: int, influx_port: int) -> list[dict[str, object]]:
    """The tuned peer flow: mqtt in (QoS 1) -> function -> join (1,000 / 1 s) -> influxdb batch.

    One point per reading (climate: temperature and humidity), no validation,
    no derived values: less work than the ingest does. Node-RED acknowledges
    each message on receipt.
    """
    convert = ("const p = msg.payload; const parts = msg.topic.split('/');"
               "msg.payload = {measurement: 'climate', tags: {yard: parts[2], node: parts[3]},"
               "fields: {temperature_c: p.temperature_c, humidity_pct: p.humidity_pct},"
               "timestamp: new Date(p.ts * 1000)}; return msg;")
    return [
        {"id": "f1", "type": "tab", "label": "bench"},
        {"id": "b1", "type": "mqtt-broker", "broker": "127.0.0.1", "port": str(broker_port),
         "clientid": "nodered-bench", "autoConnect": True, "usetls": False,
         "protocolVersion": "4", "keepalive": "60", "cleansession": True},
        {"id": "in1", "type": "mqtt in", "z": "f1", "topic": f"secadero/v1/{YARD}/+/telemetry",
         "qos": "1", "datatype": "json", "broker": "b1", "nl": False, "rap": True, "rh": 0,
         "inputs": 0, "wires": [["fn1"]]},
        {"id": "fn1", "type": "function", "z": "f1", "func": convert, "outputs": 1,
         "wires": [["join1"]]},
        {"id": "join1", "type": "join", "z": "f1", "mode": "custom", "build": "array",
         "property": "payload", "propertyType": "msg", "key": "topic", "joiner": "\\n",
         "joinerType": "str", "accumulate": False, "timeout": "1", "count": "1000",
         "reduceRight": False, "wires": [["batch1"]]},
        {"id": "db1", "type": "influxdb", "hostname": "127.0.0.1", "port": str(influx_port),
         "protocol": "http", "database": "bench", "name": "", "usetls": False,
         "influxdbVersion": "1.x"},
        {"id": "batch1", "type": "influxdb batch", "z": "f1", "influxdb": "db1",
         "precision": "ms", "retentionPolicy": "", "name": "", "wires": []},
    ]


def ensure_nodered(folder: Path) -> Path:
    """Node-RED and the InfluxDB nodes from npm into ``folder`` (kept for the next run)."""
    red = folder / "node_modules" / "node-red" / "red.js"
    if not red.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                        *NODERED_PACKAGES], cwd=folder, check=True)
    return red


def start_nodered(args: argparse.Namespace, broker: Mosquitto, influx: InfluxDB,
                  work: Path) -> subprocess.Popen[bytes]:
    """The Node-RED flow on these services, once it is connected to the broker."""
    red = ensure_nodered(Path(args.nodered_dir))
    _create_database(influx, "bench")
    user = work / "nodered"
    user.mkdir()
    (user / "node_modules").symlink_to(Path(args.nodered_dir) / "node_modules")
    flows = user / "flows.json"
    flows.write_text(json.dumps(nodered_flow(broker.port, influx.port)))
    # Its logins, in Node-RED's credentials file beside the flows; unencrypted
    # (credentialSecret false): a throw-away folder, one-time secrets.
    (user / "settings.js").write_text("module.exports = {credentialSecret: false};\n")
    mqtt_user, mqtt_password = broker.client_credentials()
    influx_user, influx_password = influx.admin
    (user / "flows_cred.json").write_text(json.dumps({
        "b1": {"user": mqtt_user, "password": mqtt_password},
        "db1": {"username": influx_user, "password": influx_password}}))
    log = work / "nodered.log"
    process = subprocess.Popen(["node", str(red), "--userDir", str(user), "--port",
                                str(free_port()), str(flows)],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while b"Connected to broker" not in log.read_bytes():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit("Node-RED did not connect:\n" + log.read_text()[-2000:])
        time.sleep(0.2)
    return process


def wait_count(influx: InfluxDB, total: int, process: subprocess.Popen[bytes]) -> float:
    """Wait until InfluxDB holds ``total`` climate points, or the count stops growing.

    Node-RED acknowledges on receipt, so a reading it fails to write is gone:
    after 20 s without a new point the wait ends (the caller counts what is
    missing). Returns the peak RSS of ``process``.
    """
    peak_rss = 0.0
    last_count, last_change = -1, time.monotonic()
    while (count := _count(influx)) < total:
        peak_rss = max(peak_rss, rss_mb(process.pid))
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > 20:
            print(f"Node-RED stored {count} of {total} and nothing more for 20 s")
            break
        time.sleep(0.25)
    return peak_rss


def run_nodered(args: argparse.Namespace, per_node: int) -> tuple[float, float, float]:
    """Readings/s, CPU us per reading, RSS MB of the Node-RED flow on fresh services."""
    total = per_node * NODES
    with tempfile.TemporaryDirectory(prefix="nodered-bench-") as tmp:
        work = Path(tmp)
        broker, influx = start_services(work)
        try:
            process = start_nodered(args, broker, influx, work)
            cpu0 = cpu_s(process.pid)
            start = publish_burst(broker, per_node, work, "red")
            peak_rss = wait_count(influx, total, process)
            elapsed = time.monotonic() - start
            stored = _count(influx)
            cpu = cpu_s(process.pid) - cpu0
            process.terminate()
            process.wait(30)
        finally:
            broker.stop()
            influx.stop()
    return stored / elapsed, cpu / stored * 1e6, peak_rss


def _create_database(influx: InfluxDB, name: str) -> None:
    import urllib.parse
    import urllib.request
    data = urllib.parse.urlencode({"q": f"CREATE DATABASE {name}"}).encode()
    urllib.request.urlopen(influx_request(f"{influx.url}/query", data=data), timeout=10).read()


def compare(args: argparse.Namespace) -> None:
    """Mosquitto's pub->sub, the ingest and the Node-RED flow, one after another."""
    per_node = args.messages // NODES
    red_rate, red_cpu, red_rss = run_nodered(args, per_node)
    print(f"Node-RED mqtt in -> join -> influxdb batch: {red_rate:10,.0f} readings/s, "
          f"CPU {red_cpu:.1f} us/reading, peak RSS {red_rss:.0f} MB (acks on receipt)")
    rate, cpu, base_rate = throughput(args)
    print(f"same run: ingest = {rate / base_rate:.2f} x Mosquitto's pub->sub, "
          f"{rate / red_rate:.2f} x Node-RED's rate; CPU per reading {cpu:.1f} us = "
          f"{cpu / red_cpu:.2f} x Node-RED's")


def _count(influx: InfluxDB) -> int:
    import urllib.parse
    import urllib.request
    q = urllib.parse.urlencode({"db": "bench", "q": "SELECT count(temperature_c) FROM climate"})
    with urllib.request.urlopen(influx_request(f"{influx.url}/query?{q}"),
                                timeout=30) as response:
        body = json.load(response)
    try:
        return int(body["results"][0]["series"][0]["values"][0][1])
    except (KeyError, IndexError):
        return 0


def publish_paced(broker: Mosquitto, rate: float, seconds: float,
                  every_10_s: Callable[[float], None] = lambda elapsed: None,
                  ) -> tuple[mqtt.Client, dict[tuple[str, int], float], int]:
    """Publish at a steady rate from one paho publisher (QoS 1) on the 20 node topics.

    Returns the publisher (still running: stop it when done), when each
    (node, seq) was sent, and how many readings.
    """
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5)
    pub.username_pw_set(*broker.client_credentials())
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    sent_at: dict[tuple[str, int], float] = {}
    interval = 1.0 / rate
    total = int(rate * seconds) // NODES * NODES
    start = time.monotonic()
    next_sample = start
    last_ts: dict[str, float] = {}
    for i in range(total):
        target = start + i * interval
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)
        node, seq = f"n{i % NODES}", i // NODES + 1
        # Payload times have millisecond resolution: when the publisher
        # catches up in a burst, keep a node's readings apart or InfluxDB
        # would store two at one time as one point.
        ts = last_ts[node] = max(round(time.time(), 3), last_ts.get(node, 0.0) + 0.001)
        sent_at[(node, seq)] = time.monotonic()
        pub.publish(f"secadero/v1/{YARD}/{node}/telemetry", payload(seq, ts), qos=1)
        if time.monotonic() >= next_sample:
            every_10_s(time.monotonic() - start)
            next_sample += 10.0
    return pub, sent_at, total


def equal_load(args: argparse.Namespace) -> None:
    """CPU per reading of Node-RED and of the ingest at the same steady rate, same run."""
    results = {}
    for who in ("Node-RED", "ingest"):
        with tempfile.TemporaryDirectory(prefix="equal-load-") as tmp:
            work = Path(tmp)
            broker, influx = start_services(work)
            process: subprocess.Popen[bytes] | None = None
            try:
                if who == "Node-RED":
                    process = start_nodered(args, broker, influx, work)
                else:
                    process, _ = start_server(work, broker, influx)
                    watcher = AckWatcher(broker)
                cpu0 = cpu_s(process.pid)
                pub, _, total = publish_paced(broker, args.rate, args.seconds)
                if who == "Node-RED":
                    wait_count(influx, total, process)
                else:
                    watcher.wait_all(total // NODES, [f"n{n}" for n in range(NODES)], 120)
                    watcher.close()
                cpu = cpu_s(process.pid) - cpu0
                pub.loop_stop()
                stored = _count(influx)
            finally:
                if process is not None:
                    process.terminate()
                    process.wait(30)
                broker.stop()
                influx.stop()
        results[who] = cpu / stored * 1e6
        print(f"{who:8s} at {args.rate:,.0f} readings/s for {args.seconds:g} s: "
              f"{results[who]:.1f} us CPU per stored reading ({stored} of {total} stored)")
    print(f"same run: ingest CPU per reading = {results['ingest'] / results['Node-RED']:.2f} x "
          "Node-RED's")


def paced(args: argparse.Namespace, *, soak: bool) -> None:
    """Publish at a steady rate from one paho publisher; latency to ack, RSS over time."""
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        broker, influx = start_services(work)
        try:
            server, _ = start_server(work, broker, influx)
            watcher = AckWatcher(broker)
            rss_samples: list[tuple[float, float]] = []
            cpu0 = cpu_s(server.pid)
            start = time.monotonic()
            pub, sent_at, total = publish_paced(
                broker, args.rate, args.seconds,
                every_10_s=lambda elapsed: rss_samples.append((elapsed, rss_mb(server.pid))))
            last = total // NODES
            watcher.wait_all(last, [f"n{n}" for n in range(NODES)], 120)
            cpu = cpu_s(server.pid) - cpu0
            rss_samples.append((time.monotonic() - start, rss_mb(server.pid)))
            # Latency of each message: first ack covering it minus its publish time.
            acks: dict[str, list[tuple[int, float]]] = {}
            for (node, seq), at in watcher.first_seen.items():
                acks.setdefault(node, []).append((seq, at))
            latencies = []
            for node, entries in acks.items():
                entries.sort()
                j = 0
                for seq in range(1, last + 1):
                    while j < len(entries) and entries[j][0] < seq:
                        j += 1
                    if j < len(entries) and (node, seq) in sent_at:
                        latencies.append(entries[j][1] - sent_at[(node, seq)])
            latencies.sort()
            pub.loop_stop()
            watcher.close()
            server.terminate()
            server.wait(30)
        finally:
            broker.stop()
            influx.stop()
    print(f"rate {args.rate}/s for {args.seconds} s: {total} readings")
    if latencies:
        q = statistics.quantiles(latencies, n=100)
        print(f"publish -> stored+acked latency: p50 {q[49]*1000:.0f} ms, "
              f"p99 {q[98]*1000:.0f} ms, max {latencies[-1]*1000:.0f} ms ({len(latencies)})")
    print(f"server CPU per reading: {cpu / total * 1e6:.1f} us")
    print("server RSS (s, MB): " + ", ".join(f"{t:.0f}:{r:.1f}" for t, r in rss_samples))
    if soak:
        print(f"RSS start {rss_samples[0][1]:.1f} MB, end {rss_samples[-1][1]:.1f} MB")


def _on_sigterm(signum: int, frame: object) -> None:
    # `timeout` sends SIGTERM: unwind so the finally blocks stop our services.
    raise SystemExit(f"stopped by signal {signum}")


def main() -> None:
    import signal
    signal.signal(signal.SIGTERM, _on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--messages", type=int, default=100_000)
    t.add_argument("--processes", type=int, default=1)
    t.add_argument("--profile", metavar="FILE", help="py-spy raw profile of server 0")
    c = sub.add_parser("compare", help="the Node-RED flow, then the throughput run")
    c.add_argument("--messages", type=int, default=100_000)
    c.add_argument("--processes", type=int, default=1)
    c.add_argument("--profile", help=argparse.SUPPRESS)
    c.add_argument("--nodered-dir", default="/tmp/secadero-nodered",
                   help="where npm installs Node-RED (kept between runs)")
    d = sub.add_parser("drain")
    d.add_argument("--messages", type=int, default=100_000)
    d.add_argument("--processes", type=int, default=1)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=float, default=1000)
    lat.add_argument("--seconds", type=float, default=30)
    e = sub.add_parser("equal-load", help="CPU per reading: Node-RED and the ingest at one rate")
    e.add_argument("--rate", type=float, default=5000)
    e.add_argument("--seconds", type=float, default=30)
    e.add_argument("--nodered-dir", default="/tmp/secadero-nodered",
                   help="where npm installs Node-RED (kept between runs)")
    s = sub.add_parser("soak")
    s.add_argument("--rate", type=float, default=2000)
    s.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    if args.what == "throughput":
        throughput(args)
    elif args.what == "compare":
        compare(args)
    elif args.what == "drain":
        drain(args)
    elif args.what == "equal-load":
        equal_load(args)
    else:
        paced(args, soak=args.what == "soak")


if __name__ == "__main__":
    main()
