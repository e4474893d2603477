"""OnlineASRProcessor: a growing audio buffer in, committed words out.

Each :meth:`process_iter` re-transcribes the whole buffer (prompted with the
committed text that has already scrolled out of it) and commits the words on
which this hypothesis and the previous one agree. The buffer is trimmed at a
segment or sentence end once it is longer than ``buffer_trimming_sec``, and
is hard-bounded at ``max_buffer_sec`` even when nothing agrees, so latency
cannot grow without limit.

Each step (:meth:`process_iter`, :meth:`flush`, :meth:`finish`) is written once, as a
coroutine that yields the decode it needs (a :class:`DecodeRequest`: the buffer, the prompt,
the language and the task) and gets the result back. :meth:`begin` hands such a step out
(:class:`ProcessorStep`) so that a driver can decode the requests of several streams'
steps in one batched call; :meth:`process_iter` and the others drive the same coroutine
with one ``transcribe`` per request, so a step does the same alone as in a batch.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from .base import SAMPLING_RATE, check_audio, takes_per_call_settings
from .decode_step import DecodeRequest, ProcessorStep, StepCoroutine
from .hypothesis import HypothesisBuffer
from .language import Language, LanguageTracker

log = logging.getLogger("voxpipe.online")

SENTENCE_END = (".", "?", "!", "。", "？", "！")
_CLOSERS = "\"')]}”’"


def _capitalise(text: str) -> str:
    """The first letter upper-cased (leading spaces and quotes kept)."""
    for i, c in enumerate(text):
        if c.isalpha():
            return text[:i] + c.upper() + text[i + 1:] if c.islower() else text
        if c.isalnum():
            return text
    return text


@dataclass(frozen=True)
class Commit:
    """A committed span; unpacks as ``beg, end, text`` like the classic tuple.

    ``text`` is trimmed and ``words`` hold trimmed word texts; ``raw_text`` is the words
    joined with the backend's ``sep`` exactly as the backend gave them (leading spaces
    included), as whisper_streaming prints it.
    """

    beg: float | None = None
    end: float | None = None
    text: str = ""
    words: tuple = ()
    raw_text: str = ""
    language: Language | None = None  # the language it was decoded in (given or detected)

    def __iter__(self):
        return iter((self.beg, self.end, self.text))

    def __bool__(self) -> bool:
        return bool(self.words)


@dataclass(frozen=True)
class StreamingOptions:
    """The commit policy and buffer bounds of one stream.

    The defaults are the pipeline's policy (the ASR worker's, and ``voxpipe simulate``'s):
    LocalAgreement plus settling and early commits. :meth:`la2` is whisper_streaming's plain
    LocalAgreement-2, which :class:`OnlineASRProcessor` uses when it is built the way
    whisper_online builds it (without options).
    """

    buffer_trimming: str = "segment"  # "segment" | "sentence"
    buffer_trimming_sec: float = 15.0
    # hard bound: past it, words seen once are committed and the buffer is cut
    max_buffer_sec: float = 25.0
    # how much audio to keep when the hard bound cuts the buffer
    keep_after_cut_sec: float = 5.0
    # a buffer with no words in it at all is cut down to this much audio
    silence_keep_sec: float = 1.5
    silence_trim_sec: float = 6.0
    # a word of the latest hypothesis that ends this long before the end of
    # the audio is committed even without agreement (0: LocalAgreement only).
    # It bounds the wait behind a word that keeps changing: with the VAD's
    # pause flushes (the pipeline) 2 s took the bench's p90 latency from 2.59
    # to 2.46 s and its max from 4.7 to 3.5 s at the same WER.
    settle_sec: float = 2.0
    # a word the model is sure of (probability >= early_commit_prob, where the
    # backend reports probabilities) that ends this long before the end of the
    # audio is committed from the first hypothesis that has it (0: off); chosen
    # with scripts/commit_policy_sweep.py (docs/benchmarks.md)
    early_commit_sec: float = 0.3
    early_commit_prob: float = 0.6
    # after a flush (a pause), the buffer is cut at the pause but keeps this
    # much of the speech before it as acoustic context for what comes next
    flush_keep_sec: float = 2.0
    # the last word of a hypothesis that ends with a mark waits for the next hypothesis
    # (or a pause) before it commits: its mark is often only the end of the audio
    hold_marked_end: bool = True
    # a committed word that begins a sentence (the stream's first word, or one after a
    # committed "." "?" "!") starts with a capital, whatever the window that heard it wrote
    sentence_case: bool = True
    prompt_chars: int = 200
    history_words: int = 400  # committed words remembered for the prompt

    @classmethod
    def la2(cls, **changes) -> StreamingOptions:
        """whisper_streaming's rule: LocalAgreement-2 only (no settling, no early commits)."""
        return cls(**{"settle_sec": 0.0, "early_commit_sec": 0.0, "hold_marked_end": False, "sentence_case": False,
                      **changes})

    def __post_init__(self):
        if self.buffer_trimming not in ("segment", "sentence"):
            raise ValueError(f"buffer_trimming must be 'segment' or 'sentence', not {self.buffer_trimming!r}")
        if self.buffer_trimming_sec <= 0:
            raise ValueError("buffer_trimming_sec must be positive")
        # otherwise a cut would keep the whole buffer and the bound would not hold
        if not 0 <= self.keep_after_cut_sec < self.max_buffer_sec:
            raise ValueError("keep_after_cut_sec must be at least 0 and less than max_buffer_sec")
        if not 0 <= self.silence_keep_sec < self.silence_trim_sec:
            raise ValueError("silence_keep_sec must be at least 0 and less than silence_trim_sec")


