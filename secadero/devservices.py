"""Start a private Mosquitto and InfluxDB 1.x as child processes.

Used by the demo yard (``secadero yard``) and by the test fixtures: each
service gets its own config and data under a folder we choose, listens on a
free loopback port, is waited for until it answers, and is stopped by the PID
we started (never by name: a system broker may be running beside us).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secadero.errors import SecaderoError

if TYPE_CHECKING:
    from secadero.server.broker.users import BrokerFiles
    from secadero.settings import InfluxSettings

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto")
INFLUXD_CANDIDATES = ("influxd", "/usr/bin/influxd")


class ServiceError(SecaderoError):
    """A local service could not be found, started or reached."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the listening socket on 127.0.0.1:``port``.

    A free port can be taken by another program between ``free_port()`` and
    our child's bind (seen with test runs in parallel on one machine): the
    child then exits, but the other program answers our readiness probe, and
    the tests would talk to a stranger. Read from ``/proc`` (the socket's
    inode in ``/proc/net/tcp``, then the child's file descriptors); ``None``
    where ``/proc`` cannot say (not Linux).
    """
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    inodes = {fields[9] for fields in (line.split() for line in lines)
              if len(fields) > 9 and fields[1] == wanted and fields[3] == "0A"}
    if not inodes:
        return False
    try:
        entries = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    links = set()
    for entry in entries:
        with contextlib.suppress(OSError):  # closed while we looked
            links.add(os.readlink(entry))
    return any(f"socket:[{inode}]" in links for inode in inodes)


def find_binary(candidates: tuple[str, ...], package: str) -> str:
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    raise ServiceError(
        f"{candidates[0]} not found: install the Debian package '{package}' "
        f"(sudo apt-get install {package})"
    )


def wait_for_port(port: int, *, process: subprocess.Popen[bytes], log: Path,
                  timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"exited with code {process.returncode}; log:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            if listens_on(process.pid, port) is not False:
                return
        time.sleep(0.05)
    raise ServiceError(f"not listening on port {port} after {timeout_s:g} s; log:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class _Service:
    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.workdir / "service.log"

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log:
            # start_new_session: Ctrl-C in the demo's terminal reaches us, and
            # we stop the children in order, rather than all at once.
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)

    def signal(self, signum: int) -> None:
        """Send a signal to our child (SIGSTOP/SIGCONT/SIGKILL in fault tests)."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM our child by PID, SIGKILL if it does not go. Idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL our child, as a crash or power cut would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(15)

    def __enter__(self) -> _Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The users every private broker gets (``Mosquitto.credentials``): the server's and the
# read-only user have their production rights; the harness may do anything, for the
# demo's watcher and the tests' stand-ins that play nodes of yards they invent.
HARNESS_USER = "harness"
SERVER_USER = "secadero-server"
READONLY_USER = "secadero-readonly"


@dataclass
class Mosquitto(_Service):
    """A private Mosquitto 2.x on 127.0.0.1, with passwords and an ACL as in production.

    Its users are written by the same code as ``secadero nodes`` (a registry, the
    password file through ``mosquitto_passwd``, the ACL file), under ``workdir/users``;
    their secrets are files in ``workdir/secrets`` (mode 0600). ``add_node`` and
    ``remove_user`` change them and reload the broker (SIGHUP), as the command does.
    """

    extra_config: str = ""

    @property
    def users_dir(self) -> Path:
        return self.workdir / "users"

    def secret_file(self, username: str = HARNESS_USER) -> Path:
        """The file holding ``username``'s secret (for ``password_file`` in a config)."""
        return self.workdir / "secrets" / username

    def credentials(self, username: str = HARNESS_USER) -> tuple[str, str]:
        """``(username, password)`` of one of this broker's users."""
        return username, self.secret_file(username).read_text(encoding="utf-8").strip()

    def client_credentials(self) -> tuple[str, str]:
        """The harness's ``(username, password)``: may publish and read every topic."""
        return self.credentials(HARNESS_USER)

    def toml_credentials(self, username: str = HARNESS_USER) -> str:
        """``username = ...`` and ``password_file = ...`` lines for an ``[mqtt]`` section."""
        return f'username = "{username}"\npassword_file = "{self.secret_file(username)}"\n'

    def _files(self) -> BrokerFiles:
        from secadero.server.broker.users import BrokerFiles

        # Private to whoever runs the demo or the tests: no group to share them with.
        return BrokerFiles(self.users_dir, file_mode=0o600, group=None)

    def add_user(self, username: str, role: str, *, yard: str | None = None,
                 node: str | None = None) -> tuple[str, str]:
        """A new user (``role`` as in server/broker/users.py), then a reload; its credentials."""
        from secadero.server.broker.users import BrokerUser, new_secret, write_secret_file

        secret = new_secret()
        write_secret_file(self.secret_file(username), secret)
        self._files().add(BrokerUser(username, role, yard, node), secret)  # type: ignore[arg-type]
        self.reload()
        return username, secret

    def add_node(self, yard: str, node: str) -> tuple[str, str]:
        """A node's own user (its production ACL: its topics only); its credentials."""
        from secadero.server.broker.users import node_username

        return self.add_user(node_username(yard, node), "node", yard=yard, node=node)

    def rotate_user(self, username: str) -> tuple[str, str]:
        """A new secret for ``username``, then a reload; its new credentials."""
        from secadero.server.broker.users import new_secret, write_secret_file

        secret = new_secret()
        self._files().rotate(username, secret)
        write_secret_file(self.secret_file(username), secret)
        self.reload()
        return username, secret

    def node_credentials(self, yard: str, node: str) -> tuple[str, str]:
        """The node's own user: made on first use, the same on later runs (the demo)."""
        from secadero.server.broker.users import node_username

        username = node_username(yard, node)
        if self._files().find_node(yard, node) is not None and self.secret_file(username).exists():
            return self.credentials(username)
        if self._files().find_node(yard, node) is not None:
            return self.rotate_user(username)  # its secret file was deleted
        return self.add_node(yard, node)

    def remove_user(self, username: str) -> None:
        self._files().remove(username)
        self.secret_file(username).unlink(missing_ok=True)
        self.reload()

    def reload(self, timeout_s: float = 10.0) -> None:
        """SIGHUP: Mosquitto reads its password and ACL files again, keeping its clients.

        Returns once the broker has begun the reload (its log says "Reloading config."):
        it reloads in its one thread before it reads any socket again, so a client that
        connects after this meets the new users. (Mosquitto answers a signal with no
        other sign: the log is the only event there is.)
        """
        from secadero.server.broker.users import reload_broker

        if self.process is None or self.process.poll() is not None:
            return
        mark = self.log_mark()
        reload_broker(pid=self.process.pid)
        self.wait_reloaded(mark, timeout_s)

    def log_mark(self) -> int:
        """Where the broker's log ends now (for ``wait_reloaded``)."""
        log = self.workdir / "mosquitto.log"
        return log.stat().st_size if log.exists() else 0

    def wait_reloaded(self, mark: int, timeout_s: float = 10.0) -> None:
        """Until the log says "Reloading config." after ``mark`` (someone sent SIGHUP)."""
        log = self.workdir / "mosquitto.log"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), log.open("rb") as handle:
                handle.seek(mark)
                if b"Reloading config." in handle.read():
                    return
            time.sleep(0.01)
        raise ServiceError(f"Mosquitto did not reload within {timeout_s:g} s; "
                           f"log:\n{_tail(log)}")

    def _make_users(self) -> None:
        from secadero.server.broker.users import BrokerUser, new_secret, write_secret_file

        files = self._files()
        if files.users():
            return  # a restart keeps the users (and their secrets) of the first start
        for username, role in ((HARNESS_USER, "harness"), (SERVER_USER, "server"),
                               (READONLY_USER, "readonly")):
            secret = new_secret()
            write_secret_file(self.secret_file(username), secret)
            files.add(BrokerUser(username, role), secret)  # type: ignore[arg-type]

    def start(self) -> Mosquitto:
        binary = find_binary(MOSQUITTO_CANDIDATES, "mosquitto")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        self._make_users()
        files = self._files()
        if not self.port:
            self.port = free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {files.password_file}\n"
            f"acl_file {files.acl_file}\n"
            # Started as root, Mosquitto drops to the user 'mosquitto', which cannot read
            # our private folder: it stays the user who started it, as for anyone else.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            "persistence true\n"
            f"persistence_location {self.workdir / 'data'}/\n"
            "autosave_interval 60\n"
            # The ingest's session must survive a day of backlog: the default
            # of 1,000 queued messages silently drops the rest.
            "max_queued_messages 1000000\n"
            "max_inflight_messages 100\n"
            "persistent_client_expiration 14d\n"
            # Without it Nagle's algorithm holds small QoS 1 packets ~40 ms:
            # the rain alert path is made of small packets.
            "set_tcp_nodelay true\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            # information: "Reloading config.", which reload() waits for.
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            + self.extra_config
        )
        self._spawn([binary, "-c", str(conf)])
        assert self.process is not None
        wait_for_port(self.port, process=self.process, log=self.workdir / "mosquitto.log")
        return self


