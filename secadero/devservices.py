"""Start a private Mosquitto and InfluxDB 1.x as child processes.

Used by the demo yard (``secadero yard``) and by the test fixtures: each
service gets its own config and data under a folder we choose, listens on a
free loopback port, is waited for until it answers, and is stopped by the PID
we started (never by name: a system broker may be running beside us).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from secadero.errors import SecaderoError

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


@dataclass
class Mosquitto(_Service):
    """A private Mosquitto 2.x on 127.0.0.1.

    Anonymous access is allowed because it listens on loopback only; the
    production config (``server/mosquitto.conf``) requires passwords.
    """

    extra_config: str = ""

    def start(self) -> Mosquitto:
        binary = find_binary(MOSQUITTO_CANDIDATES, "mosquitto")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        if not self.port:
            self.port = free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
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
            "log_type error\nlog_type warning\nlog_type notice\n"
            + self.extra_config
        )
        self._spawn([binary, "-c", str(conf)])
        assert self.process is not None
        wait_for_port(self.port, process=self.process, log=self.workdir / "mosquitto.log")
        return self


@dataclass
class InfluxDB(_Service):
    """A private InfluxDB 1.x on 127.0.0.1 (Debian's ``influxd``), auth off, loopback only."""

    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
