"""Builds the node's devices from its settings: real GPIO or the simulated yard.

Both paths construct the same drivers (firmware/); only the pin factory and
the climate sensor's backend differ. The agent never knows which it got.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from secadero.firmware.dht import DHT22Sensor, Reading
from secadero.firmware.health import ThrottleFlags, WifiSignal
from secadero.firmware.outputs import Beacon, Buzzer, SilenceButton
from secadero.firmware.rain import RainPlate, TippingBucket
from secadero.firmware.simulation import (
    SimulatedDHT,
    SimulatedYard,
    WeatherModel,
    YardPins,
    load_day_script,
)
from secadero.firmware.trays import TrayLimitSwitch
from secadero.settings import NodeSettings


class ClimateSensor(Protocol):
    def read(self) -> Reading: ...

    def close(self) -> None: ...


@dataclass
class NodeHardware:
    """The devices of one node; ``close()`` releases them all (idempotent)."""

    climate: ClimateSensor | None
    plate: RainPlate
    gauge: TippingBucket | None
    trays: dict[str, TrayLimitSwitch]
    beacon: Beacon | None
    buzzer: Buzzer | None
    silence: SilenceButton | None
    climate_name: str = "dht22"
    # The node's own condition for its status; None: not reported.
    throttle: ThrottleFlags | None = None
    wifi: WifiSignal | None = None
    simulation: SimulatedYard | None = None
    pin_factory: Any = None
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.simulation is not None:
            self.simulation.close()
        devices: list[Any] = [self.climate, self.plate, self.gauge, *self.trays.values(),
                              self.beacon, self.buzzer, self.silence]
        for device in devices:
            if device is not None:
                with contextlib.suppress(Exception):
                    device.close()


def build_real_climate(settings: NodeSettings) -> ClimateSensor | None:
    """The node's real climate sensor alone (``None`` for ``climate_sensor = "none"``).

    ``secadero edge calibrate`` uses it without opening the rest of the node.
    """
    pins = settings.pins
    if pins.climate_sensor == "dht22":
        from secadero.firmware.dht import AdafruitDHTBackend

        return DHT22Sensor(AdafruitDHTBackend(pins.dht_pin), power_pin=pins.dht_power_pin)
    if pins.climate_sensor == "sht31":
        from secadero.firmware.sht31 import SHT31Sensor, SMBus2Bus

        return SHT31Sensor(SMBus2Bus(pins.i2c_bus), address=pins.sht31_address)
    return None


def build_hardware(settings: NodeSettings) -> NodeHardware:
    """The devices for ``settings.hardware`` (``simulated`` or ``raspberry-pi``)."""
    pins = settings.pins
    simulated = settings.hardware == "simulated"
    if simulated:
        from gpiozero.pins.mock import MockFactory

        factory: Any = MockFactory()
    else:
        factory = None  # gpiozero picks lgpio on Raspberry Pi OS
    opened: list[Any] = []

    def keep(device: Any) -> Any:
        opened.append(device)
        return device

    try:
        plate = keep(RainPlate(pins.rain_plate_pin, active_low=pins.rain_plate_active_low,
                               wet_after_s=pins.wet_after_s, dry_after_s=pins.dry_after_s,
                               pin_factory=factory))
        gauge = (keep(TippingBucket(pins.gauge_pin, mm_per_tip=pins.mm_per_tip,
                                    pin_factory=factory))
                 if pins.gauge_pin is not None else None)
        trays = {tray: keep(TrayLimitSwitch(sheltered, open_end, pin_factory=factory))
                 for tray, sheltered, open_end in pins.tray_pins}
        beacon = (keep(Beacon(pins.beacon_pin, active_high=pins.beacon_active_high,
                              pin_factory=factory)) if pins.beacon_pin is not None else None)
        buzzer = (keep(Buzzer(pins.buzzer_pin, pin_factory=factory))
                  if pins.buzzer_pin is not None else None)
        silence = (keep(SilenceButton(pins.silence_pin, pin_factory=factory))
                   if pins.silence_pin is not None else None)
        simulation: SimulatedYard | None = None
        climate: ClimateSensor | None = None
        if simulated:
            plan = None
            if settings.simulation_script is not None:
                script = load_day_script(settings.simulation_script)
                # Every node of the demo on one simulated clock, however late it started.
                start_s = script.sim_time(time.time(), settings.simulation_speed)
                model = WeatherModel(settings.simulation_seed, start_s=start_s,
                                     showers=script.showers)
                plan = script.trays
            else:
                model = WeatherModel(settings.simulation_seed, start_s=time.time())
            yard_pins = YardPins(
                rain_plate=pins.rain_plate_pin, gauge=pins.gauge_pin,
                trays={tray: (sheltered, open_end) for tray, sheltered, open_end
                       in pins.tray_pins},
                rain_plate_active_low=pins.rain_plate_active_low)
            simulation = SimulatedYard(model, factory, yard_pins,
                                       speed=settings.simulation_speed, plan=plan)
            # The yard just drove the trays' switches to "extended": let the
            # debounce settle so the agent starts from it instead of reporting
            # every tray as freshly extended.
            time.sleep(0.25)
            if pins.climate_sensor != "none":
                backend = SimulatedDHT(model, simulation.sim_time,
                                       seed=settings.simulation_seed)
                # The simulated part has no 2-s rule; keep the driver's retries and checks.
                climate = keep(DHT22Sensor(backend, min_interval_s=0.0, tries=4,
                                           power_pin=pins.dht_power_pin, pin_factory=factory))
        else:
            climate = build_real_climate(settings)
            if climate is not None:
                keep(climate)
    except Exception:
        for device in reversed(opened):
            with contextlib.suppress(Exception):
                device.close()
        raise
    # The machine's own readings, simulated yard or not: on a PC the Pi's firmware
    # file is absent and the status says null, which is the truth.
    return NodeHardware(climate=climate, plate=plate, gauge=gauge, trays=trays, beacon=beacon,
                        buzzer=buzzer, silence=silence, climate_name=pins.climate_sensor,
                        throttle=ThrottleFlags(), wifi=WifiSignal(),
                        simulation=simulation, pin_factory=factory)
