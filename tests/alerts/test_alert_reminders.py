"""Reminders that end only when the trays are in (issue 13), on the simulated clock.

``alert_helpers.SimYard``: the real engine, store and dispatcher; Twilio and ntfy are
fakes that record. Recipients: Rosa (worker, SMS), Luis (worker, push), Ana
(supervisor), Carmen (quality, English), Tito (technician). Defaults: repeats every
15 min (3), then the trays_still_out escalations (3), then a slower reminder every
30 min; an OK pauses it 30 min; at most 6 reminders per recipient per hour.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alert_helpers import SimYard, at, make_yard_fixture, yard_fixture  # noqa: F401 (fixtures, found by name)

from secadero.errors import ConfigError
from secadero.settings import load_server_settings

YARD_TEAM = ["Ana", "Carmen", "Luis", "Rosa"]


def rounds(yard: SimYard) -> list[tuple[str, str, str, list[str]]]:
    """The messages as rounds: (time, event, kind, who), in order."""
    keys = dict.fromkeys((t, event, kind) for t, _, _, kind, event in yard.sent)
    return [(t, event, kind, sorted(who for tt, who, _, k, ev in yard.sent
                                    if (tt, ev, k) == (t, event, kind)))
            for t, event, kind in keys]


def south_out(yard: SimYard, state: str) -> Callable[[], None]:
    """The south trays (node n2) only."""
    def action() -> None:
        yard.nodes["n2"].trays["t3"] = state
        yard._event("n2", "tray_extended" if state == "extended" else "tray_retracted", "t3")
    return action


def test_reminders_continue_until_the_switches_say_the_south_trays_are_in(
        yard: SimYard) -> None:
    yard.prob_by_hour = {15: 85, 16: 85}
    yard.at("07:00", yard.trays("extended"))
    yard.at("13:20", lambda: (yard.trays("retracted")(), south_out(yard, "extended")()))
    yard.at("15:10", yard.rain("n1", True))
    yard.at("16:40", south_out(yard, "retracted"))
    yard.run("17:30")
    assert rounds(yard) == [
        ("13:31", "raise", "rain_forecast", ["Luis", "Rosa"]),
        ("13:46", "repeat", "rain_forecast", ["Ana", "Luis", "Rosa"]),
        ("14:01", "repeat", "rain_forecast", YARD_TEAM),
        ("14:16", "repeat", "rain_forecast", YARD_TEAM),
        # 10 min before the forecast 15:00, the south trays still out
        ("14:50", "escalate", "trays_still_out", YARD_TEAM),
        ("15:05", "escalate", "trays_still_out", YARD_TEAM),
        ("15:10", "upgrade", "rain_now", YARD_TEAM),
        ("15:25", "escalate", "trays_still_out", YARD_TEAM),
        # the ladder is done, the switch still says out: every 30 min until it says in
        ("15:55", "reminder", "trays_reminder", YARD_TEAM),
        ("16:25", "reminder", "trays_reminder", YARD_TEAM),
    ]
    first_reminder = yard.sent.index(("15:55", "Rosa", "twilio", "trays_reminder", "reminder"))
    assert yard.bodies[first_reminder] == (
        "RECORDATORIO: sin confirmar adentro bandejas del tendal Norte: n2/t3. Lluvia ya. "
        "Recogerlas y responder OK.")
    # Still raining at 17:30: the episode is open, acknowledged by the switches at 16:40.
    [episode] = yard.store.history()
    assert (episode.state, episode.acked_by, episode.acked_at) == (
        "acknowledged", "trays", at("16:40"))


def test_an_acknowledged_alert_whose_trays_stay_out_is_paused_then_resumed(
        yard: SimYard) -> None:
    yard.prob_by_hour = {14: 85, 15: 85, 16: 85}
    yard.at("07:00", yard.trays("extended"))
    yard.at("14:30", lambda: yard.alerts.acknowledge_phone("+51900000001", yard.now))
    yard.at("16:20", yard.trays("retracted"))
    yard.run("17:00")
    assert rounds(yard) == [
        ("12:31", "raise", "rain_forecast", ["Luis", "Rosa"]),
        ("12:46", "repeat", "rain_forecast", ["Ana", "Luis", "Rosa"]),
        ("13:01", "repeat", "rain_forecast", YARD_TEAM),
        ("13:16", "repeat", "rain_forecast", YARD_TEAM),
        ("13:50", "escalate", "trays_still_out", YARD_TEAM),
        ("14:05", "escalate", "trays_still_out", YARD_TEAM),
        ("14:20", "escalate", "trays_still_out", YARD_TEAM),
        # Rosa's OK at 14:30 pauses the reminder (due 14:50) until 15:00; the trays
        # are still out then, so it resumes, every 30 min, until the switches say in.
        ("15:00", "reminder", "trays_reminder", YARD_TEAM),
        ("15:30", "reminder", "trays_reminder", YARD_TEAM),
        ("16:00", "reminder", "trays_reminder", YARD_TEAM),
    ]
    [episode] = yard.store.history()
    assert (episode.state, episode.acked_by) == ("acknowledged", "+51900000001")


def test_a_later_ok_pauses_the_reminders_again(yard: SimYard) -> None:
    """The episode is acknowledged already (Rosa at 14:30); Ana answers a reminder."""
    yard.prob_by_hour = {14: 85, 15: 85, 16: 85}
    yard.at("07:00", yard.trays("extended"))
    yard.at("14:30", lambda: yard.alerts.acknowledge_phone("+51900000001", yard.now))
    yard.at("15:10", lambda: yard.alerts.acknowledge_phone("+51900000002", yard.now))
    yard.at("16:20", yard.trays("retracted"))
    yard.run("17:00")
    assert [r for r in rounds(yard) if r[1] == "reminder"] == [
        ("15:00", "reminder", "trays_reminder", YARD_TEAM),
        # due 15:30, paused by Ana's OK until 15:40; then every 30 min again
        ("15:40", "reminder", "trays_reminder", YARD_TEAM),
        ("16:10", "reminder", "trays_reminder", YARD_TEAM),
    ]
    [episode] = yard.store.history()
    assert (episode.acked_by, episode.details["paused_by"]) == ("+51900000001",
                                                                "+51900000002")


def test_a_stuck_switch_floods_nobody(make_yard: Callable[..., SimYard]) -> None:
    yard = make_yard(slow_reminder_min=5.0, max_per_recipient_per_hour=6)
    yard.at("07:00", yard.trays("extended"))
    yard.at("09:00", yard.rain("n1", True))
    # The switch of t3 is stuck at "extended"; the rain goes on all morning.
    yard.at("09:20", lambda: (yard.nodes["n1"].trays.update(t1="retracted", t2="retracted"),
                              yard._event("n1", "tray_retracted", "t1"),
                              yard._event("n1", "tray_retracted", "t2")))
    yard.run("11:00")
    rosa = [(t, kind) for t, who, _, kind, _ in yard.sent if who == "Rosa"]
    assert rosa == [
        ("09:00", "rain_now"),
        ("09:15", "trays_still_out"), ("09:30", "trays_still_out"),
        ("09:45", "trays_still_out"),
        # every 5 min after the ladder, but six in the hour since 09:00 by 10:00: the
        # next one when 09:15 leaves the hour, and so on
        ("09:50", "trays_reminder"), ("09:55", "trays_reminder"),
        ("10:00", "trays_reminder"), ("10:15", "trays_reminder"),
        ("10:30", "trays_reminder"), ("10:45", "trays_reminder"),
        ("10:50", "trays_reminder"), ("10:55", "trays_reminder"),
        ("11:00", "trays_reminder"),
    ]
    # Carmen joined at 09:30, so her hour fills later: she got 10:05, Rosa did not.
    carmen = [t for t, who, *_ in yard.sent if who == "Carmen"]
    assert carmen == ["09:30", "09:45", "09:50", "09:55", "10:00", "10:05", "10:30", "10:45",
                      "10:50", "10:55", "11:00"]
    for who in ("Rosa", "Luis", "Ana", "Carmen"):
        times = [hhmm_min(t) for t, w, *_ in yard.sent if w == who]
        assert all(sum(1 for u in times if start <= u < start + 60) <= 6
                   for start in range(9 * 60, 11 * 60))
    # Left out of a round that went to others: Rosa, Luis and Ana at 10:05, Carmen at
    # 10:15 (her hour was full until 09:30 left it).
    [episode] = yard.store.history()
    assert episode.details["capped"] == 3 + 1


def hhmm_min(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def test_an_unknown_switch_is_told_to_the_technician_once(yard: SimYard) -> None:
    yard.at("07:00", yard.trays("extended"))
    yard.at("10:00", yard.rain("n2", True))
    yard.at("10:05", lambda: (yard.trays("retracted")(),
                              yard.nodes["n2"].trays.update(t3="unknown")))
    yard.at("11:30", lambda: yard.nodes["n2"].trays.update(t3="retracted"))
    yard.run("12:00")
    assert [s for s in yard.sent if s[1] == "Tito"] == [
        ("10:05", "Tito", "twilio", "trays_unknown", "notice")]
    tito = yard.sent.index(("10:05", "Tito", "twilio", "trays_unknown", "notice"))
    assert yard.bodies[tito] == ("Técnico: el sensor de bandeja n2/t3 del tendal Norte dice "
                                 "'unknown'. No cuenta como adentro. Revisar el interruptor.")
    # "unknown" is not "in": the workers are still reminded until the switch says in.
    assert [r for r in rounds(yard) if r[3] != ["Tito"]] == [
        ("10:00", "raise", "rain_now", ["Luis", "Rosa"]),
        ("10:15", "repeat", "rain_now", ["Ana", "Luis", "Rosa"]),
        ("10:30", "repeat", "rain_now", YARD_TEAM),
        ("10:45", "repeat", "rain_now", YARD_TEAM),
        ("11:15", "reminder", "trays_reminder", YARD_TEAM),
    ]
    # 11:30: the switch says in, which is the acknowledgement that matters.
    [episode] = yard.store.history()
    assert (episode.state, episode.acked_by, episode.acked_at) == (
        "acknowledged", "trays", at("11:30"))


SERVER = """
[mqtt]
host = "broker.local"

[influxdb]
url = "http://127.0.0.1:8086/"
database = "secadero"

[[yards]]
id = "norte"
name = "Norte"
latitude = -6.57
longitude = -76.14

[alerts]
"""


def test_the_reminder_settings_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(SERVER + "slow_reminder_min = 20\nack_pause_min = 45\n"
                             "max_per_recipient_per_hour = 4\n")
    alerts = load_server_settings(path, env={}).alerts
    assert (alerts.slow_reminder_min, alerts.ack_pause_min,
            alerts.max_per_recipient_per_hour) == (20.0, 45.0, 4)
    path.write_text(SERVER + "slow_reminder_min = 1\nmax_per_recipient_per_hour = 0\n")
    with pytest.raises(ConfigError) as info:
        load_server_settings(path, env={})
    assert info.value.problems == [
        # In the order of the rules (RULE_THRESHOLDS): repeats, then trays_out.
        f"{path}: alerts.max_per_recipient_per_hour: must be at least 1, got 0",
        f"{path}: alerts.slow_reminder_min: must be at least 5, got 1",
    ]
