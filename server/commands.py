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
    run = sub.add_parser("run", help="subscribe to the yards and store readings in InfluxDB")
    run.add_argument("--config", required=True, metavar="FILE", help="server settings (TOML)")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # Imported here: a node without the server's packages must still start `secadero`.
    from secadero.server.alerts.service import run_with_alerts as run

    from secadero.errors import ConfigError
    from secadero.settings import load_server_settings

    try:
        settings = load_server_settings(args.config)
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
    run(settings, stop)
    return 0
