"""The alert store's versioned migrations (``server/alerts/store.py``).

Version 2 (issue 13) makes a humidity warning followed by rain one row: a file
written by the server before it (two rows, the rain's naming the warning in
``details["warning_episode"]``) is rebuilt here as that server wrote it, with
plain sqlite3 and the version-1 schema, then opened by the real ``AlertStore``
and read by the real ``secadero alerts --history``.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest
from alert_helpers import at

from secadero.cli import main
from secadero.server.alerts.service import AlertService
from secadero.server.alerts.store import SCHEMA, SCHEMA_VERSION, AlertStore, NewerSchema
from secadero.server.api import ApiServer
from secadero.settings import load_server_settings

NOTE_COLUMNS = ("episode_id, yard, created_at, event, kind, recipient, role, channel, "
                "language, address, title, body, severity, status, provider")


def version_1_file(path: Path) -> None:
    """The story of test_alert_dawn.py's wet plate, as the version-1 server stored it:
    the warning (#1) at 13:08, resolved at 13:30 when the plate got wet; the rain (#2)
    carrying on from it; a dry-day node_offline (#3) that the migration leaves alone."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    warning = {"nodes": ["n1", "n2"], "resolved_by": "became the rain's episode"}
    rain = {"raised_by": "humidity_surge", "warning_episode": 1, "wet_ts": at("13:30"),
            "nodes": ["n1"], "start_ts": at("13:30"), "resolved_by": "all_clear"}
    db.executemany(
        "INSERT INTO episodes (id, yard, kind, key, cause, severity, state, raised_at, "
        "acked_at, acked_by, resolved_at, notify_count, message, details) "
        "VALUES (?, 'norte', ?, ?, ?, ?, 'resolved', ?, ?, ?, ?, ?, ?, ?)", [
            (1, "humidity_surge", "", "humidity_surge", "warning", at("13:08"), None, None,
             at("13:30"), 1, "la humedad sube", json.dumps(warning)),
            (2, "rain", "", "rain_now", "critical", at("13:08"), at("13:50"), "trays",
             at("15:10"), 3, "LLUEVE", json.dumps(rain)),
            (3, "node_offline", "n2", "node_offline", "warning", at("09:10"), None, None,
             at("10:00"), 1, "nodo n2", json.dumps({"last_seen_ts": at("08:59")})),
        ])
    db.executemany(
        f"INSERT INTO notifications ({NOTE_COLUMNS}) VALUES "
        "(?, 'norte', ?, ?, ?, ?, ?, ?, 'es', ?, 'Tendal Norte', ?, ?, 'sent', ?)", [
            (1, at("13:08"), "raise", "humidity_surge", "Rosa", "worker", "sms",
             "+51900000001", "humedad", "warning", "twilio"),
            (2, at("13:30"), "upgrade", "rain_now", "Rosa", "worker", "sms",
             "+51900000001", "LLUEVE", "critical", "twilio"),
            (2, at("15:10"), "all_clear", "all_clear", "Rosa", "worker", "sms",
             "+51900000001", "sin lluvia", "info", "twilio"),
            (3, at("09:10"), "raise", "node_offline", "Tito", "technician", "sms",
             "+51900000009", "nodo", "warning", "twilio"),
        ])
    db.commit()
    db.close()


def test_a_warning_and_its_rain_become_one_row(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite3"
    version_1_file(path)
    store = AlertStore(path)
    try:
        assert store.schema_version == SCHEMA_VERSION == 3
        rain, offline = store.history()
        assert (rain.id, rain.kind, rain.cause, rain.raised_at, rain.resolved_at) == (
            2, "rain", "rain_now", at("13:08"), at("15:10"))
        assert rain.details == {
            "raised_by": "humidity_surge", "wet_ts": at("13:30"), "nodes": ["n1"],
            "start_ts": at("13:30"), "resolved_by": "all_clear", "merged_from": 1,
            "humidity_nodes": ["n1", "n2"],
            "raises": [{"ts": at("13:08"), "cause": "humidity_surge", "severity": "warning"},
                       {"ts": at("13:30"), "cause": "rain_now", "severity": "critical"}]}
        assert [(n.episode_id, n.kind) for n in store.notifications()] == [
            (2, "humidity_surge"), (2, "rain_now"), (2, "all_clear"), (3, "node_offline")]
        assert store.episode(1) is None
        assert offline.details == {"last_seen_ts": at("08:59")}
    finally:
        store.close()
    # Opening it again changes nothing (the version says it is done).
    again = AlertStore(path)
    try:
        assert [e.id for e in again.history()] == [2, 3]
    finally:
        again.close()


def test_secadero_alerts_history_shows_one_story(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    version_1_file(tmp_path / "alerts.sqlite3")
    config = tmp_path / "server.toml"
    config.write_text('[alerts]\ndatabase = "alerts.sqlite3"\n\n[[yards]]\nid = "norte"\n'
                      'latitude = -6.57\nlongitude = -76.14\n')
    assert main(["alerts", "--config", str(config), "--history"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "#2 norte rain_now [critical] resolved by trays 13:50; raised 2026-06-15 13:08, "
        "resolved 2026-06-15 15:10; 3 sent, 0 failed",
        "    LLUEVE",
        "    raised: 13:08 humidity_surge (warning) -> 13:30 rain_now (critical)",
        "    13:08 raise     Rosa (worker, sms) sent via twilio",
        "    13:30 upgrade   Rosa (worker, sms) sent via twilio",
        "    15:10 all_clear Rosa (worker, sms) sent via twilio",
        "#3 norte node_offline n2 [warning] resolved; raised 2026-06-15 09:10, resolved "
        "2026-06-15 10:00; 1 sent, 0 failed",
        "    nodo n2",
        "    09:10 raise     Tito (technician, sms) sent via twilio",
    ]


def test_the_api_history_shows_one_story(tmp_path: Path) -> None:
    """The server opens (and migrates) the old file; its HTTP API lists one episode."""
    version_1_file(tmp_path / "alerts.sqlite3")
    config = tmp_path / "server.toml"
    config.write_text('[alerts]\ndatabase = "alerts.sqlite3"\n\n[[yards]]\nid = "norte"\n'
                      'latitude = -6.57\nlongitude = -76.14\n')
    service = AlertService(load_server_settings(config, env={}), notifiers=(), poller=None)
    api = ApiServer(service, host="127.0.0.1", port=0).start()
    try:
        api.accounts.add("tito", "technician", "technician password")
        session = api.accounts.login("tito", "technician password", time.time())
        assert session is not None
        request = urllib.request.Request(
            f"http://127.0.0.1:{api.port}/api/alerts/history?yard=norte",
            headers={"Authorization": f"Bearer {session.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            history = json.loads(response.read())
    finally:
        api.stop()
        service.store.close()
    assert [(e["id"], e["kind"], e["cause"]) for e in history] == [
        (2, "rain", "rain_now"), (3, "node_offline", "node_offline")]
    rain = history[0]
    assert [(r["cause"], r["severity"]) for r in rain["details"]["raises"]] == [
        ("humidity_surge", "warning"), ("rain_now", "critical")]
    assert [(n["event"], n["kind"]) for n in rain["notifications"]] == [
        ("raise", "humidity_surge"), ("upgrade", "rain_now"), ("all_clear", "all_clear")]


def test_an_old_file_gets_the_used_links_table(tmp_path: Path) -> None:
    """Version 3: a file from before single-use links can record a used one at once."""
    path = tmp_path / "alerts.sqlite3"
    version_1_file(path)
    store = AlertStore(path)
    try:
        assert store.claim_ack_token("mac-1", 2, at("16:00"), at("15:00")) is True
        assert store.claim_ack_token("mac-1", 2, at("16:00"), at("15:01")) is False
        # Expired ones are forgotten (their signature check refuses them anyway).
        assert store.claim_ack_token("mac-2", 2, at("16:30"), at("16:01")) is True
        assert store.claim_ack_token("mac-1", 2, at("17:00"), at("16:02")) is True
    finally:
        store.close()


def test_a_fresh_store_is_at_the_latest_version(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "new.sqlite3")
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.history() == []
    finally:
        store.close()


def test_a_store_from_a_newer_secadero_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(NewerSchema, match="schema version 4 is newer than this secadero's 3"):
        AlertStore(path)
