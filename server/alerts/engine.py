"""The episode lifecycle: from what the rules say to who gets which message, and when.

Borrowed from Alertmanager, PagerDuty and ThingsBoard (see docs/alerts.md):

- one open episode per yard and kind (``rain``, ``humidity_surge``,
  ``forecast_stale``; ``node_offline`` per node), raised -> acknowledged ->
  resolved, persisted in SQLite so a restart neither forgets nor repeats;
- the rain episode starts from the forecast (``rain_forecast``) or the
  sensors (``rain_now``); ``rain_now`` supersedes the forecast (inhibition):
  an upgrade is sent only if nobody acknowledged yet or a tray is still out;
- unacknowledged: repeat every ``repeat_interval_min`` (at most
  ``max_repeats``), each repeat one step further along the escalation chain
  (worker -> supervisor -> quality); once trays are overdue, the
  ``trays_still_out`` reminders (their own ``max_repeats``) take over;
- ``trays_still_out``: a tray switch still ``extended`` ``trays_out_after_min``
  after the raise escalates, acknowledged or not, until the switches say the
  trays are in (which also acknowledges the episode);
- quiet hours: outside drying hours a forecast wakes nobody unless a tray is
  out, and a wet plate wakes nobody only if every tray switch says
  ``retracted``; an episode kept quiet is announced at the first evaluation
  in drying hours, if it is still open;
- ``all_clear`` resolves the rain episode (after ``min_hold_min``); the
  all-clear message goes only in drying hours, to everyone who was told;
- technician alerts (``node_offline``, ``forecast_stale``) never go to the
  yard's workers; nor does ``delivery_failed`` (messages to the yard failing
  for good: Twilio refusing, ntfy unreachable, the modem gone).

The engine is driven by ``evaluate(view, forecast, now)``; it keeps the open
episodes in memory (loaded from SQLite at start) so an evaluation that
changes nothing touches no disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields

from secadero.contract import Alert
from secadero.server.alerts import messages, rules
from secadero.server.alerts.rules import YardView
from secadero.server.alerts.store import AlertStore, Episode
from secadero.server.forecast import Forecast, ForecastStatus
from secadero.server.notifiers.notification_log import Notification
from secadero.settings import AlertSettings, RecipientSettings, YardSettings

log = logging.getLogger(__name__)

TECHNICIAN = "technician"


@dataclass(frozen=True, slots=True)
class Transition:
    """An episode changed state: for the ``alert`` measurement (the wall display)."""

    ts: float
    yard: str
    kind: str  # rain_forecast, rain_now, humidity_surge, node_offline ...
    state: str  # raised, acknowledged, resolved
    severity: str
    message: str
    episode: int


class AlertEngine:
    """Episodes and notification decisions for all yards; one instance per server."""

    def __init__(self, store: AlertStore, settings: AlertSettings,
                 yards: Iterable[YardSettings], *, started_at: float,
                 forecast_enabled: bool = True) -> None:
        self.store = store
        self.settings = settings
        self.yards: dict[str, YardSettings] = {y.id: y for y in yards}
        self.started_at = started_at
        # Without providers there is no forecast to go stale: the sensors alone decide.
        self.forecast_enabled = forecast_enabled
        # Told of every raise, acknowledge and resolve (after they are stored).
        self.on_transition: Callable[[Transition], None] | None = None
        self._lock = threading.RLock()
        self._open: dict[tuple[str, str, str], Episode] = {
            (e.yard, e.kind, e.key): e for e in store.active_episodes()
        }
        # Open episode keys per yard: a yard's evaluation must not scan every yard's.
        self._by_yard: dict[str, set[tuple[str, str, str]]] = {}
        for key in self._open:
            self._by_yard.setdefault(key[0], set()).add(key)
        # What each episode looked like when last written: only changes are saved.
        self._saved: dict[int, str] = {e.id or 0: _fingerprint(e) for e in self._open.values()}

    # ------------------------------------------------------------------ API

    def evaluate(self, view: YardView, forecast: ForecastStatus, now: float, *,
                 delivery_error: str | None = None) -> list[Notification]:
        """Run every rule for one yard; return the notifications decided (already logged).

        ``delivery_error``: messages to this yard are failing for good right now
        (``DeliveryHealth``): the technician is told.
        """
        yard = self.yards.get(view.yard)
        if yard is None:
            return []
        drying = rules.in_drying_hours(now, yard.timezone, self.settings)
        with self._lock, _Batch(self.store, self._saved, self.on_transition) as batch:
            self._rain(yard, view, forecast.forecast, now, drying, batch)
            self._humidity(yard, view, now, drying, batch)
            self._nodes(yard, view, now, drying, batch)
            if self.forecast_enabled:
                self._forecast_stale(yard, forecast, now, drying, batch)
            self._delivery(yard, delivery_error, now, drying, batch)
        return [note for _, note in batch.notes]

    @contextlib.contextmanager
    def cycle(self) -> Iterator[None]:
        """Evaluate many yards in one SQLite transaction. Locks in the one order used
        everywhere (engine, then store), so an acknowledge from the API cannot deadlock
        with a running cycle."""
        with self._lock, self.store.transaction():
            yield

    def acknowledge(self, episode_id: int, by: str, now: float) -> Episode | None:
        """A person said "OK": stop repeats. Returns the episode, None if unknown/closed."""
        with self._lock:
            for episode in self._open.values():
                if episode.id == episode_id:
                    if episode.state == "raised":
                        episode.state, episode.acked_at, episode.acked_by = (
                            "acknowledged", now, by)
                        self.store.save_episode(episode)
                        self._saved[episode_id] = _fingerprint(episode)
                        log.info("episode %s acknowledged by %s", episode_id, by)
                        if self.on_transition is not None:
                            self.on_transition(Transition(
                                now, episode.yard, episode.cause, "acknowledged",
                                episode.severity, episode.message, episode_id))
                    return episode
        return None

    def acknowledge_phone(self, phone: str, now: float) -> list[Episode]:
        """An SMS reply "OK"/"SI" from a recipient: acknowledge their yards' open episodes."""
        yards = {y.id for y in self.yards.values()
                 if any(r.phone == phone for r in y.recipients)}
        acked = []
        for episode in list(self._open.values()):
            if episode.yard in yards and episode.kind in ("rain", "humidity_surge"):
                result = self.acknowledge(episode.id or 0, phone, now)
                if result is not None:
                    acked.append(result)
        return acked

    def open_episodes(self) -> list[Episode]:
        return sorted(self._open.values(), key=lambda e: (e.raised_at, e.id or 0))

    def current_alert(self, yard: str) -> Alert:
        """What the yard's retained ``alert`` topic should say now (for the nodes' beacons)."""
        for kind in ("rain", "humidity_surge"):
            episode = self._open.get((yard, kind, ""))
            if episode is not None:
                return Alert(state="raised", kind=episode.cause, severity=episode.severity,
                             message=episode.message, since=episode.raised_at)
        return Alert(state="clear")

    # ------------------------------------------------------------ the rules

    def _rain(self, yard: YardSettings, view: YardView, forecast: Forecast | None, now: float,
              drying: bool, batch: _Batch) -> None:
        s = self.settings
        episode = self._open.get((yard.id, "rain", ""))
        expected = rules.rain_forecast(forecast, now, s, active=episode is not None)
        raining = rules.rain_now(view, now, s)
        if episode is None:
            if raining is None and expected is None:
                return
            episode = self._raise(yard.id, "rain", "",
                                  cause="rain_now" if raining else "rain_forecast",
                                  severity="critical" if raining else "warning", now=now,
                                  batch=batch)
            # Rain supersedes a humidity warning: one alert per episode.
            humidity = self._open.get((yard.id, "humidity_surge", ""))
            if humidity is not None:
                self._resolve(humidity, now, batch, by="superseded by rain")
        elif raining is not None and episode.cause == "rain_forecast":
            episode.cause, episode.severity = "rain_now", "critical"
            episode.upgrade_pending = episode.notify_count > 0
            batch.transition(episode, "rain_forecast", "resolved", now)
            batch.transition(episode, "rain_now", episode.state, now)
        if raining is None and expected is None and rules.all_clear(view, forecast, now, s):
            # Time hysteresis (Prometheus' keep_firing_for): the all-clear must hold for
            # min_hold_min without a break, so a forecast dipping for one poll ends nothing.
            clear_since = episode.details.setdefault("clear_since", now)
            if now - clear_since >= s.min_hold_min * 60:
                if drying and episode.notify_count:
                    self._notify(episode, yard, "all_clear", "all_clear",
                                 self._roles(episode.level), now, batch,
                                 {"hours": f"{s.all_clear_hours:g}"}, count=False)
                self._resolve(episode, now, batch, by="all_clear")
            batch.touch(episode)
            return
        episode.details.pop("clear_since", None)
        if raining is None and expected is None:
            batch.touch(episode)
            return  # not raining, not expected, but not clear long enough either: wait

        if raining is not None:
            start, lead = raining.since_ts, 0.0
            episode.details.update(nodes=list(raining.nodes))
        else:
            assert expected is not None
            start, lead = expected.start_ts, expected.lead_min
            episode.details.update(prob_pct=expected.prob_pct, precip_mm=expected.precip_mm,
                                   provider=expected.provider)
        # Not the lead time: it changes every minute and would rewrite the row each cycle.
        episode.details.update(start_ts=start)
        out_trays = rules.trays_out(view)
        fields = {
            "when_es": messages.when_phrase(lead, "es"),
            "when_en": messages.when_phrase(lead, "en"),
            "amount": messages.amount_phrase(expected.prob_pct if expected else None,
                                             expected.precip_mm if expected else None),
            "start": rules.local_hhmm(start, yard.timezone),
            "nodes": ", ".join(raining.nodes) if raining else "",
            "trays": ", ".join(out_trays),
        }
        if not out_trays and rules.trays_all_in(view) and episode.state == "raised" \
                and episode.notify_count:
            # The switches say the trays are in: that is the acknowledgement that matters.
            episode.state, episode.acked_at, episode.acked_by = "acknowledged", now, "trays"
            batch.transition(episode, episode.cause, "acknowledged", now)
        batch.touch(episode)
        # Quiet hours: nobody is woken for a forecast while no tray is out, nor for rain
        # the switches prove harmless (every tray in). A wet plate in a yard whose trays
        # nobody can see (no switches, or "unknown") is never kept quiet.
        if not drying and not out_trays and (rules.trays_all_in(view)
                                             or episode.cause == "rain_forecast"):
            return  # announced at the first evaluation in drying hours, if still on
        chain_end = max(len(s.escalation) - 1, 0)
        # Trays still out are news K minutes after the raise, but with a forecast far
        # ahead only once the rain is K minutes away: a 90-minute lead is time to act.
        trays_deadline = max(episode.raised_at + s.trays_out_after_min * 60,
                             start - s.trays_out_after_min * 60)
        since_last = now - (episode.last_notified_at or -1e18)
        if episode.notify_count == 0:
            self._notify(episode, yard, "raise", episode.cause, self._roles(0), now, batch, fields)
        elif episode.upgrade_pending:
            episode.upgrade_pending = False
            if episode.state == "raised" or out_trays:
                self._notify(episode, yard, "upgrade", "rain_now",
                             self._roles(episode.level), now, batch, fields)
        elif (out_trays and now >= trays_deadline
              and since_last >= s.repeat_interval_min * 60
              and episode.escalations < s.max_repeats):
            episode.escalations += 1
            episode.level = min(episode.level + 1, chain_end)
            episode.severity = "critical"
            self._notify(episode, yard, "escalate", "trays_still_out",
                         self._roles(episode.level), now, batch, fields)
        elif (episode.state == "raised" and not (out_trays and now >= trays_deadline)
              and since_last >= s.repeat_interval_min * 60
              and episode.repeats < s.max_repeats):
            episode.repeats += 1
            episode.level = min(episode.level + 1, chain_end)
            self._notify(episode, yard, "repeat", episode.cause, self._roles(episode.level),
                         now, batch, fields, repeat=True)

    def _humidity(self, yard: YardSettings, view: YardView, now: float, drying: bool,
                  batch: _Batch) -> None:
        episode = self._open.get((yard.id, "humidity_surge", ""))
        surging = rules.humidity_surge(view, now, self.settings)
        if (yard.id, "rain", "") in self._open:
            return  # inhibited: the rain alert already says it all
        if not surging:
            if episode is not None and now - episode.raised_at >= self.settings.min_hold_min * 60:
                self._resolve(episode, now, batch, by="humidity normal")
            return
        if episode is None:
            episode = self._raise(yard.id, "humidity_surge", "", cause="humidity_surge",
                                  severity="warning", now=now, batch=batch)
        episode.details.update(nodes=list(surging))
        batch.touch(episode)
        if drying and episode.notify_count == 0:
            humidity = max((n.humidity_pct or 0.0) for n in rules.nodes_with(view, surging))
            self._notify(episode, yard, "raise", "humidity_surge", self._roles(0), now, batch,
                         {"humidity": f"{humidity:.0f}"})

    def _nodes(self, yard: YardSettings, view: YardView, now: float, drying: bool,
               batch: _Batch) -> None:
        silent = set(rules.silent_nodes(view, now, self.settings))
        last_seen = {n.node: n.last_seen_ts for n in view.nodes}
        for node in silent:
            episode = self._open.get((yard.id, "node_offline", node))
            if episode is None:
                episode = self._raise(yard.id, "node_offline", node, cause="node_offline",
                                      severity="warning", now=now, batch=batch)
                episode.details["last_seen_ts"] = last_seen.get(node)
                batch.touch(episode)
            if drying and episode.notify_count == 0:
                seen = episode.details.get("last_seen_ts") or episode.raised_at
                self._notify(episode, yard, "raise", "node_offline", (TECHNICIAN,), now, batch,
                             {"node": node, "start": rules.local_hhmm(seen, yard.timezone)})
                batch.touch(episode)
        for key in sorted(self._by_yard.get(yard.id, ())):
            _, kind, node = key
            episode = self._open[key]
            if kind == "node_offline" and node not in silent:
                if drying and episode.notify_count:
                    self._notify(episode, yard, "recovered", "node_back", (TECHNICIAN,), now,
                                 batch, {"node": node,
                                         "start": rules.local_hhmm(now, yard.timezone)},
                                 count=False)
                self._resolve(episode, now, batch, by="node back")

    def _forecast_stale(self, yard: YardSettings, status: ForecastStatus, now: float,
                        drying: bool, batch: _Batch) -> None:
        last_good = status.forecast.fetched_at if status.forecast else None
        age_s = rules.forecast_age_s(last_good, self.started_at, now)
        stale = age_s > self.settings.forecast_stale_min * 60
        episode = self._open.get((yard.id, "forecast_stale", ""))
        if stale:
            if episode is None:
                episode = self._raise(yard.id, "forecast_stale", "", cause="forecast_stale",
                                      severity="warning", now=now, batch=batch)
            episode.details["error"] = status.error
            batch.touch(episode)
            if drying and episode.notify_count == 0:
                since = last_good if last_good is not None else self.started_at
                self._notify(episode, yard, "raise", "forecast_stale", (TECHNICIAN,), now, batch,
                             {"start": rules.local_hhmm(since, yard.timezone),
                              "error": status.error or "?"})
        elif episode is not None:
            if drying and episode.notify_count:
                provider = status.forecast.provider if status.forecast else "?"
                self._notify(episode, yard, "recovered", "forecast_back", (TECHNICIAN,), now,
                             batch, {"provider": provider}, count=False)
            self._resolve(episode, now, batch, by="forecast back")

    def _delivery(self, yard: YardSettings, error: str | None, now: float, drying: bool,
                  batch: _Batch) -> None:
        episode = self._open.get((yard.id, "delivery_failed", ""))
        if error:
            if episode is None:
                episode = self._raise(yard.id, "delivery_failed", "", cause="delivery_failed",
                                      severity="warning", now=now, batch=batch)
            episode.details["error"] = error
            batch.touch(episode)
            if drying and episode.notify_count == 0:
                self._notify(episode, yard, "raise", "delivery_failed", (TECHNICIAN,), now,
                             batch, {"error": error})
        elif episode is not None:
            if drying and episode.notify_count:
                self._notify(episode, yard, "recovered", "delivery_back", (TECHNICIAN,), now,
                             batch, {}, count=False)
            self._resolve(episode, now, batch, by="messages leave again")

    # --------------------------------------------------------------- helpers

    def _roles(self, level: int) -> tuple[str, ...]:
        chain = self.settings.escalation or ("worker",)
        return tuple(chain[: level + 1])

    def _raise(self, yard: str, kind: str, key: str, *, cause: str, severity: str,
               now: float, batch: _Batch) -> Episode:
        episode = Episode(yard=yard, kind=kind, key=key, cause=cause, severity=severity,
                          raised_at=now)
        self._open[(yard, kind, key)] = episode
        self._by_yard.setdefault(yard, set()).add((yard, kind, key))
        batch.touch(episode)
        batch.transition(episode, cause, "raised", now)
        log.info("raised: %s %s %s", yard, kind, key or cause)
        return episode

    def _resolve(self, episode: Episode, now: float, batch: _Batch, *, by: str) -> None:
        episode.state, episode.resolved_at = "resolved", now
        episode.details["resolved_by"] = by
        self._open.pop((episode.yard, episode.kind, episode.key), None)
        self._by_yard.get(episode.yard, set()).discard((episode.yard, episode.kind, episode.key))
        batch.touch(episode)
        batch.transition(episode, episode.cause, "resolved", now)
        log.info("episode %s resolved (%s)", episode.id, by)

    def _notify(self, episode: Episode, yard: YardSettings, event: str, kind: str,
                roles: tuple[str, ...], now: float, batch: _Batch,
                fields: Mapping[str, object], *, repeat: bool = False,
                count: bool = True) -> None:
        recipients = [r for r in yard.recipients if r.role in roles]
        texts: dict[str, messages.Text] = {}
        values = {"yard": yard.name, **fields}
        for recipient in recipients:
            text = texts.get(recipient.language)
            if text is None:
                text = texts[recipient.language] = messages.render(
                    kind, recipient.language, values, repeat=repeat)
            for channel in recipient.channels:
                batch.notes.append((episode, Notification(
                    episode_id=episode.id or 0, yard=yard.id, created_at=now, event=event,
                    kind=kind, recipient=recipient.name, role=recipient.role, channel=channel,
                    language=recipient.language, address=_address(recipient, channel),
                    title=text.title, body=text.body,
                    severity="info" if kind in ("all_clear", "node_back", "forecast_back",
                                                "delivery_back")
                    else episode.severity)))
        batch.touch(episode)
        if count:
            episode.notify_count += 1
            episode.last_notified_at = now
            episode.message = messages.render(kind, "es", values).body
        if not recipients:
            log.warning("yard %s: nobody with role %s to tell about %s", yard.id,
                        "/".join(roles), kind)


