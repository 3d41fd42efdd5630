"""Humidity at a simulated yard: no beacon at an Amazon dawn, one story when rain follows.

An Amazon dawn brings 94-97 % RH and the dew point within 1 °C of the air
every morning, slowly, as the air cools; that is no sign of rain, and every
node's beacon follows the yard's retained ``alert`` topic (what
``AlertCore.current_alert`` says is what the service publishes there). A fast
rise by day with trays out is a warning; rain after it is the same story: the
rain's episode carries on from the warning and its first message is an
upgrade, not a second new alert.

The clock advances a minute at a time (``alert_helpers.SimYard``); the engine,
its SQLite store and the dispatcher are the real ones; Twilio and ntfy are
fakes that record. Recipients: Rosa (worker, SMS), Luis (worker, push), Ana
(supervisor, SMS). Drying hours 07:00-18:00 unless a test says otherwise,
America/Lima; the forecast is dry (5 % every hour) throughout.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alert_helpers import SimYard, at, hhmm, make_yard_fixture, yard_fixture  # noqa: F401 (fixtures, found by name)

from secadero.contract import Alert
from secadero.server.alerts import rules


def air(yard: SimYard, start: str, end: str, *, rh: tuple[float, float],
        temperature: tuple[float, float], jitter: float = 0.0) -> None:
    """Both nodes' air moving linearly from ``rh[0]``/``temperature[0]`` at ``start`` to the
    second values at ``end``, minute by minute; ``jitter`` alternates +/- on the humidity
    (two sensors never read a smooth line)."""
    first, last = at(start), at(end)
    minutes = round((last - first) / 60)
    for minute in range(minutes + 1):
        share = minute / minutes
        pct = rh[0] + (rh[1] - rh[0]) * share + (jitter if minute % 2 else -jitter)

        def change(pct: float = min(pct, 100.0),
                   celsius: float = temperature[0] + (temperature[1] - temperature[0]) * share
                   ) -> None:
            for sim in yard.nodes.values():
                sim.humidity_pct, sim.temperature_c = pct, celsius
        yard.at(hhmm(first + minute * 60), change)


def watch_alert(yard: SimYard, start: str, end: str) -> list[tuple[str, Alert]]:
    """What the retained ``alert`` topic said after each minute's evaluation, when it changed."""
    seen: list[tuple[str, Alert]] = []

    def look(when: str) -> Callable[[], None]:
        def action() -> None:
            alert = yard.alerts.current_alert("norte")
            if not seen or seen[-1][1] != alert:
                seen.append((when, alert))
        return action
    # An action runs before that minute's evaluation: it sees the previous minute's.
    for minute in range(round((at(end) - at(start)) / 60) + 1):
        when = hhmm(at(start) + minute * 60)
        yard.at(when, look(when))
    return seen


# (RH at 04:00 -> 06:30, air °C 04:00 -> 06:30, jitter): dawns as the nodes saw them.
DAWNS = {
    "slow": ((86.0, 94.0), (24.0, 22.5), 0.0),
    "steep": ((82.0, 97.0), (25.0, 21.5), 0.0),
    "noisy": ((85.0, 96.0), (24.5, 21.0), 1.0),
}


def dawn(yard: SimYard, profile: str) -> None:
    """A dry night's air until 04:00, the dawn to 06:30, the sun drying the air by 09:00."""
    rh, temperature, jitter = DAWNS[profile]
    air(yard, "02:00", "04:00", rh=(80.0, rh[0]), temperature=(26.0, temperature[0]))
    air(yard, "04:00", "06:30", rh=rh, temperature=temperature, jitter=jitter)
    air(yard, "06:30", "09:00", rh=(rh[1], 70.0), temperature=(temperature[1], 29.0))


