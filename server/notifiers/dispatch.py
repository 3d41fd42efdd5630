"""Deliver logged notifications through the notifiers: routing, retries, fallback, the log.

Isolation: each channel (sms, push, webhook) has its own worker thread and
queue, so a push server that hangs for its whole timeout does not hold back
an SMS. Within the SMS channel the route is tried in order (Twilio, then the
Gammu modem): a refused or timed-out Twilio request falls through to the
modem at once, which is how an SMS still leaves with the internet down.
Every attempt ends in the notification log (``status``, ``provider``,
``error``), never in an exception that stops the others.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from secadero.server.alerts.store import AlertStore, Notification
from secadero.server.notifiers import Notifier, NotifierError, Outgoing

log = logging.getLogger(__name__)

AckUrl = Callable[[Notification], "str | None"]


class Dispatcher:
    """Sends notifications and records the outcome; ``deliver`` is synchronous."""

    def __init__(self, store: AlertStore, notifiers: Iterable[Notifier], *,
                 sms_route: Sequence[str] = ("twilio", "gammu"), attempts: int = 3,
                 backoff_s: float = 2.0, ack_url: AckUrl | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 on_done: Callable[[Notification], None] | None = None) -> None:
        self.store = store
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
        self.counters: dict[str, int] = {}
        self._queues: dict[str, queue.Queue[Notification | None]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

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
            ack_url=self._ack_url(note) if self._ack_url else None)
        errors: list[str] = []
        if not route:
            errors.append(f"no notifier configured for channel {note.channel}")
        for attempt in range(self.attempts if route else 0):
            retry = False
            for notifier in route:
                note.attempts += 1
                try:
                    provider_id = notifier.send(outgoing)
                except NotifierError as exc:
                    errors.append(f"{notifier.name}: {exc}")
                    retry |= exc.retryable
                    self._count(f"{notifier.name}_failed")
                    log.warning("notification %s via %s failed: %s", note.id, notifier.name, exc)
                    continue
                except Exception as exc:  # a notifier bug must not silence the others
                    errors.append(f"{notifier.name}: {type(exc).__name__}: {exc}")
                    self._count(f"{notifier.name}_failed")
                    log.exception("notifier %s crashed on notification %s", notifier.name,
                                  note.id)
                    continue
                note.status, note.provider, note.provider_id = "sent", notifier.name, provider_id
                note.sent_at, note.error = self._clock(), "; ".join(errors[-3:]) or None
                self.store.update_notification(note)
                self._count(f"{notifier.name}_sent")
                if self._on_done is not None:
                    self._on_done(note)
                return note
            if not retry or attempt == self.attempts - 1 or self._stopping.is_set():
                break
            self._sleep(self.backoff_s * 2**attempt)
        note.status, note.error = "failed", "; ".join(errors[-4:])[:1000]
        self.store.update_notification(note)
        self._count("failed")
        log.error("notification %s to %s (%s) failed for good: %s", note.id, note.recipient,
                  note.channel, note.error)
        if self._on_done is not None:
            self._on_done(note)
        return note

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ------------------------------------------------------------- threaded

    def start(self) -> None:
        for channel in ("sms", "push", "webhook"):
            q: queue.Queue[Notification | None] = queue.Queue()
            self._queues[channel] = q
            thread = threading.Thread(target=self._worker, args=(q,), daemon=True,
                                      name=f"notify-{channel}")
            thread.start()
            self._threads.append(thread)

    def submit(self, notes: Iterable[Notification]) -> None:
        """Queue notifications on their channel's worker (call ``start`` first)."""
        for note in notes:
            q = self._queues.get(note.channel)
            if q is None:
                self.deliver(note)  # unknown channel: logged as failed at once
            else:
                q.put(note)

    def resume(self, *, max_age_s: float, now: float) -> int:
        """After a restart: deliver what was decided but never sent; expire old ones."""
        count = 0
        for note in self.store.notifications(status="pending"):
            if now - note.created_at > max_age_s:
                note.status, note.error = "failed", "expired: server was down"
                self.store.update_notification(note)
                continue
            self.submit([note])
            count += 1
        return count

    def _worker(self, q: queue.Queue[Notification | None]) -> None:
        while True:
            note = q.get()
            if note is None:
                return
            try:
                self.deliver(note)
            except Exception:
                log.exception("dispatcher worker: notification %s", note.id)

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


def counters_text(counters: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counters.items()))


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
