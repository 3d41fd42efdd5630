"""The node's hardware layer: drivers in the manner of gpiozero devices, and a simulated yard.

- ``dht``: ``DHT22Sensor`` (adafruit-circuitpython-dht behind ``DHTBackend``;
  ``ScriptedDHT`` plays readings and every failure mode in tests)
- ``sht31``: ``SHT31Sensor`` on I2C, the more reliable choice
- ``rain``: ``RainPlate`` (debounce, wet/dry hysteresis), ``TippingBucket``
- ``trays``: ``TrayLimitSwitch`` (extended, retracted, moving, unknown)
- ``outputs``: ``Beacon``, ``Buzzer``, ``SilenceButton``
- ``filters``: pure functions (median, plausibility, debounce, hysteresis)
- ``simulation``: ``WeatherModel``, ``SimulatedDHT``, ``SimulatedYard``
- ``provisioning/``: install script and systemd unit for Raspberry Pi OS

Wiring: docs/hardware.md. Pins come from gpiozero's pin factory, injected
(``pin_factory=``; ``MockFactory`` in tests and in the simulated yard).
"""
