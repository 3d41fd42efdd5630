"""The edge install must not pull the server's dependencies, nor the server the GPIO libraries."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SERVER_ONLY = ("influxdb", "requests")
GPIO = ("gpiozero", "adafruit", "rpi", "lgpio", "smbus")


def names(requirements: list[str]) -> list[str]:
    return [requirement.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
            for requirement in requirements]


def test_extras_are_separate() -> None:
    extras = PROJECT["optional-dependencies"]
    edge = names(PROJECT["dependencies"] + extras["edge"])
    server = names(PROJECT["dependencies"] + extras["server"])
    assert not [name for name in edge if name.startswith(SERVER_ONLY)], edge
    assert not [name for name in server if name.startswith(GPIO)], server


def import_all_with_blocked(packages: tuple[str, ...], blocked: tuple[str, ...]) -> None:
    """Import every module of ``packages`` in a fresh interpreter where ``blocked`` cannot load."""
    script = (
        "import sys, pkgutil, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ImportError('imported a package of the other role: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import secadero.cli\n"
        "secadero.cli.build_parser()\n"
        f"for name in {packages!r}:\n"
        "    package = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        importlib.import_module(info.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_node_imports_without_server_packages() -> None:
    import_all_with_blocked(("secadero.edge", "secadero.firmware"),
                            ("influxdb_client", "requests"))


def test_the_server_imports_without_gpio_packages() -> None:
    import_all_with_blocked(("secadero.server",), ("gpiozero", "adafruit_dht", "board", "lgpio"))
