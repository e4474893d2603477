"""The state the gateway's two threads share, under one lock.

* The server thread (uvicorn's event loop: every client connection) admits
  connections (:meth:`GatewayHub.admit`, bounded by ``max_connections``),
  routes each of its bus streams to an ``asyncio.Queue`` of its own
  (:meth:`GatewayHub.route`), queues audio frames and ``eos`` to publish
  (:meth:`GatewayHub.send_audio`, :meth:`GatewayHub.send_eos`) and counts
  every client it turns away (:meth:`GatewayHub.reject`).
* The bus thread (the actor's loop) takes what is queued
  (:meth:`GatewayHub.take_outgoing`; it numbers and publishes, so nothing
  here touches a socket) and hands every message of a routed stream to its
  connection's queue (:meth:`GatewayHub.on_message`, through
  ``loop.call_soon_threadsafe``). Worker heartbeats say which pools are up.

Nothing a client sends reaches another client's queue: messages are routed by
the exact stream id, and each id belongs to one connection.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from pipeline import messages as m
from pipeline.epochs import EpochFilter

from ..web_streams import Outgoing  # the same hand-over as the web page's: audio or eos of one stream

MAX_OUTGOING = 20000  # frames queued for the bus before the oldest audio is dropped (counted)
WORKER_STALE_S = 5.0  # a worker without a heartbeat this long no longer counts as up


@dataclass(frozen=True)
class WorkerSeen:
    name: str
    pool: str
    ready: bool
    backend: str
    model: str
    language: str
    seen: float  # monotonic time of its last heartbeat

    def fresh(self, now: float) -> bool:
        return self.ready and now - self.seen < WORKER_STALE_S


class GatewayHub:
    def __init__(self, prefix: str, max_connections: int, max_outgoing: int = MAX_OUTGOING):
        self.prefix = prefix  # every stream id starts with it (the bus subscriptions are prefixes)
        self.max_connections = max_connections
        self._max_out = max_outgoing
        self._lock = threading.Lock()
        self._out: deque[Outgoing] = deque()
        self._routes: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._workers: dict[str, WorkerSeen] = {}
        self._epochs = EpochFilter()  # of a pool's messages, only the current assignment's
        self.active = 0
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once it runs
        self.shutdown: asyncio.Event | None = None  # set (in that loop) on the first stop signal
        self.counters: dict[str, int | float] = {
            "connections_total": 0, "client_rejects": 0, "dropped_frames": 0, "audio_seconds": 0.0,
        }

    # -- the server thread ---------------------------------------------------------------------
    def started(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called in the server's loop when it starts."""
        self.loop = loop
        self.shutdown = asyncio.Event()

    def admit(self) -> str | None:
        """Room for one more connection? None if admitted (release it later), else why not."""
        with self._lock:
            if self.closing:
                return "closing"
            if self.active >= self.max_connections:
                return "busy"
            self.active += 1
            self.counters["connections_total"] += 1
            return None

    def release(self) -> None:
        with self._lock:
            self.active = max(0, self.active - 1)

    def reject(self, reason: str) -> None:
        """Count a client turned away or cut off (``client_rejects`` and ``reject_<reason>``)."""
        with self._lock:
            self.counters["client_rejects"] += 1
            key = f"reject_{reason}"
            self.counters[key] = self.counters.get(key, 0) + 1

    def count(self, key: str, n: int | float = 1) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + n

    def new_stream_id(self, kind: str) -> str:
        return f"{self.prefix}{kind}-{secrets.token_hex(5)}"

    def route(self, stream: str, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        with self._lock:
            self._routes[stream] = (loop, queue)

    def unroute(self, stream: str) -> None:
        with self._lock:
            self._routes.pop(stream, None)

    def send_audio(self, stream: str, t: float, wall0: float, pcm: bytes) -> None:
        with self._lock:
            if len(self._out) >= self._max_out:
                for i, old in enumerate(self._out):
                    if old.kind == "audio":
                        del self._out[i]
                        self.counters["dropped_frames"] += 1
                        break
            self._out.append(Outgoing("audio", stream, t, wall0, pcm))
            self.counters["audio_seconds"] += len(pcm) / 2 / m.SAMPLE_RATE

    def send_eos(self, stream: str, t: float) -> None:
        with self._lock:
            self._out.append(Outgoing("eos", stream, t))  # never dropped

    def pool_state(self, pool: str) -> WorkerSeen | None:
        """A worker of ``pool`` that is up (ready, heartbeat within 5 s), or None."""
        now = time.monotonic()
        with self._lock:
            live = [w for w in self._workers.values() if w.pool == pool and w.fresh(now)]
        return live[0] if live else None

    # -- the bus thread -----------------------------------------------------------------------------
    def take_outgoing(self, limit: int = 1000) -> list[Outgoing]:
        with self._lock:
            n = min(limit, len(self._out))
            return [self._out.popleft() for _ in range(n)]

    def pending_outgoing(self) -> int:
        with self._lock:
            return len(self._out)

    def open_streams(self) -> list[str]:
        """The streams of the open connections (listed in the gateway's heartbeat, :mod:`pipeline.roster`)."""
        with self._lock:
            return sorted(self._routes)

    def on_message(self, topic: str, msg: m.Message) -> None:
        if isinstance(msg, m.Heartbeat):
            if msg.role == "worker" and msg.name:
                info = msg.info or {}
                seen = WorkerSeen(msg.name, str(info.get("pool") or msg.name), bool(msg.ready),
                                  str(info.get("backend", "")), str(info.get("model", "")),
                                  str(info.get("language", "")), time.monotonic())
                with self._lock:
                    self._workers[msg.name] = seen
            return
        with self._lock:
            target = self._routes.get(msg.stream)
            if target is not None and not self._epochs.admit(topic, msg):
                self.counters["stale"] = self.counters.get("stale", 0) + 1
                return  # a pool worker presumed dead, late: its stream has moved on
        if target is None:
            return
        loop, queue = target
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (topic, msg))
        except RuntimeError:  # the loop has closed (the server is stopping)
            pass

    def begin_shutdown(self) -> None:
        """First stop signal: no new connections; every open one winds down (from any thread)."""
        with self._lock:
            self.closing = True
        if self.loop is not None and self.shutdown is not None:
            try:
                self.loop.call_soon_threadsafe(self.shutdown.set)
            except RuntimeError:
                pass

    def stats(self) -> dict:
        with self._lock:
            out = dict(self.counters)
            out["connections_active"] = self.active
            out["audio_seconds"] = round(float(out["audio_seconds"]), 2)
            return out
