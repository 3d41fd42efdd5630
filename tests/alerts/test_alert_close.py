"""A supervisor closes a rain alert through the real API server (issue 13).

The same running server as ``test_alert_api.py`` (the real ``AlertService`` and
``ApiServer``; ntfy and Twilio are local HTTP servers speaking their formats).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# The running server's fixtures, found by name (the test parameters redefine them: F811).
from test_alert_api import Running, ntfy, running, twilio_api, wait_sent  # noqa: F401

from secadero.cli import main
from secadero.contract import decode_alert
from secadero.server.alerts.service import AlertService


def test_a_supervisor_closes_the_alert_and_the_beacons_clear(running: Running) -> None:  # noqa: F811
    running.rain()
    wait_sent(running, 2)
    [episode] = running.service.store.active_episodes()
    token = running.service.tokens.make(episode.id or 0, running.service.clock())
    assert running.request("POST", f"/api/alerts/{episode.id}/close") == (
        403, {"error": "no token"})
    assert running.request("POST", f"/api/alerts/{episode.id}/close?token=x") == (
        403, {"error": "malformed token"})
    assert running.request("POST", f"/api/alerts/{episode.id}/close?token={token}&by=Ana") == (
        200, {"closed": episode.id, "by": "Ana"})
    topic, payload, retain = running.published[-1]
    assert (topic, retain, decode_alert(json.loads(payload)).state) == (
        "secadero/v1/norte/alert", True, "clear")
    # Still raining: the episode stays open, silent, so the next cycle raises nothing new.
    running.service.evaluate()
    [closed] = running.service.store.active_episodes()
    assert (closed.id, closed.state, closed.acked_by, closed.details["closed_by"]) == (
        episode.id, "acknowledged", "Ana", "Ana")
    assert running.service.current_alert("norte").state == "clear"
    assert len(running.service.store.notifications()) == 2  # nobody told anything more
    # Closing again changes nothing; the Bearer form works; an unknown id is a 404.
    assert running.request("POST", f"/api/alerts/{episode.id}/close", headers={
        "Authorization": f"Bearer {token}"}) == (200, {"closed": episode.id, "by": "Ana"})
    other = running.service.tokens.make(99, running.service.clock())
    assert running.request("POST", f"/api/alerts/99/close?token={other}") == (
        404, {"error": "no open alert with that id"})
    assert ('secadero_api_requests_total{method="POST",route="/api/alerts/{id}/close",'
            'status="200"} 2') in running.registry.render().splitlines()


def test_close_without_a_supervisor_name_is_the_supervisor(running: Running) -> None:  # noqa: F811
    running.rain()
    wait_sent(running, 2)
    [episode] = running.service.store.active_episodes()
    service: AlertService = running.service
    token = service.tokens.make(episode.id or 0, service.clock())
    assert running.request("POST", f"/api/alerts/{episode.id}/close?token={token}") == (
        200, {"closed": episode.id, "by": "supervisor"})


def test_secadero_alerts_close(running: Running, tmp_path: Path,  # noqa: F811
                               capsys: pytest.CaptureFixture[str]) -> None:
    """``secadero alerts --close ID --by NAME`` posts to the running server."""
    running.rain()
    wait_sent(running, 2)
    [episode] = running.service.store.active_episodes()
    config = str(tmp_path / "server.toml")
    assert main(["alerts", "--config", config, "--close", "99"]) == 1
    assert "alert 99 not closed" in capsys.readouterr().out
    assert main(["alerts", "--config", config, "--close", str(episode.id),
                 "--by", "Ana"]) == 0
    assert capsys.readouterr().out == f"alert {episode.id} closed by Ana\n"
    assert running.service.current_alert("norte").state == "clear"
