"""Each notifier against a local server speaking its service's format, and Gammu's own
dummy phone driver (Debian packages gammu, gammu-smsd) for the modem path.

ntfy, Twilio and the webhook receiver are local HTTP servers on 127.0.0.1
(``alert_helpers.FakeService``) answering as the real services document it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from alert_helpers import (
    FakeService,
    service_fixture,  # noqa: F401 (fixtures, found by name)
    start_smsd,
)
from conftest import wait_until

from secadero.devservices import free_port
from secadero.server.alerts.store import AlertStore
from secadero.server.metrics import Health, Registry
from secadero.server.notifiers import NotifierError, Outgoing
from secadero.server.notifiers.dispatch import Dispatcher
from secadero.server.notifiers.gammu import GammuNotifier
from secadero.server.notifiers.notification_log import Notification, NotificationLog
from secadero.server.notifiers.ntfy import NtfyNotifier
from secadero.server.notifiers.twilio import TwilioNotifier, signature, valid_signature
from secadero.server.notifiers.webhook import WebhookNotifier
from secadero.server.notifiers.webhook import signature as webhook_signature
from secadero.settings import GammuSettings, NtfySettings, TwilioSettings, WebhookSettings

RAIN = Outgoing(notification_id=7, episode_id=3, yard="norte", recipient="Rosa",
                address="+51900000001", title="Lluvia ahora",
                body="LLUEVE en el tendal Norte (sensor n1) desde las 14:00. Recoger las "
                     "bandejas YA. Responda OK.",
                severity="critical", kind="rain_now", event="raise", language="es",
                ack_url="http://yard.example/api/alerts/3/ack?token=abc")


# ------------------------------------------------------------------ ntfy

def test_ntfy_publishes_json_with_priority_tags_click_and_ack_button(
        service: FakeService) -> None:
    service.default = service.json_reply({"id": "hwQ2YpKdmg", "time": 1781550000,
                                          "event": "message", "topic": "norte-luis"})
    ntfy = NtfyNotifier(NtfySettings(url=service.url, token="tk_secret"))
    push = replace(RAIN, address="norte-luis")
    assert ntfy.send(push) == "hwQ2YpKdmg"
    [request] = service.requests
    assert (request.method, request.path) == ("POST", "/")
    assert request.headers["authorization"] == "Bearer tk_secret"
    assert request.json() == {
        "topic": "norte-luis",
        "title": "Lluvia ahora - norte",
        "message": RAIN.body,
        "priority": 5,
        "tags": ["cloud_with_rain", "rotating_light"],
        "click": "http://yard.example/alerts/3?token=abc",
        "actions": [{"action": "http", "label": "Recibido",
                     "url": "http://yard.example/api/alerts/3/ack?token=abc",
                     "method": "POST", "clear": True}],
    }


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (403, False)])
def test_ntfy_errors_say_whether_to_retry(service: FakeService, status: int,
                                          retryable: bool) -> None:
    service.default = service.json_reply({"code": status * 100, "http": status,
                                          "error": "limit reached"}, status=status)
    with pytest.raises(NotifierError) as info:
        NtfyNotifier(NtfySettings(url=service.url)).send(RAIN)
    assert info.value.retryable is retryable
    assert f"HTTP {status}" in str(info.value)


def test_ntfy_timeout_is_retryable(service: FakeService) -> None:
    service.default = lambda request: (time.sleep(0.5), (200, {}, b"{}"))[1]
    with pytest.raises(NotifierError, match="timeout") as info:
        NtfyNotifier(NtfySettings(url=service.url, timeout_s=0.1)).send(RAIN)
    assert info.value.retryable


# ---------------------------------------------------------------- Twilio

def twilio(service: FakeService) -> TwilioNotifier:
    return TwilioNotifier(TwilioSettings(
        account_sid="AC0123456789abcdef0123456789abcdef", auth_token="12345",
        from_number="+15005550006", api_url=service.url,
        callback_base_url="https://yard.example"))


def test_twilio_sends_the_documented_form_with_basic_auth(service: FakeService) -> None:
    service.default = service.json_reply(
        {"sid": "SM9f2c3e1a", "status": "queued", "to": "+51900000001"}, status=201)
    assert twilio(service).send(RAIN) == "SM9f2c3e1a"
    [request] = service.requests
    assert request.path == "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
    assert request.headers["authorization"].startswith("Basic ")
    assert request.form() == {"To": "+51900000001", "From": "+15005550006", "Body": RAIN.body,
                              "StatusCallback": "https://yard.example/api/twilio/status"}


def test_twilio_refusal_is_final_and_its_outage_is_retryable(service: FakeService) -> None:
    service.replies = [service.json_reply({"code": 21211, "message": "The 'To' number is not "
                                           "a valid phone number.", "status": 400}, status=400),
                       (503, {}, b"")]
    with pytest.raises(NotifierError, match="21211") as info:
        twilio(service).send(RAIN)
    assert not info.value.retryable
    with pytest.raises(NotifierError) as info:
        twilio(service).send(RAIN)
    assert info.value.retryable


def test_twilio_signature_matches_the_official_test_vector() -> None:
    # twilio/twilio-python tests/unit/test_request_validator.py
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675309"),
              ("Digits", "1234"), ("From", "+14158675309"), ("To", "+18005551212")]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert valid_signature("12345", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert valid_signature("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", params,
                           "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not valid_signature("12345", url, [*params[:-1], ("To", "+18005551213")],
                               "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not valid_signature("54321", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not valid_signature("12345", url, params, None)


# --------------------------------------------------------------- webhook

def test_webhook_posts_signed_json(service: FakeService) -> None:
    WebhookNotifier(WebhookSettings(url=f"{service.url}/hook", secret="s3")).send(RAIN)
    [request] = service.requests
    assert request.headers["x-secadero-signature"] == webhook_signature("s3", request.body)
    body = request.json()
    assert isinstance(body, dict)
    assert (body["kind"], body["yard"], body["episode_id"], body["body"]) == (
        "rain_now", "norte", 3, RAIN.body)


# ------------------------------------------------- dispatcher: isolation

class Hangs:
    """A notifier that blocks until released: a push server that never answers."""

    name, channel = "ntfy", "push"

    def __init__(self) -> None:
        import threading
        self.release = threading.Event()

    def send(self, message: Outgoing) -> str:
        self.release.wait(10)
        return "late"

    def close(self) -> None:
        self.release.set()


def test_a_hanging_push_does_not_hold_back_the_sms(tmp_path: Path,
                                                   service: FakeService) -> None:
    service.default = service.json_reply({"sid": "SM1"}, status=201)
    store = AlertStore(tmp_path / "a.sqlite3")
    hangs = Hangs()
    dispatcher = Dispatcher(store, [hangs, twilio(service)])
    base = dict(episode_id=1, yard="norte", created_at=0.0, event="raise", kind="rain_now",
                role="worker", language="es", title="t", body="b", severity="critical")
    push = store.add_notification(Notification(recipient="Luis", channel="push",
                                               address="norte-luis", **base))
    sms = store.add_notification(Notification(recipient="Rosa", channel="sms",
                                              address="+51900000001", **base))
    dispatcher.start()
    try:
        dispatcher.submit([push, sms])
        request = service.received.get(timeout=5)  # the SMS left while push hangs
        assert request.form()["To"] == "+51900000001"
    finally:
        hangs.release.set()
        dispatcher.stop()
    assert [(n.recipient, n.status, n.provider) for n in store.notifications()] == [
        ("Luis", "sent", "ntfy"), ("Rosa", "sent", "twilio")]


def test_a_crashing_notifier_is_logged_not_fatal(tmp_path: Path) -> None:
    class Broken:
        name, channel = "webhook", "webhook"

        def send(self, message: Outgoing) -> str:
            raise KeyError("bug")

        def close(self) -> None:
            pass

    store = AlertStore(tmp_path / "a.sqlite3")
    note = store.add_notification(Notification(
        episode_id=1, yard="norte", created_at=0.0, event="raise", kind="rain_now",
        recipient="x", role="worker", channel="webhook", language="es", address="x",
        title="t", body="b", severity="critical"))
    result = Dispatcher(store, [Broken()], attempts=3, sleep=lambda s: None).deliver(note)
    assert (result.status, result.attempts) == ("failed", 1)  # a bug is not retried
    assert result.error == "webhook: KeyError: 'bug'"


# ------------------------------------------------ Gammu's dummy driver

SMSD_NEEDED = pytest.mark.skipif(
    not (shutil.which("gammu-smsd") and shutil.which("gammu-smsd-inject")),
    reason="needs the Debian packages gammu and gammu-smsd")


@pytest.fixture
def smsd(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A real gammu-smsd on Gammu's dummy phone driver, files backend; killed by PID."""
    with start_smsd(tmp_path / "gammu") as started:
        yield started


