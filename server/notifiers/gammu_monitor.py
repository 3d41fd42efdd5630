"""Watch the GSM modem through Gammu SMSD's own status: can the SMS path send right now?

``gammu-smsd`` keeps its state in shared memory; ``gammu-smsd-monitor -C -n 1``
(Debian package ``gammu-smsd``) prints it once as one CSV line. Its manual
lists ``client;phone ID;IMEI;sent;received;failed;battery;signal``; Gammu
1.42 prints the IMSI after the IMEI too, so the line is read from its end::

    Gammu 1.42.0 on Linux, kernel 6.1 ...;;999999999999999;994299429942994;1;0;0;100;42

``sent``/``received``/``failed`` count since the daemon started (a restart
sets them to 0 again); ``signal`` is the signal strength in percent, 0 with
no network. The daemon refreshes it every ``statusfrequency`` seconds (60 by
default) if ``checksignal`` is on (the default); with either off it reads 0
for ever (seen with Gammu 1.42), so the signal is then not watched. The
monitor does not print the network registration.

The registration is read where the daemon writes it: Gammu SMSD's SQL
service. With ``service = sql`` and ``driver = sqlite3`` in the smsdrc,
``SMSD_PhoneStatus`` (smsd/core.c) asks the modem every ``statusfrequency``
seconds and ``SMSDSQL_RefreshPhoneStatus`` (smsd/services/sql.c, query
``refresh_phone_status``) writes the network's code and name into the
daemon's row of the ``phones`` table (``NetCode``, ``NetName``; the row's
``IMEI`` is the monitor's). An empty code means no network: the AT driver
(``ATGEN_GetNetworkInfo``) asks for the operator only while registered, and
the daemon clears it when the modem does not answer. With the files service,
``checknetwork = 0`` or ``statusfrequency = 0`` the registration is not
watched (the row keeps the empty code the daemon starts it with).

``ModemMonitor`` reads it on a thread of its own every ``monitor_interval_s``,
exports ``secadero_notify_modem_*`` and says, through ``problem()``, why the
modem cannot send once that has lasted ``monitor_grace_s`` (a signal dipping
to 0 for one reading is not news): the daemon not answering, the modem off
the network, no signal, or messages failing with none sent since. The alert
engine turns that into the technician's ``modem_failing`` episode.
"""

from __future__ import annotations

import configparser
import logging
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from secadero.errors import SecaderoError
from secadero.server.metrics import Health, Help, Registry
from secadero.settings import GammuSettings

log = logging.getLogger(__name__)

MODEM_METRICS: Help = {
    "up": ("gauge", "1 when gammu-smsd-monitor answered at the last reading, else 0."),
    "signal_percent": ("gauge", "The modem's signal strength in percent (0: no network, or "
                                "not read: checksignal or statusfrequency = 0)."),
    "battery_percent": ("gauge", "The phone's battery in percent (USB modems say 0 or 100)."),
    "sent_messages": ("gauge", "Messages gammu-smsd sent since it started."),
    "received_messages": ("gauge", "Messages gammu-smsd received since it started."),
    "failed_messages": ("gauge", "Messages gammu-smsd failed to send since it started."),
    "readings_total": ("counter", "gammu-smsd-monitor runs, per result: ok, or why not "
                                  "(not_running, timeout, not_found, bad_output)."),
    "failing": ("gauge", "1 while the modem cannot send (the technician is told), else 0."),
    "network_registered": ("gauge", "1 while the modem is on a network, 0 off it (read from "
                                    "Gammu SMSD's SQLite phones table; absent without it)."),
    "network_info": ("gauge", "1 for the network the modem is on (code: MCC MNC, operator: "
                              "its name), 0 for the ones it was on before."),
    "network_readings_total": ("counter", "Readings of the phones table, per result: ok, "
                                          "no_row, db_error."),
}


class ModemMonitorError(SecaderoError):
    """gammu-smsd-monitor gave no state. ``reason`` is a short code for the counter."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True, slots=True)
class ModemState:
    """One reading of Gammu SMSD's status."""

    imei: str
    sent: int
    received: int
    failed: int
    battery_pct: int
    signal_pct: int


