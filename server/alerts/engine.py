"""The episode lifecycle: from what the rules say to who gets which message, and when.

Borrowed from Alertmanager, PagerDuty and ThingsBoard (see docs/alerts.md):

- one open episode per yard and kind (``rain``, ``humidity_surge``,
  ``forecast_stale``; ``node_offline`` per node), raised -> acknowledged ->
  resolved, persisted in SQLite so a restart neither forgets nor repeats;
- the rain episode starts from the forecast (``rain_forecast``) or the
  sensors (``rain_now``); ``rain_now`` supersedes the forecast (inhibition):
  an upgrade is sent only if nobody acknowledged yet or a tray is still out;
- ``humidity_surge`` warns the workers only in drying hours with a tray out;
  rain after it is the same episode (``_warning_becomes_rain``: its kind,
  cause and severity raised, ``details["raises"]`` the history): one story,
  one row, its next message an upgrade;
- unacknowledged: repeat every ``repeat_interval_min`` (at most
  ``max_repeats``), each repeat one step further along the escalation chain
  (worker -> supervisor -> quality); once trays are overdue, the
  ``trays_still_out`` reminders (their own ``max_repeats``) take over;
- after that ladder, a slower ``trays_reminder`` every ``slow_reminder_min``
  while a switch does not say ``retracted`` (out or ``unknown``), until every
  tray is in or the episode ends; an acknowledgement pauses it
  ``ack_pause_min``; nobody gets more than ``max_per_recipient_per_hour`` of
  an episode's reminders in any hour; an ``unknown`` switch is told to the
  technician once per episode (``trays_unknown``);
- the next channel rides on those trays rounds: after one at the chain's
  last level, SMS too to push-only recipients with a phone; after
  ``voice_after_escalations`` of them, a voice call to those with ``voice``
  in their channels (``_next_channels``), placed again at the next round
  while Twilio says nobody answered, up to ``voice_max_calls``
  (``call_outcome``);
- each yard runs ``[alerts]`` with its own ``[yards.rules]`` laid over it
  (``rules_of``); a rule it switched off raises nothing there and its open
  episodes end silently (``_running``);
- a supervisor's ``close`` silences a rain or humidity episode: no more
  messages, the retained ``alert`` clear, no all-clear; it stays open (so the
  same rain raises nothing new) and resolves when the rain ends;
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
  for good: Twilio refusing, ntfy unreachable, the modem gone);
- ``provider_failing`` (one per forecast provider, even while another covers
  for it) and ``modem_failing`` (Gammu SMSD cannot send: no signal, failures
  rising, the daemon down) are the technician's too: one message when it has
  lasted its threshold, one when it is back; never on the retained topic;
- quality warnings of the open drying batches (``batch_rewetting``,
  ``batch_mould``, ``batch_brittle``, one episode per batch and cause, the
  rules in ``server/batches/warnings.py``) go to the ``quality`` role only,
  one message per episode, never on the yard's retained ``alert`` topic.

Decide, then commit, then act. This module is the *decide* step and nothing
else: ``AlertEngine.decide(view, forecast, episodes, now)`` takes one yard's
view, its forecast status, the delivery state, its open batches, the yard's
open episodes and the clock, and returns a ``Decision``: the new versions of
the episodes that changed, the notifications to send (already rendered) and
the transitions for the wall display. It changes nothing it is given (the
rules work on copies) and touches no store, so anything that raises while
deciding (a rule, a message template) leaves every episode as it was, and
the yard is simply decided again at the next evaluation. ``service.AlertCore`` commits
a decision to SQLite, then swaps it into memory, then hands it on to be
sent and published.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace

from secadero.contract import Alert
from secadero.server.alerts import messages, rules
from secadero.server.alerts.rules import YardView
from secadero.server.alerts.store import Episode
from secadero.server.batches import warnings
from secadero.server.batches.warnings import OpenBatch
from secadero.server.forecast import Forecast, ForecastStatus
from secadero.server.notifiers.notification_log import Notification
from secadero.settings import AlertSettings, BatchSettings, RecipientSettings, YardSettings

log = logging.getLogger(__name__)

TECHNICIAN = "technician"
QUALITY = "quality"
# The quality warnings' episode kinds (keyed by batch); each is also its message template.
BATCH_KINDS = ("batch_rewetting", "batch_mould", "batch_brittle")

# The open episodes of one yard, by (kind, key): key is the node for node_offline, the
# batch for the batch_* kinds, else "".
YardEpisodes = Mapping[tuple[str, str], Episode]

# messages.render's signature: (template kind, language, fields, repeat=) -> Text.
Render = Callable[..., messages.Text]


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


@dataclass(frozen=True, slots=True)
class Decision:
    """What one evaluation (or acknowledge) decided for one yard. Nothing has happened yet.

    ``episodes``: the new versions of the episodes that changed, the decision's
    own copies (``id`` None: raised by this decision). A notification or a
    transition names its episode by its position in ``episodes``
    (``notification_about``, ``transition_about``), because an episode raised
    now has no id until the commit gives it one; ``with_ids`` fills them in.
    Nobody changes a decision's episodes: once committed they are the live ones
    (``AlertCore``), and the next decision starts from copies of them.
    """

    yard: str
    episodes: tuple[Episode, ...] = ()
    notifications: tuple[Notification, ...] = ()
    notification_about: tuple[int, ...] = ()
    transitions: tuple[Transition, ...] = ()
    transition_about: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing changed: nothing to store, send or publish."""
        return not self.episodes

    def with_ids(self, episode_ids: Sequence[int]) -> Decision:
        """The same decision with the episodes' stored ids filled in (``AlertStore.commit``)."""
        episodes = tuple(replace(e, id=i) for e, i in zip(self.episodes, episode_ids,
                                                           strict=True))
        return replace(
            self, episodes=episodes,
            notifications=tuple(replace(n, episode_id=episode_ids[about]) for n, about
                                in zip(self.notifications, self.notification_about,
                                       strict=True)),
            transitions=tuple(replace(t, episode=episode_ids[about]) for t, about
                              in zip(self.transitions, self.transition_about, strict=True)))


