"""Who may say what on the real Mosquitto 2.0.11, with the users and ACL that
``secadero nodes`` writes (through the session broker's ``add_node``, the same code).

A denied PUBLISH is dropped silently by Mosquitto at QoS 0 and, with MQTT 3.1.1,
answered with a normal PUBACK at QoS 1; with MQTT 5 the PUBACK carries 0x87 "Not
authorized". These clients speak MQTT 5 and assert that reason code, and a
watcher with every right (the harness) proves nothing of it reached any subscriber:
each check ends with an allowed message as a fence (one publisher, one subscriber:
Mosquitto delivers in order), so "nothing else arrived" is known without waiting.
"""

from __future__ import annotations

import queue
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from secadero.devservices import READONLY_USER, SERVER_USER, Mosquitto

pytestmark = pytest.mark.integration

WAIT_S = 10.0
OK = "Success"  # with a subscriber; Mosquitto answers 0x10 "No matching subscribers" without
DENIED = "Not authorized"


class Session:
    """One MQTT 5 client: connect's reason, each PUBACK's and SUBACK's reasons, messages."""

    def __init__(self, broker: Mosquitto, credentials: tuple[str, str] | None,
                 client_id: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        if credentials:
            self.client.username_pw_set(*credentials)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_reason: str | None = None
        self._acks: dict[int, str] = {}
        self._subacks: dict[int, list[str]] = {}
        self._done = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.reconnect_delay_set(60, 120)  # a refused client must not come back
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.connected.wait(WAIT_S), "no CONNACK"

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connect_reason = str(reason)
        self.connected.set()

    def _on_publish(self, c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        with self._done:
            self._acks[mid] = str(reason)
            self._done.notify_all()

    def _on_subscribe(self, c: Any, u: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._done:
            self._subacks[mid] = [str(r) for r in reasons]
            self._done.notify_all()

    def publish(self, topic: str, payload: bytes = b"{}", *, retain: bool = False) -> str:
        """QoS 1; the PUBACK's reason."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._done:
            assert self._done.wait_for(lambda: info.mid in self._acks, WAIT_S), topic
            return self._acks.pop(info.mid)

    def subscribe(self, *filters: str) -> list[str]:
        _, mid = self.client.subscribe([(f, 1) for f in filters])
        with self._done:
            assert self._done.wait_for(lambda: mid in self._subacks, WAIT_S)
            return self._subacks.pop(mid)

    def received_until(self, fence: str, *, about: str | None = None) -> list[str]:
        """The topics received up to and including ``fence``; with ``about``, only those
        that contain it (the broker is shared: other tests' retained messages and late
        publishes match wide filters too)."""
        topics = []
        while True:
            topic, _ = self.messages.get(timeout=WAIT_S)
            if about is None or about in topic:
                topics.append(topic)
            if topic == fence:
                return topics

    def received_all(self, expected: list[str], *, about: str) -> list[str]:
        """The topics containing ``about`` received until each of ``expected`` came (in any
        order: a ``$share`` subscription and a plain one are delivered on their own)."""
        topics: list[str] = []
        while not set(expected) <= set(topics):
            topic, _ = self.messages.get(timeout=WAIT_S)
            if about in topic:
                topics.append(topic)
        return topics

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    opened: list[Session] = []
    yield opened
    for session in opened:
        session.close()


@pytest.fixture
def yards(unique_name: str) -> tuple[str, str]:
    """Two yards of this test's own (ids of at most 32 characters), both containing
    ``unique_name`` cut to 28 characters (``base``)."""
    return f"{base(unique_name)}-a", f"{base(unique_name)}-b"


def base(unique_name: str) -> str:
    return unique_name[:28].rstrip("-")


def family(yard: str) -> str:
    """What both of a test's yards contain (``yards``): its topics, and no other test's."""
    return yard[:-2]


def open_session(sessions: list[Session], broker: Mosquitto,
                 credentials: tuple[str, str] | None, client_id: str) -> Session:
    session = Session(broker, credentials, client_id)
    sessions.append(session)
    return session


def test_anonymous_and_wrong_passwords_are_refused(mosquitto: Mosquitto, yards: tuple[str, str],
                                                    sessions: list[Session]) -> None:
    yard, _ = yards
    username, secret = mosquitto.add_node(yard, "n1")
    assert open_session(sessions, mosquitto, None, f"{yard}-anon").connect_reason == DENIED
    # Mosquitto 2.0.11 answers a wrong password with 0x87 too, not 0x86.
    assert open_session(sessions, mosquitto, (username, secret[:-1] + "x"),
                        f"{yard}-wrong").connect_reason == DENIED
    assert open_session(sessions, mosquitto, ("nobody", secret),
                        f"{yard}-nobody").connect_reason == DENIED
    assert open_session(sessions, mosquitto, (username, secret),
                        f"{yard}-right").connect_reason == OK


def test_a_node_publishes_only_its_own_telemetry_event_and_status(
        mosquitto: Mosquitto, yards: tuple[str, str], sessions: list[Session]) -> None:
    yard, other_yard = yards
    node = open_session(sessions, mosquitto, mosquitto.add_node(yard, "n1"), f"{yard}-n1")
    mosquitto.add_node(yard, "n2")
    mosquitto.add_node(other_yard, "n1")
    watcher = open_session(sessions, mosquitto, mosquitto.client_credentials(), f"{yard}-w")
    assert watcher.subscribe("#") == ["Granted QoS 1"]
    denied = [f"secadero/v1/{yard}/n2/telemetry", f"secadero/v1/{yard}/n2/event",
              f"secadero/v1/{yard}/n2/status", f"secadero/v1/{other_yard}/n1/telemetry",
              f"secadero/v1/{yard}/n1/ack", f"secadero/v1/{yard}/n2/ack",
              f"secadero/v1/{yard}/alert", f"secadero/v1/{other_yard}/alert",
              f"secadero-ingest/v1/{yard}/done", f"secadero/v1/{yard}/n1/telemetry/x",
              f"other/{yard}"]
    assert [node.publish(topic) for topic in denied] == [DENIED] * len(denied)
    allowed = [f"secadero/v1/{yard}/n1/{kind}" for kind in ("event", "status", "telemetry")]
    assert [node.publish(topic) for topic in allowed] == [OK] * 3
    assert watcher.received_until(allowed[-1], about=family(yard)) == allowed


def test_a_node_reads_only_its_own_ack_and_its_yards_alert(
        mosquitto: Mosquitto, yards: tuple[str, str], sessions: list[Session]) -> None:
    """Mosquitto 2.0.11 grants every SUBSCRIBE (its ACL file is not checked at subscribe
    time); the read rights are checked on every message it would deliver."""
    yard, other_yard = yards
    node = open_session(sessions, mosquitto, mosquitto.add_node(yard, "n1"), f"{yard}-n1")
    assert node.subscribe("#", f"secadero/v1/{other_yard}/#", f"secadero/v1/{yard}/+/ack",
                          f"secadero/v1/{yard}/n1/ack", f"secadero/v1/{yard}/alert"
                          ) == ["Granted QoS 1"] * 5
    harness = open_session(sessions, mosquitto, mosquitto.client_credentials(), f"{yard}-h")
    for topic in (f"secadero/v1/{other_yard}/alert", f"secadero/v1/{other_yard}/n1/ack",
                  f"secadero/v1/{yard}/n2/ack", f"secadero/v1/{yard}/n2/telemetry",
                  f"secadero/v1/{yard}/n1/telemetry", f"secadero/v1/{yard}/n1/status",
                  f"secadero-ingest/v1/{yard}/done", f"other/{yard}"):
        assert harness.publish(topic) == OK
    mine = [f"secadero/v1/{yard}/n1/ack", f"secadero/v1/{yard}/alert"]
    for topic in mine:
        assert harness.publish(topic) == OK
    # A copy per matching filter (MQTT 5 allows it): the set of topics is what counts.
    # Whatever else the broker holds for `#` (other tests' retained messages) this node
    # may not read either, so nothing is filtered out here.
    assert set(node.received_until(mine[-1])) == set(mine)


def test_the_server_reads_every_node_and_writes_only_acks_alerts_and_its_group(
        mosquitto: Mosquitto, yards: tuple[str, str], sessions: list[Session]) -> None:
    yard, other_yard = yards
    server = open_session(sessions, mosquitto, mosquitto.credentials(SERVER_USER), f"{yard}-s")
    assert server.subscribe(f"$share/{yard}/secadero/v1/+/+/telemetry",
                            "secadero/v1/+/+/event", "secadero/v1/+/+/status",
                            "secadero/v1/+/alert", f"secadero-ingest/v1/{yard}/done"
                            ) == ["Granted QoS 1"] * 5
    nodes = [open_session(sessions, mosquitto, mosquitto.add_node(y, "n1"), f"{y}-n1")
             for y in (yard, other_yard)]
    expected = []
    for node, node_yard in zip(nodes, (yard, other_yard), strict=True):
        for kind in ("telemetry", "event", "status"):
            topic = f"secadero/v1/{node_yard}/n1/{kind}"
            assert node.publish(topic) == OK
            expected.append(topic)
    assert sorted(server.received_all(expected, about=family(yard))) == sorted(expected)
    # It acknowledges and alerts; it cannot speak as a node.
    node_side = open_session(sessions, mosquitto, mosquitto.client_credentials(), f"{yard}-w")
    node_side.subscribe(f"secadero/v1/{yard}/#")
    assert server.publish(f"secadero/v1/{yard}/n1/telemetry") == DENIED
    assert server.publish(f"secadero/v1/{yard}/n1/status") == DENIED
    assert server.publish(f"secadero/v1/{yard}/n1/ack") == OK
    assert server.publish(f"secadero/v1/{yard}/alert", retain=True) == OK
    assert node_side.received_until(f"secadero/v1/{yard}/alert") == [
        f"secadero/v1/{yard}/n1/ack", f"secadero/v1/{yard}/alert"]
    assert server.received_until(f"secadero/v1/{yard}/alert", about=family(yard)) == [
        f"secadero/v1/{yard}/alert"]
    assert server.publish(f"secadero-ingest/v1/{yard}/done") == OK
    assert server.publish(f"other/{yard}") == DENIED
    assert server.publish(f"secadero/v1/{yard}/alert", b"", retain=True) == OK  # tidy up


def test_the_read_only_user_reads_everything_and_writes_nothing(
        mosquitto: Mosquitto, yards: tuple[str, str], sessions: list[Session]) -> None:
    yard, _ = yards
    reader = open_session(sessions, mosquitto, mosquitto.credentials(READONLY_USER),
                          f"{yard}-r")
    reader.subscribe(f"secadero/v1/{yard}/#")
    for topic in (f"secadero/v1/{yard}/n1/telemetry", f"secadero/v1/{yard}/n1/ack",
                  f"secadero/v1/{yard}/alert", f"secadero-ingest/v1/{yard}/done",
                  f"other/{yard}"):
        assert reader.publish(topic) == DENIED
    node = open_session(sessions, mosquitto, mosquitto.add_node(yard, "n1"), f"{yard}-n1")
    assert node.publish(f"secadero/v1/{yard}/n1/telemetry") == OK
    assert reader.received_until(f"secadero/v1/{yard}/n1/telemetry") == [
        f"secadero/v1/{yard}/n1/telemetry"]


def test_a_removed_node_is_cut_off_at_the_reload_and_refused_after(
        mosquitto: Mosquitto, yards: tuple[str, str], sessions: list[Session]) -> None:
    """Mosquitto 2.0.11 checks its connected clients again at SIGHUP: the removed node's
    open connection is closed; everyone else's stays, sessions and all."""
    yard, _ = yards
    credentials = mosquitto.add_node(yard, "n1")
    node = open_session(sessions, mosquitto, credentials, f"{yard}-n1")
    server = open_session(sessions, mosquitto, mosquitto.credentials(SERVER_USER), f"{yard}-s")
    server.subscribe(f"secadero/v1/{yard}/+/telemetry")
    other = open_session(sessions, mosquitto, mosquitto.add_node(yard, "n2"), f"{yard}-n2")
    mosquitto.remove_user(credentials[0])
    assert node.disconnected.wait(WAIT_S)
    assert open_session(sessions, mosquitto, credentials,
                        f"{yard}-n1-again").connect_reason == DENIED
    assert not server.disconnected.is_set() and not other.disconnected.is_set()
    assert other.publish(f"secadero/v1/{yard}/n2/telemetry") == OK
    assert server.received_until(f"secadero/v1/{yard}/n2/telemetry") == [
        f"secadero/v1/{yard}/n2/telemetry"]


def test_a_rotated_secret_replaces_the_old_one(mosquitto: Mosquitto, yards: tuple[str, str],
                                               sessions: list[Session]) -> None:
    yard, _ = yards
    username, old = mosquitto.add_node(yard, "n1")
    node = open_session(sessions, mosquitto, (username, old), f"{yard}-n1")
    _, new = mosquitto.rotate_user(username)
    # The connection made with the old secret is closed at the reload, as for a removal.
    assert node.disconnected.wait(WAIT_S)
    assert open_session(sessions, mosquitto, (username, old), f"{yard}-old").connect_reason \
        == DENIED
    assert open_session(sessions, mosquitto, (username, new), f"{yard}-new").connect_reason \
        == OK


def test_the_nodes_command_changes_the_running_broker(
        mosquitto: Mosquitto, yards: tuple[str, str], sessions: list[Session],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`secadero nodes add` / `remove` as the technician runs them, on the broker's files,
    with its PID: the printed settings log in, the removal cuts the node off."""
    from secadero.cli import main

    yard, _ = yards
    secret_file = tmp_path / "secret"
    common = ["--users-dir", str(mosquitto.users_dir), "--pid", str(mosquitto.pid)]
    mark = mosquitto.log_mark()
    assert main(["nodes", "add", yard, "n1", *common, "--secret-file", str(secret_file)]) == 0
    mosquitto.wait_reloaded(mark)
    block = tomllib.loads(capsys.readouterr().out.split("(edge/node.example.toml):\n", 1)[1])
    credentials = (block["mqtt"]["username"], secret_file.read_text().strip())
    node = open_session(sessions, mosquitto, credentials, f"{yard}-n1")
    assert node.connect_reason == OK
    watcher = open_session(sessions, mosquitto, mosquitto.client_credentials(), f"{yard}-w")
    watcher.subscribe(f"secadero/v1/{yard}/#")
    assert node.publish(f"secadero/v1/{yard}/n2/telemetry") == DENIED
    assert node.publish(f"secadero/v1/{yard}/n1/telemetry") == OK
    assert watcher.received_until(f"secadero/v1/{yard}/n1/telemetry") == [
        f"secadero/v1/{yard}/n1/telemetry"]
    mark = mosquitto.log_mark()
    assert main(["nodes", "remove", yard, "n1", *common]) == 0
    mosquitto.wait_reloaded(mark)
    assert node.disconnected.wait(WAIT_S)
    assert open_session(sessions, mosquitto, credentials, f"{yard}-n1-again").connect_reason \
        == DENIED