@dataclass(frozen=True, slots=True)
class NetworkState:
    """The daemon's row of the ``phones`` table: the network as the modem last reported it."""

    code: str  # "716 10" (MCC MNC); "" off the network, or not read yet
    name: str
    signal_pct: int
    updated_utc: str  # UpdatedInDB, set by the schema's trigger in UTC

    @property
    def registered(self) -> bool:
        # "ERROR" is the schema's default, never written by Gammu 1.42 itself.
        return self.code.strip() not in ("", "ERROR")


@dataclass(frozen=True, slots=True)
class PhonesTable:
    """Where Gammu SMSD's SQL service on SQLite keeps the ``phones`` table."""

    database: Path
    table: str = "phones"

    def read(self, imei: str, timeout_s: float) -> NetworkState | None:
        """The row of the phone with this IMEI, None if there is none; read-only.
        sqlite3.Error when the database cannot be read."""
        quoted = '"' + self.table.replace('"', '""') + '"'
        uri = self.database.resolve().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=timeout_s)) as db:
            row = db.execute(f"SELECT NetCode, NetName, Signal, UpdatedInDB FROM {quoted} "
                             "WHERE IMEI = ?", (imei,)).fetchone()
        if row is None:
            return None
        code, name, signal_pct, updated = row
        return NetworkState(code=str(code or ""), name=str(name or ""),
                            signal_pct=int(signal_pct if signal_pct is not None else -1),
                            updated_utc=str(updated or ""))


def _read_smsdrc(smsdrc: Path) -> configparser.ConfigParser | None:
    """The smsdrc, its keys lower case as Gammu reads them; None if unreadable here."""
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       inline_comment_prefixes=("#", ";"))
    try:
        parser.read(smsdrc, encoding="utf-8")
    except (OSError, configparser.Error, UnicodeDecodeError):
        return None
    return parser


def _off(value: object) -> bool:
    return str(value).strip().lower() in ("0", "false", "no", "off")


def signal_is_read(smsdrc: Path) -> bool:
    """False when the smsdrc turns the daemon's signal readings off (``checksignal = 0``
    or ``statusfrequency = 0``): its signal then says 0 whatever the network does."""
    parser = _read_smsdrc(smsdrc)
    if parser is None:
        return True  # unreadable here (another user's file): assume Gammu's defaults
    smsd = parser["smsd"] if parser.has_section("smsd") else {}
    return not _off(smsd.get("checksignal", "1")) and not _off(smsd.get("statusfrequency", "60"))


def phones_table(smsdrc: Path) -> PhonesTable | None:
    """The SQLite ``phones`` table the daemon refreshes the network into, or None when the
    smsdrc does not give one: another service (files), another SQL driver, no ``dbdir``,
    or the network readings off (``checknetwork = 0``, ``statusfrequency = 0``)."""
    parser = _read_smsdrc(smsdrc)
    if parser is None or not parser.has_section("smsd"):
        return None
    smsd = parser["smsd"]
    if (smsd.get("service", "").strip().lower() != "sql"
            or smsd.get("driver", "").strip().lower() != "sqlite3"):
        return None
    if _off(smsd.get("checknetwork", "1")) or _off(smsd.get("statusfrequency", "60")):
        return None
    dbdir, database = smsd.get("dbdir", "").strip(), smsd.get("database", "").strip()
    if not dbdir or not database:
        return None  # libdbi's own default folder: say where in the smsdrc instead
    table = (parser.get("tables", "phones", fallback="") or "phones").strip()
    return PhonesTable(database=Path(dbdir) / database, table=table)


