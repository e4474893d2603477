"""The dispatcher: each stream to exactly one worker of each pool, and on to another when that one stops.

``voxpipe dispatcher`` runs in a pipeline whose pools have more than one worker (or with
``dispatcher: {enabled: true}``). It subscribes to the pools' input (``speech.*`` from the
VAD, or ``audio.*`` for pools without it; ``audio.*`` in any case, so a new stream is placed
at its first frame), to the pools' transcripts (to know how far each stream is committed)
and to ``status.*`` (the workers' heartbeats: pool, slots, draining, liveness). It
re-publishes each stream's messages on ``dispatch.<worker>.<stream>`` for the one worker that
holds it, and keeps them from a little before the stream's last commit, so that another
worker can take over without losing a word. The rules are :mod:`workers.pool_table`'s.

Its publisher is an XPUB socket, so it knows when a worker's ``dispatch.<worker>.``
subscription has reached it and never assigns a stream to a worker that would not hear it.

On the first SIGTERM it goes on forwarding until every stream it serves has ended (or
``DRAIN_S``), so the workers' final flush still gets its input's ``eos``.
"""

from __future__ import annotations

import math
import time

from pipeline import messages as m
from pipeline.bus import Publisher
from pipeline.config import DispatcherConfig
from pipeline.liveness import Liveness
from pipeline.roster import Believer

from .base import Actor, actor_config, add_actor_arguments, run_actor
from .pool_table import REFUSED, PoolTable

DRAIN_S = 10.0
INFO_STREAMS = 64  # streams listed in the heartbeat


def pool_inputs(cfg) -> dict[str, str]:
    """Pool name -> the family its workers take (``speech`` or ``audio``)."""
    return {w.pool_name: w.input for w in cfg.workers}


class Dispatcher(Actor):
    role = "dispatcher"

    def __init__(self, name, bus, dcfg: DispatcherConfig, pools: dict[str, str], config=None):
        super().__init__(name, bus, config)
        self.dcfg = dcfg
        self.pools = pools
        misses = max(1, math.ceil(dcfg.dead_after / bus.heartbeat_interval - 1e-9))
        self.liveness = Liveness(interval=dcfg.dead_after / misses, misses=misses)
        # the workers' heartbeats must come in before the first stream is placed
        self.table = PoolTable(pools, dcfg, self.liveness, time.monotonic(), grace=1.5 * bus.heartbeat_interval)
        self.believer = Believer(bus.heartbeat_interval)
        self.drain_timeout = DRAIN_S
        self.poll_ms = 20

    def subscriptions(self):
        subs = ["audio.", "status."]
        if "speech" in self.pools.values():
            subs.append("speech.")
        return subs + [f"transcript.{p}." for p in self.pools]

    def setup(self) -> None:
        self.pub.close()  # an XPUB instead: it sees the workers' subscriptions arrive
        self.pub = Publisher(self.ctx, self.bus, watch_subscriptions=True)
        self.table.assign_after = time.monotonic() + 1.5 * self.bus.heartbeat_interval
        self.log.info("pools: %s; a worker is dead after %.1fs without a heartbeat",
                      ", ".join(f"{p} ({f})" for p, f in self.pools.items()), self.liveness.timeout)

    def handle(self, topic: str, msg: m.Message) -> None:
        now = time.monotonic()
        if isinstance(msg, m.Heartbeat):
            self.table.on_heartbeat(msg, now)
            self._take(self.believer.heartbeat(msg, now), now)
        else:
            # an eos of a stream the VAD (or capture) announced counts once its heartbeat lists it as ended
            # (pipeline.roster): the workers take what we forward as said
            family = topic.partition(".")[0]
            if family in ("audio", "speech"):
                self._take(self.believer.offer(topic, msg, now), now)
            elif family == "transcript":
                self.table.on_transcript(topic, msg)
        self._send()

    def _take(self, believed, now: float) -> None:
        for topic, msg in believed:
            family = topic.partition(".")[0]
            if family in ("audio", "speech"):
                self.table.on_input(family, msg, now)

    def tick(self, now: float) -> None:
        for subscribed, prefix in self.pub.subscription_changes():
            self.table.on_subscription(subscribed, prefix)
        self._take(self.believer.expire(now), now)
        self.counters["unconfirmed_eos"] = self.believer.counts.unconfirmed_eos
        self.table.tick(now)
        self._send()

    def _send(self) -> None:
        out, self.table.out = self.table.out, []
        for topic, msg in out:
            self.publish(topic, msg)
            if isinstance(msg, m.EndOfStream) and topic.startswith("transcript."):
                self.note_ended(msg.stream)  # listed in info.ended: receivers believe this eos
        c = self.table.counters
        self.counters.update(c)
        self.counters["streams_active"] = sum(1 for e in self.table.entries.values() if e.state != REFUSED)

    def info(self) -> dict:
        return self.table.info(time.monotonic(), INFO_STREAMS)

    def drained(self) -> bool:
        return not any(e.state != REFUSED for e in self.table.entries.values())


def register(sub) -> None:
    p = sub.add_parser("dispatcher", help="assign each stream to one worker of each pool (pools with replicas)")
    add_actor_arguments(p, "dispatcher")
    p.add_argument("--dead-after", type=float, default=None,
                   help="seconds without a heartbeat after which a worker is dead (default 3)")
    p.set_defaults(func=run)


def run(args) -> int:
    def build():
        cfg = actor_config(args, "dispatcher", {"name": args.name, "dead_after": args.dead_after})
        return Dispatcher(cfg.dispatcher.name, cfg.bus, cfg.dispatcher, pool_inputs(cfg), cfg)

    return run_actor(build)
