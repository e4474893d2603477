"""Who serves which stream, from heartbeats, and what a receiver believes because of it.

Anyone who can reach the bus may publish on any topic (on a loopback bus every local user
is trusted; with CURVE the broker's topic rules, :mod:`pipeline.permissions`, are what stop
that). Well-formed lies must still not end or fill other people's streams, so every actor's
heartbeat (protocol section 4.8) says what it serves: ``info.streams`` (a capture's
``info.stream``) and ``info.ended``, the streams it published ``eos`` for in the last few
heartbeat intervals. A :class:`Roster` keeps the latest of these per actor
(:mod:`pipeline.liveness` says who is alive), and a :class:`Believer` holds back what the
roster does not (yet) vouch for:

* a ``commit``, ``partial`` or ``error`` on ``transcript.W.S`` / ``partial.W.S`` is believed
  while worker ``W`` is alive and lists ``S``; one that comes before ``W``'s heartbeat does
  is held (up to ``hold`` seconds), then dropped (``unserved``);
* an ``eos`` on ``transcript.W.S`` is believed once a heartbeat of ``W`` that came after it
  lists ``S`` among its ended streams; else dropped after ``hold`` (``unconfirmed_eos``);
* an ``eos`` on ``audio.S`` / ``speech.S`` is believed once some heartbeat lists ``S`` as
  ended, when ``S`` is a stream some heartbeat announced; for a stream nobody announced (a
  producer that publishes no heartbeats) it is believed at once;
* a commit with more text or words than its span can hold is dropped (``oversized``).

In a worker pool (docs/running.md, "Worker pools") ``W`` is the pool: a replica's heartbeat
names its pool (``info.pool``) and the dispatcher's lists the pools it routes (``info.pools``)
and the streams it holds (``info.streams``, ``"<pool>/<stream>"``); whoever of them is alive
and lists ``S`` vouches for ``transcript.W.S``.

Memory is bounded: at most ``MAX_LISTED`` streams per actor, ``MAX_ACTORS`` actors,
``max_held`` held messages (the oldest goes first).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from . import messages as m
from .liveness import Liveness

MAX_LISTED = 256  # streams taken from one heartbeat's lists
MAX_ACTORS = 1024  # actors whose lists are kept (the least recently heard is forgotten first)
ENDED_KEEP = 3.0  # heartbeat intervals an ended stream stays in its actor's info.ended
# the most a commit may carry for its span (speech is ~15 characters, ~3 words a second)
TEXT_PER_SECOND, TEXT_BASE = 60, 400
WORDS_PER_SECOND, WORDS_BASE = 12, 40
GATED_FAMILIES = ("transcript", "partial")


def plausible(msg: m.Commit) -> bool:
    """Does a commit's text and word count fit its span (a worker commits speech, not a novel)?"""
    span = max(0.0, msg.end - msg.beg)
    return (len(msg.text) <= TEXT_BASE + TEXT_PER_SECOND * span
            and len(msg.words) <= WORDS_BASE + WORDS_PER_SECOND * span)


