"""What the bus says, as Prometheus metrics (the official ``prometheus_client``).

:class:`BusMetrics` is fed heartbeats and transcript/partial messages by the metrics actor
(:mod:`workers.metrics`) and exposes, in one :class:`prometheus_client.CollectorRegistry`:

* per actor, from its heartbeats (mirrored at scrape time by a custom collector, so counters keep
  the values the actor reported): up/down by the one liveness rule (:mod:`pipeline.liveness`),
  heartbeat age, restarts, CPU, memory, messages in/out/rejected/dropped/lost, errors, live and
  refused streams; per worker: slots, decode threads, decodes, decode and audio seconds, real-time
  factor, commits, stream errors, and whatever extra numbers a heartbeat carries (queue wait,
  batch sizes: ``voxpipe_actor_counter{counter=...}``); per pool: streams, slots, load, workers up;
  the broker's message, byte and subscription counts;
* observed on the bus by the metrics actor itself: commits, committed words, the latency of every
  committed word as a histogram (``emitted - wall0 - word end``), partials, errors, ended streams,
  and messages seen and lost (``seq`` gaps) per topic family.

Labels: ``actor``, ``role``, ``pool`` (the heartbeat's ``info.pool``, else the actor's name; for
transcripts, the topic's worker/pool part), ``host`` (the heartbeat's ``info.host``). Names follow
Prometheus conventions (``_total`` counters, base units ``_seconds`` and ``_bytes``).
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline import messages as m
from pipeline.liveness import Liveness, Peer
from pipeline.sequence import GapCounter

disable_created_metrics()  # no *_created series: scrapes stay small, counters are plain

LABELS = ("actor", "role", "pool", "host")
LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0)

# heartbeat counter -> (metric name, help, kind): every actor
ACTOR_COUNTERS = {
    "frames_in": ("voxpipe_actor_messages_received_total", "Messages the actor received from the bus.", "counter"),
    "frames_out": ("voxpipe_actor_messages_sent_total", "Messages the actor published.", "counter"),
    "rejected": ("voxpipe_actor_messages_rejected_total", "Malformed messages the actor dropped.", "counter"),
    "dropped": ("voxpipe_actor_messages_dropped_total",
                "Messages the actor dropped (send queue full, late or excess frames).", "counter"),
    "gaps": ("voxpipe_actor_messages_lost_total",
             "Messages lost on the way to the actor, from seq gaps per topic.", "counter"),
    "errors": ("voxpipe_actor_errors_total", "Exceptions while handling messages.", "counter"),
    "streams_active": ("voxpipe_actor_streams", "Streams the actor holds now.", "gauge"),
    "streams_refused": ("voxpipe_actor_streams_refused_total",
                        "New streams refused because max_streams were live.", "counter"),
    "cpu_seconds": ("voxpipe_actor_cpu_seconds_total", "CPU time of the actor's process (user + system).",
                    "counter"),
}
# per role
ROLE_COUNTERS = {
    "worker": {
        "decodes": ("voxpipe_worker_decodes_total", "Decoder calls.", "counter"),
        "decode_seconds": ("voxpipe_worker_decode_seconds_total", "Seconds spent decoding.", "counter"),
        "audio_seconds": ("voxpipe_worker_audio_seconds_total", "Seconds of audio received.", "counter"),
        "decoded_audio_seconds": ("voxpipe_worker_decoded_audio_seconds_total",
                                  "Seconds of audio passed to the decoder (buffers are decoded more than once).",
                                  "counter"),
        "rtf": ("voxpipe_worker_real_time_factor", "Decode seconds per second of audio received.", "gauge"),
        "commits": ("voxpipe_worker_commits_total", "Commits the worker published.", "counter"),
        "stream_errors": ("voxpipe_worker_stream_errors_total", "Backend failures on a stream.", "counter"),
        "hypotheses_set_aside": ("voxpipe_worker_hypotheses_set_aside_total",
                                 "Decodes cut short (far fewer words than the hypothesis before), not compared.",
                                 "counter"),
        "streams_total": ("voxpipe_worker_streams_started_total", "Streams the worker has started.", "counter"),
        "queue_wait_s": ("voxpipe_worker_queue_wait_seconds_total",
                         "Seconds due decodes waited for a decode thread, all streams together.", "counter"),
        "batches": ("voxpipe_worker_batches_total", "Batched decoder calls.", "counter"),
        "batched_steps": ("voxpipe_worker_batched_steps_total", "Stream decodes that ran inside a batch.",
                          "counter"),
    },
    "broker": {
        "messages": ("voxpipe_broker_messages_total", "Messages the broker forwarded.", "counter"),
        "bytes": ("voxpipe_broker_bytes_total", "Bytes the broker forwarded.", "counter"),
        "subscriptions": ("voxpipe_broker_subscriptions_total", "Subscription frames the broker forwarded.",
                          "counter"),
        "messages_per_s": ("voxpipe_broker_messages_per_second", "Messages forwarded per second, last interval.",
                           "gauge"),
    },
}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def peer_labels(peer: Peer) -> tuple[str, str, str, str]:
    return (peer.name, peer.role, str(peer.info.get("pool") or peer.name), str(peer.info.get("host") or ""))


class BusMetrics(Collector):
    def __init__(self, interval: float = 1.0, misses: int = 3, buckets=LATENCY_BUCKETS):
        self.liveness = Liveness(interval, misses)
        self.lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.commits = Counter("voxpipe_commits", "Commits seen on transcript topics.", LABELS, registry=r)
        self.words = Counter("voxpipe_committed_words", "Committed words seen on transcript topics.", LABELS,
                             registry=r)
        self.latency = Histogram("voxpipe_commit_latency_seconds",
                                 "Per committed word: seconds from the end of its being spoken to its publication "
                                 "(emitted - wall0 - word end).", LABELS, buckets=buckets, registry=r)
        self.partials = Counter("voxpipe_partials", "Partial hypotheses seen on partial topics.", LABELS, registry=r)
        self.stream_errors = Counter("voxpipe_transcript_errors", "Error messages seen on transcript topics.",
                                     LABELS, registry=r)
        self.streams_ended = Counter("voxpipe_streams_ended", "End-of-stream messages seen on transcript topics.",
                                     LABELS, registry=r)
        self.bus_seen = Counter("voxpipe_bus_messages_observed", "Messages the metrics actor received, per topic "
                                "family.", ("family",), registry=r)
        self.bus_lost = Counter("voxpipe_bus_messages_lost", "Messages lost on the way to the metrics actor "
                                "(seq gaps), per topic family.", ("family",), registry=r)
        self._gaps = GapCounter()
        r.register(self)

    # -- feeding ------------------------------------------------------------------------------
    def observe(self, topic: str, msg: m.Message, now: float | None = None) -> None:
        """One valid message from the bus (probes excluded by the caller)."""
        now = time.monotonic() if now is None else now
        family = topic.partition(".")[0]
        self.bus_seen.labels(family).inc()
        lost = self._gaps.observe(topic, msg.seq, ends=isinstance(msg, m.EndOfStream))
        if lost:
            self.bus_lost.labels(family).inc(lost)
        if isinstance(msg, m.Heartbeat):
            with self.lock:
                self.liveness.beat(msg, now)
            return
        if family not in ("transcript", "partial"):
            return
        labels = self._worker_labels(m.parse_topic(topic).worker, getattr(msg, "worker", None))
        if isinstance(msg, m.Commit):
            self.commits.labels(*labels).inc()
            self.words.labels(*labels).inc(len(msg.words))
            hist = self.latency.labels(*labels)
            for lat in msg.word_latencies():
                hist.observe(lat)
        elif isinstance(msg, m.Partial):
            self.partials.labels(*labels).inc()
        elif isinstance(msg, m.Error):
            self.stream_errors.labels(*labels).inc()
        elif isinstance(msg, m.EndOfStream):
            self.streams_ended.labels(*labels).inc()

    def _worker_labels(self, pool: str, worker: str | None) -> tuple[str, str, str, str]:
        name = worker or pool
        with self.lock:
            peer = self.liveness.peers.get(name)
            host = str(peer.info.get("host") or "") if peer is not None else ""
        return name, "worker", pool, host

    # -- exposition -----------------------------------------------------------------------------
    def collect(self):
        now = time.monotonic()
        with self.lock:
            peers = [(p, self.liveness.alive(p.name, now), now - p.last_seen) for p in self.liveness.peers.values()]
            peers = [(Peer(**{**vars(p), "info": dict(p.info), "counters": dict(p.counters)}), up, age)
                     for p, up, age in peers]
        fam: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

        def add(name: str, help_: str, kind: str, labels: dict, value) -> None:
            if name not in fam:
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                fam[name] = cls(name.removesuffix("_total") if kind == "counter" else name, help_,
                                labels=list(labels))
            fam[name].add_metric(list(labels.values()), float(value))

        pools: dict[str, list] = {}
        for peer, up, age in peers:
            labels = dict(zip(LABELS, peer_labels(peer), strict=True))
            add("voxpipe_actor_up", "1 while the actor's heartbeats come (dead after 3 missed).", "gauge", labels,
                1 if up else 0)
            add("voxpipe_actor_ready", "1 while the actor reports ready (and is up).", "gauge", labels,
                1 if up and peer.ready else 0)
            add("voxpipe_actor_heartbeat_age_seconds", "Seconds since the actor's last heartbeat.", "gauge", labels,
                round(age, 3))
            add("voxpipe_actor_restarts_total", "Times the actor came back with another process id.", "counter",
                labels, peer.incarnation)
            rss = peer.info.get("rss_bytes")
            if _number(rss):
                add("voxpipe_actor_resident_memory_bytes", "Resident memory of the actor's process.", "gauge",
                    labels, rss)
            known = dict(ACTOR_COUNTERS, **ROLE_COUNTERS.get(peer.role, {}))
            for key, value in peer.counters.items():
                if not _number(value):
                    continue
                if key in known:
                    name, help_, kind = known[key]
                    add(name, help_, kind, labels, value)
                else:
                    add("voxpipe_actor_counter", "Other numbers an actor reports in its heartbeat counters.",
                        "gauge", {**labels, "counter": key}, value)
            if peer.role == "worker":
                for key, (name, help_) in {
                    "max_streams": ("voxpipe_worker_stream_slots", "Streams the worker serves at once."),
                    "concurrency": ("voxpipe_worker_decode_threads", "Decode threads of the worker."),
                }.items():
                    if _number(peer.info.get(key)):
                        add(name, help_, "gauge", labels, peer.info[key])
                queue = peer.info.get("decode_queue")  # recent steps (workers.decode_batches.DecodeLoad.summary)
                queue = queue if isinstance(queue, dict) else {}
                wait, size = queue.get("queue_wait_ms"), queue.get("batch_size")
                if isinstance(wait, dict) and _number(wait.get("p90")):
                    add("voxpipe_worker_queue_wait_p90_seconds", "90th percentile of how long the recent due "
                        "decodes waited for a decode thread.", "gauge", labels, wait["p90"] / 1000.0)
                if isinstance(size, dict) and _number(size.get("mean")):
                    add("voxpipe_worker_batch_size_mean", "Mean streams per decode over the recent steps.", "gauge",
                        labels, size["mean"])
                pools.setdefault(labels["pool"], []).append((peer, up))
        for pool, members in pools.items():
            live = [p for p, up in members if up]
            streams = sum(p.counters.get("streams_active", 0) or 0 for p in live)
            slots = sum(p.info.get("max_streams", 0) or 0 for p in live)
            by_pool = {"pool": pool}
            add("voxpipe_pool_workers_up", "Workers of the pool whose heartbeats come.", "gauge", by_pool, len(live))
            add("voxpipe_pool_streams", "Live streams on the pool's workers that are up.", "gauge", by_pool, streams)
            add("voxpipe_pool_stream_slots", "Stream slots of the pool's workers that are up.", "gauge", by_pool,
                slots)
            add("voxpipe_pool_load", "Live streams per slot of the pool (1 = full).", "gauge", by_pool,
                streams / slots if slots else 0.0)
        yield from fam.values()

    def newly_dead(self, now: float) -> list[Peer]:
        with self.lock:
            return self.liveness.newly_dead(now)
