"""``secadero server ...``: the server's subcommands."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    server = commands.add_parser("server", help="ingest, alerts and the HTTP API")
    sub = server.add_subparsers(dest="server_command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="subscribe to the yards, store readings in InfluxDB, "
                                     "raise rain alerts")
    run.add_argument("--config", required=True, metavar="FILE", help="server settings (TOML)")
    run.set_defaults(handler=_run)
    ingest = sub.add_parser(
        "ingest", help="store readings only, no alerts: an extra process of a share group "
                       "(docs/scaling.md)")
    ingest.add_argument("--config", required=True, metavar="FILE",
                        help="server settings (TOML)")
    ingest.set_defaults(handler=_ingest_only)
    downsample = sub.add_parser(
        "downsample", help="recompute the hourly series (InfluxDB 1.x) of a period from the "
                           "raw readings", description=(
            "Recompute the hourly series (retention policy 'hourly') of a period from the raw "
            "readings, with the continuous queries' own statements. The server already does "
            "this for the hours of readings that arrive late; this is for what it could not "
            "know about: an upgrade from a version without it, a database restored from a "
            "backup, readings written by other tools. Safe to repeat, and while the server "
            "runs. Times are UTC unless they carry an offset; a date alone means the whole "
            "day."))
    downsample.add_argument("--config", required=True, metavar="FILE",
                            help="server settings (TOML)")
    downsample.add_argument("--from", dest="start", required=True, type=_time_arg,
                            metavar="TIME", help="first hour: 2026-06-01, 2026-06-01T05:00 or "
                                                 "2026-06-01T00:00-05:00")
    downsample.add_argument("--to", dest="end", type=_time_arg, metavar="TIME",
                            help="end (a date: to the end of that day); default now")
    downsample.add_argument("--step-hours", type=_step_hours_arg, default=24, metavar="N",
                            help="hours per query (default 24; fewer if InfluxDB times out)")
    downsample.add_argument("--dry-run", action="store_true",
                            help="print the InfluxQL statements, send nothing")
    downsample.set_defaults(handler=_downsample)


def _run(args: argparse.Namespace) -> int:
    # Imported here: a node without the server's packages must still start `secadero`.
    from secadero.server.app import run

    return _serve(args.config, run)


def _ingest_only(args: argparse.Namespace) -> int:
    from functools import partial

    from secadero.server.app import run

    return _serve(args.config, partial(run, alerts=False))


def _time_arg(text: str) -> tuple[float, bool]:
    """A time from the command line: (UNIX time, whether it was a date alone)."""
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time (e.g. 2026-06-01 or 2026-06-01T05:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp(), len(text) == len("2026-06-01")


def _step_hours_arg(text: str) -> int:
    try:
        hours = int(text)
    except ValueError:
        hours = 0
    if not 1 <= hours <= 24 * 31:
        raise argparse.ArgumentTypeError(f"must be a whole number of hours from 1 to 744, "
                                         f"got {text!r}")
    return hours


def _downsample(args: argparse.Namespace) -> int:
    import math
    import sys
    import time

    from secadero.server.downsample import HOUR_S, backfill
    from secadero.settings import load_or_report, load_server_settings

    settings = load_or_report(load_server_settings, args.config)
    if settings is None:
        return 2
    now = time.time()
    start, _ = args.start
    end, end_is_date = args.end if args.end else (now, False)
    if end_is_date:
        end += 86400  # --to 2026-06-30: all of that day
    # Whole hours that contain the period; nothing after the current hour.
    start_s = math.floor(start / HOUR_S) * HOUR_S
    end_s = min(math.ceil(end / HOUR_S), math.ceil(now / HOUR_S)) * HOUR_S
    if start_s >= math.ceil(now / HOUR_S) * HOUR_S:
        print("nothing to do: --from is in the future")
        return 2
    if end_s <= start_s:
        print("nothing to do: --to must be after --from")
        return 2
    return backfill(settings, start_s, end_s, out=sys.stdout, config=args.config,
                    step_hours=args.step_hours, dry_run=args.dry_run, now=now)


def _serve(config: str, runner: object) -> int:
    from secadero.settings import load_or_report, load_server_settings

    settings = load_or_report(load_server_settings, config)
    if settings is None:
        return 2
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        log.info("%s received: storing what is queued, then stopping",
                 signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runner(settings, stop)  # type: ignore[operator]
    return 0