@pytest.mark.parametrize("profile", sorted(DAWNS))
def test_a_dry_dawn_lights_no_beacon_with_the_trays_out_in_drying_hours(
        make_yard: Callable[..., SimYard], profile: str) -> None:
    """A yard that starts drying at 05:30 and puts its trays out then: only the rule itself
    (a change, not a level) keeps the beacons dark."""
    rh, temperature, _ = DAWNS[profile]
    # The dawn really comes within 1.5 °C of the dew point (the old rule raised on that).
    assert temperature[1] - rules.dew_point_c(temperature[1], rh[1]) <= 1.5
    yard = make_yard(drying_start="05:30")
    yard.now = at("02:00")
    dawn(yard, profile)
    yard.at("05:30", yard.trays("extended"))
    seen = watch_alert(yard, "02:01", "09:00")
    yard.run("09:00")
    assert seen == [("02:01", Alert(state="clear"))]
    assert yard.sent == []
    assert yard.transitions == []
    assert yard.store.history() == []


@pytest.mark.parametrize("profile", sorted(DAWNS))
def test_a_dry_dawn_with_the_trays_in_before_drying_hours_lights_no_beacon(
        yard: SimYard, profile: str) -> None:
    yard.now = at("02:00")
    dawn(yard, profile)
    seen = watch_alert(yard, "02:01", "09:00")
    yard.run("09:00")
    assert seen == [("02:01", Alert(state="clear"))]
    assert yard.sent == []
    assert yard.store.history() == []


def test_a_fast_rise_at_night_with_trays_out_lights_no_beacon(yard: SimYard) -> None:
    """Outside drying hours a humidity warning would tell nobody and light every beacon;
    the trays left out at night are the quality warnings' business (batches.md)."""
    yard.now = at("03:00")
    yard.at("03:00", yard.trays("extended"))
    air(yard, "04:00", "04:10", rh=(70.0, 90.0), temperature=(25.0, 23.0))
    seen = watch_alert(yard, "03:01", "06:00")
    yard.run("06:00")
    assert seen == [("03:01", Alert(state="clear"))]
    assert yard.sent == []
    assert yard.store.history() == []


def test_a_humidity_warning_followed_by_a_wet_plate_is_one_episode(yard: SimYard) -> None:
    yard.at("07:00", yard.trays("extended"))
    # 60 -> 76 % in 8 minutes, the air cooling: a squall line coming.
    air(yard, "13:00", "13:08", rh=(60.0, 76.0), temperature=(31.0, 27.0))
    yard.at("13:30", yard.rain("n1", True))
    yard.at("13:50", yard.trays("retracted"))
    yard.at("14:10", yard.rain("n1", False))
    seen = watch_alert(yard, "12:00", "16:00")
    yard.run("16:00")
    assert yard.sent == [
        ("13:08", "Rosa", "twilio", "humidity_surge", "raise"),
        ("13:08", "Luis", "ntfy", "humidity_surge", "raise"),
        # The rain raises the warning: an upgrade to the same people, no new alert.
        ("13:30", "Rosa", "twilio", "rain_now", "upgrade"),
        ("13:30", "Luis", "ntfy", "rain_now", "upgrade"),
        # Trays still out 15 minutes later: the next step of the chain.
        ("13:45", "Rosa", "twilio", "trays_still_out", "escalate"),
        ("13:45", "Luis", "ntfy", "trays_still_out", "escalate"),
        ("13:45", "Ana", "twilio", "trays_still_out", "escalate"),
        ("15:10", "Rosa", "twilio", "all_clear", "all_clear"),
        ("15:10", "Luis", "ntfy", "all_clear", "all_clear"),
        ("15:10", "Ana", "twilio", "all_clear", "all_clear"),
    ]
    assert yard.bodies[0] == ("Tendal Norte: la humedad sube rapido (76%). Posible lluvia: "
                              "tener listas las bandejas.")
    assert yard.bodies[2] == ("LLUEVE en el tendal Norte (sensor n1) desde las 13:30. "
                              "Recoger las bandejas YA. Responda OK.")
    # The beacons: one story from the warning's start, its severity raised by the rain.
    assert [(when, a.state, a.kind, a.severity, a.since, a.message) for when, a in seen] == [
        ("12:00", "clear", "", "info", None, ""),
        ("13:09", "raised", "humidity_surge", "warning", at("13:08"), yard.bodies[0]),
        ("13:31", "raised", "rain_now", "critical", at("13:08"), yard.bodies[2]),
        ("13:46", "raised", "rain_now", "critical", at("13:08"), yard.bodies[4]),
        ("15:11", "clear", "", "info", None, ""),
    ]
    # The store: one row, the warning raised to rain, with the history of its raises.
    [rain] = yard.store.history()
    assert (rain.kind, rain.cause, rain.severity, rain.raised_at, rain.resolved_at,
            rain.acked_by) == ("rain", "rain_now", "critical", at("13:08"), at("15:10"),
                               "trays")
    assert rain.details["raises"] == [
        {"ts": at("13:08"), "cause": "humidity_surge", "severity": "warning"},
        {"ts": at("13:30"), "cause": "rain_now", "severity": "critical"}]
    # The forecast did not have it (forecast skill: a miss); the warning led the plate.
    assert (rain.details["raised_by"], rain.details["wet_ts"], rain.details["nodes"],
            rain.details["humidity_nodes"]) == (
        "humidity_surge", at("13:30"), ["n1"], ["n1", "n2"])
    # Every message of the story belongs to that one episode.
    assert {n.episode_id for n in yard.log()} == {rain.id}
    assert yard.transitions == [
        ("13:08", "humidity_surge", "raised", "warning"),
        ("13:30", "humidity_surge", "resolved", "critical"),
        ("13:30", "rain_now", "raised", "critical"),
        ("13:50", "rain_now", "acknowledged", "critical"),
        ("15:10", "rain_now", "resolved", "critical"),
    ]