def _wait_for(path: Path, pattern: str, timeout_s: float = 15.0) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(path.glob(pattern))
        if found:
            return found
        time.sleep(0.05)  # the daemon polls its outbox; there is no event to wait on
    raise AssertionError(f"nothing matching {pattern} in {path} after {timeout_s} s")


def _text_of(backup: Path) -> tuple[str, str]:
    last = backup.read_text().rsplit("; Saved", 1)[1]
    fields = dict(line.split(" = ", 1) for line in last.splitlines() if " = " in line)
    return bytes.fromhex(fields["Text00"]).decode("utf-16-be"), fields["Coding"]


@SMSD_NEEDED
def test_gammu_smsd_sends_through_the_dummy_modem(smsd: tuple[Path, Path]) -> None:
    conf, root = smsd
    gammu = GammuNotifier(GammuSettings(smsdrc=conf))
    accented = replace(RAIN, body="Está lloviendo en el tendal Alegría: ¡recoger ya!")
    outbox_id = gammu.send(accented)
    assert outbox_id is not None and f"_{RAIN.address}_" in outbox_id
    [sent] = _wait_for(root / "sent", "OUT*")
    assert sent.name == Path(outbox_id).name
    # Folded by us, sent as GSM-7 (one 160-character segment), not UCS-2.
    assert _text_of(sent) == ("Esta lloviendo en el tendal Alegria: ¡recoger ya!",
                              "Default_No_Compression")
    assert "Transmitted" in (root / "smsd.log").read_text()


