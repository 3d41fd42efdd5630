"""``secadero yard``: a whole drying yard on this machine (being built)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    yard = commands.add_parser("yard", help="run a demo yard: broker, database, server, 3 nodes")
    yard.set_defaults(handler=lambda args: 1)
