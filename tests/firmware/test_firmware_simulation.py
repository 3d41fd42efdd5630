"""The simulated yard: deterministic weather, lead-in humidity, plate, gauge, workers."""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory

from secadero.firmware.simulation import SimulatedDHT, SimulatedYard, WeatherModel, YardPins

START_S = 1_780_000_000.0


def test_same_seed_same_weather_whatever_order_it_is_asked_in() -> None:
    a = WeatherModel(5, start_s=START_S)
    b = WeatherModel(5, start_s=START_S)
    late = START_S + 3 * 86400
    # b is asked about a late time first; the showers must not depend on that.
    assert b.climate(late) == a.climate(late)
    assert [s.start_s for s in a.showers_until(late)] == [s.start_s for s in
                                                          b.showers_until(late)]
    assert WeatherModel(6, start_s=START_S).showers_until(late) != a.showers_until(late)


def test_humidity_climbs_before_a_shower_and_it_rains_during_it() -> None:
    model = WeatherModel(1, start_s=START_S, first_shower_after_s=7200)
    shower = model.showers_until(START_S + 7200)[0]
    assert shower.start_s == START_S + 7200
    before = model.climate(shower.start_s - shower.lead_in_s - 60)[1]
    lead_in = model.climate(shower.start_s - 60)[1]
    assert lead_in > before + 5
    assert not model.is_raining(shower.start_s - 1)
    assert model.is_raining(shower.start_s + 1)
    assert model.rain_rate_mm_h(shower.start_s + 1) == shower.intensity_mm_h
    assert not model.is_raining(shower.end_s + 1)


def test_a_day_has_a_warm_afternoon_and_a_humid_night() -> None:
    model = WeatherModel(1, start_s=START_S, first_shower_after_s=10 * 86400)
    day = START_S - START_S % 86400
    afternoon = model.climate(day + (15 + 5) * 3600)  # 15 h in Lima (UTC-5)
    dawn = model.climate(day + (3 + 5) * 3600)
    assert afternoon[0] > dawn[0] + 8
    assert dawn[1] > afternoon[1] + 20


def test_yard_wets_plate_tips_gauge_and_workers_pull_trays_in() -> None:
    factory = MockFactory()
    mono = [0.0]
    model = WeatherModel(1, start_s=START_S, first_shower_after_s=600)
    pins = YardPins(rain_plate=17, gauge=27, trays={"t1": (5, 6), "t2": (12, None)})
    yard = SimulatedYard(model, factory, pins, speed=60.0, reaction_s=300, travel_s=60,
                         monotonic=lambda: mono[0])
    assert factory.pin(17).state is True          # dry (active low)
    assert factory.pin(6).state is False          # t1 open-end switch pressed: extended
    assert factory.pin(5).state is True
    shower = model.showers_until(START_S + 600)[0]
    step_s = 0.5
    saw_moving = False
    while mono[0] * 60 < (shower.start_s - START_S) + 300 + 120:
        mono[0] += step_s
        yard.step()
        if model.is_raining(yard.sim_time()):
            assert factory.pin(17).state is False  # plate wet
        if factory.pin(5).state and factory.pin(6).state:
            saw_moving = True
    assert yard.tips > 0
    assert saw_moving
    assert factory.pin(5).state is False          # t1 sheltered switch pressed
    assert factory.pin(12).state is False         # t2 too
    yard.close()


def test_simulated_dht_follows_the_model_and_fails_sometimes() -> None:
    model = WeatherModel(1, start_s=START_S)
    dht = SimulatedDHT(model, lambda: START_S + 100, seed=1, failure_rate=0.2)
    good, failed = [], 0
    for _ in range(200):
        try:
            good.append(dht.read())
        except RuntimeError as exc:
            assert "Try again" in str(exc) or "PulseIn" in str(exc)
            failed += 1
    expected_t, expected_h = model.climate(START_S + 100)
    assert 20 <= failed <= 60
    assert all(abs(t - expected_t) < 1 and abs(h - expected_h) < 2 for t, h in good)
