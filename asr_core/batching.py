"""Decoding several streams' steps in one batched backend call.

Two rules live here, once, for every driver and backend:

* :func:`run_steps`: the steps (:class:`asr_core.streaming.StepRun`) of several sessions
  that are due together are decoded with ``asr.transcribe_batch`` until each is done. Each
  step gets the result for its own buffer, prompt, language and task back, exactly what it
  would have got from ``transcribe`` alone, so its commit policy sees the same hypothesis.
  One item failing fails only its own step; if the whole batched call fails, every item is decoded
  again on its own, so that only the items the engine really fails on fail.
* :func:`group_windows`: how a batching backend splits one call's buffers into groups that
  run as one padded batch: buffers of similar window lengths (a group is padded to its
  longest window, so a short buffer never waits on, nor is padded to, a much longer one)
  and prompts of similar lengths (CTranslate2 needs every prompt of a batch to have the
  same number of tokens: the longer ones are cut to the shortest, and never by much).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .base import ASRBase

# a prompt shares a batch only with prompts at least this share of its length (and the
# longer ones are cut to the shortest: the far end of the context, a few words)
PROMPT_SHARE = 0.75


@dataclass
class BatchStats:
    """What :func:`run_steps` did: backend calls, their sizes and wall time."""

    calls: int = 0
    items: int = 0
    sizes: list = field(default_factory=list)  # items per call
    fallbacks: int = 0  # calls that failed as a whole and were decoded item by item
    seconds: float = 0.0


def run_steps(asr, runs: Sequence, stats: BatchStats | None = None) -> BatchStats:
    """Decode the requests of ``runs`` (StepRun objects) in batched calls until every step is done.

    A call's wall time is shared among its items in proportion to their audio, so that
    each stream's ``decode_seconds`` adds up to the time the worker spent decoding.
    """
    stats = stats if stats is not None else BatchStats()
    while True:
        waiting = [r for r in runs if r.request is not None]
        if not waiting:
            return stats
        requests = [r.request for r in waiting]
        audios = [q.audio for q in requests]
        prompts = [q.prompt for q in requests]
        settings = per_item_settings(requests)
        t0 = time.perf_counter()
        try:
            results = asr.transcribe_batch(audios, prompts, **settings)
            if len(results) != len(requests):
                raise RuntimeError(f"transcribe_batch returned {len(results)} results for {len(requests)} buffers")
        except Exception:  # noqa: BLE001 - one bad item must not fail the others: decode each alone
            stats.fallbacks += 1
            results = ASRBase.transcribe_batch(asr, audios, prompts, **settings)
        wall = time.perf_counter() - t0
        stats.calls += 1
        stats.items += len(requests)
        stats.sizes.append(len(requests))
        stats.seconds += wall
        total = sum(len(a) for a in audios) or 1
        for run, audio, result in zip(waiting, audios, results, strict=True):
            if isinstance(result, BaseException):
                run.fail(result)
            else:
                run.resume(result, wall * len(audio) / total)


def per_item_settings(requests: Sequence) -> dict:
    """``languages=``/``tasks=`` of a ``transcribe_batch`` call: each request's own, where any is set.

    Left out when no request has one (a backend without per-call settings gets the
    two-argument call it was written for).
    """
    settings = {}
    languages = [q.language for q in requests]
    tasks = [q.task for q in requests]
    if any(languages):
        settings["languages"] = languages
    if any(tasks):
        settings["tasks"] = tasks
    return settings


@dataclass(frozen=True)
class Window:
    """One buffer of a batched call, as :func:`group_windows` sees it."""

    index: int  # position in the call
    frames: int  # length of its own window (what it would be padded to alone)
    prompt_tokens: int  # previous-text tokens of its prompt (0: none)


def group_windows(windows: Sequence[Window], max_pad_frames: int, max_batch: int = 16,
                  prompt_share: float | None = PROMPT_SHARE) -> list[list[Window]]:
    """Split ``windows`` into batches: similar window lengths, compatible prompts, at most ``max_batch`` each.

    Windows are taken shortest first; each joins the first open group whose shortest
    window is at most ``max_pad_frames`` shorter than it (the group is padded to its
    longest) and whose prompts stay within ``prompt_share`` of each other in length;
    a buffer without a prompt only joins others without one (``prompt_share=None``: an
    engine that pads prompts itself, any prompts together). Groups keep the order of
    their windows' lengths; the result is deterministic.
    """
    groups: list[list[Window]] = []
    for w in sorted(windows, key=lambda w: (w.frames, w.prompt_tokens, w.index)):
        for g in groups:
            if len(g) >= max_batch or w.frames - g[0].frames > max_pad_frames:
                continue
            if prompt_share is None:
                g.append(w)
                break
            lengths = [x.prompt_tokens for x in g] + [w.prompt_tokens]
            if (min(lengths) == 0) != (max(lengths) == 0):
                continue
            if min(lengths) < prompt_share * max(lengths):
                continue
            g.append(w)
            break
        else:
            groups.append([w])
    return groups


BATCH_SETTINGS = (True, False, "auto")


def batching_on(setting: bool | str, asr) -> bool:
    """The worker's ``batch`` setting for backend ``asr``: does it decode due streams in batches?

    ``true``: wherever the backend batches (:func:`batches`); ``false``: never; ``auto``
    (the default): where the backend batches and its model runs on a GPU. On a CPU one
    batched call costs about what its items cost one by one, and the streams of a batch
    wait for its longest item: measured on a 2-core CPU, batching held fewer real-time
    streams than one decode at a time (docs/benchmarks.md, "Batched decoding").
    """
    if setting not in BATCH_SETTINGS:
        raise ValueError(f"batch must be true, false or auto, not {setting!r}")
    if setting is False or not batches(asr):
        return False
    return setting is True or bool(asr.runs_on_gpu())


def batches(asr) -> bool:
    """Does ``asr`` decode several buffers in one real batched call (``Capabilities(batch=True)``)?

    Not when a subclass overrides ``transcribe`` without ``transcribe_batch`` (say, to
    wrap or fake the engine): its batched path would bypass that ``transcribe``, so such a
    backend is decoded one buffer at a time.
    """
    cls = type(asr)
    if not getattr(getattr(cls, "capabilities", None), "batch", False):
        return False
    owner = {name: next((c for c in cls.__mro__ if name in c.__dict__), None)
             for name in ("transcribe", "transcribe_batch")}
    if owner["transcribe_batch"] in (None, ASRBase):
        return False
    return issubclass(owner["transcribe_batch"], owner["transcribe"])
