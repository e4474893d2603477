"""Which due streams the ASR worker decodes together (``batch: true``), and what it reports about it.

The rule, in :func:`plan_batches`: every stream whose step is due and not running is a
candidate; the most urgent come first (pending flushes and finishes, then the oldest
undecoded audio: :meth:`asr_core.streaming.StreamingSession.priority`). The worker starts
as many batches as it has free decode threads, each of at most ``max_batch`` streams, and
spreads the candidates over them: similar buffer lengths together, so a batch pads little.

When the worker cannot keep up, more streams are due each time a thread frees up, so the
batches grow and every stream's next decode covers more new audio, all together: no stream
is left behind while others decode every second (a stream that waited longer has more
undecoded audio, which puts it first). When it keeps up, a stream is decoded as soon as it
is due, after a short gathering window (``batch_window_ms``) in which other streams that
become due join it; the window is skipped when no other stream will be due within it
(:meth:`asr_core.streaming.StreamingSession.due_in`), so a lone stream never waits.

:class:`DecodeLoad` keeps what the heartbeat reports: how long due steps waited for a
thread (queue wait) and how many streams each batch held.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
RECENT = 256  # steps (and batches) the heartbeat's figures cover


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
