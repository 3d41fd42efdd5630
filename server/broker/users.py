"""Who may talk to the broker, and about what: the users' registry, Mosquitto's password
file and its ACL file.

The registry (``users.json``) is the source of truth: one entry per broker user
with its role (a node of one yard, the server, the read-only dashboards, or the
demo's and tests' harness). The ACL file is written from it every time, with
explicit lines per user. Mosquitto 2.0's ``pattern`` lines with ``%u`` would
give every user the same shape of rights, so a typo in a username or a user
that is not a node (Grafana's) would still get a node's topics; the explicit
lines say exactly what each listed user may do and nothing else.

Passwords are hashed by ``mosquitto_passwd`` (never by our code): the new
``user:secret`` line goes into a private temporary file that ``mosquitto_passwd
-U`` hashes in place (PBKDF2-SHA512 in 2.0), so the secret never appears on a
command line (``ps`` shows arguments to every user). The hashed line is then
merged into the password file, which keeps everyone else's hashes.

Every file is replaced whole (write to a temporary file beside it, fsync,
rename): a broker reloading at the wrong moment, or a crash, sees the old file
or the new one, never half of one. Mosquitto reads both files again on SIGHUP
(``reload``) and keeps its connected clients and their sessions, but checks them
again: Mosquitto 2.0.11 closes at once the connection of a user that was removed
or whose secret changed (tests/server/test_broker_acl.py; docs/security.md).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from secadero import contract
from secadero.errors import SecaderoError

REGISTRY_FORMAT: Final = "secadero-broker-users/1"
MOSQUITTO_PASSWD_CANDIDATES: Final = ("mosquitto_passwd", "/usr/bin/mosquitto_passwd")

Role = Literal["node", "server", "readonly", "harness"]
ROLES: Final[tuple[Role, ...]] = ("node", "server", "readonly", "harness")
# Usernames of the server's, read-only and harness users: they become one word of a
# Mosquitto password/ACL file line, so no spaces, no ':' and no '#' or '+'.
USERNAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# 32 random bytes, URL-safe: no quoting trouble in a file, a shell or TOML.
SECRET_BYTES: Final = 32


class BrokerUsersError(SecaderoError, ValueError):
    """A wrong request (bad id, a node that exists already, an unknown node) or an
    unreadable registry; nothing was changed."""


class BrokerReloadError(SecaderoError):
    """The files were written but the broker could not be told to read them again."""


@dataclass(frozen=True, slots=True)
class BrokerUser:
    """One broker user. A node's username is ``{yard}.{node}``: ids cannot hold a dot,
    so no two (yard, node) pairs give the same name ("a-b"+"c" and "a"+"b-c" would)."""

    username: str
    role: Role
    yard: str | None = None
    node: str | None = None

    def as_json(self) -> dict[str, str]:
        entry = {"username": self.username, "role": self.role}
        if self.role == "node":
            entry |= {"yard": self.yard or "", "node": self.node or ""}
        return entry


def node_username(yard: str, node: str) -> str:
    """The broker username of a node; raises ``BrokerUsersError`` naming a bad id."""
    for field_name, value in (("yard", yard), ("node", node)):
        if not contract.is_valid_id(value):
            raise BrokerUsersError(
                f"{field_name}: {value[:40]!r} is not an id: 1-32 of a-z, 0-9 and '-', "
                "starting with a letter or digit")
    return f"{yard}.{node}"


def check_username(username: str) -> str:
    if not USERNAME_PATTERN.fullmatch(username):
        raise BrokerUsersError(f"username: {username[:70]!r} is not a broker username: 1-64 "
                               "of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
    return username


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


# ---------------------------------------------------------------------- the ACL


def acl_lines(user: BrokerUser) -> list[str]:
    """The topics one user may read and write (Mosquitto ACL file lines, after ``user``).

    A node publishes its own telemetry, event and status (the status is also its
    Last Will, which Mosquitto checks like a publish) and reads its own ack and its
    yard's alert. The server reads every node's messages (also through its share
    group's ``$share/...`` subscriptions, checked against the plain topic), writes the
    acks and the yards' alerts, and talks to the other processes of its share group.
    """
    root = contract.ROOT
    if user.role == "node":
        assert user.yard and user.node
        return [f"topic write {contract.node_topic(user.yard, user.node, 'telemetry')}",
                f"topic write {contract.node_topic(user.yard, user.node, 'event')}",
                f"topic write {contract.node_topic(user.yard, user.node, 'status')}",
                f"topic read {contract.node_topic(user.yard, user.node, 'ack')}",
                f"topic read {contract.alert_topic(user.yard)}"]
    if user.role == "server":
        return [f"topic read {root}/+/+/telemetry",
                f"topic read {root}/+/+/event",
                f"topic read {root}/+/+/status",
                f"topic write {root}/+/+/ack",
                # read too: the server reads back the retained alerts it published.
                f"topic readwrite {root}/+/alert",
                f"topic readwrite {contract.PEER_ROOT}/#"]
    if user.role == "readonly":
        # Dashboards and monitoring: everything the yards say, and the broker's own figures.
        return [f"topic read {root}/#", "topic read $SYS/#"]
    # harness: the demo's watcher and the tests' stand-ins play any node and the server.
    return ["topic readwrite #"]


def render_acl(users: Iterable[BrokerUser]) -> str:
    lines = [
        "# Written by secadero from users.json (`secadero nodes ...`, `secadero broker init`):",
        "# do not edit by hand, the next change rewrites it.",
        "# Mosquitto 2.0: a user may only do what a line below its `user` line allows;",
        "# a client without a listed user may do nothing. No pattern lines: each user's",
        "# rights are written out in full.",
    ]
    for user in sorted(users, key=lambda u: (ROLES.index(u.role), u.username)):
        what = f"node {user.yard}/{user.node}" if user.role == "node" else user.role
        lines += ["", f"# {what}", f"user {user.username}", *acl_lines(user)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- the password file


def find_mosquitto_passwd() -> str:
    for candidate in MOSQUITTO_PASSWD_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise BrokerUsersError("mosquitto_passwd not found: install the Debian package "
                           "'mosquitto' (sudo apt-get install mosquitto)")


def hash_password_line(username: str, secret: str, *, workdir: Path) -> str:
    """``username:$7$...`` as ``mosquitto_passwd`` hashes it; the secret stays off argv."""
    binary = find_mosquitto_passwd()
    fd, name = tempfile.mkstemp(prefix=".hash-", dir=workdir)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"{username}:{secret}\n")
        result = subprocess.run([binary, "-U", name], capture_output=True, text=True,
                                timeout=30, check=False)
        line = Path(name).read_text(encoding="utf-8").strip()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    if result.returncode != 0 or not line.startswith(f"{username}:$") or "\n" in line:
        raise BrokerUsersError(f"mosquitto_passwd -U failed (exit {result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()[:200]}")
    return line


def _password_lines(text: str) -> dict[str, str]:
    lines: dict[str, str] = {}
    for raw in text.splitlines():
        if raw.strip() and not raw.startswith("#"):
            lines[raw.split(":", 1)[0]] = raw.strip()
    return lines


# ----------------------------------------------------------------- the files


def write_atomically(path: Path, text: str, *, mode: int, group: str | None = None) -> None:
    """Replace ``path`` whole: temp file beside it, fsync, rename, fsync the folder.

    An existing file keeps its owner and group; a new one written by root gets
    ``group`` if that group exists (Debian's Mosquitto reads its files as the user
    ``mosquitto``, after dropping root).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            try:
                before = path.stat()
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), before.st_uid, before.st_gid)
            except FileNotFoundError:
                gid = _group_id(group) if group and os.geteuid() == 0 else None
                if gid is not None:
                    os.fchown(handle.fileno(), 0, gid)
            os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


