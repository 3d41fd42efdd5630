"""When the rain is expected, and what the messages say about it (issue 13).

Whether a rain episode stays raised (raise and clear thresholds) and when the
rain is expected (always the raise thresholds) are two answers of the forecast
rule. These scenarios run whole afternoons on the simulated clock
(``alert_helpers.SimYard``: the real engine, SQLite store and dispatcher; Twilio
and ntfy are fakes that record what they were given). Recipients: Rosa (worker,
SMS), Luis (worker, push), Ana (supervisor, SMS), Carmen (quality, SMS,
English). The south trays are node n2's tray t3; n1's trays are in all day.
"""

from __future__ import annotations

import pytest
from alert_helpers import SimYard, at, yard_fixture  # noqa: F401 (fixture, found by name)

from secadero.server.alerts import messages


def south_trays(yard: SimYard, state: str) -> None:
    yard.nodes["n2"].trays["t3"] = state


def test_a_forecast_shower_with_the_south_trays_out_names_the_forecast_time(
        yard: SimYard) -> None:
    # A shower forecast for 15:00 (80 %), with an hour at 40 % before it: enough to
    # hold an episode (clear threshold 30 %), no reason to expect the rain earlier.
    yard.prob_by_hour = {14: 40, 15: 80}
    yard.at("07:00", lambda: south_trays(yard, "extended"))
    # The 14:15 poll lowers the shower to the clear threshold: the episode holds,
    # the rain is still expected at 15:00, the trays' deadline stays 14:50.
    yard.at("14:15", lambda: yard.prob_by_hour.update({15: 40}))
    yard.at("15:12", yard.rain("n2", True))
    yard.at("15:30", lambda: south_trays(yard, "retracted"))
    yard.at("16:00", yard.rain("n2", False))
    yard.run("17:30")
    everyone = ("Rosa", "Luis", "Ana", "Carmen")
    channel = {"Rosa": "twilio", "Luis": "ntfy", "Ana": "twilio", "Carmen": "twilio"}

    def to(when: str, kind: str, event: str, who: tuple[str, ...] = everyone
           ) -> list[tuple[str, str, str, str, str]]:
        return [(when, name, channel[name], kind, event) for name in who]

    # 15:00 enters the 90-minute look-ahead at 13:31. Nobody answers: three repeats up
    # the chain. The trays are overdue 10 min before the expected rain (14:50), not
    # at the raise; after the expected time the plate is still dry, so 15:05 still
    # names the forecast time. The wet plate at 15:12 upgrades the episode, and the
    # last reminder (15:27) says it rains. Trays in at 15:30 (the switches
    # acknowledge); plates dry from 16:00, 30 min dry and 30 min held: 17:00.
    assert yard.sent == [
        *to("13:31", "rain_forecast", "raise", ("Rosa", "Luis")),
        *to("13:46", "rain_forecast", "repeat", ("Rosa", "Luis", "Ana")),
        *to("14:01", "rain_forecast", "repeat"),
        *to("14:16", "rain_forecast", "repeat"),
        *to("14:50", "trays_still_out", "escalate"),
        *to("15:05", "trays_still_out", "escalate"),
        *to("15:12", "rain_now", "upgrade"),
        *to("15:27", "trays_still_out", "escalate"),
        *to("17:00", "all_clear", "all_clear"),
    ]
    by_time: dict[tuple[str, str], str] = {}
    for (when, name, _, _, _), body in zip(yard.sent, yard.bodies, strict=True):
        by_time.setdefault((when, "en" if name == "Carmen" else "es"), body)
    assert by_time["13:31", "es"] == ("Lluvia en ~90 min (80%) hacia las 15:00. Recoger las "
                                      "bandejas del tendal Norte. Responda OK.")
    assert by_time["13:46", "es"] == ("REPITO: Lluvia en ~75 min (80%) hacia las 15:00. "
                                      "Recoger las bandejas del tendal Norte. Responda OK.")
    assert by_time["14:01", "en"] == ("REMINDER: Rain in ~60 min (80%) around 15:00. Pull in "
                                      "the trays at yard Norte. Reply OK.")
    # After the drop to 40 %: the last expected start and amount, not "now".
    assert by_time["14:16", "es"] == ("REPITO: Lluvia en ~45 min (80%) hacia las 15:00. "
                                      "Recoger las bandejas del tendal Norte. Responda OK.")
    for when in ("14:50", "15:05"):
        assert by_time[when, "es"] == ("URGENTE: siguen afuera bandejas del tendal Norte: "
                                       "n2/t3. Lluvia hacia las 15:00. Recogerlas ya y "
                                       "responder OK.")
        assert by_time[when, "en"] == ("URGENT: trays still out at yard Norte: n2/t3. Rain "
                                       "around 15:00. Pull them in now and reply OK.")
    assert by_time["15:12", "es"] == ("LLUEVE en el tendal Norte (sensor n2) desde las 15:12. "
                                      "Recoger las bandejas YA. Responda OK.")
    assert by_time["15:27", "es"] == ("URGENTE: siguen afuera bandejas del tendal Norte: "
                                      "n2/t3. Lluvia ya. Recogerlas ya y responder OK.")
    assert by_time["15:27", "en"] == ("URGENT: trays still out at yard Norte: n2/t3. Rain "
                                      "now. Pull them in now and reply OK.")
    # Before the plate is wet, no message says the rain is here.
    before_wet = [body for (when, *_), body in zip(yard.sent, yard.bodies, strict=True)
                  if at(when) < at("15:12")]
    assert len(before_wet) == 21
    assert not [b for b in before_wet if "Lluvia ya" in b or "Rain now" in b
                or "LLUEVE" in b or "RAINING" in b]
    assert yard.transitions == [
        ("13:31", "rain_forecast", "raised", "warning"),
        ("15:12", "rain_forecast", "resolved", "critical"),
        ("15:12", "rain_now", "raised", "critical"),
        ("15:30", "rain_now", "acknowledged", "critical"),
        ("17:00", "rain_now", "resolved", "critical"),
    ]
    [episode] = yard.store.history()
    assert (episode.raised_at, episode.acked_by, episode.resolved_at) == (
        at("13:31"), "trays", at("17:00"))
    assert (episode.details["expected_ts"], episode.details["wet_ts"]) == (
        at("15:00"), at("15:12"))


