"""The ``secadero`` command: one entry point, a subcommand per job.

Each role registers its own subcommands (``secadero.edge.commands``,
``secadero.server.commands``) and imports its heavy dependencies only when
its command runs, so a node without the server's packages still starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from secadero import __version__
from secadero.settings import check_files


def _check_config(args: argparse.Namespace) -> int:
    failed = False
    # Together: a node file is also checked against the yard's areas in a server file.
    for path, problems in check_files(args.files).items():
        for problem in problems:
            print(problem)
        if problems:
            failed = True
        elif args.show:
            _show(path)
        elif not args.quiet:
            print(f"{path}: ok")
    return 1 if failed else 0


def _show(path: str) -> None:
    """The file's effective settings as JSON, secrets redacted (settings/show.py)."""
    import json

    from secadero.settings import detect_kind, load_node_settings, load_server_settings
    from secadero.settings.show import effective

    loader = load_node_settings if detect_kind(path) == "node" else load_server_settings
    print(json.dumps({"file": path, "settings": effective(loader(path))},
                     ensure_ascii=False, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secadero",
        description="Drying-yard monitor for cocoa cooperatives.",
    )
    parser.add_argument("--version", action="version", version=f"secadero {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check-config", help="validate config files; print every problem as file: key: reason")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    check.add_argument("--show", action="store_true",
                       help="print each valid file's effective settings (defaults filled in, "
                            "secrets from the environment or files) as JSON, secrets shown "
                            "as ***")
    check.set_defaults(handler=_check_config)

    # Imported here, not at the top: each registers parsers only; their
    # dependencies are imported inside the handlers.
    from secadero import yard
    from secadero.edge import commands as edge_commands
    from secadero.server import commands as server_commands
    from secadero.server import influx_setup
    from secadero.server.accounts import cli as accounts_cli
    from secadero.server.alerts import cli as alerts_cli
    from secadero.server.batches import cli as batches_cli
    from secadero.server.broker import cli as broker_cli

    edge_commands.register(commands)
    server_commands.register(commands)
    yard.register(commands)
    alerts_cli.register(commands)
    batches_cli.register(commands)
    broker_cli.register(commands)
    influx_setup.register(commands)
    accounts_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
