"""The broker: XSUB (publishers connect) <-> XPUB (subscribers connect).

It forwards messages one way and subscriptions the other, without decoding
them: validation is every receiving actor's job, so the hop stays cheap. It
counts what it carries and publishes its own heartbeat on ``status.<name>``.
Per-subscriber queues are bounded by the XPUB high-water mark: a subscriber
that stops reading loses messages (visible to it as gaps in ``seq``) and
never slows anyone else down. The broker cannot see per-subscriber losses
(ZeroMQ drops silently at the high-water mark); the subscriber can.

A frame over ``MAX_WIRE_BYTES`` (1 MiB) makes ZeroMQ drop the sender's
connection before anything is forwarded. With ``bus.security.curve`` both
sockets are CURVE servers and a ZAP authenticator admits only authorized
client keys (:mod:`pipeline.security`).

It looks at one thing of each message, its topic, against the publishing connection's
identity (the ZAP ``User-Id``: the key's name with CURVE, ``conn:<n>`` without;
:mod:`pipeline.permissions`): with CURVE a key may publish only its actor's topics
(``forbidden`` counts the rest), and every identity may keep only so many stream ids live
(``over_quota`` counts the messages for more).
"""

from __future__ import annotations

import time

import zmq

from pipeline import messages as m
from pipeline.bus import MAX_WIRE_BYTES, apply_options, prepare_bind
from pipeline.permissions import PublisherQuota, TopicGuard, quota_limits

from .base import Actor, actor_config, add_actor_arguments, run_actor

# After a stop signal: exit once nothing moved for this long (at least two heartbeat intervals, so an
# actor still draining, e.g. a sink waiting for a worker's final flush, keeps the broker up with its heartbeats)
DRAIN_QUIET_S = 2.0
DRAIN_MAX_S = 4.0  # ... or after this long at most (process managers kill at ~5 s)
MAX_SUBSCRIPTION_BYTES = 4096  # a subscriber's (un)subscribe frame; larger ones drop its connection


class Broker(Actor):
    role = "broker"

    def __init__(self, name, bus, config=None):
        super().__init__(name, bus, config)
        self.xsub = None
        self.xpub = None
        self.auth = None  # the ZAP authenticator: every publishing connection gets an identity
        self.counters.update({"messages": 0, "subscriptions": 0, "bytes": 0, "forbidden": 0, "over_quota": 0})
        from pipeline.config import Config

        cfg = config if config is not None else Config(bus=bus)
        self.guard = TopicGuard(cfg) if bus.security.enabled else None
        self.quota = PublisherQuota(quota_limits(cfg))
        self._rate_window = (time.monotonic(), 0)
        self.counters["messages_per_s"] = 0.0

    def send_status(self, topic: str, hb: m.Heartbeat) -> None:
        try:
            self.xpub.send_multipart(m.encode(topic, hb), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.counters["dropped"] += 1

    def _bind(self):
        from pipeline.security import ZAP_DOMAIN, apply_server_keys, start_authenticator

        self.auth = start_authenticator(self.ctx, self.bus.security)
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xpub = self.ctx.socket(zmq.XPUB)
        for sock in (self.xsub, self.xpub):
            apply_options(sock, self.bus)
            if self.bus.security.enabled:
                apply_server_keys(sock, self.bus.security)
        if not self.bus.security.enabled:
            self.xsub.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)  # plain connections get an identity too
        self.xsub.setsockopt(zmq.RCVHWM, int(self.bus.hwm))
        self.xsub.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
        self.xpub.setsockopt(zmq.SNDHWM, int(self.bus.hwm))
        self.xpub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        try:
            for endpoint in (self.bus.xsub, self.bus.xpub):
                prepare_bind(endpoint)
            self.xsub.bind(self.bus.xsub)
            self.xpub.bind(self.bus.xpub)
        except zmq.ZMQError as exc:
            raise zmq.ZMQError(exc.errno, f"cannot bind {self.bus.xsub} / {self.bus.xpub}: {exc.strerror}") from None

    def info(self) -> dict:
        return {"xsub": self.bus.xsub, "xpub": self.bus.xpub}

    def run(self) -> int:
        self.install_signals()
        self.start_http()
        self.ctx = zmq.Context()
        try:
            self._bind()
            self.ready = True
            self.log.info("forwarding %s -> %s", self.bus.xsub, self.bus.xpub)
            return self._forward()
        finally:
            self.stop_http()
            for sock in (self.xsub, self.xpub):
                if sock is not None:
                    sock.close()
            if self.auth is not None:
                self.auth.stop()
            self.ctx.term()

    def _forward(self) -> int:
        poller = zmq.Poller()
        poller.register(self.xsub, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        interval = self.bus.heartbeat_interval
        last_traffic = time.monotonic()
        while True:
            now = time.monotonic()
            if self.stopping:
                # Keep forwarding while the others drain (a worker's final flush
                # must still cross the broker), until traffic goes quiet.
                if not self._drain_started:
                    self._drain_started = now
                    self.log.info("stop signal: forwarding until the bus is quiet")
                quiet = now - last_traffic >= max(DRAIN_QUIET_S, 2 * interval)
                if quiet or now - self._drain_started >= DRAIN_MAX_S:
                    break
            if now >= self._next_heartbeat:
                self._update_rate(now)
                self.heartbeat()
                self._next_heartbeat = now + interval
            try:
                events = dict(poller.poll(100))
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EINTR:
                    continue
                raise
            if self.xsub in events:
                for _ in range(1000):
                    try:
                        frames = self.xsub.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    last_traffic = time.monotonic()
                    self.counters["messages"] += 1
                    self.counters["bytes"] += sum(len(f) for f in frames)
                    if not self._may_pass(frames, last_traffic):
                        continue
                    try:
                        self.xpub.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        self.counters["dropped"] += 1
            if self.xpub in events:
                while True:
                    try:
                        frame = self.xpub.recv(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.counters["subscriptions"] += 1
                    self.xsub.send(frame)
        self.heartbeat()
        return 0

    def _may_pass(self, frames, now: float) -> bool:
        """The publishing connection may publish this topic, and has room for its stream id."""
        topic = frames[0].bytes
        try:
            identity = frames[0].get("User-Id")
        except zmq.ZMQError:  # no ZAP identity (cannot happen with the authenticator running)
            identity = ""
        if self.guard is not None and not self.guard.allowed(identity, topic):
            self.counters["forbidden"] += 1
            self.limited.warning(f"forbidden:{identity}", "dropped a message on %s from %s: that key may not "
                                 "publish there", topic[:80].decode("utf-8", "replace"), identity)
            return False
        if not self.quota.admit(identity, topic, now):
            self.counters["over_quota"] += 1
            self.limited.warning(f"quota:{identity}", "dropped a message on %s from %s: it has too many streams "
                                 "live", topic[:80].decode("utf-8", "replace"), identity)
            return False
        return True

    def _update_rate(self, now: float) -> None:
        t0, n0 = self._rate_window
        if now > t0:
            self.counters["messages_per_s"] = round((self.counters["messages"] - n0) / (now - t0), 1)
        self._rate_window = (now, self.counters["messages"])


def register(sub) -> None:
    p = sub.add_parser("broker", help="run the bus broker (XSUB/XPUB forwarder)")
    add_actor_arguments(p, "broker")
    p.set_defaults(func=run)


def run(args) -> int:
    def build():
        cfg = actor_config(args, "broker", {"name": args.name})
        return Broker(cfg.broker.name, cfg.bus, cfg)

    return run_actor(build)