@SMSD_NEEDED
def test_gammu_unicode_long_text_is_sent_whole_in_two_parts(smsd: tuple[Path, Path]) -> None:
    conf, root = smsd
    text = ("Está lloviendo en el tendal Alegría: recoger las bandejas ya, responda OK por "
            "favor, gracias")
    gammu = GammuNotifier(GammuSettings(smsdrc=conf, unicode=True))
    gammu.send(replace(RAIN, body=text))
    [sent] = _wait_for(root / "sent", "OUT*")
    # SMSD appends the sent copy to the queued one: read the last backup in the file.
    last = sent.read_text().rsplit("; Saved", 1)[1]
    fields = [line.split(" = ", 1) for line in last.splitlines() if " = " in line]
    # Per part (section), the UCS-2 hex is split over Text00, Text01 ... lines.
    hexes: list[str] = []
    for key, value in fields:
        if key == "PDU":
            hexes.append("")
        elif key.startswith("Text") and key[4:].isdigit():
            hexes[-1] += value
    parts = [bytes.fromhex(h).decode("utf-16-be") for h in hexes]
    codings = {value for key, value in fields if key == "Coding"}
    assert "".join(parts) == text and len(parts) == 2  # not cut at 70 characters
    assert codings == {"Unicode_No_Compression"}


def test_gammu_missing_binary_is_a_clear_final_error(tmp_path: Path) -> None:
    gammu = GammuNotifier(GammuSettings(smsdrc=tmp_path / "smsdrc",
                                        inject_command=str(tmp_path / "nope")))
    with pytest.raises(NotifierError, match="install the Debian package gammu-smsd") as info:
        gammu.send(RAIN)
    assert not info.value.retryable


@SMSD_NEEDED
def test_gammu_bad_config_is_an_error(tmp_path: Path) -> None:
    gammu = GammuNotifier(GammuSettings(smsdrc=tmp_path / "missing-smsdrc"))
    with pytest.raises(NotifierError, match="exit"):
        gammu.send(RAIN)


