"""A day in the yard, compressed into minutes: the script of ``secadero yard`` (./run-yard).

The day, 06:00 to 18:00 on the yard's clock, as a newcomer watches it:

1. Morning sun: the trays go out; the quality manager starts a drying batch.
2. The forecast (a local server replaying Open-Meteo's format) sees rain coming:
   the server raises the alert and the yard worker's phone gets it.
3. The workers pull the trays in; the shower comes; the rain plates get wet.
4. The shower passes, the forecast clears, the plates dry: the all-clear, and
   the trays go out again.
5. A second shower that no forecast saw: only the plates catch it, the alert
   goes out at once, the workers pull the trays in again.
6. The all-clear; a moisture reading now and then; at the end the batch report.

``Day(minutes)`` places each of these on the real clock (the demo's length) and
on the yard's simulated clock; the nodes get the showers and the workers'
moves as a ``DayScript`` (firmware/simulation.py). The server's own timing
is real: its forecast poll (every 60 s at the least) and the all-clear's
hold are real minutes, so the day cannot be shorter than ``MIN_MINUTES``.
Everything here is pure but ``ForecastReplay`` (a local HTTP server).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

from secadero import contract
from secadero.contract import Envelope, Event, Telemetry
from secadero.firmware.simulation import DayScript, Shower

MIN_MINUTES = 6.0
DAY_START_H, DAY_END_H = 6, 18
# The day's beats at the shortest length, in real seconds from the start; a longer
# day stretches them all. The real-time parts they leave room for: the forecast is
# read every 60 s, a rain gauge's tip counts as rain for a minute, the plates dry
# and the all-clear holds for some seconds (the demo's server.toml).
BEATS_S = {
    "batch_start": 20, "trays_in_1": 60, "shower_1": 80, "shower_1_end": 110,
    "moisture_1": 150, "trays_out": 200, "shower_2": 235, "trays_in_2": 250,
    "shower_2_end": 265, "moisture_2": 300, "end": 360,
}
# What the forecast says for the next hours while it sees the shower, and after.
RAIN_AHEAD_PCT = [10, 85, 70, 30, 10, 5]
DRY_AHEAD_PCT = [5, 5, 0, 0, 0, 0]


@dataclass(frozen=True)
class Day:
    """The day's plan for a demo of ``minutes`` real minutes starting at ``real_start_s``."""

    minutes: float
    real_start_s: float
    timezone: str = "America/Lima"

    def __post_init__(self) -> None:
        if self.minutes < MIN_MINUTES:
            raise ValueError(f"a day takes at least {MIN_MINUTES:g} minutes "
                             "(the server's forecast poll and all-clear run in real time)")

    @property
    def scale(self) -> float:
        return self.minutes * 60 / BEATS_S["end"]

    @property
    def speed(self) -> float:
        """Simulated seconds per real second: twelve hours in ``minutes``."""
        return (DAY_END_H - DAY_START_H) * 3600 / (self.minutes * 60)

    @property
    def day_start_s(self) -> float:
        """06:00 today on the yard's clock (simulated UNIX seconds)."""
        zone = ZoneInfo(self.timezone)
        today = datetime.fromtimestamp(self.real_start_s, zone).date()
        return datetime(today.year, today.month, today.day, DAY_START_H,
                        tzinfo=zone).timestamp()

    def at(self, beat: str) -> float:
        """The real time (UNIX seconds) of one of the day's beats."""
        return self.real_start_s + BEATS_S[beat] * self.scale

    def sim(self, real_s: float) -> float:
        return self.day_start_s + (real_s - self.real_start_s) * self.speed

    def clock(self, real_s: float) -> str:
        """The yard's clock at a real instant, "HH:MM" (06:00 until the day has begun)."""
        return datetime.fromtimestamp(self.sim(max(real_s, self.real_start_s)),
                                      ZoneInfo(self.timezone)).strftime("%H:%M")

    def forecast_sees_rain(self, real_s: float) -> bool:
        """The first shower is forecast from the start until it has passed."""
        return real_s < self.at("shower_1_end")

    def script(self) -> DayScript:
        """The nodes' part: the two showers and the workers' moves, on the simulated clock."""
        def shower(beat: str, mm_h: float) -> Shower:
            start = self.sim(self.at(beat))
            return Shower(start_s=start, duration_s=self.sim(self.at(beat + "_end")) - start,
                          intensity_mm_h=mm_h, lead_in_s=2400.0)

        trays = ((self.sim(self.at("trays_in_1")), "retracted"),
                 (self.sim(self.at("trays_out")), "extended"),
                 (self.sim(self.at("trays_in_2")), "retracted"))
        return DayScript(day_start_s=self.day_start_s, real_start_s=self.real_start_s,
                         showers=(shower("shower_1", 12.0), shower("shower_2", 6.0)),
                         trays=trays)

    def story(self) -> list[tuple[str, str]]:
        """What the narrator says at which beat (the script's side; what the server does
        is told as it happens, from the broker)."""
        return [
            ("batch_start", "Carmen (quality) starts drying batch {batch} on the trays of "
                            "sector Norte: 55 % moisture, fresh from fermentation."),
            ("trays_in_1", "Rosa and Luis pull the trays in: the alert on their phones said "
                           "rain was coming."),
            ("shower_1", "The shower the forecast saw arrives."),
            ("shower_1_end", "The shower passes; the forecast now says dry hours ahead."),
            ("moisture_1", "Carmen measures the beans: {moisture_1} % moisture."),
            ("trays_out", "The sun is back: the workers put the trays out again."),
            ("shower_2", "A second shower, one no forecast saw coming. Only the rain plates "
                         "can tell."),
            ("trays_in_2", "Rosa and Luis pull the trays in again."),
            ("shower_2_end", "The second shower passes."),
            ("moisture_2", "Carmen measures again: {moisture_2} %."),
        ]


