"""Whole days at a simulated yard: exactly which messages go to whom, and when.

The clock advances a minute at a time (``alert_helpers.SimYard``); the engine,
its SQLite store and the dispatcher are the real ones; Twilio and ntfy are
fakes that record or refuse; the Gammu modem is a fake too, except on the
internet-down day, where the real notifier queues the SMS with
``gammu-smsd-inject`` into a Gammu dummy-driver outbox. Recipients: Rosa (worker, SMS),
Luis (worker, push), Ana (supervisor, SMS), Carmen (quality, SMS, English),
Tito (technician, SMS). Drying hours 07:00-18:00, America/Lima.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alert_helpers import SimYard, at, hhmm, make_yard_fixture, write_smsdrc, yard_fixture  # noqa: F401 (fixtures, found by name)

from secadero.server.notifiers import Outgoing
from secadero.server.notifiers.gammu import GammuNotifier
from secadero.settings import GammuSettings


def test_a_dry_day_sends_nothing(yard: SimYard) -> None:
    yard.at("07:00", yard.trays("extended"))
    yard.at("17:30", yard.trays("retracted"))
    yard.run("20:00")
    assert yard.sent == []
    assert yard.store.history() == []
    assert yard.alerts.current_alert("norte").state == "clear"


def test_a_forecast_shower_one_warning_then_the_all_clear(yard: SimYard) -> None:
    yard.prob_by_hour = {14: 80, 15: 70}
    yard.at("07:00", yard.trays("extended"))
    yard.at("12:40", yard.trays("retracted"))
    yard.at("14:10", yard.rain("n1", True))
    yard.at("15:05", yard.rain("n1", False))
    yard.run("19:00")
    # 14:00 enters the 90-minute look-ahead at 12:31. The trays are in at 12:40,
    # so the rain at 14:10 needs no second message. 15:00-16:00 is still 70 %:
    # clear from 16:00, held 30 minutes.
    assert yard.sent == [
        ("12:31", "Rosa", "twilio", "rain_forecast", "raise"),
        ("12:31", "Luis", "ntfy", "rain_forecast", "raise"),
        ("16:30", "Rosa", "twilio", "all_clear", "all_clear"),
        ("16:30", "Luis", "ntfy", "all_clear", "all_clear"),
    ]
    assert yard.bodies[0] == ("Lluvia en ~90 min (80%) hacia las 14:00. Recoger las bandejas "
                              "del tendal Norte. Responda OK.")
    assert yard.bodies[2] == ("Tendal Norte: sin lluvia prevista en 2 h y sensores secos. "
                              "Ya pueden sacar las bandejas.")
    # What the wall display's alert measurement receives:
    assert yard.transitions == [
        ("12:31", "rain_forecast", "raised", "warning"),
        ("12:40", "rain_forecast", "acknowledged", "warning"),
        ("14:10", "rain_forecast", "resolved", "critical"),
        ("14:10", "rain_now", "acknowledged", "critical"),
        ("16:30", "rain_now", "resolved", "critical"),
    ]
    [episode] = yard.store.history()
    assert (episode.state, episode.cause, episode.acked_by) == ("resolved", "rain_now", "trays")
    assert episode.acked_at == at("12:40")
    assert episode.resolved_at == at("16:30")


def test_a_shower_nobody_forecast_fires_from_the_plate_at_once(yard: SimYard) -> None:
    yard.at("07:00", yard.trays("extended"))
    yard.at("10:12", yard.rain("n2", True))
    yard.at("10:18", yard.trays("retracted"))
    yard.at("10:40", yard.rain("n2", False))
    yard.run("13:00")
    # Dry 30 min at 11:10, then the all-clear holds 30 min.
    assert yard.sent == [
        ("10:12", "Rosa", "twilio", "rain_now", "raise"),
        ("10:12", "Luis", "ntfy", "rain_now", "raise"),
        ("11:40", "Rosa", "twilio", "all_clear", "all_clear"),
        ("11:40", "Luis", "ntfy", "all_clear", "all_clear"),
    ]
    assert yard.bodies[0] == ("LLUEVE en el tendal Norte (sensor n2) desde las 10:12. Recoger "
                              "las bandejas YA. Responda OK.")


def test_a_probability_flapping_around_the_threshold_is_one_alert(yard: SimYard) -> None:
    # Each forecast poll gives a different probability for 14:00-15:00.
    for when, prob in (("12:00", 58), ("12:30", 62), ("12:45", 57), ("13:00", 61),
                       ("13:15", 20), ("13:30", 62), ("13:45", 59), ("14:15", 45)):
        yard.at(when, lambda p=prob: yard.prob_by_hour.update({14: p}))
    yard.at("07:00", yard.trays("extended"))
    yard.at("12:45", yard.trays("retracted"))
    yard.run("17:00")
    # Raised at 12:31 (62 % in the look-ahead); 57/61/59/45 stay above the 30 % clear
    # threshold; the 20 % poll at 13:15 is clear for only 15 min (< 30 min hold).
    # The shower never comes: clear from 15:00, all-clear at 15:30.
    assert yard.sent == [
        ("12:31", "Rosa", "twilio", "rain_forecast", "raise"),
        ("12:31", "Luis", "ntfy", "rain_forecast", "raise"),
        ("15:30", "Rosa", "twilio", "all_clear", "all_clear"),
        ("15:30", "Luis", "ntfy", "all_clear", "all_clear"),
    ]
    assert len(yard.store.history()) == 1


def test_without_hysteresis_the_same_flapping_would_alert_three_times(
        make_yard: object) -> None:
    """The control for the test above: prove the flapping input really flaps."""
    yard = make_yard(clear_prob_pct=60.0, min_hold_min=0.0)  # type: ignore[operator]
    for when, prob in (("12:00", 58), ("12:30", 62), ("12:45", 57), ("13:00", 61),
                       ("13:15", 20), ("13:30", 62), ("13:45", 59), ("14:15", 45)):
        yard.at(when, lambda p=prob, y=yard: y.prob_by_hour.update({14: p}))
    yard.run("17:00")
    raises = [s for s in yard.sent if s[4] == "raise" and s[1] == "Rosa"]
    assert [s[0] for s in raises] == ["12:31", "13:00", "13:30"]


def test_a_forecast_nobody_answers_is_repeated_then_urgent_before_the_rain(
        yard: SimYard) -> None:
    yard.prob_by_hour = {14: 85}
    yard.at("07:00", yard.trays("extended"))
    yard.at("13:55", yard.trays("retracted"))
    yard.run("14:30")
    rounds = [(t, event, sorted(who for tt, who, _, _, ev in yard.sent
                                if tt == t and ev == event))
              for t, event in dict.fromkeys((s[0], s[4]) for s in yard.sent)]
    assert rounds == [
        ("12:31", "raise", ["Luis", "Rosa"]),
        ("12:46", "repeat", ["Ana", "Luis", "Rosa"]),
        ("13:01", "repeat", ["Ana", "Carmen", "Luis", "Rosa"]),
        ("13:16", "repeat", ["Ana", "Carmen", "Luis", "Rosa"]),
        # 10 min before the forecast rain, the trays are still out
        ("13:50", "escalate", ["Ana", "Carmen", "Luis", "Rosa"]),
    ]


def test_trays_left_out_escalate_until_a_switch_says_they_are_in(yard: SimYard) -> None:
    yard.at("07:00", yard.trays("extended"))
    yard.at("14:00", yard.rain("n1", True))
    # Rosa answers OK, but the switches still say the trays are out: keep escalating.
    yard.at("14:20", lambda: yard.alerts.acknowledge_phone("+51900000001", yard.now))
    yard.at("15:10", yard.trays("retracted"))
    yard.at("15:30", yard.rain("n1", False))
    yard.run("18:00")
    assert yard.sent == [
        ("14:00", "Rosa", "twilio", "rain_now", "raise"),
        ("14:00", "Luis", "ntfy", "rain_now", "raise"),
        # 10 min after the raise and 15 min after the last message: + supervisor
        ("14:15", "Rosa", "twilio", "trays_still_out", "escalate"),
        ("14:15", "Luis", "ntfy", "trays_still_out", "escalate"),
        ("14:15", "Ana", "twilio", "trays_still_out", "escalate"),
        # + quality
        ("14:30", "Rosa", "twilio", "trays_still_out", "escalate"),
        ("14:30", "Luis", "ntfy", "trays_still_out", "escalate"),
        ("14:30", "Ana", "twilio", "trays_still_out", "escalate"),
        ("14:30", "Carmen", "twilio", "trays_still_out", "escalate"),
        # the third and last escalation; the slower reminder would be due at 15:15,
        # but the switches say in at 15:10
        ("14:45", "Rosa", "twilio", "trays_still_out", "escalate"),
        ("14:45", "Luis", "ntfy", "trays_still_out", "escalate"),
        ("14:45", "Ana", "twilio", "trays_still_out", "escalate"),
        ("14:45", "Carmen", "twilio", "trays_still_out", "escalate"),
        # dry from 15:30: 30 min dry + 30 min hold; everyone who was told hears it
        ("16:30", "Rosa", "twilio", "all_clear", "all_clear"),
        ("16:30", "Luis", "ntfy", "all_clear", "all_clear"),
        ("16:30", "Ana", "twilio", "all_clear", "all_clear"),
        ("16:30", "Carmen", "twilio", "all_clear", "all_clear"),
    ]
    assert yard.bodies[2] == ("URGENTE: siguen afuera bandejas del tendal Norte: n1/t1, n1/t2, "
                              "n2/t3. Lluvia ya. Recogerlas ya y responder OK.")
    assert yard.bodies[8] == ("URGENT: trays still out at yard Norte: n1/t1, n1/t2, n2/t3. "
                              "Rain now. Pull them in now and reply OK.")
    [episode] = yard.store.history()
    assert (episode.acked_by, episode.acked_at) == ("+51900000001", at("14:20"))


class RecordingGammu(GammuNotifier):
    """The real Gammu notifier (gammu-smsd-inject into a dummy-driver outbox), recorded."""

    def __init__(self, yard: SimYard, settings: GammuSettings) -> None:
        super().__init__(settings)
        self.yard = yard

    def send(self, message: Outgoing) -> str | None:
        outbox_id = super().send(message)
        self.yard.sent.append((hhmm(self.yard.now), message.recipient, self.name,
                               message.kind, message.event))
        self.yard.bodies.append(message.body)
        return outbox_id


@pytest.mark.skipif(not shutil.which("gammu-smsd-inject"),
                    reason="needs the Debian package gammu-smsd")
def test_the_internet_down_all_afternoon(yard: SimYard, tmp_path: Path) -> None:
    smsdrc = write_smsdrc(tmp_path / "gammu")
    yard.notifiers["gammu"] = RecordingGammu(yard, GammuSettings(smsdrc=smsdrc))
    yard.restart()  # the dispatcher picks up the real modem notifier
    yard.at("07:00", yard.trays("extended"))
    yard.at("11:50", yard.internet(False))
    yard.at("15:00", yard.rain("n2", True))
    yard.at("15:05", yard.trays("retracted"))
    yard.at("15:40", yard.rain("n2", False))
    yard.at("17:00", yard.internet(True))
    yard.run("18:00")
    # Last good forecast 11:45; stale after 90 min -> the technician at 13:16,
    # by SMS through the modem because Twilio is unreachable. The plate still
    # raises the alarm; push cannot leave (logged as failed), and the technician
    # hears that at the next evaluation. The forecast comes back at 17:00 and
    # Tito hears it through Twilio again.
    assert yard.sent == [
        ("13:16", "Tito", "gammu", "forecast_stale", "raise"),
        ("15:00", "Rosa", "gammu", "rain_now", "raise"),
        ("15:01", "Tito", "gammu", "delivery_failed", "raise"),
        ("16:40", "Rosa", "gammu", "all_clear", "all_clear"),
        ("17:00", "Tito", "twilio", "forecast_back", "recovered"),
    ]
    assert yard.bodies[2] == ("Técnico: no salen mensajes de alerta del tendal Norte (push: "
                              "ntfy: connection refused). Revisar internet, saldo y modem.")
    assert yard.bodies[0] == ("Técnico: sin pronostico del tiempo para Norte desde las 11:45 "
                              "(ConnectionError). Alertas de lluvia solo por sensores.")
    failed = [(n.recipient, n.kind, n.status, n.error) for n in yard.log()
              if n.status != "sent"]
    assert failed == [
        ("Luis", "rain_now", "failed", "ntfy: connection refused; ntfy: connection refused"),
        ("Luis", "all_clear", "failed", "ntfy: connection refused; ntfy: connection refused"),
    ]
    sms = [(n.recipient, n.provider, n.error) for n in yard.log() if n.channel == "sms"]
    assert sms[0] == ("Tito", "gammu", "twilio: connection refused")
    # The four SMS really were queued for the modem: gammu-smsd's outbox files.
    outbox = sorted(f.name.split("_")[-2] for f in (tmp_path / "gammu" / "outbox").iterdir())
    assert outbox == ["+51900000001", "+51900000001", "+51900000009", "+51900000009"]


def test_the_technician_hears_when_messages_leave_again(yard: SimYard) -> None:
    yard.at("09:00", lambda: setattr(yard.notifiers["ntfy"], "up", False))
    yard.at("10:00", yard.rain("n1", True))
    yard.at("10:05", yard.trays("retracted"))
    yard.at("10:20", lambda: setattr(yard.notifiers["ntfy"], "up", True))
    yard.at("10:30", yard.rain("n1", False))
    yard.run("11:40")
    # The push of the raise failed; the all-clear push goes through and clears it.
    assert yard.sent == [
        ("10:00", "Rosa", "twilio", "rain_now", "raise"),
        ("10:01", "Tito", "twilio", "delivery_failed", "raise"),
        ("11:30", "Rosa", "twilio", "all_clear", "all_clear"),
        ("11:30", "Luis", "ntfy", "all_clear", "all_clear"),
        ("11:31", "Tito", "twilio", "delivery_back", "recovered"),
    ]
    assert yard.bodies[-1] == "Técnico: los mensajes de alerta del tendal Norte salen de nuevo."


def test_a_restart_mid_episode_neither_forgets_nor_repeats(yard: SimYard) -> None:
    yard.at("07:00", yard.trays("extended"))
    yard.at("14:00", yard.rain("n1", True))
    yard.run("14:05")
    yard.restart()
    yard.run("14:16")
    assert yard.sent == [
        ("14:00", "Rosa", "twilio", "rain_now", "raise"),
        ("14:00", "Luis", "ntfy", "rain_now", "raise"),
        ("14:15", "Rosa", "twilio", "trays_still_out", "escalate"),
        ("14:15", "Luis", "ntfy", "trays_still_out", "escalate"),
        ("14:15", "Ana", "twilio", "trays_still_out", "escalate"),
    ]
    assert len(yard.store.history()) == 1
    assert yard.alerts.current_alert("norte").kind == "rain_now"


def test_pending_notifications_after_a_crash_go_out_once(yard: SimYard) -> None:
    yard.at("07:00", yard.trays("extended"))
    yard.run("13:59")
    # The plate gets wet; the engine decides and the store logs, then the process dies
    # before the dispatcher sends anything.
    yard.rain("n1", True)()
    yard.dispatch_fails = True
    notes = [note for decision in yard.alerts.evaluate(yard.now)
             for note in decision.notifications]
    assert [(n.recipient, n.status) for n in notes] == [("Rosa", "pending"), ("Luis", "pending")]
    yard.restart()
    yard.dispatcher.start()
    try:
        assert yard.dispatcher.resubmit_pending(now=yard.now, max_age_s=3600) == 2
    finally:
        yard.dispatcher.stop()
    assert sorted(s[1] for s in yard.sent) == ["Luis", "Rosa"]
    assert [n.status for n in yard.log()] == ["sent", "sent"]
    yard.run("14:10")  # the engine, reloaded, knows it already told them
    assert len(yard.sent) == 2


def test_rain_at_night_with_trays_in_waits_for_dawn(yard: SimYard) -> None:
    yard.now = at("04:00")
    yard.at("04:30", yard.rain("n1", True))
    yard.at("08:00", yard.rain("n1", False))
    yard.run("10:00")
    # Quiet hours: trays in, nobody woken. At 07:00 it is still raining: tell them.
    assert yard.sent[:2] == [("07:00", "Rosa", "twilio", "rain_now", "raise"),
                             ("07:00", "Luis", "ntfy", "rain_now", "raise")]
    assert yard.bodies[0].endswith("desde las 04:30. Recoger las bandejas YA. Responda OK.")


def test_rain_at_night_with_a_tray_forgotten_out_is_sent(yard: SimYard) -> None:
    yard.now = at("19:00")
    yard.nodes["n2"].trays["t3"] = "extended"
    yard.at("20:00", yard.rain("n1", True))
    yard.run("20:01")
    assert yard.sent == [("20:00", "Rosa", "twilio", "rain_now", "raise"),
                         ("20:00", "Luis", "ntfy", "rain_now", "raise")]


def test_trays_already_in_count_as_the_acknowledgement(yard: SimYard) -> None:
    yard.prob_by_hour = {16: 90}
    yard.run("16:00")
    # No tray switches report extended (all retracted): the trays count as in,
    # so the raise is acknowledged by the switches and nothing repeats.
    assert [s[0] for s in yard.sent] == ["14:31", "14:31"]


def test_rain_at_night_in_a_yard_without_tray_switches_is_sent(yard: SimYard) -> None:
    for sim in yard.nodes.values():
        sim.trays.clear()
    yard.now = at("01:00")
    yard.prob_by_hour = {3: 90}  # a forecast at night wakes nobody ...
    yard.at("03:10", yard.rain("n1", True))  # ... but a wet plate nobody can see the trays of
    yard.run("03:12")
    # The quiet forecast episode was never announced: this is its first message.
    assert yard.sent == [("03:10", "Rosa", "twilio", "rain_now", "raise"),
                         ("03:10", "Luis", "ntfy", "rain_now", "raise")]
    [episode] = yard.store.history()
    assert episode.raised_at == at("01:31")  # the forecast opened it, quietly


def test_unacknowledged_without_tray_switches_repeats_up_the_chain(yard: SimYard) -> None:
    for sim in yard.nodes.values():
        sim.trays.clear()
    yard.prob_by_hour = {16: 90}
    yard.at("15:20", lambda: yard.alerts.acknowledge(1, "api", yard.now))
    yard.run("16:00")
    assert yard.sent == [
        ("14:31", "Rosa", "twilio", "rain_forecast", "raise"),
        ("14:31", "Luis", "ntfy", "rain_forecast", "raise"),
        ("14:46", "Rosa", "twilio", "rain_forecast", "repeat"),
        ("14:46", "Luis", "ntfy", "rain_forecast", "repeat"),
        ("14:46", "Ana", "twilio", "rain_forecast", "repeat"),
        ("15:01", "Rosa", "twilio", "rain_forecast", "repeat"),
        ("15:01", "Luis", "ntfy", "rain_forecast", "repeat"),
        ("15:01", "Ana", "twilio", "rain_forecast", "repeat"),
        ("15:01", "Carmen", "twilio", "rain_forecast", "repeat"),
        ("15:16", "Rosa", "twilio", "rain_forecast", "repeat"),
        ("15:16", "Luis", "ntfy", "rain_forecast", "repeat"),
        ("15:16", "Ana", "twilio", "rain_forecast", "repeat"),
        ("15:16", "Carmen", "twilio", "rain_forecast", "repeat"),
    ]
    assert yard.bodies[2] == ("REPITO: Lluvia en ~75 min (90%) hacia las 16:00. Recoger las "
                              "bandejas del tendal Norte. Responda OK.")
    assert yard.bodies[8] == ("REMINDER: Rain in ~60 min (90%) around 16:00. Pull in the trays "
                              "at yard Norte. Reply OK.")


def test_a_silent_node_pages_the_technician_not_the_yard(yard: SimYard) -> None:
    yard.at("09:00", lambda: setattr(yard.nodes["n2"], "online", False))
    yard.at("10:00", lambda: setattr(yard.nodes["n2"], "online", True))
    yard.run("11:00")
    assert yard.sent == [("09:10", "Tito", "twilio", "node_offline", "raise"),
                         ("10:00", "Tito", "twilio", "node_back", "recovered")]
    assert yard.bodies == [
        "Técnico: el nodo n2 del tendal Norte no responde desde las 08:59. Revisar corriente "
        "y Wi-Fi.",
        "Técnico: el nodo n2 del tendal Norte responde de nuevo (10:00).",
    ]


def test_humidity_rising_fast_at_two_nodes_warns_once(yard: SimYard) -> None:
    def humid(pct: float) -> None:
        for sim in yard.nodes.values():
            sim.humidity_pct = pct
    # Trays out: with every tray in there is nothing to get ready (test_alert_dawn.py).
    yard.at("10:00", yard.trays("extended"))
    for minute, pct in enumerate(range(60, 84, 2)):
        yard.at(f"11:{minute:02d}", lambda p=pct: humid(p))
    yard.run("13:00")
    # 60 -> 74 % by 11:07 is a 14-point rise (< 15); 76 % at 11:08 makes 16.
    assert yard.sent == [("11:08", "Rosa", "twilio", "humidity_surge", "raise"),
                         ("11:08", "Luis", "ntfy", "humidity_surge", "raise")]
    assert yard.bodies[0] == ("Tendal Norte: la humedad sube rapido (76%). Posible lluvia: "
                              "tener listas las bandejas.")


def test_rain_before_the_forecast_time_with_trays_out_upgrades_to_rain_now(
        yard: SimYard) -> None:
    yard.prob_by_hour = {14: 80}
    yard.at("07:00", yard.trays("extended"))
    yard.at("12:50", yard.rain("n1", True))  # earlier than forecast, nobody moved yet
    yard.at("12:55", yard.trays("retracted"))
    yard.run("13:30")
    # Nobody answered in 15 min: a reminder, now also to the supervisor. Then
    # rain_now supersedes rain_forecast: one upgrade message to the same people.
    assert yard.sent == [
        ("12:31", "Rosa", "twilio", "rain_forecast", "raise"),
        ("12:31", "Luis", "ntfy", "rain_forecast", "raise"),
        ("12:46", "Rosa", "twilio", "rain_forecast", "repeat"),
        ("12:46", "Luis", "ntfy", "rain_forecast", "repeat"),
        ("12:46", "Ana", "twilio", "rain_forecast", "repeat"),
        ("12:50", "Rosa", "twilio", "rain_now", "upgrade"),
        ("12:50", "Luis", "ntfy", "rain_now", "upgrade"),
        ("12:50", "Ana", "twilio", "rain_now", "upgrade"),
    ]
    alert = yard.alerts.current_alert("norte")
    assert (alert.state, alert.kind, alert.severity, alert.since) == (
        "raised", "rain_now", "critical", at("12:31"))
