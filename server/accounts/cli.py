"""``secadero users add|remove|list|passwd --config FILE``: the staff accounts of the API.

Works on the accounts database directly (SQLite in WAL mode: also while the
server runs; a removal or a new password ends the account's sessions at
once). A password is read from a prompt (twice, not echoed) or, for scripts,
from the first line of standard input with ``--password-stdin``; never from
the command line, where ``ps`` and the shell's history would show it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from secadero.server.accounts import AccountStore


def register(commands: argparse._SubParsersAction) -> None:
    users = commands.add_parser("users", help="staff accounts of the HTTP API and web app "
                                              "(docs/security.md)")
    sub = users.add_subparsers(dest="users_command", metavar="COMMAND", required=True)

    def with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--config", required=True, metavar="FILE",
                            help="server settings (TOML): [accounts] database")
        return parser

    add = with_config(sub.add_parser("add", help="create an account"))
    add.add_argument("name", help="login name: lower-case letters, digits, . _ -")
    add.add_argument("--role", required=True,
                     help="worker, supervisor, quality, technician or admin")
    add.add_argument("--full-name", default="", help="the person's name, for the record")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.set_defaults(handler=_add)
    remove = with_config(sub.add_parser("remove", help="delete an account and end its "
                                                       "sessions"))
    remove.add_argument("name")
    remove.set_defaults(handler=_remove)
    listing = with_config(sub.add_parser("list", help="the accounts and their roles"))
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_list)
    passwd = with_config(sub.add_parser("passwd", help="set a new password (ends the "
                                                       "account's sessions)"))
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    passwd.set_defaults(handler=_passwd)


def open_store(config: str) -> AccountStore | None:
    from secadero.server.accounts import AccountStore
    from secadero.settings import load_or_report, load_server_settings

    settings = load_or_report(load_server_settings, config)
    if settings is None:
        return None
    return AccountStore(settings.accounts.database,
                        session_ttl_s=settings.accounts.session_ttl_h * 3600)


def read_password(from_stdin: bool, *, confirm: bool = True) -> str | None:
    """The password from standard input's first line, or from a prompt (asked twice)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Contraseña / Password: ")
    if confirm and getpass.getpass("Otra vez / Again: ") != first:
        print("the two passwords differ; nothing changed", file=sys.stderr)
        return None
    return first


def _run(config: str, action: object) -> int:
    from secadero.server.accounts import AccountError

    store = open_store(config)
    if store is None:
        return 2
    try:
        return int(action(store))  # type: ignore[operator]
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _add(args: argparse.Namespace) -> int:
    from secadero.server.accounts.store import check_name, check_role

    def add(store: AccountStore) -> int:
        check_name(args.name)  # before the prompt: a typo is told at once
        check_role(args.role)
        password = read_password(args.password_stdin)
        if password is None:
            return 1
        account = store.add(args.name, args.role, password, full_name=args.full_name)
        print(f"account {account.name} ({account.role.value}) created")
        return 0

    return _run(args.config, add)


def _remove(args: argparse.Namespace) -> int:
    def remove(store: AccountStore) -> int:
        store.remove(args.name)
        print(f"account {args.name} removed; its sessions ended")
        return 0

    return _run(args.config, remove)


def _passwd(args: argparse.Namespace) -> int:
    from secadero.server.accounts import AccountError

    def passwd(store: AccountStore) -> int:
        if store.get(args.name) is None:
            raise AccountError("name", f"no account {args.name!r}")
        password = read_password(args.password_stdin)
        if password is None:
            return 1
        store.set_password(args.name, password)
        print(f"password of {args.name} changed; its sessions ended")
        return 0

    return _run(args.config, passwd)


def _list(args: argparse.Namespace) -> int:
    def listing(store: AccountStore) -> int:
        accounts = store.list()
        if args.json:
            print(json.dumps([{"name": a.name, "role": a.role.value, "full_name": a.full_name,
                               "created_at": a.created_at} for a in accounts],
                             ensure_ascii=False, indent=2))
            return 0
        if not accounts:
            print("no accounts yet: secadero users add NAME --role admin --config FILE")
        for a in accounts:
            created = datetime.fromtimestamp(a.created_at, UTC).strftime("%Y-%m-%d")
            full = f"  {a.full_name}" if a.full_name else ""
            print(f"{a.name:<20} {a.role.value:<11} since {created}{full}")
        return 0

    return _run(args.config, listing)
