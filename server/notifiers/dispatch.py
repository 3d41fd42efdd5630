"""Deliver logged notifications through the notifiers: routing, retries, fallback, the log.

Isolation: each channel (sms, push, webhook) that has a notifier gets its own
worker thread and queue, so a push server that hangs for its whole timeout
does not hold back an SMS. Within the SMS channel the route is tried in order
(Twilio, then the Gammu modem): a refused or timed-out Twilio request falls
through to the modem at once, which is how an SMS still leaves with the
internet down. Every attempt ends in the notification log (``status``,
``provider``, ``error``), never in an exception that stops the others.

The log is a ``NotificationLog`` (``notification_log.py``): two methods, not
the alert store, so this module depends on nothing in ``alerts/``.

Once, whatever fails: the dispatcher *holds* each notification it was handed
(by id) from ``submit`` until its final status (``sent``/``failed``) is in
the log. A notification handed over again while held (the act step and a
re-submission racing, or the same one submitted twice) is not queued again.
``resubmit_pending`` hands over every ``pending`` notification of the log it
does not hold: at start (what was decided before a restart), and while
running whenever an act step failed half-way, so a committed notification
goes out without waiting for a restart. It reads the log and checks the held
set under the held set's lock, and a worker releases a notification under the
same lock only after writing its final status: a notification being
delivered right now is either held or no longer ``pending``, never both
unheld and listed as pending, so it is never sent twice.

Threads: ``notify-<channel>``, one per channel, each owning its queue; each
is watched by ``Health`` (``/healthz`` goes red if one dies). Everything else
here is called from the alert thread or the API's (``submit``,
``resubmit_pending``) or from a worker (``deliver``).

Metrics (``secadero_notify_*``, see ``HELP``): sent, failed, provider errors
and retries per channel and provider, re-submitted, expired and duplicate
submissions per channel, and the queue depth per channel.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from secadero.server.metrics import Health, Registry
from secadero.server.notifiers import Notifier, NotifierError, Outgoing
from secadero.server.notifiers.notification_log import Notification, NotificationLog

log = logging.getLogger(__name__)

AckUrl = Callable[[Notification], "str | None"]

HELP = {
    "sent_total": ("counter", "notifications delivered, by channel and the provider that "
                              "took them"),
    "failed_total": ("counter", "notifications that failed for good (every attempt and "
                                "fallback, or expired), by channel"),
    "provider_errors_total": ("counter", "attempts a provider refused or failed (the next "
                                         "in the route is tried), by channel and provider"),
    "retries_total": ("counter", "attempts after a backoff because the previous round's "
                                 "error was retryable, by channel and provider"),
    "expired_total": ("counter", "pending notifications the dispatcher did not hold, found "
                                 "too old to send (at start, or after an act step failed), "
                                 "marked failed, by channel"),
    "resubmitted_total": ("counter", "pending notifications the dispatcher did not hold, "
                                     "handed to it again from the log (after a restart, or "
                                     "after an act step failed), by channel"),
    "duplicate_submits_total": ("counter", "notifications submitted while already held "
                                           "(queued or being delivered) or no longer "
                                           "pending: not sent again, by channel"),
    "queue_depth": ("gauge", "notifications queued on a channel's worker and not yet "
                             "finished"),
}


class Dispatcher:
    """Sends notifications and records the outcome, each once.

    ``submit`` and ``resubmit_pending`` hand notifications to the channels'
    workers and hold them until their outcome is logged; ``deliver`` sends one
    now, on the caller's thread, and knows nothing of what is held (the
    workers call it; so may a test or a tool with no workers running).
    """

    def __init__(self, notification_log: NotificationLog, notifiers: Iterable[Notifier], *,
                 sms_route: Sequence[str] = ("twilio", "gammu"), attempts: int = 3,
                 backoff_s: float = 2.0, ack_url: AckUrl | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 on_done: Callable[[Notification], None] | None = None,
                 registry: Registry | None = None, health: Health | None = None) -> None:
        self.notification_log = notification_log
        self.notifiers: dict[str, Notifier] = {n.name: n for n in notifiers}
        self.sms_route = tuple(name for name in sms_route if name in self.notifiers)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._ack_url = ack_url
        self._clock = clock
        self._sleep = sleep
        # Told of every final outcome (sent or failed): the service turns lasting
        # failures into a message for the technician.
        self._on_done = on_done
        self._metrics = (registry or Registry()).part("notify", HELP)
        self._health = health or Health()
        self._queues: dict[str, queue.Queue[Notification | None]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        # The ids handed over and not yet finished (queued, or being delivered). A worker
        # discards an id only after the final status is in the log, under this lock;
        # resubmit_pending reads the log and checks this set under it too.
        self._held: set[int] = set()
        self._held_lock = threading.Lock()

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels some notifier serves: each gets a worker thread at ``start``."""
        return tuple(sorted({notifier.channel for notifier in self.notifiers.values()}))

    def held(self) -> frozenset[int]:
        """The ids of the notifications queued or being delivered now."""
        with self._held_lock:
            return frozenset(self._held)

    def route(self, channel: str) -> list[Notifier]:
        """The notifiers to try, in order, for one channel."""
        if channel == "sms":
            return [self.notifiers[name] for name in self.sms_route]
        return [n for n in self.notifiers.values() if n.channel == channel]

    def deliver(self, note: Notification) -> Notification:
        """Try the channel's notifiers (each once per round, ``attempts`` rounds); log it."""
        route = self.route(note.channel)
        outgoing = Outgoing(
            notification_id=note.id or 0, episode_id=note.episode_id, yard=note.yard,
            recipient=note.recipient, address=note.address, title=note.title, body=note.body,
            severity=note.severity, kind=note.kind, event=note.event, language=note.language,
            ack_url=self._ack_link(note))
        errors: list[str] = []
        if not route:
            errors.append(f"no notifier configured for channel {note.channel}")
        for round_number in range(self.attempts if route else 0):
            retry = False
            for notifier in route:
                note.attempts += 1
                if round_number:
                    self._metrics.inc("retries_total", channel=note.channel,
                                      provider=notifier.name)
                try:
                    provider_id = notifier.send(outgoing)
                except NotifierError as exc:
                    errors.append(f"{notifier.name}: {exc}")
                    retry |= exc.retryable
                    self._metrics.inc("provider_errors_total", channel=note.channel,
                                      provider=notifier.name)
                    log.warning("notification %s via %s failed: %s", note.id, notifier.name, exc)
                    continue
                except Exception as exc:  # a notifier bug must not silence the others
                    errors.append(f"{notifier.name}: {type(exc).__name__}: {exc}")
                    self._metrics.inc("provider_errors_total", channel=note.channel,
                                      provider=notifier.name)
                    log.exception("notifier %s crashed on notification %s", notifier.name,
                                  note.id)
                    continue
                note.status, note.provider, note.provider_id = "sent", notifier.name, provider_id
                note.sent_at, note.error = self._clock(), "; ".join(errors[-3:]) or None
                self._finish(note)
                self._metrics.inc("sent_total", channel=note.channel, provider=notifier.name)
                if self._on_done is not None:
                    self._on_done(note)
                return note
            if not retry or round_number == self.attempts - 1 or self._stopping.is_set():
                break
            self._sleep(self.backoff_s * 2**round_number)
        note.status, note.error = "failed", "; ".join(errors[-4:])[:1000]
        self._finish(note)
        self._metrics.inc("failed_total", channel=note.channel)
        log.error("notification %s to %s (%s) failed for good: %s", note.id, note.recipient,
                  note.channel, note.error)
        if self._on_done is not None:
            self._on_done(note)
        return note

    def _ack_link(self, note: Notification) -> str | None:
        """The push button's link; a bug in making it must not keep the alert from leaving."""
        if self._ack_url is None:
            return None
        try:
            return self._ack_url(note)
        except Exception:
            log.exception("notification %s: no acknowledge link (sent without one)", note.id)
            return None

    def _finish(self, note: Notification) -> None:
        """Log the final status, then let go of the note, in that order (see the module
        docstring). If the log refuses, the note stays held: this process does not send it
        again (it may have left); it is still ``pending``, so the next start does."""
        self.notification_log.update_notification(note)
        if note.id is not None:
            with self._held_lock:
                self._held.discard(note.id)

    # ------------------------------------------------------------- threaded

    def start(self) -> None:
        """One worker per channel, each watched by the health check as ``notify-<channel>``."""
        for channel in self.channels:
            q: queue.Queue[Notification | None] = queue.Queue()
            self._queues[channel] = q
            self._metrics.set("queue_depth", 0, channel=channel)
            thread = threading.Thread(target=self._worker, args=(channel, q), daemon=True,
                                      name=f"notify-{channel}")
            thread.start()
            self._threads.append(thread)
            self._health.watch_thread(f"notify-{channel}", thread)

    def submit(self, notes: Iterable[Notification]) -> None:
        """Queue notifications on their channel's worker (call ``start`` first), each once.

        One already held (queued or being delivered) or no longer ``pending``
        is not queued again (counted as ``duplicate_submits_total``). Once it is
        finished, this trusts the note's own status: a copy read from the log
        before it was sent would go again (``resubmit_pending`` reads the log
        itself). A channel no notifier serves has no worker: its notifications
        are logged as failed at once (and counted), never dropped.
        """
        for note in notes:
            if self._hold(note):
                self._hand_over(note)

    def resubmit_pending(self, *, now: float, max_age_s: float) -> int:
        """Hand over every ``pending`` notification of the log that is not held here.

        At start, these are what was decided before a restart; while running,
        what an act step failed to submit. One decided more than ``max_age_s``
        before ``now`` is marked failed instead (expired: a warning that late
        helps nobody, and could mislead). Returns how many were handed over.
        """
        resubmitted: list[Notification] = []
        with self._held_lock:
            # Under the lock a worker releases a note under, after logging its outcome:
            # a note listed here as pending is either still held or was never handed over.
            for note in self.notification_log.notifications(status="pending"):
                if note.id is None or note.id in self._held:
                    continue
                age_s = now - note.created_at
                if age_s > max_age_s:
                    note.status = "failed"
                    note.error = f"expired: not sent within {max_age_s:.0f} s of being decided"
                    self.notification_log.update_notification(note)
                    self._metrics.inc("expired_total", channel=note.channel)
                    self._metrics.inc("failed_total", channel=note.channel)
                    log.warning("notification %s to %s (%s) decided %.0f s ago: expired, not "
                                "sent", note.id, note.recipient, note.channel, age_s)
                    continue
                self._held.add(note.id)
                resubmitted.append(note)
        for note in resubmitted:
            self._metrics.inc("resubmitted_total", channel=note.channel)
            log.info("notification %s to %s (%s) was pending and not queued: handed over "
                     "again", note.id, note.recipient, note.channel)
            self._hand_over(note)
        return len(resubmitted)

    def _hold(self, note: Notification) -> bool:
        """Take the note unless it is held already or finished; False if it is not taken."""
        with self._held_lock:
            if note.id is not None and note.id not in self._held and note.status == "pending":
                self._held.add(note.id)
                return True
        if note.id is None and note.status == "pending":
            # Not in the log: nothing can say it was sent. Delivered, but not guarded.
            log.error("notification to %s (%s) has no id: it is not in the notification "
                      "log; delivered without the once-only guard", note.recipient,
                      note.channel)
            return True
        self._metrics.inc("duplicate_submits_total", channel=note.channel)
        log.info("notification %s (%s) submitted again while %s: not sent again", note.id,
                 note.channel, "queued or being delivered" if note.status == "pending"
                 else note.status)
        return False

    def _hand_over(self, note: Notification) -> None:
        q = self._queues.get(note.channel)
        if q is None:
            self.deliver(note)
        else:
            # Counted before the put, so the worker's decrement never comes first.
            self._metrics.inc("queue_depth", 1, channel=note.channel)
            q.put(note)

    def _worker(self, channel: str, q: queue.Queue[Notification | None]) -> None:
        try:
            while True:
                note = q.get()
                if note is None:
                    return
                try:
                    self.deliver(note)
                except Exception:  # the top of a worker thread: log and take the next one
                    log.exception("dispatcher worker %s: notification %s could not be "
                                  "finished (if its outcome is not logged, it stays pending "
                                  "and goes out at the next start)", channel, note.id)
                finally:
                    self._metrics.inc("queue_depth", -1, channel=channel)
        except BaseException:
            # SystemExit from a library, or worse: nothing more leaves on this channel.
            # /healthz names the thread; the log says why. What was queued stays
            # pending in the notification log and goes out after a restart.
            log.critical("notify-%s worker stopped: no more %s notifications until a "
                         "restart", channel, channel, exc_info=True)
            raise

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        for q in self._queues.values():
            q.put(None)
        for thread in self._threads:
            thread.join(timeout_s)
        for notifier in self.notifiers.values():
            try:
                notifier.close()
            except Exception:
                log.exception("closing notifier %s", notifier.name)


class DeliveryHealth:
    """Per yard and channel, the last failure that no later success has cleared."""

    def __init__(self) -> None:
        self._errors: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def record(self, note: Notification) -> None:
        with self._lock:
            errors = self._errors.setdefault(note.yard, {})
            if note.status == "sent":
                errors.pop(note.channel, None)
            elif note.status == "failed":
                errors[note.channel] = (note.error or "failed").split(";")[-1].strip()

    def error(self, yard: str) -> str | None:
        """What is failing in this yard now, e.g. ``push: ntfy: connection refused``."""
        with self._lock:
            errors = self._errors.get(yard)
            return "; ".join(f"{c}: {e}" for c, e in sorted(errors.items())) if errors else None
