"""Decode jobs of the ASR worker, run one at a time or on a small thread pool.

A job runs one step of one stream's processor (``iter``: the next hypothesis;
``flush``: a pause, commit everything but keep the audio; ``finish``: the end
of an utterance or stream) and returns what it committed. Only the job's
thread touches that processor while it runs; everything else (the bus
sockets, the stream table) stays with the actor's thread, which submits jobs
and collects their results.

With ``concurrency`` 1 a job runs inline, at submission. With more, jobs run
on a thread pool: CTranslate2 releases the GIL while it encodes and decodes,
so a worker with two threads uses two cores for two streams.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass

ITER, FLUSH, FINISH = "iter", "flush", "finish"


@dataclass
class JobResult:
    kind: str
    commit: object = None
    error: BaseException | None = None
    decode_seconds: float = 0.0  # decode time spent inside the job
    decoded_audio_seconds: float = 0.0
    decodes: int = 0


def run_job(processor, kind: str) -> JobResult:
    stats = processor.stats
    before = (stats.decode_seconds, stats.decoded_audio_seconds, stats.decodes)
    try:
        if kind == ITER:
            commit = processor.process_iter()
        elif kind == FLUSH:
            commit = processor.flush()
        else:
            commit = processor.finish()
    except BaseException as exc:  # noqa: BLE001 - MemoryError too: it belongs to this stream
        return JobResult(kind, error=exc)
    return JobResult(
        kind,
        commit=commit,
        decode_seconds=stats.decode_seconds - before[0],
        decoded_audio_seconds=stats.decoded_audio_seconds - before[1],
        decodes=stats.decodes - before[2],
    )


class DecodeRunner:
    """Runs jobs inline (concurrency 1) or on ``concurrency`` threads."""

    def __init__(self, concurrency: int):
        self.concurrency = max(1, int(concurrency))
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="decode") if self.concurrency > 1 else None
        self.running: dict[str, Future] = {}  # stream -> its job

    @property
    def free(self) -> int:
        return self.concurrency - len(self.running)

    def submit(self, stream: str, processor, kind: str) -> None:
        if self._pool is None:
            fut: Future = Future()
            fut.set_result(run_job(processor, kind))
        else:
            fut = self._pool.submit(run_job, processor, kind)
        self.running[stream] = fut

    def done(self) -> list[tuple[str, JobResult]]:
        """Results of the jobs that have finished, removed from ``running``."""
        out = []
        for stream, fut in list(self.running.items()):
            if fut.done():
                del self.running[stream]
                out.append((stream, fut.result()))
        return out

    def wait(self, timeout: float) -> None:
        """Block until at least one job finishes (or ``timeout`` seconds)."""
        if self.running:
            wait_futures(list(self.running.values()), timeout=timeout, return_when=FIRST_COMPLETED)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
