"""MQTT -> InfluxDB ingest: every valid reading stored once in effect, acknowledged after the write.

The pipeline (input -> processors -> output, as in Telegraf), one stage per module::

    broker --(paho network thread)--> receive.py: decode + validate --> observers
        --> lines (points.LineBuilder) --> items.Handoff (bounded queue)
        --> writer.py: batch by size/time --> InfluxDB /write --> 204
        --> acks.py: MQTT PUBACK of each message, state file, node ``ack``

Threads (who owns what, how work is handed over):

=====================  ===========================================  ==========================
thread                 owns                                         hands over
=====================  ===========================================  ==========================
``ingest-mqtt``        ``link.BrokerLink`` (connection, generation  ``Item`` per message to
(paho's loop, ours)    of message ids), ``receive.Receiver``        ``Handoff.put`` (a deque;
                       (decoding, observers, line cache, received   the writer is woken only
                       counts), ``Liveness.heard``                  when it sleeps idle)
``ingest-writer``      ``writer.BatchWriter`` (batches, retries,    PUBACKs through
                       every write-failure policy), and, called     ``BrokerLink.puback``
                       from it, ``acks.Acknowledger`` (SeqTracker,  (under its lock); node
                       node acks, share-group announcements, the    acks and announcements
                       state file) and ``Liveness.stored/check``    through paho's publish
``ingest-downsample``  ``downsample.LateHours``: hours of late      marks from the receive
                       readings, downsampled again                  stage, counts from the
                                                                    writer (its own lock)
``metrics-http``       ``metrics.MetricsServer``: ``/metrics``,     reads counters and health
                       ``/healthz`` (unless ``serve_metrics`` is    checks on request
                       False: the composition root serves them)
=====================  ===========================================  ==========================

The caller's thread runs ``start``/``stop`` (the facade below) and
``publish`` (the alert engine's output, through paho's thread-safe publish).

Delivery: a fixed client id, MQTT 5 with Clean Start off and a Session Expiry
Interval of days, QoS 1 and ``manual_ack``. The broker re-sends every message
we have not PUBACKed, so a crash between receive and write loses nothing;
points carry the reading's own time, so the re-sent copy overwrites itself.
The MQTT 5 Receive Maximum equals the queue bound: the broker never has more
unacknowledged messages in flight to us than the queue holds, which is the
back-pressure when InfluxDB is slow or down (the broker and the nodes'
outboxes hold the rest). Because Mosquitto 2.0.11 was measured sending far
more than that while PUBACKs flow (190,000 queued against a Receive Maximum
of 10,000), paho's thread also stops reading the socket while the queue is
over ``queue_max``.

Node ``ack``: after each stored batch, each node that sent messages in it
gets ``{"seq": N}``, N the highest sequence number up to which everything is
stored (or rejected for good). A gap that stays open longer than
``gap_timeout_s`` is counted as lost (``seq_gap``) and skipped, so a node that
lost messages itself is not held back forever. The acknowledged sequence
numbers are kept in ``state_file`` across restarts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import paho.mqtt.client as mqtt

from secadero.contract import QOS
from secadero.server.downsample import LateHours
from secadero.server.influx import Writer, make_writer
from secadero.server.ingest.acks import Acknowledger, SeqTracker, load_state, save_state
from secadero.server.ingest.items import Handoff, Item
from secadero.server.ingest.link import BrokerLink, ClientFactory
from secadero.server.ingest.liveness import Liveness
from secadero.server.ingest.receive import Observer, Receiver
from secadero.server.ingest.warn import RateLimitedLog
from secadero.server.ingest.writer import BatchWriter, WritePolicy
from secadero.server.metrics import Health, Metrics, MetricsServer, Registry
from secadero.server.mqtt_client import fast_read_client
from secadero.server.points import LineBuilder
from secadero.settings import ServerSettings

log = logging.getLogger(__name__)

# Exported as secadero_ingest_<name>.
INGEST_METRICS = {
    "messages_received_total": ("counter", "MQTT messages received, by topic kind"),
    "messages_rejected_total": ("counter", "messages rejected for good, by reason"),
    "peer_messages_rejected_total": ("counter", "malformed share-group announcements ignored, "
                                     "by reason"),
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
    "mqtt_handler_errors_total": ("counter", "messages whose handling raised on the MQTT "
                                  "thread (left unacknowledged: the broker sends them again)"),
}


class Ingest:
    """Subscribes to every yard, stores readings in InfluxDB, acknowledges after the write.

    Usable in-process (tests, the demo) and by ``secadero server run``::

        with Ingest(settings, observers=[engine.on_message]) as ingest:
            ...

    ``observers`` are called for every valid message right after decoding,
    before storage, on the MQTT thread: alert evaluation never waits on
    storage. They must be quick and must not block; an exception is logged
    and counted, never stops the ingest.

    ``client_factory(settings.mqtt)`` builds the MQTT client (default: the
    fast-read paho client); ``writer`` is the InfluxDB output (default: from
    ``settings.influxdb``); ``line_builder`` turns messages into line
    protocol (a test passes a faulty one). ``registry`` and ``health`` are
    the server's (fresh ones by default); ``serve_metrics=False`` leaves
    ``/metrics`` and ``/healthz`` to whoever serves that registry. This class
    only wires the stages (see the thread table in the module docstring) and
    starts and stops them in order.
    """

    def __init__(self, settings: ServerSettings, *, observers: Iterable[Observer] = (),
                 writer: Writer | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 client_factory: ClientFactory = fast_read_client,
                 line_builder: LineBuilder | None = None, serve_metrics: bool = True,
                 registry: Registry | None = None, health: Health | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.registry = registry or Registry()
        self.metrics: Metrics = self.registry.part("ingest", INGEST_METRICS)
        self.health_checks = health or Health()
        rng = rng or random.Random()
        s = settings.ingest
        warn = RateLimitedLog()
        self._output: Writer = writer or make_writer(settings.influxdb)
        self._handoff = Handoff()
        self._link = BrokerLink(settings, client_factory, rng=rng)
        self._liveness = Liveness(s.offline_after_s, self.metrics)
        self._late = LateHours(settings, self.metrics, lambda: len(self._handoff), clock)
        self._receiver = Receiver(self._handoff, self._link, self._liveness, self._late,
                                  self.metrics, observers=list(observers),
                                  horizon_s=s.horizon_days * 86400.0,
                                  client_id=settings.mqtt.client_id or "", clock=clock,
                                  line_builder=line_builder, warn=warn)
        self._acks = Acknowledger(SeqTracker(s.gap_timeout_s, load_state(s.state_file)),
                                  publish=self._publish_qos1, puback=self._link.puback,
                                  metrics=self.metrics, state_file=s.state_file,
                                  client_id=settings.mqtt.client_id or "",
                                  share_group=s.share_group, warn=warn)
        policy = WritePolicy(self._output, self.metrics, set_aside_file=s.set_aside_file,
                             clock=clock, warn=warn)
        self._writer = BatchWriter(s, self._output, self._handoff, policy, self.metrics,
                                   on_stored=self._stored, on_tick=self._tick,
                                   on_taken=self._late.stored, rng=rng, warn=warn)
        queue_max = s.queue_max
        # Strictly above: with InfluxDB down no PUBACKs flow, the broker keeps
        # to the Receive Maximum and the queue stays at or below queue_max, so
        # the socket is still read (PINGRESPs: a paused reader for longer than
        # the keepalive would be taken for a dead connection).
        self._link.deliver_to(self._receiver.receive, self._receiver.on_message,
                              lambda: len(self._handoff) > queue_max)
        self._serve_metrics = serve_metrics
        self._http: MetricsServer | None = None
        self.metrics.gauges["queue_depth"] = lambda: len(self._handoff)
        self.metrics.gauges["mqtt_connected"] = lambda: 1 if self._link.connected else 0
        self.metrics.gauges["influx_up"] = lambda: 0 if self._writer.down_since else 1
        self.metrics.gauges["mqtt_handler_errors_total"] = lambda: self._link.handler_errors
        self.health_checks.watch_thread("ingest writer", lambda: self.running)
        self.health_checks.add_check(self._unreachable)

    # -- the stages' hand-overs (writer thread)

    def _publish_qos1(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self._link.publish(topic, payload, qos=QOS)

    def _stored(self, batch: Sequence[Item]) -> list[bytes]:
        now = self.clock()
        self._acks.stored(batch, now)
        return self._liveness.stored(batch, now)

    def _tick(self) -> list[bytes]:
        now = self.clock()
        return self._acks.tick(now) + self._liveness.check(now)

    # -- public API

    @property
    def observers(self) -> list[Observer]:
        return self._receiver.observers

    def add_observer(self, observer: Observer) -> None:
        self._receiver.observers.append(observer)

    def start(self) -> Ingest:
        s = self.settings
        if self._serve_metrics:
            self._http = MetricsServer(self.registry, self.health_checks,
                                       host=s.ingest.http_host, port=s.ingest.http_port).start()
        self._writer.start()
        self._late.start()
        self._link.start()
        # Watched from here on, as the other parts do: before start there is no thread.
        self.health_checks.watch_thread("ingest MQTT network", lambda: self._link.network_alive)
        log.info("ingest %s: broker %s:%d, InfluxDB %s (%s), batch %d / %g s",
                 s.mqtt.client_id, s.mqtt.host, s.mqtt.port, s.influxdb.url,
                 s.influxdb.database if s.influxdb.api == 1 else s.influxdb.bucket,
                 s.ingest.batch_size, s.ingest.flush_interval_s)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop cleanly: store and acknowledge what is queued (up to ``timeout_s``), disconnect.

        Messages that arrive meanwhile are left unacknowledged; the broker
        keeps them in our session for the next start.
        """
        self._receiver.stop_accepting()
        self._link.closing()
        self._writer.stop(timeout_s)
        self._acks.flush()  # the last word each node is owed, and the state file
        self._late.stop()
        self._link.stop()
        self._output.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Ingest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def publish(self, topic: str, payload: bytes, retain: bool = False,
                qos: int = QOS) -> mqtt.MQTTMessageInfo:
        """Publish through the ingest's broker connection (the alert engine's output)."""
        return self._link.publish(topic, payload, qos=qos, retain=retain)

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        return self._link.wait_connected(timeout_s)

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """True once subscribed to the broker and the database is prepared."""
        return self._link.wait_connected(timeout_s) and self._writer.wait_prepared(timeout_s)

    @property
    def connected(self) -> bool:
        """Subscribed on a live broker connection right now."""
        return self._link.connected

    @property
    def queue_depth(self) -> int:
        """Messages received and waiting for the writer."""
        return len(self._handoff)

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    @property
    def running(self) -> bool:
        """False once the writer thread has died (a bug): the process should exit."""
        return self._writer.thread.is_alive() or self._writer.stopping

    def wait_while_running(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set; raise SystemExit if the writer thread dies.

        Exiting non-zero lets systemd restart the process: an ingest that stopped
        storing must not hide behind a live one, and unacknowledged messages
        wait in the broker session meanwhile.
        """
        while not stop.wait(1.0):
            if not self.running:
                raise SystemExit("ingest writer stopped unexpectedly; exiting")

    def health(self) -> list[str]:
        """Reasons to be unhealthy (empty = healthy), the whole ``Health``'s."""
        return self.health_checks.problems()

    def _unreachable(self) -> list[str]:
        problems: list[str] = []
        limit = self.settings.ingest.unhealthy_after_s
        now = time.monotonic()
        mqtt_down, influx_down = self._link.down_since, self._writer.down_since
        if mqtt_down is not None and now - mqtt_down > limit:
            problems.append(f"broker unreachable for {now - mqtt_down:.0f} s")
        if influx_down is not None and now - influx_down > limit:
            problems.append(f"InfluxDB unreachable for {now - influx_down:.0f} s")
        return problems


__all__ = ["INGEST_METRICS", "Ingest", "Observer", "SeqTracker", "load_state", "save_state"]
