"""The demo yard: what it prints, and (integration) the whole yard as the README runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from secadero.contract import Ack, Alert, Envelope, Event, Telemetry
from secadero.yard import StoredReadingPrinter, describe

TS = 1_780_000_000.0  # 2026-05-28 15:26:40 in Lima


def test_describe_a_reading() -> None:
    reading = Telemetry(ts=TS, seq=12, temperature_c=31.44, humidity_pct=57.93, rain=False,
                        trays={"t2": "retracted", "t1": "extended"})
    assert describe("norte-1", reading) == (
        "15:26:40  norte-1   #12      31.4 C  57.9 %  dry   t1=extended t2=retracted")


def test_describe_a_failed_sensor_and_an_event() -> None:
    assert describe("sur-3", Telemetry(ts=TS, seq=3, rain=True)) == (
        "15:26:40  sur-3     #3         --      --   RAIN  ")
    assert describe("sur-3", Event(ts=TS, seq=4, type="tray_retracted", tray="t1")) == (
        "15:26:40  sur-3     #4      event: tray retracted t1")


def test_printer_prints_only_what_the_ack_covers_and_each_reading_once() -> None:
    lines: list[str] = []
    printer = StoredReadingPrinter(out=lines.append)

    def send(seq: int) -> None:
        printer.handle(Envelope("y", "n", "telemetry", Telemetry(ts=TS + seq, seq=seq)))

    send(1)
    send(2)
    send(3)
    printer.handle(Envelope("y", "n", "ack", Ack(seq=2)))
    assert [line.split()[2] for line in lines] == ["#1", "#2"]
    send(2)  # re-sent after a reconnect: already stored, not printed again
    printer.handle(Envelope("y", "n", "ack", Ack(seq=3)))
    assert [line.split()[2] for line in lines] == ["#1", "#2", "#3"]
    assert printer.stored == 3


def test_printer_shows_the_yards_alert() -> None:
    lines: list[str] = []
    printer = StoredReadingPrinter(out=lines.append)
    printer.handle(Envelope("y", None, "alert", Alert(state="clear")))  # retained, nothing new
    printer.handle(Envelope("y", None, "alert", Alert(
        state="raised", kind="rain_now", severity="critical",
        message="Lluvia en el tendal. Recoger bandejas.", since=TS)))
    printer.handle(Envelope("y", None, "alert", Alert(state="clear")))
    assert lines == [
        "          ALERT critical (rain_now): Lluvia en el tendal. Recoger bandejas.",
        "          alert cleared",
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_the_demo_yard_stores_readings_alerts_and_stops_everything_on_ctrl_c(
        tmp_path: Path) -> None:
    """``secadero yard --endless``: real broker, database, server and nodes, random showers.

    At 120x the simulated weather of node norte-1 (seed 1) brings its first
    shower after about 12 s, so the rain alert reaches the demo's phones.
    The demo starts with SIGINT ignored, as a script's ``./run-yard &`` starts it
    (and as a CI runner may): its Ctrl-C must stop it all the same.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "secadero.cli", "yard", "--endless", "--dir", str(tmp_path),
         "--nodes", "3", "--interval", "0.5", "--speed", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert process.stdout is not None
    output: list[str] = []
    stored_nodes: set[str] = set()
    warned = False
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and not (len(stored_nodes) == 3 and warned):
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            match = re.match(r"\d\d:\d\d:\d\d  (\S+)\s+#\d+", line)
            if match:
                stored_nodes.add(match.group(1))
            warned = warned or line.startswith("          to Rosa: LLUEVE en el tendal Chazuta")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.terminate()  # SIGTERM: the demo still stops what it started
            process.communicate(timeout=60)
            raise
    output.append(rest)
    text = "".join(output)
    assert stored_nodes == {"norte-1", "centro-2", "sur-3"}, text
    assert warned, text
    assert "ALERT critical (rain_now): LLUEVE en el tendal Chazuta" in text
    assert process.returncode == 0, text
    assert "Stopping" in text
    pids = [int(pid) for pid in re.findall(r"pid (\d+)", text)]
    assert len(pids) == 6, text  # broker, database, server, three nodes
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.integration
@pytest.mark.slow
def test_a_second_run_starts_without_the_nodes_last_offline_from_the_first(
        tmp_path: Path) -> None:
    """The demo stops its nodes after its server, so their "offline" waits on the broker
    for the next run (retained on their ``status`` topics, and queued in the server's
    persistent session), whose server starts before the nodes and would page the
    technician for nodes that are only starting. The next run's first step
    (``_forget_the_last_run``) must leave neither: checked on the broker's own
    persisted state, as the second run finds it."""
    import threading

    import paho.mqtt.client as mqtt

    from secadero import contract
    from secadero.devservices import SERVER_USER, Mosquitto
    from secadero.yard import SERVER_CLIENT_ID, YARD_ID, _forget_the_last_run

    # The first run: until both nodes' readings are stored (so both were connected),
    # then stopped as a person does, the server first.
    first = subprocess.Popen(
        [sys.executable, "-m", "secadero.cli", "yard", "--endless", "--dir", str(tmp_path),
         "--nodes", "2", "--interval", "0.5", "--speed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert first.stdout is not None
    stored: set[str] = set()
    deadline = time.monotonic() + 90
    try:
        for line in first.stdout:
            match = re.match(r"\d\d:\d\d:\d\d  (\S+)\s+#\d+", line)
            stored |= {match.group(1)} if match else set()
            if stored == {"norte-1", "centro-2"} or time.monotonic() > deadline:
                break
    finally:
        first.terminate()  # SIGTERM: the demo stops what it started
        first.communicate(timeout=60)
    assert first.returncode == 0 and stored == {"norte-1", "centro-2"}, stored

    def retained_statuses(broker: Mosquitto) -> dict[str, bytes]:
        """The retained ``status`` of the demo's nodes: what a new subscriber gets before a
        marker published after its subscription (retained ones are sent first)."""
        got: dict[str, bytes] = {}
        marker = contract.node_topic(YARD_ID, "zz-marker", "status")
        done = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-retained")
        client.username_pw_set(*broker.client_credentials())

        def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
            if message.topic == marker:
                done.set()
            else:
                got[message.topic] = message.payload

        client.on_message = on_message
        client.on_subscribe = lambda *_: client.publish(marker, b"", qos=1)
        client.on_connect = lambda *_: client.subscribe(
            contract.subscription("status", yard=YARD_ID), qos=1)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            assert done.wait(20), "the marker never came back"
        finally:
            client.disconnect()
            client.loop_stop()
        return got

    def server_session_present(broker: Mosquitto) -> bool:
        connected: list[bool] = []
        answered = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=SERVER_CLIENT_ID,
                             protocol=mqtt.MQTTv5)
        client.username_pw_set(*broker.credentials(SERVER_USER))

        def on_connect(_c: object, _u: object, flags: Any, *_: object) -> None:
            connected.append(bool(flags.session_present))
            answered.set()

        client.on_connect = on_connect
        client.connect("127.0.0.1", broker.port, clean_start=False)
        client.loop_start()
        try:
            assert answered.wait(20), "no CONNACK"
        finally:
            client.disconnect()
            client.loop_stop()
        return connected[0]

    # The broker of the second run: the same folder, its persisted retained messages and
    # sessions. What the first run left: each node's last word, "offline".
    with Mosquitto(workdir=tmp_path / "mosquitto") as broker:
        broker.start()
        left = retained_statuses(broker)
        assert {contract.decode(topic, payload).message.state  # type: ignore[union-attr]
                for topic, payload in left.items()} == {"offline"}, left
        assert len(left) == 2
        told: list[str] = []
        _forget_the_last_run(broker, 2, told.append)
        assert told == []  # nothing went wrong
        assert retained_statuses(broker) == {}
        assert not server_session_present(broker)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)  # the day itself takes seven minutes
