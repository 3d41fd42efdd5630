"""``secadero influx init``: InfluxDB 1.x users for a yard, once, as docs/security.md says.

Three users: an admin (for the technician), the server's writer (ALL on the
database: it writes, and re-downsampling late hours reads) and Grafana's
read-only user (READ). Each new user's secret is made here (32 random bytes)
and written to a file (mode 0600); secrets travel to InfluxDB in a POST body
over loopback, never in a URL, on a command line or in a log line. The
database, its retention policies and continuous queries are made by the
server's own ``prepare()``, run as the admin (the writer may not).

The private InfluxDB of the demo and the tests (secadero/devservices.py) makes
its users with the same functions.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from secadero.errors import SecaderoError

ADMIN_USER = "admin"
WRITER_USER = "secadero-writer"
READER_USER = "grafana"  # the user dashboards/provisioning/datasources/secadero.yaml names
USAGE_ERROR = 2


class InfluxSetupError(SecaderoError):
    """InfluxDB refused a statement or could not be reached."""


def query(url: str, statement: str, credentials: tuple[str, str] | None = None
          ) -> list[dict[str, object]]:
    """POST one InfluxQL statement; its results, raising ``InfluxSetupError`` on any error.

    The error text never repeats the statement (a CREATE USER carries a password).
    """
    request = urllib.request.Request(f"{url.rstrip('/')}/query",
                                     urllib.parse.urlencode({"q": statement}).encode(),
                                     method="POST")
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            results = json.load(response).get("results", [])
    except urllib.error.HTTPError as exc:
        raise InfluxSetupError(f"InfluxDB answered {exc.code}: "
                               f"{exc.read().decode('utf-8', 'replace').strip()[:200]}") from exc
    except (OSError, ValueError) as exc:
        raise InfluxSetupError(f"cannot reach InfluxDB at {url}: {exc}") from exc
    for result in results:
        if "error" in result:
            raise InfluxSetupError(f"InfluxDB: {result['error']}")
    return results


def _quoted_password(secret: str) -> str:
    if "'" in secret or "\\" in secret:
        raise InfluxSetupError("a password must not contain quotes or backslashes")
    return f"'{secret}'"


def create_first_admin(url: str, username: str, secret: str) -> None:
    """With no user at all, InfluxDB 1.x lets anyone create the first: it must be an admin."""
    query(url, f'CREATE USER "{username}" WITH PASSWORD {_quoted_password(secret)} '
               "WITH ALL PRIVILEGES")


def create_user(url: str, admin: tuple[str, str], username: str, secret: str) -> None:
    query(url, f'CREATE USER "{username}" WITH PASSWORD {_quoted_password(secret)}', admin)


def grant(url: str, admin: tuple[str, str], database: str, username: str,
          privilege: str) -> None:
    if privilege not in ("ALL", "READ", "WRITE"):
        raise ValueError(f"privilege must be ALL, READ or WRITE, not {privilege!r}")
    query(url, f'GRANT {privilege} ON "{database}" TO "{username}"', admin)


def existing_users(url: str, admin: tuple[str, str]) -> set[str]:
    results = query(url, "SHOW USERS", admin)
    series = results[0].get("series", []) if results else []
    return {str(row[0]) for s in series for row in s.get("values", [])}  # type: ignore[union-attr]


def auth_is_on(url: str) -> bool:
    """An anonymous SHOW DATABASES is refused (401) when authentication is on."""
    try:
        query(url, "SHOW DATABASES")
    except InfluxSetupError as exc:
        return "401" in str(exc) or "create admin user first" in str(exc)
    return False


def init(url: str, database: str, secrets_dir: Path, *,
         say: Callable[[str], None] = print) -> None:
    """Make the three users (those missing), the database as the admin, the grants."""
    from secadero.server.broker.users import new_secret, write_secret_file
    from secadero.server.influx import InfluxV1Writer
    from secadero.settings import InfluxSettings

    out = say
    if not auth_is_on(url):
        raise InfluxSetupError(
            f"InfluxDB at {url} answers without credentials: set auth-enabled = true in the "
            "[http] section of /etc/influxdb/influxdb.conf and restart it first")
    admin_file = secrets_dir / f"influx-{ADMIN_USER}.password"
    if admin_file.exists():
        admin = (ADMIN_USER, admin_file.read_text(encoding="utf-8").strip())
    else:
        secret = new_secret()
        try:
            create_first_admin(url, ADMIN_USER, secret)
        except InfluxSetupError as exc:
            raise InfluxSetupError(
                f"InfluxDB already has users ({exc}): put the admin's password in {admin_file} "
                "(mode 0600) and run this again") from exc
        write_secret_file(admin_file, secret)
        admin = (ADMIN_USER, secret)
        out(f"admin user {ADMIN_USER!r}: secret in {admin_file} (mode 0600)")
    users = existing_users(url, admin)
    for username in (WRITER_USER, READER_USER):
        if username in users:
            out(f"user {username!r} exists already: kept")
            continue
        secret = new_secret()
        path = secrets_dir / f"influx-{username}.password"
        write_secret_file(path, secret)
        create_user(url, admin, username, secret)
        out(f"user {username!r}: secret in {path} (mode 0600)")
    writer = InfluxV1Writer(InfluxSettings(url=url, database=database, username=admin[0],
                                           password=admin[1]))
    try:
        writer.prepare()  # the database, its retention policies, the continuous queries
    finally:
        writer.close()
    grant(url, admin, database, WRITER_USER, "ALL")
    grant(url, admin, database, READER_USER, "READ")
    out(f"database {database!r} ready: {WRITER_USER!r} may read and write it (the server's "
        f"[influxdb] username), {READER_USER!r} may read it (Grafana)")


def register(commands: argparse._SubParsersAction) -> None:
    influx = commands.add_parser("influx", help="InfluxDB 1.x users and database "
                                                "(docs/security.md)")
    sub = influx.add_subparsers(dest="influx_command", metavar="COMMAND", required=True)
    init_parser = sub.add_parser(
        "init", help="make the admin, the server's writer and Grafana's read-only user, and "
                     "the database (once; safe to repeat)")
    init_parser.add_argument("--config", type=Path, metavar="FILE",
                             help="the server's settings: [influxdb] url and database")
    init_parser.add_argument("--url", help="overrides [influxdb] url "
                                           "(default http://127.0.0.1:8086)")
    init_parser.add_argument("--database", help="overrides [influxdb] database "
                                                "(default secadero)")
    init_parser.add_argument("--secrets-dir", type=Path, default=Path("."), metavar="DIR",
                             help="where the secrets' files go (mode 0600; default: .)")
    init_parser.set_defaults(handler=_init)


def _init(args: argparse.Namespace) -> int:
    section: dict[str, object] = {}
    if args.config:
        try:
            section = tomllib.loads(args.config.read_text(encoding="utf-8")).get("influxdb", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            print(f"secadero influx: {args.config}: {exc}", file=sys.stderr)
            return USAGE_ERROR
    url = args.url or str(section.get("url", "http://127.0.0.1:8086"))
    database = args.database or str(section.get("database", "secadero"))
    try:
        init(url, database, args.secrets_dir)
    except InfluxSetupError as exc:
        print(f"secadero influx: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return 0
