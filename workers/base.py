"""The process base every voxpipe actor shares.

An :class:`Actor` owns one PUB and one SUB socket on the bus, a named logger
and a set of counters. :meth:`Actor.run` does, in order: install signal
handlers, open sockets, :meth:`setup` (heavy loading: a worker's model), the
bus handshake, then the loop: receive and validate messages, call
:meth:`handle`, call :meth:`tick`, publish a heartbeat about once a second.

* A malformed message is dropped, counted (``rejected``) and logged without
  flooding the log; an exception in a handler is logged (rate-limited too)
  and counted (``errors``); the actor never dies of either. Messages lost on
  the way in show as ``gaps`` (seq jumps per topic). Actors that keep
  per-stream state bound it with :meth:`Actor.admit_stream` (``max_streams``,
  refusals counted as ``streams_refused``) and idle timeouts.
* Heartbeats say what the actor serves (``info.streams``) and which streams it has just
  ended (``info.ended``, from :meth:`Actor.note_ended`): receivers believe ends of streams
  and transcripts by them (:mod:`pipeline.roster`). :meth:`Actor.announce` sends the next
  heartbeat at once (a stream was admitted or ended).
* With CURVE, an actor uses the keypair named after it when ``voxpipe keys DIR --config C``
  made one (the broker lets each actor publish only its own topics), else the shared client
  keypair.
* First SIGTERM/SIGINT: :meth:`drain` (capture sends ``eos``, workers flush,
  sinks write), then exit 0 once :meth:`drained` says so. Second: exit now.
* Sockets are closed in ``finally``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Iterable

import zmq

from pipeline import messages as m
from pipeline.bus import Publisher, Subscriber, handshake
from pipeline.config import BusConfig, Config, ConfigError, Override, load_config
from pipeline.errors import ExitCode
from pipeline.roster import ENDED_KEEP
from pipeline.sequence import GapCounter

MAX_ENDED = 64  # streams listed in info.ended at most


class RateLimitedLog:
    """Log the first few occurrences of a problem, then a count every interval.

    Problems are told apart by ``key``; past ``max_keys`` distinct keys (e.g.
    one per stream id in a flood) new keys share one, so neither memory nor
    the log grows with them.
    """

    def __init__(self, log: logging.Logger, first: int = 5, every: float = 10.0, max_keys: int = 256):
        self.log, self.first, self.every, self.max_keys = log, first, every, max_keys
        self.counts: dict[str, int] = {}
        self.suppressed: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def warning(self, key: str, msg: str, *args, level: int = logging.WARNING, exc_info: bool = False) -> None:
        if key not in self.counts and len(self.counts) >= self.max_keys:
            key = "(other)"
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        now = time.monotonic()
        if n <= self.first:
            self.log.log(level, msg, *args, exc_info=exc_info)
            self.last[key] = now
            return
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        if now - self.last.get(key, 0.0) >= self.every:
            self.log.log(level, "%s (and %d more like it)", msg % args if args else msg, self.suppressed[key])
            self.suppressed[key] = 0
            self.last[key] = now


class Actor:
    role = "actor"

    def __init__(self, name: str, bus: BusConfig, config: Config | None = None):
        if not m.valid_id(name):
            raise ConfigError(f"actor name {name!r} must be 1-64 letters, digits, '_', '-', ':' or '@'")
        self.name = name
        self.bus = _own_keys(bus, name)
        self.config = config
        self.log = logging.getLogger(f"voxpipe.{self.role}.{name}")
        self.limited = RateLimitedLog(self.log)
        self.counters: dict[str, int | float] = {
            "frames_in": 0, "frames_out": 0, "rejected": 0, "dropped": 0, "errors": 0, "streams_active": 0,
            "gaps": 0,
        }
        self._gaps = GapCounter()  # messages lost on the way in, per topic
        self.missing = 0  # messages lost just before the one being handled (seq jump on its topic)
        self.sender_restarted = False  # the one being handled starts a new seq run (its sender restarted)
        self._ended: deque = deque(maxlen=MAX_ENDED)  # (stream, monotonic time) of recent eos
        self.ready = False
        self.stopping = False
        self._signals = 0
        self._drain_started = 0.0
        self.drain_timeout = 30.0
        self.ctx: zmq.Context | None = None
        self.pub: Publisher | None = None
        self.sub: Subscriber | None = None
        self._next_heartbeat = 0.0
        self._hb_seq = 0
        self.poll_ms = 50

    # -- to override ------------------------------------------------------------
    def subscriptions(self) -> Iterable[str]:
        return ()

    def setup(self) -> None:
        """Heavy start-up work; the actor reports ready only after it."""

    def handle(self, topic: str, msg: m.Message) -> None:
        """One valid message from the bus."""

    def tick(self, now: float) -> None:
        """Called every loop iteration (about every ``poll_ms``)."""

    def drain(self) -> None:
        """First stop signal: finish what is in flight (send eos, flush, write)."""

    def drained(self) -> bool:
        return True

    def info(self) -> dict:
        """Extra heartbeat fields (e.g. a worker's backend and model)."""
        return {}

    def teardown(self) -> None:
        """Last words before sockets close (always called)."""

    # -- helpers -----------------------------------------------------------------
    def publish(self, topic: str, msg: m.Message) -> bool:
        ok = self.pub.send(topic, msg)
        if ok:
            self.counters["frames_out"] += 1
        else:
            self.counters["dropped"] += 1
        return ok

    def admit_stream(self, stream: str, active: int, limit: int) -> bool:
        """May a new stream start, with ``active`` streams live? Refusals are counted and logged (rate-limited)."""
        if active < limit:
            return True
        self.counters["streams_refused"] = self.counters.get("streams_refused", 0) + 1
        self.limited.warning("streams_full", "refused new stream %s: %d streams live (max_streams %d); "
                             "room is made when a stream ends or idles out", stream, active, limit)
        return False

    def note_ended(self, stream: str) -> None:
        """This actor published ``eos`` for ``stream``: list it in ``info.ended`` and say so now."""
        self._ended.append((stream, time.monotonic()))
        self.announce()

    def announce(self) -> None:
        """Send the next heartbeat at once (what this actor serves has changed)."""
        self._next_heartbeat = min(self._next_heartbeat, time.monotonic())

    def _recently_ended(self) -> list[str]:
        keep = time.monotonic() - ENDED_KEEP * self.bus.heartbeat_interval
        return sorted({s for s, t in self._ended if t >= keep})

    def heartbeat(self) -> None:
        try:
            info = self.info()
            ended = self._recently_ended()
            if ended:
                info = {**info, "ended": ended}
            hb = m.Heartbeat(
                stream="", seq=self._hb_seq, name=self.name, role=self.role, ready=self.ready,
                pid=os.getpid(), time=time.time(), counters=dict(self.counters), info=info,
            )
            self._hb_seq += 1
            self.send_status(m.status_topic(self.name), hb)
        except Exception:  # noqa: BLE001 - a heartbeat never takes the actor down
            self.counters["errors"] += 1
            self.limited.warning("heartbeat", "cannot publish a heartbeat", level=logging.ERROR, exc_info=True)

    def send_status(self, topic: str, hb: m.Heartbeat) -> None:
        self.pub.send(topic, hb)

    def _on_signal(self, signum, _frame) -> None:
        self._signals += 1
        if self._signals >= 2:
            self.log.warning("second stop signal: exiting now")
            raise SystemExit(ExitCode.for_signal(signum))
        self.log.info("stop signal: draining")
        self.stopping = True

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def receive(self, frames: list[bytes]) -> None:
        self.counters["frames_in"] += 1
        try:
            topic, msg = m.decode(frames)
        except m.ProtocolError as exc:
            self.counters["rejected"] += 1
            self.limited.warning(f"reject:{exc.reason}", "rejected a message: %s", exc)
            return
        if isinstance(msg, m.Heartbeat) and msg.role == "probe":
            if msg.name != self.name:
                return
        else:
            self._track_seq(topic, msg)
        try:
            self.handle(topic, msg)
        except Exception as exc:  # noqa: BLE001 - an actor never dies of one message
            self.counters["errors"] += 1
            self.limited.warning(f"error:{msg.kind}:{type(exc).__name__}", "error while handling %s on %s",
                                 msg.kind, topic, level=logging.ERROR, exc_info=True)

    def _track_seq(self, topic: str, msg: m.Message) -> None:
        """Count messages lost on the way in (``gaps``), from seq jumps per topic."""
        self.missing = self._gaps.observe(topic, msg.seq, ends=isinstance(msg, m.EndOfStream))
        self.sender_restarted = self._gaps.restarted
        self.counters["gaps"] += self.missing
        if self._gaps.implausible:
            self.counters["seq_implausible"] = self._gaps.implausible

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> int:
        self.install_signals()
        self.ctx = zmq.Context()
        try:
            self.pub = Publisher(self.ctx, self.bus)
            self.sub = Subscriber(self.ctx, self.bus, self.subscriptions())
            self.setup()
            backlog: list = []
            if not self.stopping:
                if not handshake(self.pub, self.sub, self.name, timeout=5.0, backlog=backlog):
                    self.log.warning("no answer through the broker yet (is it running?); going on")
            self.ready = True
            self.log.info("ready")
            for frames in backlog:
                self.receive(frames)
            return self.loop()
        finally:
            try:
                self.teardown()
            finally:
                for sock in (self.sub, self.pub):
                    if sock is not None:
                        sock.close()
                self.ctx.term()

    def loop(self) -> int:
        interval = self.bus.heartbeat_interval
        while True:
            now = time.monotonic()
            if now >= self._next_heartbeat:
                self.heartbeat()
                self._next_heartbeat = now + interval
            if self.stopping:
                if not self._drain_started:
                    self._drain_started = now
                    self.drain()
                if self.drained() or now - self._drain_started > self.drain_timeout:
                    self.heartbeat()
                    return ExitCode.OK
            try:
                if self.sub.sock.poll(self.poll_ms):
                    # take what is queued, but never starve tick() and heartbeats
                    for _ in range(1000):
                        try:
                            frames = self.sub.sock.recv_multipart(flags=zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.receive(frames)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EINTR:
                    continue
                raise
            try:
                self.tick(time.monotonic())
            except Exception:  # noqa: BLE001
                self.counters["errors"] += 1
                self.log.exception("error in tick")


def _own_keys(bus: BusConfig, name: str) -> BusConfig:
    """``bus`` with this actor's own CURVE keypair when there is one (see :func:`pipeline.security.for_actor`)."""
    if not bus.security.enabled:
        return bus
    import dataclasses

    from pipeline.security import for_actor

    return dataclasses.replace(bus, security=for_actor(bus.security, name))


# -- command-line plumbing shared by the actor subcommands -------------------------------
def add_actor_arguments(p: argparse.ArgumentParser, default_name: str) -> None:
    p.add_argument("--config", "-c", default=None, help="pipeline YAML (bus endpoints and this actor's section)")
    p.add_argument("--name", default=None, help=f"actor name (default: {default_name} or the config's)")
    p.add_argument("--xsub", default=None, help="broker XSUB endpoint (overrides the config)")
    p.add_argument("--xpub", default=None, help="broker XPUB endpoint (overrides the config)")
    p.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def actor_config(args, section: str | None = None, values: dict | None = None, **pick) -> Config:
    """The config for an actor subcommand: ``--config`` (or the defaults) with its command-line overrides.

    ``section`` and ``values`` are this actor's own overrides (``pick``: how its item of a
    list section is found, see :class:`pipeline.config.Override`); ``--xsub``/``--xpub``
    apply to the bus. Everything is validated once, together.
    """
    overrides = [Override("bus", {"xsub": args.xsub, "xpub": args.xpub})]
    if section is not None:
        overrides.append(Override(section, dict(values or {}), name=getattr(args, "name", None), **pick))
    return load_config(args.config, overrides=overrides)


def run_actor(build) -> int:
    """Build an actor (a callable returning it) and run it; errors reach the command line's one exit rule."""
    return build().run()