def test_a_day_in_the_yard_told_in_words_with_the_web_app_and_the_report(
        tmp_path: Path) -> None:
    """``secadero yard --minutes 7`` as ./run-yard runs it (a 7-minute test): the scripted
    day, told as it happens; while it runs, the web app answers with the demo login and
    shows what the workers were sent; at the end the batch report is written."""
    process = subprocess.Popen(
        [sys.executable, "-m", "secadero.cli", "yard", "--dir", str(tmp_path),
         "--minutes", "7"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    sent: list[dict[str, object]] = []
    batches: list[dict[str, Any]] = []
    try:
        for line in process.stdout:
            output.append(line)
            if "A second shower" in line:
                sent, batches = _what_the_web_app_shows("".join(output))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
    output.append(rest)
    text = "".join(output)
    assert process.returncode == 0, text
    # In this order (the alert's lines and the phones' lines race each other: checked apart).
    story = [
        "ALERT (warning): rain is coming (the forecast).",
        "Carmen (quality) starts drying batch lote-",
        "Rosa and Luis pull the trays in: the alert on their phones said rain was coming.",
        "are in, under the roof (their switches say so).",
        "The shower the forecast saw arrives.",
        "is wet: the node's own beacon and buzzer go off at once.",
        "ALL CLEAR: the alert has ended",
        "are out in the sun (their switches say so).",
        "A second shower, one no forecast saw coming.",
        "is wet: the node's own beacon and buzzer go off at once.",
        "Rosa and Luis pull the trays in again.",
        "Carmen measures again: 44.0 %.",
        "ALL CLEAR: the alert has ended",
        "[18:00] Evening: the day is over.",
        "The batch report (one page, PDF) is in ",
        "The report of lote-",
        "Stopped everything it started.",
    ]
    position = 0
    for expected in story:
        found = text.find(expected, position)
        assert found >= 0, f"{expected!r} missing after position {position}:\n{text}"
        position = found + len(expected)
    assert "-> Rosa's phone: Lluvia en ~" in text, text
    # Both showers reach the plates and the alert says so; the workers' "LLUEVE ... YA"
    # only for the second, the one that found the trays out (the first found them in).
    assert text.count("it is raining on the yard (the rain plates)") == 2, text
    assert text.index("A second shower") < text.index("-> Rosa's phone: LLUEVE"), text
    report = Path(re.search(r"The batch report \(one page, PDF\) is in (\S+)", text)[1])
    assert report.read_bytes().startswith(b"%PDF-")
    # The yard's past days (secadero/past_days.py): a batch dried over them, ended at the
    # target, in the web app and in its own report.
    example = re.search(r"the yard's past 16 days are in InfluxDB too \(simulated\), "
                        r"with drying batch (lote-\d{4}-ejemplo): dried and ended", text)
    assert example is not None, text
    assert [(b["id"], b["ended_at"] is not None, b["final_moisture_pct"] <= 7.5)
            for b in batches if b["id"].endswith("-ejemplo")] == [(example[1], True, True)]
    assert Path(re.search(rf"The report of {example[1]}, dried over the past days: (\S+)",
                          text)[1]).read_bytes().startswith(b"%PDF-")
    # The workers' messages, as the supervisor sees them in the web app.
    assert {("Rosa", "webhook"), ("Luis", "webhook")} <= {
        (n["recipient"], n["channel"]) for n in sent}
    assert any(str(n["body"]).startswith("Lluvia en ~") for n in sent)
    pids = [int(pid) for pid in re.findall(r"pid (\d+)", text)]
    assert len(pids) == 6, text  # broker, database, server, three nodes
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _what_the_web_app_shows(text: str
                            ) -> tuple[list[dict[str, object]], list[dict[str, Any]]]:
    """Log in with the demo's printed login; the alerts' notifications and the batches."""
    import json
    import urllib.request

    base = re.search(r"Open the web app: (http://127\.0\.0\.1:\d+)/", text)[1]
    password = re.search(r"log in as ana\s+password (\S+)", text)[1]
    login = urllib.request.Request(f"{base}/api/login", method="POST", data=json.dumps(
        {"name": "ana", "password": password}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(login, timeout=10) as response:
        token = json.load(response)["token"]
    history = urllib.request.Request(f"{base}/api/alerts/history",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(history, timeout=10) as response:
        sent = [note for episode in json.load(response) for note in episode["notifications"]]
    batches = urllib.request.Request(f"{base}/api/batches",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(batches, timeout=10) as response:
        return sent, json.load(response)