def _ids(value) -> set[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return set()
    return {s for s in value[:MAX_LISTED] if m.valid_id(s)}


@dataclass
class Listing:
    role: str
    streams: set = field(default_factory=set)
    ended: set = field(default_factory=set)
    pools: set = field(default_factory=set)  # the pools whose topics this actor publishes on (besides its name)


def _pool_listing(hb: m.Heartbeat, info: dict) -> tuple[set, set]:
    """(pools, streams) a pool member or the dispatcher speaks for, from its heartbeat."""
    if hb.role == "dispatcher":
        pools = info.get("pools")
        held = info.get("streams")
        names = _ids(list(pools)[:MAX_LISTED] if isinstance(pools, dict) else pools)
        keys = list(held)[:MAX_LISTED] if isinstance(held, dict) else []
        streams = {k.partition("/")[2] for k in keys if isinstance(k, str)}
        return names, {s for s in streams if m.valid_id(s)}
    pool = info.get("pool")
    return ({pool} if m.valid_id(pool) and pool != hb.name else set()), set()


class Roster:
    """The latest stream lists of every actor heard on ``status.*``."""

    def __init__(self, interval: float = 1.0, misses: int = 3):
        self.liveness = Liveness(interval, misses)
        self.listings: OrderedDict[str, Listing] = OrderedDict()
        self.members: dict[str, set[str]] = {}  # pool -> the actors whose heartbeats speak for it

    def beat(self, hb: m.Heartbeat, now: float) -> Listing | None:
        if hb.role == "probe" or not hb.name:
            return None
        self.liveness.beat(hb, now)
        info = hb.info if isinstance(hb.info, dict) else {}
        streams = _ids(info.get("streams", ()))
        if hb.role == "capture" and info.get("state") != "done":
            streams |= _ids(info.get("stream"))
        pools, pool_streams = _pool_listing(hb, info)
        listing = Listing(hb.role, streams | pool_streams, _ids(info.get("ended", ())), pools)
        self._forget_pools(hb.name, self.listings.pop(hb.name, None))
        self.listings[hb.name] = listing
        for pool in pools:
            self.members.setdefault(pool, set()).add(hb.name)
        while len(self.listings) > MAX_ACTORS:
            name, old = self.listings.popitem(last=False)
            self._forget_pools(name, old)
            self.liveness.forget(name)
        return listing

    def serves(self, actor: str, stream: str, now: float) -> bool:
        """``actor`` (or, for a pool, one of its members) is alive and its latest heartbeat lists ``stream``
        (served or just ended)."""
        return self._lists(actor, stream, now) or any(self._lists(n, stream, now) for n in self.members.get(actor, ()))

    def _lists(self, name: str, stream: str, now: float) -> bool:
        ls = self.listings.get(name)
        return ls is not None and (stream in ls.streams or stream in ls.ended) and self.liveness.alive(name, now)

    def _forget_pools(self, name: str, listing: Listing | None) -> None:
        for pool in listing.pools if listing is not None else ():
            names = self.members.get(pool)
            if names is not None:
                names.discard(name)
                if not names:
                    del self.members[pool]

    def announced(self, stream: str, now: float) -> bool:
        """Some live actor's latest heartbeat lists ``stream``."""
        return any(stream in ls.streams or stream in ls.ended for name, ls in self.listings.items()
                   if self.liveness.alive(name, now))


@dataclass
class _Held:
    topic: str
    msg: m.Message
    arrived: float
    worker: str  # transcript/partial: the topic's worker; else ""
    announced: bool = True  # audio/speech eos: some heartbeat listed the stream when it came
    confirmed: bool = False  # an eos: a heartbeat after it listed the stream as ended


@dataclass
class BelieverCounts:
    unserved: int = 0  # transcript messages for a stream their worker does not serve
    unconfirmed_eos: int = 0  # eos nobody who serves the stream confirmed
    oversized: int = 0  # commits with more text or words than their span can hold
    held: int = 0  # messages that had to wait for a heartbeat

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Believer:
    """Messages in, believed messages out (in order per topic); heartbeats decide.

    ``offer`` a message (heartbeats go to ``heartbeat``); both return what can be delivered
    now. Call ``expire`` now and then: held messages older than ``hold`` are dropped (counted).
    Topics other than transcripts, partials and ends of streams pass straight through.
    """

    def __init__(self, interval: float = 1.0, hold: float | None = None, max_held: int = 1024,
                 roster: Roster | None = None):
        self.roster = roster or Roster(interval)
        self.hold = hold if hold is not None else max(2.0, 3 * interval)
        self.max_held = max_held
        self.queues: OrderedDict[str, deque] = OrderedDict()
        self.n_held = 0
        self.counts = BelieverCounts()

    # -- in ----------------------------------------------------------------------------------
    def offer(self, topic: str, msg: m.Message, now: float) -> list[tuple[str, m.Message]]:
        parts = m.parse_topic(topic)
        gated = parts.family in GATED_FAMILIES or isinstance(msg, m.EndOfStream)
        if not gated or isinstance(msg, m.Heartbeat):
            return [(topic, msg)]
        if isinstance(msg, m.Commit) and not plausible(msg):
            self.counts.oversized += 1
            return []
        item = _Held(topic, msg, now, parts.worker)
        if isinstance(msg, m.EndOfStream) and not item.worker:
            item.announced = self.roster.announced(msg.stream, now)
        queue = self.queues.get(topic)
        if queue is None and self._ready(item, now):
            return [(topic, msg)]
        if queue is None:
            queue = self.queues[topic] = deque()
        queue.append(item)
        self.counts.held += 1
        self.n_held += 1
        while self.n_held > self.max_held:
            self._drop_oldest()
        return self._release(topic, now)

    def heartbeat(self, hb: m.Heartbeat, now: float) -> list[tuple[str, m.Message]]:
        listing = self.roster.beat(hb, now)
        if listing is None or not self.queues:
            return []
        for queue in self.queues.values():
            for item in queue:
                if isinstance(item.msg, m.EndOfStream) and item.msg.stream in listing.ended \
                        and (not item.worker or item.worker == hb.name or item.worker in listing.pools):
                    item.confirmed = True
        out: list = []
        for topic in list(self.queues):
            out += self._release(topic, now)
        return out

    def expire(self, now: float) -> list[tuple[str, m.Message]]:
        """Drop held messages past ``hold``; returns what that lets through (the rest of their topics)."""
        out: list = []
        for topic in list(self.queues):
            out += self._release(topic, now)
        return out

    # -- rules ---------------------------------------------------------------------------------
    def _ready(self, item: _Held, now: float) -> bool:
        msg = item.msg
        if isinstance(msg, m.EndOfStream):
            if item.worker:
                return item.confirmed
            # audio/speech: a stream someone announced needs its end confirmed; others are believed
            return item.confirmed or not item.announced
        return self.roster.serves(item.worker, msg.stream, now)

    def _release(self, topic: str, now: float) -> list[tuple[str, m.Message]]:
        queue = self.queues.get(topic)
        out: list = []
        while queue:
            item = queue[0]
            if self._ready(item, now):
                out.append((item.topic, item.msg))
            elif now - item.arrived >= self.hold:
                self._count_drop(item)
            else:
                break
            queue.popleft()
            self.n_held -= 1
        if queue is not None and not queue:
            del self.queues[topic]
        return out

    def _count_drop(self, item: _Held) -> None:
        if isinstance(item.msg, m.EndOfStream):
            self.counts.unconfirmed_eos += 1
        else:
            self.counts.unserved += 1

    def _drop_oldest(self) -> None:
        topic, queue = next(iter(self.queues.items()))
        self._count_drop(queue.popleft())
        self.n_held -= 1
        if not queue:
            del self.queues[topic]
