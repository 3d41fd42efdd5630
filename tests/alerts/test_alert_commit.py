"""Decide, then commit, then act: a failure anywhere loses no alert and sends none twice.

Two yards, Norte and Sur, evaluated in the same cycles. The engine, ``AlertCore``
(decide -> commit -> swap -> act), the SQLite store (in tmp_path) and the
``Dispatcher`` are the real ones; the SMS notifier is a fake that records what
it sends. Faults are injected through constructor arguments: a message
renderer that raises (a broken template), a store whose commit of one yard
fails after writing (a disk error inside that yard's SAVEPOINT), an act step
that raises (a crash between commit and dispatch). The service's tests run
``AlertService`` with its own thread and the real dispatcher's workers; one
injects a dispatcher whose submit fails half-way through a decision (the
act step raising after some notifications were taken), another kills a real
server process between commit and dispatch. ntfy is played by a local HTTP
server (``alert_helpers.FakeService``) speaking its JSON publish format.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from alert_helpers import FakeService, Recorded, Reply, at, hhmm
from conftest import wait_until

from secadero.contract import Alert, Envelope, Event, Status, Telemetry
from secadero.server.alerts import messages
from secadero.server.alerts.engine import AlertEngine, Decision
from secadero.server.alerts.service import AlertCore, AlertService
from secadero.server.alerts.state import YardTracker
from secadero.server.alerts.store import AlertStore
from secadero.server.metrics import Health, Registry
from secadero.server.notifiers import Outgoing, build_notifiers
from secadero.server.notifiers.dispatch import Dispatcher
from secadero.server.notifiers.notification_log import Notification
from secadero.settings import AlertSettings, RecipientSettings, YardSettings, load_server_settings

YARDS = (
    YardSettings(id="norte", name="Norte", latitude=-6.57, longitude=-76.14, recipients=(
        RecipientSettings(name="Rosa", role="worker", phone="+51900000001"),
        RecipientSettings(name="Ana", role="supervisor", phone="+51900000002"),
        RecipientSettings(name="Tito", role="technician", phone="+51900000009"),
    )),
    YardSettings(id="sur", name="Sur", latitude=-6.60, longitude=-76.10, recipients=(
        RecipientSettings(name="Pedro", role="worker", phone="+51900000011"),
    )),
)


class BrokenTemplate:
    """``messages.render``, except that one template of one yard raises while ``broken``."""

    def __init__(self, kind: str, yard_name: str) -> None:
        self.kind, self.yard_name, self.broken = kind, yard_name, True

    def __call__(self, kind: str, language: str, fields: Mapping[str, object], *,
                 repeat: bool = False) -> messages.Text:
        if self.broken and kind == self.kind and fields["yard"] == self.yard_name:
            raise KeyError("node")  # what a template naming a field nobody gives raises
        return messages.render(kind, language, fields, repeat=repeat)


class DiskErrorStore(AlertStore):
    """The real store, whose commit of one yard fails after its rows were written."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failing_yard: str | None = None

    def commit(self, decision: Decision) -> Decision:
        if decision.yard != self.failing_yard:
            return super().commit(decision)
        with self.transaction():
            super().commit(decision)  # the INSERTs run ...
            raise sqlite3.OperationalError("disk I/O error")  # ... and must be undone


class Sms:
    """Stands in for Twilio: records (local time, recipient, template, event)."""

    name, channel = "twilio", "sms"

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.sent: list[tuple[str, str, str, str]] = []

    def send(self, message: Outgoing) -> str:
        self.sent.append((hhmm(self.clock()), message.recipient, message.kind, message.event))
        return f"SM{len(self.sent)}"

    def close(self) -> None:
        pass


