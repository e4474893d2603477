"""Feeding recorded audio to a :class:`~asr_core.streaming.StreamingSession` as the pipeline does.

For the drivers that run without a bus (``voxpipe simulate``, the commit-policy sweep, the
VAC processor, the bench's decode replay). The pipeline's path is: the capture cuts the
audio into ``frame_s`` frames; the VAD actor's :class:`~asr_core.speech_gate.SpeechGate`
forwards only speech, with a pause mark at each speech end; the worker's session decodes.
:func:`speech_events` does the first two offline, :func:`push_events` hands their output to
a session, and :func:`stream_audio` runs a whole clip with the clock stopped while decoding
(``clock="unaware"``, deterministic), on a virtual clock that each step moves on by the CPU
time it took (``clock="aware"``: a one-stream worker on a core of its own, faster than real
time and not disturbed by other programs), or at wall-clock speed (``clock="real"``).

Events are ``("audio", t, samples)``, ``("pause", t)`` and ``("end", t)`` with ``t`` in
stream seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .base import SAMPLING_RATE
from .online import Commit
from .speech_gate import SpeechGate
from .streaming import StreamingSession
from .vad import VADOptions

SR = SAMPLING_RATE
Event = tuple


@dataclass(frozen=True)
class Feed:
    """How audio reaches the session: the capture's frame and the VAD in front of the worker."""

    frame_s: float = 0.1  # the capture's frame (frame_ms 100)
    vad: VADOptions | None = VADOptions()  # None: no VAD, every frame goes to the session


def silero_segmenter(options: VADOptions) -> Callable[[float], object]:
    """A factory of Silero segmenters starting at a given stream time (what the VAD actor makes per stream)."""
    from .vad import SileroVAD, SpeechSegmenter, silero_model_path

    path = silero_model_path()
    return lambda t0: SpeechSegmenter(options, SileroVAD(path), t0=t0)


def gate_events(events: Iterable[tuple]) -> list[Event]:
    """A speech gate's ``(kind, sample_index[, samples])`` events as ``(kind, t[, samples])``."""
    out: list[Event] = []
    for ev in events:
        if ev[0] == "audio":
            out.append(("audio", ev[1] / SR, ev[2]))
        elif ev[0] == "end":
            out.append(("pause", ev[1] / SR))
    return out


def speech_events(audio: np.ndarray, feed: Feed, make_segmenter: Callable[[float], object] | None = None,
                  offset: float = 0.0) -> Iterator[tuple[float, list[Event]]]:
    """Per input frame: the stream time at its end and the events it causes; the last item has the ``end``.

    ``offset``: the stream time of ``audio``'s first sample (e.g. a clip played from its middle).
    """
    if offset:
        for frame_end, events in speech_events(audio, feed, make_segmenter):
            yield frame_end + offset, [(ev[0], ev[1] + offset, *ev[2:]) for ev in events]
        return
    step = max(1, int(round(feed.frame_s * SR)))
    duration = len(audio) / SR
    if feed.vad is None:
        for i in range(0, len(audio), step):
            frame = audio[i:i + step]
            yield (i + len(frame)) / SR, [("audio", i / SR, frame)]
        yield duration, [("end", duration)]
        return
    make = make_segmenter or silero_segmenter(feed.vad)
    gate = SpeechGate(make, feed.vad.speech_pad_ms, dtype=np.float32)
    for i in range(0, len(audio), step):
        frame = audio[i:i + step]
        yield (i + len(frame)) / SR, gate_events(gate.push(i, frame) or [])
    yield duration, gate_events(gate.close()) + [("end", duration)]


def push_events(session: StreamingSession, events: Iterable[Event]) -> None:
    """Hand events to the session as the worker does with the VAD's messages."""
    for ev in events:
        if ev[0] == "audio":
            session.push_audio(ev[1], ev[2])
        elif ev[0] == "pause":
            session.push_pause()
        elif ev[0] == "end":
            session.push_end()


def _virtual_clock(session: StreamingSession, frames: list) -> Iterator[tuple[float, Commit]]:
    """Frames arrive at their stream time; each step takes the CPU seconds it used (one core)."""
    now = 0.0
    i = 0
    while True:
        while i < len(frames) and frames[i][0] <= now + 1e-9:
            push_events(session, frames[i][1])
            i += 1
        step = session.due(share=1.0)
        if step is None:
            if i >= len(frames):
                return
            now = max(now, frames[i][0])  # idle until the next frame
            continue
        session.start(step)
        c0 = time.process_time()
        result = session.run(step)
        now += time.process_time() - c0
        if result.error is not None:
            raise result.error
        commit = session.complete(result)
        if commit:
            yield now, commit


def stream_audio(session: StreamingSession, audio: np.ndarray, feed: Feed, clock: str = "unaware",
                 on_commit: Callable[[Commit, float], None] | None = None,
                 make_segmenter: Callable[[float], object] | None = None,
                 offset: float = 0.0) -> list[tuple[float, Commit]]:
    """Run a whole clip through ``session``; returns ``(emit_time, commit)`` pairs.

    ``clock="unaware"``: the emit time is the stream time of the audio received when the
    commit came out (decoding takes no time). ``clock="real"``: audio arrives at wall-clock
    speed and decoding takes the time it takes; the emit time is wall seconds since the start.
    ``offset``: the stream time of the clip's first sample (commit and unaware emit times
    include it; the real clock still starts at 0).
    """
    if clock not in ("unaware", "aware", "real"):
        raise ValueError(f"clock must be 'unaware', 'aware' or 'real', not {clock!r}")
    out: list[tuple[float, Commit]] = []

    def emit(commit: Commit, at: float) -> None:
        out.append((at, commit))
        if on_commit is not None:
            on_commit(commit, at)

    if clock == "unaware":
        for frame_end, events in speech_events(audio, feed, make_segmenter, offset):
            push_events(session, events)
            for commit in session.run_due():
                emit(commit, frame_end)
        return out
    if clock == "aware":
        for at, commit in _virtual_clock(session, list(speech_events(audio, feed, make_segmenter))):
            emit(commit, at)
        return out
    # real time: every frame that has arrived by now goes in before the next decode,
    # as frames that arrive while a worker decodes wait in its inbox
    frames = [(end - offset, events) for end, events in speech_events(audio, feed, make_segmenter, offset)]
    start = time.monotonic()
    i = 0
    while i < len(frames):
        wait = frames[i][0] - (time.monotonic() - start)
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic() - start
        while i < len(frames) and frames[i][0] <= now + 1e-6:
            push_events(session, frames[i][1])
            i += 1
        for commit in session.run_due(share=1.0):
            emit(commit, time.monotonic() - start)
    return out