MOISTURE = {"moisture_0": 55.0, "moisture_1": 48.5, "moisture_2": 44.0}


class ForecastReplay:
    """A local Open-Meteo for the demo: a recorded response in Open-Meteo's documented
    format (secadero/data), its hours moved to the present, its rain probabilities
    from ``rain_ahead()`` (True: the shower is coming)."""

    def __init__(self, rain_ahead: Callable[[], bool]) -> None:
        self.rain_ahead = rain_ahead
        self.recorded = json.loads(resources.files("secadero").joinpath(
            "data/open-meteo-recorded.json").read_text(encoding="utf-8"))
        replay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(replay.body(time.time())).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/forecast"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="demo-forecast")
        self._thread.start()

    def body(self, now_s: float) -> dict[str, object]:
        data = json.loads(json.dumps(self.recorded))  # a copy
        hourly = data["hourly"]
        # Open-Meteo stamps each hour's value at the hour's end ("preceding hour").
        first = datetime.fromtimestamp(now_s, UTC).replace(minute=0, second=0,
                                                           microsecond=0) + timedelta(hours=1)
        count = len(hourly["time"])
        hourly["time"] = [(first + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M")
                          for i in range(count)]
        ahead = RAIN_AHEAD_PCT if self.rain_ahead() else DRY_AHEAD_PCT
        hourly["precipitation_probability"] = [ahead[i] if i < len(ahead) else 0
                                               for i in range(count)]
        return data

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


ALERT_WORDS = {
    "rain_forecast": "rain is coming (the forecast)",
    "rain_now": "it is raining on the yard (the rain plates)",
    "humidity_surge": "the air is getting wet fast",
    "node_offline": "a sensor went silent",
}


class DayNarrator:
    """Turns what the yard says on the broker into sentences a newcomer understands.

    ``handle`` takes one decoded message and returns the lines to print (often
    none: a reading that changes nothing says nothing). ``areas`` names each
    node's sector.
    """

    def __init__(self, areas: dict[str, str]) -> None:
        self.areas = areas
        self.trays: dict[str, dict[str, str]] = {}
        self.wet: set[str] = set()
        self.alert: tuple[str, str] | None = None  # (kind, state) last told

    def _where(self, node: str) -> str:
        area = self.areas.get(node)
        return f"sector {area} ({node})" if area else node

    def handle(self, envelope: Envelope) -> list[str]:
        node = envelope.node or ""
        message = envelope.message
        if isinstance(message, contract.Alert):
            return self._alert(message)
        if isinstance(message, Event):
            if message.type == "rain_started" and node not in self.wet:
                self.wet.add(node)
                return [f"The rain plate of {self._where(node)} is wet: the node's own "
                        "beacon and buzzer go off at once."]
            if message.type == "rain_stopped" and node in self.wet:
                self.wet.discard(node)
                return [f"The rain plate of {self._where(node)} is dry again."]
            if message.type in ("tray_retracted", "tray_extended") and message.tray:
                return self._tray(node, message.tray, "retracted" if message.type ==
                                  "tray_retracted" else "extended")
        if isinstance(message, Telemetry):
            lines: list[str] = []
            for tray, state in sorted(message.trays.items()):
                if state in ("retracted", "extended") and tray not in self.trays.get(node, {}):
                    lines += self._tray(node, tray, state, quiet=True)
            return lines
        return []

    def _tray(self, node: str, tray: str, state: str, *, quiet: bool = False) -> list[str]:
        trays = self.trays.setdefault(node, {})
        before = dict(trays)
        trays[tray] = state
        if quiet or before.get(tray) == state:
            return []
        if all(s == state for s in trays.values()):
            where = "in, under the roof" if state == "retracted" else "out in the sun"
            return [f"The trays of {self._where(node)} are {where} (their switches say so)."]
        return []

    def _alert(self, alert: contract.Alert) -> list[str]:
        if alert.state == "raised":
            told = (alert.kind, alert.state)
            if told == self.alert:
                return []
            upgrade = self.alert is not None and self.alert[1] == "raised"
            self.alert = told
            what = ALERT_WORDS.get(alert.kind, alert.kind)
            if upgrade:
                return [f"The alert is now: {what} ({alert.severity})."]
            return [f"ALERT ({alert.severity}): {what}. The nodes' beacons show it; the "
                    f"server tells the workers: \"{alert.message}\""]
        if self.alert is not None and self.alert[1] == "raised":
            self.alert = (self.alert[0], "clear")
            return ["ALL CLEAR: the alert has ended (plates dry, no rain forecast); the "
                    "workers are told the trays may go out."]
        return []
