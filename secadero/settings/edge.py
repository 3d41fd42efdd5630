"""The node's sections: [node], [outbox] and [hardware] (the wiring), plus the shared [mqtt].

Nothing here imports the server: a node loads its settings with only the core installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from secadero.contract import is_valid_id
from secadero.settings._reader import Defaults, Section, load
from secadero.settings.common import MqttSettings, read_mqtt


@dataclass(frozen=True)
class OutboxSettings:
    # Relative to the config file's directory (the loader resolves it there).
    path: Path = Path("var/outbox.sqlite3")
    max_bytes: int = 64 * 1024 * 1024
    resend_after_s: float = 30.0


def read_outbox(section: Section) -> OutboxSettings:
    d = Defaults(OutboxSettings)
    settings = OutboxSettings(
        path=section.path("path", d.path),
        max_bytes=section.integer("max_bytes", d.max_bytes, minimum=64 * 1024),
        resend_after_s=section.number("resend_after_s", d.resend_after_s, minimum=0.1),
    )
    section.finish()
    return settings


# Tray limit switches when [hardware.trays] does not name them: (sheltered end, open end).
DEFAULT_TRAY_PINS: tuple[tuple[int, int], ...] = ((5, 6), (12, 13), (16, 19), (20, 21))
CLIMATE_SENSORS = ("dht22", "sht31", "none")
# The Raspberry Pi's I2C pins (BCM), taken when the climate sensor is the SHT31.
I2C_SDA_PIN, I2C_SCL_PIN = 2, 3


@dataclass(frozen=True)
class HardwareSettings:
    """The node's wiring (BCM GPIO numbers); docs/hardware.md shows each connection.

    The simulated yard uses the same numbers on gpiozero's mock pins.
    """

    climate_sensor: str = "dht22"  # one of CLIMATE_SENSORS
    dht_pin: int = 4
    dht_power_pin: int | None = None
    sht31_address: int = 0x44
    i2c_bus: int = 1
    rain_plate_pin: int = 17
    rain_plate_active_low: bool = True
    wet_after_s: float = 0.05
    dry_after_s: float = 30.0
    gauge_pin: int | None = 27
    mm_per_tip: float = 0.2794
    beacon_pin: int | None = 23
    beacon_active_high: bool = True
    buzzer_pin: int | None = 24
    silence_pin: int | None = 25
    # (tray, sheltered-end switch, open-end switch or None); the file's default is
    # DEFAULT_TRAY_PINS for the first four of the node's trays.
    tray_pins: tuple[tuple[str, int, int | None], ...] = ()


def _read_tray_pins(section: Section, trays: tuple[str, ...]
                    ) -> tuple[tuple[str, int, int | None], ...]:
    tray_pins: list[tuple[str, int, int | None]] = []
    for index, tray in enumerate(trays):
        if section.has(tray):
            value = section.list_of(tray, None, "a list [sheltered_pin, open_pin]")
            if (isinstance(value, list) and 1 <= len(value) <= 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 27
                            for v in value)):
                tray_pins.append((tray, value[0], value[1] if len(value) == 2 else None))
            else:
                section.problem(tray, "must be [sheltered_pin] or [sheltered_pin, open_pin], "
                                      "GPIO 0..27")
        elif index < len(DEFAULT_TRAY_PINS):
            tray_pins.append((tray, *DEFAULT_TRAY_PINS[index]))
        else:
            section.problem(tray, "no default pins for a fifth tray: give [sheltered, open]")
    section.finish()
    return tuple(tray_pins)


def read_hardware(section: Section, trays: tuple[str, ...]) -> HardwareSettings:
    d = Defaults(HardwareSettings)

    def pin(name: str) -> int | None:
        return section.integer(name, getattr(d, name), minimum=0, maximum=27)

    tray_pins = _read_tray_pins(section.table("trays"), trays)
    settings = HardwareSettings(
        climate_sensor=section.string("climate_sensor", d.climate_sensor,
                                      choices=CLIMATE_SENSORS),
        dht_pin=pin("dht_pin"),
        dht_power_pin=pin("dht_power_pin"),
        sht31_address=section.integer("sht31_address", d.sht31_address, minimum=0x44,
                                      maximum=0x45),
        i2c_bus=section.integer("i2c_bus", d.i2c_bus, minimum=0, maximum=10),
        rain_plate_pin=pin("rain_plate_pin"),
        rain_plate_active_low=section.boolean("rain_plate_active_low", d.rain_plate_active_low),
        wet_after_s=section.number("wet_after_s", d.wet_after_s, minimum=0.0, maximum=0.9),
        dry_after_s=section.number("dry_after_s", d.dry_after_s, minimum=0.0, maximum=3600),
        # gauge = false: a node without a tipping bucket (rain_mm is then null). The
        # key is not a field: it only switches gauge_pin off, so its default is here.
        gauge_pin=pin("gauge_pin") if section.boolean("gauge", True) else None,
        mm_per_tip=section.number("mm_per_tip", d.mm_per_tip, minimum=0.01, maximum=10),
        beacon_pin=pin("beacon_pin"),
        beacon_active_high=section.boolean("beacon_active_high", d.beacon_active_high),
        buzzer_pin=pin("buzzer_pin"),
        silence_pin=pin("silence_pin"),
        tray_pins=tray_pins,
    )
    used: dict[int, str] = {}
    named = [("dht_pin", settings.dht_pin), ("dht_power_pin", settings.dht_power_pin),
             ("rain_plate_pin", settings.rain_plate_pin), ("gauge_pin", settings.gauge_pin),
             ("beacon_pin", settings.beacon_pin), ("buzzer_pin", settings.buzzer_pin),
             ("silence_pin", settings.silence_pin)]
    if settings.climate_sensor == "sht31":
        named = [*named[2:], ("i2c SDA", I2C_SDA_PIN), ("i2c SCL", I2C_SCL_PIN)]
    for tray, sheltered, open_end in settings.tray_pins:
        named += [(f"trays.{tray}", sheltered), (f"trays.{tray}", open_end)]
    for name, number in named:
        if isinstance(number, int):
            if number in used:
                section.problem(name, f"GPIO {number} is already used by {used[number]}")
            used[number] = name
    section.finish()
    return settings


HARDWARE = ("simulated", "raspberry-pi")
CLOCKS = ("ntp", "trusted")


@dataclass(frozen=True)
class NodeSettings:
    source: Path
    yard: str
    node: str
    mqtt: MqttSettings
    outbox: OutboxSettings
    sample_interval_s: float = 10.0
    trays: tuple[str, ...] = ("t1",)
    # "simulated" drives the same drivers through gpiozero's mock pins.
    hardware: str = "simulated"
    simulation_seed: int = 1
    simulation_speed: float = 1.0
    # A scripted day for the simulated yard (the demo's: secadero/day.py writes it):
    # its showers and when the workers move the trays, instead of random weather.
    simulation_script: Path | None = None
    # "ntp": hold readings until the kernel says the clock is synchronised (a Pi
    # without an RTC); "trusted": the wall clock is right from boot (RTC, simulation).
    # The file's default is "ntp" on a raspberry-pi.
    clock: str = "trusted"
    pins: HardwareSettings = field(default_factory=HardwareSettings)
    # The humidity sensor's salt-test correction, written by `secadero edge
    # calibrate` (edge/calibration.py); relative to the config file's folder.
    calibration_file: Path = Path("humidity-calibration.json")


def read_node(root: Section) -> NodeSettings:
    d = Defaults(NodeSettings)
    node = root.table("node", required=True)
    yard_id = node.identifier("yard", d.yard)
    node_id = node.identifier("id", d.node)
    trays = node.list_of("trays", d.trays, "a list of tray ids")
    tray_ids: tuple[str, ...] = ()
    if isinstance(trays, list):
        for tray in trays:
            if not is_valid_id(tray):
                node.problem("trays", f"{tray!r} is not an id")
        tray_ids = tuple(str(t) for t in trays)
    sample = node.number("sample_interval_s", d.sample_interval_s, minimum=0.05, maximum=3600)
    hardware = node.string("hardware", d.hardware, choices=HARDWARE)
    seed = node.integer("simulation_seed", d.simulation_seed)
    speed = node.number("simulation_speed", d.simulation_speed, minimum=0.001, maximum=10_000)
    script = node.path("simulation_script", d.simulation_script)
    clock = node.string("clock", "ntp" if hardware == "raspberry-pi" else d.clock,
                        choices=CLOCKS)
    calibration_file = node.path("calibration_file", str(d.calibration_file))
    node.finish()

    outbox = read_outbox(root.table("outbox"))
    client_id = f"node-{yard_id}-{node_id}" if yard_id and node_id else None
    return NodeSettings(
        source=root.base_dir,
        yard=yard_id,
        node=node_id,
        mqtt=read_mqtt(root.table("mqtt"), default_client_id=client_id),
        outbox=outbox,
        sample_interval_s=sample,
        trays=tray_ids,
        hardware=hardware,
        simulation_seed=seed,
        simulation_speed=speed,
        simulation_script=script,
        clock=clock,
        pins=read_hardware(root.table("hardware"), tray_ids),
        calibration_file=calibration_file or root.base_dir / d.calibration_file,
    )




def load_node_settings(path: str | Path, env: Mapping[str, str] | None = None) -> NodeSettings:
    """The node's settings from ``path``; raises ``ConfigError`` with every problem."""
    return load(Path(path), read_node, env)
