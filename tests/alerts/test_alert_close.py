"""A supervisor closes a rain alert through the real API server (issues 13 and 9).

The same running server as ``test_alert_api.py`` (the real ``AlertService`` and
``ApiServer``; ntfy and Twilio are local HTTP servers speaking their formats).
Closing needs a session of an account whose role may ``alerts.close``
(supervisor, admin); the session's account is who closed it.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

# The running server's fixtures, found by name (the test parameters redefine them: F811).
from test_alert_api import (  # noqa: F401
    PASSWORD,
    Running,
    ntfy,
    running,
    twilio_api,
    wait_sent,
)

from secadero.cli import main
from secadero.contract import decode_alert


def test_a_supervisor_closes_the_alert_and_the_beacons_clear(running: Running) -> None:  # noqa: F811
    running.rain()
    wait_sent(running, 2)
    [episode] = running.service.store.active_episodes()
    path = f"/api/alerts/{episode.id}/close"
    assert running.request("POST", path) == (401, {"error": "login required"})
    assert running.request("POST", path, headers={"Authorization": "Bearer not-a-session"}) \
        == (401, {"error": "login required"})
    # A worker, the quality officer and the technician may not; a push link's token is
    # no supervisor either.
    for name, role in (("rosa", "worker"), ("quique", "quality"), ("teo", "technician")):
        assert running.request("POST", path, as_user=name) == (
            403, {"error": f"the role {role} may not alerts.close"})
    token = running.service.tokens.make(episode.id or 0, running.service.clock())
    assert running.request("POST", f"{path}?token={token}") == (
        401, {"error": "login required"})
    assert running.service.current_alert("norte").state == "raised"
    assert running.request("POST", path, as_user="ana") == (
        200, {"closed": episode.id, "by": "ana"})
    topic, payload, retain = running.published[-1]
    assert (topic, retain, decode_alert(json.loads(payload)).state) == (
        "secadero/v1/norte/alert", True, "clear")
    # Still raining: the episode stays open, silent, so the next cycle raises nothing new.
    running.service.evaluate()
    [closed] = running.service.store.active_episodes()
    assert (closed.id, closed.state, closed.acked_by, closed.details["closed_by"]) == (
        episode.id, "acknowledged", "ana", "ana")
    assert running.service.current_alert("norte").state == "clear"
    assert len(running.service.store.notifications()) == 2  # nobody told anything more
    # Closing again changes nothing; an admin may too; an unknown id is a 404.
    assert running.request("POST", path, as_user="root") == (
        200, {"closed": episode.id, "by": "ana"})
    assert running.request("POST", "/api/alerts/99/close", as_user="ana") == (
        404, {"error": "no open alert with that id"})
    assert ('secadero_api_requests_total{method="POST",route="/api/alerts/{id}/close",'
            'status="200"} 2') in running.registry.render().splitlines()


def test_secadero_alerts_close(running: Running, tmp_path: Path,  # noqa: F811
                               monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """``secadero alerts --close ID --by ACCOUNT`` logs in to the running server (the
    password from a prompt or standard input), closes, logs out."""
    running.rain()
    wait_sent(running, 2)
    [episode] = running.service.store.active_episodes()
    config = str(tmp_path / "server.toml")
    assert main(["alerts", "--config", config, "--close", str(episode.id)]) == 2
    assert "--close needs --by ACCOUNT" in capsys.readouterr().out
    monkeypatch.setattr("getpass.getpass", lambda prompt: "wrong password")
    assert main(["alerts", "--config", config, "--close", str(episode.id), "--by", "ana"]) == 1
    assert capsys.readouterr().out == (f'alert {episode.id} not closed: '
                                       '{"error": "wrong name or password"}\n')
    monkeypatch.setattr("getpass.getpass", lambda prompt: PASSWORD)
    assert main(["alerts", "--config", config, "--close", str(episode.id), "--by", "rosa"]) == 1
    assert capsys.readouterr().out == (f'alert {episode.id} not closed: '
                                       '{"error": "the role worker may not alerts.close"}\n')
    assert main(["alerts", "--config", config, "--close", "99", "--by", "ana"]) == 1
    assert "alert 99 not closed" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["alerts", "--config", config, "--close", str(episode.id), "--by", "ana",
                 "--password-stdin"]) == 0
    assert capsys.readouterr().out == f"alert {episode.id} closed by ana\n"
    assert running.service.current_alert("norte").state == "clear"
    # Each run logged out after itself: no session is left behind.
    with sqlite3.connect(running.api.accounts.path) as db:
        assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
