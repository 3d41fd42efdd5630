"""Humidity calibration by the two-point salt test, and the correction the node applies.

Two DHT22s side by side commonly differ by about 4 % RH (Mycodo issue 1),
enough to move a drying estimate by hours. A closed jar over a saturated salt
solution holds a known humidity that depends only on the salt and, a little,
on the temperature. Two jars, magnesium chloride (about 33 % RH) and sodium
chloride (about 75 % RH), give two points; a straight line through them
corrects the sensor's gain and offset:

    corrected = gain * raw + offset

The reference values are Greenspan's (``SALT_REFERENCE_PCT``); the
procedure the technician follows is in docs/hardware.md ("Calibrating the
humidity sensor"). ``SaltTest`` is the procedure with its clock, sensor and
console injected, so a test runs a whole calibration without waiting;
``secadero edge calibrate`` runs it on the node's own sensor.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from secadero.errors import ConfigError, SecaderoError, SensorError
from secadero.firmware.dht import Reading

# Equilibrium relative humidity (%) over saturated salt solutions by temperature (°C).
# Source: L. Greenspan, "Humidity Fixed Points of Binary Saturated Aqueous Solutions",
# J. Res. Natl. Bur. Stand. 81A (1977) 89-96; the 15-35 °C values to 0.1 % RH, as the
# project's reference notes copy them.
SALT_REFERENCE_PCT: Final[dict[str, dict[float, float]]] = {
    "mgcl2": {15.0: 33.3, 20.0: 33.1, 25.0: 32.8, 30.0: 32.4, 35.0: 32.1},
    "nacl": {15.0: 75.6, 20.0: 75.5, 25.0: 75.3, 30.0: 75.1, 35.0: 74.9},
}
SALT_NAMES: Final = {
    "mgcl2": ("cloruro de magnesio (MgCl2)", "magnesium chloride (MgCl2)"),
    "nacl": ("cloruro de sodio, sal de mesa (NaCl)", "sodium chloride, table salt (NaCl)"),
}
# Dry salt first: a sensor coming out of the wet jar holds water for a while.
SALT_ORDER: Final = ("mgcl2", "nacl")
# A fit outside these means a wrong jar, a wet sensor or a broken part, not a sensor to correct.
GAIN_RANGE: Final = (0.7, 1.3)
MAX_OFFSET_PCT: Final = 20.0


class CalibrationError(SecaderoError):
    """The salt test cannot give a trustworthy correction (the message says why and what to do)."""


class BadCalibrationFile(ConfigError, ValueError):
    """The node's calibration file exists but cannot be used (one ``file: reason`` problem)."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


def reference_humidity_pct(salt: str, temperature_c: float) -> float:
    """Greenspan's equilibrium humidity over ``salt`` at ``temperature_c``, interpolated.

    Only within the table (15-35 °C): outside it the test should be done
    somewhere else, not extrapolated.
    """
    table = SALT_REFERENCE_PCT[salt]
    temperatures = sorted(table)
    if not temperatures[0] <= temperature_c <= temperatures[-1]:
        raise CalibrationError(
            f"el frasco está a {temperature_c:.1f} °C: haga la prueba en un cuarto entre "
            f"{temperatures[0]:g} y {temperatures[-1]:g} °C / the jar is at "
            f"{temperature_c:.1f} °C; the salt table covers "
            f"{temperatures[0]:g}-{temperatures[-1]:g} °C: do the test in a room within it")
    for low, high in itertools.pairwise(temperatures):
        if low <= temperature_c <= high:
            share = (temperature_c - low) / (high - low)
            return table[low] + share * (table[high] - table[low])
    raise AssertionError("unreachable: the range was checked")


@dataclass(frozen=True, slots=True)
class CalibrationPoint:
    """One jar: the sensor's settled reading and the salt's reference at the jar's temperature."""

    salt: str
    temperature_c: float
    raw_humidity_pct: float
    reference_pct: float
    settled_ts: float


