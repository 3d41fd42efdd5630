"""The one metrics registry and the health checks: what /metrics and /healthz say."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

from secadero.server.metrics import Health, MetricsServer, Registry


def test_each_part_is_exported_under_its_own_prefix_with_its_help() -> None:
    registry = Registry()
    alerts = registry.part("alerts", {"evaluations_total": ("counter", "yard evaluations")})
    ingest = registry.part("ingest")
    alerts.inc("evaluations_total", 3)
    ingest.inc("messages_rejected_total", reason="bad_json")
    ingest.gauges["queue_depth"] = lambda: 7
    ingest.histogram("batch_write_seconds", (0.1, 1.0), "batch write time")
    ingest.observe("batch_write_seconds", 0.5)

    text = registry.render()

    assert "# HELP secadero_alerts_evaluations_total yard evaluations\n" in text
    assert "# TYPE secadero_alerts_evaluations_total counter\n" in text
    assert "secadero_alerts_evaluations_total 3\n" in text
    assert 'secadero_ingest_messages_rejected_total{reason="bad_json"} 1\n' in text
    assert "secadero_ingest_queue_depth 7\n" in text
    assert 'secadero_ingest_batch_write_seconds_bucket{le="0.1"} 0\n' in text
    assert 'secadero_ingest_batch_write_seconds_bucket{le="1"} 1\n' in text
    assert "secadero_ingest_batch_write_seconds_count 1\n" in text
    assert registry.part("alerts") is alerts


def test_a_described_counter_is_listed_at_zero_before_it_counts() -> None:
    registry = Registry()
    registry.part("forecast", {"fetches_total": ("counter", "forecast fetches")})
    assert "secadero_forecast_fetches_total 0\n" in registry.render()


def test_health_reports_a_dead_thread_and_a_failing_check_until_stopping() -> None:
    health = Health()
    done = threading.Event()
    worker = threading.Thread(target=done.wait)
    worker.start()
    health.watch_thread("alert evaluation", worker)
    health.add_check(lambda: ["InfluxDB unreachable for 75 s"])
    assert health.problems() == ["InfluxDB unreachable for 75 s"]

    done.set()
    worker.join()
    assert health.problems() == ["the alert evaluation thread has stopped; see the log",
                                 "InfluxDB unreachable for 75 s"]
    health.stopping()
    assert health.problems() == ["InfluxDB unreachable for 75 s"]


def test_a_check_that_raises_is_a_reason_not_a_crash() -> None:
    health = Health()

    def broken() -> list[str]:
        raise KeyError("x")

    health.add_check(broken)
    [problem] = health.problems()
    assert "KeyError" in problem


def test_the_endpoint_serves_metrics_and_503_with_the_reasons() -> None:
    registry = Registry()
    registry.part("api").inc("requests_total", route="/api/alerts/active", status="200")
    health = Health()
    reasons: list[str] = []
    health.add_check(lambda: list(reasons))
    server = MetricsServer(registry, health, port=0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert ('secadero_api_requests_total{route="/api/alerts/active",status="200"} 1'
                in body)
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert response.read() == b"ok\n"
        reasons.append("the notify-sms thread has stopped; see the log")
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert exc.read() == b"the notify-sms thread has stopped; see the log\n"
        else:
            raise AssertionError("/healthz answered 200 with a dead thread")
    finally:
        server.close()
