"""The ingest's per-message cost on its MQTT thread, without a broker or InfluxDB.

Run by hand: ``.venv/bin/python bench/ingest_receive.py [--messages 60000]``.

Feeds the ingest's paho client a stream of MQTT 5 PUBLISH packets (QoS 1,
as Mosquitto sends them: ~150-byte telemetry on 20 node topics) through a
stand-in socket that hands out the bytes in 64 KiB reads, and times
``loop_read`` until every message went through the receive stage (``server/ingest/receive.py``)
(receive, decode + validate, points, line protocol, queue). The writer
thread is not started, so this is the MQTT thread's share of the cost per
reading; ``ingest_bench.py`` measures the whole process against the real
services.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from secadero.server.ingest import Ingest
from secadero.server.mqtt_client import FastReadClient, fast_read_client
from secadero.settings import MqttSettings, load_server_settings

NODES = 20


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, mid: int, payload: bytes) -> bytes:
    """An MQTT 5 PUBLISH, QoS 1, no properties."""
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name + struct.pack("!H", mid) + b"\x00" + payload
    return bytes([0x32]) + varint(len(body)) + body


class StreamSocket:
    """Just enough of a socket for paho's reads: the stream, 64 KiB at a time."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self.pos >= len(self.data):
            raise BlockingIOError
        chunk = bytes(self.data[self.pos:self.pos + min(bufsize, 65536)])
        self.pos += len(chunk)
        return chunk


def stream(messages: int, now: float) -> bytes:
    packets = []
    for i in range(messages):
        node = f"n{i % NODES}"
        seq = i // NODES + 1
        body = json.dumps({"ts": round(now - 60 + i / messages, 3), "seq": seq,
                           "temperature_c": 24.5 + (seq % 50) / 10, "humidity_pct": 71.2,
                           "rain": False, "rain_mm": 0.0, "trays": {"t1": "extended"}},
                          separators=(",", ":")).encode()
        packets.append(publish_packet(f"secadero/v1/bench/{node}/telemetry", i % 65535 + 1, body))
    return b"".join(packets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # At most 65,535: the queue bound (the MQTT 5 Receive Maximum), since the
    # writer is not started here and the receive path pauses on a full queue.
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "server.toml"
        # The writer is not started: the queue must hold every message.
        config.write_text('[mqtt]\nclient_id = "bench"\n[ingest]\nhttp_port = 0\n'
                          f'queue_max = {min(args.messages, 65535)}\n'
                          f'state_file = "{tmp}/state.json"\n')
        clients: list[FastReadClient] = []

        def keep_client(settings: MqttSettings) -> FastReadClient:
            clients.append(fast_read_client(settings))
            return clients[0]

        ingest = Ingest(load_server_settings(config), client_factory=keep_client)
        [client] = clients
        data = stream(args.messages, time.time())
        client._sock = StreamSocket(data)  # type: ignore[assignment]
        profiler = cProfile.Profile() if args.profile else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        while client._sock.pos < len(data):  # type: ignore[union-attr]
            client.loop_read()
        if profiler:
            profiler.disable()
        cpu = time.process_time() - started
        client._sock = None
        received = ingest.queue_depth
        assert received == args.messages, f"{received} of {args.messages} messages queued"
        print(f"{args.messages} messages, {cpu / args.messages * 1e6:.1f} us CPU per message "
              "on the MQTT thread (receive, decode, points, line protocol, queue)")
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
