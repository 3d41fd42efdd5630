"""A simulated drying yard, for machines without GPIO: the demo, tests and benchmarks.

The weather model gives a day's temperature and humidity cycle and showers
with a humid lead-in; the yard drives the *same drivers* as a real node
through gpiozero's mock pins: it wets the rain plate's pin, pulses the
tipping bucket's reed switch, and plays the workers who pull the trays in
after the plate gets wet and put them out again once it has been dry a while.

Everything is deterministic from a seed; ``speed`` makes simulated time run
faster than real time (a 24 h day in 24 min at ``speed=60``). Simulated
time only drives the weather: the node still stamps readings with its own
clock.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secadero.errors import ConfigError

log = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Shower:
    """One shower in simulated time: humid lead-in, then rain at ``intensity_mm_h``."""

    start_s: float
    duration_s: float
    intensity_mm_h: float
    lead_in_s: float = 1800.0

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


class WeatherModel:
    """Tropical drying-yard weather as a pure function of simulated time (UNIX seconds).

    ``mean_gap_s`` is the mean dry spell between showers. Showers are drawn
    from ``random.Random(seed)`` lazily and in order, so any time can be
    asked for and the answer never depends on who asked before.
    """

    def __init__(self, seed: int, *, start_s: float, mean_gap_s: float = 3 * 3600.0,
                 utc_offset_h: float = -5.0, first_shower_after_s: float | None = None,
                 showers: Sequence[Shower] | None = None) -> None:
        self._rng = random.Random(seed)
        self.seed = seed
        self.start_s = start_s
        self.mean_gap_s = mean_gap_s
        self.utc_offset_h = utc_offset_h
        self._showers: list[Shower] = []
        self._starts: list[float] = []
        self._next_start_s = start_s + (first_shower_after_s if first_shower_after_s is not None
                                        else self._rng.expovariate(1 / mean_gap_s))
        if showers is not None:
            # A scripted day (the demo's): exactly these showers, no random ones.
            self._showers = sorted(showers, key=lambda s: s.start_s)
            self._starts = [s.start_s for s in self._showers]
            self._next_start_s = math.inf
        self._lock = threading.Lock()

    def _extend_to(self, t_s: float) -> None:
        while self._next_start_s <= t_s + 2 * 3600:
            shower = Shower(
                start_s=self._next_start_s,
                duration_s=self._rng.uniform(10 * 60, 60 * 60),
                intensity_mm_h=self._rng.uniform(2.0, 20.0),
            )
            self._showers.append(shower)
            self._starts.append(shower.start_s)
            self._next_start_s = shower.end_s + self._rng.expovariate(1 / self.mean_gap_s) + 600

    def showers_until(self, t_s: float) -> list[Shower]:
        with self._lock:
            self._extend_to(t_s)
            return [s for s in self._showers if s.start_s <= t_s]

    def _shower_near(self, t_s: float) -> Shower | None:
        """The shower whose lead-in, rain or after-hour covers ``t_s``."""
        with self._lock:
            self._extend_to(t_s)
            index = bisect.bisect_right(self._starts, t_s + 1800.0) - 1
            for shower in self._showers[max(0, index - 1):index + 1]:
                if shower.start_s - shower.lead_in_s <= t_s <= shower.end_s + 3600:
                    return shower
        return None

    def is_raining(self, t_s: float) -> bool:
        shower = self._shower_near(t_s)
        return shower is not None and shower.start_s <= t_s < shower.end_s

    def rain_rate_mm_h(self, t_s: float) -> float:
        shower = self._shower_near(t_s)
        if shower is None or not shower.start_s <= t_s < shower.end_s:
            return 0.0
        return shower.intensity_mm_h

    def climate(self, t_s: float) -> tuple[float, float]:
        """``(temperature_c, humidity_pct)`` of the air at the trays at ``t_s``."""
        local_h = ((t_s / 3600.0) + self.utc_offset_h) % 24.0
        # Warmest mid-afternoon (15 h), coolest before dawn.
        phase = math.cos(2 * math.pi * (local_h - 15.0) / 24.0)
        temperature_c = 25.0 + 6.0 * phase
        humidity_pct = 72.0 - 18.0 * phase
        shower = self._shower_near(t_s)
        if shower is not None:
            if t_s < shower.start_s:
                # The humid lead-in: humidity climbs as the front arrives.
                ramp = 1 - (shower.start_s - t_s) / shower.lead_in_s
                humidity_pct += (96.0 - humidity_pct) * ramp
                temperature_c -= 1.5 * ramp
            elif t_s < shower.end_s:
                humidity_pct = 97.0
                temperature_c -= 3.5
            else:
                fade = 1 - (t_s - shower.end_s) / 3600.0
                humidity_pct += (94.0 - humidity_pct) * fade
                temperature_c -= 3.0 * fade
        return round(temperature_c, 2), round(min(99.0, max(5.0, humidity_pct)), 2)


class SimulatedDHT:
    """A DHT backend that reads the weather model, with seeded noise and failures.

    ``failure_rate`` of reads raise one of adafruit_dht's errors (the same
    messages), so the driver's retry path runs in the demo too.
    """

    def __init__(self, model: WeatherModel, sim_time: Callable[[], float], *, seed: int,
                 failure_rate: float = 0.03) -> None:
        self._model = model
        self._sim_time = sim_time
        self._rng = random.Random(seed ^ 0xD4722)
        self.failure_rate = failure_rate

    def read(self) -> tuple[float | None, float | None]:
        from secadero.firmware.dht import dht_error

        if self._rng.random() < self.failure_rate:
            raise dht_error(self._rng.choice(["checksum", "short_buffer", "timeout"]))
        temperature_c, humidity_pct = self._model.climate(self._sim_time())
        # The DHT22 resolves 0.1 and is noisy by about that much.
        return (round(temperature_c + self._rng.gauss(0, 0.1), 1),
                round(min(99.9, humidity_pct + self._rng.gauss(0, 0.3)), 1))

    def close(self) -> None:
        pass


class SaltJarDHT:
    """A DHT backend inside a closed salt jar, for the calibration's tests and a PC run.

    The air in the jar moves from the humidity it had to ``put_in``'s
    humidity with time constant ``settle_s`` (a DHT22 in a small jar takes
    tens of minutes); the sensor reports ``gain * true + offset_pct`` with
    noise, as a real part with a gain and offset error would. ``clock`` is
    the jar's time in seconds.
    """

    def __init__(self, clock: Callable[[], float], *, gain: float = 1.0,
                 offset_pct: float = 0.0, temperature_c: float = 25.0,
                 start_humidity_pct: float = 60.0, settle_s: float = 900.0,
                 noise_pct: float = 0.1, seed: int = 1) -> None:
        self._clock = clock
        self.gain = gain
        self.offset_pct = offset_pct
        self.temperature_c = temperature_c
        self.settle_s = settle_s
        self.noise_pct = noise_pct
        self._rng = random.Random(seed ^ 0x5A17)
        self._from_pct = start_humidity_pct
        self._target_pct = start_humidity_pct
        self._since_s = clock()

    def true_humidity_pct(self) -> float:
        elapsed = max(0.0, self._clock() - self._since_s)
        share = math.exp(-elapsed / self.settle_s)
        return self._target_pct + (self._from_pct - self._target_pct) * share

    def put_in(self, humidity_pct: float) -> None:
        """The sensor goes into a jar whose air holds ``humidity_pct``."""
        self._from_pct = self.true_humidity_pct()
        self._target_pct = humidity_pct
        self._since_s = self._clock()

    def read(self) -> tuple[float | None, float | None]:
        sensed = self.gain * self.true_humidity_pct() + self.offset_pct
        sensed += self._rng.gauss(0, self.noise_pct)
        return (round(self.temperature_c + self._rng.gauss(0, 0.05), 1),
                round(min(99.9, max(0.0, sensed)), 1))

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class YardPins:
    """The GPIO numbers the simulated yard drives (the node's own pin settings)."""

    rain_plate: int
    gauge: int | None
    trays: dict[str, tuple[int, int | None]]
    rain_plate_active_low: bool = True


class SimulatedYard:
    """Plays weather and workers onto mock pins in a background thread.

    ``factory`` is the gpiozero ``MockFactory`` the node's drivers were built
    with; ``sim_time()`` gives simulated UNIX seconds. Workers start pulling
    trays in ``reaction_s`` (simulated) after the rain starts and put them
    out ``dry_wait_s`` after it stopped, in daylight; or, with a ``plan``
    (simulated time, ``"retracted"`` / ``"extended"``), exactly when the plan
    says (the demo's scripted day: the workers who heard the forecast's alert).
    """

    def __init__(self, model: WeatherModel, factory: Any, pins: YardPins, *, speed: float = 1.0,
                 reaction_s: float = 300.0, travel_s: float = 60.0,
                 dry_wait_s: float = 3600.0, tick_s: float = 0.05,
                 monotonic: Callable[[], float] = time.monotonic,
                 plan: Sequence[tuple[float, str]] | None = None) -> None:
        self._model = model
        self._factory = factory
        self._pins = pins
        self.speed = speed
        self.reaction_s = reaction_s
        self.travel_s = travel_s
        self.dry_wait_s = dry_wait_s
        self.tick_s = tick_s
        self._monotonic = monotonic
        self._mono0 = monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rain_mm_owed = 0.0
        self._last_tip_mono: float = -1e9
        self._last_sim_s: float | None = None
        self.tips = 0
        self._trays_out = True
        # tray -> (simulated time the current move ends, target state)
        self._moves: dict[str, tuple[float, str]] = {}
        self._wet_since: float | None = None
        self._dry_since: float | None = None
        self._plan = sorted(plan) if plan is not None else None
        self._set_initial()

    def sim_time(self) -> float:
        return self._model.start_s + (self._monotonic() - self._mono0) * self.speed

    def _pin(self, number: int) -> Any:
        return self._factory.pin(number)

    def _drive(self, number: int, active: bool, *, active_low: bool = True) -> None:
        pin = self._pin(number)
        level = (not active) if active_low else active
        if pin.state != level:
            if level:
                pin.drive_high()
            else:
                pin.drive_low()

    def _set_initial(self) -> None:
        self._drive(self._pins.rain_plate, False, active_low=self._pins.rain_plate_active_low)
        if self._pins.gauge is not None:
            self._drive(self._pins.gauge, False)
        for tray in self._pins.trays:
            self._set_tray(tray, "extended")

    def _set_tray(self, tray: str, state: str) -> None:
        retracted_pin, extended_pin = self._pins.trays[tray]
        self._drive(retracted_pin, state == "retracted")
        if extended_pin is not None:
            self._drive(extended_pin, state == "extended")

    def step(self) -> None:
        """Advance the yard to the current simulated time (called by the thread, or tests)."""
        now_s = self.sim_time()
        raining = self._model.is_raining(now_s)
        self._drive(self._pins.rain_plate, raining, active_low=self._pins.rain_plate_active_low)
        if raining:
            self._dry_since = None
            self._wet_since = self._wet_since if self._wet_since is not None else now_s
        else:
            self._wet_since = None
            self._dry_since = self._dry_since if self._dry_since is not None else now_s
        self._gauge(now_s)
        self._workers(now_s)
        self._last_sim_s = now_s

    def _gauge(self, now_s: float) -> None:
        if self._pins.gauge is None or self._last_sim_s is None:
            return
        self._rain_mm_owed += self._model.rain_rate_mm_h(now_s) * (now_s - self._last_sim_s) / 3600
        # One tip per 0.2794 mm, but never faster than a real bucket (and the
        # driver's bounce filter) allows in real time: the rest is owed.
        mono = self._monotonic()
        if self._rain_mm_owed >= 0.2794 and mono - self._last_tip_mono >= 0.25:
            self._rain_mm_owed -= 0.2794
            self._last_tip_mono = mono
            pin = self._pin(self._pins.gauge)
            pin.drive_low()
            pin.drive_high()
            self.tips += 1

    def _workers(self, now_s: float) -> None:
        for tray, (ends_s, target) in list(self._moves.items()):
            if now_s >= ends_s:
                self._set_tray(tray, target)
                del self._moves[tray]
        if self._plan is not None:
            while self._plan and now_s >= self._plan[0][0]:
                _, target = self._plan.pop(0)
                if (target == "extended") != self._trays_out:
                    self._start_moves(target, now_s)
                    self._trays_out = target == "extended"
            return
        local_h = ((now_s / 3600.0) + self._model.utc_offset_h) % 24.0
        if (self._trays_out and self._wet_since is not None
                and now_s - self._wet_since >= self.reaction_s):
            self._start_moves("retracted", now_s)
            self._trays_out = False
        elif (not self._trays_out and self._dry_since is not None
              and now_s - self._dry_since >= self.dry_wait_s and 7 <= local_h < 16):
            self._start_moves("extended", now_s)
            self._trays_out = True

    def _start_moves(self, target: str, now_s: float) -> None:
        for index, tray in enumerate(self._pins.trays):
            retracted_pin, extended_pin = self._pins.trays[tray]
            # Leaving the end stop: both switches released (moving).
            self._drive(retracted_pin, False)
            if extended_pin is not None:
                self._drive(extended_pin, False)
            self._moves[tray] = (now_s + self.travel_s + 20 * index, target)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.step()
            except Exception:  # the simulation must never take the node down
                log.exception("simulated yard step failed")

    def start(self) -> SimulatedYard:
        self.step()
        self._thread = threading.Thread(target=self._run, name="simulated-yard", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)


@dataclass(frozen=True)
class DayScript:
    """A scripted day for the simulated yard: the demo's (secadero/day.py writes it).

    Times are simulated UNIX seconds. ``real_start_s`` is the wall-clock instant
    the day began at ``day_start_s``: each node process maps its own start onto
    the same simulated clock, so every node of the demo sees the shower at once.
    ``trays``: when the workers pull the trays in (``"retracted"``) or put them
    out (``"extended"``).
    """

    day_start_s: float
    real_start_s: float
    showers: tuple[Shower, ...]
    trays: tuple[tuple[float, str], ...]

    def sim_time(self, real_now_s: float, speed: float) -> float:
        return self.day_start_s + (real_now_s - self.real_start_s) * speed

    def to_json(self) -> str:
        return json.dumps({
            "day_start_s": self.day_start_s, "real_start_s": self.real_start_s,
            "showers": [[s.start_s, s.duration_s, s.intensity_mm_h, s.lead_in_s]
                        for s in self.showers],
            "trays": [[at_s, state] for at_s, state in self.trays]})


def load_day_script(path: Path) -> DayScript:
    """Read a day script; a bad file is a ``ConfigError`` naming it and the reason."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        showers = tuple(Shower(*(float(value) for value in shower))
                        for shower in data["showers"])
        trays = tuple((float(at_s), str(state)) for at_s, state in data["trays"])
        if any(state not in ("extended", "retracted") for _, state in trays):
            raise ValueError("a tray move is neither extended nor retracted")
        return DayScript(float(data["day_start_s"]), float(data["real_start_s"]), showers,
                         trays)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"{path}: not a day script: {exc}"]) from exc
