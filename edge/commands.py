"""``secadero edge ...``: the node agent's subcommands.

``run`` logs to stderr (INFO, sparingly) and prints nothing on stdout, so a
supervisor or the demo can run several nodes side by side. ``status`` reads
what the running agent last wrote beside its outbox, and the outbox itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("secadero.edge")


def register(commands: argparse._SubParsersAction) -> None:
    edge = commands.add_parser("edge", help="the node agent at the drying trays")
    sub = edge.add_subparsers(dest="edge_command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="sample the sensors and publish to the broker")
    run.add_argument("--config", required=True, metavar="FILE", help="node settings (TOML)")
    run.set_defaults(handler=_run)
    status = sub.add_parser("status", help="show the node's state: sensors, buffered, "
                                           "last ack, clock")
    status.add_argument("--config", required=True, metavar="FILE", help="node settings (TOML)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(handler=_status)
    calibrate = sub.add_parser(
        "calibrate", help="two-point salt test of the humidity sensor (MgCl2 and NaCl jars); "
                          "run with the node agent stopped")
    calibrate.add_argument("--config", required=True, metavar="FILE",
                           help="node settings (TOML)")
    calibrate.add_argument("--interval", type=float, default=10.0, metavar="S",
                           help="seconds between readings (default 10; the DHT22 needs >= 2)")
    calibrate.add_argument("--settle-minutes", type=float, default=20.0, metavar="MIN",
                           help="how long the reading must hold still to count as settled "
                                "(default 20)")
    calibrate.add_argument("--band", type=float, default=0.5, metavar="PCT",
                           help="how much the readings may vary meanwhile, %% RH (default 0.5)")
    calibrate.set_defaults(handler=_calibrate)


def _load(path: str) -> Any:
    from secadero.settings import load_node_settings, load_or_report

    return load_or_report(load_node_settings, path)


def _run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 2
    # paho and gpiozero are chatty at INFO/DEBUG; the node's own lines are enough.
    logging.getLogger("paho").setLevel(logging.WARNING)
    # EFBIG (a file-size limit) must be an error we handle, not a signal that kills us.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Handle SIGTERM from the first moment: a supervisor may stop us while we start.
    agent: Any = None
    stop_requested = threading.Event()

    def _terminate(signum: int, frame: Any) -> None:
        stop_requested.set()
        if agent is not None:
            agent.stop_from_signal()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)

    from secadero.edge.agent import NodeAgent
    from secadero.edge.hardware import build_hardware
    from secadero.errors import SecaderoError

    try:
        hardware = build_hardware(settings)
    except (SecaderoError, OSError, ImportError) as exc:
        log.error("cannot set up the %s hardware: %s", settings.hardware, exc)
        return 1
    try:
        agent = NodeAgent(settings, hardware)
    except SecaderoError as exc:
        hardware.close()
        log.error("cannot start: %s", exc)
        return 1
    if stop_requested.is_set():
        agent.stop()
    log.info("node %s/%s started (%s hardware, every %g s, outbox %s)", settings.yard,
             settings.node, settings.hardware, settings.sample_interval_s,
             settings.outbox.path)
    agent.run()
    log.info("node %s/%s stopped", settings.yard, settings.node)
    return 0


def _agent_running(settings: Any) -> int | None:
    """The pid of a node agent running on this outbox, from its fresh state file."""
    import os

    from secadero.edge.agent import status_path_for

    try:
        state = json.loads(status_path_for(settings.outbox.path).read_text(encoding="utf-8"))
        pid = int(state["pid"])
        fresh = time.time() - float(state["updated_ts"]) < 10
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not fresh:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it runs as the service user: alive
    return pid


def _calibrate(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 2
    from secadero.edge.calibration import CalibrationError, SaltTest, StabilityWatch
    from secadero.errors import SecaderoError

    pid = _agent_running(settings)
    if pid is not None:
        print(f"El agente del nodo está corriendo (pid {pid}): deténgalo primero / the node "
              "agent is running: stop it first:\n  sudo systemctl stop secadero-node")
        return 1
    if args.interval < 2.0 and settings.hardware != "simulated":
        print("--interval: el DHT22 necesita al menos 2 s entre lecturas / the DHT22 needs "
              ">= 2 s between reads")
        return 2
    if settings.pins.climate_sensor == "none":
        print(f"{args.config}: climate_sensor = \"none\": no humidity sensor to calibrate")
        return 2

    try:
        now, wait, sensor, jar_changed = _calibration_parts(settings)
    except (SecaderoError, OSError, ImportError) as exc:
        print(f"No se puede abrir el sensor / cannot open the sensor "
              f"({settings.pins.climate_sensor}): {exc}")
        return 1
    test = SaltTest(
        sensor.read, wait=wait, now=now, say=print, ask=input, interval_s=args.interval,
        make_watch=lambda: StabilityWatch(window_s=args.settle_minutes * 60,
                                          band_pct=args.band),
        jar_changed=jar_changed)
    try:
        correction = test.run()
        if settings.hardware == "simulated":
            # The simulated jar's clock runs fast; the record keeps the real time of the test.
            correction = dataclasses.replace(correction, calibrated_ts=round(time.time(), 3))
        correction.save(settings.calibration_file)
    except (CalibrationError, SecaderoError, OSError) as exc:
        print(f"Calibración no guardada / calibration not saved: {exc}")
        return 1
    except (KeyboardInterrupt, EOFError):
        print("\nCalibración interrumpida; no se guardó nada / interrupted, nothing saved")
        return 130
    finally:
        sensor.close()
    print(f"Guardada en / saved to {settings.calibration_file}. Arranque el nodo / start the "
          "node:\n  sudo systemctl start secadero-node")
    return 0


def _calibration_parts(settings: Any) -> tuple[Any, Any, Any, Any]:
    """``(now, wait, sensor, jar_changed)`` for the node's own sensor or the simulated jar.

    A simulated node calibrates a simulated DHT22 in a salt jar with a gain
    and offset error, on a clock ``simulation_speed`` times faster than the
    real one: the whole procedure runs on a PC in seconds to minutes.
    """
    if settings.hardware != "simulated":
        from secadero.edge.hardware import build_real_climate

        sensor = build_real_climate(settings)
        return time.time, time.sleep, sensor, None
    from secadero.edge.calibration import reference_humidity_pct
    from secadero.firmware.dht import DHT22Sensor
    from secadero.firmware.simulation import SaltJarDHT

    speed = settings.simulation_speed
    started_wall, started_mono = time.time(), time.monotonic()

    def now() -> float:
        return started_wall + (time.monotonic() - started_mono) * speed

    def wait(seconds: float) -> None:
        time.sleep(seconds / speed)

    jar = SaltJarDHT(now, gain=1.06, offset_pct=-3.5, seed=settings.simulation_seed)
    sensor = DHT22Sensor(jar, min_interval_s=0.0, tries=2, clock=now, sleep=wait)
    print(f"(nodo simulado: frasco simulado, reloj x{speed:g} / simulated jar, clock "
          f"x{speed:g})")
    return now, wait, sensor, lambda salt: jar.put_in(
        reference_humidity_pct(salt, jar.temperature_c))


def _status(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 2
    from secadero.edge.agent import status_path_for
    from secadero.edge.outbox import Outbox
    from secadero.errors import StorageError

    report: dict[str, Any] = {"yard": settings.yard, "node": settings.node}
    path: Path = settings.outbox.path
    state_file = status_path_for(path)
    running: dict[str, Any] | None = None
    try:
        running = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        running = None
    if running is not None:
        report.update(running)
        report["status_age_s"] = round(time.time() - float(running.get("updated_ts", 0)), 1)
    if path.exists():
        try:
            with Outbox(path, max_bytes=settings.outbox.max_bytes, readonly=True) as outbox:
                stats = outbox.stats()
        except StorageError as exc:
            report["outbox_error"] = str(exc)
        else:
            report["outbox"] = {**report.get("outbox", {}), "buffered": stats.buffered,
                                "held": stats.held, "bytes": stats.bytes,
                                "max_bytes": stats.max_bytes, "last_seq": stats.next_seq - 1,
                                "acked_seq": stats.acked_seq, "oldest_ts": stats.oldest_ts,
                                **stats.counters}
    else:
        report["outbox_error"] = f"no outbox at {path} (the node never ran?)"
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
        return 0
    print(_format(report))
    return 0


def _health_line(health: dict[str, Any]) -> str:
    """The node's self-report in one line; "unknown" where it cannot tell (not a Pi, no Wi-Fi)."""
    mask = health.get("throttled")
    if mask is None:
        supply = "supply unknown (no Pi firmware)"
    elif mask & 0x1:
        supply = "UNDER-VOLTAGE NOW"
    elif mask & 0x10000:
        supply = "under-voltage since boot"
    else:
        supply = "supply ok"
    if mask is not None and mask & 0x4:
        supply += ", THROTTLED NOW"
    rssi = health.get("wifi_rssi_dbm")
    disk = health.get("disk_free_bytes")
    calibrated = health.get("calibrated_ts")
    when = (time.strftime("%Y-%m-%d", time.localtime(calibrated)) if calibrated is not None
            else "never")
    return (f"{supply}; wifi {'unknown' if rssi is None else f'{rssi:g} dBm'}; disk free "
            f"{'unknown' if disk is None else f'{disk / 1e9:.1f} GB'}; humidity calibrated "
            f"{when}")