def test_a_humidity_warning_ends_when_every_tray_is_in(yard: SimYard) -> None:
    yard.at("07:00", yard.trays("extended"))
    air(yard, "13:00", "13:08", rh=(60.0, 76.0), temperature=(31.0, 27.0))
    yard.at("13:15", yard.trays("retracted"))
    seen = watch_alert(yard, "12:00", "15:00")
    yard.run("15:00")
    assert yard.sent == [("13:08", "Rosa", "twilio", "humidity_surge", "raise"),
                         ("13:08", "Luis", "ntfy", "humidity_surge", "raise")]
    assert [(when, a.state, a.kind) for when, a in seen] == [
        ("12:00", "clear", ""), ("13:09", "raised", "humidity_surge"), ("13:16", "clear", "")]
    (warning,) = yard.store.history()
    assert (warning.resolved_at, warning.details["resolved_by"]) == (at("13:15"), "trays in")


def test_a_humidity_warning_followed_by_a_forecast_is_one_episode(yard: SimYard) -> None:
    yard.at("07:00", yard.trays("extended"))
    air(yard, "13:00", "13:08", rh=(60.0, 76.0), temperature=(31.0, 27.0))
    # The 13:30 poll has rain for 14:00-15:00.
    yard.at("13:29", lambda: yard.prob_by_hour.update({14: 80.0}))
    yard.at("13:40", yard.trays("retracted"))
    seen = watch_alert(yard, "12:00", "13:45")
    yard.run("13:45")
    assert yard.sent == [
        ("13:08", "Rosa", "twilio", "humidity_surge", "raise"),
        ("13:08", "Luis", "ntfy", "humidity_surge", "raise"),
        ("13:30", "Rosa", "twilio", "rain_forecast", "upgrade"),
        ("13:30", "Luis", "ntfy", "rain_forecast", "upgrade"),
    ]
    assert yard.bodies[2] == ("Lluvia en ~30 min (80%) hacia las 14:00. Recoger las bandejas "
                              "del tendal Norte. Responda OK.")
    assert [(when, a.state, a.kind, a.severity, a.since) for when, a in seen] == [
        ("12:00", "clear", "", "info", None),
        ("13:09", "raised", "humidity_surge", "warning", at("13:08")),
        ("13:31", "raised", "rain_forecast", "warning", at("13:08")),
    ]
    [rain] = yard.store.history()
    assert (rain.kind, rain.state, rain.acked_by, rain.details["raised_by"]) == (
        "rain", "acknowledged", "trays", "humidity_surge")
    assert [(r["ts"], r["cause"], r["severity"]) for r in rain.details["raises"]] == [
        (at("13:08"), "humidity_surge", "warning"), (at("13:30"), "rain_forecast", "warning")]
