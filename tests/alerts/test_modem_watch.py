"""The GSM modem watched: Gammu SMSD's state as metrics, and the technician told when it
cannot send.

The first tests run a real ``gammu-smsd`` on Gammu's own test setup, its
``dummy`` phone driver (``model = dummy``, ``connection = none``, the phone
kept in folders), and read it with the real ``gammu-smsd-monitor``. The dummy
phone always reports signal 42 % and sends every message, and a stopped
daemon is the one failure it can show; so the scenarios of a modem off the
network (signal 0) and of messages failing feed the monitor's readings as
``gammu-smsd-monitor -C`` prints them (the line format recorded from Gammu
1.42 on the dummy driver, with other counters), on the simulated clock of
``alert_helpers.SimYard``.

The network registration is read from the ``phones`` table of Gammu SMSD's
SQL service on SQLite (libdbi's driver, Debian package ``libdbd-sqlite3``;
the schema the one Debian's gammu-smsd ships). The real daemon on the dummy
driver writes "999 99" there; the dummy driver always reports that home
network, so the modem off the network is a phones row the test writes
itself, in that same schema, as Gammu writes it (an empty ``NetCode``).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alert_helpers import SimYard, at, write_smsdrc

from secadero.devservices import SERVER_USER
from secadero.server.app import Server
from secadero.server.metrics import Registry
from secadero.server.notifiers import Outgoing
from secadero.server.notifiers.gammu import GammuNotifier
from secadero.server.notifiers.gammu_monitor import (
    ModemMonitor,
    ModemMonitorError,
    ModemState,
    NetworkState,
    PhonesTable,
    parse_monitor_csv,
    phones_table,
    signal_is_read,
)
from secadero.settings import GammuSettings, load_server_settings

SMSD_NEEDED = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("gammu-smsd", "gammu-smsd-inject",
                                            "gammu-smsd-monitor")),
    reason="needs the Debian packages gammu and gammu-smsd")

# Gammu SMSD's schema for SQLite as Debian's gammu-smsd 1.42 ships it (version 17).
SQLITE_SCHEMA = Path("/usr/share/doc/gammu-smsd/examples/sqlite.sql")
SQL_NEEDED = pytest.mark.skipif(
    not SQLITE_SCHEMA.exists() or not any(Path("/usr/lib").glob("*/dbd/libdbdsqlite3.so")),
    reason="needs the Debian packages gammu-smsd and libdbd-sqlite3 (scripts/setup.sh)")
IMEI = "999999999999999"  # the dummy phone's

CLIENT = "Gammu 1.42.0 on Linux, kernel 6.1.0-rpi7-rpi-v8 (#1 SMP PREEMPT) compiler GCC 12.2"


def monitor_line(*, sent: int, failed: int, signal_pct: int, received: int = 0) -> str:
    """One line of ``gammu-smsd-monitor -C``: client;phone ID;IMEI;IMSI;sent;received;
    failed;battery;signal (Gammu 1.42 prints the IMSI its manual does not list)."""
    return (f"{CLIENT};;999999999999999;994299429942994;{sent};{received};{failed};100;"
            f"{signal_pct}\n")


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    """Check ``condition`` until it holds or ``timeout_s`` passes (SMSD polls every 1 s)."""
    pause = threading.Event()
    deadline = 0.0
    while deadline < timeout_s:
        if condition():
            return True
        pause.wait(0.2)
        deadline += 0.2
    return condition()


@pytest.fixture(name="smsd")
def smsd_fixture(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A real gammu-smsd on the dummy driver, its signal readings on (every second)."""
    root = tmp_path / "gammu"
    conf = write_smsdrc(root)
    conf.write_text(conf.read_text().replace("checksignal = 0", "checksignal = 1")
                    .replace("statusfrequency = 0", "statusfrequency = 1"))
    process = subprocess.Popen(["gammu-smsd", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Ready once its shared memory holds the dummy phone's signal: until the first
        # status refresh (statusfrequency) the daemon reports signal 0.
        assert wait_for(lambda: subprocess.run(
            ["gammu-smsd-monitor", "-c", str(conf), "-C", "-n", "1", "-d", "0"],
            capture_output=True, text=True, check=False).stdout.strip().endswith(";42"))
        yield conf, process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(10)


def create_smsd_database(path: Path) -> Path:
    """An empty Gammu SMSD database in SQLite, from the schema gammu-smsd ships."""
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_SCHEMA.read_text())
    return path


def write_sql_smsdrc(root: Path) -> Path:
    """The dummy driver's smsdrc with the SQL service on SQLite, the status read every
    second (signal and network)."""
    conf = write_smsdrc(root)
    create_smsd_database(root / "smsd.db")
    text = conf.read_text()
    for files_line in ("service = files", "inboxpath", "outboxpath", "sentsmspath",
                       "errorsmspath", "checksignal", "statusfrequency"):
        text = "".join(line + "\n" for line in text.splitlines()
                       if not line.startswith(files_line))
    conf.write_text(text.replace("[smsd]\n", f"[smsd]\nservice = sql\ndriver = sqlite3\n"
                                             f"dbdir = {root}/\ndatabase = smsd.db\n"
                                             "statusfrequency = 1\n"))
    return conf


def write_phone_row(database: Path, *, net_code: str, net_name: str, signal_pct: int) -> None:
    """The daemon's phones row as Gammu 1.42's SQL service writes it (insert_phone, then
    refresh_phone_status; an empty NetCode when the modem is on no network)."""
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("DELETE FROM phones WHERE IMEI = ?", (IMEI,))
        db.execute("INSERT INTO phones (IMEI, IMSI, ID, NetCode, NetName, Send, Receive, "
                   "Client, Battery, Signal) VALUES (?, '994299429942994', '', ?, ?, 'yes', "
                   "'yes', ?, -1, ?)", (IMEI, net_code, net_name, CLIENT, signal_pct))


@SMSD_NEEDED
def test_a_running_smsd_is_read_and_a_stopped_one_is_a_problem(
        smsd: tuple[Path, subprocess.Popen[bytes]]) -> None:
    conf, process = smsd
    registry = Registry()
    monitor = ModemMonitor(GammuSettings(smsdrc=conf, monitor_grace_s=0), registry=registry)

    def read() -> ModemState | None:
        monitor.poll_once()
        return monitor.state()

    assert wait_for(lambda: (state := read()) is not None and state.signal_pct == 42)
    GammuNotifier(GammuSettings(smsdrc=conf)).send(Outgoing(
        notification_id=1, episode_id=1, yard="norte", recipient="Tito",
        address="+51900000009", title="Prueba", body="prueba", severity="info",
        kind="modem_back", event="recovered"))
    assert wait_for(lambda: (state := read()) is not None and state.sent == 1)
    # Battery 0: the smsdrc says checkbattery = 0 (a USB modem has none).
    assert monitor.state() == ModemState(imei="999999999999999", sent=1, received=0, failed=0,
                                         battery_pct=0, signal_pct=42)
    assert monitor.problem() is None
    metrics = registry.render()
    for line in ("secadero_notify_modem_up 1", "secadero_notify_modem_signal_percent 42",
                 "secadero_notify_modem_sent_messages 1",
                 "secadero_notify_modem_failed_messages 0", "secadero_notify_modem_failing 0"):
        assert line in metrics.splitlines()

    # (The first readings may have come before the daemon had its shared memory.)
    not_running_before = monitor.metrics.get("readings_total", result="not_running")
    os.kill(process.pid, signal.SIGTERM)
    process.wait(10)
    monitor.poll_once()
    assert monitor.problem() == "gammu-smsd not answering"
    assert monitor.metrics.get("up") == 0
    assert monitor.metrics.get("failing") == 1
    assert monitor.metrics.get("readings_total", result="not_running") \
        == not_running_before + 1


def test_the_monitor_line_is_read_from_its_end() -> None:
    assert parse_monitor_csv("warning\n" + monitor_line(sent=7, failed=2, signal_pct=63)) \
        == ModemState(imei="999999999999999", sent=7, received=0, failed=2, battery_pct=100,
                      signal_pct=63)
    with pytest.raises(ModemMonitorError, match="bad_output: no status line"):
        parse_monitor_csv("Failed to map shared memory segment!\n")
    with pytest.raises(ModemMonitorError, match="bad_output: not numbers"):
        parse_monitor_csv(f"{CLIENT};;9;9;x;0;0;100;42\n")


def test_an_smsdrc_without_signal_readings_is_not_watched_for_signal(tmp_path: Path) -> None:
    conf = tmp_path / "smsdrc"
    conf.write_text("[gammu]\nmodel = dummy\n[smsd]\nservice = files\nchecksignal = 0\n")
    assert signal_is_read(conf) is False
    conf.write_text("[gammu]\nmodel = at\n[smsd]\nservice = files\n")
    assert signal_is_read(conf) is True
    (tmp_path / "off").write_text("[smsd]\nstatusfrequency = 0\n")
    monitor = ModemMonitor(GammuSettings(smsdrc=tmp_path / "off", monitor_grace_s=0))
    monitor.observe(parse_monitor_csv(monitor_line(sent=0, failed=0, signal_pct=0)))
    assert monitor.problem() is None


def test_a_modem_off_the_network_then_failing_messages_tell_the_technician(
        tmp_path: Path) -> None:
    yard = SimYard(tmp_path)
    (tmp_path / "smsdrc").write_text("[smsd]\nservice = files\n")  # Gammu's defaults
    monitor = ModemMonitor(GammuSettings(smsdrc=tmp_path / "smsdrc", monitor_grace_s=300),
                           clock=lambda: yard.now)
    yard.alerts.modem_error = monitor.problem

    def reading(sent: int, failed: int, signal_pct: int) -> Callable[[], None]:
        return lambda: monitor.observe(parse_monitor_csv(
            monitor_line(sent=sent, failed=failed, signal_pct=signal_pct)))

    for when, sent, failed, signal_pct in (
            ("08:00", 3, 0, 42),
            ("09:00", 3, 0, 0),    # off the network ...
            ("09:03", 3, 0, 0),
            ("10:00", 5, 0, 38),   # ... back, two queued messages go out
            ("11:00", 5, 0, 40),
            ("11:10", 5, 2, 40),   # signal, but two messages failed (no credit)
            ("11:30", 6, 2, 40),   # topped up: one goes out
            ("12:00", 6, 2, 0),    # a dip shorter than the grace: nobody is told
            ("12:02", 6, 2, 35)):
        yard.at(when, reading(sent, failed, signal_pct))
    yard.run("13:00")

    assert yard.sent == [("09:05", "Tito", "twilio", "modem_failing", "raise"),
                         ("10:00", "Tito", "twilio", "modem_back", "recovered"),
                         ("11:15", "Tito", "twilio", "modem_failing", "raise"),
                         ("11:30", "Tito", "twilio", "modem_back", "recovered")]
    assert yard.bodies == [
        "Técnico: el modem GSM no puede enviar SMS del tendal Norte (no signal). Revisar "
        "senal, SIM y saldo.",
        "Técnico: el modem GSM del tendal Norte envia SMS de nuevo.",
        "Técnico: el modem GSM no puede enviar SMS del tendal Norte (2 SMS failed). Revisar "
        "senal, SIM y saldo.",
        "Técnico: el modem GSM del tendal Norte envia SMS de nuevo."]
    assert yard.transitions == [("09:05", "modem_failing", "raised", "warning"),
                                ("10:00", "modem_failing", "resolved", "warning"),
                                ("11:15", "modem_failing", "raised", "warning"),
                                ("11:30", "modem_failing", "resolved", "warning")]
    # The technician's episode, not the yard's: the beacons stay dark.
    assert yard.alerts.current_alert("norte").state == "clear"
    assert monitor.metrics.get("signal_percent") == 35
    assert monitor.metrics.get("failed_messages") == 2
    assert monitor.metrics.get("readings_total", result="ok") == 9


@SMSD_NEEDED
@SQL_NEEDED
def test_smsd_on_sqlite_refreshes_the_network_it_is_on_and_the_monitor_reads_it(
        tmp_path: Path) -> None:
    """The real gammu-smsd with the SQL service on SQLite: it rewrites its phones row's
    NetCode and NetName at every status refresh (not only at start), the monitor reads
    them, and the notifier's gammu-smsd-inject queues into the database."""
    root = tmp_path / "gammu"
    conf = write_sql_smsdrc(root)
    database = root / "smsd.db"
    process = subprocess.Popen(["gammu-smsd", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        registry = Registry()
        monitor = ModemMonitor(GammuSettings(smsdrc=conf, monitor_grace_s=0),
                               registry=registry)
        assert monitor.phones == PhonesTable(database=database, table="phones")

        def read() -> NetworkState | None:
            monitor.poll_once()
            return monitor.network()

        assert wait_for(lambda: (network := read()) is not None and network.registered)
        network = monitor.network()
        assert network is not None
        assert (network.code, network.name, network.signal_pct) == ("999 99", "GammuT3l", 42)
        assert monitor.problem() is None
        metrics = registry.render().splitlines()
        for line in ("secadero_notify_modem_network_registered 1",
                     'secadero_notify_modem_network_info{code="999 99",operator="GammuT3l"} 1',
                     "secadero_notify_modem_signal_percent 42",
                     "secadero_notify_modem_failing 0"):
            assert line in metrics

        # Live, not only at start: the daemon writes the network into the row again.
        write_phone_row(database, net_code="", net_name="", signal_pct=0)
        with closing(sqlite3.connect(database)) as db:
            assert wait_for(lambda: db.execute(
                "SELECT NetCode, NetName, Signal FROM phones WHERE IMEI = ?",
                (IMEI,)).fetchone() == ("999 99", "GammuT3l", 42))

        GammuNotifier(GammuSettings(smsdrc=conf)).send(Outgoing(
            notification_id=1, episode_id=1, yard="norte", recipient="Tito",
            address="+51900000009", title="Prueba", body="prueba", severity="info",
            kind="modem_back", event="recovered"))
        with closing(sqlite3.connect(database)) as db:
            assert wait_for(lambda: db.execute(
                "SELECT DestinationNumber, Status, TextDecoded FROM sentitems").fetchall()
                == [("+51900000009", "SendingOKNoReport", "prueba")])
        assert wait_for(lambda: (state := (monitor.poll_once(), monitor.state())[1])
                        is not None and state.sent == 1)
        assert monitor.metrics.get("network_readings_total", result="ok") >= 2
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(10)


@SQL_NEEDED
def test_a_modem_off_the_network_tells_the_technician(tmp_path: Path) -> None:
    """The phones row is the test's own (the dummy driver is always on its home network),
    read through the real SQLite path, on the simulated clock."""
    yard = SimYard(tmp_path)
    database = create_smsd_database(tmp_path / "smsd.db")
    smsdrc = tmp_path / "smsdrc"
    smsdrc.write_text(f"[smsd]\nService = SQL\nDriver = sqlite3\nDBDir = {tmp_path}\n"
                      "Database = smsd.db\n")
    monitor = ModemMonitor(GammuSettings(smsdrc=smsdrc, monitor_grace_s=300),
                           clock=lambda: yard.now)
    yard.alerts.modem_error = monitor.problem

    def reading(net_code: str, signal_pct: int) -> Callable[[], None]:
        def read() -> None:
            write_phone_row(database, net_code=net_code,
                            net_name="Claro" if net_code else "", signal_pct=signal_pct)
            monitor.observe(parse_monitor_csv(monitor_line(sent=3, failed=0,
                                                           signal_pct=signal_pct)),
                            monitor.read_network(IMEI))
        return read

    for when, net_code, signal_pct in (
            ("08:00", "716 10", 45),
            ("09:00", "", 30),      # a cell heard, the registration refused ...
            ("09:03", "", 30),
            ("10:00", "716 10", 40),  # ... back
            ("11:00", "", 40),      # shorter than the grace: nobody is told
            ("11:02", "716 10", 40)):
        yard.at(when, reading(net_code, signal_pct))
    yard.run("12:00")

    assert yard.sent == [("09:05", "Tito", "twilio", "modem_failing", "raise"),
                         ("10:00", "Tito", "twilio", "modem_back", "recovered")]
    assert yard.bodies == [
        "Técnico: el modem GSM no puede enviar SMS del tendal Norte (off the network). "
        "Revisar senal, SIM y saldo.",
        "Técnico: el modem GSM del tendal Norte envia SMS de nuevo."]
    assert monitor.metrics.get("network_registered") == 1
    assert monitor.metrics.get("network_info", code="716 10", operator="Claro") == 1
    assert monitor.metrics.get("network_readings_total", result="ok") == 6

    # Off the network at the last reading: registered 0, the old network's info 0.
    write_phone_row(database, net_code="", net_name="", signal_pct=0)
    monitor.observe(parse_monitor_csv(monitor_line(sent=3, failed=0, signal_pct=0)),
                    monitor.read_network(IMEI))
    assert monitor.metrics.get("network_registered") == 0
    assert monitor.metrics.get("network_info", code="716 10", operator="Claro") == 0


def test_the_phones_table_is_found_only_for_the_sql_service_on_sqlite(tmp_path: Path) -> None:
    conf = tmp_path / "smsdrc"
    sql = "[smsd]\nservice = sql\ndriver = sqlite3\ndbdir = /var/spool/gammu\n" \
          "database = smsd.db\n"
    conf.write_text(sql)
    assert phones_table(conf) == PhonesTable(database=Path("/var/spool/gammu/smsd.db"))
    conf.write_text(sql + "[tables]\nphones = modem_phones\n")
    assert phones_table(conf) == PhonesTable(database=Path("/var/spool/gammu/smsd.db"),
                                             table="modem_phones")
    for other in ("[smsd]\nservice = files\n",
                  sql.replace("sqlite3", "native_mysql"),
                  sql.replace("dbdir = /var/spool/gammu\n", ""),
                  sql + "checknetwork = 0\n",       # the daemon does not ask the modem
                  sql + "statusfrequency = 0\n"):   # ... or never again after the start
        conf.write_text(other)
        assert phones_table(conf) is None, other


def test_a_phones_table_that_cannot_be_read_is_counted_and_judges_nothing(
        tmp_path: Path) -> None:
    conf = tmp_path / "smsdrc"
    conf.write_text(f"[smsd]\nservice = sql\ndriver = sqlite3\ndbdir = {tmp_path}\n"
                    "database = smsd.db\n")
    monitor = ModemMonitor(GammuSettings(smsdrc=conf, monitor_grace_s=0))
    assert monitor.read_network(IMEI) is None  # no database file: read-only opens none
    assert monitor.metrics.get("network_readings_total", result="db_error") == 1
    create_smsd_database(tmp_path / "smsd.db")
    assert monitor.read_network(IMEI) is None  # the daemon has not written its row
    assert monitor.metrics.get("network_readings_total", result="no_row") == 1
    monitor.observe(parse_monitor_csv(monitor_line(sent=0, failed=0, signal_pct=42)), None)
    assert monitor.problem() is None
    assert not any(line.startswith("secadero_notify_modem_network_registered ")
                   for line in monitor.metrics.render().splitlines())
    write_phone_row(tmp_path / "smsd.db", net_code="ERROR", net_name="ERROR", signal_pct=-1)
    network = monitor.read_network(IMEI)
    assert network is not None and not network.registered  # the schema's default


def test_a_restarted_smsd_starts_its_counters_again_without_a_false_alarm(
        tmp_path: Path) -> None:
    now = [at("09:00")]
    (tmp_path / "smsdrc").write_text("[smsd]\nservice = files\n")
    monitor = ModemMonitor(GammuSettings(smsdrc=tmp_path / "smsdrc", monitor_grace_s=0),
                           clock=lambda: now[0])
    monitor.observe(parse_monitor_csv(monitor_line(sent=40, failed=3, signal_pct=50)))
    monitor.observe(parse_monitor_csv(monitor_line(sent=0, failed=0, signal_pct=50)))
    monitor.observe(parse_monitor_csv(monitor_line(sent=0, failed=1, signal_pct=50)))
    assert monitor.problem() == "1 SMS failed"


def server_config(path: Path, *, mosquitto: Any, influxdb: Any, name: str,
                  smsdrc: Path | None) -> Path:
    """A server with the alerts, no forecast, SMS only through Gammu (if ``smsdrc``)."""
    text = f"""
[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
client_id = "ingest-{name}"
{mosquitto.toml_credentials(SERVER_USER)}[influxdb]
url = "{influxdb.url}"
database = "{name}"
{influxdb.toml_credentials()}[ingest]
http_port = 0
state_file = "state.json"
set_aside_file = "set-aside.jsonl"
[alerts]
database = "alerts.sqlite3"
api_port = 0
evaluate_interval_s = 1
drying_start = "00:00"
drying_end = "24:00"
"""
    if smsdrc is not None:
        text += f"""[notifiers]
sms_route = ["gammu"]
[notifiers.gammu]
smsdrc = "{smsdrc}"
monitor_interval_s = 1
monitor_grace_s = 0
"""
    text += f"""
[[yards]]
id = "{name}"
name = "Norte"
latitude = -6.57
longitude = -76.14
[[yards.recipients]]
name = "Tito"
role = "technician"
phone = "+51900000009"
"""
    path.write_text(text)
    return path


def scrape(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode().splitlines()


@SMSD_NEEDED
@pytest.mark.integration
def test_the_server_watches_the_modem_only_with_gammu_configured(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str,
        smsd: tuple[Path, subprocess.Popen[bytes]]) -> None:
    """The real server on the real broker and database; its modem a real gammu-smsd on the
    dummy driver. Stopping the daemon tells the technician (the text waits in the
    daemon's outbox folder: gammu-smsd-inject queues without the daemon)."""
    conf, process = smsd
    with_gammu = tmp_path / "with"
    with_gammu.mkdir()
    settings = load_server_settings(server_config(
        with_gammu / "server.toml", mosquitto=mosquitto, influxdb=influxdb, name=unique_name,
        smsdrc=conf))
    server = Server(settings).start()
    try:
        assert wait_for(lambda: "secadero_notify_modem_signal_percent 42"
                        in scrape(server.http_port))
        assert "secadero_notify_modem_failing 0" in scrape(server.http_port)
        os.kill(process.pid, signal.SIGTERM)
        process.wait(10)
        outbox = conf.parent / "outbox"
        assert wait_for(lambda: any(outbox.iterdir()), timeout_s=20)
        assert "secadero_notify_modem_up 0" in scrape(server.http_port)
        [queued] = list(outbox.iterdir())
        assert "+51900000009" in queued.name
        sent = [n for n in server.alerts.store.notifications() if n.kind == "modem_failing"]
        assert [(n.recipient, n.channel, n.body) for n in sent] == [(
            "Tito", "sms", "Técnico: el modem GSM no puede enviar SMS del tendal Norte "
            "(gammu-smsd not answering). Revisar senal, SIM y saldo.")]
    finally:
        server.stop()

    without = tmp_path / "without"
    without.mkdir()
    settings = load_server_settings(server_config(
        without / "server.toml", mosquitto=mosquitto, influxdb=influxdb,
        name=unique_name, smsdrc=None))
    server = Server(settings)
    assert server.modem is None
    assert not any(line.startswith("secadero_notify_modem_")
                   for line in server.registry.render().splitlines())


@SMSD_NEEDED
@SQL_NEEDED
@pytest.mark.integration
def test_the_server_tells_the_technician_through_the_modem_when_it_is_off_the_network(
        tmp_path: Path, mosquitto: Any, influxdb: Any, unique_name: str) -> None:
    """The real server on the real broker and database; its modem a real gammu-smsd on the
    dummy driver with the SQL service on SQLite. The daemon reads the network once, at its
    start (statusfrequency = 3600: its first pass, then not for an hour), so the row the
    test writes afterwards, as Gammu writes a modem on no network, stays; the technician's
    SMS about it, and the one when it is back, go out through that same daemon."""
    root = tmp_path / "gammu"
    conf = write_sql_smsdrc(root)
    conf.write_text(conf.read_text().replace("statusfrequency = 1", "statusfrequency = 3600"))
    database = root / "smsd.db"
    process = subprocess.Popen(["gammu-smsd", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    server = None
    try:
        with closing(sqlite3.connect(database)) as db:
            assert wait_for(lambda: db.execute("SELECT NetCode FROM phones").fetchall()
                            == [("999 99",)])
        settings = load_server_settings(server_config(
            tmp_path / "server.toml", mosquitto=mosquitto, influxdb=influxdb,
            name=unique_name, smsdrc=conf))
        server = Server(settings).start()
        assert wait_for(lambda: "secadero_notify_modem_network_registered 1"
                        in scrape(server.http_port))
        assert 'secadero_notify_modem_network_info{code="999 99",operator="GammuT3l"} 1' \
            in scrape(server.http_port)
        assert "secadero_notify_modem_failing 0" in scrape(server.http_port)

        def texts_sent() -> list[tuple[str, str]]:
            with closing(sqlite3.connect(database)) as db:
                return db.execute("SELECT DestinationNumber, TextDecoded FROM sentitems "
                                  "ORDER BY ID").fetchall()

        write_phone_row(database, net_code="", net_name="", signal_pct=42)
        assert wait_for(lambda: len(texts_sent()) == 1, timeout_s=30)
        assert texts_sent() == [(
            "+51900000009", "Técnico: el modem GSM no puede enviar SMS del tendal Norte (off "
            "the network). Revisar senal, SIM y saldo.")]
        lines = scrape(server.http_port)
        assert "secadero_notify_modem_network_registered 0" in lines
        assert "secadero_notify_modem_failing 1" in lines

        write_phone_row(database, net_code="999 99", net_name="GammuT3l", signal_pct=42)
        assert wait_for(lambda: len(texts_sent()) == 2, timeout_s=30)
        assert texts_sent()[1] == ("+51900000009",
                                   "Técnico: el modem GSM del tendal Norte envia SMS de nuevo.")
        assert [n.kind for n in server.alerts.store.notifications()] == ["modem_failing",
                                                                        "modem_back"]
    finally:
        if server is not None:
            server.stop()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(10)