def test_sms_falls_back_to_the_modem_when_twilio_is_unreachable(
        tmp_path: Path) -> None:
    class Modem:
        name, channel = "gammu", "sms"

        def send(self, message: Outgoing) -> str:
            return "OUT1"

        def close(self) -> None:
            pass

    dead = TwilioNotifier(TwilioSettings(account_sid="AC1", auth_token="t", from_number="+1",
                                         api_url=f"http://127.0.0.1:{free_port()}"))
    store = AlertStore(tmp_path / "a.sqlite3")
    note = store.add_notification(Notification(
        episode_id=1, yard="norte", created_at=0.0, event="raise", kind="rain_now",
        recipient="Rosa", role="worker", channel="sms", language="es",
        address="+51900000001", title="t", body="b", severity="critical"))
    registry = Registry()
    result = Dispatcher(store, [dead, Modem()], sleep=lambda s: None,
                        registry=registry).deliver(note)
    assert (result.status, result.provider, result.provider_id) == ("sent", "gammu", "OUT1")
    assert result.error is not None and result.error.startswith("twilio: ConnectionError")
    [stored] = store.notifications()
    assert (stored.status, stored.provider, stored.attempts) == ("sent", "gammu", 2)
    exported = registry.render()
    assert 'secadero_notify_sent_total{channel="sms",provider="gammu"} 1\n' in exported
    assert ('secadero_notify_provider_errors_total{channel="sms",provider="twilio"} 1\n'
            in exported)
    assert "secadero_notify_failed_total 0\n" in exported  # listed before it first counts


# ------------------------------------ dispatcher: log, metrics and health


class MemoryLog:
    """A ``NotificationLog`` in a dict: only the two calls the dispatcher makes.

    It keeps copies, as a database would, so the test sees what was *stored*,
    not the dispatcher's own object.
    """

    def __init__(self) -> None:
        self.rows: dict[int, Notification] = {}

    def add(self, note: Notification) -> Notification:
        note.id = len(self.rows) + 1
        self.rows[note.id] = replace(note)
        return note

    def update_notification(self, note: Notification) -> None:
        assert note.id in self.rows, "the dispatcher updates only logged notifications"
        self.rows[note.id] = replace(note)

    def notifications(self, *, status: str | None = None) -> list[Notification]:
        return [replace(n) for n in self.rows.values() if status in (None, n.status)]


class Scripted:
    """A notifier whose answers are scripted: a provider id, or a NotifierError to raise."""

    def __init__(self, name: str, channel: str, *answers: str | BaseException) -> None:
        self.name, self.channel = name, channel
        self.answers = list(answers)
        self.sent: list[Outgoing] = []

    def send(self, message: Outgoing) -> str | None:
        self.sent.append(message)
        answer = self.answers.pop(0) if self.answers else "ok"
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        pass


def note(channel: str = "sms", *, created_at: float = 0.0, recipient: str = "Rosa",
         address: str = "+51900000001") -> Notification:
    return Notification(episode_id=1, yard="norte", created_at=created_at, event="raise",
                        kind="rain_now", recipient=recipient, role="worker", channel=channel,
                        language="es", address=address, title="t", body="b",
                        severity="critical")


def test_the_alert_store_and_the_memory_log_both_are_notification_logs(
        tmp_path: Path) -> None:
    assert isinstance(AlertStore(tmp_path / "a.sqlite3"), NotificationLog)
    assert isinstance(MemoryLog(), NotificationLog)
    assert not isinstance(object(), NotificationLog)


