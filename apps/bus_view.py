"""What an operator sees of a running pipeline, from the bus alone: one row per actor.

Shared by ``voxpipe status`` (:mod:`apps.status`) and ``voxpipe top`` (:mod:`apps.top`). A
:class:`BusView` is fed heartbeats (and, for ``top``, transcript messages) and gives
:class:`ActorRow` s: role, pool, state, heartbeat age, pid, CPU and memory where the actor reports
them, live streams, and for workers the latency of the words committed in the last minute
(:meth:`pipeline.messages.Commit.word_latencies`). Up or down is the one liveness rule
(:mod:`pipeline.liveness`). :func:`open_status_socket` connects a SUB socket to the bus with the
config's security (CURVE keys work).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from pipeline import messages as m
from pipeline.liveness import Liveness

READY, NOT_READY, DOWN, MISSING = "ready", "starting", "down", "missing"
LATENCY_WINDOW_S = 60.0


@dataclass
class ActorRow:
    name: str
    role: str = ""
    pool: str = ""
    state: str = MISSING
    age: float | None = None  # seconds since its last heartbeat
    pid: int = 0
    host: str = ""
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    streams: int | None = None
    slots: int | None = None
    p50: float | None = None  # latency of committed words, last minute (workers)
    p90: float | None = None
    commits: int = 0
    rejected: int = 0
    errors: int = 0
    lost: int = 0
    expected: bool = True  # an actor of the config

    @property
    def ready(self) -> bool:
        return self.state == READY


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by linear interpolation, None for no values."""
    if not values:
        return None
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


class BusView:
    def __init__(self, expected=(), interval: float = 1.0, window: float = LATENCY_WINDOW_S):
        self.expected = list(expected)
        self.liveness = Liveness(interval)
        self.window = window
        self.latencies: dict[str, deque] = {}  # worker -> (monotonic time, seconds)
        self.commits: dict[str, int] = {}  # worker -> commits seen
        self._cpu: dict[str, tuple[float, float, float | None]] = {}  # name -> (time, cpu s, percent)

    def observe(self, topic: str, msg: m.Message, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if isinstance(msg, m.Heartbeat):
            if msg.role == "probe":
                return
            self.liveness.beat(msg, now)
            cpu = msg.counters.get("cpu_seconds")
            if isinstance(cpu, (int, float)):
                last = self._cpu.get(msg.name)
                pct = last[2] if last else None
                if last and now > last[0] and cpu >= last[1]:
                    pct = 100.0 * (cpu - last[1]) / (now - last[0])
                self._cpu[msg.name] = (now, float(cpu), pct)
        elif isinstance(msg, m.Commit):
            worker = msg.worker or m.parse_topic(topic).worker
            self.commits[worker] = self.commits.get(worker, 0) + 1
            q = self.latencies.setdefault(worker, deque())
            q.extend((now, lat) for lat in msg.word_latencies())

    def rows(self, now: float | None = None) -> list[ActorRow]:
        """The config's actors in its order, then any other actor heard on the bus."""
        now = time.monotonic() if now is None else now
        names = self.expected + sorted(n for n in self.liveness.peers if n not in self.expected)
        return [self._row(n, now) for n in names]

    def _row(self, name: str, now: float) -> ActorRow:
        row = ActorRow(name, expected=name in self.expected)
        peer = self.liveness.peers.get(name)
        if peer is None:
            return row
        c, info = peer.counters, peer.info
        row.role, row.pid = peer.role, peer.pid
        row.pool = str(info.get("pool") or name)
        row.host = str(info.get("host") or "")
        row.age = now - peer.last_seen
        alive = self.liveness.alive(name, now)
        row.state = DOWN if not alive else READY if peer.ready else NOT_READY
        if name in self._cpu:
            row.cpu_percent = self._cpu[name][2]
        if isinstance(info.get("rss_bytes"), int):
            row.rss_bytes = info["rss_bytes"]
        if "streams_active" in c:
            row.streams = int(c["streams_active"])
        if isinstance(info.get("max_streams"), int):
            row.slots = info["max_streams"]
        row.rejected, row.errors = int(c.get("rejected", 0)), int(c.get("errors", 0) + c.get("stream_errors", 0))
        row.lost = int(c.get("gaps", 0))
        if peer.role == "worker":
            q = self.latencies.get(name, deque())
            while q and now - q[0][0] > self.window:
                q.popleft()
            values = [lat for _, lat in q]
            row.p50, row.p90 = percentile(values, 0.5), percentile(values, 0.9)
            row.commits = int(c.get("commits", self.commits.get(name, 0)))
        return row


def open_status_socket(ctx, bus, prefixes=("status.",)):
    """A :class:`pipeline.bus.Subscriber` on ``prefixes`` (CURVE when the bus has it)."""
    from pipeline.bus import Subscriber

    return Subscriber(ctx, bus, list(prefixes))


def drain(sub, view: BusView, timeout_ms: int, most: int = 5000) -> int:
    """Feed ``view`` what arrives within ``timeout_ms`` (then what is queued, up to ``most``); returns how many."""
    n = 0
    wait = timeout_ms
    while n < most:
        try:
            got = sub.recv(timeout_ms=wait)
        except m.ProtocolError:
            continue
        if got is None:
            return n
        view.observe(*got)
        n += 1
        wait = 0
    return n
