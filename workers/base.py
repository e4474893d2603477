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
* With the config's ``health:`` section on, ``/healthz`` and ``/readyz`` answer on the actor's
  port from before :meth:`setup` (:mod:`workers.health_http`); every heartbeat carries the
  host name, CPU seconds and resident memory of the process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable

import zmq

from pipeline import messages as m
from pipeline.bus import Publisher, Subscriber, handshake
from pipeline.config import BusConfig, Config, ConfigError, Override, load_config
from pipeline.errors import ExitCode
from pipeline.liveness import Liveness
from pipeline.logformat import FORMATS, set_actor, stream_context
from pipeline.roster import ENDED_KEEP
from pipeline.sequence import GapCounter

HOST = socket.gethostname()
MAX_ENDED = 64  # streams listed in info.ended at most


def process_usage() -> tuple[float, int | None]:
    """CPU seconds (user + system) of this process and its resident memory in bytes (None where unknown)."""
    t = os.times()
    rss = None
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the peak, not the current size
            rss = peak if sys.platform == "darwin" else peak * 1024
        except (ImportError, OSError):
            pass
    return round(t.user + t.system, 3), rss


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
        self._last_heartbeat = 0.0  # monotonic time of the last heartbeat sent
        self.http = None  # the health listener, when the config turns it on
        self.poll_ms = 50
        self.heard_all_at = time.monotonic()  # when the loop last found nothing more queued (see heard_all)

    def heard_all(self) -> float:
        """The last (monotonic) time this actor had taken everything queued for it.

        A clock for "nothing came for so long": a stall of the actor itself (a busy core, a flood
        it had to read through) does not pass for the senders' silence, because it stands still
        until the queue is read.
        """
        return self.heard_all_at

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

    def http_address(self) -> tuple[str, int] | None:
        """Where this actor's health listener binds (None: no listener); from the config's ``health:``."""
        if self.config is None:
            return None
        port = self.config.health.port_for(self.name, self.config.actor_names())
        return None if port is None else (self.config.health.host, port)

    def http_routes(self) -> dict:
        """Extra paths for the health listener: path -> callable returning (status, content type, body)."""
        return {}

    def readiness(self) -> tuple[bool, str]:
        """(ready?, why not): set up, handshake done, not draining, and the loop still heartbeating."""
        if not self.ready:
            return False, "starting"
        if self.stopping:
            return False, "draining"
        timeout = Liveness(self.bus.heartbeat_interval).timeout  # the one liveness rule
        late = time.monotonic() - self._last_heartbeat
        if late > timeout:
            return False, f"no heartbeat for {late:.1f}s"
        return True, ""

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
            cpu, rss = process_usage()
            info = {"host": HOST, **self.info()}
            if rss is not None:
                info.setdefault("rss_bytes", rss)
            ended = self._recently_ended()
            if ended:
                info["ended"] = ended
            hb = m.Heartbeat(
                stream="", seq=self._hb_seq, name=self.name, role=self.role, ready=self.ready,
                pid=os.getpid(), time=time.time(), counters={**self.counters, "cpu_seconds": cpu}, info=info,
            )
            self._hb_seq += 1
            self.send_status(m.status_topic(self.name), hb)
            self._last_heartbeat = time.monotonic()
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
            with stream_context(msg.stream):
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
    def start_http(self) -> None:
        """Start the health listener (when configured); a port already taken is one clear error."""
        set_actor(self.name)
        addr = self.http_address()
        if addr is None:
            return
        from .health_http import HealthServer

        try:
            self.http = HealthServer(addr[0], addr[1], self.readiness, self.http_routes()).start()
        except OSError as exc:
            where = f"http://{addr[0]}:{addr[1]}"
            raise ConfigError(f"{self.name}: cannot listen on {where}: {exc.strerror or exc}") from None
        self.log.info("health endpoints on http://%s:%d/healthz and /readyz", addr[0], self.http.port)

    def stop_http(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None

    def run(self) -> int:
        self.install_signals()
        self.start_http()
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
                self.stop_http()
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
                            self.heard_all_at = time.monotonic()
                            break
                        self.receive(frames)
                else:
                    self.heard_all_at = time.monotonic()
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
    p.add_argument("--log-level", "-l", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    p.add_argument("--log-format", default=None, choices=list(FORMATS),
                   help="text (default, or VOXPIPE_LOG_FORMAT) or json: one JSON object per line")
    p.add_argument("--health-port", type=int, default=None,
                   help="serve /healthz and /readyz on this port (overrides the config's health: section)")
    p.add_argument("--health-host", default=None, help="address the health listener binds (default 127.0.0.1)")


def actor_config(args, section: str | None = None, values: dict | None = None, **pick) -> Config:
    """The config for an actor subcommand: ``--config`` (or the defaults) with its command-line overrides.

    ``section`` and ``values`` are this actor's own overrides (``pick``: how its item of a
    list section is found, see :class:`pipeline.config.Override`); ``--xsub``/``--xpub``
    apply to the bus. Everything is validated once, together.
    """
    overrides = [Override("bus", {"xsub": args.xsub, "xpub": args.xpub})]
    port = getattr(args, "health_port", None)
    if port is not None or getattr(args, "health_host", None):
        # --health-port: this actor listens on that port (one actor per container or pod)
        overrides.append(Override("health", {"enabled": True, "host": getattr(args, "health_host", None),
                                             "port": port, "consecutive": False if port is not None else None}))
    if section is not None:
        overrides.append(Override(section, dict(values or {}), name=getattr(args, "name", None), **pick))
    return load_config(args.config, overrides=overrides)


def run_actor(build) -> int:
    """Build an actor (a callable returning it) and run it; errors reach the command line's one exit rule."""
    return build().run()
