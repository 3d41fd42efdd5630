"""The alert service, its HTTP API and ``secadero alerts``, with ntfy and Twilio played by
local HTTP servers on 127.0.0.1 (``alert_helpers.FakeService``) speaking their formats.

The push message's Acknowledge button is followed exactly as the ntfy app
would: its URL and method, from the JSON ntfy received.
"""

from __future__ import annotations

import html
import http.client
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alert_helpers import FakeService, start_smsd

from secadero.cli import main
from secadero.contract import Alert, Envelope, Event, decode_alert
from secadero.devservices import free_port
from secadero.server.alerts.service import AlertService
from secadero.server.api import ApiServer
from secadero.server.metrics import Health, Registry
from secadero.server.notifiers import build_notifiers
from secadero.server.notifiers.notification_log import Notification
from secadero.server.notifiers.twilio import signature
from secadero.settings import ServerSettings, load_server_settings

AUTH_TOKEN = "twilio-test-token"
# The staff accounts every running API here has (secadero users add ...), one per role.
STAFF = {"ana": "supervisor", "rosa": "worker", "quique": "quality", "teo": "technician",
         "root": "admin"}
PASSWORD = "test password 1"


def write_config(tmp_path: Path, *, ntfy_url: str, twilio_url: str, api_port: int,
                 extra: str = "") -> Path:
    config = tmp_path / "server.toml"
    config.write_text(f"""
[alerts]
database = "var/alerts.sqlite3"
api_port = {api_port}
public_url = "http://127.0.0.1:{api_port}"
drying_start = "00:00"
drying_end = "24:00"
evaluate_interval_s = 0.5

[notifiers.ntfy]
url = "{ntfy_url}"

[notifiers.twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token_env = "TEST_TWILIO_TOKEN"
from_number = "+15005550006"
api_url = "{twilio_url}"
callback_base_url = "https://yard.example"

[notifiers.twilio_voice]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token_env = "TEST_TWILIO_TOKEN"
from_number = "+15005550006"
api_url = "{twilio_url}"
callback_base_url = "https://yard.example"
machine_detection = true

[forecast]
open_meteo_url = "http://127.0.0.1:9/v1/forecast"

[[yards]]
id = "norte"
name = "Norte"
latitude = -6.57
longitude = -76.14

[[yards.recipients]]
name = "Rosa"
role = "worker"
phone = "+51900000001"

[[yards.recipients]]
name = "Luis"
role = "worker"
channels = ["push"]
ntfy_topic = "norte-luis"
{extra}
""")
    return config


@pytest.fixture
def ntfy() -> Iterator[FakeService]:
    fake = FakeService()
    fake.default = fake.json_reply({"id": "abc123", "event": "message"})
    yield fake
    fake.close()


@pytest.fixture
def twilio_api() -> Iterator[FakeService]:
    fake = FakeService()
    counter = iter(range(1, 1000))
    # A Message's sid starts SM, a Call's CA.
    fake.default = lambda request: fake.json_reply(
        {"sid": f"{'CA' if request.path.endswith('/Calls.json') else 'SM'}{next(counter)}",
         "status": "queued"}, status=201)
    yield fake
    fake.close()


