"""The ASR worker's decode steps, run inline or on a small thread pool.

A step is one :meth:`asr_core.streaming.StreamingSession.run` call (the next hypothesis,
a pause flush, or a finish) and returns a :class:`~asr_core.streaming.StepResult`. Only the
step's thread touches that session's processor while it runs; everything else (the bus
sockets, the stream table, the session's inbox) stays with the actor's thread, which
submits steps and collects their results.

A *batch* is the steps of several streams decoded together (:meth:`DecodeRunner.submit_batch`):
one job on one thread, whose decodes go to the backend's ``transcribe_batch`` in as few
calls as the steps allow (:func:`asr_core.batching.run_steps`). It counts as one running
job, and each of its streams as running until the whole batch is done.

With ``concurrency`` 1 a job runs inline, at submission. With more, jobs run on a thread
pool: CTranslate2 releases the GIL while it encodes and decodes, so a worker with two
threads uses two cores for two streams (or two batches).
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

from asr_core.batching import BatchStats, run_steps
from asr_core.streaming import Step, StepResult, StreamingSession


def _run_one(stream: str, session: StreamingSession, step: Step) -> tuple[dict, BatchStats | None]:
    return {stream: session.run(step)}, None


def _run_batch(asr, jobs: list[tuple[str, StreamingSession, Step]]) -> tuple[dict, BatchStats | None]:
    runs = [(stream, session.begin(step)) for stream, session, step in jobs]
    stats = run_steps(asr, [run for _, run in runs])
    return {stream: run.result() for stream, run in runs}, stats


class DecodeRunner:
    """Runs jobs (one stream's step, or a batch of several) inline (concurrency 1) or on ``concurrency`` threads."""

    def __init__(self, concurrency: int):
        self.concurrency = max(1, int(concurrency))
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="decode") if self.concurrency > 1 else None
        self.running: dict[str, Future] = {}  # stream -> the job its step is in
        self.batch_stats: list[BatchStats] = []  # of the batches finished since the owner last took them
        self.steps: dict[str, Step] = {}  # stream -> the step it runs

    @property
    def free(self) -> int:
        """Jobs that could start now."""
        return self.concurrency - len({id(f) for f in self.running.values()})

    def submit(self, stream: str, session: StreamingSession, step: Step) -> None:
        self.steps[stream] = step
        self._start([stream], _run_one, stream, session, step)

    def submit_batch(self, asr, jobs: list[tuple[str, StreamingSession, Step]]) -> None:
        """The steps ``jobs`` (stream, session, step) as one job, decoded with ``asr.transcribe_batch``."""
        self.steps.update({stream: step for stream, _, step in jobs})
        self._start([stream for stream, _, _ in jobs], _run_batch, asr, list(jobs))

    def _start(self, streams: list[str], fn, *args) -> None:
        if self._pool is None:
            fut: Future = Future()
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - reported through done(), like a pool job
                fut.set_exception(exc)
        else:
            fut = self._pool.submit(fn, *args)
        for stream in streams:
            self.running[stream] = fut

    def done(self) -> list[tuple[str, StepResult]]:
        """Results of the jobs that have finished (one per stream), removed from ``running``."""
        out: list[tuple[str, StepResult]] = []
        finished: dict[int, tuple[Future, list[str]]] = {}
        for stream, fut in list(self.running.items()):
            if fut.done():
                del self.running[stream]
                finished.setdefault(id(fut), (fut, []))[1].append(stream)
        for fut, streams in finished.values():
            try:
                results, stats = fut.result()
            except Exception as exc:  # noqa: BLE001 - a broken job fails its own streams, and only those
                results, stats = {s: StepResult(self.steps.get(s, Step.DECODE), error=exc) for s in streams}, None
            out.extend(results.items())
            if stats is not None:
                self.batch_stats.append(stats)
        for stream, _ in out:
            self.steps.pop(stream, None)
        return out

    def wait(self, timeout: float) -> None:
        """Block until at least one job finishes (or ``timeout`` seconds)."""
        if self.running:
            wait_futures(list({id(f): f for f in self.running.values()}.values()), timeout=timeout,
                         return_when=FIRST_COMPLETED)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