class TwoYards:
    """Both yards, the real alert path; ``act`` delivers at once unless ``dispatch_fails``."""

    def __init__(self, tmp_path: Path, *, render: Callable[..., messages.Text] = messages.render
                 ) -> None:
        self.tmp_path, self.render = tmp_path, render
        self.now = at("13:00")
        self.sms = Sms(lambda: self.now)
        self.tracker = YardTracker(YARDS)
        self.seq = 0
        self.reporting: dict[tuple[str, str], dict[str, str]] = {}
        self.dispatch_fails = False
        self.start()

    def start(self) -> None:
        """Start (or, after ``store.close()``, restart) on the same database."""
        self.store = DiskErrorStore(self.tmp_path / "alerts.sqlite3")
        self.registry = Registry()
        self.dispatcher = Dispatcher(self.store, [self.sms], sms_route=("twilio",), attempts=1,
                                     clock=lambda: self.now, sleep=lambda s: None)
        engine = AlertEngine(AlertSettings(), YARDS, started_at=at("13:00"), render=self.render)
        self.alerts = AlertCore(engine, self.store, self.tracker, act=self.act,
                                registry=self.registry)

    def act(self, decision: Decision) -> None:
        if self.dispatch_fails:
            raise RuntimeError("killed between commit and dispatch")
        for note in decision.notifications:
            self.dispatcher.deliver(note)

    def send(self, yard: str, node: str, message: Telemetry | Event | Status) -> None:
        self.tracker.observe(Envelope(yard, node, type(message).__name__.lower(), message),
                             self.now)

    def telemetry(self, yard: str, node: str, trays: dict[str, str] | None = None) -> None:
        """The node reports now and then every minute of ``run`` (until ``offline``)."""
        self.reporting[yard, node] = trays or {}
        self.seq += 1
        self.send(yard, node, Telemetry(ts=self.now, seq=self.seq, temperature_c=30.0,
                                        humidity_pct=60.0, rain=None, rain_mm=None,
                                        trays=trays or {}))

    def rain(self, yard: str) -> None:
        self.seq += 1
        self.send(yard, "n1", Event(ts=self.now, seq=self.seq, type="rain_started"))

    def offline(self, yard: str, node: str) -> None:
        self.reporting.pop((yard, node))
        self.send(yard, node, Status(state="offline", ts=self.now))

    def run(self, until: str) -> None:
        """Evaluate every minute up to ``until``; the nodes report, nothing new."""
        while self.now < at(until):
            self.now += 60
            for (yard, node), trays in list(self.reporting.items()):
                self.telemetry(yard, node, trays)
            self.alerts.evaluate(self.now)

    def errors(self, stage: str) -> float:
        return self.registry.part("alerts").get("errors_total", stage=stage)


def test_a_template_that_raises_after_the_rain_alert_was_decided_loses_nothing(
        tmp_path: Path) -> None:
    render = BrokenTemplate("node_offline", "Norte")
    yards = TwoYards(tmp_path, render=render)
    yards.telemetry("norte", "n1")
    yards.telemetry("norte", "n2")
    yards.telemetry("sur", "n1")
    yards.now = at("14:00")
    yards.rain("norte")
    yards.rain("sur")
    yards.offline("norte", "n2")
    # Norte's rain alert is decided (and rendered) first; then the technician's message
    # about n2 raises. Norte's whole decision is dropped, Sur's goes through.
    [committed] = yards.alerts.evaluate(yards.now)
    assert committed.yard == "sur"
    assert yards.sms.sent == [("14:00", "Pedro", "rain_now", "raise")]
    assert yards.errors("decide") == 1
    assert yards.store.active_episodes("norte") == []
    assert yards.store.notifications(yard="norte") == []
    assert [(e.yard, e.kind) for e in yards.alerts.open_episodes()] == [("sur", "rain")]
    assert yards.alerts.current_alert("norte") == Alert(state="clear")
    # The template is fixed: Norte's alert goes out at the next evaluation, Sur's is not
    # repeated, and nothing is sent twice afterwards.
    render.broken = False
    yards.run("14:10")
    assert yards.sms.sent == [
        ("14:00", "Pedro", "rain_now", "raise"),
        ("14:01", "Rosa", "rain_now", "raise"),
        ("14:01", "Tito", "node_offline", "raise"),
    ]
    assert [(n.recipient, n.status) for n in yards.store.notifications(yard="norte")] == [
        ("Rosa", "sent"), ("Tito", "sent")]
    assert yards.errors("decide") == 1