def test_a_retry_round_then_the_modem_counted_per_channel_and_provider() -> None:
    log = MemoryLog()
    twilio_down = Scripted("twilio", "sms", NotifierError("HTTP 503"), NotifierError("HTTP 503"))
    modem = Scripted("gammu", "sms", NotifierError("modem busy"), "OUT7")
    registry, slept = Registry(), []
    dispatcher = Dispatcher(log, [twilio_down, modem], attempts=3, backoff_s=2.0,
                            sleep=slept.append, clock=lambda: 1000.0, registry=registry)
    sms = log.add(note())
    dispatcher.deliver(sms)
    stored = log.rows[sms.id or 0]
    assert (stored.status, stored.provider, stored.provider_id, stored.attempts, stored.sent_at
            ) == ("sent", "gammu", "OUT7", 4, 1000.0)
    assert stored.error == "twilio: HTTP 503; gammu: modem busy; twilio: HTTP 503"
    assert slept == [2.0]  # one backoff between the two rounds
    metrics = registry.part("notify")
    assert metrics.by_label("sent_total", "provider") == {"gammu": 1}
    assert metrics.get("provider_errors_total", channel="sms", provider="twilio") == 2
    assert metrics.get("provider_errors_total", channel="sms", provider="gammu") == 1
    assert metrics.get("retries_total", channel="sms", provider="twilio") == 1
    assert metrics.get("retries_total", channel="sms", provider="gammu") == 1
    assert metrics.total("failed_total") == 0


def test_a_final_refusal_is_failed_once_counted_and_reported() -> None:
    log = MemoryLog()
    refused = Scripted("ntfy", "push", NotifierError("HTTP 403", retryable=False))
    registry, done = Registry(), []
    dispatcher = Dispatcher(log, [refused], attempts=3, sleep=lambda s: None,
                            on_done=done.append, registry=registry)
    push = log.add(note("push", address="norte-luis"))
    dispatcher.deliver(push)
    stored = log.rows[push.id or 0]
    assert (stored.status, stored.attempts, stored.error) == ("failed", 1, "ntfy: HTTP 403")
    assert [(n.id, n.status) for n in done] == [(push.id, "failed")]
    metrics = registry.part("notify")
    assert metrics.get("failed_total", channel="push") == 1
    assert metrics.get("provider_errors_total", channel="push", provider="ntfy") == 1
    assert metrics.total("retries_total") == 0 and metrics.total("sent_total") == 0


def test_a_channel_without_a_notifier_fails_at_once_not_silently() -> None:
    log = MemoryLog()
    registry = Registry()
    dispatcher = Dispatcher(log, [Scripted("ntfy", "push")], registry=registry)
    dispatcher.start()  # workers only for the channels a notifier serves: push
    try:
        assert dispatcher.channels == ("push",)
        webhook = log.add(note("webhook", address="ops"))
        dispatcher.submit([webhook])
        stored = log.rows[webhook.id or 0]
        assert (stored.status, stored.error) == (
            "failed", "no notifier configured for channel webhook")
        assert registry.part("notify").get("failed_total", channel="webhook") == 1
    finally:
        dispatcher.stop()


def test_after_a_restart_pending_ones_are_resubmitted_once_and_old_ones_expire() -> None:
    log = MemoryLog()
    old = log.add(note("push", created_at=1000.0, recipient="Luis", address="norte-luis"))
    recent = log.add(note("push", created_at=8000.0, recipient="Ana", address="norte-ana"))
    already = log.add(note("push", created_at=8000.0, recipient="Eva", address="norte-eva"))
    already.status = "sent"
    log.update_notification(already)
    ntfy = Scripted("ntfy", "push", "id-1")
    registry, delivered = Registry(), threading.Event()
    dispatcher = Dispatcher(log, [ntfy], registry=registry,
                            on_done=lambda n: delivered.set())
    dispatcher.start()
    try:
        assert dispatcher.resubmit_pending(now=9000.0, max_age_s=3600) == 1
        assert delivered.wait(5)
    finally:
        dispatcher.stop()
    assert [m.address for m in ntfy.sent] == ["norte-ana"]
    assert [(n.recipient, n.status, n.error) for n in log.notifications()] == [
        ("Luis", "failed", "expired: not sent within 3600 s of being decided"),
        ("Ana", "sent", None),
        ("Eva", "sent", None)]
    metrics = registry.part("notify")
    assert metrics.get("expired_total", channel="push") == 1
    assert metrics.get("failed_total", channel="push") == 1
    assert metrics.get("sent_total", channel="push", provider="ntfy") == 1
    assert metrics.get("resubmitted_total", channel="push") == 1
    assert (old.id, recent.id) == (1, 2)


# ------------------------------------ dispatcher: each notification once

