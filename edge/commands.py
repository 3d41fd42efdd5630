"""``secadero edge ...``: the node agent's subcommands."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    edge = commands.add_parser("edge", help="the node agent at the drying trays")
    sub = edge.add_subparsers(dest="edge_command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="sample the sensors and publish to the broker")
    run.add_argument("--config", required=True, metavar="FILE", help="node settings (TOML)")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("edge run: being built (issue 3)")