def _format(report: dict[str, Any]) -> str:
    lines = [f"node {report['yard']}/{report['node']}"]
    if "updated_ts" in report:
        age = report.get("status_age_s", 0.0)
        # The agent rewrites its state every 2 s: much older means it is not running.
        stale = "  (STALE: agent not running?)" if age > 10 else ""
        lines.append(f"  agent: pid {report.get('pid')}, state written {age:g} s ago, "
                     f"uptime {report.get('uptime_s')} s{stale}")
        mqtt = report.get("mqtt", {})
        lines.append(f"  mqtt: {'connected' if mqtt.get('connected') else 'NOT connected'} to "
                     f"{mqtt.get('broker')} (connects {mqtt.get('connects')}, "
                     f"failed attempts {mqtt.get('connect_failures')})")
        clock = report.get("clock", {})
        lines.append(f"  clock: {clock.get('state')} (source {clock.get('source')}, "
                     f"jumps {clock.get('jumps')})")
        health = report.get("health") or {}
        if health:
            lines.append("  health: " + _health_line(health))
        sensors = report.get("sensors", {})
        climate = sensors.get("climate", {})
        last = sensors.get("last_sample", {})
        lines.append(f"  climate ({climate.get('kind')}): {last.get('temperature_c')} °C, "
                     f"{last.get('humidity_pct')} %RH"
                     + (f"  FAULT: {climate.get('last_error')}" if climate.get("fault") else ""))
        lines.append(f"  rain plate: {'WET' if sensors.get('rain_plate', {}).get('wet') else 'dry'}"
                     f", gauge total {sensors.get('gauge_mm_total')} mm")
        lines.append("  trays: " + ", ".join(f"{t}={s}" for t, s in
                                           sensors.get("trays", {}).items()))
        alarm = report.get("alarm", {})
        lines.append(f"  alarm: beacon {'ON' if alarm.get('beacon') else 'off'}, buzzer "
                     f"{'ON' if alarm.get('buzzer') else 'off'}, server alert "
                     f"{alarm.get('alert')}")
        ack = report.get("last_ack", {})
        if ack.get("seq") is None:
            lines.append("  last ack: none since the agent started")
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ack["ts"]))
            lines.append(f"  last ack: seq {ack['seq']} at {when}")
    else:
        lines.append("  agent: no state file (not running yet?)")
    if "outbox" in report:
        box = report["outbox"]
        lines.append(f"  outbox: {box.get('buffered')} buffered ({box.get('held')} held for the "
                     f"clock), {box.get('bytes')} of {box.get('max_bytes')} bytes, last seq "
                     f"{box.get('last_seq')}, acked {box.get('acked_seq')}")
        lines.append(f"  dropped: telemetry {box.get('dropped_telemetry')}, events "
                     f"{box.get('dropped_events')}, unstampable "
                     f"{box.get('dropped_unstampable')}; acks ignored {box.get('acks_ignored')}")
    if "outbox_error" in report:
        lines.append(f"  outbox: {report['outbox_error']}")
    return "\n".join(lines)