@dataclass(frozen=True, slots=True)
class HumidityCorrection:
    """``corrected = gain * raw + offset_pct``, clamped to 0..100 % RH."""

    gain: float
    offset_pct: float
    calibrated_ts: float
    points: tuple[CalibrationPoint, ...] = ()

    @classmethod
    def from_points(cls, low: CalibrationPoint, high: CalibrationPoint, *,
                    calibrated_ts: float) -> HumidityCorrection:
        """The straight line through two jars; refuses a fit no sensor should need."""
        spread = high.raw_humidity_pct - low.raw_humidity_pct
        if spread < 20.0:
            raise CalibrationError(
                f"el sensor leyó {low.raw_humidity_pct:.1f} % y {high.raw_humidity_pct:.1f} % "
                "en los dos frascos; ¿sal saturada (cristales sin disolver) y tapa cerrada? / "
                f"the sensor read {low.raw_humidity_pct:.1f} % and {high.raw_humidity_pct:.1f} % "
                "in the two jars: they should differ by about 40 %. Is the salt saturated "
                "(undissolved crystals at the bottom) and the lid closed?")
        gain = (high.reference_pct - low.reference_pct) / spread
        offset = low.reference_pct - gain * low.raw_humidity_pct
        if not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1] or abs(offset) > MAX_OFFSET_PCT:
            raise CalibrationError(
                f"la corrección sería x{gain:.3f} {offset:+.1f} %: cambie el sensor o revise "
                f"los frascos / the correction would be x{gain:.3f} {offset:+.1f} %: far beyond "
                "a DHT22's spread. Replace the sensor, or check the jars and do the test again")
        return cls(gain=round(gain, 5), offset_pct=round(offset, 3),
                   calibrated_ts=calibrated_ts, points=(low, high))

    def apply(self, raw_pct: float) -> float:
        # To 0.1 % RH, the resolution of the DHT22 and SHT31 readings it corrects.
        return round(min(100.0, max(0.0, self.gain * raw_pct + self.offset_pct)), 1)

    # -- the file beside node.toml ---------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"gain": self.gain, "offset_pct": self.offset_pct,
                           "calibrated_ts": self.calibrated_ts,
                           "points": [asdict(point) for point in self.points]}, indent=1)

    def save(self, path: Path) -> None:
        """Write the file atomically: a node starting meanwhile reads the old one or the new."""
        from secadero.edge.agent import write_atomically

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, (self.to_json() + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> HumidityCorrection | None:
        """The node's correction, or ``None`` when it was never calibrated (no file)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BadCalibrationFile(f"{path}: cannot read: {exc}") from exc
        try:
            obj = json.loads(text)
            gain, offset, when = (obj["gain"], obj["offset_pct"], obj["calibrated_ts"])
            points = tuple(CalibrationPoint(**point) for point in obj.get("points", []))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadCalibrationFile(f"{path}: not a calibration file ({exc}); run "
                                     "'secadero edge calibrate' again") from exc
        for name, value in (("gain", gain), ("offset_pct", offset), ("calibrated_ts", when)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise BadCalibrationFile(f"{path}: {name}: must be a number")
        if not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1] or abs(offset) > MAX_OFFSET_PCT:
            raise BadCalibrationFile(f"{path}: gain {gain} / offset_pct {offset} out of range")
        return cls(gain=float(gain), offset_pct=float(offset), calibrated_ts=float(when),
                   points=points)


# --------------------------------------------------------------------------
# deciding that the sensor has settled in a jar


@dataclass(frozen=True, slots=True)
class Settled:
    """The sensor's settled reading: medians of the last window."""

    humidity_pct: float
    temperature_c: float


class StabilityWatch:
    """Decides from the readings themselves when the sensor has settled in a jar.

    Settled: the readings of the last ``window_s`` (at least ``min_readings``
    of them) stay within ``band_pct`` of each other, and their trend (the
    least-squares slope times the window) is under ``drift_pct``: a sensor
    still creeping toward the jar's humidity, however slowly, is not
    settled. A DHT22 in a small jar takes from 20 minutes to over an hour,
    depending on how wet it came out of the last jar, so a fixed wait would
    be wrong either way.
    """

    def __init__(self, *, window_s: float = 1200.0, band_pct: float = 0.5,
                 drift_pct: float = 0.2, min_readings: int = 10) -> None:
        self.window_s = window_s
        self.band_pct = band_pct
        self.drift_pct = drift_pct
        self.min_readings = min_readings
        self._readings: deque[tuple[float, float, float]] = deque()

    def add(self, at_s: float, reading: Reading) -> Settled | None:
        """Add one reading; return the settled value once the sensor has settled."""
        self._readings.append((at_s, reading.humidity_pct, reading.temperature_c))
        while self._readings and self._readings[0][0] < at_s - self.window_s:
            self._readings.popleft()
        return self.settled(at_s)

    def settled(self, now_s: float) -> Settled | None:
        readings = list(self._readings)
        if len(readings) < self.min_readings or now_s - readings[0][0] < self.window_s * 0.95:
            return None
        humidity = [h for _, h, _ in readings]
        if max(humidity) - min(humidity) > self.band_pct:
            return None
        times = [t for t, _, _ in readings]
        slope_per_s = statistics.linear_regression(times, humidity).slope
        if abs(slope_per_s * (times[-1] - times[0])) > self.drift_pct:
            return None
        return Settled(humidity_pct=round(statistics.median(humidity), 2),
                       temperature_c=round(statistics.median(t for _, _, t in readings), 2))

    @property
    def spread_pct(self) -> float | None:
        """The band of the readings held now (for the progress line)."""
        if not self._readings:
            return None
        humidity = [h for _, h, _ in self._readings]
        return max(humidity) - min(humidity)


# --------------------------------------------------------------------------
# the procedure


class SaltTest:
    """The two-jar procedure: guides the technician, reads the sensor, fits the line.

    Injected: ``read`` (the node's climate sensor), ``wait`` (between
    readings; the DHT22 needs >= 2 s between reads), ``now`` (UNIX time),
    ``say`` (a line to the technician) and ``ask`` (a prompt that returns
    when the technician presses Enter). ``timeout_s`` bounds the wait in
    each jar. ``jar_changed`` hears which salt's jar the sensor went into
    (the simulated jar of a PC run follows it).
    """

    def __init__(self, read: Callable[[], Reading], *, wait: Callable[[float], None],
                 now: Callable[[], float], say: Callable[[str], None],
                 ask: Callable[[str], str], interval_s: float = 10.0,
                 timeout_s: float = 3 * 3600.0,
                 make_watch: Callable[[], StabilityWatch] = StabilityWatch,
                 jar_changed: Callable[[str], None] | None = None) -> None:
        self.read = read
        self.wait = wait
        self.now = now
        self.say = say
        self.ask = ask
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.make_watch = make_watch
        self.jar_changed = jar_changed
        self.read_errors = 0

    def run(self) -> HumidityCorrection:
        points = [self.measure(salt) for salt in SALT_ORDER]
        low, high = sorted(points, key=lambda point: point.reference_pct)
        correction = HumidityCorrection.from_points(low, high, calibrated_ts=round(self.now(), 3))
        self.say(f"Corrección / correction: HR = {correction.gain:.4f} x lectura "
                 f"{correction.offset_pct:+.2f} %")
        for point in (low, high):
            self.say(f"  {point.salt}: lectura {point.raw_humidity_pct:.1f} % -> "
                     f"{correction.apply(point.raw_humidity_pct):.1f} % "
                     f"(referencia {point.reference_pct:.1f} % a {point.temperature_c:.1f} °C)")
        return correction

    def measure(self, salt: str) -> CalibrationPoint:
        spanish, english = SALT_NAMES[salt]
        self.ask(f"Ponga el sensor en el frasco de {spanish}, cierre la tapa y presione Enter.\n"
                 f"Put the sensor in the {english} jar, close the lid and press Enter. ")
        if self.jar_changed is not None:
            self.jar_changed(salt)
        self.say("Esperando que la lectura se estabilice (20 a 90 min) / waiting for the reading "
                 "to settle")
        watch = self.make_watch()
        started_s = self.now()
        last_report_s = started_s
        while True:
            at_s = self.now()
            if at_s - started_s > self.timeout_s:
                raise CalibrationError(
                    f"la lectura no se estabilizó en {self.timeout_s / 3600:g} h: revise la "
                    "tapa y que la sal esté húmeda y con cristales / the reading did not "
                    f"settle in {self.timeout_s / 3600:g} h in the {salt} jar: check the lid "
                    "and that the salt is wet with crystals left")
            try:
                reading = self.read()
            except SensorError as exc:
                # A DHT22 misses reads now and then; a sensor that never answers times out.
                self.read_errors += 1
                if self.read_errors in (1, 10, 100):
                    self.say(f"  lectura fallida / read failed: {exc}")
            else:
                settled = watch.add(at_s, reading)
                if settled is not None:
                    reference = reference_humidity_pct(salt, settled.temperature_c)
                    self.say(f"Estable / settled: {settled.humidity_pct:.1f} % a "
                             f"{settled.temperature_c:.1f} °C (referencia {reference:.1f} %)")
                    return CalibrationPoint(salt=salt, temperature_c=settled.temperature_c,
                                            raw_humidity_pct=settled.humidity_pct,
                                            reference_pct=round(reference, 2),
                                            settled_ts=round(at_s, 3))
                if at_s - last_report_s >= 300:
                    last_report_s = at_s
                    spread = watch.spread_pct
                    self.say(f"  {(at_s - started_s) / 60:.0f} min: {reading.humidity_pct:.1f} % "
                             f"{reading.temperature_c:.1f} °C"
                             + (f" (variación {spread:.1f} %)" if spread is not None else ""))
            self.wait(self.interval_s)
