"""The ASR worker's decode steps, run inline or on a small thread pool.

A step is one :meth:`asr_core.streaming.StreamingSession.run` call (the next hypothesis,
a pause flush, or a finish) and returns a :class:`~asr_core.streaming.StepResult`. Only the
step's thread touches that session's processor while it runs; everything else (the bus
sockets, the stream table, the session's inbox) stays with the actor's thread, which
submits steps and collects their results.

With ``concurrency`` 1 a step runs inline, at submission. With more, steps run on a thread
pool: CTranslate2 releases the GIL while it encodes and decodes, so a worker with two
threads uses two cores for two streams.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

from asr_core.streaming import Step, StepResult, StreamingSession


class DecodeRunner:
    """Runs steps inline (concurrency 1) or on ``concurrency`` threads, one per stream at a time."""

    def __init__(self, concurrency: int):
        self.concurrency = max(1, int(concurrency))
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="decode") if self.concurrency > 1 else None
        self.running: dict[str, Future] = {}  # stream -> its step

    @property
    def free(self) -> int:
        return self.concurrency - len(self.running)

    def submit(self, stream: str, session: StreamingSession, step: Step) -> None:
        if self._pool is None:
            fut: Future = Future()
            fut.set_result(session.run(step))
        else:
            fut = self._pool.submit(session.run, step)
        self.running[stream] = fut

    def done(self) -> list[tuple[str, StepResult]]:
        """Results of the steps that have finished, removed from ``running``."""
        out = []
        for stream, fut in list(self.running.items()):
            if fut.done():
                del self.running[stream]
                out.append((stream, fut.result()))
        return out

    def wait(self, timeout: float) -> None:
        """Block until at least one step finishes (or ``timeout`` seconds)."""
        if self.running:
            wait_futures(list(self.running.values()), timeout=timeout, return_when=FIRST_COMPLETED)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
