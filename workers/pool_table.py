"""Which worker of each pool holds each stream: the dispatcher's rules, without sockets.

:class:`PoolTable` is fed what the dispatcher receives (heartbeats, the pools' input,
their transcripts, the subscriptions that reached its publisher) and the clock, and
queues what to publish in :attr:`PoolTable.out`. Its rules (docs/running.md, "Worker
pools"):

* **assignment**: a new stream (its first ``audio.*`` frame) goes to the live, ready,
  non-draining worker of the pool whose subscription to ``dispatch.<worker>.`` has reached
  the dispatcher and that has the most free slots (``slots`` from its heartbeat minus the
  streams assigned to it); the binding is sticky. A stream that arrives while the pool has
  no worker waits (its messages are kept);
* **admission**: when every live worker of the pool is full, the stream is refused at once:
  an ``error`` with code ``pool_full`` on its transcript topic, and an ``eos`` there when
  its input ends; its messages are dropped;
* **retention**: every message sent to a stream's worker is kept from a little before the
  stream's last commit (:data:`REPLAY_CONTEXT_S`), at most ``replay_sec`` seconds of audio;
* **failover**: a worker that misses heartbeats for ``dead_after`` seconds
  (:class:`pipeline.liveness.Liveness`), or restarts, loses its streams: each gets a new
  epoch, announced by an ``error`` with code ``failover``, and goes to another worker,
  which gets the kept messages first (it resumes after the last commit);
* **drain**: the streams of a worker that says ``draining`` move at their next pause
  (``speech_end``) or after ``handoff_timeout``: the worker gets ``eos`` with ``moved``,
  finishes, and acknowledges in a heartbeat; then the next worker gets the kept messages.
  A last heartbeat with ``stopping`` moves whatever the worker still held at once;
* **restart**: a dispatcher that starts (again) while workers hold streams adopts each such
  stream where the worker's heartbeat (``epochs``) says it is, instead of assigning it anew.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from pipeline import messages as m
from pipeline.liveness import Liveness
from pipeline.sequence import Sequencer

REPLAY_CONTEXT_S = 2.0  # audio kept from before the last commit: the next worker's acoustic context
KEEP_WORDS = 12  # committed words handed to the next worker (its prompt and duplicate check)
RELEASE_TIMEOUT_S = 5.0  # a moving stream's worker must acknowledge within this long, else it is failed over
MAX_EPOCHS = 4096  # streams whose last epoch is remembered after they end (so a reused id's epochs still grow)
DEFAULT_SLOTS = 16

WAITING, HELD, MOVING, ENDING, REFUSED = "waiting", "held", "moving", "ending", "refused"

log = logging.getLogger("voxpipe.dispatcher")


@dataclass
class Member:
    name: str
    pool: str
    pid: int = 0
    slots: int = DEFAULT_SLOTS
    ready: bool = False
    draining: bool = False
    stopping: bool = False
    subscribed: bool = False  # its dispatch.<name>. subscription has reached our publisher
    assigned: set = field(default_factory=set)  # streams we gave it (and those reserved for it)
    told: set = field(default_factory=set)  # (stream, epoch) it still held and was told to drop
    held: dict = field(default_factory=dict)  # stream -> epoch, as its latest heartbeat says


@dataclass
class Entry:
    pool: str
    stream: str
    epoch: int = 0
    unsent_epoch: bool = False  # ``epoch`` was announced but no worker has it yet
    holder: str | None = None
    target: str | None = None  # MOVING: the worker reserved to take it
    state: str = WAITING
    retained: deque = field(default_factory=deque)  # (t_begin, t_end, message) sent (or to send) to the holder
    retained_audio: float = 0.0
    committed_until: float | None = None
    words: deque = field(default_factory=lambda: deque(maxlen=KEEP_WORDS))
    next_seq: int | None = None  # the transcript topic's next seq
    last_t: float = 0.0
    wall0: float | None = None
    last_seen: float = 0.0
    handoff_since: float | None = None  # the holder is draining since then
    moving_since: float = 0.0
    assigned_once: bool = False


def _span(msg: m.Message) -> tuple[float, float]:
    if isinstance(msg, m.Audio):
        return msg.t, msg.t + msg.duration
    t = getattr(msg, "t", None) or 0.0
    return t, t


class PoolTable:
    def __init__(self, pools: dict[str, str], cfg, liveness: Liveness, now: float, grace: float = 0.0):
        """``pools``: pool name -> its input family (``speech`` or ``audio``); ``cfg``: a DispatcherConfig."""
        self.pools = dict(pools)
        self.cfg = cfg
        self.liveness = liveness
        self.members: dict[str, Member] = {}
        self.entries: dict[tuple[str, str], Entry] = {}
        self.subscribed: set[str] = set()  # worker names whose dispatch subscription reached us
        self.out: list[tuple[str, m.Message]] = []
        self.seq = Sequencer()  # our dispatch topics (transcript topics go on from Entry.next_seq)
        self._epochs: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.assign_after = now + grace  # no assignment before (the workers' heartbeats come first)
        self.counters = {"streams_total": 0, "streams_refused": 0, "failovers": 0, "handoffs": 0, "stale": 0,
                         "replayed_seconds": 0.0, "replay_dropped_seconds": 0.0, "assigned": 0}

    # -- what arrives ------------------------------------------------------------------------------
    def on_subscription(self, subscribed: bool, prefix: str) -> None:
        family, _, rest = prefix.partition(".")
        name = rest[:-1] if rest.endswith(".") else ""
        if family != "dispatch" or not m.valid_id(name):
            return
        (self.subscribed.add if subscribed else self.subscribed.discard)(name)
        if name in self.members:
            self.members[name].subscribed = subscribed

    def on_heartbeat(self, hb: m.Heartbeat, now: float) -> None:
        info = hb.info or {}
        pool = info.get("pool")
        if hb.role != "worker" or not info.get("dispatched") or pool not in self.pools:
            return
        self.liveness.beat(hb, now)
        mb = self.members.get(hb.name)
        if mb is None:
            mb = self.members[hb.name] = Member(hb.name, pool, hb.pid, subscribed=hb.name in self.subscribed)
        elif mb.pid != hb.pid:  # restarted before it was found dead: what it held is gone
            log.warning("worker %s restarted (pid %s -> %s)", hb.name, mb.pid, hb.pid)
            self._gone(mb, True, now)
            mb.pid, mb.stopping = hb.pid, False
        slots = info.get("slots")
        mb.slots = slots if isinstance(slots, int) and not isinstance(slots, bool) and slots >= 0 else DEFAULT_SLOTS
        mb.ready = bool(hb.ready)
        if info.get("draining") and not mb.draining:
            log.info("worker %s is draining: its %d stream(s) move at their next pause", hb.name, len(mb.assigned))
            for e in self._held_by(mb.name):
                e.handoff_since = now
        mb.draining = bool(info.get("draining"))
        epochs = info.get("epochs")
        mb.held = {k: v for k, v in epochs.items() if isinstance(v, int)} if isinstance(epochs, dict) else {}
        released = {(r[0], r[1]) for r in info.get("released") or () if isinstance(r, list) and len(r) == 2}
        for e in list(self.entries.values()):
            if e.state == MOVING and e.holder == mb.name and (e.stream, e.epoch) in released:
                self._moved(e, now)
        if info.get("stopping") and not mb.stopping:
            mb.stopping = True
            self._gone(mb, False, now)
        self._drop_stale_holds(mb, info.get("epochs"))

    def on_input(self, family: str, msg: m.Message, now: float) -> None:
        """A message on ``audio.<stream>`` or ``speech.<stream>``."""
        for pool, wants in self.pools.items():
            key = (pool, msg.stream)
            e = self.entries.get(key)
            if e is None:
                if isinstance(msg, m.EndOfStream):
                    if family == wants:  # never seen: nobody transcribed it, but say it ended
                        self._publish_transcript(Entry(pool, msg.stream), m.EndOfStream, t=msg.t)
                    continue
                e = self._admit(pool, msg.stream, now)
            e.last_seen = now
            if family != wants:
                continue  # audio.* of a speech pool: only its start matters (admission)
            self._route(e, msg, now)

    def on_transcript(self, topic: str, msg: m.Message) -> None:
        """What a pool published (commits move the retention point)."""
        parts = m.parse_topic(topic)
        e = self.entries.get((parts.worker, parts.id))
        if e is None or isinstance(msg, m.Partial):
            return
        epoch = getattr(msg, "epoch", None)
        if epoch is not None and epoch != e.epoch:
            self.counters["stale"] += 1 if epoch < e.epoch else 0
            return
        e.next_seq = max(e.next_seq or 0, msg.seq + 1)
        if isinstance(msg, m.Commit):
            e.committed_until = max(e.committed_until or 0.0, msg.end)
            e.words.extend(msg.words)
            self._prune(e)
        elif isinstance(msg, m.EndOfStream) and e.state in (ENDING, HELD) and msg.worker == e.holder:
            self._forget(e)

    # -- the clock -----------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        for peer in self.liveness.newly_dead(now):
            mb = self.members.get(peer.name)
            if mb is not None and not mb.stopping:
                log.warning("worker %s: no heartbeat for %.1fs: dead", mb.name, self.liveness.timeout)
                self._gone(mb, True, now)
        for e in list(self.entries.values()):
            if now - e.last_seen > self.cfg.idle_timeout and e.state != MOVING:
                self._forget(e)
            elif e.state == WAITING and now >= self.assign_after:
                self._place(e, now)
            elif e.state == HELD and e.handoff_since is not None and now - e.handoff_since >= self.cfg.handoff_timeout:
                self._move(e, now)  # no pause came: flush and move
            elif e.state == MOVING and now - e.moving_since > RELEASE_TIMEOUT_S:
                log.warning("stream %s: %s did not hand it over in %.0fs", e.stream, e.holder, RELEASE_TIMEOUT_S)
                self._fail_over(e, e.holder, "did not hand the stream over in time", now)

    # -- rules -------------------------------------------------------------------------------------------
    def _admit(self, pool: str, stream: str, now: float) -> Entry:
        e = self.entries[(pool, stream)] = Entry(pool, stream, last_seen=now)
        self.counters["streams_total"] += 1
        if sum(1 for x in self.entries.values() if x.state != REFUSED) > self.cfg.max_streams:
            self._refuse(e, f"the dispatcher serves {self.cfg.max_streams} streams")
        elif now >= self.assign_after:
            self._place(e, now)
        return e

    def _live(self, pool: str, now: float) -> list[Member]:
        return [mb for mb in self.members.values() if mb.pool == pool and not mb.stopping
                and self.liveness.alive(mb.name, now)]

    def choose(self, pool: str, now: float, exclude: str | None = None) -> Member | None:
        """The live, ready, subscribed, non-draining worker of ``pool`` with the most free slots, if any has one."""
        best, best_key = None, None
        for mb in self._live(pool, now):
            if mb.name == exclude or not mb.ready or mb.draining or not mb.subscribed:
                continue
            free = mb.slots - len(mb.assigned)
            key = (free, -len(mb.assigned), mb.name)
            if free > 0 and (best_key is None or key[:2] > best_key[:2]):
                best, best_key = mb, key
        return best

    def _place(self, e: Entry, now: float) -> None:
        """Assign ``e`` to the best worker; refuse a new stream when every worker that could take it is full."""
        if not e.assigned_once and self._adopt(e, now):
            return
        mb = self.choose(e.pool, now)
        if mb is not None:
            self._assign(e, mb)
            return
        serving = [x for x in self._live(e.pool, now) if x.ready and x.subscribed and not x.draining]
        if serving and not e.assigned_once:
            self._refuse(e, f"all {len(serving)} worker(s) of pool {e.pool} are full "
                            f"({sum(x.slots for x in serving)} slot(s))")
        # else: no worker to take it yet (starting, restarting, all draining): it waits, its messages kept

    def _adopt(self, e: Entry, now: float) -> bool:
        """A stream a live worker already holds (we restarted): it stays there, under its epoch."""
        for mb in self._live(e.pool, now):
            epoch = mb.held.get(e.stream)
            if epoch is None:
                continue
            e.epoch, e.holder, e.state, e.assigned_once = epoch, mb.name, HELD, True
            self._epochs[(e.pool, e.stream)] = max(self._epochs.get((e.pool, e.stream), 0), epoch)
            mb.assigned.add(e.stream)
            topic = m.dispatch_topic(mb.name, e.stream)
            for _b, _e, msg in e.retained:  # what came while we were placing it is new to it
                self.out.append((topic, dataclasses.replace(msg, seq=self.seq(topic))))
            log.info("stream %s of pool %s stays with %s (epoch %d)", e.stream, e.pool, mb.name, epoch)
            return True
        return False

    def _refuse(self, e: Entry, why: str) -> None:
        e.state = REFUSED
        self.counters["streams_refused"] += 1
        log.warning("refused stream %s in pool %s: %s", e.stream, e.pool, why)
        self._publish_transcript(e, m.Error, message=f"refused: {why}", code=m.POOL_FULL)

    def _assign(self, e: Entry, mb: Member) -> None:
        if not e.unsent_epoch:
            e.epoch = self._next_epoch(e)
        e.unsent_epoch = False
        e.holder, e.target, e.state, e.handoff_since = mb.name, None, HELD, None
        e.assigned_once = True
        mb.assigned.add(e.stream)
        self.counters["assigned"] += 1
        topic = m.dispatch_topic(mb.name, e.stream)
        t0 = e.retained[0][0] if e.retained else e.last_t
        words = [list(w) for w in e.words]
        self.out.append((topic, m.SpeechStart(stream=e.stream, seq=self.seq(topic), t=t0, wall0=e.wall0,
                                              epoch=e.epoch, committed_until=e.committed_until,
                                              committed=words or None, next_seq=e.next_seq)))
        replayed = 0.0
        for _b, _e, msg in e.retained:
            self.out.append((topic, dataclasses.replace(msg, seq=self.seq(topic))))
            if isinstance(msg, m.Audio):
                replayed += msg.duration
            if isinstance(msg, m.EndOfStream):
                e.state = ENDING
        self.counters["replayed_seconds"] = round(self.counters["replayed_seconds"] + replayed, 3)
        log.info("stream %s of pool %s -> %s (epoch %d%s)", e.stream, e.pool, mb.name, e.epoch,
                 f", {replayed:.1f}s replayed" if replayed else "")

    def _route(self, e: Entry, msg: m.Message, now: float) -> None:
        if e.state == REFUSED:
            if isinstance(msg, m.EndOfStream):
                self._publish_transcript(e, m.EndOfStream, t=msg.t)
                self._forget(e)
            return
        if isinstance(msg, m.EndOfStream) and e.state == ENDING:
            return
        t0, t1 = _span(msg)
        e.last_t = max(e.last_t, t1)
        wall0 = getattr(msg, "wall0", None)
        if wall0:
            e.wall0 = wall0
        e.retained.append((t0, t1, msg))
        if isinstance(msg, m.Audio):
            e.retained_audio += msg.duration
            self._prune(e)
        if e.state != HELD or e.holder is None:
            return  # WAITING or MOVING: kept for the next worker
        topic = m.dispatch_topic(e.holder, e.stream)
        self.out.append((topic, dataclasses.replace(msg, seq=self.seq(topic))))
        if isinstance(msg, m.EndOfStream):
            e.state = ENDING  # forgotten once its worker's eos is seen
        elif isinstance(msg, m.SpeechEnd) and e.handoff_since is not None:
            self._move(e, now)  # a pause: the moment to hand it over

    def _move(self, e: Entry, now: float) -> None:
        target = self.choose(e.pool, now, exclude=e.holder)
        if target is None or e.holder is None:
            return  # nowhere to go (yet): it stays
        e.state, e.target, e.moving_since = MOVING, target.name, now
        target.assigned.add(e.stream)
        topic = m.dispatch_topic(e.holder, e.stream)
        self.out.append((topic, m.EndOfStream(stream=e.stream, seq=self.seq(topic), t=e.last_t, epoch=e.epoch,
                                              moved=True)))

    def _moved(self, e: Entry, now: float) -> None:
        """The holder acknowledged a move: the reserved worker (or the best one now) gets the stream."""
        self._release(e, e.holder)
        target = self.members.get(e.target) if e.target else None
        if target is not None:
            target.assigned.discard(e.stream)
        e.holder, e.state = None, WAITING
        self.counters["handoffs"] += 1
        if target is not None and target in self._live(e.pool, now) and target.ready and not target.draining:
            self._assign(e, target)
        else:
            self._place(e, now)

    def _gone(self, mb: Member, failed: bool, now: float) -> None:
        """``mb`` stopped (``failed``: died, hung or restarted): its streams go elsewhere."""
        for e in list(self.entries.values()):
            if e.target == mb.name:
                e.target = None
            if e.holder == mb.name and e.state in (HELD, MOVING, ENDING):
                if failed:
                    self._fail_over(e, mb.name, "stopped heartbeating", now)
                else:  # it stopped after committing what it held: the next worker goes on from there
                    self._release(e, mb.name)
                    e.holder, e.state, e.handoff_since = None, WAITING, None
                    self.counters["handoffs"] += 1
                    self._place(e, now)
        mb.assigned.clear()
        mb.told.clear()

    def _fail_over(self, e: Entry, holder: str | None, why: str, now: float) -> None:
        old = e.epoch
        if holder is not None:
            self._release(e, holder)
            topic = m.dispatch_topic(holder, e.stream)  # if it is alive after all, it lets go
            self.out.append((topic, m.EndOfStream(stream=e.stream, seq=self.seq(topic), t=e.last_t, epoch=old,
                                                  moved=True)))
        e.epoch, e.unsent_epoch = self._next_epoch(e), True
        e.holder, e.target, e.state, e.handoff_since = None, None, WAITING, None
        self.counters["failovers"] += 1
        since = "" if e.committed_until is None else f" from {e.committed_until:.2f}s"
        self._publish_transcript(e, m.Error, code=m.FAILOVER, worker=holder or "",
                                 message=f"worker {holder} {why}: the stream goes on with another worker{since}")
        mb = self.choose(e.pool, now)
        if mb is not None:
            self._assign(e, mb)

    def _drop_stale_holds(self, mb: Member, epochs) -> None:
        """A worker that still holds a stream that has moved on (it was presumed dead) is told to let go."""
        if not isinstance(epochs, dict):
            return
        for stream, epoch in epochs.items():
            e = self.entries.get((mb.pool, stream))
            if e is None or (e.holder == mb.name and e.epoch == epoch) or e.state == WAITING:
                continue  # unknown here (yet): adopted when its next message comes
            if (stream, epoch) in mb.told or not isinstance(epoch, int) or not m.valid_id(stream):
                continue
            mb.told.add((stream, epoch))
            topic = m.dispatch_topic(mb.name, stream)
            self.out.append((topic, m.EndOfStream(stream=stream, seq=self.seq(topic), epoch=epoch, moved=True)))

    # -- bookkeeping -------------------------------------------------------------------------------------
    def _prune(self, e: Entry) -> None:
        if e.committed_until is not None:
            cut = e.committed_until - REPLAY_CONTEXT_S
            while e.retained and e.retained[0][1] <= cut:
                self._drop_first(e)
        while e.retained_audio > self.cfg.replay_sec + 1e-6 and e.retained:
            dropped = self._drop_first(e)
            self.counters["replay_dropped_seconds"] = round(self.counters["replay_dropped_seconds"] + dropped, 3)

    def _drop_first(self, e: Entry) -> float:
        msg = e.retained.popleft()[2]
        d = msg.duration if isinstance(msg, m.Audio) else 0.0
        e.retained_audio -= d
        return d

    def _release(self, e: Entry, name: str | None) -> None:
        mb = self.members.get(name) if name else None
        if mb is not None:
            mb.assigned.discard(e.stream)

    def _forget(self, e: Entry) -> None:
        self._release(e, e.holder)
        self._release(e, e.target)
        self.entries.pop((e.pool, e.stream), None)

    def _next_epoch(self, e: Entry) -> int:
        key = (e.pool, e.stream)
        n = max(self._epochs.pop(key, 0), e.epoch) + 1
        self._epochs[key] = n
        while len(self._epochs) > MAX_EPOCHS:
            self._epochs.popitem(last=False)
        return n

    def _held_by(self, name: str) -> list[Entry]:
        return [e for e in self.entries.values() if e.holder == name and e.state == HELD]

    def _publish_transcript(self, e: Entry, cls, **fields) -> None:
        topic = m.transcript_topic(e.pool, e.stream)
        seq = e.next_seq or 0
        e.next_seq = seq + 1
        epoch = e.epoch if e.epoch else None
        self.out.append((topic, cls(stream=e.stream, seq=seq, epoch=epoch, **{"worker": "", **fields})))

    # -- reports ---------------------------------------------------------------------------------------
    def info(self, now: float, limit: int = 64) -> dict:
        pools: dict = {p: {"input": f, "workers": {}} for p, f in self.pools.items()}
        for mb in self.members.values():
            pools[mb.pool]["workers"][mb.name] = {
                "alive": self.liveness.alive(mb.name, now) and not mb.stopping, "ready": mb.ready,
                "draining": mb.draining, "subscribed": mb.subscribed, "slots": mb.slots, "streams": len(mb.assigned)}
        streams = {f"{e.pool}/{e.stream}": [e.holder, e.epoch, e.state]
                   for e in list(self.entries.values())[:limit]}
        return {"pools": pools, "streams": streams}