@dataclass(frozen=True)
class BrokerFiles:
    """Where a broker's users live: ``users.json`` (the registry), ``passwd``, ``acl``.

    ``file_mode``: Mosquitto must read the password and ACL files; on Debian it runs as
    the ``mosquitto`` user, so 0640 with the group ``mosquitto`` (docs/security.md).
    """

    directory: Path
    file_mode: int = 0o640
    group: str | None = "mosquitto"

    @property
    def registry(self) -> Path:
        return self.directory / "users.json"

    @property
    def password_file(self) -> Path:
        return self.directory / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.directory / "acl"

    # -- reading

    def users(self) -> list[BrokerUser]:
        """The registry's users; an absent registry is an empty one."""
        try:
            data = json.loads(self.registry.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise BrokerUsersError(f"{self.registry}: cannot read: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
            raise BrokerUsersError(f"{self.registry}: not a secadero users file "
                                   f"(format {REGISTRY_FORMAT!r} expected)")
        users = []
        for index, entry in enumerate(data.get("users", [])):
            try:
                user = BrokerUser(username=check_username(entry["username"]),
                                  role=entry["role"], yard=entry.get("yard"),
                                  node=entry.get("node"))
                if user.role not in ROLES:
                    raise BrokerUsersError(f"role {user.role!r} is not one of {ROLES}")
                if user.role == "node" and user.username != node_username(
                        str(user.yard), str(user.node)):
                    raise BrokerUsersError("a node's username must be yard.node")
            except (KeyError, TypeError, BrokerUsersError) as exc:
                raise BrokerUsersError(f"{self.registry}: users[{index}]: {exc}") from exc
            users.append(user)
        return users

    def find_node(self, yard: str, node: str) -> BrokerUser | None:
        username = node_username(yard, node)
        return next((u for u in self.users() if u.username == username), None)

    # -- changing

    def add(self, user: BrokerUser, secret: str) -> None:
        """Add a user with this secret; refuses a username already listed."""
        users = self.users()
        if any(u.username == user.username for u in users):
            what = f"node {user.yard}/{user.node}" if user.role == "node" else "user"
            raise BrokerUsersError(f"{what} {user.username!r} exists already: use rotate for "
                                   "a new secret, or remove it first")
        self._save([*users, user], {user.username: secret}, removed=())

    def rotate(self, username: str, secret: str) -> None:
        """A new secret for a listed user (the old one stops working at the reload)."""
        users = self.users()
        if not any(u.username == username for u in users):
            raise BrokerUsersError(f"unknown user {username!r}: see `secadero nodes list`")
        self._save(users, {username: secret}, removed=())

    def remove(self, username: str) -> BrokerUser:
        users = self.users()
        found = next((u for u in users if u.username == username), None)
        if found is None:
            raise BrokerUsersError(f"unknown user {username!r}: see `secadero nodes list`")
        self._save([u for u in users if u is not found], {}, removed=(username,))
        return found

    def write_acl(self) -> None:
        """Write the ACL file again from the registry (after an upgrade of secadero)."""
        write_atomically(self.acl_file, render_acl(self.users()), mode=self.file_mode,
                         group=self.group)

    def _save(self, users: list[BrokerUser], secrets_by_user: dict[str, str],
              removed: Iterable[str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            current = self.password_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = ""
        lines = _password_lines(current)
        for username in removed:
            lines.pop(username, None)
        # Hashed before anything is written: a failing mosquitto_passwd changes nothing.
        for username, secret in secrets_by_user.items():
            lines[username] = hash_password_line(username, secret, workdir=self.directory)
        registry = json.dumps({"format": REGISTRY_FORMAT,
                               "users": [u.as_json() for u in users]}, indent=2) + "\n"
        # The registry last: a crash before it leaves a password or ACL line the next
        # change (from the unchanged registry) writes over again.
        write_atomically(self.password_file, "".join(f"{line}\n" for line in lines.values()),
                         mode=self.file_mode, group=self.group)
        write_atomically(self.acl_file, render_acl(users), mode=self.file_mode,
                         group=self.group)
        write_atomically(self.registry, registry, mode=0o600)


def write_secret_file(path: Path, secret: str) -> None:
    """The secret alone on one line, mode 0600, for ``password_file`` on the node."""
    write_atomically(path, secret + "\n", mode=0o600)


def reload_broker(*, pid: int | None = None, pid_file: Path | None = None) -> int:
    """SIGHUP to Mosquitto: it reads its password and ACL files again and keeps its
    clients connected. Returns the PID signalled."""
    if pid is None:
        if pid_file is None:
            raise BrokerReloadError("no PID and no pid file to find the broker")
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise BrokerReloadError(f"cannot read the broker's PID from {pid_file}: {exc}") \
                from exc
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise BrokerReloadError(f"cannot signal the broker (PID {pid}): {exc.strerror}") from exc
    return pid