def current_alert(episodes: YardEpisodes) -> Alert:
    """What a yard's retained ``alert`` topic should say (for the nodes' beacons)."""
    for kind in ("rain", "humidity_surge"):
        episode = episodes.get((kind, ""))
        # A supervisor's close clears the beacons, though the episode stays open (silent).
        if episode is not None and "closed_at" not in episode.details:
            return Alert(state="raised", kind=episode.cause, severity=episode.severity,
                         message=episode.message, since=episode.raised_at)
    return Alert(state="clear")


class AlertEngine:
    """The rules' lifecycle for all yards: pure, holds no episode; one instance per server.

    ``render``: how a message is worded (``messages.render``); passed in so a
    test can make it fail the way a broken template would. ``batches``: the
    thresholds of the quality warnings (``[batches]``).
    """

    def __init__(self, settings: AlertSettings, yards: Iterable[YardSettings], *,
                 started_at: float, forecast_enabled: bool = True,
                 render: Render = messages.render,
                 batches: BatchSettings | None = None) -> None:
        yards = list(yards)
        self.settings = settings
        # Each yard's rules: [alerts] with the yard's own thresholds laid over it.
        self._yard_settings = {y.id: replace(settings, **dict(y.rules.tuned)) for y in yards}
        self.batch_settings = batches if batches is not None else BatchSettings()
        self.yards: dict[str, YardSettings] = {y.id: y for y in yards}
        self.started_at = started_at
        # Without providers there is no forecast to go stale: the sensors alone decide.
        self.forecast_enabled = forecast_enabled
        self.render = render

    # ------------------------------------------------------------------ API

    def decide(self, view: YardView, forecast: ForecastStatus, episodes: YardEpisodes,
               now: float, *, delivery_error: str | None = None,
               batches: Sequence[OpenBatch] | None = None,
               modem_error: str | None = None) -> Decision:
        """Run every rule for one yard; return what changes (``episodes`` stay untouched).

        ``episodes``: the yard's open episodes. ``delivery_error``: messages to
        this yard are failing for good right now (``DeliveryHealth``): the
        technician is told. ``batches``: the yard's open drying batches, for
        the quality warnings; ``None`` when they are not known (no batch
        records wired, or the store could not be read): their warnings are then
        left as they are, neither raised nor resolved. ``modem_error``: why the
        GSM modem cannot send (``ModemMonitor.problem``), None while it can.
        """
        yard = self.yards.get(view.yard)
        if yard is None:
            return Decision(view.yard)
        drying = rules.in_drying_hours(now, yard.timezone, self.rules_of(yard))
        draft = _Draft(yard.id, episodes)
        if yard.rule_on("rain_forecast") or self._running(yard, "rain_now", now, draft,
                                                          kind="rain"):
            self._rain(yard, view, forecast.forecast, now, drying, draft)
        if self._running(yard, "humidity_surge", now, draft):
            self._humidity(yard, view, now, drying, draft)
        if self._running(yard, "node_offline", now, draft):
            self._nodes(yard, view, now, drying, draft)
        if self.forecast_enabled:
            if self._running(yard, "forecast_stale", now, draft):
                self._forecast_stale(yard, forecast, now, drying, draft)
            if self._running(yard, "provider_failing", now, draft):
                self._providers(yard, forecast, now, drying, draft)
        self._delivery(yard, delivery_error, now, drying, draft)
        self._modem(yard, modem_error, now, drying, draft)
        if batches is not None:
            self._batches(yard, view, batches, now, drying, draft)
        return draft.decision()

    def acknowledge(self, episode: Episode, by: str, now: float) -> Decision:
        """A person said "OK": stop the repeats. Empty if it was not ``raised``, except
        for a rain episode already acknowledged: a later OK (an answer to a
        ``trays_reminder``) pauses its slower reminder again from now."""
        if episode.state == "acknowledged" and episode.kind == "rain":
            draft = _Draft(episode.yard, {(episode.kind, episode.key): episode})
            again = draft.get(episode.kind, episode.key)
            assert again is not None
            again.details.update(paused_at=now, paused_by=by)
            draft.touch(again)
            log.info("episode %s: reminders paused by %s", episode.id, by)
            return draft.decision()
        if episode.state != "raised":
            return Decision(episode.yard)
        draft = _Draft(episode.yard, {(episode.kind, episode.key): episode})
        acked = draft.get(episode.kind, episode.key)
        assert acked is not None
        acked.state, acked.acked_at, acked.acked_by = "acknowledged", now, by
        draft.touch(acked)
        draft.transition(acked, acked.cause, "acknowledged", now)
        log.info("episode %s acknowledged by %s", episode.id, by)
        return draft.decision()

    def close(self, episode: Episode, by: str, now: float) -> Decision:
        """A supervisor says the yard is dealt with: the rain (or humidity) episode goes quiet.

        Reminders stop and the retained ``alert`` clears, but the episode stays open,
        silent, until the rain really ends (``all_clear``, then resolved without an
        all-clear message): closing it is not the rain ending, and a forecast that
        still holds must not raise a new episode at the next evaluation. Empty if it
        is not a yard alert or already closed."""
        if episode.kind not in ("rain", "humidity_surge") or "closed_at" in episode.details:
            return Decision(episode.yard)
        draft = _Draft(episode.yard, {(episode.kind, episode.key): episode})
        closed = draft.get(episode.kind, episode.key)
        assert closed is not None
        closed.details.update(closed_at=now, closed_by=by)
        if closed.state == "raised":
            closed.state, closed.acked_at, closed.acked_by = "acknowledged", now, by
        draft.touch(closed)
        # For the wall display the alert is over; the row itself resolves with the rain.
        draft.transition(closed, closed.cause, "resolved", now)
        log.info("episode %s closed by %s", episode.id, by)
        return draft.decision()

    def rules_of(self, yard: YardSettings) -> AlertSettings:
        """The thresholds ``yard`` runs with: ``[alerts]`` and its ``[yards.rules]``."""
        return self._yard_settings.get(yard.id, self.settings)

    def call_outcome(self, episode: Episode, recipient: str, *, answered: bool, status: str,
                     now: float) -> Decision:
        """Twilio told how a call of this episode ended (its status callback).

        Answered: no more calls in this episode. Not answered (busy, no answer,
        failed, canceled, or a voicemail where Twilio could tell): counted, and,
        unless somebody answered an earlier call, the next trays round calls again,
        up to ``voice_max_calls`` calls per episode; that round goes by SMS too to
        everyone with a phone (``_next_channels``). Empty for an episode that no
        longer calls anyone (closed, or not a rain episode)."""
        if episode.kind != "rain" or "closed_at" in episode.details:
            return Decision(episode.yard)
        draft = _Draft(episode.yard, {(episode.kind, episode.key): episode})
        again = draft.get(episode.kind, episode.key)
        assert again is not None
        outcomes = dict(again.details.get("call_outcomes", {}))
        outcomes[recipient] = [*outcomes.get(recipient, []), status]
        again.details["call_outcomes"] = outcomes
        if answered:
            again.details["call_answered_by"] = recipient
        else:
            again.details["calls_unanswered"] = again.details.get("calls_unanswered", 0) + 1
            yard = self.yards.get(episode.yard)
            limit = (self.rules_of(yard) if yard is not None else self.settings).voice_max_calls
            if ("call_answered_by" not in again.details
                    and again.details.get("calls", 1) < limit):
                # Armed again: the next trays round places the call once more.
                again.details.pop("voice_at", None)
        draft.touch(again)
        log.info("episode %s: call to %s %s", episode.id, recipient, status)
        return draft.decision()

    def yards_of_phone(self, phone: str) -> list[str]:
        """The yards where ``phone`` is a recipient (an SMS reply acknowledges those)."""
        return [y.id for y in self.yards.values() if any(r.phone == phone for r in y.recipients)]

    # ------------------------------------------------------------ the rules

    def _running(self, yard: YardSettings, rule: str, now: float, draft: _Draft, *,
                 kind: str | None = None) -> bool:
        """Whether ``rule`` runs for this yard. Switched off (``[yards.rules.<rule>]
        enabled = false``) it raises nothing, and the episodes of ``kind`` (the rule's
        name unless given) still open from before the change end without a message."""
        if yard.rule_on(rule):
            return True
        for (open_kind, _), episode in sorted(draft.open.items()):
            if open_kind == (kind or rule):
                self._resolve(episode, now, draft, by="switched off for this yard")
        return False

    def _rain(self, yard: YardSettings, view: YardView, forecast: Forecast | None, now: float,
              drying: bool, draft: _Draft) -> None:
        s = self.rules_of(yard)
        episode = draft.get("rain")
        # A rule switched off for this yard is as if it had no evidence: no forecast (the
        # plates alone raise, and end, the rain), or no plates and gauges (the forecast alone).
        if not yard.rule_on("rain_forecast"):
            forecast = None
        if not yard.rule_on("rain_now"):
            view = rules.without_rain_sensors(view)
        trays_rule = yard.rule_on("trays_out")
        # Two answers (rules.ForecastAnswer): whether the forecast keeps the episode
        # raised, and when the rain is expected; the messages and deadlines use only the latter.
        answer = rules.rain_forecast(forecast, now, s, active=episode is not None)
        expected = answer.expected
        raining = rules.rain_now(view, now, s)
        if episode is None:
            if raining is None and not answer.holds:
                return
            cause = "rain_now" if raining else "rain_forecast"
            severity = "critical" if raining else "warning"
            warning = draft.get("humidity_surge")
            if warning is not None:
                episode = self._warning_becomes_rain(warning, cause, severity, now, draft)
            else:
                episode = self._raise("rain", "", cause=cause, severity=severity, now=now,
                                      draft=draft)
                # For the forecast's skill (skill.py): what raised it, as the cause changes.
                episode.details["raised_by"] = episode.cause
                episode.details["raises"] = [_raise_entry(now, cause, severity)]
        elif raining is not None and episode.cause == "rain_forecast":
            episode.cause, episode.severity = "rain_now", "critical"
            episode.upgrade_pending = episode.notify_count > 0
            episode.details["raises"] = [*episode.details.get("raises", []),
                                         _raise_entry(now, "rain_now", "critical")]
            draft.transition(episode, "rain_forecast", "resolved", now)
            draft.transition(episode, "rain_now", episode.state, now)
        if raining is None and not answer.holds and rules.all_clear(view, forecast, now, s):
            # Time hysteresis (Prometheus' keep_firing_for): the all-clear must hold for
            # min_hold_min without a break, so a forecast dipping for one poll ends nothing.
            clear_since = episode.details.setdefault("clear_since", now)
            if now - clear_since >= s.min_hold_min * 60:
                if drying and episode.notify_count and "closed_at" not in episode.details:
                    self._notify(episode, yard, "all_clear", "all_clear",
                                 self._roles(episode.level), now, draft,
                                 {"hours": f"{s.all_clear_hours:g}"}, count=False)
                self._resolve(episode, now, draft, by="all_clear")
            draft.touch(episode)
            return
        episode.details.pop("clear_since", None)
        if raining is None and not answer.holds:
            draft.touch(episode)
            return  # not raining, not expected, but not clear long enough either: wait
        if "closed_at" in episode.details:
            # A supervisor closed it (``close``): nothing more is sent until it resolves.
            draft.touch(episode)
            return

        if expected is not None:
            # The last expected start is kept: while the forecast only holds the episode
            # (an hour at the clear threshold), the rain is still expected then, not now.
            # Once the forecast's rain is due (its hour running: start "now"), it stays due
            # since the time it was first due in that hour, rather than moving with the clock.
            kept = episode.details.get("expected_ts")
            due_since = (kept if kept is not None and expected.hour_start_ts <= kept <= now
                         else expected.start_ts)
            episode.details.update(expected_ts=due_since, prob_pct=expected.prob_pct,
                                   precip_mm=expected.precip_mm, provider=expected.provider)
        if raining is not None:
            start = raining.since_ts
            episode.details.update(nodes=list(raining.nodes))
            # When a sensor first said rain in this episode: the forecast's lead (skill.py).
            episode.details.setdefault("wet_ts", raining.since_ts)
        else:
            # Held by the forecast: its last expected start (an episode the plates raised
            # and the forecast now holds has none: the rain's own start).
            start = episode.details.get("expected_ts", episode.details.get("start_ts", now))
        # Not the lead time: it changes every minute and would rewrite the row each cycle.
        episode.details.update(start_ts=start)
        out_trays = rules.trays_out(view)
        lead = max(start - now, 0.0) / 60
        start_hhmm = rules.local_hhmm(start, yard.timezone)
        fields = {
            "when_es": messages.expected_phrase(lead, "es"),
            "when_en": messages.expected_phrase(lead, "en"),
            # "rain now" only when a plate or gauge says so, else the expected time.
            "rain_es": messages.rain_phrase(raining is not None, start_hhmm, "es"),
            "rain_en": messages.rain_phrase(raining is not None, start_hhmm, "en"),
            "amount": messages.amount_phrase(episode.details.get("prob_pct"),
                                             episode.details.get("precip_mm")),
            "start": start_hhmm,
            "nodes": ", ".join(raining.nodes) if raining else "",
            "trays": ", ".join(out_trays),
            # A yard with areas names them instead ("las bandejas del sector Sur").
            **_place_fields(yard, trays=out_trays, nodes=raining.nodes if raining else ()),
        }
        if not out_trays and rules.trays_all_in(view) and episode.state == "raised" \
                and episode.notify_count:
            # The switches say the trays are in: that is the acknowledgement that matters.
            episode.state, episode.acked_at, episode.acked_by = "acknowledged", now, "trays"
            draft.transition(episode, episode.cause, "acknowledged", now)
        draft.touch(episode)
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
        # A switch that says "unknown" is neither in nor out: the technician hears of it
        # once per episode, and the tray keeps the reminders going (it is not "in").
        unknown = rules.trays_unknown(view)
        if trays_rule and unknown and "unknown_told" not in episode.details:
            episode.details["unknown_told"] = list(unknown)
            self._notify(episode, yard, "notice", "trays_unknown", (TECHNICIAN,), now, draft,
                         {"trays": ", ".join(unknown)}, count=False)
        not_in = rules.trays_not_in(view)
        # An "OK" (the first, or a later one) pauses the slower reminder ack_pause_min,
        # not for ever; the switches' own acknowledgement pauses nothing.
        answered = [t for t in (episode.details.get("paused_at"),
                                episode.acked_at if episode.acked_by != "trays" else None)
                    if t is not None]
        paused = bool(answered) and now < max(answered) + s.ack_pause_min * 60
        # The ladder is done when its escalations are spent, or (no tray says out) when
        # its repeats are spent or somebody answered.
        ladder_done = (episode.escalations >= s.max_repeats if out_trays
                       else episode.state != "raised" or episode.repeats >= s.max_repeats)
        if episode.notify_count == 0:
            self._remind(episode, yard, "raise", episode.cause, self._roles(0), now, draft,
                         fields, capped=False)
        elif episode.upgrade_pending:
            episode.upgrade_pending = False
            if episode.state == "raised" or out_trays:
                self._remind(episode, yard, "upgrade", episode.cause,
                             self._roles(episode.level), now, draft, fields, capped=False)
        elif (trays_rule and out_trays and now >= trays_deadline
              and since_last >= s.repeat_interval_min * 60
              and episode.escalations < s.max_repeats):
            level = min(episode.level + 1, chain_end)
            if self._remind(episode, yard, "escalate", "trays_still_out", self._roles(level),
                            now, draft, fields, channels=self._next_channels(yard, episode, level)):
                episode.escalations += 1
                episode.level = level
                episode.severity = "critical"
        elif (episode.state == "raised" and not (trays_rule and out_trays
                                                 and now >= trays_deadline)
              and since_last >= s.repeat_interval_min * 60
              and episode.repeats < s.max_repeats):
            level = min(episode.level + 1, chain_end)
            if self._remind(episode, yard, "repeat", episode.cause, self._roles(level), now,
                            draft, fields, repeat=True):
                episode.repeats += 1
                episode.level = level
        elif (trays_rule and not_in and now >= trays_deadline and not paused and ladder_done
              and since_last >= s.slow_reminder_min * 60
              # After the ladder: slower, to everyone the ladder reached, until the
              # switches say every tray is in, the rain episode ends or a supervisor
              # closes it (``close``). The next channel (SMS, then a call) rides on these.
              and self._remind(episode, yard, "reminder", "trays_reminder",
                               self._roles(episode.level), now, draft,
                               {**fields, "trays": ", ".join(not_in),
                                **_place_fields(yard, trays=not_in)},
                               channels=self._next_channels(yard, episode, episode.level))):
            episode.details["reminders"] = episode.details.get("reminders", 0) + 1

    def _next_channels(self, yard: YardSettings, episode: Episode, level: int
                       ) -> frozenset[str]:
        """The channels a trays round adds beyond each recipient's own, and notes it.

        The ladder's next channel: once a round has gone at the chain's last level,
        the following rounds also go by SMS to those with a phone who get only push;
        after ``voice_after_escalations`` trays rounds (escalations and slower
        reminders) a voice call goes to those who opted in (``channels = [...,
        "voice"]``), once per episode unless Twilio says nobody answered it
        (``call_outcome`` arms it again). 0 turns the call off."""
        chain_end = max(len(self.settings.escalation) - 1, 0)
        extra: set[str] = set()
        if episode.level == chain_end and level == chain_end and episode.escalations:
            extra.add("sms")
        rounds = episode.escalations + episode.details.get("reminders", 0)
        after = self.rules_of(yard).voice_after_escalations
        if after and rounds >= after and "voice_at" not in episode.details:
            extra.add("voice")
        return frozenset(extra)

    def _remind(self, episode: Episode, yard: YardSettings, event: str, kind: str,
                roles: tuple[str, ...], now: float, draft: _Draft,
                fields: Mapping[str, object], *, repeat: bool = False,
                capped: bool = True, channels: frozenset[str] = frozenset()) -> bool:
        """Send one of the rain episode's messages, at most ``max_per_recipient_per_hour``
        to anyone in any hour when ``capped`` (the raise and the upgrade never are, but
        count). False when the cap holds back everyone: the round waits (the caller
        changes nothing) and goes when the hour allows. A round that goes without
        someone the cap held back says so in the log and counts them
        (``details["capped"]``): they miss that round, not the next one."""
        limit = self.rules_of(yard).max_per_recipient_per_hour
        sent_at = {name: [t for t in times if t > now - 3600]
                   for name, times in episode.details.get("sent_at", {}).items()}
        names = [r.name for r in yard.recipients if r.role in roles]
        held = frozenset(n for n in names if capped and len(sent_at.get(n, ())) >= limit)
        if names and len(held) == len(names):
            return False
        if held:
            episode.details["capped"] = episode.details.get("capped", 0) + len(held)
            log.warning("yard %s: %s not sent %s: %d messages of this episode in the last "
                        "hour", yard.id, ", ".join(sorted(held)), kind, limit)
        for name in names:
            if name not in held:
                sent_at.setdefault(name, []).append(now)
        episode.details["sent_at"] = {n: t for n, t in sorted(sent_at.items()) if t}
        self._notify(episode, yard, event, kind, roles, now, draft, fields, repeat=repeat,
                     exclude=held, channels=channels)
        if "voice" in channels:
            episode.details["voice_at"] = now
            episode.details["calls"] = episode.details.get("calls", 0) + 1
        return True

    def _warning_becomes_rain(self, warning: Episode, cause: str, severity: str, now: float,
                              draft: _Draft) -> Episode:
        """Rain after a humidity warning is the same story, and the same episode: the
        warning's row becomes the rain's (its kind, cause and severity raised), keeping
        its start, who was told and how far up the chain, and the history of its raises
        (``details["raises"]``). The workers' next message is an ``upgrade``, not a
        second new alert; the beacons' topic keeps the warning's start. An "OK" to the
        warning does not answer the rain: the episode is ``raised`` again."""
        del draft.open[warning.kind, warning.key]
        raises = warning.details.get("raises") or [
            _raise_entry(warning.raised_at, warning.cause, warning.severity)]
        if warning.acked_at is not None:
            raises[-1] = {**raises[-1], "acked_at": warning.acked_at,
                          "acked_by": warning.acked_by}
        draft.transition(warning, warning.cause, "resolved", now)
        warning.kind, warning.cause, warning.severity = "rain", cause, severity
        warning.state, warning.acked_at, warning.acked_by = "raised", None, None
        warning.upgrade_pending = warning.notify_count > 0
        # The warning's nodes are not the wet ones.
        warning.details["humidity_nodes"] = warning.details.pop("nodes", [])
        # The forecast did not raise it (skill.py counts it as the forecast's miss).
        warning.details.update(raised_by="humidity_surge",
                               raises=[*raises, _raise_entry(now, cause, severity)])
        draft.open[warning.kind, warning.key] = warning
        draft.touch(warning)
        draft.transition(warning, cause, "raised", now)
        return warning

    def _humidity(self, yard: YardSettings, view: YardView, now: float, drying: bool,
                  draft: _Draft) -> None:
        """``humidity_surge``: a warning to the workers to have the trays ready.

        Only for drying hours with a tray out (or trays nobody can see): at night
        or with every tray in there is nothing to get ready, and the yard's
        retained ``alert`` topic lights every node's beacon."""
        if draft.get("rain") is not None:
            return  # inhibited: the rain alert already says it all
        episode = draft.get("humidity_surge")
        trays_in = rules.trays_all_in(view)
        surging = (rules.humidity_surge(view, now, self.rules_of(yard)) if drying and not trays_in
                   else ())
        if not surging:
            if episode is None:
                return
            if not drying or trays_in:
                self._resolve(episode, now, draft,
                              by="trays in" if trays_in else "drying hours over")
            elif now - episode.raised_at >= self.rules_of(yard).min_hold_min * 60:
                self._resolve(episode, now, draft, by="humidity normal")
            return
        if episode is None:
            episode = self._raise("humidity_surge", "", cause="humidity_surge",
                                  severity="warning", now=now, draft=draft)
        episode.details.update(nodes=list(surging))
        draft.touch(episode)
        if episode.notify_count == 0:
            humidity = max((n.humidity_pct or 0.0) for n in rules.nodes_with(view, surging))
            self._notify(episode, yard, "raise", "humidity_surge", self._roles(0), now, draft,
                         {"humidity": f"{humidity:.0f}"})

    def _nodes(self, yard: YardSettings, view: YardView, now: float, drying: bool,
               draft: _Draft) -> None:
        silent = set(rules.silent_nodes(view, now, self.rules_of(yard)))
        last_seen = {n.node: n.last_seen_ts for n in view.nodes}
        for node in silent:
            episode = draft.get("node_offline", node)
            if episode is None:
                episode = self._raise("node_offline", node, cause="node_offline",
                                      severity="warning", now=now, draft=draft)
                episode.details["last_seen_ts"] = last_seen.get(node)
                draft.touch(episode)
            if drying and episode.notify_count == 0:
                seen = episode.details.get("last_seen_ts") or episode.raised_at
                self._notify(episode, yard, "raise", "node_offline", (TECHNICIAN,), now, draft,
                             {"node": node, "start": rules.local_hhmm(seen, yard.timezone)})
                draft.touch(episode)
        for (kind, node), episode in sorted(draft.open.items()):
            if kind == "node_offline" and node not in silent:
                if drying and episode.notify_count:
                    self._notify(episode, yard, "recovered", "node_back", (TECHNICIAN,), now,
                                 draft, {"node": node,
                                         "start": rules.local_hhmm(now, yard.timezone)},
                                 count=False)
                self._resolve(episode, now, draft, by="node back")

    def _forecast_stale(self, yard: YardSettings, status: ForecastStatus, now: float,
                        drying: bool, draft: _Draft) -> None:
        last_good = status.forecast.fetched_at if status.forecast else None
        age_s = rules.forecast_age_s(last_good, self.started_at, now)
        stale = age_s > self.rules_of(yard).forecast_stale_min * 60
        episode = draft.get("forecast_stale")
        if stale:
            if episode is None:
                episode = self._raise("forecast_stale", "", cause="forecast_stale",
                                      severity="warning", now=now, draft=draft)
            episode.details["error"] = status.error
            draft.touch(episode)
            if drying and episode.notify_count == 0:
                since = last_good if last_good is not None else self.started_at
                self._notify(episode, yard, "raise", "forecast_stale", (TECHNICIAN,), now, draft,
                             {"start": rules.local_hhmm(since, yard.timezone),
                              "error": status.error or "?"})
        elif episode is not None:
            if drying and episode.notify_count:
                provider = status.forecast.provider if status.forecast else "?"
                self._notify(episode, yard, "recovered", "forecast_back", (TECHNICIAN,), now,
                             draft, {"provider": provider}, count=False)
            self._resolve(episode, now, draft, by="forecast back")

    def _delivery(self, yard: YardSettings, error: str | None, now: float, drying: bool,
                  draft: _Draft) -> None:
        episode = draft.get("delivery_failed")
        if error:
            if episode is None:
                episode = self._raise("delivery_failed", "", cause="delivery_failed",
                                      severity="warning", now=now, draft=draft)
            episode.details["error"] = error
            draft.touch(episode)
            if drying and episode.notify_count == 0:
                self._notify(episode, yard, "raise", "delivery_failed", (TECHNICIAN,), now,
                             draft, {"error": error})
        elif episode is not None:
            if drying and episode.notify_count:
                self._notify(episode, yard, "recovered", "delivery_back", (TECHNICIAN,), now,
                             draft, {}, count=False)
            self._resolve(episode, now, draft, by="messages leave again")

    # ------------------------------------------- the forecast providers, the modem

    def _providers(self, yard: YardSettings, status: ForecastStatus, now: float, drying: bool,
                   draft: _Draft) -> None:
        """One ``provider_failing`` episode per provider failing for ``provider_failing_min``,
        told whether or not another provider covers for it (then the forecast is fine and
        ``forecast_stale`` says nothing), and told again when that provider answers.

        An open episode stays open while its provider keeps failing, however short the
        run the poller has seen (after a restart it starts counting again), and while
        nothing is known of it (a restarted poller that has not needed to try it)."""
        states = {p.provider: p for p in status.providers}
        for provider, state in sorted(states.items()):
            episode = draft.get("provider_failing", provider)
            if state.failing_since is None:
                if episode is not None and state.last_ok_at is not None:
                    if drying and episode.notify_count:
                        self._notify(episode, yard, "recovered", "provider_back",
                                     (TECHNICIAN,), now, draft, {"provider": provider},
                                     count=False)
                    self._resolve(episode, now, draft, by="provider answers")
                continue
            if episode is None:
                if now - state.failing_since < self.rules_of(yard).provider_failing_min * 60:
                    continue
                episode = self._raise("provider_failing", provider, cause="provider_failing",
                                      severity="warning", now=now, draft=draft)
                episode.details["failing_since"] = state.failing_since
            if episode.details.get("error") != state.error:
                episode.details["error"] = state.error
                draft.touch(episode)
            if drying and episode.notify_count == 0:
                since = episode.details.get("failing_since") or state.failing_since
                self._notify(episode, yard, "raise", "provider_failing", (TECHNICIAN,), now,
                             draft, {"provider": provider,
                                     "start": rules.local_hhmm(since, yard.timezone),
                                     "error": state.error or "?"})
        if not states:
            return  # not polled yet since the start: nothing is known about any provider
        for (kind, provider), episode in sorted(draft.open.items()):
            if kind == "provider_failing" and provider not in states:
                self._resolve(episode, now, draft, by="provider no longer configured")

    def _modem(self, yard: YardSettings, error: str | None, now: float, drying: bool,
               draft: _Draft) -> None:
        """``modem_failing``: the GSM modem cannot send (``ModemMonitor.problem``)."""
        episode = draft.get("modem_failing")
        if error:
            if episode is None:
                episode = self._raise("modem_failing", "", cause="modem_failing",
                                      severity="warning", now=now, draft=draft)
            if episode.details.get("error") != error:
                episode.details["error"] = error
                draft.touch(episode)
            if drying and episode.notify_count == 0:
                self._notify(episode, yard, "raise", "modem_failing", (TECHNICIAN,), now,
                             draft, {"error": error})
        elif episode is not None:
            if drying and episode.notify_count:
                self._notify(episode, yard, "recovered", "modem_back", (TECHNICIAN,), now,
                             draft, {}, count=False)
            self._resolve(episode, now, draft, by="modem sends again")

    # ------------------------------------------------- the quality warnings

    def _batches(self, yard: YardSettings, view: YardView, batches: Sequence[OpenBatch],
                 now: float, drying: bool, draft: _Draft) -> None:
        """The quality warnings of the yard's open batches (``server/batches/warnings.py``).

        Each cause of each batch is its own episode (key: the batch), told once
        to the quality role and resolved when its cause ends, or when the batch
        ends. Mould risk and brittle beans wait for the drying hours (nobody
        acts on them at night); trays out at night are news at night.
        """
        open_ids: set[str] = set()
        for batch in sorted(batches, key=lambda b: b.id):
            if batch.yard != yard.id or batch.id in open_ids:
                continue
            open_ids.add(batch.id)
            self._rewetting(yard, batch, view, now, drying, draft)
            self._mould(yard, batch, now, drying, draft)
            self._brittle(yard, batch, now, drying, draft)
        for (kind, key), episode in sorted(draft.open.items()):
            if kind in BATCH_KINDS and key not in open_ids:
                self._resolve(episode, now, draft, by="batch ended")

    def _rewetting(self, yard: YardSettings, batch: OpenBatch, view: YardView, now: float,
                   drying: bool, draft: _Draft) -> None:
        episode = draft.get("batch_rewetting", batch.id)
        found = warnings.rewetting(batch, view, self.batch_settings, drying=drying)
        if found is None:
            if episode is not None:
                # Held like the all-clear: humidity flapping around the threshold, or the
                # trays in for ten minutes and out again, is still the same night.
                clear_since = episode.details.setdefault("clear_since", now)
                if now - clear_since >= self.rules_of(yard).min_hold_min * 60:
                    self._resolve(episode, now, draft, by="trays in, air drier or day")
                draft.touch(episode)
            return
        if episode is None:
            episode = self._raise("batch_rewetting", batch.id, cause="batch_rewetting",
                                  severity="warning", now=now, draft=draft)
            episode.details["humidity_pct"] = found.humidity_pct
        episode.details.pop("clear_since", None)
        # The trays, not the humidity: that changes every minute and would rewrite the row.
        episode.details["trays"] = list(found.trays)
        draft.touch(episode)
        if episode.notify_count == 0:
            self._notify(episode, yard, "raise", "batch_rewetting", (QUALITY,), now, draft,
                         {"batch": batch.id, "humidity": f"{found.humidity_pct:.0f}",
                          "trays": ", ".join(found.trays)})

    def _mould(self, yard: YardSettings, batch: OpenBatch, now: float, drying: bool,
               draft: _Draft) -> None:
        s = self.batch_settings
        episode = draft.get("batch_mould", batch.id)
        found = warnings.mould_risk(batch, now, s)
        if found is None:
            if episode is not None:
                self._resolve(episode, now, draft, by="moisture reached")
            return
        if episode is None:
            episode = self._raise("batch_mould", batch.id, cause="batch_mould",
                                  severity="warning", now=now, draft=draft)
            episode.details["started_at"] = batch.started_at
        if drying and episode.notify_count == 0:
            self._notify(episode, yard, "raise", "batch_mould", (QUALITY,), now, draft,
                         {"batch": batch.id, "days": f"{int(found.age_days)}",
                          "target": f"{s.mould_moisture_pct:g}",
                          "moisture_es": messages.moisture_phrase(found.last_moisture_pct,
                                                                  "es"),
                          "moisture_en": messages.moisture_phrase(found.last_moisture_pct,
                                                                  "en")})

    def _brittle(self, yard: YardSettings, batch: OpenBatch, now: float, drying: bool,
                 draft: _Draft) -> None:
        s = self.batch_settings
        episode = draft.get("batch_brittle", batch.id)
        found = warnings.brittle(batch, s)
        if found is None:
            if episode is not None:
                self._resolve(episode, now, draft, by="reading at or above the limit")
            return
        if episode is None:
            episode = self._raise("batch_brittle", batch.id, cause="batch_brittle",
                                  severity="warning", now=now, draft=draft)
            episode.details.update(moisture_pct=found.moisture_pct, reading_ts=found.ts)
        if drying and episode.notify_count == 0:
            self._notify(episode, yard, "raise", "batch_brittle", (QUALITY,), now, draft,
                         {"batch": batch.id, "moisture": f"{found.moisture_pct:.1f}",
                          "limit": f"{s.brittle_moisture_pct:g}"})

    # --------------------------------------------------------------- helpers

    def _roles(self, level: int) -> tuple[str, ...]:
        chain = self.settings.escalation or ("worker",)
        return tuple(chain[: level + 1])

    def _raise(self, kind: str, key: str, *, cause: str, severity: str, now: float,
               draft: _Draft) -> Episode:
        episode = Episode(yard=draft.yard, kind=kind, key=key, cause=cause, severity=severity,
                          raised_at=now)
        draft.open[(kind, key)] = episode
        draft.touch(episode)
        draft.transition(episode, cause, "raised", now)
        log.debug("deciding to raise: %s %s %s", draft.yard, kind, key or cause)
        return episode

    def _resolve(self, episode: Episode, now: float, draft: _Draft, *, by: str) -> None:
        episode.state, episode.resolved_at = "resolved", now
        episode.details["resolved_by"] = by
        draft.open.pop((episode.kind, episode.key), None)
        draft.touch(episode)
        draft.transition(episode, episode.cause, "resolved", now)

    def _notify(self, episode: Episode, yard: YardSettings, event: str, kind: str,
                roles: tuple[str, ...], now: float, draft: _Draft,
                fields: Mapping[str, object], *, repeat: bool = False,
                count: bool = True, exclude: frozenset[str] = frozenset(),
                channels: frozenset[str] = frozenset()) -> None:
        """Render ``kind`` once per language and note one notification per recipient and
        channel. A voice call goes only when ``channels`` asks for it (the ladder's last
        step), never with every message; ``channels`` may add ``sms`` too."""
        recipients = [r for r in yard.recipients if r.role in roles and r.name not in exclude]
        texts: dict[str, messages.Text] = {}
        values = {"yard": yard.name, **fields}
        for recipient in recipients:
            text = texts.get(recipient.language)
            if text is None:
                text = texts[recipient.language] = self.render(
                    kind, recipient.language, values, repeat=repeat)
            for channel in _channels(recipient, channels):
                draft.notes.append((episode, Notification(
                    episode_id=episode.id or 0, yard=yard.id, created_at=now, event=event,
                    kind=kind, recipient=recipient.name, role=recipient.role, channel=channel,
                    language=recipient.language, address=_address(recipient, channel),
                    title=text.title, body=text.body,
                    severity="info" if kind in ("all_clear", "node_back", "forecast_back",
                                                "delivery_back", "provider_back",
                                                "modem_back")
                    else episode.severity)))
        draft.touch(episode)
        if count:
            episode.notify_count += 1
            episode.last_notified_at = now
            episode.message = self.render(kind, "es", values).body
        if not recipients:
            log.warning("yard %s: nobody with role %s to tell about %s", yard.id,
                        "/".join(roles), kind)


