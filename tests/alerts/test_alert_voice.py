"""The ladder's last steps (issue 13): SMS after push, a voice call, a supervisor's close.

``alert_helpers.SimYard`` on the simulated clock: the real engine, store and dispatcher;
Twilio (SMS and voice) and ntfy are fakes that record who got what. The voice notifier
itself is tested against a local HTTP server speaking Twilio's Calls API
(``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``, Basic auth, form fields
``To``, ``From``, ``Twiml``; 201 with the call's ``sid``), never the real Twilio.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from alert_helpers import (  # noqa: F401 (fixtures, found by name)
    YARD,
    FakeNotifier,
    FakeService,
    SimYard,
    at,
    make_yard_fixture,
    service_fixture,
)

from secadero.errors import ConfigError
from secadero.server.notifiers import NotifierError, Outgoing, build_notifiers
from secadero.server.notifiers.twilio_voice import TwilioVoiceNotifier, twiml
from secadero.settings import RecipientSettings, load_server_settings
from secadero.settings.notifiers import TwilioVoiceSettings

# Luis gets push only but has a phone: after the last level he gets SMS too. Rosa opted
# in to the call.
RECIPIENTS = (
    RecipientSettings(name="Rosa", role="worker", language="es", phone="+51900000001",
                      channels=("sms", "voice")),
    RecipientSettings(name="Luis", role="worker", language="es", ntfy_topic="norte-luis",
                      phone="+51900000004", channels=("push",)),
    RecipientSettings(name="Ana", role="supervisor", language="es", phone="+51900000002"),
    RecipientSettings(name="Carmen", role="quality", language="en", phone="+51900000003"),
    RecipientSettings(name="Tito", role="technician", language="es", phone="+51900000009"),
)


def south_out(yard: SimYard, state: str) -> Callable[[], None]:
    def action() -> None:
        yard.nodes["n2"].trays["t3"] = state
        yard._event("n2", "tray_extended" if state == "extended" else "tray_retracted", "t3")
    return action


def with_voice(make_yard: Callable[..., SimYard], **overrides: object) -> SimYard:
    yard = make_yard(yard_settings=replace(YARD, recipients=RECIPIENTS), **overrides)
    yard.notifiers["twilio_voice"] = FakeNotifier("twilio_voice", "voice", yard)
    yard.restart()  # the dispatcher is built again with the voice notifier
    return yard


def trays_rounds(yard: SimYard) -> list[tuple[str, str, str, str]]:
    """(time, recipient, provider, kind) of the escalations and reminders, in order."""
    return [(t, who, provider, kind) for t, who, provider, kind, event in yard.sent
            if event in ("escalate", "reminder", "upgrade")]


def test_push_then_sms_then_the_call_then_the_supervisor_closes(
        make_yard: Callable[..., SimYard]) -> None:
    yard = with_voice(make_yard)
    yard.prob_by_hour = {15: 85, 16: 85}
    seen: dict[str, object] = {}
    yard.at("07:00", yard.trays("extended"))
    yard.at("13:20", lambda: (yard.trays("retracted")(), south_out(yard, "extended")()))
    yard.at("15:10", yard.rain("n1", True))

    def close() -> None:
        [rain] = [e for e in yard.alerts.open_episodes() if e.kind == "rain"]
        seen["before"] = yard.alerts.current_alert("norte").state
        seen["closed"] = yard.alerts.close(rain.id or 0, "Ana", yard.now)
        seen["after"] = yard.alerts.current_alert("norte").state
        seen["again"] = yard.alerts.close(rain.id or 0, "Ana", yard.now)
    yard.at("16:10", close)
    yard.at("16:30", yard.rain("n1", False))
    yard.run("17:30")
    team = [("Ana", "twilio"), ("Carmen", "twilio"), ("Luis", "ntfy"), ("Rosa", "twilio")]
    sms_luis = [("Luis", "twilio")]

    def rnd(t: str, kind: str, who: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
        return [(t, name, provider, kind) for name, provider in who]
    got = trays_rounds(yard)
    assert sorted(got) == sorted(
        rnd("14:50", "trays_still_out", team)  # at the last level, only push for Luis
        + rnd("15:05", "trays_still_out", team + sms_luis)  # the next round: SMS too
        + rnd("15:10", "rain_now", team)  # the upgrade is not a trays round
        + rnd("15:25", "trays_still_out", team + sms_luis)
        # the third trays round done: the call to Rosa, who opted in, once
        + rnd("15:55", "trays_reminder", team + sms_luis + [("Rosa", "twilio_voice")]))
    # The close at 16:10: no 16:25 reminder, nothing after it, no all-clear.
    assert max(t for t, *_ in yard.sent) == "15:55"
    assert not [s for s in yard.sent if s[3] == "all_clear"]
    assert (seen["before"], seen["after"]) == ("raised", "clear")
    closed = seen["closed"]
    assert closed is not None and closed.details["closed_by"] == "Ana"  # type: ignore[attr-defined]
    assert closed.details["closed_at"] == at("16:10")  # type: ignore[attr-defined]
    assert seen["again"] == closed  # closing twice changes nothing
    voice = [n for n in yard.log() if n.channel == "voice"]
    assert [(n.recipient, n.address, n.kind, n.status) for n in voice] == [
        ("Rosa", "+51900000001", "trays_reminder", "sent")]
    assert ("16:10", "rain_now", "resolved", "critical") in yard.transitions


def test_no_call_when_it_is_off(make_yard: Callable[..., SimYard]) -> None:
    yard = with_voice(make_yard, voice_after_escalations=0)
    yard.prob_by_hour = {15: 85, 16: 85}
    yard.at("07:00", yard.trays("extended"))
    yard.run("16:30")
    assert [s for s in yard.sent if s[2] == "twilio_voice"] == []
    assert len([s for s in yard.sent if s[3] == "trays_reminder"]) > 1


def test_the_voice_settings_are_read_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    base = """
[alerts]
voice_after_escalations = 4
[notifiers.twilio_voice]
account_sid = "AC123"
auth_token_env = "TWILIO_TOKEN"
from_number = "+15005550006"
[[yards]]
id = "norte"
latitude = -6.57
longitude = -76.14
[[yards.recipients]]
name = "Rosa"
phone = "+51900000001"
channels = ["sms", "voice"]
"""
    config.write_text(base)
    settings = load_server_settings(config, {"TWILIO_TOKEN": "tok"})
    assert settings.alerts.voice_after_escalations == 4
    voice = settings.notifiers.twilio_voice
    assert (voice.account_sid, voice.from_number, voice.language, voice.loop) == (
        "AC123", "+15005550006", "es-MX", 2)
    assert [n.channel for n in build_notifiers(settings.notifiers)] == ["voice"]
    config.write_text(base.replace('phone = "+51900000001"\n', ""))
    with pytest.raises(ConfigError, match=r"phone.*voice channel"):
        load_server_settings(config, {"TWILIO_TOKEN": "tok"})


def outgoing(address: str = "+51900000001") -> Outgoing:
    return Outgoing(notification_id=1, episode_id=7, yard="norte", recipient="Rosa",
                    address=address, title="Tendal Norte",
                    body="URGENTE: siguen afuera bandejas <n2/t3> & Lluvia ya.",
                    severity="critical", kind="trays_reminder", event="reminder")


def test_the_call_goes_to_a_local_twilio_calls_api(service: FakeService) -> None:
    """A local HTTP server speaking Twilio's Calls API stands in for api.twilio.com."""
    service.default = service.json_reply({"sid": "CA42", "status": "queued"}, status=201)
    notifier = TwilioVoiceNotifier(TwilioVoiceSettings(
        account_sid="AC123", auth_token="tok", from_number="+15005550006",
        api_url=service.url))
    assert notifier.send(outgoing()) == "CA42"
    [request] = service.requests
    assert (request.method, request.path) == ("POST", "/2010-04-01/Accounts/AC123/Calls.json")
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        b"AC123:tok").decode()
    form = request.form()
    assert (form["To"], form["From"]) == ("+51900000001", "+15005550006")
    assert form["Twiml"] == (
        '<Response><Say language="es-MX" loop="2">Tendal Norte. URGENTE: siguen afuera '
        "bandejas &lt;n2/t3&gt; &amp; Lluvia ya.</Say></Response>")
    assert re.fullmatch(r'<Response><Say language="es-MX" loop="1">hola</Say></Response>',
                        twiml(" hola\n", "es-MX", 1))


