"""The finished transcription result that built-in backends return.

Backends may return anything their own ``ts_words`` understands; the built-in
ones return a list of :class:`Segment`, so the streaming processor can also
read quality signals (no-speech probability, log probability, compression).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list = field(default_factory=list)  # [(beg, end, word), ...]
    word_probs: list = field(default_factory=list)  # the model's probability of each word, when known
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0
    language: str | None = None  # the language it was decoded in (detected or given)
    language_prob: float | None = None  # the model's probability of that language, when it detected it
    language_probs: tuple = ()  # when it detected it: the likeliest languages, ((code, probability), ...)


# When the model itself says a segment is not speech. Whisper's own rule (and faster-whisper's
# defaults): a no-speech probability over 0.6 with an average log-probability under -1.0 (the
# log-probability at which Whisper calls a decode failed). Here the no-speech bar of that rule is
# 0.45: on room noise tiny.en writes "you" (lp -1.0 to -1.6) with a no-speech probability of 0.24
# to 0.60, mostly 0.5 to 0.6 (scripts/nonspeech_replay.py: 30 committed words before, none
# after), and the speech segments that the lower bar also drops are the garbage at a window's
# end ("and sun. The moon and sun"; with base, words of the wrong language). On
# silence, room noise and music Whisper also writes fluent text it is sure of ("Thank you.",
# "I don't know what I'm going to do.", lp -0.3 to -1.0) while its no-speech probability says
# otherwise: tiny.en gave 0.86-0.97 on every such segment of the test clips, and at most 0.20 on
# speech; multilingual base at most 0.78 on speech (docs/benchmarks.md). A loop (Whisper's
# failure threshold of compression, 2.4) that the model half takes for silence is not speech
# either, nor is text without a letter or a digit (". . .", "___").
NO_SPEECH_PROB = 0.45
LOGPROB_FLOOR = -1.0
NO_SPEECH_SURE = 0.8
LOOP_COMPRESSION = 2.4
LOOP_NO_SPEECH = 0.5


def is_speech(seg: Segment) -> bool:
    """False when the model's own signals say a segment is not speech (see the rule above)."""
    nsp = seg.no_speech_prob
    if nsp > NO_SPEECH_SURE or (nsp > NO_SPEECH_PROB and seg.avg_logprob < LOGPROB_FLOOR):
        return False
    if nsp > LOOP_NO_SPEECH and seg.compression_ratio > LOOP_COMPRESSION:
        return False
    text = seg.text or "".join(str(w[2]) for w in seg.words)
    return any(c.isalnum() for c in text)


def speech_words(segments: list[Segment]) -> list[tuple]:
    """The words of the speech segments: what a built-in backend's ``ts_words`` returns."""
    return [w for s in segments if is_speech(s) for w in s.words]


def speech_word_probs(segments: list[Segment]) -> list:
    """One probability per word of :func:`speech_words` (None where unknown)."""
    probs: list = []
    for s in segments:
        if is_speech(s):
            probs += s.word_probs if len(s.word_probs) == len(s.words) else [None] * len(s.words)
    return probs


def segment_from_dict(seg: dict, duration: float, word_key: str = "word", prob_key: str = "probability") -> Segment:
    """A Whisper-style segment dict (openai-whisper, whisper_timestamped, mlx-whisper) as a :class:`Segment`.

    Times are made plain floats and clipped to ``duration`` (the audio given
    to transcribe): the model pads audio to 30 s, and a word cut off at the
    end can otherwise be timed past the last sample. ``word_key`` and
    ``prob_key`` name a word's text and probability in the engine's dicts.
    """
    words, probs = [], []
    for w in seg.get("words", []):
        text = str(w.get(word_key, ""))
        if text.strip():
            end = min(float(w["end"]), duration)
            words.append((min(float(w["start"]), end), end, text))
            prob = w.get(prob_key)
            probs.append(None if prob is None else float(prob))
    return Segment(
        start=min(float(seg["start"]), duration),
        end=min(float(seg["end"]), duration),
        text=str(seg.get("text", "")).strip(),
        words=words,
        word_probs=probs,
        no_speech_prob=float(seg.get("no_speech_prob", 0.0)),
        avg_logprob=float(seg.get("avg_logprob", 0.0)),
        compression_ratio=float(seg.get("compression_ratio", 1.0)),
    )


class SegmentResults:
    """``ts_words``, ``word_probabilities`` and ``segments_end_ts`` for a backend
    whose ``transcribe`` returns a list of :class:`Segment` (put it before
    ``ASRBase`` in the bases)."""

    def ts_words(self, result: list[Segment]) -> list[tuple]:
        return speech_words(result)  # without what the model itself calls non-speech

    def word_probabilities(self, result: list[Segment]) -> list:
        return speech_word_probs(result)

    def segments_end_ts(self, result: list[Segment]) -> list[float]:
        return [s.end for s in result]

    def language_of(self, result: list[Segment]) -> tuple[str | None, tuple]:
        """The language of the speech segments, and what the model detected (see ``ASRBase``)."""
        return segments_language(result)


def segments_language(segments: list[Segment]) -> tuple[str | None, tuple]:
    """``(language, detected)`` of the first speech segment that knows its language."""
    for s in segments:
        if s.language and is_speech(s):
            return s.language, tuple(s.language_probs)
    return None, ()


def compression_ratio(text: str) -> float:
    """How well ``text`` compresses: loops ("the the the ...") score high."""
    data = text.encode("utf-8")
    if not data:
        return 0.0
    return len(data) / len(zlib.compress(data))


def spread_words(start: float, end: float, text: str) -> list[tuple[float, float, str]]:
    """Word times spread over a segment, proportional to word length.

    For engines that report segment times only; each word gets a share of
    the segment's duration proportional to its number of characters (+1 for
    the gap), so that long words take longer, as they do when spoken.
    """
    words = text.split()
    if not words:
        return []
    end = max(end, start)
    weights = [len(w) + 1 for w in words]
    total = float(sum(weights))
    out = []
    t = start
    for word, weight in zip(words, weights, strict=False):
        dur = (end - start) * weight / total
        out.append((round(t, 3), round(t + dur, 3), word))
        t += dur
    return out