_FIELDS = tuple(f.name for f in fields(Episode) if f.name != "details")


def _place_fields(yard: YardSettings, *, trays: Sequence[str] = (),
                  nodes: Sequence[str] = ()) -> dict[str, str]:
    """The message fields naming the areas of these trays (``areas_*``) and nodes
    (``wet_*``); empty strings for a yard without areas (the plain templates)."""
    tray_areas = yard.place_names(trays=trays)
    node_areas = yard.place_names(nodes=nodes)
    return {f"{field}_{language}": messages.areas_phrase(names, language)
            for field, names in (("areas", tray_areas), ("wet", node_areas))
            for language in ("es", "en")}


def _raise_entry(ts: float, cause: str, severity: str) -> dict[str, object]:
    """One step of an episode's history of raises (``details["raises"]``)."""
    return {"ts": ts, "cause": cause, "severity": severity}


def _fingerprint(episode: Episode) -> str:
    """A cheap snapshot of an episode's stored form (dataclasses.asdict deep-copies)."""
    return repr(tuple(getattr(episode, name) for name in _FIELDS)) + json.dumps(
        episode.details, sort_keys=True, default=str)


def _copy(episode: Episode) -> Episode:
    """A copy the rules may change, ``details`` included. One level is enough: the rules
    replace a detail's value (``details["nodes"] = [...]``), never change one in place."""
    return replace(episode, details=dict(episode.details))