def test_a_forecast_rain_that_is_due_but_not_seen_says_expected_not_now(
        yard: SimYard) -> None:
    # The shower is due from 15:00 (its hour running) and the plates stay dry.
    yard.prob_by_hour = {15: 90, 16: 90}
    yard.at("07:00", lambda: south_trays(yard, "extended"))
    yard.at("15:10", lambda: yard.alerts.acknowledge_phone("+51900000001", yard.now))
    yard.run("15:45")
    # Raised at 13:31; repeats 13:46, 14:01, 14:16; trays overdue at 14:50; Rosa's
    # "OK" at 15:10 stops nothing while the switch says out (15:05, 15:20, then
    # max_repeats). Every message gives the time the rain was expected, 15:00.
    escalations = [(when, body) for (when, name, _, _, event), body
                   in zip(yard.sent, yard.bodies, strict=True)
                   if event == "escalate" and name == "Rosa"]
    assert escalations == [
        (when, "URGENTE: siguen afuera bandejas del tendal Norte: n2/t3. Lluvia hacia las "
               "15:00. Recogerlas ya y responder OK.")
        for when in ("14:50", "15:05", "15:20")]
    assert not [b for b in yard.bodies if "Lluvia ya" in b or "Rain now" in b]
    [episode] = yard.store.history()
    assert (episode.details["expected_ts"], episode.details["start_ts"]) == (
        at("15:00"), at("15:00"))


def test_a_forecast_that_brings_the_rain_forward_to_now_says_expected(yard: SimYard) -> None:
    # The 15:00 poll suddenly gives 90 % for 15:00-16:00: the rain is due at once,
    # but no plate is wet, so the message gives the time, not "ya".
    yard.at("07:00", lambda: south_trays(yard, "extended"))
    yard.at("14:59", lambda: yard.prob_by_hour.update({15: 90}))
    yard.run("15:20")
    assert yard.sent == [
        ("15:00", "Rosa", "twilio", "rain_forecast", "raise"),
        ("15:00", "Luis", "ntfy", "rain_forecast", "raise"),
        # 10 min after the raise, 15 min after the last message: + the supervisor
        ("15:15", "Rosa", "twilio", "trays_still_out", "escalate"),
        ("15:15", "Luis", "ntfy", "trays_still_out", "escalate"),
        ("15:15", "Ana", "twilio", "trays_still_out", "escalate"),
    ]
    rosa = [body for s, body in zip(yard.sent, yard.bodies, strict=True) if s[1] == "Rosa"]
    assert rosa == [
        "Lluvia prevista (90%) hacia las 15:00. Recoger las bandejas del tendal Norte. "
        "Responda OK.",
        "URGENTE: siguen afuera bandejas del tendal Norte: n2/t3. Lluvia hacia las 15:00. "
        "Recogerlas ya y responder OK.",
    ]


@pytest.mark.parametrize(("lead", "es", "en"), [
    (0, "prevista", "expected"), (2.9, "prevista", "expected"), (41, "en ~40 min", "in ~40 min")])
def test_the_expected_phrase_never_says_now(lead: float, es: str, en: str) -> None:
    assert (messages.expected_phrase(lead, "es"), messages.expected_phrase(lead, "en")) == (
        es, en)


def test_the_rain_phrase_says_now_only_when_a_sensor_does() -> None:
    assert [messages.rain_phrase(observed, "15:00", language) for observed in (True, False)
            for language in ("es", "en")] == ["ya", "now", "hacia las 15:00", "around 15:00"]