def test_an_escalation_decided_before_a_rule_raises_is_sent_at_the_next_evaluation(
        tmp_path: Path) -> None:
    """The defect this design fixes: the escalation must not be marked sent in memory
    while the failed evaluation's messages are dropped."""
    render = BrokenTemplate("node_offline", "Norte")
    render.broken = False
    yards = TwoYards(tmp_path, render=render)
    yards.telemetry("norte", "n1", trays={"t1": "extended"})
    yards.telemetry("norte", "n2")
    yards.telemetry("sur", "n1")
    yards.run("13:59")
    yards.now = at("14:00")
    yards.rain("norte")
    yards.rain("sur")
    yards.alerts.evaluate(yards.now)
    yards.run("14:14")
    [before] = yards.store.active_episodes("norte")
    assert (before.notify_count, before.escalations, before.last_notified_at) == (
        1, 0, at("14:00"))
    # 14:15: the trays are still out (an escalation is due in Norte, a repeat in Sur),
    # and n2 goes silent, whose message cannot be rendered.
    yards.offline("norte", "n2")
    render.broken = True
    yards.run("14:15")
    assert yards.errors("decide") == 1
    assert yards.store.active_episodes("norte") == [before]
    assert [e for e in yards.alerts.open_episodes() if e.yard == "norte"] == [before]
    render.broken = False
    yards.run("14:29")
    assert yards.sms.sent == [
        ("14:00", "Rosa", "rain_now", "raise"),
        ("14:00", "Pedro", "rain_now", "raise"),
        ("14:15", "Pedro", "rain_now", "repeat"),
        ("14:16", "Rosa", "trays_still_out", "escalate"),
        ("14:16", "Ana", "trays_still_out", "escalate"),
        ("14:16", "Tito", "node_offline", "raise"),
    ]
    after, offline = yards.store.active_episodes("norte")
    assert (after.kind, after.notify_count, after.escalations, after.last_notified_at) == (
        "rain", 2, 1, at("14:16"))
    assert (offline.kind, offline.key, offline.notify_count) == ("node_offline", "n2", 1)


def test_a_commit_that_fails_for_one_yard_undoes_only_that_yard(tmp_path: Path) -> None:
    yards = TwoYards(tmp_path)
    yards.telemetry("norte", "n1")
    yards.telemetry("sur", "n1")
    yards.now = at("14:00")
    yards.rain("norte")
    yards.rain("sur")
    yards.store.failing_yard = "norte"
    [committed] = yards.alerts.evaluate(yards.now)
    assert committed.yard == "sur"
    assert yards.errors("commit") == 1
    # Norte's rows were written inside its SAVEPOINT and rolled back with it.
    assert yards.store.history(yard="norte") == []
    assert yards.store.notifications(yard="norte") == []
    assert [e.yard for e in yards.alerts.open_episodes()] == ["sur"]
    yards.store.failing_yard = None
    yards.run("14:05")
    assert yards.sms.sent == [("14:00", "Pedro", "rain_now", "raise"),
                              ("14:01", "Rosa", "rain_now", "raise")]
    assert [(e.yard, e.id) for e in yards.store.history()] == [("norte", 2), ("sur", 1)]