@dataclass
class ProcessorStats:
    decodes: int = 0
    decode_seconds: float = 0.0
    decoded_audio_seconds: float = 0.0  # sum of buffer lengths passed to the backend
    audio_seconds: float = 0.0
    committed_words: int = 0
    forced_cuts: int = 0
    loops_cut: int = 0
    cut_short: int = 0  # hypotheses set aside as decodes that stopped early (asr_core.hypothesis)

    @property
    def rtf(self) -> float:
        return self.decode_seconds / self.audio_seconds if self.audio_seconds else 0.0


class OnlineASRProcessor:
    SAMPLING_RATE = SAMPLING_RATE

    def __init__(
        self,
        asr,
        tokenizer=None,
        buffer_trimming=("segment", 15),
        logfile=sys.stderr,
        options: StreamingOptions | None = None,
    ):
        self.asr = asr
        self.tokenizer = tokenizer  # accepted for interface compatibility; unused
        self.logfile = logfile
        if options is None:  # built as whisper_online builds it: whisper_online's rule
            options = StreamingOptions.la2(buffer_trimming=buffer_trimming[0],
                                           buffer_trimming_sec=float(buffer_trimming[1]))
        self.options = options
        self.sep = getattr(asr, "sep", " ")
        self.stats = ProcessorStats()
        self.history: deque = deque(maxlen=options.history_words)
        # one language per utterance (asr_core/language.py); the task: None, the backend's
        self.language = LanguageTracker(getattr(asr, "original_language", None))
        self.task: str | None = None
        self.init()

    # -- state ----------------------------------------------------------------
    def init(self, offset: float | None = None) -> None:
        """Start a fresh buffer at stream time ``offset`` (keeps the prompt history)."""
        self.audio_buffer = np.zeros(0, dtype=np.float32)
        self.buffer_time_offset = float(offset or 0.0)
        self.decoded_until = self.buffer_time_offset
        self.hyp = HypothesisBuffer()
        self.hyp.last_committed_time = self.buffer_time_offset
        self.buffer_words = 0  # words committed since this buffer started (the schedule's first chunk)
        self.last_segment_ends: list[float] = []
        self.language.reset()  # a fresh buffer is a new utterance: its language is detected again

    @property
    def buffer_duration(self) -> float:
        return len(self.audio_buffer) / SAMPLING_RATE

    @property
    def buffer_end(self) -> float:
        return self.buffer_time_offset + self.buffer_duration

    def insert_audio_chunk(self, audio, t: float | None = None) -> None:
        """Append audio; ``t`` (stream seconds of its first sample) handles gaps."""
        audio = check_audio(audio)
        if t is not None:
            if len(self.audio_buffer) == 0:
                # ``t`` is the truth for an empty buffer, also when it lies before
                # the previous buffer's end (VAC's padding before a new utterance):
                # the clock stays right, and the commit time keeps overlapping
                # words of the previous utterance from being committed again.
                self.buffer_time_offset = self.decoded_until = float(t)
                self.hyp.last_committed_time = max(self.hyp.last_committed_time, float(t))
            else:
                gap = t - self.buffer_end
                if gap > self.options.max_buffer_sec:
                    # too long to bridge with silence: the buffered audio cannot
                    # be stitched to this; start afresh at t (callers that can
                    # publish should finish() before a long gap instead)
                    log.warning("gap of %.1fs in the input: uncommitted audio before it is dropped", gap)
                    self.init(float(t))
                elif gap > 1.0 / SAMPLING_RATE:
                    fill = np.zeros(int(round(gap * SAMPLING_RATE)), dtype=np.float32)
                    self.audio_buffer = np.concatenate([self.audio_buffer, fill])
                elif gap < -1.0 / SAMPLING_RATE:
                    audio = audio[int(round(-gap * SAMPLING_RATE)):]
        self.audio_buffer = np.concatenate([self.audio_buffer, audio])
        self.stats.audio_seconds += len(audio) / SAMPLING_RATE

    @property
    def undecoded_seconds(self) -> float:
        return self.buffer_end - self.decoded_until

    # -- prompt ---------------------------------------------------------------
    def prompt(self) -> tuple[str, str]:
        """(prompt, context): committed text before the buffer, and inside it."""
        before = [w for w in self.history if w[1] <= self.buffer_time_offset]
        parts: list[str] = []
        size = 0
        for w in reversed(before):
            if size + len(w[2]) + 1 > self.options.prompt_chars:
                break
            parts.append(w[2])
            size += len(w[2]) + 1
        prompt = self.sep.join(reversed(parts)).strip()
        context = self.sep.join(w[2] for w in self.hyp.committed_in_buffer).strip()
        return prompt, context

    # -- steps, one decode at a time or batched by a driver ----------------------
    def begin(self, kind: str) -> ProcessorStep:
        """Start step ``kind`` (``iter`` = :meth:`process_iter`, ``flush``, ``finish``) for a driver to decode."""
        steps = {"iter": self._iter, "flush": self._flush, "finish": self._finish}
        if kind not in steps:
            raise ValueError(f"step kind must be one of {', '.join(steps)}, not {kind!r}")
        return ProcessorStep(steps[kind]())

    def _drive(self, coroutine: StepCoroutine) -> Commit:
        """Run a step with one ``transcribe`` call per decode it asks for."""
        step = ProcessorStep(coroutine)
        while step.request is not None:
            req = step.request
            t0 = time.perf_counter()
            result = req.decode(self.asr)
            step.resume(result, time.perf_counter() - t0)
        return step.commit if step.commit is not None else Commit()

    # -- one iteration --------------------------------------------------------
    def _settings(self) -> dict:
        """A decode's per-call settings: the utterance's language and the stream's task (where the backend can)."""
        settings = {}
        if takes_per_call_settings(self.asr):
            language = self.language.choice()
            if language:
                settings["language"] = language
            if self.task:
                settings["task"] = self.task
        return settings

    def _decode(self) -> Generator[DecodeRequest, tuple, list]:
        prompt, _ = self.prompt()
        result, seconds = yield DecodeRequest(self.audio_buffer, prompt, **self._settings())
        self.stats.decode_seconds += seconds
        self.stats.decodes += 1
        self.stats.decoded_audio_seconds += self.buffer_duration
        self.decoded_until = self.buffer_end
        words = self.asr.ts_words(result)
        if hasattr(self.asr, "language_of"):
            code, detected = self.asr.language_of(result)
            self.language.update(code, detected, self.buffer_duration)
        # on the same millisecond grid as the word times (HypothesisBuffer.insert), so a
        # word ending at a segment end is "before" a buffer cut there, not straddling it
        self.last_segment_ends = [round(self.buffer_time_offset + e, 3) for e in self.asr.segments_end_ts(result)]
        probs = self.asr.word_probabilities(result) if hasattr(self.asr, "word_probabilities") else None
        self.hyp.insert(words, self.buffer_time_offset, probs, self.options.early_commit_prob)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "decoded %.2f-%.2fs (%.2fs in %.2fs): %r -> new %r%s", self.buffer_time_offset, self.buffer_end,
                self.buffer_duration, seconds, "".join(w[2] for w in words),
                "".join(w[2] for w in self.hyp.new), " (loop cut)" if self.hyp.looping else "",
            )
        if self.hyp.set_aside:
            self.stats.cut_short += 1
            log.debug("hypothesis at %.2fs set aside: cut short", self.buffer_time_offset)
        if self.hyp.looping:
            self.stats.loops_cut += 1
            log.debug("repetition loop cut from hypothesis at %.2fs", self.buffer_time_offset)
        return words

    def process_iter(self) -> Commit:
        """Transcribe the buffer once and return what got committed (maybe nothing)."""
        return self._drive(self._iter())

    def _iter(self) -> StepCoroutine:
        if len(self.audio_buffer) == 0 or self.undecoded_seconds <= 0:
            return Commit()
        yield from self._decode()
        # while the model is unsure of the utterance's language, only agreement commits
        sure = self.language.sure
        settle = self.options.settle_sec if sure else 0.0
        early = self.options.early_commit_sec if sure else 0.0
        committed = self.hyp.flush(self.buffer_end - settle if settle else None,
                                   self.buffer_end - early if early else None, self.options.hold_marked_end)
        committed += self._bound_buffer()
        self._trim()
        return self._record(committed)

    def finish(self) -> Commit:
        """Decode what has not been decoded yet, commit everything, start afresh."""
        return self._drive(self._finish())

    def _finish(self) -> StepCoroutine:
        committed = yield from self._decode_tail_and_commit_all()
        commit = self._record(committed)  # in this utterance's language
        self.init(self.buffer_end)
        return commit

    def flush(self) -> Commit:
        """Decode what has not been decoded yet and commit everything, keeping some audio.

        For a pause in the speech: the words before it are complete, so they
        are committed at once instead of waiting for the next hypothesis,
        while the last ``flush_keep_sec`` of audio stays as context for what
        is said next.
        """
        return self._drive(self._flush())

    def _flush(self) -> StepCoroutine:
        committed = yield from self._decode_tail_and_commit_all()
        self._trim()
        self._cut_at_pause()
        return self._record(committed)

    def _decode_tail_and_commit_all(self) -> Generator[DecodeRequest, tuple, list]:
        if len(self.audio_buffer) and self.undecoded_seconds > 0.05:
            yield from self._decode()
            # this decode heard the whole buffer: it supersedes the unconfirmed
            # tail of the previous one, also when it heard nothing new at all
            # (even if it heard far fewer words: no cut-short rule here)
            self.hyp.believe_latest()
            self.hyp.previous = []
        return self.hyp.commit_all()

    def _cut_at_pause(self) -> None:
        """Everything is committed: keep only ``flush_keep_sec`` of speech before the pause.

        Decoding costs in proportion to the buffer, and the words before a
        pause need no more hypotheses; a little of their audio stays as
        context, cut at a committed word's end (4.8 s -> 6.2 s average buffer
        and a lower latency tail than a cut right at the pause, same WER,
        on the test clips).
        """
        keep = self.options.flush_keep_sec
        if self.buffer_duration <= keep + 0.5:
            return
        ends = [w[1] for w in self.hyp.committed_in_buffer if w[1] <= self.buffer_end - keep]
        if ends:
            self.chunk_at(ends[-1])

    def partial(self) -> Commit:
        """The unconfirmed tail of the latest hypothesis, for live displays."""
        return self._span(self.hyp.pending())

    # -- trimming -------------------------------------------------------------
    def _bound_buffer(self) -> list:
        """Keep the buffer bounded whatever the hypotheses do (nothing may agree)."""
        o = self.options
        # no word heard since the last commit for silence_trim_sec: silence (also
        # after committed speech, which segment trimming cannot cut if it was one
        # segment), so keep only a little audio instead of decoding it again and again
        heard_until = max(self.buffer_time_offset, self.hyp.last_committed_time)
        if not self.hyp.pending() and self.buffer_end - heard_until > o.silence_trim_sec:
            self.chunk_at(self.buffer_end - o.silence_keep_sec)
            return []
        if self.buffer_duration <= o.max_buffer_sec:
            return []
        cut = self.buffer_end - o.keep_after_cut_sec
        forced = self.hyp.commit_until(cut)
        self.stats.forced_cuts += 1
        log.warning(
            "buffer reached %.1fs without agreement; force-committed %d word(s) and cut at %.2fs",
            self.buffer_duration, len(forced), cut,
        )
        self.chunk_at(cut)
        return forced

    def _trim(self) -> None:
        o = self.options
        if self.buffer_duration <= o.buffer_trimming_sec:
            return
        if o.buffer_trimming == "sentence":
            ends = [w[1] for w in self.hyp.committed_in_buffer if w[2].strip().endswith(SENTENCE_END)]
            if len(ends) >= 2:
                self.chunk_at(ends[-2])
                return
        # segment mode, and the fallback of sentence mode
        limit = self.hyp.last_committed_time
        ends = [e for e in self.last_segment_ends[:-1] if self.buffer_time_offset < e <= limit]
        if ends:
            self.chunk_at(ends[-1])
            return
        # A short window often comes back as one segment, so there may be no
        # segment end to cut at: then cut after the last committed sentence,
        # else after the last committed word, rather than let the buffer (and
        # the cost of every decode) grow to the hard bound.
        committed = self.hyp.committed_in_buffer
        sentences = [w[1] for w in committed if w[2].strip().endswith(SENTENCE_END)]
        if sentences:
            self.chunk_at(sentences[-1])
        elif committed:
            self.chunk_at(committed[-1][1])

    def chunk_at(self, t: float) -> None:
        """Drop buffered audio before stream time ``t``."""
        if t <= self.buffer_time_offset:
            return
        t = min(t, self.buffer_end)
        cut = int(round((t - self.buffer_time_offset) * SAMPLING_RATE))
        self.audio_buffer = self.audio_buffer[cut:]
        self.buffer_time_offset = t
        self.hyp.pop_committed(t)
        self.hyp.previous = [w for w in self.hyp.previous if w[0] >= t - 0.05]
        self.hyp.last_committed_time = max(self.hyp.last_committed_time, t)

    # -- output ---------------------------------------------------------------
    def _sentence_case(self, committed: list) -> list:
        """``committed`` with a capital on each word that begins a sentence.

        A window that starts in the middle of the text (the context kept after a
        pause, a fresh buffer after a long one) does not know that the sentence
        before it ended, and writes "day, towns grew" for "day. Towns grew".
        """
        prev = self.history[-1][2] if self.history else None
        out = []
        for w in committed:
            if prev is None or prev.strip().rstrip(_CLOSERS).endswith(SENTENCE_END):
                w = (w[0], w[1], _capitalise(w[2]))
            out.append(w)
            prev = w[2]
        return out

    def _span(self, words) -> Commit:
        if not words:
            return Commit()
        raw = self.sep.join(w[2] for w in words)
        return Commit(words[0][0], words[-1][1], raw.strip(), tuple((w[0], w[1], w[2].strip()) for w in words),
                      raw_text=raw, language=self.language.current)

    def _record(self, committed: list) -> Commit:
        if self.options.sentence_case and committed:
            committed = self._sentence_case(committed)
        self.history.extend(committed)
        self.stats.committed_words += len(committed)
        self.buffer_words += len(committed)
        return self._span(committed)

    # -- taking over ------------------------------------------------------------
    def continue_after(self, committed_until: float | None, words=()) -> None:
        """Go on with a stream that another processor has committed up to ``committed_until``.

        ``words``: the last words committed there (``(beg, end, word)``, as in commits), the
        prompt and the duplicate check of the next hypotheses. Audio from before
        ``committed_until`` may come next as context: only words after it are committed.
        """
        lead = " " if self.sep == "" else ""  # words on the wire are stripped; the backend's have a leading space
        known = [(float(b), float(e), lead + str(w).strip()) for b, e, w in words]
        self.history.extend(known)
        self.buffer_words += len(known)
        if committed_until is not None:
            self.hyp.last_committed_time = max(self.hyp.last_committed_time, float(committed_until))
            self.hyp.committed_in_buffer = [w for w in known if w[1] > float(committed_until) - 5.0]
