"""Reading the bus from your own program: typed, validated messages for a topic prefix.

>>> from pipeline.client import subscribe
>>> from pipeline.messages import Commit
>>> for msg in subscribe("transcript.", config="configs/default.yaml", stop_after_eos=True):
...     if isinstance(msg, Commit):
...         print(f"{msg.latency:5.2f}s  {msg.text}")

:func:`subscribe` returns a :class:`Subscription`: an iterator (it can be
closed like a generator) that owns its SUB socket and closes it when it is
exhausted, closed, used as a context manager, or garbage-collected.
Malformed messages are skipped and counted (``rejected``); messages lost on
the way are counted from ``seq`` jumps per topic (``gaps``).

ZeroMQ subscriptions take a moment to reach the publishers ("slow joiner"):
messages published right after subscribing may be missed. Call
:meth:`Subscription.sync` (needs the broker's XSUB endpoint too) to wait
until the subscription is known to be in place.

``from_start=True`` first delivers the transcript so far, from a sink that
serves snapshots (``snapshot:`` in its config section, or ``snapshot=`` an
endpoint), then the live messages, without gaps or duplicates
(:mod:`pipeline.snapshot`); ``duplicates`` counts the live messages skipped
because the snapshot had them.

What is delivered is what the workers vouch for (``verify=True``, the default;
:mod:`pipeline.roster`): the subscription also listens to heartbeats, delivers a
transcript or partial only while its worker's heartbeat lists the stream, an
``eos`` only once the heartbeat of whoever served the stream lists it as ended,
and no commit with more text than its span can hold. ``ignored`` counts what was
not delivered (by reason: ``ignored_by``). Heartbeats themselves are delivered only
when a prefix asks for them.

Late messages of a pool worker that was presumed dead (an older ``epoch`` than one already
seen for the stream, :mod:`pipeline.epochs`) are skipped and counted (``stale``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace

import zmq

from . import messages as m
from .bus import Publisher, Subscriber, handshake
from .config import BusConfig, Config, ConfigError, load_config
from .epochs import EpochFilter
from .roster import Believer
from .sequence import GapCounter
from .snapshot import Merger, SnapshotError, fetch

_ids = itertools.count()


def bus_config(config: Config | str | os.PathLike | None = None, xpub: str | None = None,
               xsub: str | None = None) -> BusConfig:
    """The bus section of ``config`` (a Config, a BusConfig or a YAML path; defaults otherwise) with overrides."""
    if config is None:
        bus = BusConfig()
    elif isinstance(config, BusConfig):
        bus = config
    elif isinstance(config, Config):
        bus = config.bus
    else:
        bus = load_config(config, check_files=False).bus
    return replace(bus, xpub=xpub or bus.xpub, xsub=xsub or bus.xsub)


def snapshot_endpoint(config: Config | str | os.PathLike | None) -> str | None:
    """The snapshot endpoint of the first sink in ``config`` that serves one."""
    if config is None or isinstance(config, BusConfig):
        return None
    cfg = config if isinstance(config, Config) else load_config(config, check_files=False)
    return next((s.snapshot for s in cfg.sinks if s.snapshot), None)


class Subscription:
    """Valid messages on some topic prefixes, in arrival order."""

    def __init__(self, prefixes: str | Iterable[str] = "transcript.", *, config=None, xpub: str | None = None,
                 xsub: str | None = None, timeout: float | None = None, stop_after_eos: bool | int | None = None,
                 on_reject: Callable[[m.ProtocolError, list], None] | None = None,
                 context: zmq.Context | None = None, from_start: bool = False, snapshot: str | None = None,
                 verify: bool = True):
        self.prefixes = [prefixes] if isinstance(prefixes, str) else list(prefixes)
        self.bus = bus_config(config, xpub, xsub)
        self._believer = Believer(self.bus.heartbeat_interval) if verify else None
        self.timeout = timeout
        self.stop_after_eos = stop_after_eos
        self.on_reject = on_reject
        self.received = 0  # valid messages delivered
        self.rejected = 0  # malformed messages skipped
        self.gaps = 0  # messages missing, from seq jumps
        self.missing_before_last = 0  # how many were missing just before the last message
        self.eos_seen = 0
        self.last_topic: str | None = None
        self._gap_counter = GapCounter()
        self._open: set[str] = set()  # topics that have not sent eos
        self.duplicates = 0  # live messages skipped because the snapshot had them (from_start)
        self._epochs = EpochFilter()
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        wants_status = any("status.".startswith(p) or p.startswith("status.") for p in self.prefixes)
        extra = ["status."] if verify and not any("status.".startswith(p) for p in self.prefixes) else []
        self._deliver_status = wants_status
        self._sub: Subscriber | None = Subscriber(self._ctx, self.bus, self.prefixes + extra)
        self._pending: deque = deque()  # (topic, message) to deliver before reading the socket
        self._backlog: list = []  # frames that arrived during the sync
        self._merger: Merger | None = None
        self._snapshot = None
        if from_start:
            try:
                self._start_from_snapshot(snapshot or snapshot_endpoint(config))
            except BaseException:
                self.close()
                raise

    def _start_from_snapshot(self, endpoint: str | None) -> None:
        """Clone pattern: subscribe and sync, fetch the snapshot, then merge the live messages by seq."""
        if not endpoint:
            raise ConfigError("from the start: no sink in the config serves snapshots "
                              "(give a sink 'snapshot: ENDPOINT', or pass that endpoint)")
        self._snapshot = endpoint
        if not self.sync(timeout=10.0, keep=True):
            raise SnapshotError(f"the subscription did not reach the broker at {self.bus.xsub}")
        records = fetch(self._ctx, endpoint, self.prefixes, self.bus)
        self._merger = Merger(records)
        self._pending.extend(records)

    def _refill(self, topic: str, first: int, upto: int) -> list:
        """Messages ``first <= seq < upto`` of ``topic`` that the sink had not received at the first fetch."""
        got: list = []
        for attempt in range(3):
            try:
                got = self._merger.fill(topic, first, upto, fetch(self._ctx, self._snapshot, [topic], self.bus))
            except SnapshotError:
                got = []
            if len(got) == upto - first:
                break
            time.sleep(0.2 * (attempt + 1))
        return got

    # -- iteration ------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> m.Message:
        return self.next_item()[1]

    def items(self):
        """Iterate ``(topic, message)`` pairs instead of messages."""
        while True:
            try:
                yield self.next_item()
            except StopIteration:
                return

    def next_item(self) -> tuple[str, m.Message]:
        if self._sub is None or self._finished():
            self.close()
            raise StopIteration
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            if self._pending:
                got = self._deliver(*self._pending.popleft())
                if got is not None:
                    return got
                continue
            if self._backlog:
                frames = self._backlog.pop(0)
            else:
                # heartbeats (read for the believer) do not count as messages for the timeout
                timeout_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
                try:
                    frames = self._sub.recv_frames(timeout_ms)
                except zmq.ZMQError:
                    self.close()
                    raise StopIteration from None
            if frames is None:  # nothing for `timeout` seconds
                self.close()
                raise StopIteration
            try:
                topic, msg = m.decode(frames)
            except m.ProtocolError as exc:
                self.rejected += 1
                if self.on_reject is not None:
                    self.on_reject(exc, frames)
                continue
            if isinstance(msg, m.Heartbeat) and msg.role == "probe":
                continue  # bus-internal handshake traffic
            if self._believer is not None:
                now = time.monotonic()
                if isinstance(msg, m.Heartbeat):
                    self._pending.extend(self._believer.heartbeat(msg, now))
                    if self._deliver_status and topic.startswith(tuple(self.prefixes)):
                        return self._deliver(topic, msg)
                    continue
                self._pending.extend(self._believer.expire(now))
            if self._merger is not None:
                verdict = self._merger.check(topic, msg)
                if verdict == "dup":
                    self.duplicates += 1
                    continue
                if isinstance(verdict, int):  # the snapshot stopped short of this one: fill the hole
                    self._pending.extend(self._refill(topic, verdict, msg.seq))
                    self._pending.extend(self._believe(topic, msg))
                    continue
            self._pending.extend(self._believe(topic, msg))

    def _believe(self, topic: str, msg: m.Message) -> list:
        if self._believer is None:
            return [(topic, msg)]
        return self._believer.offer(topic, msg, time.monotonic())

    @property
    def ignored_by(self) -> dict[str, int]:
        """What was not delivered because nobody vouched for it, by reason (see :mod:`pipeline.roster`)."""
        if self._believer is None:
            return {}
        c = self._believer.counts
        return {"unserved": c.unserved, "unconfirmed_eos": c.unconfirmed_eos, "oversized": c.oversized}

    @property
    def ignored(self) -> int:
        return sum(self.ignored_by.values())

    @property
    def stale(self) -> int:
        """Messages skipped because a newer assignment epoch of their stream had been seen."""
        return self._epochs.stale

    def _deliver(self, topic: str, msg: m.Message) -> tuple[str, m.Message] | None:
        if not self._epochs.admit(topic, msg):
            return None
        self._track(topic, msg)
        self.received += 1
        self.last_topic = topic
        return topic, msg

    def _track(self, topic: str, msg: m.Message) -> None:
        ends = isinstance(msg, m.EndOfStream)
        self.missing_before_last = self._gap_counter.observe(topic, msg.seq, ends=ends)
        self.gaps += self.missing_before_last
        if ends:
            self.eos_seen += 1
            self._open.discard(topic)
        else:
            self._open.add(topic)

    def _finished(self) -> bool:
        stop = self.stop_after_eos
        if stop is None or stop is False or not self.eos_seen:
            return False
        if stop is True:
            return not self._open  # every topic seen so far has ended
        return self.eos_seen >= int(stop)

    # -- setup and teardown --------------------------------------------------------------------
    def sync(self, timeout: float = 10.0, keep: bool = False) -> bool:
        """Block until the subscription is in place at the broker (a probe comes back).

        Uses a short-lived publisher on the broker's XSUB endpoint. Messages
        that arrive meanwhile are dropped (they would predate the sync), or
        delivered later with ``keep``.
        """
        if self._sub is None:
            return False
        pub = Publisher(self._ctx, self.bus)
        try:
            return handshake(pub, self._sub, f"client-{os.getpid()}-{next(_ids)}", timeout=timeout,
                             backlog=self._backlog if keep else None)
        finally:
            pub.close()

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
            if self._own_ctx:
                self._ctx.term()

    @property
    def closed(self) -> bool:
        return self._sub is None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def subscribe(prefix: str | Iterable[str] = "transcript.", *, config=None, xpub: str | None = None,
              timeout: float | None = None, stop_after_eos: bool | int | None = None, **kwargs) -> Subscription:
    """Typed messages (:class:`pipeline.messages.Commit`, ``Partial``, ``EndOfStream``, ...) for a topic prefix.

    ``config``: a :class:`pipeline.config.Config` or a YAML path (its ``bus:``
    section); ``xpub`` overrides the broker's XPUB endpoint. ``timeout``:
    stop after that many seconds without a message (None: wait forever).
    ``stop_after_eos``: ``True`` stops once every topic that has carried a
    message has sent ``eos``; an integer stops after that many ``eos``.
    The eos message itself is delivered before stopping.
    ``from_start=True``: first the transcript so far from a sink's snapshot
    (the config's sink with ``snapshot:``, or ``snapshot=ENDPOINT``), then
    the live messages, without gaps or duplicates.
    """
    return Subscription(prefix, config=config, xpub=xpub, timeout=timeout, stop_after_eos=stop_after_eos, **kwargs)

