"""Live streams decoded in one process, at real time, by the worker's own scheduler.

For machines where the pipeline itself cannot run (a GPU machine without ZeroMQ, say):
``n`` streams replay one clip's speech (as the VAD forwards it: :mod:`asr_core.replay`)
at wall-clock speed, each into its own :class:`~asr_core.streaming.StreamingSession`, and
are decoded as the ASR worker with one decode thread decodes them: the same
:class:`workers.decode_batches.DecodeScheduler` picks the steps (``batch=True``: the due
streams and those most of the way to due, in batches of at most ``max_batch``, after a
gathering window of ``window_ms``; ``batch=False``: the most urgent step alone), and the
same :class:`workers.decode_jobs.DecodeRunner` runs them inline, batches through the
backend's ``transcribe_batch`` (:func:`asr_core.batching.run_steps`).

A committed word's latency is the wall time of its commit minus the wall time its audio
ended (the stream's start plus the word's end). :func:`round_figures` says whether the
round held (the bench's rule: every stream finished, p90 within the limit, the last
commit within ``max_tail_lag`` of the end of the audio) and :func:`search` finds the
largest number of streams that holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from asr_core.online import OnlineASRProcessor, StreamingOptions
from asr_core.replay import push_events
from asr_core.streaming import Schedule, StreamingSession
from workers.decode_batches import DecodeScheduler
from workers.decode_jobs import DecodeRunner

from .evaluation import percentile


@dataclass
class LiveStream:
    stream: str  # its id, as the scheduler knows it
    start: float  # wall seconds after the round's start at which its audio begins
    session: StreamingSession
    next_event: int = 0
    words: list = field(default_factory=list)  # (word end in stream time, latency)
    text: list = field(default_factory=list)
    last_emit: float = 0.0


def run_round(asr, events: list, n: int, batch: bool, max_batch: int = 64, stagger: float = 0.0,
              options: StreamingOptions | None = None, schedule: Schedule | None = None,
              timeout: float = 120.0, window_ms: float = 50.0) -> dict:
    """``n`` live streams of ``events`` (``speech_events`` of one clip, ending with the stream's end)."""
    options, schedule = options or StreamingOptions(), schedule or Schedule()
    streams = {}
    for k in range(n):
        sid = f"s{k}"
        session = StreamingSession(OnlineASRProcessor(asr, options=options), schedule)
        streams[sid] = LiveStream(sid, k * stagger / max(1, n), session)
    duration = events[-1][0]
    counters = {"queue_wait_s": 0.0, "batches": 0, "batched_steps": 0}
    scheduler = DecodeScheduler(counters, prepare=lambda st: None, max_batch=max_batch, window_ms=window_ms)
    runner = DecodeRunner(1)  # inline, as a worker with one decode thread
    calls = items = 0
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    def collect() -> None:
        nonlocal calls, items
        for sid, result in runner.done():
            if result.error is not None:
                raise result.error
            st = streams[sid]
            commit = st.session.complete(result)
            if commit:
                at = now()
                st.last_emit = at
                st.text.append(commit.text)
                st.words += [(w[1], at - (st.start + w[1])) for w in commit.words]
        for stats in runner.batch_stats:
            calls, items = calls + stats.calls, items + stats.items
        scheduler.collected(runner)

    while not all(st.session.ended for st in streams.values()):
        t = now()
        if t > duration + timeout:
            break
        for st in streams.values():  # the audio that has arrived by now
            while st.next_event < len(events) and st.start + events[st.next_event][0] <= t:
                push_events(st.session, events[st.next_event][1])
                st.next_event += 1
        started = counters["batched_steps"]
        gather_ms = scheduler.tick(streams, t, runner, asr, batch)
        collect()
        if counters["batched_steps"] > started:
            continue
        waits = [st.start + events[st.next_event][0] - t for st in streams.values() if st.next_event < len(events)]
        if gather_ms is not None:
            waits.append(gather_ms / 1000.0)
        time.sleep(max(0.0, min(waits, default=0.001)))
    live = list(streams.values())
    return {"streams": n, "batch": batch, "wall_s": round(now(), 2), "duration_s": round(duration, 2),
            "finished": all(st.session.ended for st in live),
            "latencies": [lat for st in live for _, lat in st.words],
            "tail_lags": [st.last_emit - (st.start + duration) for st in live],
            "transcripts": [" ".join(x.strip() for x in st.text if x.strip()) for st in live],
            "decode_queue": scheduler.load.summary(),
            "backend_calls": calls, "backend_call_size_mean": round(items / calls, 2) if calls else None}


def round_figures(rr: dict, reference: str | None, max_p90: float, max_tail_lag: float, wer=None) -> dict:
    """The round's p50/p90/max latency, mean WER (``wer(reference, text)``) and whether it held."""
    lat = rr["latencies"]
    out = {k: rr[k] for k in ("streams", "batch", "wall_s", "finished", "decode_queue", "backend_calls",
                              "backend_call_size_mean")}
    out.update(p50=round(percentile(lat, 50), 3) if lat else None, p90=round(percentile(lat, 90), 3) if lat else None,
               max=round(max(lat), 3) if lat else None, words=len(lat),
               tail_lag_max=round(max(rr["tail_lags"]), 3) if rr["tail_lags"] else None)
    if reference is not None and wer is not None:
        out["wer"] = round(sum(wer(reference, t) for t in rr["transcripts"]) / len(rr["transcripts"]), 4)
    why = []
    if not rr["finished"]:
        why.append("not every stream finished")
    if out["p90"] is None:
        why.append("no committed words")
    elif out["p90"] > max_p90:
        why.append(f"p90 {out['p90']:.2f}s > {max_p90:g}s")
    if out["tail_lag_max"] is not None and out["tail_lag_max"] > max_tail_lag:
        why.append(f"last commit {out['tail_lag_max']:.2f}s after the audio ended > {max_tail_lag:g}s")
    out["held"], out["why_not"] = not why, why
    return out


def search(measure, tries: list[int], budget_s: float, refine: int = 2) -> dict:
    """Rounds of ``tries`` streams until one does not hold, then up to ``refine`` bisection rounds.

    ``measure(n)`` returns :func:`round_figures`. The capacity is the largest ``n`` that held
    with every smaller one tried; *exact* when ``n + 1`` failed.
    """
    t0 = time.monotonic()
    steps, held, failed, stopped = [], 0, None, "tries"
    for n in tries:
        if steps and time.monotonic() - t0 > budget_s:
            stopped = "budget"
            break
        fig = measure(n)
        steps.append(fig)
        if not fig["held"]:
            failed, stopped = n, "failed"
            break
        held = n
    for _ in range(refine if failed is not None else 0):
        if failed - held <= 1 or time.monotonic() - t0 > budget_s:
            break
        n = (held + failed) // 2
        fig = measure(n)
        steps.append(fig)
        if fig["held"]:
            held = n
        else:
            failed = n
    return {"capacity": held, "bound": "exact" if failed == held + 1 else "lower", "stopped_by": stopped,
            "first_failed": failed, "steps": steps, "search_s": round(time.monotonic() - t0, 1)}
