"""When the ASR worker starts its streams' steps, which it decodes together (``batch: true``), and what it reports.

:class:`DecodeScheduler` starts the due steps on the worker's decode threads: without
batching the most urgent stream's step on each free thread, one at a time; with it, batches.

The rule, in :func:`plan_batches`: every stream whose step is due and not running is a
candidate; the most urgent come first (pending flushes and finishes, then the oldest
undecoded audio: :meth:`asr_core.streaming.StreamingSession.priority`). The worker starts
as many batches as it has free decode threads, each of at most ``max_batch`` streams, and
spreads the candidates over them: similar buffer lengths together, so a batch pads little.

A batch also takes the streams that are most of the way to due (:data:`JOIN_SHARE` of their
chunk heard and not decoded): decoded a little early, they are then due together with the
others the next time, so the streams of a worker stay in step and its batches stay full
instead of drifting apart into batches of one (on a 2-core CPU two batches of 4 to 12 short
buffers decode 1.1 to 1.5 times as fast as the same buffers one at a time on both threads:
``scripts/batch_cost.py``, docs/benchmarks.md, "Batched decoding across streams").

When the worker cannot keep up, more streams are due each time a thread frees up, so the
batches grow and every stream's next decode covers more new audio, all together: no stream
is left behind while others decode every second (a stream that waited longer has more
undecoded audio, which puts it first). When it keeps up, a stream is decoded as soon as it
is due, after a short gathering window (``batch_window_ms``) in which other streams that
become due join it; the window is skipped when no other stream will be due within it
(:meth:`asr_core.streaming.StreamingSession.due_in`), so a lone stream never waits.

:class:`DecodeLoad` keeps what the heartbeat reports: how long due steps waited for a
thread (queue wait) and how many streams each batch held.

Each stream's chunk is the session's rule (:meth:`asr_core.streaming.StreamingSession.due`):
the scheduler tells it the stream's share of the decode threads, so a busy worker decodes each
stream less often, batched or not.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from asr_core.streaming import Step

T = TypeVar("T")
RECENT = 256  # steps (and batches) the heartbeat's figures cover
JOIN_SHARE = 0.6  # a stream with this share of its chunk undecoded joins a batch that starts without it


def plan_batches(due: Sequence[T], free: int, max_batch: int, length: Callable[[T], float]) -> list[list[T]]:
    """Split ``due`` (most urgent first) into at most ``free`` batches of at most ``max_batch``.

    The most urgent ``free * max_batch`` candidates are taken; they are spread over as many
    batches as there are free threads (never more batches than candidates), each batch a
    run of similar ``length`` (the audio a step decodes), the batches of equal size within one.
    """
    if free <= 0 or max_batch <= 0 or not due:
        return []
    taken = sorted(due[: free * max_batch], key=length)
    n = min(free, len(taken))
    size, extra = divmod(len(taken), n)
    batches, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        batches.append(taken[start:end])
        start = end
    return batches


def join_gap(session, share: float | None, join_share: float = JOIN_SHARE) -> float | None:
    """Seconds of audio ``session`` still lacks to be due, when that is little enough for it to join a batch now.

    None when it may not join: not most of the way to due (``join_share`` of its chunk undecoded),
    running, ended, or ``join_share`` 0.
    """
    missing = session.due_in(share)
    if missing is None or not join_share or missing > (1.0 - join_share) * session.chunk(share):
        return None
    return missing


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class DecodeLoad:
    """Queue waits and batch sizes of the recent steps, for the heartbeat."""

    def __init__(self, recent: int = RECENT):
        self.waits: deque = deque(maxlen=recent)  # seconds from due to started, per step
        self.sizes: deque = deque(maxlen=recent)  # streams per batch (1 when not batching)
        self.calls: deque = deque(maxlen=recent)  # buffers per backend call

    def started(self, waited: float) -> None:
        self.waits.append(max(0.0, float(waited)))

    def batch(self, streams: int) -> None:
        self.sizes.append(int(streams))

    def backend_calls(self, sizes: Sequence[int]) -> None:
        self.calls.extend(int(s) for s in sizes)

    def summary(self) -> dict:
        """``queue_wait_ms`` (p50, p90, max over the recent steps) and batch sizes (mean, max, counts)."""
        out: dict = {"recent_steps": len(self.waits)}
        if self.waits:
            w = list(self.waits)
            out["queue_wait_ms"] = {"p50": round(_percentile(w, 50) * 1000, 1),
                                    "p90": round(_percentile(w, 90) * 1000, 1), "max": round(max(w) * 1000, 1)}
        if self.sizes:
            s = list(self.sizes)
            out["batch_size"] = {"mean": round(sum(s) / len(s), 2), "max": max(s),
                                 "counts": {str(k): v for k, v in sorted(Counter(s).items())}}
        if self.calls:
            c = list(self.calls)
            out["backend_call_size"] = {"mean": round(sum(c) / len(c), 2), "max": max(c)}
        return out


class DecodeScheduler:
    """Starts the due steps of a worker's streams on its :class:`workers.decode_jobs.DecodeRunner`.

    ``streams`` (given to :meth:`tick`) maps stream ids to the worker's stream states (with
    ``stream`` and ``session``); ``prepare(state)`` runs just before a stream's step starts
    (the worker applies the stream's language and task hints there). ``counters``: the
    worker's heartbeat counters, where ``batches``, ``batched_steps`` and ``queue_wait_s`` add up.
    """

    def __init__(self, counters: dict, prepare: Callable[[Any], None], max_batch: int = 16,
                 window_ms: float = 50.0, join_share: float = JOIN_SHARE):
        self.counters, self.prepare = counters, prepare
        self.max_batch = max_batch
        self.join_share = join_share  # 0: only due streams share a batch
        self.window = window_ms / 1000.0
        self.load = DecodeLoad()
        self._due_since: dict[str, float] = {}  # stream -> when its current step became due

    def tick(self, streams: Mapping[str, Any], now: float, runner, asr, batching: bool) -> int | None:
        """Start what is due on ``runner``'s free threads (with ``batching``: as batches for ``asr``).

        Returns the ms to wait for more streams to join a batch, or None.
        """
        self._due_since = {s: t for s, t in self._due_since.items() if s in streams}
        # each stream's share of the decode threads: with spare capacity its chunks stay small
        share = runner.concurrency / max(1, len(streams))
        if batching:
            return self._start_batches(streams, now, share, runner, asr)
        while runner.free > 0:
            st, step = self._next_step(streams, now, share, runner)
            if st is None:
                break
            self._start(st, step, now)
            runner.submit(st.stream, st.session, step)
            self._batch_started(1)
            if runner.concurrency == 1:
                break  # inline: one decode per loop turn, so messages keep flowing
        return None

    def collected(self, runner) -> None:
        """The sizes of the backend calls of ``runner``'s batches that finished, into :attr:`load`."""
        for stats in runner.batch_stats:
            self.load.backend_calls(stats.sizes)
        runner.batch_stats.clear()

    def _due(self, st, now: float, share: float, runner):
        step = None if st.stream in runner.running else st.session.due(share)
        if step is None:
            self._due_since.pop(st.stream, None)
        else:
            self._due_since.setdefault(st.stream, now)
        return step

    def _next_step(self, streams: Mapping[str, Any], now: float, share: float, runner):
        """The stream whose step is most urgent: flushes and finishes first, then the oldest undecoded audio."""
        best, best_key, best_step = None, None, None
        for st in streams.values():
            step = self._due(st, now, share, runner)
            if step is None:
                continue
            key = st.session.priority()
            if best_key is None or key < best_key:
                best, best_key, best_step = st, key, step
        return best, best_step

    def _start_batches(self, streams: Mapping[str, Any], now: float, share: float, runner, asr) -> int | None:
        """Start the due streams' steps as batches (one per free thread); ms to wait for more to join, or None."""
        due, near, joiners = [], False, []
        for st in streams.values():
            step = self._due(st, now, share, runner)
            if step is None:
                if st.stream not in runner.running:
                    gap = join_gap(st.session, share, self.join_share)
                    if gap is not None:
                        joiners.append((gap, st))  # most of the way to due: it joins the next batch
                    else:  # will it be due within the window?
                        missing = st.session.due_in(share)
                        near = near or (missing is not None and missing <= self.window)
                continue
            due.append((st, step))
        if not due or runner.free <= 0:
            return None
        oldest = min(self._due_since[st.stream] for st, _ in due)
        room = runner.free * self.max_batch - len(due)
        if near and now - oldest < self.window and room > len(joiners):
            return int((oldest + self.window - now) * 1000) + 1  # another stream is about to be due: let it join
        due.sort(key=lambda item: item[0].session.priority())
        joiners.sort(key=lambda item: item[0])
        due += [(st, Step.DECODE) for _, st in joiners[:max(0, room)]]
        for batch in plan_batches(due, runner.free, self.max_batch,
                                  length=lambda item: item[0].session.processor.buffer_duration):
            for st, step in batch:
                self._start(st, step, now)
            self._batch_started(len(batch))
            runner.submit_batch(asr, [(st.stream, st.session, step) for st, step in batch])
        return None

    def _start(self, st, step, now: float) -> None:
        since = self._due_since.pop(st.stream, None)
        waited = max(0.0, now - since) if since is not None else 0.0
        self.load.started(waited)
        self.counters["queue_wait_s"] = round(self.counters["queue_wait_s"] + waited, 3)
        self.prepare(st)  # before the step begins: its decodes ask in the stream's language and task
        st.session.start(step)

    def _batch_started(self, steps: int) -> None:
        self.load.batch(steps)
        self.counters["batches"] += 1
        self.counters["batched_steps"] += steps
