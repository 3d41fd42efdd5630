"""A rule switched off for one yard (issue 13): ``[[yards]] humidity_surge = false``.

Runs on the simulated clock (``alert_helpers.SimYard``: the real engine, SQLite
store and dispatcher; Twilio and ntfy are fakes that record what they were given).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from alert_helpers import YARD, SimYard


def humid_morning(yard: SimYard) -> None:
    """Trays out, then both nodes' humidity rising 2 points a minute from 11:00."""
    def humid(pct: float) -> None:
        for sim in yard.nodes.values():
            sim.humidity_pct = pct
    yard.at("10:00", yard.trays("extended"))
    for minute, pct in enumerate(range(60, 84, 2)):
        yard.at(f"11:{minute:02d}", lambda p=pct: humid(p))


def test_a_yard_with_humidity_surge_off_gets_no_warning(tmp_path: Path) -> None:
    yard = SimYard(tmp_path, yard_settings=replace(YARD, humidity_surge=False))
    humid_morning(yard)
    yard.run("13:00")
    assert yard.sent == []
    assert yard.transitions == []


def test_the_same_morning_with_it_on_warns_the_workers(tmp_path: Path) -> None:
    # The default: what the switch takes away (as test_alert_scenarios.py).
    yard = SimYard(tmp_path)
    humid_morning(yard)
    yard.run("13:00")
    assert yard.sent == [("11:08", "Rosa", "twilio", "humidity_surge", "raise"),
                         ("11:08", "Luis", "ntfy", "humidity_surge", "raise")]


def test_switching_it_off_ends_a_warning_still_open(tmp_path: Path) -> None:
    yard = SimYard(tmp_path)
    humid_morning(yard)
    yard.run("11:20")
    # The technician sets humidity_surge = false and restarts the server at 11:21.
    yard.yard_settings = replace(YARD, humidity_surge=False)
    yard.restart()
    yard.run("12:00")
    assert yard.transitions == [("11:08", "humidity_surge", "raised", "warning"),
                                ("11:21", "humidity_surge", "resolved", "warning")]
    assert len(yard.sent) == 2  # the 11:08 warning only: the end is not news
