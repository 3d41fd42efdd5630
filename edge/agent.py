"""The node agent: sample, store, publish, re-send until acknowledged, sound the alarm.

Threads and what each owns:

- the *sampler* reads the climate sensor, gauge and trays every
  ``sample_interval_s`` and stores one telemetry message (a DHT22 read may
  take seconds of retries, so it never blocks the publisher);
- gpiozero's callback threads report the rain plate and tray switches: the
  local alarm switches at once, then an ``event`` is stored;
- the *main loop* (``run``) moves stored messages to the broker in ``seq``
  order, applies acks, publishes the retained status, writes the status
  file for ``secadero edge status`` and pets systemd's watchdog;
- the MQTT link's network thread (``edge/link.py``).

Delivery: a message is committed to the outbox (and so has its ``seq``)
before anything is published. Unacknowledged messages are sent again, in
order, from the oldest unacked one, after a reconnect or when the oldest
was sent ``resend_after_s`` ago without an ack (doubling, up to 16 times
that, while no ack arrives at all). Re-sends are harmless: the
server stores a reading under its measurement time, so a duplicate
overwrites itself (docs/protocol.md).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secadero import __version__, contract
from secadero.edge.alarm import LocalAlarm
from secadero.edge.calibration import BadCalibrationFile, HumidityCorrection
from secadero.edge.clock import ClockGuard, Stamp, always_synced, kernel_clock_synced
from secadero.edge.hardware import NodeHardware
from secadero.edge.link import NodeLink
from secadero.edge.outbox import kernel_boot_id, open_outbox
from secadero.edge.sdnotify import Notifier
from secadero.errors import SensorError, StorageError
from secadero.firmware.health import DiskFree
from secadero.settings import NodeSettings

log = logging.getLogger(__name__)

# Messages handed to paho and not yet PUBACKed by the broker.
PUBLISH_WINDOW = 1000
# Messages sent and not yet acked by the server: a bound on re-send work.
UNACKED_WINDOW = 20_000
# Messages measured while the disk was full, kept in RAM until it has room.
UNSAVED_MAX = 10_000
# Failed climate samples in a row before a sensor_fault event.
FAULT_AFTER_SAMPLES = 3
STATUS_INTERVAL_S = 60.0
STATUS_FILE_INTERVAL_S = 2.0
CHECKPOINT_INTERVAL_S = 5.0
# Re-send rounds without an ack back off up to this multiple of resend_after_s.
MAX_RESEND_FACTOR = 16


@dataclass
class _Unsaved:
    message: contract.Telemetry | contract.Event
    stamp: Stamp


def status_path_for(outbox_path: Path) -> Path:
    """Where the running agent writes its state for ``secadero edge status``."""
    return outbox_path.with_name(outbox_path.name + ".status.json")


def write_atomically(path: Path, data: bytes) -> None:
    """Write-temp, fsync, rename, fsync the directory: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class NodeAgent:
    """One node: wires hardware, outbox, clock guard, MQTT link and alarm together.

    Everything with a side effect is injected (hardware, clocks, the outbox
    path through ``settings``), so tests build an agent on mock pins.
    """

    def __init__(self, settings: NodeSettings, hardware: NodeHardware, *,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 clock_synced: Callable[[], bool] | None = None,
                 notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.hardware = hardware
        self._wall = wall
        self._monotonic = monotonic
        self._started_mono = monotonic()
        self.notifier = notifier or Notifier()
        self.kernel_boot = kernel_boot_id()
        self.outbox = open_outbox(settings.outbox.path, max_bytes=settings.outbox.max_bytes)
        # Read once at start: `secadero edge calibrate` runs with the agent stopped.
        self.calibration = self._load_calibration(settings.calibration_file)
        self.disk_free = DiskFree(settings.outbox.path)
        self._last_health: contract.NodeHealth | None = None
        if clock_synced is None:
            clock_synced = kernel_clock_synced if settings.clock == "ntp" else always_synced
        self.clock = ClockGuard(synced=clock_synced, wall=wall, monotonic=monotonic,
                                last_issued_s=self.outbox.last_issued_ts)
        self.alarm = LocalAlarm(hardware.beacon, hardware.buzzer, clock=monotonic)
        self.link = NodeLink(settings.mqtt, yard=settings.yard, node=settings.node,
                             version=__version__, will_ts=wall())
        self.topics = {kind: contract.node_topic(settings.yard, settings.node, kind)
                       for kind in ("telemetry", "event", "status")}
        self.counters: collections.Counter[str] = collections.Counter()
        self._record_lock = threading.RLock()
        self._unsaved: collections.deque[_Unsaved] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._state_lock = threading.Lock()
        # pump() runs in the main loop and, for events, in GPIO callback threads.
        self._pump_lock = threading.Lock()
        self._reconnected = False
        # Which connection (link.connects) the pump last published on, and the
        # first seq it published on it: tells a re-send after a reconnect from
        # a first publish that merely raced the connect callback.
        self._connection_of_first_sent = -1
        self._first_sent_on_connection = 0
        self._acks_in: list[int] = []
        self._published = 0
        self._pubacked = 0
        self._cursor = 0
        self._sent: collections.deque[tuple[int, float]] = collections.deque()
        self._acked_before = 0
        self._resend_factor = 1
        self._climate_failures = 0
        self._climate_fault = False
        self._last_climate_error = ""
        self._last_sample: dict[str, Any] = {}
        self.last_ack_seq: int | None = None
        self.last_ack_wall: float | None = None
        self._alert: contract.Alert | None = None
        self._last_jumps = 0
        self._sampler: threading.Thread | None = None
        self._wire()

    @staticmethod
    def _load_calibration(path: Path) -> HumidityCorrection | None:
        # A damaged file must not keep the node (and its rain alarm) from starting: it
        # runs uncalibrated, says so in the log, and its status shows no calibration.
        try:
            return HumidityCorrection.load(path)
        except BadCalibrationFile as exc:
            log.error("humidity published uncorrected: %s", exc)
            return None

    # -- wiring --------------------------------------------------------------

    def _wire(self) -> None:
        hw = self.hardware
        hw.plate.when_wet = lambda: self._plate(True)
        hw.plate.when_dry = lambda: self._plate(False)
        for tray, switch in hw.trays.items():
            switch.when_changed = lambda state, tray=tray: self._tray(tray, state)
        if hw.silence is not None:
            hw.silence.when_pressed = self._silence
        self.alarm.plate(hw.plate.is_wet)
        link = self.link
        link.on_connected = self._on_connected
        link.on_disconnected = self._wake.set
        link.on_ack = self._on_ack
        link.on_alert = self._on_alert
        link.on_bad_message = self._on_bad_message
        link.on_published = self._on_published

    def _plate(self, wet: bool) -> None:
        # The alarm first: it must not wait for the disk or the network.
        self.alarm.plate(wet)
        self.record(contract.Event(ts=0.0, seq=0,
                                   type="rain_started" if wet else "rain_stopped"))

    def _tray(self, tray: str, state: str) -> None:
        if state in ("extended", "retracted"):
            self.record(contract.Event(ts=0.0, seq=0, type=f"tray_{state}", tray=tray))

    def _silence(self) -> None:
        self.alarm.silence()
        self.counters["silenced"] += 1

    # -- link callbacks (network thread) -------------------------------------

    def _on_connected(self) -> None:
        with self._state_lock:
            self._reconnected = True
        self._wake.set()

    def _on_ack(self, seq: int) -> None:
        with self._state_lock:
            # Kept one by one, not as a running maximum: one bogus huge ack must
            # not mask every real ack after it.
            if len(self._acks_in) < 1000:
                self._acks_in.append(seq)
            else:
                self.counters["acks_overflow"] += 1
            self.last_ack_wall = self._wall()
        self._wake.set()

    def _on_alert(self, alert: contract.Alert) -> None:
        self._alert = alert
        self.alarm.alert(alert.state == "raised")

    def _on_bad_message(self, kind: str, reason: str) -> None:
        self.counters[f"bad_{kind}"] += 1
        self.counters[f"bad_{kind}_{reason}"] += 1

    def _on_published(self, mid: int) -> None:
        with self._state_lock:
            self._pubacked += 1
        self._wake.set()

    # -- storing -------------------------------------------------------------

    def record(self, message: contract.Telemetry | contract.Event) -> None:
        """Stamp a message with the node's time and commit it to the outbox (or hold it in RAM).

        An event is then published from this thread at once, rather than
        when the main loop next wakes: rain must reach the server fast.
        """
        with self._record_lock:
            stamp = self._stamp()
            self._unsaved.append(_Unsaved(message, stamp))
            if len(self._unsaved) > UNSAVED_MAX:
                self._unsaved.popleft()
                self.counters["dropped_unsaved"] += 1
            self._flush_unsaved()
        if isinstance(message, contract.Event) and self.link.connected.is_set():
            try:
                self.pump()
            except Exception:  # the main loop retries; never fail a GPIO callback
                log.exception("immediate publish of an event failed")
        self._wake.set()

    def _stamp(self) -> Stamp:
        stamp = self.clock.stamp()
        if self.clock.became_trusted and self.clock.offset_s is not None:
            try:
                stamped, dropped = self.outbox.stamp_held(self.kernel_boot, self.clock.offset_s)
            except StorageError as exc:
                log.warning("could not stamp held readings yet: %s", exc)
            else:
                if stamped or dropped:
                    log.info("clock trusted: stamped %d held messages, dropped %d of an "
                             "earlier boot", stamped, dropped)
        if self.clock.jumps != self._last_jumps:
            self._last_jumps = self.clock.jumps
            self.counters["clock_jumps"] += 1
            log.warning("wall clock stepped by %+.1f s", self.clock.last_jump_s)
        return stamp

    def _flush_unsaved(self) -> None:
        while self._unsaved:
            item = self._unsaved[0]
            held = item.stamp.ts is None
            message = item.message
            if not held:
                message = _with_ts(message, item.stamp.ts)  # type: ignore[arg-type]
            try:
                self.outbox.add(message, mono_s=item.stamp.mono_s, kernel_boot=self.kernel_boot,
                                held=held)
            except StorageError as exc:
                self.counters["store_errors"] += 1
                if self.counters["store_errors"] in (1, 10, 100) or \
                        self.counters["store_errors"] % 1000 == 0:
                    log.error("cannot store to the outbox (%d in RAM): %s", len(self._unsaved),
                              exc)
                return
            self._unsaved.popleft()

    # -- sampling ------------------------------------------------------------

    def sample(self) -> None:
        """Read every sensor once and store one telemetry message."""
        hw = self.hardware
        temperature_c = humidity_pct = None
        if hw.climate is not None:
            try:
                reading = hw.climate.read()
            except SensorError as exc:
                self._climate_failed(exc)
            else:
                temperature_c, humidity_pct = reading.temperature_c, reading.humidity_pct
                self._climate_ok()
        humidity_raw_pct = None
        if humidity_pct is not None and self.calibration is not None:
            # The corrected value is published; the sensor's own stays in the record for audit.
            humidity_raw_pct = humidity_pct
            humidity_pct = self.calibration.apply(humidity_raw_pct)
        rain_mm = hw.gauge.take_mm() if hw.gauge is not None else None
        telemetry = contract.Telemetry(
            ts=0.0, seq=0, temperature_c=temperature_c, humidity_pct=humidity_pct,
            rain=hw.plate.is_wet, rain_mm=rain_mm,
            trays={tray: switch.state for tray, switch in hw.trays.items()},
            humidity_raw_pct=humidity_raw_pct)
        self._last_sample = {"temperature_c": temperature_c, "humidity_pct": humidity_pct,
                             "humidity_raw_pct": humidity_raw_pct,
                             "rain": telemetry.rain, "rain_mm": rain_mm,
                             "trays": dict(telemetry.trays)}
        self.counters["samples"] += 1
        self.record(telemetry)

    def _climate_failed(self, exc: SensorError) -> None:
        self._climate_failures += 1
        self._last_climate_error = f"{type(exc).__name__}: {exc}"
        self.counters["climate_read_errors"] += 1
        if self._climate_failures == FAULT_AFTER_SAMPLES and not self._climate_fault:
            self._climate_fault = True
            log.warning("%s failing: %s", self.hardware.climate_name, exc)
            self.record(contract.Event(ts=0.0, seq=0, type="sensor_fault",
                                       sensor=self.hardware.climate_name,
                                       detail=self._last_climate_error[:200]))

    def _climate_ok(self) -> None:
        self._climate_failures = 0
        if self._climate_fault:
            self._climate_fault = False
            self.record(contract.Event(ts=0.0, seq=0, type="sensor_recovered",
                                       sensor=self.hardware.climate_name))

    def _sampler_loop(self) -> None:
        interval_s = self.settings.sample_interval_s
        next_s = self._monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # one bad sample must not stop the node
                log.exception("sample failed")
                self.counters["sample_failures"] += 1
            next_s += interval_s
            now_s = self._monotonic()
            if next_s < now_s:
                # We fell behind (a slow sensor): skip, never burst to catch up.
                self.counters["samples_late"] += 1
                next_s = now_s + interval_s
            self._stop.wait(next_s - now_s)

    # -- publishing ------------------------------------------------------------

    def pump(self) -> None:
        """Apply acks, then hand the next stored messages to the broker, in order."""
        with self._pump_lock:
            self._pump_locked()

    def _pump_locked(self) -> None:
        with self._state_lock:
            acks, self._acks_in = self._acks_in, []
            reconnected, self._reconnected = self._reconnected, False
        acked = self.outbox.acked_seq
        if acks:
            last_seq = self.outbox.last_seq
            valid = [seq for seq in acks if seq <= last_seq]
            # Beyond anything this node assigned: counted (acks_ignored) and ignored.
            for bogus in {seq for seq in acks if seq > last_seq}:
                log.warning("ignored an ack for seq %d: the last seq sent is %d", bogus,
                            last_seq)
            to_apply = [*([max(valid)] if valid else []),
                        *sorted({seq for seq in acks if seq > last_seq})]
            for seq in to_apply:
                try:
                    self.outbox.ack(seq)
                except StorageError as exc:
                    log.warning("could not apply ack %d: %s", seq, exc)
                    with self._state_lock:
                        self._acks_in.append(seq)  # try again next round
            acked = self.outbox.acked_seq
            if valid:
                self.last_ack_seq = acked
        while self._sent and self._sent[0][0] <= acked:
            self._sent.popleft()
        if reconnected:
            self._publish_status()
            # The pump may already have published on this new connection before
            # it heard of it (the flag is set just after `connected`): if every
            # unacked message went out on this connection, there is nothing to
            # send again.
            if not (self._connection_of_first_sent == self.link.connects
                    and self._first_sent_on_connection <= acked + 1):
                self._rewind(acked, "reconnect")
        if not self.link.connected.is_set():
            return
        now_s = self._monotonic()
        if acked > self._acked_before or (acks and acked < self._cursor):
            # An ack, even one that does not move (the server waits for a seq it
            # never got, e.g. it started after this node did), proves the server
            # is up: back to re-sending after resend_after_s, not after x16.
            self._acked_before = acked
            self._resend_factor = 1
        if self._sent and (now_s - self._sent[0][1]
                           >= self.settings.outbox.resend_after_s * self._resend_factor):
            self._rewind(acked, "timeout")
            # No ack for a whole round: the server is down or slow. Each re-send
            # round adds to what the broker queues for the server, so the rounds
            # get rarer (x2, up to x16) until an ack arrives.
            self._resend_factor = min(self._resend_factor * 2, MAX_RESEND_FACTOR)
        self._cursor = max(self._cursor, acked)
        while True:
            with self._state_lock:
                inflight = self._published - self._pubacked
            room = min(PUBLISH_WINDOW - inflight, UNACKED_WINDOW - (self._cursor - acked))
            if room <= 0:
                return
            batch = self.outbox.pending(self._cursor, limit=min(room, 500))
            if not batch:
                return
            for item in batch:
                if self._connection_of_first_sent != self.link.connects:
                    self._connection_of_first_sent = self.link.connects
                    self._first_sent_on_connection = item.seq
                info = self.link.publish(self.topics[item.kind], item.payload)
                if info.rc != 0:
                    # Lost the connection meanwhile: paho keeps it and we rewind on reconnect.
                    return
                with self._state_lock:
                    self._published += 1
                self._cursor = item.seq
                self._sent.append((item.seq, now_s))
                self.counters["published"] += 1

    def _rewind(self, acked: int, why: str) -> None:
        if self._cursor > acked:
            self.counters[f"resends_{why}"] += 1
            log.info("re-sending from seq %d (%s)", acked + 1, why)
        self._cursor = acked
        self._sent.clear()

    def _status_message(self) -> contract.Status:
        return contract.Status(state="online", ts=round(self._wall(), 3), version=__version__,
                               buffered=self.outbox.buffered,
                               uptime_s=round(self._monotonic() - self._started_mono, 1),
                               health=self._refresh_health())

    def _refresh_health(self) -> contract.NodeHealth:
        self._last_health = self.health()
        return self._last_health

    def health(self) -> contract.NodeHealth:
        """What the node knows of its own condition (``None`` where it cannot know)."""
        hw = self.hardware
        rssi = hw.wifi.rssi_dbm if hw.wifi is not None else None
        return contract.NodeHealth(
            throttled=hw.throttle.value if hw.throttle is not None else None,
            wifi_rssi_dbm=rssi,
            disk_free_bytes=self.disk_free.value,
            clock=self.clock.state,
            calibrated_ts=self.calibration.calibrated_ts if self.calibration else None)

    def _publish_status(self) -> None:
        if self.link.connected.is_set():
            self.link.publish(self.link.status_topic, contract.encode(self._status_message()),
                              retain=True)
            self._last_status_s = self._monotonic()

    # -- status file -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The agent's state as ``secadero edge status`` shows it."""
        stats = self.outbox.stats()
        hw = self.hardware
        return {
            "yard": self.settings.yard,
            "node": self.settings.node,
            "pid": os.getpid(),
            "version": __version__,
            "updated_ts": round(self._wall(), 3),
            "uptime_s": round(self._monotonic() - self._started_mono, 1),
            "hardware": self.settings.hardware,
            "mqtt": {"connected": self.link.connected.is_set(), "connects": self.link.connects,
                     "connect_failures": self.link.connect_failures,
                     "short_sessions": self.link.short_sessions,
                     "broker": f"{self.settings.mqtt.host}:{self.settings.mqtt.port}"},
            "clock": {"state": self.clock.state, "trusted": self.clock.trusted,
                      "jumps": self.clock.jumps, "source": self.settings.clock},
            # As last sent: the status file is written every 2 s, and on an older Pi
            # image each fresh reading runs `vcgencmd`.
            "health": dataclasses.asdict(self._last_health or self._refresh_health()),
            "calibration": (None if self.calibration is None else
                            {"gain": self.calibration.gain,
                             "offset_pct": self.calibration.offset_pct,
                             "calibrated_ts": self.calibration.calibrated_ts,
                             "file": str(self.settings.calibration_file)}),
            "sensors": {
                "climate": {"kind": hw.climate_name, "fault": self._climate_fault,
                            "last_error": self._last_climate_error or None},
                "rain_plate": {"wet": hw.plate.is_wet},
                "gauge_mm_total": hw.gauge.total_mm if hw.gauge is not None else None,
                "trays": {tray: switch.state for tray, switch in hw.trays.items()},
                "last_sample": self._last_sample,
            },
            "alarm": {"beacon": self.alarm.beacon_on, "buzzer": self.alarm.buzzer_on,
                      "silenced": self.alarm.silenced, "episodes": self.alarm.episodes,
                      "alert": self._alert.state if self._alert else None},
            "outbox": {"buffered": stats.buffered, "held": stats.held, "bytes": stats.bytes,
                       "max_bytes": stats.max_bytes, "last_seq": stats.next_seq - 1,
                       "acked_seq": stats.acked_seq, "oldest_ts": stats.oldest_ts,
                       "unsaved_in_ram": len(self._unsaved), **stats.counters},
            "last_ack": {"seq": self.last_ack_seq, "ts": self.last_ack_wall},
            "boot": {"count": stats.boot_count, "id": stats.node_boot_id,
                     "kernel_boot_id": self.kernel_boot},
            "counters": dict(self.counters),
        }

    def _write_status_file(self) -> None:
        path = status_path_for(self.settings.outbox.path)
        try:
            write_atomically(path, json.dumps(self.snapshot(), indent=1).encode())
        except OSError as exc:
            self.counters["status_file_errors"] += 1
            log.debug("cannot write %s: %s", path, exc)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> NodeAgent:
        """Start the simulation (if any), the MQTT link and the sampler thread."""
        if self.hardware.simulation is not None:
            self.hardware.simulation.start()
        self.link.start()
        self._sampler = threading.Thread(target=self._sampler_loop, name="sampler",
                                         daemon=True)
        self._sampler.start()
        self.notifier.ready()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def stop_from_signal(self) -> None:
        """``stop()`` for a signal handler: sets only the stop flag, which the main loop
        reads every 0.2 s. The handler runs in the main thread between two bytecodes,
        possibly while that thread holds ``_wake``'s lock (inside ``_wake.wait`` or
        ``_wake.clear``): ``_wake.set()`` there would wait for that lock for ever (seen:
        a node that never stopped on SIGTERM)."""
        self._stop.set()

    def run(self) -> None:
        """The main loop until ``stop()``; then a clean shutdown."""
        self.start()
        self._last_status_s = self._monotonic()
        last_file_s = 0.0
        last_checkpoint_s = self._monotonic()
        last_watchdog_s = 0.0
        watchdog_s = self.notifier.watchdog_interval_s
        try:
            while not self._stop.is_set():
                self._wake.wait(0.2)
                self._wake.clear()
                try:
                    with self._record_lock:
                        self._flush_unsaved()
                    self.pump()
                except Exception:  # keep the node alive; the next round retries
                    log.exception("publisher round failed")
                    self.counters["pump_failures"] += 1
                now_s = self._monotonic()
                if now_s - self._last_status_s >= STATUS_INTERVAL_S:
                    self._publish_status()
                    self._last_status_s = now_s
                if now_s - last_file_s >= STATUS_FILE_INTERVAL_S:
                    self._write_status_file()
                    last_file_s = now_s
                if now_s - last_checkpoint_s >= CHECKPOINT_INTERVAL_S:
                    last_checkpoint_s = now_s
                    try:
                        self.outbox.checkpoint()
                    except StorageError as exc:
                        self.counters["checkpoint_errors"] += 1
                        log.debug("checkpoint failed: %s", exc)
                if watchdog_s is not None and now_s - last_watchdog_s >= watchdog_s:
                    self.notifier.watchdog()
                    last_watchdog_s = now_s
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.notifier.stopping()
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=15)
        if self.hardware.simulation is not None:
            self.hardware.simulation.close()
        with contextlib.suppress(Exception):
            self.pump()
        farewell = contract.encode(contract.Status(
            state="offline", ts=round(self._wall(), 3), version=__version__,
            buffered=self.outbox.buffered,
            uptime_s=round(self._monotonic() - self._started_mono, 1)))
        self.link.stop(farewell=farewell)
        self._write_status_file()
        self.outbox.close()
        self.hardware.close()


def _with_ts(message: contract.Telemetry | contract.Event, ts: float
             ) -> contract.Telemetry | contract.Event:
    return dataclasses.replace(message, ts=ts)
