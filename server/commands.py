"""``secadero server ...``: the server's subcommands."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    server = commands.add_parser("server", help="ingest, alerts and the HTTP API")
    sub = server.add_subparsers(dest="server_command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="subscribe to the yards and store readings in InfluxDB")
    run.add_argument("--config", required=True, metavar="FILE", help="server settings (TOML)")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("server run: being built (issue 4)")