def test_a_crash_between_commit_and_dispatch_sends_after_restart_once(tmp_path: Path) -> None:
    yards = TwoYards(tmp_path)
    yards.telemetry("norte", "n1", trays={"t1": "extended"})
    yards.telemetry("sur", "n1")
    yards.now = at("14:00")
    yards.rain("norte")
    yards.rain("sur")
    yards.dispatch_fails = True
    committed = yards.alerts.evaluate(yards.now)
    assert [d.yard for d in committed] == ["norte", "sur"]
    assert yards.errors("act") == 2
    assert yards.sms.sent == []
    # Committed: logged as pending, and memory knows it was decided, so the next
    # evaluations (still in the same dying process) do not decide it again.
    assert [(n.recipient, n.status) for n in yards.store.notifications()] == [
        ("Rosa", "pending"), ("Pedro", "pending")]
    yards.run("14:03")
    assert len(yards.store.notifications()) == 2
    # The restart: the pending ones go out, once; the episodes say they were sent.
    yards.store.close()
    yards.dispatch_fails = False
    yards.start()
    yards.dispatcher.start()
    try:
        assert yards.dispatcher.resubmit_pending(now=yards.now, max_age_s=3600) == 2
    finally:
        yards.dispatcher.stop()
    assert sorted(yards.sms.sent) == [("14:03", "Pedro", "rain_now", "raise"),
                                      ("14:03", "Rosa", "rain_now", "raise")]
    yards.run("14:14")
    assert len(yards.sms.sent) == 2
    yards.run("14:15")  # the trays are still out: the first escalation, as usual
    assert yards.sms.sent[2:] == [("14:15", "Rosa", "trays_still_out", "escalate"),
                                  ("14:15", "Ana", "trays_still_out", "escalate"),
                                  ("14:15", "Pedro", "rain_now", "repeat")]


# ---------------------------------------------------------------- the service


def write_config(tmp_path: Path, ntfy_url: str, *, evaluate_interval_s: float = 3600,
                 recipients: Iterable[str] = ("Luis",)) -> Path:
    """Yard Norte; each recipient is a worker on push, topic ``norte-<name>``."""
    config = tmp_path / "server.toml"
    config.write_text(f"""
[alerts]
database = "alerts.sqlite3"
drying_start = "00:00"
drying_end = "24:00"
evaluate_interval_s = {evaluate_interval_s}

[notifiers.ntfy]
url = "{ntfy_url}"

[[yards]]
id = "norte"
name = "Norte"
latitude = -6.57
longitude = -76.14

""" + "".join(f"""
[[yards.recipients]]
name = "{name}"
role = "worker"
channels = ["push"]
ntfy_topic = "norte-{name.lower()}"
""" for name in recipients))
    return config


class Push:
    """Stands in for ntfy: takes every push (a failed delivery would raise a technician
    alert on the next cycle, and this test is about the counts of one rain alert)."""

    name, channel = "ntfy", "push"

    def send(self, message: Outgoing) -> str:
        return "pushed"

    def close(self) -> None:
        pass


def test_the_service_exports_alert_metrics_and_watches_its_thread(tmp_path: Path) -> None:
    settings = load_server_settings(write_config(tmp_path, "http://127.0.0.1:9"))
    registry, health = Registry(), Health()
    service = AlertService(settings, notifiers=[Push()], poller=None, registry=registry,
                           health=health)
    service.start()
    try:
        assert health.problems() == []
        service.observe(Envelope("norte", "n1", "event",
                                 Event(ts=service.clock(), seq=1, type="rain_started")),
                        service.clock())
        service.evaluate(["norte"])
    finally:
        service.stop()
    alerts = registry.part("alerts")
    assert alerts.by_label("open_episodes", "kind") == {
        "rain": 1, "humidity_surge": 0, "node_offline": 0, "forecast_stale": 0,
        "delivery_failed": 0, "provider_failing": 0, "modem_failing": 0, "batch_rewetting": 0,
        "batch_mould": 0, "batch_brittle": 0}
    assert alerts.get("notifications_decided_total") == 1
    assert alerts.total("errors_total") == 0
    # One cycle by hand; the thread's first cycle may or may not have run before it.
    assert alerts.get("cycles_total") == alerts.histogram_count("cycle_seconds") >= 1
    assert alerts.get("yard_evaluations_total") == alerts.get("cycles_total")
    text = registry.render()
    assert 'secadero_alerts_open_episodes{kind="rain"} 1\n' in text
    assert "# TYPE secadero_alerts_cycle_seconds histogram\n" in text
    # Stopped without Health.stopping(): the dead threads are reported (the
    # dispatcher's push worker stopped with the service too).
    assert health.problems() == ["the notify-push thread has stopped; see the log",
                                 "the alert evaluation thread has stopped; see the log"]


