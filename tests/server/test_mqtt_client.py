"""The ingest's MQTT client splits the byte stream into the same messages paho would.

Packets are built here byte by byte from the MQTT 5 specification and fed
through a stand-in socket in chunks of every size, so a packet cut anywhere
(in its length bytes, its topic, its payload) is covered; the last test
runs the client against the real Mosquitto.
"""

from __future__ import annotations

import random
import struct
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from secadero.server.mqtt_client import FastReadClient


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 1,
            properties: bytes = b"") -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    body += varint(len(properties)) + properties + payload
    return bytes([0x30 | qos << 1]) + varint(len(body)) + body


class ChunkSocket:
    """Hands out a byte stream in chunks of the given sizes, then 'would block'."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.pos = data, sizes, 0

    def recv(self, bufsize: int) -> bytes:
        if self.pos >= len(self.data):
            raise BlockingIOError
        size = min(self.sizes[self.pos % len(self.sizes)], bufsize)
        chunk = self.data[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


def make_client() -> tuple[FastReadClient, list[tuple[str, bytes, int, int, str]]]:
    received: list[tuple[str, bytes, int, int, str]] = []
    client = FastReadClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5,
                            manual_ack=True)
    client.on_publish_received = lambda t, p, m, q: received.append((t, p, m, q, "fast"))
    client.on_message = lambda c, u, msg: received.append(
        (msg.topic, msg.payload, msg.mid, msg.qos, "paho"))
    return client, received


def feed(client: FastReadClient, data: bytes, sizes: list[int]) -> None:
    client._sock = ChunkSocket(data, sizes)  # type: ignore[assignment]
    while client._sock.pos < len(data):  # type: ignore[union-attr]
        assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


def user_property() -> bytes:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = ("k", "v")
    return properties.pack()[1:]  # pack() puts the length first; publish() adds it


STREAM = [
    publish(b"secadero/v1/y/n1/telemetry", b'{"ts":1,"seq":1}', mid=1),
    publish(b"secadero/v1/y/n2/event", b"x" * 300, mid=65535),  # two length bytes
    publish(b"secadero/v1/y/n3/status", b"", qos=0),
    b"\xd0\x00",  # PINGRESP: paho's handler
    publish(b"secadero/v1/y/n4/telemetry", b"with properties", mid=7,
            properties=user_property()),
    publish("secadero/v1/y/ñandú/status".encode(), b"{}", mid=8),
    publish(b"secadero/v1/y/n5/telemetry", b"z" * 20_000, mid=9),  # three length bytes
]
EXPECTED = [
    ("secadero/v1/y/n1/telemetry", b'{"ts":1,"seq":1}', 1, 1, "fast"),
    ("secadero/v1/y/n2/event", b"x" * 300, 65535, 1, "fast"),
    ("secadero/v1/y/n3/status", b"", 0, 0, "fast"),
    ("secadero/v1/y/n4/telemetry", b"with properties", 7, 1, "paho"),
    ("secadero/v1/y/ñandú/status", b"{}", 8, 1, "fast"),
    ("secadero/v1/y/n5/telemetry", b"z" * 20_000, 9, 1, "fast"),
]


@pytest.mark.parametrize("sizes", [[65536], [1], [2, 3, 5, 7], [17, 1, 300], [4096]],
                         ids=["whole", "byte-by-byte", "tiny", "odd", "4k"])
def test_every_message_arrives_once_in_order_however_the_stream_is_cut(sizes: list[int]) -> None:
    client, received = make_client()
    feed(client, b"".join(STREAM), sizes)
    assert received == EXPECTED
    assert client._pending == b""


def test_random_cuts_of_many_messages() -> None:
    rng = random.Random(7)
    packets, expected = [], []
    for i in range(2000):
        topic = f"secadero/v1/y/n{i % 13}/telemetry"
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 127, 128, 400])))
        packets.append(publish(topic.encode(), payload, mid=i % 65535 + 1))
        expected.append((topic, payload, i % 65535 + 1, 1, "fast"))
    client, received = make_client()
    feed(client, b"".join(packets), [rng.randrange(1, 5000) for _ in range(50)])
    assert received == expected


def test_the_same_fields_as_pahos_own_decoder() -> None:
    from paho.mqtt import _packet  # paho's decoder, the reference

    for packet in STREAM:
        if packet[0] & 0xF0 != 0x30:
            continue
        client, received = make_client()
        feed(client, packet, [65536])
        length_bytes = 1 + next(i for i, b in enumerate(packet[1:]) if not b & 0x80)
        ref = _packet.decode_publish(packet[0], bytearray(packet[1 + length_bytes:]),
                                     mqtt.MQTTv5)
        assert received[0][:4] == (ref.topic.decode(), bytes(ref.payload), ref.mid, ref.qos)


def test_a_malformed_length_drops_the_connection() -> None:
    client, received = make_client()
    disconnects: list[Any] = []
    client.on_disconnect = lambda *args: disconnects.append(args)
    client._sock = ChunkSocket(b"\x32\xff\xff\xff\xff\x01", [65536])  # type: ignore[assignment]
    assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert client._sock is None and received == [] and len(disconnects) == 1


def test_a_closed_connection_forgets_half_a_packet() -> None:
    client, received = make_client()
    first = publish(b"secadero/v1/y/n1/telemetry", b"payload", mid=1)
    client._sock = ChunkSocket(first[:10], [65536])  # type: ignore[assignment]
    client.loop_read()
    assert client._pending == first[:10]
    client._sock = ChunkSocket(b"", [1])  # type: ignore[assignment]
    client._sock.recv = lambda n: b""  # type: ignore[method-assign]  # the peer closed
    assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert client._pending == b"" and received == []


@pytest.mark.integration
def test_against_the_real_broker_with_acks(mosquitto: Any, unique_name: str) -> None:
    """Messages with and without properties arrive; batched PUBACKs keep the broker sending."""
    got: list[tuple[str, bytes, int, int]] = []
    done = threading.Event()
    total = 500

    def on_fast(topic: str, payload: bytes, mid: int, qos: int) -> None:
        got.append((topic, payload, mid, qos))
        if len(got) % 50 == 0:
            # The broker sends no more than its in-flight limit unacknowledged.
            client.ack_many([m for _, _, m, _ in got[-50:]])
        if len(got) == total:
            done.set()

    client = FastReadClient(CallbackAPIVersion.VERSION2, client_id=f"fast-{unique_name}",
                            protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_publish_received = on_fast
    client.on_message = lambda c, u, msg: on_fast(msg.topic, msg.payload, msg.mid, msg.qos)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe(f"secadero/v1/{unique_name}/+/telemetry",
                                                     qos=1)
    client.username_pw_set(*mosquitto.client_credentials())
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.username_pw_set(*mosquitto.client_credentials())
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    try:
        assert subscribed.wait(10)
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = ("source", "test")
        for i in range(total):
            publisher.publish(f"secadero/v1/{unique_name}/n{i % 5}/telemetry", f"{i}".encode(),
                              qos=1, properties=properties if i % 100 == 0 else None)
        assert done.wait(20), f"{len(got)} of {total} arrived"
        assert sorted(int(payload) for _, payload, _, _ in got) == list(range(total))
        assert {qos for *_, qos in got} == {1}
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        client.disconnect()
        client.loop_stop()


def test_paused_reading_leaves_the_bytes_in_the_socket() -> None:
    client, received = make_client()
    full = [True]
    client.pause_reading = lambda: full[0]
    data = b"".join(STREAM)
    client._sock = ChunkSocket(data, [65536])  # type: ignore[assignment]
    assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert client._sock.pos == 0 and received == []  # type: ignore[union-attr]
    full[0] = False
    feed(client, data, [65536])
    assert received == EXPECTED


# -- the private surface of paho this client depends on


def test_every_private_name_it_uses_exists_in_the_installed_paho() -> None:
    import inspect

    from secadero.server.mqtt_client import PAHO_PRIVATE_SURFACE

    instance = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="surface",
                           protocol=mqtt.MQTTv5)
    wrong: list[str] = []
    for name, (kind, parameters) in PAHO_PRIVATE_SURFACE.items():
        if kind == "method":
            function = getattr(mqtt.Client, name, None)
            if not inspect.isfunction(function):
                wrong.append(f"{name}: not a method")
                continue
            found = tuple(inspect.signature(function).parameters)[1:]
            if found != parameters:
                wrong.append(f"{name}{found}: expected {parameters}")
        elif not hasattr(instance, name) or inspect.ismethod(getattr(instance, name)):
            wrong.append(f"{name}: not an attribute of a fresh Client")
    assert wrong == []


def test_the_in_packet_dict_has_the_shape_it_rebuilds() -> None:
    from secadero.server.mqtt_client import _fresh_in_packet

    instance = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    assert set(instance._in_packet) == set(_fresh_in_packet())


def test_every_private_name_in_the_module_is_declared() -> None:
    """A private paho name used without being listed in PAHO_PRIVATE_SURFACE fails here."""
    import ast
    import inspect

    from secadero.server import mqtt_client

    tree = ast.parse(inspect.getsource(mqtt_client))
    own = {node.name for node in ast.walk(tree)
           if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            own.add(node.target.id)  # class attributes
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for element in ast.walk(target):
                    if isinstance(element, ast.Attribute) and isinstance(element.value, ast.Name) \
                            and element.value.id == "self" and element.attr in {
                                "_handler_errors", "_handler_error_logged_at",
                                "_handler_errors_not_logged", "_network_thread",
                                "_pending"}:
                        own.add(element.attr)
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and node.attr.startswith("_") and not node.attr.startswith("__")}
    assert used - own - set(mqtt_client.PAHO_PRIVATE_SURFACE) == set()


def test_the_pin_admits_only_the_installed_paho() -> None:
    import importlib.metadata
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads(
        (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    [pin] = [d for d in pyproject["project"]["dependencies"] if d.startswith("paho-mqtt")]
    assert pin == f"paho-mqtt=={importlib.metadata.version('paho-mqtt')}"


def test_a_fast_read_advances_the_keepalive_clock() -> None:
    """paho pings (and later gives up on) a broker it has not heard from for a keepalive."""
    client, received = make_client()
    client._last_bytes_received = 0.0
    before = mqtt.time_func()
    feed(client, STREAM[0], [65536])
    assert received and client._last_bytes_received >= before


def test_it_refuses_to_run_without_manual_ack() -> None:
    with pytest.raises(ValueError, match="manual_ack=True"):
        FastReadClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5)


# -- handler errors


def test_a_raising_handler_is_contained_counted_and_the_stream_goes_on() -> None:
    client, received = make_client()
    errors: list[tuple[str, str]] = []
    client.on_handler_error = lambda topic, exc: errors.append((topic, str(exc)))

    def handler(topic: str, payload: bytes, mid: int, qos: int) -> None:
        if payload == b"x" * 300:
            raise RuntimeError("a bug")
        received.append((topic, payload, mid, qos, "fast"))

    client.on_publish_received = handler
    feed(client, b"".join(STREAM), [65536])
    assert received == [EXPECTED[0], *EXPECTED[2:]]
    assert client.handler_errors == 1
    assert errors == [("secadero/v1/y/n2/event", "a bug")]


def test_a_raising_on_message_is_contained_too() -> None:
    client, received = make_client()

    def on_message(c: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        raise ValueError("bad")

    client.on_message = on_message
    feed(client, b"".join(STREAM), [65536])
    assert [r[4] for r in received] == ["fast"] * 5  # the one paho decodes raised
    assert client.handler_errors == 1


@pytest.mark.integration
def test_a_message_whose_handler_raised_is_not_acked_and_comes_again(
        mosquitto: Any, unique_name: str) -> None:
    """Real broker, a persistent session: the acked messages are PUBACKed (never re-sent),
    the one whose handler raised is re-sent when the session resumes, and the network
    thread survived the error in between."""
    topic = f"secadero/v1/{unique_name}/n1/telemetry"
    got: list[tuple[bytes, int]] = []
    arrived = threading.Condition()

    def connect(attempt: int) -> FastReadClient:
        """The subscriber's attempt-th connection of one session (a process restarted)."""
        client = FastReadClient(CallbackAPIVersion.VERSION2,
                                client_id=f"redeliver-{unique_name}", protocol=mqtt.MQTTv5,
                                manual_ack=True)

        def on_fast(topic_: str, payload: bytes, mid: int, qos: int) -> None:
            if payload == b"boom" and attempt == 1:
                with arrived:
                    got.append((payload, attempt))
                raise RuntimeError("not this time")
            # Queued before the DISCONNECT, so sent before it.
            client.ack_many([mid])
            with arrived:
                got.append((payload, attempt))
                arrived.notify_all()

        subscribed = threading.Event()
        client.on_publish_received = on_fast
        client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *args: subscribed.set()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 300
        client.username_pw_set(*mosquitto.client_credentials())
        client.connect_async("127.0.0.1", mosquitto.port, clean_start=attempt == 1,
                             properties=properties)
        client.start_network_thread(f"mqtt-redeliver-{attempt}")
        assert subscribed.wait(10)
        return client

    def wait_for(payload: bytes) -> None:
        with arrived:
            assert arrived.wait_for(lambda: any(p == payload for p, _ in got), 10), got

    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.username_pw_set(*mosquitto.client_credentials())
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    clients = [connect(1)]
    try:
        for payload in (b"one", b"boom", b"two"):
            publisher.publish(topic, payload, qos=1).wait_for_publish(10)
        wait_for(b"two")
        assert clients[0].handler_errors == 1
        assert clients[0].network_thread is not None and clients[0].network_thread.is_alive()
        clients[0].disconnect()  # the session stays on the broker (expiry 300 s)
        clients[0].stop_network_thread()
        clients.append(connect(2))
        publisher.publish(topic, b"marker", qos=1).wait_for_publish(10)
        wait_for(b"marker")
        with arrived:
            assert got == [(b"one", 1), (b"boom", 1), (b"two", 1), (b"boom", 2), (b"marker", 2)]
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        for client in clients:
            client.disconnect()
            client.stop_network_thread()


