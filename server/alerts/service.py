"""The alert service: decide, then commit, then act; and its wiring (tracker, forecasts,
dispatcher, API, the alert topic).

Plugs into the ingest as an observer: ``observe(envelope, received_at)`` is
called on the MQTT thread for every valid message *before* storage; it only
updates the yard's state and, when the message may change a rain decision
(a wet plate, a tip, a tray moving), wakes the evaluation thread, which
evaluates that yard at once. Everything else is evaluated every
``evaluate_interval_s``. The yard's current alert is published, retained, on
``secadero/v1/{yard}/alert`` whenever it changes, for the nodes' beacons.

Every change of an episode (an evaluation, an acknowledge from the API, an
SMS reply, the trays coming in) takes the one path of ``AlertCore``:

1. **decide**: ``AlertEngine.decide`` (pure) returns a ``Decision`` from the
   yard's view, forecast, delivery state, open batches, open episodes and the
   clock;
2. **commit**: ``AlertStore.commit`` stores it, one SAVEPOINT per yard inside
   one transaction per cycle (500 yards raising at once is one fsync);
3. **swap**: the committed episodes replace the yard's open episodes in memory;
4. **act**: the notifications are handed to the dispatcher, the transitions
   to the wall display, the yard's alert is published.

A yard whose decide or commit raises keeps its stored and in-memory state
as it was (it is decided again at the next evaluation); it is counted
(``secadero_alerts_errors_total``) and logged, and the other yards go on.
Once committed, a notification is sent, once, even if the act step fails
or the whole process dies: it stays ``pending`` in SQLite, and
``Dispatcher.resubmit_pending`` hands the dispatcher every pending one it
does not already hold: at start (what a dead process left), right after an
act step failed, and at every full evaluation cycle, so a notification whose
act step failed in a running process goes out within one
``evaluate_interval_s``.

The service is built and wired with the other parts in ``server/app.py``
(the composition root): its forecast poller, notifiers, the point writer
behind ``points``, the ingest's ``publish`` and ``open_batches`` (the drying
batches' records, for the quality warnings). The open batches are read once
per yard and evaluation; if reading them raises, that is counted
(``stage="batches"``) and the yard's rain alerts are decided all the same,
its batch warnings left as they were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from secadero import contract
from secadero.contract import Alert, Envelope
from secadero.server.alerts import messages
from secadero.server.alerts.engine import (
    BATCH_KINDS,
    AlertEngine,
    Decision,
    Render,
    Transition,
    current_alert,
)
from secadero.server.alerts.state import YardTracker
from secadero.server.alerts.store import AlertStore, Episode
from secadero.server.alerts.tokens import AckTokens, load_or_create_secret
from secadero.server.batches.warnings import OpenBatch, OpenBatches
from secadero.server.forecast import ForecastStatus
from secadero.server.forecast.poller import ForecastPoller
from secadero.server.metrics import Health, Metrics, Registry
from secadero.server.notifiers import Notifier
from secadero.server.notifiers.dispatch import DeliveryHealth, Dispatcher
from secadero.server.notifiers.notification_log import Notification
from secadero.settings import ServerSettings

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], Any]

# Episode kinds, so the open-episodes gauge says 0 for a kind with none open.
KINDS = ("rain", "humidity_surge", "node_offline", "forecast_stale", "delivery_failed",
         "provider_failing", "modem_failing", *BATCH_KINDS)

HELP = {
    "yard_evaluations_total": ("counter", "Evaluations of one yard's rules, failed ones "
                                          "included"),
    "cycles_total": ("counter", "Evaluation cycles: all yards on the timer, or the yards a "
                                "sensor woke"),
    "errors_total": ("counter", "Failures by stage: decide (a rule or a message template "
                                "raised), commit (SQLite refused), act (dispatch or publish "
                                "raised), cycle, resubmit (handing pending notifications to "
                                "the dispatcher again raised), batches (reading the open "
                                "drying batches raised: the yard's rain alerts are decided "
                                "without them). A yard that failed to decide or commit is "
                                "evaluated again at the next cycle; a pending notification "
                                "is handed over again at the next full cycle"),
    "notifications_decided_total": ("counter", "Notifications committed to the log, to be "
                                               "sent"),
    "open_episodes": ("gauge", "Open alert episodes by kind"),
    "calls_total": ("counter", "Voice calls whose end Twilio reported, by outcome: answered "
                               "(completed by a person), unanswered (busy, no-answer, failed, "
                               "canceled, or a voicemail Twilio recognised)"),
}
# Twilio's final call statuses (CallStatus); queued, ringing, in-progress come before.
CALL_FINAL = ("completed", "busy", "no-answer", "failed", "canceled")
CYCLE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# A pending notification decided longer ago than this is marked failed, not sent: a rain
# warning an hour late no longer helps, and could send people out to trays already wet.
RESEND_MAX_AGE_S = 3600.0


def alert_metrics(registry: Registry) -> Metrics:
    """The alerts' part of the server's registry (``secadero_alerts_*``)."""
    metrics = registry.part("alerts", HELP)
    metrics.histogram("cycle_seconds", CYCLE_BUCKETS_S,
                      "Time to decide, commit and swap one evaluation cycle")
    return metrics


class AlertCore:
    """The open episodes, and the one path that changes them: decide, commit, swap, act.

    Owns the open episodes in memory (loaded from the store at start). The
    engine decides from a yard's episodes without changing them; a decision
    becomes real only once ``store.commit`` returned, and only then replaces
    the yard's episodes here and goes to ``act`` (send, publish). One lock
    keeps decide -> commit -> swap of one cycle or one acknowledge together,
    so an acknowledge cannot be overwritten by a cycle that decided from the
    episode as it was before; ``act`` runs outside it.

    ``forecast(yard)``, ``delivery_error(yard)`` and ``open_batches(yard)``
    (None: no batch records, so no quality warnings) and ``modem_error()`` (why
    the GSM modem cannot send, ``ModemMonitor.problem``) give the other inputs;
    ``act(decision)`` is told of each committed decision (an exception there
    is counted and logged: the notifications stay pending in the store, for
    whoever re-submits them: ``AlertService``, through the dispatcher).
    ``registry``: where ``secadero_alerts_*`` go (``metrics``).
    """

    def __init__(self, engine: AlertEngine, store: AlertStore, tracker: YardTracker, *,
                 forecast: Callable[[str], ForecastStatus] = lambda yard: ForecastStatus(),
                 delivery_error: Callable[[str], str | None] = lambda yard: None,
                 open_batches: OpenBatches | None = None,
                 act: Callable[[Decision], None] | None = None,
                 registry: Registry | None = None,
                 modem_error: Callable[[], str | None] = lambda: None) -> None:
        self.engine = engine
        self.modem_error = modem_error
        self.store = store
        self.tracker = tracker
        self.forecast = forecast
        self.delivery_error = delivery_error
        self.open_batches = open_batches
        self.act = act
        self.metrics = alert_metrics(registry if registry is not None else Registry())
        self._lock = threading.RLock()
        # yard -> (kind, key) -> episode. A yard's dict is replaced whole at each swap,
        # never changed in place: whoever holds one holds a consistent snapshot.
        self._open: dict[str, dict[tuple[str, str], Episode]] = {}
        for episode in store.active_episodes():
            self._open.setdefault(episode.yard, {})[episode.kind, episode.key] = episode
        self._count_open()

    # ------------------------------------------------------------ changes

    def evaluate(self, now: float, yards: Sequence[str] | None = None) -> list[Decision]:
        """Decide for each yard, commit, swap, act; return the committed decisions."""
        started = time.perf_counter()
        targets = list(yards) if yards is not None else self.tracker.yards()
        # Read from SQLite before taking the lock, so an acknowledge does not wait on it.
        batches = {yard: self._batches(yard) for yard in targets}
        modem_error = self.modem_error()
        with self._lock:
            decided: list[Decision] = []
            for yard in targets:
                try:
                    decision = self.engine.decide(
                        self.tracker.view(yard), self.forecast(yard), self._open.get(yard, {}),
                        now, delivery_error=self.delivery_error(yard), batches=batches[yard],
                        modem_error=modem_error)
                except Exception:
                    self._failed("decide", yard)
                    continue
                if not decision.empty:
                    decided.append(decision)
            committed = self._commit(decided)
            self._swap(committed)
        self.metrics.inc("yard_evaluations_total", len(targets))
        self.metrics.inc("cycles_total")
        self.metrics.observe("cycle_seconds", time.perf_counter() - started)
        self._act(committed)
        return committed

    def acknowledge(self, episode_id: int, by: str, now: float) -> Episode | None:
        """A person said "OK": the episode as it is now, None if unknown or closed.

        A failed commit raises (the caller answers with an error; nothing changed).
        """
        return self._decide_on(episode_id,
                               lambda episode: self.engine.acknowledge(episode, by, now))

    def close(self, episode_id: int, by: str, now: float) -> Episode | None:
        """A supervisor closes a yard alert (``AlertEngine.close``): the episode as it is
        now, None if unknown or already resolved. Decided, committed, swapped and acted
        on like ``acknowledge``; a failed commit raises and changes nothing."""
        return self._decide_on(episode_id,
                               lambda episode: self.engine.close(episode, by, now))

    def call_outcome(self, episode_id: int, recipient: str, *, answered: bool, status: str,
                     now: float) -> Episode | None:
        """How a call ended (``AlertEngine.call_outcome``): the episode as it is now, None
        if it is no longer open. Counted in ``calls_total`` by outcome; decided,
        committed and swapped like ``acknowledge`` (a failed commit raises)."""
        self.metrics.inc("calls_total", outcome="answered" if answered else "unanswered")
        return self._decide_on(episode_id, lambda episode: self.engine.call_outcome(
            episode, recipient, answered=answered, status=status, now=now))

    def _decide_on(self, episode_id: int,
                   decide: Callable[[Episode], Decision]) -> Episode | None:
        """One open episode's decision, committed, swapped into memory and acted on:
        the episode as it is now, None if it is not open. An empty decision (already
        acknowledged, already closed) changes nothing and is not an error; a failed
        commit raises and changes nothing."""
        with self._lock:
            episode = next((e for episodes in self._open.values() for e in episodes.values()
                            if e.id == episode_id), None)
            if episode is None:
                return None
            decision = decide(episode)
            if decision.empty:
                return episode
            try:
                stored = self.store.commit(decision)
            except Exception:
                self._failed("commit", episode.yard)
                raise
            self._swap([stored])
        self._act([stored])
        return stored.episodes[0]

    def acknowledge_phone(self, phone: str, now: float) -> list[Episode]:
        """An SMS reply "OK"/"SI" from a recipient: acknowledge their yards' open alerts."""
        with self._lock:
            wanted = [e.id or 0 for yard in self.engine.yards_of_phone(phone)
                      for e in self._open.get(yard, {}).values()
                      if e.kind in ("rain", "humidity_surge")]
            acked = [self.acknowledge(episode_id, phone, now) for episode_id in wanted]
        return [episode for episode in acked if episode is not None]

    # ------------------------------------------------------------ reading

    def open_episodes(self) -> list[Episode]:
        with self._lock:
            episodes = [e for yard in self._open.values() for e in yard.values()]
        return sorted(episodes, key=lambda e: (e.raised_at, e.id or 0))

    def current_alert(self, yard: str) -> Alert:
        """What the yard's retained ``alert`` topic should say now (for the nodes' beacons)."""
        return current_alert(self._open.get(yard, {}))

    # ------------------------------------------------------------ steps

    def _batches(self, yard: str) -> list[OpenBatch] | None:
        """The yard's open batches; None when unknown (not wired, or the records failed).

        A batch store that raises must not cost the yard its rain alerts: it is
        counted and logged, and the engine leaves the batch warnings as they are.
        """
        if self.open_batches is None:
            return None
        try:
            return list(self.open_batches(yard))
        except Exception:
            self.metrics.inc("errors_total", stage="batches")
            log.exception("alerts: reading the open batches of yard %s failed; its rain "
                          "alerts are decided without them, its batch warnings left as "
                          "they were", yard)
            return None

    def _commit(self, decisions: list[Decision]) -> list[Decision]:
        """One transaction, one SAVEPOINT per yard: a yard that fails loses only itself."""
        if not decisions:
            return []
        stored: list[Decision] = []
        with self.store.transaction():
            for decision in decisions:
                try:
                    stored.append(self.store.commit(decision))
                except Exception:
                    self._failed("commit", decision.yard)
        return stored

    def _swap(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            episodes = dict(self._open.get(decision.yard, {}))
            for episode in decision.episodes:
                # An episode whose kind changed (a humidity warning become rain) leaves
                # its old place.
                for key in [k for k, e in episodes.items() if e.id == episode.id]:
                    del episodes[key]
                if episode.active:
                    episodes[episode.kind, episode.key] = episode
                else:
                    episodes.pop((episode.kind, episode.key), None)
            self._open[decision.yard] = episodes
            for t in decision.transitions:
                log.info("yard %s: %s %s (episode %d)", t.yard, t.kind, t.state, t.episode)
            self.metrics.inc("notifications_decided_total", len(decision.notifications))
        if decisions:
            self._count_open()

    def _act(self, decisions: list[Decision]) -> None:
        if self.act is None:
            return
        for decision in decisions:
            try:
                self.act(decision)
            except Exception:
                # Committed: the episodes already say they were sent, and the notifications
                # the dispatcher did not take are pending in the store, where
                # Dispatcher.resubmit_pending finds them (AlertService calls it).
                self._failed("act", decision.yard)

    def _failed(self, stage: str, yard: str) -> None:
        self.metrics.inc("errors_total", stage=stage)
        if stage == "act":
            log.exception("alerts: acting on yard %s's committed decision failed; its "
                          "notifications stay pending until they are handed to the "
                          "dispatcher again", yard)
        else:
            log.exception("alerts: %s failed for yard %s; its episodes stay as they were "
                          "and it is evaluated again next cycle", stage, yard)

    def _count_open(self) -> None:
        counts = dict.fromkeys(KINDS, 0)
        for episodes in self._open.values():
            for kind, _ in episodes:
                counts[kind] = counts.get(kind, 0) + 1
        for kind, count in counts.items():
            self.metrics.set("open_episodes", count, kind=kind)


class AlertService:
    """Runs the rain alerts inside the server process: its thread, inputs and outputs.

    ``registry``/``health``: the server's metrics registry and health (fresh
    ones by default, so a test can build the service alone). ``render``: how
    messages are worded (``messages.render``; a test passes a broken one).
    ``make_dispatcher``: builds the dispatcher (``Dispatcher``; a test passes
    one that fails half-way through a submit). ``open_batches(yard)``: the
    yard's open drying batches (``warnings.OpenBatch``) for the quality
    warnings; without it there are none. ``modem_error()``: why the GSM
    modem cannot send (``ModemMonitor.problem``; only with ``[notifiers.gammu]``).
    """

    def __init__(self, settings: ServerSettings, *, notifiers: Sequence[Notifier],
                 poller: ForecastPoller | None, publish: Publish | None = None,
                 clock: Callable[[], float] = time.time, registry: Registry | None = None,
                 health: Health | None = None, render: Render = messages.render,
                 make_dispatcher: Callable[..., Dispatcher] = Dispatcher,
                 open_batches: OpenBatches | None = None,
                 modem_error: Callable[[], str | None] = lambda: None) -> None:
        s = settings.alerts
        self.settings = settings
        self.clock = clock
        self.publish = publish
        self.health = health if health is not None else Health()
        self.store = AlertStore(s.database)
        engine = AlertEngine(s, settings.yards, started_at=clock(),
                             forecast_enabled=bool(settings.forecast.providers), render=render,
                             batches=settings.batches)
        # The humidity history the longest window of any yard needs ([yards.rules]).
        window_min = max((engine.rules_of(y).humidity_window_min for y in settings.yards),
                         default=s.humidity_window_min)
        self.tracker = YardTracker(settings.yards, humidity_window_s=window_min * 60)
        secret = s.ack_secret or load_or_create_secret(s.database.with_suffix(".secret"))
        self.tokens = AckTokens(secret, s.ack_token_ttl_h * 3600)
        self.poller = poller
        self.dispatcher = make_dispatcher(
            self.store, notifiers, sms_route=settings.notifiers.sms_route,
            attempts=settings.notifiers.attempts, backoff_s=settings.notifiers.backoff_s,
            ack_url=self.ack_url, clock=clock, on_done=self._delivered, registry=registry,
            health=self.health)
        self.delivery = DeliveryHealth()
        # The wall display's output: each committed transition becomes an ``alert`` point.
        self.points: Callable[[Transition], object] | None = None
        self.core = AlertCore(engine, self.store, self.tracker, forecast=self.forecast_status,
                              delivery_error=self.delivery.error,
                              open_batches=open_batches, act=self._act, registry=registry,
                              modem_error=modem_error)
        self.metrics = self.core.metrics
        self._published: dict[str, bytes] = {}
        # Publishing reads the yard's alert and sends it in one step, so two threads
        # (a cycle, an acknowledge) cannot leave the older state retained.
        self._publish_lock = threading.Lock()
        self._urgent: set[str] = set()
        self._urgent_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ inputs

    def observe(self, envelope: Envelope, received_at: float) -> None:
        """The ingest observer: quick, never blocks, never raises on bad input."""
        if envelope.kind == "alert":
            return
        if self.tracker.observe(envelope, received_at):
            with self._urgent_lock:
                self._urgent.add(envelope.yard)
            self._wake.set()

    def acknowledge(self, episode_id: int, by: str) -> bool:
        """Acknowledge one episode (the push button, the API): False if unknown or closed."""
        return self.core.acknowledge(episode_id, by, self.clock()) is not None

    def close(self, episode_id: int, by: str) -> Episode | None:
        """A supervisor closes a yard alert (the API): None if unknown or resolved."""
        return self.core.close(episode_id, by, self.clock())

    def acknowledge_phone(self, phone: str) -> list[Episode]:
        """An SMS reply "OK"/"SI": acknowledge the sender's yards' open alerts."""
        return self.core.acknowledge_phone(phone, self.clock())

    def call_status(self, call_sid: str, status: str, answered_by: str | None = None
                    ) -> Notification | None:
        """Twilio's status callback for a call we placed: recorded on its notification
        (``delivery``); a call that ended unanswered lets the next trays round call
        again (``AlertCore.call_outcome``). None for a call we do not know.

        Only the final statuses decide anything: ``queued``, ``ringing`` and
        ``in-progress`` are only recorded (Twilio sends them only when asked)."""
        note = self.store.notification_by_provider_id(call_sid)
        if note is None or note.channel != "voice":
            return None
        note.delivery = status if not answered_by else f"{status} ({answered_by})"
        self.store.update_notification(note)
        if status in CALL_FINAL:
            # A voicemail picks up too ("completed"); with MachineDetection Twilio says so.
            answered = status == "completed" and not (answered_by or "").startswith(
                ("machine", "fax"))
            self.core.call_outcome(note.episode_id, note.recipient, answered=answered,
                                   status=note.delivery, now=self.clock())
        return note

    def _delivered(self, note: Notification) -> None:
        self.delivery.record(note)
        if note.status == "failed":
            with self._urgent_lock:
                self._urgent.add(note.yard)  # tell the technician now, not at the next tick
            self._wake.set()

    def ack_url(self, note: Notification) -> str | None:
        if note.channel != "push":
            return None
        token = self.tokens.make(note.episode_id, self.clock())
        return f"{self.settings.alerts.public_url}/api/alerts/{note.episode_id}/ack?token={token}"

    # ------------------------------------------------------- reading

    def open_episodes(self) -> list[Episode]:
        return self.core.open_episodes()

    def current_alert(self, yard: str) -> Alert:
        return self.core.current_alert(yard)

    def forecast_status(self, yard: str) -> ForecastStatus:
        return self.poller.status(yard) if self.poller is not None else ForecastStatus()

    # ------------------------------------------------------- evaluation

    def evaluate(self, yards: Sequence[str] | None = None) -> list[Notification]:
        """Evaluate some (or all) yards now; return the notifications committed (and queued)."""
        targets = list(yards if yards is not None else self.tracker.yards())
        decisions = self.core.evaluate(self.clock(), targets)
        # Also the yards that did not change: a publish that failed is retried, and the
        # first cycle after a start publishes every yard's state.
        for yard in targets:
            self._publish_alert(yard)
        return [note for decision in decisions for note in decision.notifications]

    def _act(self, decision: Decision) -> None:
        """A committed decision: send first (what matters most), then the wall display.

        If this raises (``AlertCore`` counts it as ``stage="act"``), the
        notifications the dispatcher did not take are handed to it again first,
        from the store, rather than at the next full cycle.
        """
        try:
            if decision.notifications:
                self.dispatcher.submit(decision.notifications)
            if self.points is not None:
                for transition in decision.transitions:
                    self.points(transition)
        except Exception:
            self._resubmit_pending()
            raise
        self._publish_alert(decision.yard)

    def _resubmit_pending(self) -> int:
        """Hand the dispatcher every pending notification it does not hold; never raises.

        Cheap when there are none (one query on the ``notifications_pending``
        index), so it runs at every full cycle. Returns how many were handed over.
        """
        try:
            return self.dispatcher.resubmit_pending(now=self.clock(),
                                                    max_age_s=RESEND_MAX_AGE_S)
        except Exception:
            self.metrics.inc("errors_total", stage="resubmit")
            log.exception("alerts: handing pending notifications to the dispatcher failed; "
                          "tried again at the next full cycle")
            return 0

    def _publish_alert(self, yard: str) -> None:
        if self.publish is None:
            return
        with self._publish_lock:
            payload = contract.encode(self.core.current_alert(yard))
            if self._published.get(yard) == payload:
                return
            try:
                self.publish(contract.alert_topic(yard), payload, True)
                self._published[yard] = payload
            except Exception:
                log.exception("publishing the alert of yard %s", yard)

    def _loop(self) -> None:
        interval_s = self.settings.alerts.evaluate_interval_s
        next_full = 0.0
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_full - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._urgent_lock:
                urgent, self._urgent = sorted(self._urgent), set()
            full = time.monotonic() >= next_full
            if full:
                next_full = time.monotonic() + interval_s
            try:
                if full:
                    self.evaluate()
                elif urgent:
                    self.evaluate(urgent)
            except Exception:  # the top of the alerts thread: log, count, carry on
                self.metrics.inc("errors_total", stage="cycle")
                log.exception("alert evaluation cycle failed")
            if full:
                # Even after a failed cycle: what an act step (this cycle's or an
                # acknowledge's) failed to submit goes out within one interval.
                resubmitted = self._resubmit_pending()
                if resubmitted:
                    log.warning("alerts: %d committed notifications were not with the "
                                "dispatcher (an act step failed): handed over again",
                                resubmitted)

    # ------------------------------------------------------------ life

    def start(self) -> AlertService:
        self.dispatcher.start()
        resumed = self._resubmit_pending()
        if resumed:
            log.info("sending %d notifications decided before the restart", resumed)
        if self.poller is not None:
            self.poller.start()
        self._thread = threading.Thread(target=self._loop, name="alerts", daemon=True)
        self._thread.start()
        self.health.watch_thread("alert evaluation", self._thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.poller is not None:
            self.poller.stop()
        self.dispatcher.stop()
        self.store.close()