class Running:
    def __init__(self, settings: ServerSettings, service: AlertService, api: ApiServer,
                 published: list[tuple[str, bytes, bool]], *, registry: Registry) -> None:
        self.settings, self.service, self.api, self.published = settings, service, api, published
        self.registry = registry
        self.url = f"http://127.0.0.1:{api.port}"
        self._tokens: dict[str, str] = {}

    def token(self, name: str) -> str:
        """A session token of the staff account ``name``, logged in through the API."""
        if name not in self._tokens:
            status, answer = self.request("POST", "/api/login", json.dumps(
                {"name": name, "password": PASSWORD}).encode(),
                {"Content-Type": "application/json"})
            assert status == 200, answer
            self._tokens[name] = answer["token"]
        return self._tokens[name]

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None, *,
                as_user: str | None = None) -> tuple[int, Any]:
        """One request; ``as_user``: with that staff account's session (Bearer)."""
        headers = dict(headers or {})
        if as_user is not None:
            headers["Authorization"] = f"Bearer {self.token(as_user)}"
        req = urllib.request.Request(path if path.startswith("http") else self.url + path,
                                     data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def rain(self, node: str = "n1") -> None:
        event = Event(ts=time.time(), seq=1, type="rain_started")
        self.service.observe(Envelope("norte", node, "event", event), time.time())


@pytest.fixture
def running(tmp_path: Path, ntfy: FakeService, twilio_api: FakeService,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("TEST_TWILIO_TOKEN", AUTH_TOKEN)
    config = write_config(tmp_path, ntfy_url=ntfy.url, twilio_url=twilio_api.url,
                          api_port=free_port())
    settings = load_server_settings(config)
    published: list[tuple[str, bytes, bool]] = []
    service = AlertService(settings, notifiers=build_notifiers(settings.notifiers), poller=None,
                           publish=lambda t, p, r: published.append((t, p, r)))
    registry = Registry()
    api = ApiServer(service, host="127.0.0.1", port=settings.alerts.api_port,
                    registry=registry).start()
    for name, role in STAFF.items():
        api.accounts.add(name, role, PASSWORD)
    service.start()
    try:
        yield Running(settings, service, api, published, registry=registry)
    finally:
        api.stop()
        service.stop()


def test_settings_sections_load(running: Running) -> None:
    s = running.settings
    [yard] = s.yards
    assert [(r.name, r.role, r.language, r.channels) for r in yard.recipients] == [
        ("Rosa", "worker", "es", ("sms",)), ("Luis", "worker", "es", ("push",))]
    assert s.notifiers.twilio is not None and s.notifiers.twilio.auth_token == AUTH_TOKEN
    assert s.alerts.database == s.source / "var" / "alerts.sqlite3"
    assert s.notifiers.sms_route == ("twilio", "gammu")


def test_bad_alert_settings_are_reported_with_file_and_key(tmp_path: Path) -> None:
    from secadero.settings import check_file
    config = write_config(tmp_path, ntfy_url="http://x", twilio_url="http://x", api_port=1,
                          extra='\n[[yards.recipients]]\nname = "Ana"\nrole = "boss"\n'
                                'phone = "0051"\n')
    text = config.read_text().replace('drying_end = "24:00"', 'drying_end = "6pm"')
    config.write_text(text.replace("auth_token_env", "auth_token"))
    problems = check_file(config, env={})
    assert f"{config}: alerts.drying_end: must be a local time HH:MM, got '6pm'" in problems
    assert (f"{config}: yards[0].recipients[2].role: must be one of worker, supervisor, "
            "quality, technician, got 'boss'") in problems
    assert (f"{config}: yards[0].recipients[2].phone: '0051' is not an E.164 number like "
            "+51987654321") in problems
    assert (f"{config}: notifiers.twilio.auth_token: secrets do not belong in the file: use "
            "auth_token_env or auth_token_file") in problems


def test_wet_plate_push_ack_button_and_retained_alert(running: Running,
                                                      ntfy: FakeService,
                                                      twilio_api: FakeService) -> None:
    running.rain()
    push = ntfy.received.get(timeout=5).json()
    sms = twilio_api.received.get(timeout=5).form()
    assert sms["To"] == "+51900000001" and sms["Body"].startswith("LLUEVE en el tendal Norte")
    assert isinstance(push, dict) and push["topic"] == "norte-luis" and push["priority"] == 5
    [action] = push["actions"]
    # The retained alert went out with the raise.
    topic, payload, retain = running.published[-1]
    alert = decode_alert(json.loads(payload))
    assert (topic, retain, alert.state, alert.kind) == ("secadero/v1/norte/alert", True,
                                                       "raised", "rain_now")
    # Tapping the button: POST to the URL in the action.
    status, body = running.request(action["method"], action["url"])
    assert (status, body) == (200, {"acknowledged": 1, "by": "push"})
    [episode] = running.service.store.active_episodes()
    assert (episode.state, episode.acked_by) == ("acknowledged", "push")
    status, active = running.request("GET", "/api/alerts/active", as_user="rosa")
    assert status == 200 and [(a["id"], a["state"], a["cause"]) for a in active] == [
        (1, "acknowledged", "rain_now")]
    wait_sent(running, 2)
    status, history = running.request("GET", "/api/alerts/history?yard=norte", as_user="rosa")
    assert [(n["recipient"], n["channel"], n["status"], n["provider"])
            for n in history[0]["notifications"]] == [
        ("Rosa", "sms", "sent", "twilio"), ("Luis", "push", "sent", "ntfy")]


def test_ack_tokens_are_checked(running: Running, ntfy: FakeService) -> None:
    running.rain()
    url = ntfy.received.get(timeout=5).json()["actions"][0]["url"]  # type: ignore[index]
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]
    expiry, nonce, mac = token.split(".")
    forged = f"{int(expiry) + 3600}.{nonce}.{mac}"
    assert running.request("POST", f"/api/alerts/1/ack?token={forged}") == (
        403, {"error": "bad signature"})
    assert running.request("POST", f"/api/alerts/2/ack?token={token}") == (
        403, {"error": "bad signature"})  # a token is for one episode only
    assert running.request("POST", "/api/alerts/1/ack") == (401, {"error": "login required"})
    assert running.request("POST", "/api/alerts/1/ack?token=x") == (
        403, {"error": "malformed token"})
    expired = running.service.tokens.make(1, time.time() - 2 * running.service.tokens.ttl_s)
    assert running.request("POST", f"/api/alerts/1/ack?token={expired}") == (
        403, {"error": "expired"})
    assert running.service.store.active_episodes()[0].state == "raised"
    # the Bearer form works too
    assert running.request("POST", "/api/alerts/1/ack", headers={
        "Authorization": f"Bearer {token}"}) == (200, {"acknowledged": 1, "by": "push"})
    # once: a used link is refused, in either form
    assert running.request("POST", f"/api/alerts/1/ack?token={token}") == (
        403, {"error": "already used"})
    good99 = running.service.tokens.make(99, time.time())
    assert running.request("POST", f"/api/alerts/99/ack?token={good99}") == (
        404, {"error": "no open alert with that id"})


def wait_sent(running: Running, count: int) -> None:
    """Wait for the dispatcher's workers to log ``count`` notifications as sent (the log
    is only visible by reading the database)."""
    deadline = time.monotonic() + 5
    while len(running.service.store.notifications(status="sent")) < count:
        assert time.monotonic() < deadline, running.service.store.notifications()
        time.sleep(0.01)


def _twilio_post(running: Running, path: str, form: dict[str, str],
                 token: str = AUTH_TOKEN) -> tuple[int, Any]:
    sig = signature(token, "https://yard.example" + path, form.items())
    return running.request("POST", path, urllib.parse.urlencode(form).encode(), {
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig})


def test_an_sms_reply_ok_acknowledges_and_forged_ones_do_not(
        running: Running, twilio_api: FakeService) -> None:
    running.rain()
    twilio_api.received.get(timeout=5)
    reply = {"MessageSid": "SM77", "AccountSid": "AC0123456789abcdef0123456789abcdef",
             "From": "+51900000001", "To": "+15005550006", "Body": "Si", "NumMedia": "0"}
    assert _twilio_post(running, "/api/twilio/inbound", reply, token="wrong") == (
        403, {"error": "bad signature"})
    assert running.service.store.active_episodes()[0].state == "raised"
    assert _twilio_post(running, "/api/twilio/inbound", {**reply, "Body": "hola"}) == (
        200, "<Response></Response>")
    assert running.service.store.active_episodes()[0].state == "raised"
    assert _twilio_post(running, "/api/twilio/inbound", reply) == (200, "<Response></Response>")
    [episode] = running.service.store.active_episodes()
    assert (episode.state, episode.acked_by) == ("acknowledged", "+51900000001")


def test_a_forged_or_altered_twilio_webhook_is_refused(running: Running,
                                                      twilio_api: FakeService) -> None:
    """Twilio signs the URL it called and every form parameter (X-Twilio-Signature,
    HMAC-SHA1 with the account's auth token): a request signed by anyone else, a
    signed request replayed with a parameter changed or added, or sent to another
    route, is refused and changes nothing."""
    running.rain()
    twilio_api.received.get(timeout=5)
    reply = {"MessageSid": "SM78", "AccountSid": "AC0123456789abcdef0123456789abcdef",
             "From": "+51900000001", "To": "+15005550006", "Body": "OK", "NumMedia": "0"}
    signed = signature(AUTH_TOKEN, "https://yard.example/api/twilio/inbound", reply.items())

    def post(path: str, form: dict[str, str], sig: str | None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sig is not None:
            headers["X-Twilio-Signature"] = sig
        return running.request("POST", path, urllib.parse.urlencode(form).encode(), headers)

    refused = (403, {"error": "bad signature"})
    assert post("/api/twilio/inbound", reply, None) == refused
    assert post("/api/twilio/inbound", reply, "") == refused
    assert post("/api/twilio/inbound", reply, signed[:-4] + "AAA=") == refused
    assert post("/api/twilio/inbound", {**reply, "From": "+51900000002"}, signed) == refused
    assert post("/api/twilio/inbound", {**reply, "Extra": "1"}, signed) == refused
    assert post("/api/twilio/inbound?x=1", reply, signed) == refused
    assert post("/api/twilio/status", reply, signed) == refused
    assert running.service.store.active_episodes()[0].state == "raised"
    assert post("/api/twilio/inbound", reply, signed) == (200, "<Response></Response>")
    assert running.service.store.active_episodes()[0].acked_by == "+51900000001"


def test_twilio_status_callback_records_delivery(running: Running,
                                                 twilio_api: FakeService) -> None:
    running.rain()
    twilio_api.received.get(timeout=5)
    wait_sent(running, 2)
    [sms] = [n for n in running.service.store.notifications() if n.channel == "sms"]
    status = {"MessageSid": sms.provider_id or "", "MessageStatus": "undelivered",
              "ErrorCode": "30003", "AccountSid": "AC0123456789abcdef0123456789abcdef"}
    assert _twilio_post(running, "/api/twilio/status", status) == (200, {"updated": True})
    [sms] = [n for n in running.service.store.notifications() if n.channel == "sms"]
    assert (sms.delivery, sms.error) == ("undelivered", "twilio delivery error 30003")


def test_a_call_status_callback_records_whether_it_was_answered(
        running: Running, twilio_api: FakeService) -> None:
    """The local Twilio-shaped server takes the call (Calls API); the test then plays
    Twilio's status callback to the StatusCallback URL the call gave, signed with the
    voice account's token, in Twilio's documented form (CallSid, CallStatus, AnsweredBy
    with MachineDetection)."""
    running.rain()
    wait_sent(running, 2)
    [rain] = running.service.store.active_episodes()
    # The ladder's call, as the engine words it at its step (test_alert_voice.py covers
    # when), through the real dispatcher and voice notifier.
    call = running.service.store.add_notification(Notification(
        episode_id=rain.id or 0, yard="norte", created_at=time.time(), event="reminder",
        kind="trays_reminder", recipient="Rosa", role="worker", channel="voice",
        language="es", address="+51900000001", title="Tendal Norte",
        body="URGENTE: siguen afuera bandejas.", severity="critical"))
    running.service.dispatcher.deliver(call)
    [placed] = [r for r in twilio_api.requests if r.path.endswith("/Calls.json")]
    form = placed.form()
    assert (form["StatusCallback"], form["StatusCallbackEvent"], form["MachineDetection"]) == (
        "https://yard.example/api/twilio/call-status", "completed", "Enable")
    [call] = running.service.store.notifications(episode_id=rain.id, limit=10)[-1:]
    assert (call.channel, call.status, call.provider_id) == ("voice", "sent", "CA2")

    def twilio_says(fields: dict[str, str], token: str = AUTH_TOKEN) -> tuple[int, Any]:
        params = {"CallSid": "CA2", "AccountSid": "AC0123456789abcdef0123456789abcdef",
                  "From": "+15005550006", "To": "+51900000001", "Direction": "outbound-api",
                  "ApiVersion": "2010-04-01", **fields}
        sig = signature(token, form["StatusCallback"], params.items())
        return running.request("POST", "/api/twilio/call-status",
                               urllib.parse.urlencode(params).encode(), {
                                   "Content-Type": "application/x-www-form-urlencoded",
                                   "X-Twilio-Signature": sig})

    assert twilio_says({"CallStatus": "no-answer"}, token="forged") == (
        403, {"error": "bad signature"})
    assert running.service.core.open_episodes()[0].details.get("calls_unanswered") is None
    assert twilio_says({"CallStatus": "no-answer", "CallDuration": "0"}) == (
        200, {"updated": True})
    # A voicemail picked up: "completed", but Twilio's detection says a machine.
    assert twilio_says({"CallStatus": "completed", "CallDuration": "21",
                        "AnsweredBy": "machine_start"}) == (200, {"updated": True})
    assert twilio_says({"CallStatus": "completed", "CallSid": "CA999"}) == (
        200, {"updated": False})  # not a call of ours
    [call] = [n for n in running.service.store.notifications() if n.channel == "voice"]
    assert call.delivery == "completed (machine_start)"
    [rain] = running.service.core.open_episodes()
    assert (rain.details["calls_unanswered"], rain.details["call_outcomes"]) == (
        2, {"Rosa": ["no-answer", "completed (machine_start)"]})
    assert "call_answered_by" not in rain.details
    assert running.service.metrics.get("calls_total", outcome="unanswered") == 2
    assert running.service.store.episode(rain.id or 0) == rain  # committed, not only in memory


def test_unknown_routes_and_bad_input(running: Running) -> None:
    assert running.request("GET", "/nope")[0] == 404
    assert running.request("GET", "/api/alerts/history?limit=x", as_user="rosa") == (
        400, {"error": "limit must be an integer", "field": "limit"})
    assert running.request("GET", "/api/alerts/123", as_user="rosa") == (
        404, {"error": "no such alert"})


def test_secadero_alerts_prints_open_alerts_and_history(
        running: Running, ntfy: FakeService, capsys: pytest.CaptureFixture[str]) -> None:
    running.rain()
    ntfy.received.get(timeout=5)
    wait_sent(running, 2)
    config = str(running.settings.source / "server.toml")
    capsys.readouterr()
    assert main(["alerts", "--config", config]) == 0
    out = capsys.readouterr().out.splitlines()
    [episode] = running.service.store.active_episodes()
    raised = datetime.fromtimestamp(episode.raised_at, ZoneInfo("America/Lima"))
    assert out[0] == (f"#1 norte rain_now [critical] raised; raised "
                      f"{raised:%Y-%m-%d %H:%M}; 2 sent, 0 failed")
    assert out[1] == (f"    LLUEVE en el tendal Norte (sensor n1) desde las {raised:%H:%M}. "
                      "Recoger las bandejas YA. Responda OK.")
    assert out[2].endswith(" raise     Rosa (worker, sms) sent via twilio")
    assert main(["alerts", "--config", config, "--history", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["id"], row["cause"], len(row["notifications"])) == (1, "rain_now", 2)


def test_current_alert_is_clear_without_episodes(running: Running) -> None:
    assert running.service.current_alert("norte") == Alert(state="clear")


def test_the_commented_sample_config_loads(repo_root: Path) -> None:
    from secadero.settings import check_file
    sample = repo_root / "server" / "alerts" / "alerts.example.toml"
    assert check_file(sample, env={"SECADERO_TWILIO_TOKEN": "t"}) == []
    settings = load_server_settings(sample, env={"SECADERO_TWILIO_TOKEN": "t"})
    assert [r.role for r in settings.yards[0].recipients] == [
        "worker", "worker", "supervisor", "quality", "technician"]
    assert settings.forecast.providers == ("open-meteo", "met-norway")


@pytest.mark.skipif(not (shutil.which("gammu") and shutil.which("gammu-smsd")),
                    reason="needs the Debian packages gammu and gammu-smsd")
def test_an_ok_received_by_the_gsm_modem_acknowledges(
        running: Running, twilio_api: FakeService, tmp_path: Path) -> None:
    """Gammu SMSD on its dummy driver receives "OK"; its RunOnReceive hook runs
    ``secadero alerts --sms-received``, which hands it to the API: no internet needed."""
    running.rain()
    twilio_api.received.get(timeout=5)
    config = running.settings.source / "server.toml"
    hook = tmp_path / "on-receive.sh"
    hook.write_text(f"#!/bin/sh\nexec {sys.executable} -m secadero.cli alerts --config "
                    f"{config} --sms-received >> {tmp_path / 'hook.log'} 2>&1\n")
    hook.chmod(0o755)
    with start_smsd(tmp_path / "gammu", run_on_receive=str(hook)) as (smsdrc, _):
        subprocess.run(["gammu", "-c", str(smsdrc), "savesms", "TEXT", "-folder", "1",
                        "-unread", "-sender", "+51900000001", "-text", "OK"],
                       check=True, capture_output=True, timeout=20)
        deadline = time.monotonic() + 20
        while running.service.store.active_episodes()[0].state != "acknowledged":
            assert time.monotonic() < deadline, (tmp_path / "hook.log").read_text() \
                if (tmp_path / "hook.log").exists() else "hook never ran"
            time.sleep(0.1)  # SMSD polls the modem every second; nothing to wait on
    [episode] = running.service.store.active_episodes()
    assert episode.acked_by == "+51900000001"
    assert (tmp_path / "hook.log").read_text() == 'SMS from +51900000001: {"acknowledged": [1]}\n'


def test_sms_inbound_needs_the_signature(running: Running) -> None:
    body = json.dumps({"from": "+51900000001", "text": "OK"}).encode()
    assert running.request("POST", "/api/sms/inbound", body, {
        "X-Secadero-Signature": "sha256=00"}) == (403, {"error": "bad signature"})
    bad = b"[]"
    assert running.request("POST", "/api/sms/inbound", bad, {
        "X-Secadero-Signature": running.service.tokens.sign_body(bad)})[0] == 400


def test_forecast_status_shows_age_and_error(running: Running) -> None:
    from secadero.server.forecast import Forecast, ForecastStatus

    class Poller:
        def status(self, yard: str) -> ForecastStatus:
            return ForecastStatus(Forecast("open-meteo", time.time() - 600, ()),
                                  "open-meteo http_429")

        def stop(self) -> None:
            pass

    running.service.poller = Poller()  # type: ignore[assignment]
    status, body = running.request("GET", "/api/forecast", as_user="teo")
    assert status == 200
    [row] = body
    assert (row["yard"], row["provider"], row["error"]) == ("norte", "open-meteo",
                                                           "open-meteo http_429")
    assert 600 <= row["age_s"] < 660


def test_acknowledging_during_evaluation_cycles_does_not_deadlock(running: Running) -> None:
    import threading
    running.rain()
    cycles = threading.Thread(target=lambda: [running.service.evaluate() for _ in range(300)],
                              daemon=True)
    cycles.start()
    for _ in range(300):
        running.service.acknowledge(1, "api")
    cycles.join(20)
    assert not cycles.is_alive(), "evaluation and acknowledge deadlocked"
    assert running.service.metrics.total("errors_total") == 0


def test_the_page_a_tap_opens_and_its_button(running: Running, ntfy: FakeService) -> None:
    running.rain()
    push = ntfy.received.get(timeout=5).json()
    assert isinstance(push, dict)
    status, page = running.request("GET", push["click"])
    assert status == 200
    assert "<title>Tendal norte</title>" in page and "Sin respuesta todavia." in page
    assert "LLUEVE en el tendal Norte (sensor n1)" in page
    action = re.search(r'action="([^"]+)"', page)
    assert action is not None
    # The browser posts the form; the API acknowledges and sends it back to the page.
    req = urllib.request.Request(html.unescape(action.group(1)), data=b"", method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=5) as response:  # follows the 303
        after = response.read().decode()
    assert "Recibido (push)." in after and "<form" not in after
    assert running.service.store.active_episodes()[0].state == "acknowledged"
    status, page = running.request("GET", "/alerts/1?token=1.x")
    assert status == 403 and "Enlace no valido o vencido." in page


def test_requests_are_counted_by_route_pattern_and_status_never_the_raw_path(
        running: Running) -> None:
    assert running.request("GET", "/api/alerts/active", as_user="rosa")[0] == 200
    assert running.request("GET", "/api/alerts/123", as_user="rosa")[0] == 404
    assert running.request("GET", "/api/alerts/124", as_user="rosa")[0] == 404
    assert running.request("GET", "/api/alerts/125")[0] == 401
    assert running.request("POST", "/api/alerts/77/ack?token=s3cret")[0] == 403
    assert running.request("GET", "/alerts/5?token=s3cret")[0] == 403
    assert running.request("GET", "/nope/42")[0] == 404
    connection = http.client.HTTPConnection("127.0.0.1", running.api.port, timeout=5)
    try:
        connection.request("POST", "/api/sms/inbound", body=b"",
                           headers={"Content-Length": "many"})
        assert connection.getresponse().status == 413
        connection.close()
        # Two requests on one kept-alive connection: the second, which http.server
        # itself refuses (no do_PUT), must not be counted under the first one's route.
        connection.request("GET", "/api/forecast",
                           headers={"Authorization": f"Bearer {running.token('rosa')}"})
        response = connection.getresponse()
        assert response.status == 200
        response.read()
        connection.request("PUT", "/api/forecast")
        assert connection.getresponse().status == 501
    finally:
        connection.close()
    exported = [line for line in running.registry.render().splitlines()
                if line.startswith("secadero_api_requests_total{")]
    assert sorted(exported) == sorted([
        'secadero_api_requests_total{method="POST",route="/api/login",status="200"} 1',
        'secadero_api_requests_total{method="GET",route="/api/alerts/active",status="200"} 1',
        'secadero_api_requests_total{method="GET",route="/api/alerts/{id}",status="404"} 2',
        'secadero_api_requests_total{method="GET",route="/api/alerts/{id}",status="401"} 1',
        'secadero_api_requests_total{method="POST",route="/api/alerts/{id}/ack",status="403"}'
        ' 1',
        'secadero_api_requests_total{method="GET",route="/alerts/{id}",status="403"} 1',
        'secadero_api_requests_total{method="GET",route="unmatched",status="404"} 1',
        'secadero_api_requests_total{method="POST",route="/api/sms/inbound",status="413"} 1',
        'secadero_api_requests_total{method="GET",route="/api/forecast",status="200"} 1',
        'secadero_api_requests_total{method="other",route="unmatched",status="501"} 1',
    ])


def test_the_api_thread_is_watched(running: Running) -> None:
    health = Health()
    api = ApiServer(running.service, host="127.0.0.1", port=0, health=health).start()
    assert health.problems() == []
    api.stop()
    deadline = time.monotonic() + 5
    while not health.problems():  # serve_forever returns just after shutdown() does
        assert time.monotonic() < deadline, "the stopped API thread was not noticed"
        time.sleep(0.01)
    assert health.problems() == ["the alert API thread has stopped; see the log"]