def test_a_refused_call_is_a_clear_error(service: FakeService) -> None:
    service.default = service.json_reply({"code": 21211, "message": "invalid To"}, status=400)
    notifier = TwilioVoiceNotifier(TwilioVoiceSettings(
        account_sid="AC123", auth_token="tok", from_number="+15005550006",
        api_url=service.url))
    with pytest.raises(NotifierError, match="HTTP 400") as refused:
        notifier.send(outgoing())
    assert refused.value.retryable is False
    with pytest.raises(NotifierError, match="no phone number"):
        notifier.send(outgoing(address=""))


def calls(yard: SimYard) -> list[tuple[str, str, str]]:
    return [(t, who, kind) for t, who, provider, kind, _ in yard.sent
            if provider == "twilio_voice"]


def call_ends(yard: SimYard, status: str, answered: bool) -> Callable[[], None]:
    """Twilio's status callback for the last call placed (as AlertService.call_status
    passes it on): how Rosa's call ended."""
    def action() -> None:
        [rain] = [e for e in yard.alerts.open_episodes() if e.kind == "rain"]
        yard.alerts.call_outcome(rain.id or 0, "Rosa", answered=answered, status=status,
                                 now=yard.now)
    return action


def test_an_unanswered_call_is_placed_again_at_the_next_round(
        make_yard: Callable[..., SimYard]) -> None:
    yard = with_voice(make_yard)
    yard.prob_by_hour = {15: 85, 16: 85, 17: 85}
    yard.at("07:00", yard.trays("extended"))
    yard.at("13:20", lambda: (yard.trays("retracted")(), south_out(yard, "extended")()))
    yard.at("15:10", yard.rain("n1", True))
    # The 15:55 call rings out; the 16:25 one is busy; the 16:55 one is answered.
    yard.at("15:57", call_ends(yard, "no-answer", answered=False))
    yard.at("16:26", call_ends(yard, "busy", answered=False))
    yard.at("16:57", call_ends(yard, "completed", answered=True))
    yard.run("17:50")
    assert calls(yard) == [("15:55", "Rosa", "trays_reminder"),
                           ("16:25", "Rosa", "trays_reminder"),
                           ("16:55", "Rosa", "trays_reminder")]
    # Each of those rounds also went by SMS to all four (Luis's phone too): the next step.
    assert sorted((who, provider) for t, who, provider, kind, _ in yard.sent
                  if t == "16:25") == [("Ana", "twilio"), ("Carmen", "twilio"),
                                       ("Luis", "ntfy"), ("Luis", "twilio"),
                                       ("Rosa", "twilio"), ("Rosa", "twilio_voice")]
    # The reminders go on without a call once Rosa answered.
    assert [t for t, who, provider, kind, _ in yard.sent
            if who == "Rosa" and provider == "twilio" and t > "16:55"] == ["17:25"]
    [rain] = [e for e in yard.store.active_episodes() if e.kind == "rain"]
    assert (rain.details["calls"], rain.details["calls_unanswered"],
            rain.details["call_answered_by"], rain.details["call_outcomes"]) == (
        3, 2, "Rosa", {"Rosa": ["no-answer", "busy", "completed"]})


def test_calls_stop_at_voice_max_calls(make_yard: Callable[..., SimYard]) -> None:
    yard = with_voice(make_yard, voice_max_calls=2)
    yard.prob_by_hour = {15: 85, 16: 85, 17: 85}
    yard.at("07:00", yard.trays("extended"))
    yard.at("13:20", lambda: (yard.trays("retracted")(), south_out(yard, "extended")()))
    yard.at("15:10", yard.rain("n1", True))
    yard.at("15:57", call_ends(yard, "no-answer", answered=False))
    yard.at("16:27", call_ends(yard, "no-answer", answered=False))
    yard.run("17:50")
    assert calls(yard) == [("15:55", "Rosa", "trays_reminder"),
                           ("16:25", "Rosa", "trays_reminder")]
    [rain] = [e for e in yard.store.active_episodes() if e.kind == "rain"]
    assert (rain.details["calls"], rain.details["calls_unanswered"]) == (2, 2)
