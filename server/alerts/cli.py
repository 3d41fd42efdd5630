"""``secadero alerts --config FILE``: the open alerts, or the history, on the command line.

Reads the alert database directly (SQLite in WAL mode, so it works while
the server runs) and prints times in each yard's local time.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from secadero.settings import ServerSettings


def register(commands: argparse._SubParsersAction) -> None:
    alerts = commands.add_parser("alerts", help="show open rain alerts, or their history")
    alerts.add_argument("--config", required=True, metavar="FILE", help="server settings (TOML)")
    alerts.add_argument("--history", action="store_true", help="past alerts too, newest first")
    alerts.add_argument("--yard", help="only this yard")
    alerts.add_argument("--limit", type=int, default=20, help="how many past alerts (20)")
    alerts.add_argument("--json", action="store_true", help="machine-readable output")
    alerts.add_argument("--sms-received", action="store_true",
                        help="for Gammu SMSD's RunOnReceive: hand the received SMS (from the "
                             "SMS_* environment) to the running server")
    alerts.set_defaults(handler=_alerts)


def _alerts(args: argparse.Namespace) -> int:
    from secadero.server.alerts.store import AlertStore
    from secadero.settings import load_or_report, load_server_settings

    settings = load_or_report(load_server_settings, args.config)
    if settings is None:
        return 2
    if args.sms_received:
        return _sms_received(settings)
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


def _sms_received(settings: ServerSettings) -> int:
    """Post each SMS of Gammu's ``SMS_<n>_NUMBER`` / ``SMS_<n>_TEXT`` to the local API."""
    import os
    import urllib.error
    import urllib.request

    from secadero.server.alerts.tokens import AckTokens, load_or_create_secret

    a = settings.alerts
    secret = a.ack_secret or load_or_create_secret(a.database.with_suffix(".secret"))
    tokens = AckTokens(secret, a.ack_token_ttl_h * 3600)
    host = "127.0.0.1" if a.api_host in ("0.0.0.0", "::", "") else a.api_host
    failed = 0
    try:
        count = int(os.environ.get("SMS_MESSAGES", "0"))
    except ValueError:
        count = 0
    for index in range(1, count + 1):
        sender = os.environ.get(f"SMS_{index}_NUMBER", "")
        text = os.environ.get(f"SMS_{index}_TEXT", "")
        body = json.dumps({"from": sender, "text": text}).encode()
        request = urllib.request.Request(
            f"http://{host}:{a.api_port}/api/sms/inbound", data=body, method="POST",
            headers={"Content-Type": "application/json",
                     "X-Secadero-Signature": tokens.sign_body(body)})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                print(f"SMS from {sender}: {response.read().decode()}")
        except (urllib.error.URLError, OSError) as exc:
            print(f"SMS from {sender}: could not reach the server: {exc}")
            failed += 1
    return 1 if failed else 0
