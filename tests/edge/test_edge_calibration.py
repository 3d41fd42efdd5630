"""The two-point salt test: reference table, settling from the readings, the fit, the node.

A simulated DHT22 in a salt jar (``firmware.simulation.SaltJarDHT``) with a
known gain and offset error stands for the sensor; the clock is a fake that
moves only when the procedure waits, so an hour in a jar takes milliseconds.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from node_helpers import mock_hardware, write_node_config

from secadero import contract
from secadero.devservices import free_port
from secadero.edge.agent import NodeAgent
from secadero.edge.calibration import (
    BadCalibrationFile,
    CalibrationError,
    CalibrationPoint,
    HumidityCorrection,
    SaltTest,
    StabilityWatch,
    reference_humidity_pct,
)
from secadero.firmware.dht import DHT22Sensor, Reading
from secadero.firmware.simulation import SaltJarDHT
from secadero.settings import load_node_settings

START_S = 1_790_000_000.0


class FakeClock:
    """Time moves only when the code under test waits."""

    def __init__(self) -> None:
        self.now_s = START_S
        self.waits = 0

    def now(self) -> float:
        return self.now_s

    def wait(self, seconds: float) -> None:
        self.waits += 1
        self.now_s += seconds


def test_reference_table_is_greenspans_and_interpolates_between_rows() -> None:
    assert reference_humidity_pct("nacl", 25.0) == 75.3
    assert reference_humidity_pct("mgcl2", 15.0) == 33.3
    assert reference_humidity_pct("mgcl2", 35.0) == 32.1
    assert reference_humidity_pct("nacl", 27.5) == pytest.approx(75.2)
    with pytest.raises(CalibrationError, match="covers 15-35 °C"):
        reference_humidity_pct("nacl", 38.0)


def reading(humidity_pct: float, temperature_c: float = 25.0) -> Reading:
    return Reading(temperature_c=temperature_c, humidity_pct=humidity_pct, frames=1)


def test_stability_needs_a_full_window_of_still_readings() -> None:
    watch = StabilityWatch(window_s=600, band_pct=0.6, drift_pct=0.3, min_readings=10)
    # Falling from 60 % toward 33 %: not settled while it still moves.
    humidity = 60.0
    for i in range(400):
        humidity = 33.0 + (humidity - 33.0) * 0.97
        settled = watch.add(i * 10.0, reading(humidity))
        if settled is not None:
            break
    assert settled is not None
    # Settled only once the window's readings stay within the band: about 33.2 %.
    assert settled.humidity_pct == pytest.approx(33.0, abs=0.3)
    # Now still: settled once a whole window holds still, not before.
    still = StabilityWatch(window_s=600, band_pct=0.6, drift_pct=0.3, min_readings=10)
    results = [still.add(i * 10.0, reading(33.0 + 0.1 * (i % 2))) for i in range(61)]
    assert all(result is None for result in results[:57])
    assert results[-1] is not None
    assert results[-1].humidity_pct in (33.0, 33.1)


def test_a_slow_drift_inside_the_band_is_not_settled() -> None:
    watch = StabilityWatch(window_s=600, band_pct=0.6, drift_pct=0.3, min_readings=10)
    results = [watch.add(i * 10.0, reading(33.0 + 0.009 * i)) for i in range(61)]
    # 0.54 % over the window: inside the band, but the thirds differ by 0.36 %.
    assert all(result is None for result in results)


def run_salt_test(jar: SaltJarDHT, clock: FakeClock, **kwargs: object) -> tuple[
        HumidityCorrection, list[str], list[str]]:
    said: list[str] = []
    asked: list[str] = []
    sensor = DHT22Sensor(jar, min_interval_s=0.0, clock=clock.now, sleep=clock.wait)
    test = SaltTest(sensor.read, wait=clock.wait, now=clock.now, say=said.append,
                    ask=lambda prompt: asked.append(prompt) or "", interval_s=10.0,
                    jar_changed=lambda salt: jar.put_in(
                        reference_humidity_pct(salt, jar.temperature_c)), **kwargs)
    return test.run(), said, asked


def test_salt_test_corrects_a_sensor_with_known_gain_and_offset_error() -> None:
    clock = FakeClock()
    # A DHT22 that reads 6 % high in gain and 3.5 % low in offset, at 28 °C.
    jar = SaltJarDHT(clock.now, gain=1.06, offset_pct=-3.5, temperature_c=28.0,
                     start_humidity_pct=70.0, settle_s=900.0, noise_pct=0.1)
    correction, said, asked = run_salt_test(jar, clock)

    assert [prompt.split(",")[0] for prompt in asked] == [
        "Ponga el sensor en el frasco de cloruro de magnesio (MgCl2)",
        "Ponga el sensor en el frasco de cloruro de sodio",
    ]
    # Settled from the readings: the jar needs several time constants, not a fixed wait.
    assert clock.now_s - START_S > 2 * 3 * 900
    assert correction.gain == pytest.approx(1 / 1.06, abs=0.02)
    assert correction.offset_pct == pytest.approx(3.5 / 1.06, abs=1.0)
    assert correction.calibrated_ts == clock.now_s
    for point in correction.points:
        assert point.reference_pct == round(reference_humidity_pct(point.salt, 28.0), 2)
        assert abs(correction.apply(point.raw_humidity_pct) - point.reference_pct) < 0.3
    assert any(line.startswith("Corrección / correction: HR = ") for line in said)


def test_a_jar_that_never_settles_times_out_with_what_to_check() -> None:
    clock = FakeClock()
    jar = SaltJarDHT(clock.now, gain=1.0, offset_pct=0.0, settle_s=10 * 3600.0)
    with pytest.raises(CalibrationError, match="did not settle in 3 h in the mgcl2 jar"):
        run_salt_test(jar, clock)


def point(salt: str, raw: float, reference: float) -> CalibrationPoint:
    return CalibrationPoint(salt=salt, temperature_c=25.0, raw_humidity_pct=raw,
                            reference_pct=reference, settled_ts=START_S)


def test_a_fit_no_sensor_should_need_is_refused() -> None:
    with pytest.raises(CalibrationError, match="should differ by about 40 %"):
        HumidityCorrection.from_points(point("mgcl2", 50.0, 32.8), point("nacl", 60.0, 75.3),
                                       calibrated_ts=START_S)
    with pytest.raises(CalibrationError, match="far beyond a DHT22's spread"):
        HumidityCorrection.from_points(point("mgcl2", 10.0, 32.8), point("nacl", 90.0, 75.3),
                                       calibrated_ts=START_S)


def test_the_file_round_trips_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    correction = HumidityCorrection.from_points(point("mgcl2", 31.0, 32.8),
                                                point("nacl", 77.0, 75.3), calibrated_ts=START_S)
    path = tmp_path / "humidity-calibration.json"
    correction.save(path)
    assert HumidityCorrection.load(path) == correction
    assert HumidityCorrection.load(tmp_path / "absent.json") is None
    path.write_text('{"gain": "1.0", "offset_pct": 0, "calibrated_ts": 1}')
    with pytest.raises(BadCalibrationFile, match="gain: must be a number"):
        HumidityCorrection.load(path)
    path.write_text("{")
    with pytest.raises(BadCalibrationFile, match="not a calibration file"):
        HumidityCorrection.load(path)


def test_calibrated_node_publishes_corrected_humidity_and_keeps_the_raw_in_the_outbox(
        tmp_path: Path) -> None:
    """Done-when: within 1 % RH of both reference points, raw values kept for audit."""
    clock = FakeClock()
    jar = SaltJarDHT(clock.now, gain=0.93, offset_pct=4.0, temperature_c=25.0,
                     start_humidity_pct=60.0, settle_s=600.0, noise_pct=0.1)
    correction, _, _ = run_salt_test(jar, clock)

    config = write_node_config(tmp_path, yard="calib", port=free_port())
    settings = load_node_settings(config)
    correction.save(settings.calibration_file)  # where `secadero edge calibrate` writes it
    hardware = mock_hardware(settings)
    hardware.climate.close()
    hardware.climate = DHT22Sensor(jar, min_interval_s=0.0, clock=clock.now, sleep=clock.wait)
    agent = NodeAgent(settings, hardware, wall=clock.now)
    try:
        samples = []
        for salt in ("nacl", "mgcl2"):
            jar.put_in(reference_humidity_pct(salt, 25.0))
            clock.now_s += 4 * 3600  # the sensor settles in the jar
            agent.sample()
            samples.append(salt)
        assert agent.health().calibrated_ts == correction.calibrated_ts
    finally:
        agent.shutdown()

    with sqlite3.connect(settings.outbox.path) as db:
        payloads = [json.loads(row[0]) for row in
                    db.execute("SELECT payload FROM outbox WHERE kind = 'telemetry' ORDER BY seq")]
    assert len(payloads) == 2
    for salt, payload in zip(samples, payloads, strict=True):
        reference = reference_humidity_pct(salt, 25.0)
        assert abs(payload["humidity_pct"] - reference) < 1.0, (salt, payload)
        # The sensor's own value, off by its error, is in the record beside it.
        assert abs(payload["humidity_raw_pct"] - (0.93 * reference + 4.0)) < 0.5
        assert payload["humidity_pct"] == correction.apply(payload["humidity_raw_pct"])
        decoded = contract.decode_telemetry(payload)
        assert decoded.humidity_raw_pct == payload["humidity_raw_pct"]


def test_uncalibrated_node_sends_no_raw_field_and_a_damaged_file_does_not_stop_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_node_config(tmp_path, yard="calib", port=free_port())
    settings = load_node_settings(config)
    settings.calibration_file.write_text("not json")
    agent = NodeAgent(settings, mock_hardware(settings, [(25.0, 61.0)]))
    try:
        agent.sample()
        assert agent.calibration is None
        assert agent.health().calibrated_ts is None
    finally:
        agent.shutdown()
    assert "humidity published uncorrected" in caplog.text
    with sqlite3.connect(settings.outbox.path) as db:
        payload = json.loads(db.execute("SELECT payload FROM outbox").fetchone()[0])
    assert payload["humidity_pct"] == 61.0
    assert "humidity_raw_pct" not in payload


@pytest.mark.slow
def test_the_command_runs_the_salt_test_on_a_simulated_node(tmp_path: Path) -> None:
    """``secadero edge calibrate`` as a technician runs it: Enter twice, then the file."""
    import subprocess
    import sys

    # x2000: about 3 simulated hours in 5 s; the 3-hour limit per jar leaves 5 s of slack
    # for a loaded machine (a stall moves the jar's clock too, so it only settles sooner).
    config = write_node_config(tmp_path, yard="calib", port=free_port(), speed=2000)
    result = subprocess.run([sys.executable, "-m", "secadero.cli", "edge", "calibrate",
                             "--config", str(config)], input="\n\n", capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Estable / settled: ") == 2
    saved = HumidityCorrection.load(tmp_path / "humidity-calibration.json")
    assert saved is not None
    # The simulated jar's sensor reads x1.06 - 3.5 %: the fit undoes it.
    assert saved.gain == pytest.approx(1 / 1.06, abs=0.02)
    for point in saved.points:
        assert abs(saved.apply(point.raw_humidity_pct) - point.reference_pct) < 0.5
    assert f"saved to {tmp_path / 'humidity-calibration.json'}" in result.stdout


def test_the_command_refuses_while_the_agent_runs(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from secadero.edge.agent import status_path_for

    config = write_node_config(tmp_path, yard="calib", port=free_port())
    settings = load_node_settings(config)
    # What a running agent writes every 2 s: its pid (this live process) and the time.
    status_path_for(settings.outbox.path).write_text(
        json.dumps({"pid": os.getpid(), "updated_ts": time.time()}))
    result = subprocess.run([sys.executable, "-m", "secadero.cli", "edge", "calibrate",
                             "--config", str(config)], input="", capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert f"corriendo (pid {os.getpid()})" in result.stdout
    assert "sudo systemctl stop secadero-node" in result.stdout
    assert not settings.calibration_file.exists()
