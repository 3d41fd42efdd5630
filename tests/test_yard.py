"""The demo yard: what it prints, and (integration) the whole yard as the README runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "secadero.cli", "yard", "--endless", "--dir", str(tmp_path),
         "--nodes", "3", "--interval", "0.5", "--speed", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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
        rest, _ = process.communicate(timeout=60)
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