def parse_monitor_csv(output: str) -> ModemState:
    """The last CSV line of ``gammu-smsd-monitor -C`` -> ModemState; ModemMonitorError if
    there is none (its warnings, "No PIN code in smsdrc file", go to stderr)."""
    lines = [line for line in output.splitlines() if line.count(";") >= 7]
    if not lines:
        raise ModemMonitorError("bad_output", f"no status line in {output.strip()[-200:]!r}")
    fields = lines[-1].strip().split(";")
    try:
        sent, received, failed, battery, signal = (int(value) for value in fields[-5:])
    except ValueError as exc:
        raise ModemMonitorError("bad_output", f"not numbers: {lines[-1].strip()[-120:]!r}"
                                ) from exc
    return ModemState(imei=fields[2], sent=sent, received=received, failed=failed,
                      battery_pct=battery, signal_pct=signal)


class ModemMonitor:
    """The modem's state and whether it can send, read from gammu-smsd-monitor.

    ``poll_once`` runs the monitor once; ``observe``/``unreachable`` take one
    reading's result (what ``poll_once`` calls; a test feeds recorded output).
    ``problem()`` is read by the alert thread: why the modem cannot send, or None.
    """

    def __init__(self, settings: GammuSettings, *, clock: Callable[[], float] = time.time,
                 registry: Registry | None = None, health: Health | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._state: ModemState | None = None
        # The failures counter when the last message went out: rising past it with
        # nothing sent since means the modem takes messages and cannot deliver them.
        self._failed_at_last_sent: int | None = None
        self._trouble: str | None = None
        self._trouble_since: float | None = None
        self._unreachable: str | None = None  # the last reading's reason for no state
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.metrics = (registry or Registry()).part("notify_modem", MODEM_METRICS)
        self.metrics.set("up", 0)
        self.metrics.set("failing", 0)
        self.health = health or Health()
        self.signal_watched = signal_is_read(settings.smsdrc)
        if not self.signal_watched:
            log.warning("modem: %s turns the signal readings off (checksignal or "
                        "statusfrequency = 0): only failures are watched", settings.smsdrc)
        self.phones = phones_table(settings.smsdrc)
        if self.phones is None:
            log.info("modem: the network registration is not watched: %s does not keep the "
                     "queue in SQLite with network readings (service = sql, driver = sqlite3, "
                     "dbdir, database; checknetwork, statusfrequency not 0), or this user "
                     "cannot read it (docs/alerts.md)", settings.smsdrc)
        self._network: NetworkState | None = None
        self._network_error: str | None = None  # the last reading's reason for no row

    # ------------------------------------------------------------ readings

    def command(self) -> list[str]:
        return [self.settings.monitor_command, "-c", str(self.settings.smsdrc), "-C", "-n", "1",
                "-d", "0"]

    def poll_once(self) -> None:
        try:
            result = subprocess.run(self.command(), capture_output=True, text=True,
                                    timeout=self.settings.timeout_s, check=False)
        except FileNotFoundError:
            self.unreachable("not_found", f"{self.settings.monitor_command} not found: install "
                             "the Debian package gammu-smsd")
            return
        except subprocess.TimeoutExpired:
            self.unreachable("timeout", f"gammu-smsd-monitor took over "
                             f"{self.settings.timeout_s:g} s")
            return
        if result.returncode != 0:
            # Without a running gammu-smsd there is no shared memory to read.
            self.unreachable("not_running", "gammu-smsd not running ("
                             f"{(result.stderr or result.stdout).strip()[-120:]})")
            return
        try:
            state = parse_monitor_csv(result.stdout)
        except ModemMonitorError as exc:
            self.unreachable(exc.reason, str(exc))
            return
        self.observe(state, self.read_network(state.imei))

    def read_network(self, imei: str) -> NetworkState | None:
        """The phone's row of the SQLite phones table (None: not watched, or not readable:
        counted, logged once per change, and the registration left unjudged)."""
        if self.phones is None:
            return None
        try:
            network = self.phones.read(imei, self.settings.timeout_s)
        except sqlite3.Error as exc:
            self._network_unread("db_error", f"cannot read {self.phones.database}: {exc}")
            return None
        if network is None:
            self._network_unread("no_row", f"no row for IMEI {imei} in table "
                                 f"{self.phones.table} of {self.phones.database}")
            return None
        self.metrics.inc("network_readings_total", result="ok")
        self._network_error = None
        return network

    def _network_unread(self, reason: str, message: str) -> None:
        self.metrics.inc("network_readings_total", result=reason)
        changed = self._network_error != reason
        self._network_error = reason
        (log.warning if changed else log.debug)("modem: %s", message)

    def observe(self, state: ModemState, network: NetworkState | None = None) -> None:
        """One good reading (with the phones row, when read): export it, and decide whether
        the modem can send."""
        self.metrics.inc("readings_total", result="ok")
        self.metrics.set("up", 1)
        with self._lock:
            if self._unreachable is not None:
                log.info("modem: gammu-smsd answers again")
            self._unreachable = None
        for name, value in (("signal_percent", state.signal_pct),
                            ("battery_percent", state.battery_pct),
                            ("sent_messages", state.sent),
                            ("received_messages", state.received),
                            ("failed_messages", state.failed)):
            self.metrics.set(name, value)
        if network is not None:
            self._export_network(network)
        with self._lock:
            previous = self._state
            self._state = state
            restarted = previous is not None and (state.sent < previous.sent
                                                  or state.failed < previous.failed)
            if (previous is None or restarted or state.sent > previous.sent
                    or self._failed_at_last_sent is None):
                self._failed_at_last_sent = state.failed
            if network is not None and not network.registered:
                trouble = "off the network"
            elif self.signal_watched and state.signal_pct == 0:
                trouble = "no signal"
            elif state.failed > self._failed_at_last_sent:
                trouble = f"{state.failed - self._failed_at_last_sent} SMS failed"
            else:
                trouble = None
        self._set_trouble(trouble)

    def _export_network(self, network: NetworkState) -> None:
        with self._lock:
            previous = self._network
            self._network = network
        self.metrics.set("network_registered", 1 if network.registered else 0)
        if previous is not None and previous.registered and (
                previous.code, previous.name) != (network.code, network.name):
            self.metrics.set("network_info", 0, code=previous.code,
                             operator=previous.name)
        if network.registered:
            self.metrics.set("network_info", 1, code=network.code, operator=network.name)
        if previous is None or previous.registered != network.registered:
            if network.registered:
                log.info("modem: on network %s (%s)", network.code, network.name)
            else:
                log.warning("modem: off the network")

    def unreachable(self, reason: str, message: str) -> None:
        """A reading that gave no state: the daemon cannot send either."""
        self.metrics.inc("readings_total", result=reason)
        self.metrics.set("up", 0)
        # Once per change, not at every reading of a daemon that stays down.
        with self._lock:
            changed = self._unreachable != reason
            self._unreachable = reason
        (log.warning if changed else log.debug)("modem: %s", message)
        self._set_trouble("gammu-smsd not answering" if reason in ("not_running", "timeout")
                          else f"gammu-smsd-monitor: {reason}")

    def _set_trouble(self, trouble: str | None) -> None:
        now = self._clock()
        with self._lock:
            if trouble is None:
                self._trouble = self._trouble_since = None
            else:
                if self._trouble_since is None:
                    self._trouble_since = now
                self._trouble = trouble
        self.metrics.set("failing", 1 if self.problem() else 0)

    # ------------------------------------------------------------ what the alerts read

    def state(self) -> ModemState | None:
        with self._lock:
            return self._state

    def network(self) -> NetworkState | None:
        """The phones row last read, None without one."""
        with self._lock:
            return self._network

    def problem(self) -> str | None:
        """Why the modem cannot send, once that has lasted ``monitor_grace_s``; else None."""
        with self._lock:
            if self._trouble is None or self._trouble_since is None:
                return None
            if self._clock() - self._trouble_since < self.settings.monitor_grace_s:
                return None
            return self._trouble

    # ------------------------------------------------------------ life

    def start(self) -> ModemMonitor:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="modem-monitor")
        self._thread.start()
        self.health.watch_thread("GSM modem monitor", self._thread)
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the top of the monitor's thread: log, read again next time
                log.exception("modem monitor")
            self._stop.wait(self.settings.monitor_interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.settings.timeout_s + 5)