_FIELDS = tuple(f.name for f in fields(Episode) if f.name != "details")


def _fingerprint(episode: Episode) -> str:
    """A cheap snapshot of an episode's stored form (dataclasses.asdict deep-copies)."""
    return repr(tuple(getattr(episode, name) for name in _FIELDS)) + json.dumps(
        episode.details, sort_keys=True, default=str)


def _address(recipient: RecipientSettings, channel: str) -> str:
    if channel == "sms":
        return recipient.phone or ""
    if channel == "push":
        return recipient.ntfy_topic or ""
    return recipient.name


class _Batch:
    """The episodes an evaluation touched and the notifications it decided.

    Written at the end in one transaction, and only what changed: an
    evaluation that changes nothing touches no disk (500 yards every cycle).
    """

    def __init__(self, store: AlertStore, saved: dict[int, str],
                 on_transition: Callable[[Transition], None] | None = None) -> None:
        self._store = store
        self._saved = saved
        self._touched: dict[int, Episode] = {}
        self._on_transition = on_transition
        self._transitions: list[tuple[float, Episode, str, str]] = []
        self.notes: list[tuple[Episode, Notification]] = []

    def transition(self, episode: Episode, kind: str, state: str, now: float) -> None:
        self._transitions.append((now, episode, kind, state))

    def touch(self, episode: Episode) -> None:
        self._touched[id(episode)] = episode

    def __enter__(self) -> _Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        dirty = []
        for episode in self._touched.values():
            fingerprint = _fingerprint(episode)
            if episode.id is None or self._saved.get(episode.id) != fingerprint:
                dirty.append((episode, fingerprint))
        if not dirty and not self.notes:
            return
        with self._store.transaction():
            for episode, fingerprint in dirty:
                self._store.save_episode(episode)
                self._saved[episode.id or 0] = fingerprint
            for episode, note in self.notes:
                note.episode_id = episode.id or 0
                self._store.add_notification(note)
        if self._on_transition is not None:
            for ts, episode, kind, state in self._transitions:
                self._on_transition(Transition(ts, episode.yard, kind, state, episode.severity,
                                               episode.message, episode.id or 0))
