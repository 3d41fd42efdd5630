"""``secadero nodes add|remove|list|rotate`` and ``secadero broker init|config``.

Run on the server, as root (the broker's files belong to root, group mosquitto).
Wrong input (a bad id, a node that exists, an unknown node) is told in one line
and exits 2 with every file as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from secadero.errors import ConfigError
from secadero.settings import BrokerSettings

USAGE_ERROR = 2


def register(commands: argparse._SubParsersAction) -> None:
    nodes = commands.add_parser(
        "nodes", help="the nodes' broker users: add, remove, list, rotate (docs/security.md)")
    sub = nodes.add_subparsers(dest="nodes_command", metavar="COMMAND", required=True)

    add = sub.add_parser("add", help="create a node's broker user and print its settings")
    _yard_node(add)
    _secret_out(add)
    rotate = sub.add_parser("rotate", help="a new secret for a node (the old one stops working)")
    _yard_node(rotate)
    _secret_out(rotate)
    remove = sub.add_parser("remove", help="delete a node's broker user (refused at once)")
    _yard_node(remove)
    listing = sub.add_parser("list", help="the broker's users and their roles")
    for parser in (add, rotate, remove, listing):
        _common(parser)
    add.set_defaults(handler=_add)
    rotate.set_defaults(handler=_rotate)
    remove.set_defaults(handler=_remove)
    listing.set_defaults(handler=_list)

    broker = commands.add_parser("broker", help="the Mosquitto configuration and its users")
    bsub = broker.add_subparsers(dest="broker_command", metavar="COMMAND", required=True)
    config = bsub.add_parser("config", help="print (or --write) the Mosquitto configuration "
                                            "made from the [broker] settings")
    config.add_argument("--write", action="store_true",
                        help="write it to [broker] conf_file instead of printing it")
    init = bsub.add_parser("init", help="create the server's and the read-only user (once); "
                                        "their secrets go to files in --secrets-dir")
    init.add_argument("--secrets-dir", type=Path, default=Path("."), metavar="DIR",
                      help="where the two secret files are written (mode 0600; default: .)")
    for parser in (config, init):
        _common(parser)
    config.set_defaults(handler=_config)
    init.set_defaults(handler=_init)


def _yard_node(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("yard", help="the yard's id, as in the node's [node] yard")
    parser.add_argument("node", help="the node's id, as in its [node] id")


def _secret_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret-file", type=Path, metavar="FILE",
                        help="where the node's secret is written (mode 0600; default "
                             "./YARD.NODE.mqtt-password)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="the server's settings; only its [broker] section is read "
                             "(default: the Debian paths of docs/security.md)")
    parser.add_argument("--users-dir", type=Path, metavar="DIR",
                        help="overrides [broker] users_dir")
    reload = parser.add_mutually_exclusive_group()
    reload.add_argument("--pid", type=int, help="the broker's PID (default: [broker] pid_file)")
    reload.add_argument("--no-reload", action="store_true",
                        help="change the files only; the broker reads them at its next "
                             "reload (systemctl reload mosquitto)")


def _settings(args: argparse.Namespace) -> BrokerSettings:
    from dataclasses import replace

    from secadero.settings.broker import load_broker_settings

    settings = load_broker_settings(args.config) if args.config else BrokerSettings()
    if args.users_dir:
        settings = replace(settings, users_dir=args.users_dir)
    return settings


def _run(args: argparse.Namespace, action: object) -> int:
    """Run one change; bad input -> its message on stderr and exit 2, nothing changed."""
    from secadero.server.broker.users import BrokerReloadError, BrokerUsersError

    try:
        settings = _settings(args)
        return int(action(args, settings))  # type: ignore[operator]
    except (BrokerUsersError, ConfigError) as exc:
        print(f"secadero {args.command}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except BrokerReloadError as exc:
        print(f"secadero {args.command}: the files are written, but {exc}: reload the broker "
              "yourself (sudo systemctl reload mosquitto)", file=sys.stderr)
        return 1
    except OSError as exc:  # each file is written whole or not at all
        hint = (" (the broker's files belong to root: run it with sudo)"
                if isinstance(exc, PermissionError) else "")
        print(f"secadero {args.command}: {exc.filename}: {exc.strerror}{hint}", file=sys.stderr)
        return 1


def _reload(args: argparse.Namespace, settings: BrokerSettings) -> str:
    from secadero.server.broker.users import reload_broker

    if args.no_reload:
        return "not reloaded (--no-reload): run `sudo systemctl reload mosquitto`"
    pid = reload_broker(pid=args.pid, pid_file=None if args.pid else settings.pid_file)
    return f"Mosquitto (PID {pid}) reloaded: it reads the users again, keeping its sessions"


def node_settings_block(settings: BrokerSettings, yard: str, node: str, username: str) -> str:
    """What goes into the node's /etc/secadero/node.toml (edge/node.example.toml's keys)."""
    return (f'[node]\nyard = "{yard}"\nid = "{node}"\n\n'
            f'[mqtt]\nhost = "{settings.public_host}"\nport = {settings.tls_port}\n'
            f'tls = true\nca_file = "{settings.node_ca_file}"\nusername = "{username}"\n'
            f'password_file = "{settings.node_password_file}"\n')


def _node_secret(args: argparse.Namespace, settings: BrokerSettings, verb: str) -> int:
    from secadero.server.broker.users import (
        BrokerFiles,
        BrokerReloadError,
        BrokerUser,
        BrokerUsersError,
        new_secret,
        node_username,
        write_secret_file,
    )

    files = BrokerFiles(settings.users_dir)
    username = node_username(args.yard, args.node)
    secret_file = args.secret_file or Path(f"{username}.mqtt-password")
    if verb == "added" and files.find_node(args.yard, args.node) is not None:
        raise BrokerUsersError(f"node {args.yard}/{args.node} exists already (user "
                               f"{username!r}): `secadero nodes rotate` gives it a new secret")
    if verb == "rotated" and files.find_node(args.yard, args.node) is None:
        raise BrokerUsersError(f"unknown node {args.yard}/{args.node}: see "
                               "`secadero nodes list`")
    secret = new_secret()
    # The secret file first: a secret that reached the broker's files but no file
    # would be a node user nobody can log in as.
    write_secret_file(secret_file, secret)
    try:
        if verb == "added":
            files.add(BrokerUser(username, "node", args.yard, args.node), secret)
        else:
            files.rotate(username, secret)
    except BaseException:
        secret_file.unlink(missing_ok=True)
        raise
    print(f"Node {args.yard}/{args.node} {verb}: broker user {username!r}.")
    if verb == "rotated":
        print("Its connection made with the old secret is closed at the reload: the node "
              "stays offline (its readings wait in its outbox) until it has the new one.")
    status = 0
    try:
        print(_reload(args, settings) + ".")
    except BrokerReloadError as exc:  # the node's block is still worth printing
        print(f"NOT reloaded: {exc}. Run `sudo systemctl reload mosquitto`.")
        status = 1
    print(f"\nIts secret is in {secret_file} (mode 0600), and nowhere else: copy it to the "
          f"node as {settings.node_password_file} (owner secadero, mode 0600), then delete "
          "it here:")
    print(f"  scp {secret_file} pi@NODE:/tmp/mqtt-password")
    print(f"  ssh pi@NODE 'sudo install -o secadero -m 0600 /tmp/mqtt-password "
          f"{settings.node_password_file} && rm /tmp/mqtt-password'")
    print(f"The yard's CA certificate ({settings.ca_file}) goes to {settings.node_ca_file}.")
    print("\nSettings for the node's config (edge/node.example.toml):\n")
    print(node_settings_block(settings, args.yard, args.node, username), end="")
    return status


def _add(args: argparse.Namespace) -> int:
    return _run(args, lambda a, s: _node_secret(a, s, "added"))


def _rotate(args: argparse.Namespace) -> int:
    return _run(args, lambda a, s: _node_secret(a, s, "rotated"))


def _remove(args: argparse.Namespace) -> int:
    def remove(args: argparse.Namespace, settings: BrokerSettings) -> int:
        from secadero.server.broker.users import BrokerFiles, BrokerUsersError, node_username

        files = BrokerFiles(settings.users_dir)
        username = node_username(args.yard, args.node)
        if files.find_node(args.yard, args.node) is None:
            raise BrokerUsersError(f"unknown node {args.yard}/{args.node}: see "
                                   "`secadero nodes list`")
        files.remove(username)
        print(f"Node {args.yard}/{args.node} removed: broker user {username!r} deleted.")
        print(_reload(args, settings) + ".")
        if not args.no_reload:
            # Mosquitto 2.0.11 checks its connected clients again at the reload.
            print("Its open connection (if any) was closed at the reload; its next one is "
                  "refused.")
        return 0

    return _run(args, remove)


def _list(args: argparse.Namespace) -> int:
    def show(args: argparse.Namespace, settings: BrokerSettings) -> int:
        from secadero.server.broker.users import BrokerFiles

        users = BrokerFiles(settings.users_dir).users()
        if not users:
            print(f"No broker users in {settings.users_dir} yet: `secadero broker init`, then "
                  "`secadero nodes add YARD NODE`.")
            return 0
        print(f"{'user':<40} {'role':<9} yard/node")
        for user in sorted(users, key=lambda u: (u.role, u.username)):
            where = f"{user.yard}/{user.node}" if user.role == "node" else "-"
            print(f"{user.username:<40} {user.role:<9} {where}")
        return 0

    args.no_reload = True  # listing changes nothing
    return _run(args, show)


def _config(args: argparse.Namespace) -> int:
    def config(args: argparse.Namespace, settings: BrokerSettings) -> int:
        from secadero.server.broker.config import render_mosquitto_conf
        from secadero.server.broker.users import write_atomically

        text = render_mosquitto_conf(settings)
        if not args.write:
            print(text, end="")
            return 0
        write_atomically(settings.conf_file, text, mode=0o644)
        print(f"Wrote {settings.conf_file}. {_reload(args, settings)}.")
        return 0

    return _run(args, config)


def _init(args: argparse.Namespace) -> int:
    def init(args: argparse.Namespace, settings: BrokerSettings) -> int:
        from secadero.server.broker.users import (
            BrokerFiles,
            BrokerUser,
            check_username,
            new_secret,
            write_secret_file,
        )

        files = BrokerFiles(settings.users_dir)
        existing = {u.username for u in files.users()}
        made = []
        for username, role in ((settings.server_user, "server"),
                               (settings.readonly_user, "readonly")):
            if username in existing:
                print(f"{role} user {username!r} exists already: kept.")
                continue
            secret = new_secret()
            files.add(BrokerUser(check_username(username), role), secret)  # type: ignore[arg-type]
            path = args.secrets_dir / f"{username}.mqtt-password"
            write_secret_file(path, secret)
            made.append(f"{role} user {username!r}: secret in {path} (mode 0600)")
        for line in made:
            print(line)
        if made:
            print(_reload(args, settings) + ".")
            print("The server reads its secret through [mqtt] username and password_file; "
                  "Grafana or monitoring use the read-only user.")
        return 0

    return _run(args, init)
