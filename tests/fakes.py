"""Scripted stand-ins for the streaming ASR core's collaborators.

Every fake subclasses the real :class:`asr_core.base.ASRBase` (or mimics the
real :class:`asr_core.vad.SpeechSegmenter`), so the processors under test run
their real code paths; only the model's answers are scripted.

* :class:`ScriptedASR` returns pre-set hypotheses, one per ``transcribe`` call.
* :class:`TimelineASR` "hears" a fixed timeline of words: it answers with the
  words whose audio lies completely inside the buffer it is given, like a
  perfect recogniser. It needs to know where the buffer starts in the stream:
  by default it reads that from :func:`ramp` audio, whose samples encode their
  own index, so the test checks the processor's clock against the truth.
* :class:`ScriptedSegmenter` emits speech start/end events at given times, in
  place of the Silero VAD.

All fakes record each ``transcribe`` call (audio length, stream start, prompt).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from asr_core.base import SAMPLING_RATE, ASRBase, check_audio
from asr_core.vad import SpeechEvent, VADOptions

SR = SAMPLING_RATE
# ramp audio: sample k holds k / RAMP_SCALE, exact in float32 for k < 2**24 (17 min)
RAMP_SCALE = float(2**20)


def ramp(beg: float, end: float) -> np.ndarray:
    """Audio for stream seconds [beg, end) whose samples encode their own index."""
    i, j = int(round(beg * SR)), int(round(end * SR))
    return (np.arange(i, j, dtype=np.float64) / RAMP_SCALE).astype(np.float32)


def ramp_time(audio: np.ndarray) -> float:
    """Stream time of the first sample of :func:`ramp` audio."""
    return float(round(float(audio[0]) * RAMP_SCALE)) / SR


def words(text: str, start: float = 0.0, dur: float = 0.4, gap: float = 0.1) -> list[tuple]:
    """``(beg, end, " word")`` tuples, one word every ``dur + gap`` seconds."""
    out = []
    t = start
    for w in text.split():
        out.append((round(t, 3), round(t + dur, 3), " " + w))
        t += dur + gap
    return out


@dataclass
class Seg:
    """A scripted segment: its end time and its words (times relative to the buffer)."""

    end: float
    words: list = field(default_factory=list)


@dataclass
class Call:
    seconds: float  # length of the audio handed to transcribe()
    prompt: str
    start: float | None = None  # stream time of its first sample, when known

    @property
    def end(self) -> float | None:
        return None if self.start is None else self.start + self.seconds


class RecordingASR(ASRBase):
    """Base of the fakes: records calls; results are lists of :class:`Seg`."""

    backend_name = "scripted"
    sep = ""  # words carry their own leading space, as faster-whisper's do

    def __init__(self, **kwargs):
        self.calls: list[Call] = []
        super().__init__("en", modelsize="scripted", **kwargs)

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        return None

    def ts_words(self, result):
        return [w for seg in result for w in seg.words]

    def segments_end_ts(self, result):
        return [seg.end for seg in result]

    def _record(self, audio, init_prompt, start=None) -> Call:
        audio = check_audio(audio)
        call = Call(len(audio) / SR, init_prompt, start)
        self.calls.append(call)
        return call


class ScriptedASR(RecordingASR):
    """Returns ``script[i]`` on the i-th call (the last one again once it runs out).

    A script item is a list of :class:`Seg`, or a list of word tuples (one
    segment ending at the last word), or a string (spread by :func:`words`),
    or a callable ``f(call_index, audio_seconds) -> any of those``.
    """

    def __init__(self, script: Sequence = (), **kwargs):
        self.script = list(script)
        super().__init__(**kwargs)

    def transcribe(self, audio, init_prompt: str = ""):
        self._record(audio, init_prompt)
        i = len(self.calls) - 1
        if not self.script:
            return []
        item = self.script[min(i, len(self.script) - 1)]
        if callable(item):
            item = item(i, self.calls[-1].seconds)
        return as_segments(item)


def as_segments(item) -> list[Seg]:
    if isinstance(item, str):
        item = words(item)
    item = list(item)
    if not item:
        return []
    if isinstance(item[0], Seg):
        return item
    return [Seg(item[-1][1], list(item))]


class TimelineASR(RecordingASR):
    """A perfect recogniser of a fixed timeline of words in stream time.

    ``timeline``: ``[(beg, end, " word"), ...]`` in stream seconds; a word
    ending a segment (for ``segments_end_ts``) is one whose text ends with
    ``segment_marks`` characters (by default sentence ends and commas).
    ``start_of(audio)`` tells where the buffer starts (default: read the ramp).
    ``mishear(call_index, words)`` may alter a hypothesis before it is returned.
    """

    def __init__(
        self,
        timeline: Iterable[tuple] = (),
        *,
        start_of: Callable[[np.ndarray], float] = ramp_time,
        words_at: Callable[[float, float], list] | None = None,
        segment_marks: str = ".?!,",
        mishear: Callable[[int, list], list] | None = None,
        **kwargs,
    ):
        self.timeline = sorted(timeline)
        self.start_of = start_of
        self.words_at = words_at
        self.segment_marks = segment_marks
        self.mishear = mishear
        super().__init__(**kwargs)

    def heard(self, t0: float, t1: float) -> list[tuple]:
        if self.words_at is not None:
            return self.words_at(t0, t1)
        return [w for w in self.timeline if w[0] >= t0 - 1e-6 and w[1] <= t1 + 1e-6]

    def transcribe(self, audio, init_prompt: str = ""):
        audio = check_audio(audio)
        t0 = self.start_of(audio) if len(audio) else 0.0
        call = self._record(audio, init_prompt, t0)
        ws = [(round(b - t0, 3), round(e - t0, 3), w) for b, e, w in self.heard(t0, call.end)]
        if self.mishear is not None:
            ws = self.mishear(len(self.calls) - 1, ws)
        segs: list[Seg] = []
        cur: list = []
        for w in ws:
            cur.append(w)
            if w[2].strip()[-1:] in self.segment_marks:
                segs.append(Seg(w[1], cur))
                cur = []
        if cur:
            segs.append(Seg(cur[-1][1], cur))
        return segs


class ScriptedSegmenter:
    """Speech events at scripted times instead of Silero's guesses.

    ``speech``: ``[(beg, end), ...]`` in stream seconds. The start event is
    emitted once audio past ``beg`` has arrived; the end event (time ``end``)
    once audio reaches ``end + end_delay`` (a VAD needs some silence to be
    sure speech has ended).
    """

    def __init__(self, speech: Sequence[tuple[float, float]], end_delay: float = 0.5, speech_pad_ms: int = 100):
        self.speech = list(speech)
        self.end_delay = end_delay
        self.options = VADOptions(speech_pad_ms=speech_pad_ms)
        self.reset()

    def reset(self, t0: float = 0.0) -> None:
        self.t = t0
        self.in_speech = False
        self._next = 0  # index into speech of the next event's segment

    def process(self, audio) -> list[SpeechEvent]:
        self.t += len(audio) / SR
        events = []
        while self._next < len(self.speech):
            beg, end = self.speech[self._next]
            if not self.in_speech:
                if self.t >= beg:
                    self.in_speech = True
                    events.append(SpeechEvent("start", beg))
                    continue
                break
            if self.t >= end + self.end_delay:
                self.in_speech = False
                events.append(SpeechEvent("end", end))
                self._next += 1
                continue
            break
        return events

    def flush(self) -> list[SpeechEvent]:
        if self.in_speech:
            self.in_speech = False
            self._next += 1
            return [SpeechEvent("end", self.t)]
        return []
