"""The wall display's kiosk files: the units recover by themselves, the script waits for Grafana.

Nothing here needs a screen: the units are checked by ``systemd-analyze
verify`` (where systemd is installed) and by their keys; ``kiosk.sh`` runs
against a local HTTP server that plays Grafana's /api/health (first down,
then up) with a stand-in ``cage`` that records how it was started.
"""

from __future__ import annotations

import configparser
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
KIOSK = ROOT / "dashboards" / "kiosk"
UNITS = ("secadero-kiosk.service", "secadero-kiosk-restart.service",
         "secadero-kiosk-restart.timer")


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(KIOSK / name)
    return parser


def test_the_display_restarts_for_ever_and_starts_afresh_every_6_hours() -> None:
    kiosk = unit("secadero-kiosk.service")
    assert kiosk["Service"]["Restart"] == "always"
    assert kiosk["Unit"]["StartLimitIntervalSec"] == "0"
    assert kiosk["Service"]["User"] == "kiosk"
    restart = unit("secadero-kiosk-restart.service")
    assert restart["Service"]["ExecStart"] == "/bin/systemctl try-restart secadero-kiosk.service"
    timer = unit("secadero-kiosk-restart.timer")
    assert timer["Timer"]["OnUnitActiveSec"] == "6h"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_url_is_the_wall_dashboard_in_kiosk_mode_and_refreshes_itself() -> None:
    wall = json.loads((ROOT / "dashboards" / "json" / "wall.json").read_text())
    env = dict(line.split("=", 1) for line in (KIOSK / "kiosk.env.example").read_text()
               .splitlines() if line and not line.startswith("#"))
    assert f"/d/{wall['uid']}/" in env["KIOSK_URL"]
    assert "&kiosk" in env["KIOSK_URL"] and "var-yard=" in env["KIOSK_URL"]
    assert env["GRAFANA_HEALTH_URL"].endswith("/api/health")
    assert wall["refresh"] == "30s"
    grafana = configparser.ConfigParser(interpolation=None)
    grafana.read(KIOSK / "grafana-kiosk.ini")
    assert dict(grafana["auth.anonymous"]) == {"enabled": "true", "org_name": "Secadero",
                                                "org_role": "Viewer", "hide_version": "true"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd here")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    script = tmp_path / "kiosk.sh"
    shutil.copy(KIOSK / "kiosk.sh", script)
    for name in UNITS:
        text = (KIOSK / name).read_text()
        (tmp_path / name).write_text(
            text.replace("/opt/secadero/dashboards/kiosk/kiosk.sh", str(script)))
    result = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in UNITS)],
                            capture_output=True, text=True, timeout=60)
    # Users and files of the target Pi do not exist here; nothing else may be reported.
    problems = [line for line in result.stderr.splitlines()
                if line and "kiosk.env" not in line and "user" not in line.lower()]
    assert problems == [], result.stderr


class Health(http.server.BaseHTTPRequestHandler):
    # Status codes still to give, set per test on a subclass; then 200.
    answers: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        status = self.answers.pop(0) if self.answers else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b'{"database": "ok"}' if status == 200 else b"starting")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def grafana_health() -> Iterator[tuple[str, type[Health]]]:
    """A stand-in for Grafana's /api/health on loopback: 503 twice, then 200."""
    handler = type("HealthOnce", (Health,), {"answers": [503, 503]})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/health", handler
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="kiosk.sh uses curl")
def test_kiosk_script_waits_for_grafana_then_starts_chromium_full_screen(
        tmp_path: Path, grafana_health: tuple[str, type[Health]]) -> None:
    health_url, handler = grafana_health
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "cage-args.txt"
    cage = bin_dir / "cage"
    cage.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    cage.chmod(0o755)
    url = "http://127.0.0.1:3000/d/secadero-wall/pantalla-del-tendal?orgId=1&kiosk"
    result = subprocess.run(
        ["sh", str(KIOSK / "kiosk.sh")], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KIOSK_URL": url,
             "GRAFANA_HEALTH_URL": health_url, "KIOSK_RETRY_S": "0.05"})
    assert result.returncode == 0, result.stderr
    assert handler.answers == []  # it asked until Grafana answered
    assert result.stdout.startswith(f"waiting for Grafana at {health_url} (try 1)")
    args = record.read_text().splitlines()
    assert args[:3] == ["-d", "--", "chromium"]
    assert "--kiosk" in args and "--noerrdialogs" in args
    assert args[-1] == url
