"""The server's one metrics registry, its health checks, and the HTTP endpoint serving both.

Each part of the server (ingest, alerts, notifications, forecasts, HTTP API)
gets its own ``Metrics`` from the ``Registry`` (``registry.part("alerts")``)
and names its metrics without the prefix: the alerts' ``evaluations_total``
is exported as ``secadero_alerts_evaluations_total``. A part describes its
metrics once (``help=``), so ``/metrics`` lists each with its type and text
even before it first counts.

``Health`` collects the reasons the process is unhealthy: each long-lived
thread is watched (``health.watch_thread``) and each part may add a check of
its own (``health.add_check``), e.g. "InfluxDB unreachable for 75 s".

``GET /metrics``: the Prometheus text exposition format (version 0.0.4).
``GET /healthz``: 200 ``ok``, or 503 with one line per reason.

Counters are plain numbers updated under a lock; the exposition is rendered
on request, so there is no cost while nobody scrapes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "secadero_"

# Help for one metric: (Prometheus type, text).
Help = Mapping[str, tuple[str, str]]
LabelKey = tuple[tuple[str, str], ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Histogram:
    def __init__(self, buckets: Sequence[float], text: str) -> None:
        self.buckets = tuple(buckets)
        self.text = text
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0


class Metrics:
    """One part's counters, gauges and histograms, exported under ``secadero_<part>_``.

    ``inc``/``set`` take labels as keywords. ``gauges`` maps a name to a
    function read at each scrape; ``labelled_gauges`` maps a name to (label
    name, function returning {label value: value}), also read at each scrape
    (an age per yard must grow between the owner's updates). ``labelled``
    holds counters kept by their owner in a plain dict (one writer thread, no lock on the hot path):
    name -> (label name, {label value: count}).
    """

    def __init__(self, prefix: str = PREFIX, help: Help | None = None) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._values: dict[tuple[str, LabelKey], float] = {}
        self._help: dict[str, tuple[str, str]] = dict(help or {})
        self._histograms: dict[str, _Histogram] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        self.labelled_gauges: dict[str, tuple[str, Callable[[], Mapping[str, float]]]] = {}
        self.labelled: dict[str, tuple[str, dict[str, int]]] = {}

    def describe(self, name: str, kind: str, text: str) -> None:
        """Say what a metric is (``counter`` or ``gauge``); listed at 0 until it counts."""
        self._help[name] = (kind, text)

    def histogram(self, name: str, buckets: Sequence[float], text: str) -> None:
        """Declare a histogram with these upper bounds; ``observe`` adds to it."""
        with self._lock:
            self._histograms[name] = _Histogram(buckets, text)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = value

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            histogram = self._histograms[name]
            histogram.sum += value
            histogram.count += 1
            for index, bound in enumerate(histogram.buckets):
                if value <= bound:
                    histogram.counts[index] += 1

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

    def histogram_count(self, name: str) -> int:
        with self._lock:
            return self._histograms[name].count

    def render(self) -> str:
        """The Prometheus text exposition of this part's metrics."""
        for name, read in list(self.gauges.items()):
            self.set(name, float(read()))
        for name, (label, read_all) in list(self.labelled_gauges.items()):
            for value, reading in read_all().items():
                self.set(name, float(reading), **{label: value})
        self._merge_labelled()
        with self._lock:
            values = dict(self._values)
            histograms = {name: (h.buckets, list(h.counts), h.sum, h.count, h.text)
                          for name, h in self._histograms.items()}
            described = dict(self._help)
        lines: list[str] = []
        for name in sorted({name for name, _ in values} | set(described)):
            kind, text = described.get(name, ("untyped", name))
            full = self.prefix + name
            lines.append(f"# HELP {full} {text}")
            lines.append(f"# TYPE {full} {kind}")
            series = sorted((labels, v) for (n, labels), v in values.items() if n == name)
            if not series and kind == "counter":
                series = [((), 0)]
            for labels, value in series:
                label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                lines.append(f"{full}{{{label_text}}} {value:g}" if label_text
                             else f"{full} {value:g}")
        for name, (buckets, counts, total, count, text) in sorted(histograms.items()):
            full = self.prefix + name
            lines.append(f"# HELP {full} {text}")
            lines.append(f"# TYPE {full} histogram")
            for bound, bucket_count in zip(buckets, counts, strict=True):
                lines.append(f'{full}_bucket{{le="{bound:g}"}} {bucket_count}')
            lines.append(f'{full}_bucket{{le="+Inf"}} {count}')
            lines.append(f"{full}_sum {total:.6f}")
            lines.append(f"{full}_count {count}")
        return "".join(line + "\n" for line in lines)


class Registry:
    """Every part's ``Metrics``, rendered together on ``/metrics``."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self._parts: dict[str, Metrics] = {}
        self._lock = threading.Lock()

    def part(self, name: str, help: Help | None = None) -> Metrics:
        """The metrics of one part (created on first use); exported as ``<prefix><name>_*``."""
        with self._lock:
            metrics = self._parts.get(name)
            if metrics is None:
                metrics = self._parts[name] = Metrics(f"{self.prefix}{name}_", help)
            elif help:
                for metric, (kind, text) in help.items():
                    metrics.describe(metric, kind, text)
            return metrics

    def render(self) -> str:
        with self._lock:
            parts = [self._parts[name] for name in sorted(self._parts)]
        return "".join(part.render() for part in parts)


class Health:
    """Why the process is unhealthy right now: dead threads and the parts' own checks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[tuple[str, Callable[[], bool]]] = []
        self._checks: list[Callable[[], list[str]]] = []
        self._stopping = threading.Event()

    def watch_thread(self, what: str, thread: threading.Thread | Callable[[], bool]) -> None:
        """Unhealthy once ``thread`` has ended (or the function says it is not alive).

        ``what`` names the thread's job for the operator: "alert evaluation".
        """
        alive = thread.is_alive if isinstance(thread, threading.Thread) else thread
        with self._lock:
            self._threads.append((what, alive))

    def add_check(self, check: Callable[[], list[str]]) -> None:
        """``check()`` returns the reasons its part is unhealthy (empty = healthy)."""
        with self._lock:
            self._checks.append(check)

    def stopping(self) -> None:
        """The process is shutting down: threads ending now are not a fault."""
        self._stopping.set()

    def dead_threads(self) -> list[str]:
        """What each watched thread that has ended was for (none while stopping)."""
        if self._stopping.is_set():
            return []
        with self._lock:
            threads = list(self._threads)
        return [what for what, alive in threads if not alive()]

    def problems(self) -> list[str]:
        with self._lock:
            checks = list(self._checks)
        problems = [f"the {what} thread has stopped; see the log" for what in self.dead_threads()]
        for check in checks:
            try:
                problems += check()
            except Exception as exc:  # a broken check is itself a reason, never a 500
                problems.append(f"health check {check!r} failed: {type(exc).__name__}: {exc}")
        return problems

    @property
    def healthy(self) -> bool:
        return not self.problems()


class MetricsServer:
    """The HTTP endpoint: ``/metrics`` and ``/healthz`` on a background thread.

    Port 0 picks a free port (see ``port``).
    """

    def __init__(self, registry: Registry | Metrics, health: Health | Callable[[], list[str]],
                 *, host: str = "127.0.0.1", port: int = 9108) -> None:
        self.registry = registry
        self.health = health.problems if isinstance(health, Health) else health
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, outer.registry.render(),
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
                                        name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
        self._server.server_close()