class HalfwayDispatcher(Dispatcher):
    """The real dispatcher, except that its first submit of several notifications takes
    the first one and then raises: the act step failing after the dispatcher accepted
    part of a decision. With ``resubmit_fails``, the re-submission right after that
    failure raises too (as if SQLite were locked), so only a later full cycle can
    hand the rest over."""

    def __init__(self, *args: object, resubmit_fails: bool = False, **kwargs: object
                 ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.resubmit_fails = resubmit_fails
        self.failed_halfway = threading.Event()

    def submit(self, notes: Iterable[Notification]) -> None:
        notes = list(notes)
        if len(notes) > 1 and not self.failed_halfway.is_set():
            super().submit(notes[:1])
            self.failed_halfway.set()
            raise RuntimeError("the act step died half-way through the decision")
        super().submit(notes)

    def resubmit_pending(self, *, now: float, max_age_s: float) -> int:
        if self.resubmit_fails and self.failed_halfway.is_set():
            self.resubmit_fails = False
            raise sqlite3.OperationalError("database is locked")
        return super().resubmit_pending(now=now, max_age_s=max_age_s)


def run_rain_with_a_dispatch_failing_halfway(tmp_path: Path, *, evaluate_interval_s: float,
                                             resubmit_fails: bool
                                             ) -> tuple[list[str], AlertService, Registry]:
    """Start the service (its thread, the dispatcher's workers); after its first full
    cycle, a wet plate in Norte: one decision, three pushes, whose act step fails after
    the dispatcher took the first. Returns the topics ntfy received, once every push
    is logged as sent and the service has stopped (so nothing else can arrive)."""
    ntfy = FakeService()
    ntfy.default = ntfy.json_reply({"id": "abc123", "event": "message"})
    settings = load_server_settings(write_config(
        tmp_path, ntfy.url, evaluate_interval_s=evaluate_interval_s,
        recipients=("Luis", "Eva", "Ana")))
    registry = Registry()
    service = AlertService(
        settings, notifiers=build_notifiers(settings.notifiers), poller=None, registry=registry,
        make_dispatcher=lambda *args, **kwargs: HalfwayDispatcher(
            *args, resubmit_fails=resubmit_fails, **kwargs))
    alerts = registry.part("alerts")
    try:
        service.start()
        try:
            wait_until(lambda: alerts.get("cycles_total") >= 1)  # the first full cycle
            now = service.clock()
            service.observe(Envelope("norte", "n1", "event",
                                     Event(ts=now, seq=1, type="rain_started")), now)
            wait_until(lambda: [n.status for n in service.store.notifications()]
                       == ["sent"] * 3)
        finally:
            service.stop()
        topics = [str(request.json()["topic"])  # type: ignore[index]
                  for request in ntfy.requests]
        return topics, service, registry
    finally:
        ntfy.close()


def test_a_dispatch_failing_halfway_is_completed_at_once_without_a_restart(
        tmp_path: Path) -> None:
    topics, service, registry = run_rain_with_a_dispatch_failing_halfway(
        tmp_path, evaluate_interval_s=3600, resubmit_fails=False)
    # The first push was taken before the failure; the other two were handed over
    # from the store right after it, in the same act step: no full cycle came.
    assert topics == ["norte-luis", "norte-eva", "norte-ana"]
    assert registry.part("alerts").get("errors_total", stage="act") == 1
    assert registry.part("alerts").get("cycles_total") == 2  # the first, and the rain's
    notify = registry.part("notify")
    assert notify.get("resubmitted_total", channel="push") == 2
    assert notify.get("sent_total", channel="push", provider="ntfy") == 3
    assert notify.total("duplicate_submits_total") == 0
    [episode] = AlertStore(tmp_path / "alerts.sqlite3").active_episodes()
    assert (episode.cause, episode.notify_count) == ("rain_now", 1)
    assert service.dispatcher.held() == frozenset()


def test_a_dispatch_failing_halfway_goes_out_by_the_next_full_cycle(tmp_path: Path) -> None:
    """The re-submission right after the failure fails too: the next full cycle (one
    second later here) hands the rest over, each once, in the same process."""
    topics, _, registry = run_rain_with_a_dispatch_failing_halfway(
        tmp_path, evaluate_interval_s=1, resubmit_fails=True)
    assert sorted(topics) == ["norte-ana", "norte-eva", "norte-luis"]
    assert topics[0] == "norte-luis"  # taken before the failure
    alerts = registry.part("alerts")
    assert alerts.get("errors_total", stage="act") == 1
    assert alerts.get("errors_total", stage="resubmit") == 1
    notify = registry.part("notify")
    assert notify.get("resubmitted_total", channel="push") == 2
    assert notify.get("sent_total", channel="push", provider="ntfy") == 3
    assert notify.total("duplicate_submits_total") == 0


CRASHING_SERVER = """
import sys, threading
from secadero.contract import Envelope, Event
from secadero.server.alerts.service import AlertService
from secadero.server.notifiers import build_notifiers
from secadero.settings import load_server_settings

settings = load_server_settings(sys.argv[1])
service = AlertService(settings, notifiers=build_notifiers(settings.notifiers), poller=None).start()
now = service.clock()
service.observe(Envelope("norte", "n1", "event", Event(ts=now, seq=1, type="rain_started")),
                now)
service.evaluate(["norte"])
threading.Event().wait()  # until killed
"""


def test_a_server_killed_between_commit_and_dispatch_sends_after_restart_once(
        tmp_path: Path) -> None:
    ntfy = FakeService()
    arrived, release = threading.Event(), threading.Event()

    def hang(request: Recorded) -> Reply:
        arrived.set()  # the push left the dispatcher: the decision was committed
        release.wait(30)
        return (200, {}, b"{}")

    ntfy.replies.append(hang)
    ntfy.default = ntfy.json_reply({"id": "abc123", "event": "message"})
    config = write_config(tmp_path, ntfy.url)
    process = subprocess.Popen([sys.executable, "-c", CRASHING_SERVER, str(config)],
                               stderr=subprocess.PIPE)
    try:
        assert arrived.wait(30), process.stderr.read().decode() if process.poll() else ""
        os.kill(process.pid, signal.SIGKILL)  # before ntfy answered
        process.wait(10)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        release.set()
    try:
        settings = load_server_settings(config)
        service = AlertService(settings, notifiers=build_notifiers(settings.notifiers), poller=None)
        [pending] = service.store.notifications()
        assert (pending.recipient, pending.status, pending.kind) == ("Luis", "pending",
                                                                      "rain_now")
        service.start()  # Dispatcher.resubmit_pending: the pending push goes out
        try:
            resent = ntfy.received.get(timeout=10)
            assert resent.json()["topic"] == "norte-luis"  # type: ignore[index]
            # The restarted engine knows the alert was decided: nothing new to send.
            assert service.evaluate(["norte"]) == []
            [episode] = service.open_episodes()
            assert (episode.cause, episode.notify_count) == ("rain_now", 1)
        finally:
            service.stop()
        [note] = AlertStore(settings.alerts.database).notifications()
        assert (note.status, note.provider) == ("sent", "ntfy")
        assert len(ntfy.requests) == 2  # the one cut by the kill, and the resend
    finally:
        ntfy.close()