def _channels(recipient: RecipientSettings, extra: frozenset[str]) -> list[str]:
    """The recipient's channels for one message: their own without ``voice``, then the
    ladder's ``extra`` ones they can take (sms with a phone; voice if they opted in)."""
    own = [c for c in recipient.channels if c != "voice"]
    if "sms" in extra and "sms" not in own and recipient.phone:
        own.append("sms")
    if "voice" in extra and "voice" in recipient.channels and recipient.phone:
        own.append("voice")
    return own


def _address(recipient: RecipientSettings, channel: str) -> str:
    if channel in ("sms", "voice"):
        return recipient.phone or ""
    if channel == "push":
        return recipient.ntfy_topic or ""
    return recipient.name


class _Draft:
    """One yard's decision while the rules make it: copies of the yard's open episodes.

    The rules change these copies freely (that keeps them readable);
    ``decision()`` keeps only what really changed: an evaluation that changes
    nothing yields an empty decision and touches no disk (500 yards every cycle).
    The copies are made up front, not on first write, because a yard has
    zero to three open episodes.
    """

    def __init__(self, yard: str, episodes: YardEpisodes) -> None:
        self.yard = yard
        # By id: an episode may change its kind (a humidity warning that becomes rain).
        self._before = {e.id: e for e in episodes.values()}
        self.open: dict[tuple[str, str], Episode] = {
            key: _copy(e) for key, e in episodes.items()}
        self._touched: dict[int, Episode] = {}
        self._transitions: list[tuple[float, Episode, str, str]] = []
        self.notes: list[tuple[Episode, Notification]] = []

    def get(self, kind: str, key: str = "") -> Episode | None:
        return self.open.get((kind, key))

    def transition(self, episode: Episode, kind: str, state: str, now: float) -> None:
        self._transitions.append((now, episode, kind, state))

    def touch(self, episode: Episode) -> None:
        self._touched[id(episode)] = episode

    def decision(self) -> Decision:
        changed = [episode for episode in self._touched.values()
                   if episode.id is None
                   or _fingerprint(self._before[episode.id]) != _fingerprint(episode)]
        if not changed:
            # A notification or a transition always changes its episode (notify_count,
            # state), so nothing is lost here.
            return Decision(self.yard)
        position = {id(episode): index for index, episode in enumerate(changed)}
        return Decision(
            yard=self.yard, episodes=tuple(changed),
            notifications=tuple(note for _, note in self.notes),
            notification_about=tuple(position[id(episode)] for episode, _ in self.notes),
            # The transition carries the episode's final severity and message, as the
            # wall display shows the episode after this evaluation.
            transitions=tuple(Transition(ts, self.yard, kind, state, episode.severity,
                                         episode.message, episode.id or 0)
                              for ts, episode, kind, state in self._transitions),
            transition_about=tuple(position[id(episode)]
                                   for _, episode, _, _ in self._transitions))
