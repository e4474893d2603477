"""A pool worker's side of the dispatcher's protocol (docs/protocol.md, section 11).

In a dispatched pool an ASR worker does not hear ``speech.*`` itself: it subscribes to
``dispatch.<its name>.`` and gets exactly the streams the dispatcher (workers/dispatcher.py)
assigned to it. :class:`PoolMember` is what :class:`workers.asr_worker.ASRWorker` adds for
that, so the worker keeps one streaming rule for every stream:

* an **assignment** is a ``speech_start`` with an ``epoch``: the stream's state is made
  afresh, its session resumes where the pool's transcript stands (``committed_until``, the
  last ``committed`` words: :meth:`asr_core.streaming.StreamingSession.resume`), and the
  transcript topic's numbering goes on from ``next_seq``. The replayed audio that follows
  is decoded like any audio;
* an ``eos`` with ``moved: true`` hands the stream over: the session finishes (its last
  words are committed), no transcript ``eos`` is published (the stream goes on elsewhere),
  and the release is acknowledged in the next heartbeat (``released``), sent at once;
* every commit, partial, error and eos carries the stream's ``epoch``;
* the heartbeat says ``pool``, ``slots`` (free capacity is ``slots`` minus the streams
  held), ``draining``, the ``epochs`` of the streams held and the recent releases;
* the first SIGTERM only *drains*: the worker keeps serving its streams while the dispatcher
  moves them away (at their next pause), and exits once it holds none, or, after
  ``DRAIN_WAIT_S``, finishes what it still holds (the dispatcher replays it elsewhere from
  the last commit) and exits with a last heartbeat that says ``stopping``.

``slots`` comes from the config, or from the measured real-time factor: a worker whose decode
threads spend ``rtf`` seconds per second of audio can hold about ``concurrency / rtf``
real-time streams; :data:`SLOT_LOAD` of that is offered (never more than ``max_streams``).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import deque

from pipeline import messages as m

DRAIN_WAIT_S = 15.0  # a draining pool worker waits this long for the dispatcher to move its streams
SLOT_LOAD = 0.7  # share of the measured capacity offered as slots
MIN_RTF_AUDIO_S = 20.0  # seconds of audio decoded before the real-time factor is trusted for slots
KEEP_RELEASED = 64


def host_replica_id(entry: str, host: str | None = None) -> str:
    """``--replica auto``: this host's name as a replica id (a pod's or container's name is unique among its peers).

    Characters an id may not hold become ``-``; a name too long for the actor id ``<entry>-<id>``
    (64 characters) keeps its end, where a pod's name has its unique part.
    """
    import socket

    raw = host if host is not None else socket.gethostname()
    rid = re.sub(r"[^A-Za-z0-9_:@-]", "-", raw.split(".")[0]) or "host"
    return rid[-max(1, 63 - len(entry)):]


def pin_to_core(replica: str | None) -> int | None:
    """Pin this process to one CPU core: replica k to the k-th core it may use (modulo); returns the core."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    index = int(replica) - 1 if replica is not None and str(replica).isdigit() and int(replica) > 0 else 0
    core = cores[index % len(cores)]
    os.sched_setaffinity(0, {core})
    return core


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class PoolMember:
    def __init__(self, worker):
        self.worker = worker
        self.released: deque = deque(maxlen=KEEP_RELEASED)  # [stream, epoch] handed over lately
        self.draining = False
        self.stopping = False
        self._drain_until = 0.0
        self._finishing = False

    # -- what the worker asks ------------------------------------------------------------
    def slots(self) -> int:
        w = self.worker
        if w.wcfg.slots > 0:
            return min(w.wcfg.slots, w.wcfg.max_streams)
        rtf = w.counters.get("rtf", 0.0)
        if not rtf or w.counters.get("audio_seconds", 0.0) < MIN_RTF_AUDIO_S:
            return w.wcfg.max_streams
        concurrency = w.runner.concurrency if w.runner else 1
        return max(1, min(w.wcfg.max_streams, math.floor(SLOT_LOAD * concurrency / rtf)))

    def info(self) -> dict:
        w = self.worker
        return {
            "pool": w.pool, "dispatched": True, "slots": self.slots(), "draining": self.draining,
            "stopping": self.stopping, "epochs": {s: st.epoch for s, st in w.streams.items() if st.epoch is not None},
            "released": [list(r) for r in self.released],
        }

    def intercept(self, msg: m.Message) -> bool:
        """Handle an assignment or a handover; True when ``msg`` needs nothing else."""
        if isinstance(msg, m.SpeechStart) and msg.epoch is not None:
            self._assigned(msg)
            return True
        if isinstance(msg, m.EndOfStream) and msg.moved:
            self._move_away(msg)
            return True
        return False

    # -- assignment and handover -----------------------------------------------------------
    def _assigned(self, msg: m.SpeechStart) -> None:
        w = self.worker
        old = w.streams.get(msg.stream)
        if old is not None and old.epoch == msg.epoch:
            return  # the same assignment again
        if old is not None:  # reassigned under a new epoch while still held: the old state is stale
            w.log.info("stream %s: new assignment (epoch %s after %s): starting over", msg.stream, msg.epoch, old.epoch)
            w.forget_stream(old)
        st = w._stream(msg)
        if st is None:
            return
        st.epoch = msg.epoch
        st.session.resume(msg.committed_until, [tuple(x) for x in msg.committed or ()])
        if msg.next_seq is not None:
            w.pub.seq.continue_from(m.transcript_topic(w.pool, msg.stream), msg.next_seq)
        w.log.info("stream %s assigned (epoch %d%s)", msg.stream, msg.epoch,
                   "" if msg.committed_until is None else f", committed until {msg.committed_until:.2f}s")

    def _move_away(self, msg: m.EndOfStream) -> None:
        w = self.worker
        st = w.streams.get(msg.stream)
        if st is None or st.epoch != msg.epoch:
            self.acknowledge(msg.stream, msg.epoch)  # nothing (left) to finish here
            return
        st.handoff = True
        st.session.push_end()

    def acknowledge(self, stream: str, epoch: int | None) -> None:
        """Tell the dispatcher, in a heartbeat sent now, that ``stream`` (epoch) is no longer held here."""
        if epoch is not None:
            self.released.append((stream, epoch))
        self.worker.heartbeat_now()

    # -- stopping -----------------------------------------------------------------------------
    def drain(self) -> None:
        self.draining = True
        self._drain_until = time.monotonic() + DRAIN_WAIT_S
        self.worker.log.info("draining: %d stream(s) to hand over", len(self.worker.streams))
        self.worker.heartbeat_now()

    def drained(self) -> bool:
        w = self.worker
        if w.streams and time.monotonic() >= self._drain_until and not self._finishing:
            w.log.info("%d stream(s) not moved in %.0fs: finishing them here", len(w.streams), DRAIN_WAIT_S)
            self._finishing = True
            for st in w.streams.values():
                st.handoff = True  # the dispatcher replays them elsewhere from their last commit
                st.session.push_end()
        if w.streams:
            return False
        self.stopping = True  # the last heartbeat says so: the dispatcher moves anything left at once
        return True
