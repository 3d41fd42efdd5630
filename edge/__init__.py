"""The node agent: sampling, rain and tray interrupts, durable outbox, MQTT, local alarm.

- ``agent``: ``NodeAgent``, the threads and the delivery rules
- ``outbox``: the SQLite outbox (WAL, synchronous=FULL), bounded, with its drop policy
- ``link``: the paho-mqtt 2.x connection (QoS 1, retained status, Last Will, backoff)
- ``clock``: ``ClockGuard``, which holds readings until the wall clock can be trusted
- ``alarm``: ``LocalAlarm``, beacon and buzzer from the plate and the server's alert
- ``hardware``: builds the drivers from the settings (real GPIO or the simulated yard)
- ``commands``: ``secadero edge run`` and ``secadero edge status``

The commented sample settings are ``edge/node.example.toml``; what the node
promises is in docs/hardware.md.
"""
