"""Live streams decoded in one process, at real time, with the worker's scheduling rule.

For machines where the pipeline itself cannot run (a GPU machine without ZeroMQ, say):
``n`` streams replay one clip's speech (as the VAD forwards it: :mod:`asr_core.replay`)
at wall-clock speed, each into its own :class:`~asr_core.streaming.StreamingSession`, and
one thread decodes them as the ASR worker does with one decode thread:

* ``batch=True``: every due step goes into one batch (at most ``max_batch``, most urgent
  first: :func:`workers.decode_batches.plan_batches`), with the streams most of the way to due
  (:func:`workers.decode_batches.join_gap`), decoded with the backend's
  ``transcribe_batch`` (:func:`asr_core.batching.run_steps`);
* ``batch=False``: the most urgent due step alone (pending flushes first, then the oldest
  undecoded audio), with ``transcribe``.

A committed word's latency is the wall time of its commit minus the wall time its audio
ended (the stream's start plus the word's end). :func:`round_figures` says whether the
round held (the bench's rule: every stream finished, p90 within the limit, the last
commit within ``max_tail_lag`` of the end of the audio) and :func:`search` finds the
largest number of streams that holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from asr_core.batching import BatchStats, run_steps
from asr_core.online import OnlineASRProcessor, StreamingOptions
from asr_core.replay import push_events
from asr_core.streaming import Schedule, Step, StreamingSession
from workers.decode_batches import DecodeLoad, join_gap, plan_batches

from .evaluation import percentile


@dataclass
class LiveStream:
    start: float  # wall seconds after the round's start at which its audio begins
    session: StreamingSession
    next_event: int = 0
    words: list = field(default_factory=list)  # (word end in stream time, latency)
    text: list = field(default_factory=list)
    last_emit: float = 0.0


def run_round(asr, events: list, n: int, batch: bool, max_batch: int = 64, stagger: float = 0.0,
              options: StreamingOptions | None = None, schedule: Schedule | None = None,
              timeout: float = 120.0) -> dict:
    """``n`` live streams of ``events`` (``speech_events`` of one clip, ending with the stream's end)."""
    options, schedule = options or StreamingOptions(), schedule or Schedule()
    streams = [LiveStream(k * stagger / max(1, n), StreamingSession(OnlineASRProcessor(asr, options=options),
                                                                    schedule)) for k in range(n)]
    duration = events[-1][0]
    load, stats = DecodeLoad(), BatchStats()
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    def emit(st: LiveStream, commit) -> None:
        at = now()
        st.last_emit = at
        st.text.append(commit.text)
        st.words += [(w[1], at - (st.start + w[1])) for w in commit.words]

    due_since: dict[int, float] = {}
    while not all(st.session.ended for st in streams):
        t = now()
        if t > duration + timeout:
            break
        for st in streams:  # the audio that has arrived by now
            while st.next_event < len(events) and st.start + events[st.next_event][0] <= t:
                push_events(st.session, events[st.next_event][1])
                st.next_event += 1
        due = []
        for k, st in enumerate(streams):
            step = st.session.due()
            if step is None:
                due_since.pop(k, None)
                continue
            due_since.setdefault(k, t)
            due.append((k, st, step))
        if not due:
            waits = [st.start + events[st.next_event][0] - t for st in streams if st.next_event < len(events)]
            time.sleep(max(0.0, min(waits, default=0.001)))
            continue
        due.sort(key=lambda item: item[1].session.priority())
        if batch:  # and the streams most of the way to due, as the worker does (workers.decode_batches)
            taken = {k for k, _, _ in due}
            near = sorted((gap, k, st) for k, st in enumerate(streams)
                          if k not in taken and (gap := join_gap(st.session, None)) is not None)
            due += [(k, st, Step.DECODE) for _, k, st in near[:max(0, max_batch - len(due))]]
        chosen = plan_batches(due, 1, max_batch, length=lambda item: item[1].session.processor.buffer_duration)[0] \
            if batch else due[:1]
        for k, _, _ in chosen:
            load.started(t - due_since.pop(k, t))
        load.batch(len(chosen))
        if batch:
            runs = []
            for _, st, step in chosen:
                st.session.start(step)
                runs.append(st.session.begin(step))
            run_steps(asr, runs, stats)
            results = [run.result() for run in runs]
        else:
            _, st, step = chosen[0]
            st.session.start(step)
            results = [st.session.run(step)]
        for (_, st, _), result in zip(chosen, results, strict=True):
            if result.error is not None:
                raise result.error
            commit = st.session.complete(result)
            if commit:
                emit(st, commit)
    return {"streams": n, "batch": batch, "wall_s": round(now(), 2), "duration_s": round(duration, 2),
            "finished": all(st.session.ended for st in streams),
            "latencies": [lat for st in streams for _, lat in st.words],
            "tail_lags": [st.last_emit - (st.start + duration) for st in streams],
            "transcripts": [" ".join(x.strip() for x in st.text if x.strip()) for st in streams],
            "decode_queue": load.summary(),
            "backend_calls": stats.calls, "backend_call_size_mean": round(stats.items / stats.calls, 2)
            if stats.calls else None}


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
