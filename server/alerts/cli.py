"""``secadero alerts --config FILE``: the open alerts, or the history, on the command line.

Reads the alert database directly (SQLite in WAL mode, so it works while
the server runs) and prints times in each yard's local time.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime
from zoneinfo import ZoneInfo


def register(commands: argparse._SubParsersAction) -> None:
    alerts = commands.add_parser("alerts", help="show open rain alerts, or their history")
    alerts.add_argument("--config", required=True, metavar="FILE", help="server settings (TOML)")
    alerts.add_argument("--history", action="store_true", help="past alerts too, newest first")
    alerts.add_argument("--yard", help="only this yard")
    alerts.add_argument("--limit", type=int, default=20, help="how many past alerts (20)")
    alerts.add_argument("--json", action="store_true", help="machine-readable output")
    alerts.set_defaults(handler=_alerts)


def _alerts(args: argparse.Namespace) -> int:
    from secadero.server.alerts.store import AlertStore

    from secadero.errors import ConfigError
    from secadero.settings import load_server_settings

    try:
        settings = load_server_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 2
    if not settings.alerts.database.exists():
        print(f"no alerts yet ({settings.alerts.database} does not exist)")
        return 0
    zones = {y.id: y.timezone for y in settings.yards}
    store = AlertStore(settings.alerts.database)
    try:
        if args.history:
            episodes = store.history(yard=args.yard, limit=args.limit)
        else:
            episodes = [e for e in store.active_episodes(args.yard)]
        if args.json:
            rows = []
            for e in episodes:
                row = asdict(e)
                row["notifications"] = [asdict(n) for n in store.notifications(episode_id=e.id)]
                rows.append(row)
            print(json.dumps(rows, ensure_ascii=False, indent=1))
            return 0
        if not episodes:
            print("no open alerts" if not args.history else "no alerts")
            return 0
        for e in episodes:
            zone = ZoneInfo(zones.get(e.yard, "America/Lima"))

            def local(ts: float | None, zone: ZoneInfo = zone) -> str:
                return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M") if ts else "-"

            notes = store.notifications(episode_id=e.id)
            sent = sum(n.status == "sent" for n in notes)
            failed = sum(n.status == "failed" for n in notes)
            what = e.cause + (f" {e.key}" if e.key else "")
            state = e.state + (f" by {e.acked_by} {local(e.acked_at)[11:]}" if e.acked_by
                               else "")
            print(f"#{e.id} {e.yard} {what} [{e.severity}] {state}; raised {local(e.raised_at)}"
                  + (f", resolved {local(e.resolved_at)}" if e.resolved_at else "")
                  + f"; {sent} sent, {failed} failed")
            if e.message:
                print(f"    {e.message}")
            for n in notes:
                print(f"    {local(n.created_at)[11:]} {n.event:<9} {n.recipient} ({n.role}, "
                      f"{n.channel}) {n.status}" + (f" via {n.provider}" if n.provider else "")
                      + (f": {n.error}" if n.status == "failed" and n.error else ""))
    finally:
        store.close()
    return 0