class Gate:
    """A push notifier that answers only when told: a delivery in progress, held open.

    ``arrived`` is set when a message reached it; ``answer`` lets it return.
    """

    name, channel = "ntfy", "push"

    def __init__(self) -> None:
        self.arrived, self.answer = threading.Event(), threading.Event()
        self.sent: list[Outgoing] = []

    def send(self, message: Outgoing) -> str:
        self.sent.append(message)
        self.arrived.set()
        assert self.answer.wait(10), "the test never let the delivery finish"
        return f"id-{len(self.sent)}"

    def close(self) -> None:
        self.answer.set()


def test_a_notification_being_delivered_is_not_resubmitted_nor_expired(
        tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "a.sqlite3")
    push = store.add_notification(note("push", created_at=1000.0, recipient="Luis",
                                       address="norte-luis"))
    gate, registry, done = Gate(), Registry(), threading.Event()
    dispatcher = Dispatcher(store, [gate], registry=registry, on_done=lambda n: done.set())
    dispatcher.start()
    try:
        dispatcher.submit([push])
        assert gate.arrived.wait(5)
        # Being delivered (slowly), still pending in the store: a full cycle's
        # re-submission leaves it alone, even one that would find it too old.
        assert [n.status for n in store.notifications()] == ["pending"]
        assert dispatcher.held() == {push.id}
        assert dispatcher.resubmit_pending(now=1010.0, max_age_s=3600) == 0
        assert dispatcher.resubmit_pending(now=9000.0, max_age_s=3600) == 0
        gate.answer.set()
        assert done.wait(5)
        assert dispatcher.held() == frozenset()
        assert dispatcher.resubmit_pending(now=1020.0, max_age_s=3600) == 0  # sent now
    finally:
        dispatcher.stop()
    assert [m.address for m in gate.sent] == ["norte-luis"]
    assert [(n.status, n.provider, n.provider_id) for n in store.notifications()] == [
        ("sent", "ntfy", "id-1")]
    metrics = registry.part("notify")
    assert metrics.total("resubmitted_total") == 0
    assert metrics.total("expired_total") == 0
    assert metrics.get("sent_total", channel="push", provider="ntfy") == 1


