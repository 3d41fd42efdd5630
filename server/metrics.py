"""Ingest counters in Prometheus text format, and the health endpoint.

``GET /metrics``: the Prometheus text exposition format (version 0.0.4).
``GET /healthz``: 200 ``ok``, or 503 with one line per reason when InfluxDB
or the broker has been unreachable for longer than allowed.

Counters are plain ints updated under a lock; the exposition is rendered on
request, so there is no cost while nobody scrapes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "secadero_ingest_"

# Batch write latency buckets (seconds), for the histogram.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_HELP = {
    "messages_received_total": ("counter", "MQTT messages received, by topic kind"),
    "messages_rejected_total": ("counter", "messages rejected for good, by reason"),
    "messages_stored_total": ("counter", "messages whose points InfluxDB accepted"),
    "points_stored_total": ("counter", "points InfluxDB accepted"),
    "points_set_aside_total": ("counter", "points InfluxDB refused for good (see set_aside_file)"),
    "write_errors_total": ("counter", "failed write attempts, by kind (retried)"),
    "write_isolation_fallbacks_total": ("counter", "400s whose answer did not account for "
                                        "every point: rest written again (step=retry), "
                                        "then bisected (step=bisect)"),
    "seq_gap_total": ("counter", "sequence numbers counted as lost after the gap timeout"),
    "observer_errors_total": ("counter", "exceptions raised by observers (alert engine)"),
    "nodes_offline_total": ("counter", "nodes marked offline after silence"),
    "downsample_runs_total": ("counter", "rounds that downsampled hours of late readings again"),
    "downsample_hours_total": ("counter", "hours downsampled again for late readings"),
    "downsample_errors_total": ("counter", "failed downsampling of late hours, by kind"),
    "downsample_hours_pending": ("gauge", "hours of late readings waiting to be downsampled"),
    "queue_depth": ("gauge", "messages waiting for the writer"),
    "mqtt_connected": ("gauge", "1 while connected to the broker"),
    "influx_up": ("gauge", "1 when the last write or start-up check succeeded"),
}


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """The ingest's counters, gauges and batch-latency histogram."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._bucket_counts = [0] * len(LATENCY_BUCKETS_S)
        self._latency_sum_s = 0.0
        self._latency_count = 0
        self.gauges: dict[str, Callable[[], float]] = {}
        # Counters kept by their owner in a plain dict (one writer thread, no
        # lock on the hot path): name -> (label name, {label value: count}).
        self.labelled: dict[str, tuple[str, dict[str, int]]] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = value

    def _merge_labelled(self) -> None:
        for name, (label, counts) in self.labelled.items():
            for value, count in list(counts.items()):
                self.set(name, count, **{label: value})

    def get(self, name: str, **labels: str) -> float:
        self._merge_labelled()
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0)

    def total(self, name: str) -> float:
        """The sum of a counter over all its labels."""
        self._merge_labelled()
        with self._lock:
            return sum(v for (n, _), v in self._values.items() if n == name)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        self._merge_labelled()
        with self._lock:
            return {dict(labels).get(label, ""): v
                    for (n, labels), v in self._values.items() if n == name}

    def observe_batch(self, seconds: float) -> None:
        with self._lock:
            self._latency_sum_s += seconds
            self._latency_count += 1
            for index, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    self._bucket_counts[index] += 1

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        for name, read in self.gauges.items():
            self.set(name, float(read()))
        self._merge_labelled()
        with self._lock:
            values = dict(self._values)
            buckets = list(self._bucket_counts)
            latency_sum, latency_count = self._latency_sum_s, self._latency_count
        lines: list[str] = []
        names = sorted({name for name, _ in values} | set(_HELP))
        for name in names:
            kind, text = _HELP.get(name, ("untyped", name))
            lines.append(f"# HELP {PREFIX}{name} {text}")
            lines.append(f"# TYPE {PREFIX}{name} {kind}")
            series = sorted((labels, v) for (n, labels), v in values.items() if n == name)
            if not series and kind == "counter":
                series = [((), 0)]
            for labels, value in series:
                label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                lines.append(f"{PREFIX}{name}{{{label_text}}} {value:g}" if label_text
                             else f"{PREFIX}{name} {value:g}")
        hist = f"{PREFIX}batch_write_seconds"
        lines.append(f"# HELP {hist} time from a batch's first write attempt to InfluxDB's 204")
        lines.append(f"# TYPE {hist} histogram")
        for bound, count in zip(LATENCY_BUCKETS_S, buckets, strict=True):
            lines.append(f'{hist}_bucket{{le="{bound:g}"}} {count}')
        lines.append(f'{hist}_bucket{{le="+Inf"}} {latency_count}')
        lines.append(f"{hist}_sum {latency_sum:.6f}")
        lines.append(f"{hist}_count {latency_count}")
        return "\n".join(lines) + "\n"


class MetricsServer:
    """The HTTP endpoint: ``/metrics`` and ``/healthz`` on a background thread.

    ``health`` returns the list of reasons the process is unhealthy (empty
    when healthy). Port 0 picks a free port (see ``port``).
    """

    def __init__(self, metrics: Metrics, health: Callable[[], list[str]], *,
                 host: str = "127.0.0.1", port: int = 9108) -> None:
        self.metrics = metrics
        self.health = health
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, outer.metrics.render(),
                               "text/plain; version=0.0.4; charset=utf-8")
                elif path in ("/healthz", "/health"):
                    problems = outer.health()
                    if problems:
                        self._send(503, "".join(p + "\n" for p in problems))
                    else:
                        self._send(200, "ok\n")
                else:
                    self._send(404, "not found: try /metrics or /healthz\n")

            def _send(self, status: int, text: str,
                      content_type: str = "text/plain; charset=utf-8") -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would flood the log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="metrics-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
        self._server.server_close()