# The users every private InfluxDB gets: an admin (the tests' harness too: tests make
# a database each), the server's writer and Grafana's reader, which have rights only
# on the databases ``grant`` names, as in production (docs/security.md).
INFLUX_ADMIN = "admin"
INFLUX_WRITER = "secadero-writer"
INFLUX_READER = "grafana"  # the name dashboards/provisioning/datasources/secadero.yaml uses
# (the same names as `secadero influx init`: server/influx_setup.py; a test keeps them equal)

# Each private InfluxDB this process started, by URL: the tests' helpers
# (tests/conftest.py) log in as its admin without every caller passing it.
_influx_by_url: dict[str, InfluxDB] = {}


def influx_at(url: str) -> InfluxDB | None:
    """The private InfluxDB this process started at ``url`` (None for another server)."""
    return _influx_by_url.get(url.rstrip("/"))


def influx_admin_for(url: str) -> tuple[str, str] | None:
    """The admin's ``(username, password)`` of the private InfluxDB at ``url``, if ours."""
    found = influx_at(url)
    return found.admin if found is not None else None


def influx_request(url: str, *, data: bytes | None = None,
                   auth: tuple[str, str] | None = None) -> urllib.request.Request:
    """A request to the private InfluxDB at ``url`` (``.../query?...``, ``.../write?...``),
    logged in (a header, never the URL) as ``auth`` or else that InfluxDB's admin."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None
                                     else "GET")
    base = url.split("/query")[0].split("/write")[0]
    login = auth or influx_admin_for(base)
    if login is not None:
        request.add_header("Authorization", basic_auth(login))
    return request


def basic_auth(credentials: tuple[str, str]) -> str:
    """An ``Authorization`` header value: InfluxDB 1.x takes HTTP Basic."""
    import base64

    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


@dataclass
class InfluxDB(_Service):
    """A private InfluxDB 1.x on 127.0.0.1 (Debian's ``influxd``), loopback only, with
    authentication on (``auth-enabled = true``) and three users (see ``INFLUX_ADMIN``).

    Their secrets are files in ``workdir/secrets`` (mode 0600); they go to InfluxDB in
    a POST body and to clients in the ``Authorization`` header, never in a URL, and
    influxd's HTTP and query logs are off.
    """

    extra_env: dict[str, str] = field(default_factory=dict)
    # False: no user is made (to test `secadero influx init`, which makes them).
    make_users: bool = True
    # False: authentication off, as InfluxDB ships (to test what refuses that).
    auth: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def secret_file(self, username: str = INFLUX_ADMIN) -> Path:
        return self.workdir / "secrets" / username

    def credentials(self, username: str = INFLUX_ADMIN) -> tuple[str, str]:
        return username, self.secret_file(username).read_text(encoding="utf-8").strip()

    @property
    def admin(self) -> tuple[str, str]:
        """The admin's ``(username, password)``: every right on every database."""
        return self.credentials(INFLUX_ADMIN)

    def toml_credentials(self, username: str = INFLUX_ADMIN) -> str:
        """``username = ...`` and ``password_file = ...`` lines for an ``[influxdb]`` section."""
        return f'username = "{username}"\npassword_file = "{self.secret_file(username)}"\n'

    def settings(self, database: str, username: str = INFLUX_ADMIN, **kwargs: Any
                 ) -> InfluxSettings:
        """The server's ``[influxdb]`` settings for ``database`` here, logged in as ``username``."""
        from secadero.settings import InfluxSettings

        user, password = self.credentials(username)
        return InfluxSettings(url=self.url, database=database, username=user,
                              password=password, **kwargs)

    def query(self, statement: str, *, database: str | None = None,
              credentials: tuple[str, str] | None = None) -> list[dict[str, object]]:
        """Run InfluxQL (POST) as ``credentials`` (default: the admin); the results, raising
        ``ServiceError`` on an error."""
        import json
        import urllib.parse

        form = {"q": statement} | ({"db": database} if database else {})
        request = urllib.request.Request(f"{self.url}/query",
                                         urllib.parse.urlencode(form).encode(), method="POST")
        if credentials is not None or self.secret_file(INFLUX_ADMIN).exists():
            request.add_header("Authorization", basic_auth(credentials or self.admin))
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                results = json.load(response).get("results", [])
        except urllib.error.HTTPError as exc:
            raise ServiceError(f"InfluxDB answered {exc.code} to a query: "
                               f"{exc.read().decode('utf-8', 'replace')[:200]}") from exc
        for result in results:
            if "error" in result:
                raise ServiceError(f"InfluxDB: {result['error']}")
        return results

    def grant(self, database: str, username: str, privilege: str = "ALL") -> None:
        """``GRANT privilege ON database TO username`` (ALL, READ or WRITE), as the admin."""
        if privilege not in ("ALL", "READ", "WRITE"):
            raise ValueError(f"privilege must be ALL, READ or WRITE, not {privilege!r}")
        self.query(f'GRANT {privilege} ON "{database}" TO "{username}"')

    def _make_users(self) -> None:
        """The three users, on the first start only (a restart keeps data and users)."""
        from secadero.server.broker.users import new_secret, write_secret_file
        from secadero.server.influx_setup import create_first_admin, create_user

        if self.secret_file(INFLUX_ADMIN).exists():
            return
        secrets_by_user = {name: new_secret()
                           for name in (INFLUX_ADMIN, INFLUX_WRITER, INFLUX_READER)}
        create_first_admin(self.url, INFLUX_ADMIN, secrets_by_user[INFLUX_ADMIN])
        for username, secret in secrets_by_user.items():
            write_secret_file(self.secret_file(username), secret)
        admin = (INFLUX_ADMIN, secrets_by_user[INFLUX_ADMIN])
        for username in (INFLUX_WRITER, INFLUX_READER):
            create_user(self.url, admin, username, secrets_by_user[username])

    def start(self) -> InfluxDB:
        binary = find_binary(INFLUXD_CANDIDATES, "influxdb")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        rpc_port = free_port()
        conf = self.workdir / "influxdb.conf"
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{rpc_port}"\n'
            "[meta]\n"
            f'  dir = "{self.workdir / "meta"}"\n'
            "[data]\n"
            f'  dir = "{self.workdir / "data"}"\n'
            f'  wal-dir = "{self.workdir / "wal"}"\n'
            "  query-log-enabled = false\n"
            "[http]\n"
            f'  bind-address = "127.0.0.1:{self.port}"\n'
            f"  auth-enabled = {'true' if self.auth else 'false'}\n"
            # Off: a request log would hold every query, CREATE USER's password with them.
            "  log-enabled = false\n"
            "[monitor]\n"
            "  store-enabled = false\n"
            "[continuous_queries]\n"
            "  log-enabled = false\n"
        )
        env = {**os.environ, **self.extra_env}
        self._spawn([binary, "-config", str(conf)], env=env)
        assert self.process is not None
        self._wait_ping()
        if self.auth and self.make_users:
            self._make_users()
            _influx_by_url[self.url] = self
        return self

    def _wait_ping(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServiceError(f"influxd exited with code {self.process.returncode}; "
                                   f"log:\n{_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as response:
                    # Ours, not another program that took the port first (listens_on).
                    if response.status == 204 and listens_on(self.process.pid,
                                                             self.port) is not False:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise ServiceError(f"influxd did not answer /ping within {timeout_s:g} s; "
                           f"log:\n{_tail(self.log_path)}")

    def restart(self) -> None:
        """Start again on the same port with the same data (after stop() or kill())."""
        self.start()