class PausingLog(MemoryLog):
    """A ``MemoryLog`` whose next listing, once ``pause`` is set, stops after reading.

    The listing has been read (``listed``), as a re-submission would read it, and
    waits for ``go_on``; ``written`` is set whenever an outcome is stored.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pause = False
        self.listed, self.go_on, self.written = (threading.Event(), threading.Event(),
                                                 threading.Event())

    def notifications(self, *, status: str | None = None) -> list[Notification]:
        rows = super().notifications(status=status)
        if self.pause:
            self.pause = False
            self.listed.set()
            assert self.go_on.wait(10), "the test never let the listing go on"
        return rows

    def update_notification(self, note: Notification) -> None:
        super().update_notification(note)
        self.written.set()


def test_a_delivery_that_finishes_while_the_log_is_read_is_not_sent_again() -> None:
    """The race: a re-submission lists a note as pending; before it checks what is
    held, the worker logs the note as sent and lets go of it. The dispatcher reads
    and checks under the lock the worker lets go under, so this cannot resend it."""
    log = PausingLog()
    push = log.add(note("push", recipient="Luis", address="norte-luis"))
    gate, registry, done = Gate(), Registry(), threading.Event()
    dispatcher = Dispatcher(log, [gate], registry=registry, on_done=lambda n: done.set())
    dispatcher.start()
    resubmitted: list[int] = []
    try:
        dispatcher.submit([push])
        assert gate.arrived.wait(5)
        log.pause = True
        cycle = threading.Thread(target=lambda: resubmitted.append(
            dispatcher.resubmit_pending(now=10.0, max_age_s=3600)))
        cycle.start()
        assert log.listed.wait(5)  # it has read: the note is pending
        gate.answer.set()
        assert log.written.wait(5)  # the worker stored "sent"
        log.go_on.set()
        cycle.join(5)
        assert done.wait(5)
    finally:
        log.go_on.set()
        dispatcher.stop()
    assert resubmitted == [0]
    assert len(gate.sent) == 1
    assert [(n.status, n.provider_id) for n in log.notifications()] == [("sent", "id-1")]
    assert registry.part("notify").total("resubmitted_total") == 0


def test_the_same_notification_submitted_twice_is_delivered_once(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "a.sqlite3")
    push = store.add_notification(note("push", recipient="Luis", address="norte-luis"))
    gate, registry, done = Gate(), Registry(), threading.Event()
    dispatcher = Dispatcher(store, [gate], registry=registry, on_done=lambda n: done.set())
    dispatcher.start()
    try:
        dispatcher.submit([push, push])  # twice in one go
        assert gate.arrived.wait(5)
        dispatcher.submit([push])  # again while it is being delivered
        [stored] = store.notifications()
        dispatcher.submit([stored])  # a copy of it, read from the store
        gate.answer.set()
        assert done.wait(5)
        dispatcher.submit([push])  # and once it was sent
    finally:
        dispatcher.stop()
    assert len(gate.sent) == 1
    assert [(n.status, n.attempts) for n in store.notifications()] == [("sent", 1)]
    metrics = registry.part("notify")
    assert metrics.get("duplicate_submits_total", channel="push") == 4
    assert metrics.get("sent_total", channel="push", provider="ntfy") == 1
    assert metrics.get("queue_depth", channel="push") == 0


def test_queue_depth_per_channel_while_a_push_server_hangs(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "a.sqlite3")
    hangs = Hangs()
    registry = Registry()
    dispatcher = Dispatcher(store, [hangs, Scripted("twilio", "sms")], registry=registry)
    metrics = registry.part("notify")
    dispatcher.start()
    try:
        assert metrics.by_label("queue_depth", "channel") == {"push": 0, "sms": 0}
        pushes = [store.add_notification(note("push", recipient=f"w{i}", address=f"t{i}"))
                  for i in range(3)]
        dispatcher.submit(pushes)
        # One is being tried (and hangs), two wait behind it: none has finished.
        assert metrics.get("queue_depth", channel="push") == 3
        hangs.release.set()
        wait_until(lambda: metrics.get("queue_depth", channel="push") == 0)
    finally:
        hangs.release.set()
        dispatcher.stop()
    assert [n.status for n in store.notifications()] == ["sent"] * 3
    assert 'secadero_notify_queue_depth{channel="push"} 0\n' in registry.render()


# The worker dying of an unhandled exception is the point of this test, not a leak.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_notifier_worker_turns_health_red_and_its_note_stays_pending(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class ExitsTheThread:
        """A library that calls sys.exit() inside send: SystemExit is no Exception."""

        name, channel = "webhook", "webhook"

        def send(self, message: Outgoing) -> str:
            sys.exit(3)

        def close(self) -> None:
            pass

    store = AlertStore(tmp_path / "a.sqlite3")
    health = Health()
    dispatcher = Dispatcher(store, [ExitsTheThread(), Scripted("twilio", "sms")],
                            health=health)
    dispatcher.start()
    try:
        assert health.problems() == []
        hook = store.add_notification(note("webhook", address="ops"))
        with caplog.at_level(logging.CRITICAL, "secadero.server.notifiers.dispatch"):
            dispatcher.submit([hook])
            wait_until(lambda: health.problems() != [])
        assert health.problems() == ["the notify-webhook thread has stopped; see the log"]
        assert [r.getMessage() for r in caplog.records] == [
            "notify-webhook worker stopped: no more webhook notifications until a restart"]
    finally:
        dispatcher.stop()
    # Not lost: still pending (and held, so not queued again on the dead worker), so the
    # next start's resubmit_pending() sends it.
    assert [n.status for n in store.notifications()] == ["pending"]


def test_the_notifiers_do_not_import_the_alerts() -> None:
    """The dispatcher depends on its NotificationLog, the SMS notifiers on server.gsm7."""
    code = ("import sys, secadero.server.notifiers.dispatch, secadero.server.notifiers.ntfy, "
            "secadero.server.notifiers.twilio, secadero.server.notifiers.gammu, "
            "secadero.server.notifiers.webhook; "
            "print(sorted(m for m in sys.modules if m.startswith('secadero.server.alerts')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout == "[]\n"