# -- the network thread, watched by /healthz


@pytest.mark.integration
def test_a_dead_network_thread_makes_health_report_a_problem(
        mosquitto: Any, unique_name: str, caplog: pytest.LogCaptureFixture) -> None:
    from secadero.server.metrics import Health

    health = Health()
    connected = threading.Event()
    client = FastReadClient(CallbackAPIVersion.VERSION2, client_id=f"dies-{unique_name}",
                            protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_connect = lambda *args: connected.set()
    client.username_pw_set(*mosquitto.client_credentials())
    client.connect_async("127.0.0.1", mosquitto.port)
    health.watch_thread("MQTT network (test)", client.start_network_thread("mqtt-dies"))
    try:
        assert connected.wait(10)
        assert health.problems() == []

        def on_publish(*args: Any) -> None:
            raise RuntimeError("a bug in a callback paho does not contain")

        client.on_publish = on_publish
        client.publish(f"secadero/v1/{unique_name}/n1/status", b"{}", qos=1)
        assert client.network_thread is not None
        client.network_thread.join(10)
        assert not client.network_thread.is_alive()
        assert health.problems() == ["the MQTT network (test) thread has stopped; see the log"]
        assert "MQTT network thread mqtt-dies stopped by an unexpected error" in caplog.text
    finally:
        client.disconnect()
        client.stop_network_thread()


@pytest.mark.integration
def test_stop_network_thread_ends_it_quietly(mosquitto: Any, unique_name: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    connected = threading.Event()
    client = FastReadClient(CallbackAPIVersion.VERSION2, client_id=f"stops-{unique_name}",
                            protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_connect = lambda *args: connected.set()
    client.username_pw_set(*mosquitto.client_credentials())
    client.connect_async("127.0.0.1", mosquitto.port)
    thread = client.start_network_thread("mqtt-stops")
    assert thread.name == "mqtt-stops" and client.network_thread is thread
    assert connected.wait(10)
    client.disconnect()
    client.stop_network_thread()
    assert not thread.is_alive()
    assert "mqtt-stops" not in caplog.text
