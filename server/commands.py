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


def _run(args: argparse.Namespace) -> int:
    # Imported here: a node without the server's packages must still start `secadero`.
    from secadero.server.alerts.service import run_with_alerts

    return _serve(args.config, run_with_alerts)


def _ingest_only(args: argparse.Namespace) -> int:
    from secadero.server.ingest import run

    return _serve(args.config, run)


def _serve(config: str, runner: object) -> int:
    from secadero.errors import ConfigError
    from secadero.settings import load_server_settings

    try:
        settings = load_server_settings(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
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
