"""``secadero alerts --config FILE``: the open alerts, the history, or the forecast's skill.

Reads the alert database directly (SQLite in WAL mode, so it works while
the server runs) and prints times in each yard's local time.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from secadero.server.alerts.skill import YardSkill
    from secadero.server.alerts.store import AlertStore
    from secadero.settings import ServerSettings


def register(commands: argparse._SubParsersAction) -> None:
    alerts = commands.add_parser("alerts", help="show open rain alerts, or their history")
    alerts.add_argument("--config", required=True, metavar="FILE", help="server settings (TOML)")
    alerts.add_argument("--history", action="store_true", help="past alerts too, newest first")
    alerts.add_argument("--yard", help="only this yard")
    alerts.add_argument("--limit", type=int, default=20, help="how many past alerts (20)")
    alerts.add_argument("--json", action="store_true", help="machine-readable output")
    alerts.add_argument("--skill", action="store_true",
                        help="how good the forecast was per yard: rains it had and missed, "
                             "lead, false alarms (docs/alerts.md)")
    period = alerts.add_mutually_exclusive_group()
    period.add_argument("--days", type=_positive_days, default=None,
                        help="with --skill: the last N days (30)")
    period.add_argument("--since", type=_date, default=None, metavar="YYYY-MM-DD",
                        help="with --skill: from this day (the yard's local midnight) to now")
    alerts.add_argument("--sms-received", action="store_true",
                        help="for Gammu SMSD's RunOnReceive: hand the received SMS (from the "
                             "SMS_* environment) to the running server")
    alerts.add_argument("--close", type=int, metavar="ID",
                        help="a supervisor closes this yard alert on the running server: "
                             "reminders stop, the beacons clear (docs/alerts.md)")
    alerts.add_argument("--by", metavar="ACCOUNT",
                        help="with --close: the supervisor's account (secadero users); its "
                             "password is asked for")
    alerts.add_argument("--password-stdin", action="store_true",
                        help="with --close: read the account's password from the first line "
                             "of standard input instead of a prompt")
    alerts.set_defaults(handler=_alerts)


def _alerts(args: argparse.Namespace) -> int:
    from secadero.server.alerts.store import AlertStore
    from secadero.settings import load_or_report, load_server_settings

    settings = load_or_report(load_server_settings, args.config)
    if settings is None:
        return 2
    if args.sms_received:
        return _sms_received(settings)
    if args.close is not None:
        if not args.by:
            print("--close needs --by ACCOUNT: a supervisor's or admin's account "
                  "(secadero users add)")
            return 2
        return _close(settings, args.close, args.by, args.password_stdin)
    if (args.days is not None or args.since is not None) and not args.skill:
        print("--days and --since are for --skill")
        return 2
    if not settings.alerts.database.exists():
        print(f"no alerts yet ({settings.alerts.database} does not exist)")
        return 0
    zones = {y.id: y.timezone for y in settings.yards}
    store = AlertStore(settings.alerts.database)
    try:
        if args.skill:
            return _skill(store, settings, args)
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
            raises = e.details.get("raises", [])
            if len(raises) > 1:
                # One story: a humidity warning raised to rain, a forecast to rain now.
                print("    raised: " + " -> ".join(
                    f"{local(r['ts'])[11:]} {r['cause']} ({r['severity']})" for r in raises))
            for n in notes:
                print(f"    {local(n.created_at)[11:]} {n.event:<9} {n.recipient} ({n.role}, "
                      f"{n.channel}) {n.status}" + (f" via {n.provider}" if n.provider else "")
                      + (f": {n.error}" if n.status == "failed" and n.error else "")
                      # Twilio's word on it: delivered, undelivered; a call's no-answer.
                      + (f" ({n.delivery})" if n.delivery else ""))
    finally:
        store.close()
    return 0


def _positive_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = 0.0
    if not days > 0:
        raise argparse.ArgumentTypeError(f"not a number of days above 0: {text!r}")
    return days


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _skill(store: AlertStore, settings: ServerSettings, args: argparse.Namespace) -> int:
    """Print each yard's forecast skill over the period (``skill.py`` defines the figures)."""
    from secadero.server.alerts.skill import yard_skill

    now = time.time()
    skills = []
    for yard in settings.yards:
        if args.yard and yard.id != args.yard:
            continue
        zone = ZoneInfo(yard.timezone)
        if args.since is not None:
            since = datetime.combine(args.since, datetime.min.time(), zone).timestamp()
        else:
            since = now - (args.days if args.days is not None else 30) * 86400
        episodes = store.history(yard=yard.id, since=since, limit=100_000)
        skills.append((yard, yard_skill(yard.id, episodes, since, now)))
    if args.json:
        print(json.dumps([s.as_dict() for _, s in skills], ensure_ascii=False, indent=1))
        return 0
    if not skills:
        print(f"no yard {args.yard!r} in the settings")
        return 1
    for yard, s in skills:
        zone = ZoneInfo(yard.timezone)
        print(f"{yard.id} ({yard.name}), "
              f"{datetime.fromtimestamp(s.since, zone):%Y-%m-%d %H:%M} to "
              f"{datetime.fromtimestamp(s.until, zone):%Y-%m-%d %H:%M}:")
        print("    " + skill_text(s).replace("\n", "\n    "))
    return 0


def skill_text(s: YardSkill) -> str:
    """The figures in a few lines of plain English, for the technician."""
    def pct(ratio: float | None) -> str:
        return "-" if ratio is None else f"{ratio * 100:.0f}%"

    def minutes(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} min"

    lines = [f"rains seen by the sensors: {s.rains}; the forecast had {s.hits} "
             f"(hit rate {pct(s.hit_rate)}), missed {s.misses}",
             f"lead before the rain: median {minutes(s.lead_median_min)}, "
             f"shortest {minutes(s.lead_min_min)}",
             f"forecast alerts: {s.forecast_episodes}, false alarms {s.false_alarms} "
             f"(false-alarm ratio {pct(s.false_alarm_ratio)})"]
    if s.pending:
        lines.append(f"forecast alerts still open and dry (not counted yet): {s.pending}")
    if s.unscored:
        lines.append(f"rain alerts from before the skill was recorded (not counted): "
                     f"{s.unscored}")
    return "\n".join(lines)


def _close(settings: ServerSettings, episode_id: int, by: str, password_stdin: bool) -> int:
    """Log in to the running server's API as ``by``, POST the close, log out."""
    import urllib.error
    import urllib.request

    from secadero.server.accounts.cli import read_password

    a = settings.alerts
    host = "127.0.0.1" if a.api_host in ("0.0.0.0", "::", "") else a.api_host
    base = f"http://{host}:{a.api_port}"
    password = read_password(password_stdin, confirm=False)
    if password is None:
        return 1

    def post(path: str, body: dict[str, str] | None = None, token: str | None = None) -> Any:
        request = urllib.request.Request(
            base + path, data=json.dumps(body or {}).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {token}"} if token else {})})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    try:
        token = post("/api/login", {"name": by, "password": password})["token"]
        try:
            answer = post(f"/api/alerts/{episode_id}/close", token=token)
        finally:
            post("/api/logout", token=token)
    except urllib.error.HTTPError as exc:
        print(f"alert {episode_id} not closed: {exc.read().decode(errors='replace')[:200]}")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"alert {episode_id} not closed: could not reach the server: {exc}")
        return 1
    print(f"alert {episode_id} closed by {answer.get('by')}")
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
