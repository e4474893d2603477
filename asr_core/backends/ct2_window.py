"""Single-window Whisper decoding on CTranslate2 without padding to 30 s.

faster-whisper pads every window to 30 s of features, so the encoder costs
the same for 2 s of audio as for 30 s. A streaming buffer is rarely longer
than 15 s, so this decoder encodes only the audio there is (rounded up to a
whole second of real silence) and runs one guarded generation over it:

* timestamp tokens later than the window are suppressed, so the decoder
  cannot run past the audio;
* the number of new tokens is bounded by the window's duration, so a
  decoding loop costs at most a few hundred milliseconds;
* there is no temperature fallback: a looping or improbable hypothesis is
  reported with its quality signals and the streaming policy declines to
  commit it, which costs nothing extra.

Used by the faster-whisper backend only; it relies on faster-whisper's
tokenizer and feature extractor and on CTranslate2's Whisper model API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..result import Segment, compression_ratio

SAMPLING_RATE = 16000
HOP = 160
FRAMES_PER_SECOND = SAMPLING_RATE // HOP  # 100 mel frames per second
SECONDS_PER_TIMESTAMP = 0.02
MAX_FRAMES = 3000
PREPEND = "\"'“¿([{-"
APPEND = "\"'.。,，!！?？:：”)]}、"
# Enough for fast speech with a timestamp pair per sentence; a loop stops here.
TOKENS_PER_SECOND = 7.0
TOKENS_BASE = 12
# audio left after the last segment that makes the decoder go on with a second window
SEEK_MIN_S = 1.0
NO_SPEECH_MAX = 0.6  # a second window the model itself calls non-speech is dropped
DETECTED_KEPT = 5  # languages reported from a detection, likeliest first


@dataclass(frozen=True)
class WindowOptions:
    beam_size: int = 5
    patience: float = 1.0
    length_penalty: float = 1.0
    max_initial_timestamp: float = 1.0
    suppress_blank: bool = True
    word_timestamps: bool = True
    # silence appended after the audio: with less room after the speech the
    # decoder more often replays what it already said (1 s: 34 replays in 221
    # decodes over the test clips, 2 s: 19, 3 s: 8 but a higher WER)
    pad_seconds: float = 2.0
    max_prompt_tokens: int = 223


class WindowDecoder:
    def __init__(self, whisper_model, options: WindowOptions):
        # whisper_model: faster_whisper.WhisperModel (for its tokenizer and features)
        self.wm = whisper_model
        self.ct2 = whisper_model.model
        self.fe = whisper_model.feature_extractor
        self.hf_tokenizer = whisper_model.hf_tokenizer
        self.options = options

    # -- features -----------------------------------------------------------
    def _features(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        content_frames = len(audio) // HOP
        target_seconds = math.ceil(len(audio) / SAMPLING_RATE + self.options.pad_seconds)
        target = min(MAX_FRAMES, target_seconds * FRAMES_PER_SECOND)
        padded = np.zeros(target * HOP, dtype=np.float32)
        padded[: len(audio)] = audio[: target * HOP]
        feats = self.fe(padded, padding=0)[:, :target]
        if feats.shape[1] < target:
            feats = np.pad(feats, ((0, 0), (0, target - feats.shape[1])), mode="edge")
        return feats, min(content_frames, target)

    def _encode(self, feats: np.ndarray):
        import ctranslate2

        x = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None, :, :]))
        return self.ct2.encode(x, to_cpu=False)

    # -- main entry -----------------------------------------------------------
    def decode(self, audio: np.ndarray, prompt: str, language: str | None, task: str,
               detect: bool = False) -> list[Segment]:
        """Segments (with words) of ``audio``, times relative to its start.

        ``language`` None: detected (multilingual models). ``detect``: detect it even
        when ``language`` is given (each segment then reports what the model heard).

        Whisper sometimes ends its transcript early, after a sentence that is
        followed by a pause, although more speech follows. Like Whisper's own
        long-form loop, the decoder then goes on from the end of the last
        segment with a second window over the rest (at most once more), so a
        hypothesis does not randomly lose everything after its first sentence.
        """
        segments, language = self._decode_window(audio, prompt, language, task, detect)
        duration = len(audio) / SAMPLING_RATE
        # where the transcript stops: the last word's end (a segment left open
        # by an early end of text runs to the end of the audio on paper only)
        ends = [w[1] for s in segments for w in s.words] or [s.end for s in segments]
        seek = max(ends, default=0.0)
        start = int(seek * SAMPLING_RATE)
        if segments and duration - seek >= SEEK_MIN_S and _has_sound(audio[start:], audio[:start]):
            more_prompt = (prompt + " " + " ".join(s.text for s in segments)).strip()
            more, _ = self._decode_window(audio[start:], more_prompt, language, task)
            # on silence Whisper invents text ("Thank you so much for joining us.")
            more = [s for s in more if s.no_speech_prob <= NO_SPEECH_MAX]
            for s in more:
                s.start, s.end = round(s.start + seek, 3), round(s.end + seek, 3)
                s.words = [(round(b + seek, 3), round(e + seek, 3), w) for b, e, w in s.words]
            segments += more
        return segments

    def _decode_window(self, audio: np.ndarray, prompt: str, language: str | None, task: str,
                       detect: bool = False):
        """One window: (segments, language)."""
        from faster_whisper.tokenizer import Tokenizer

        if len(audio) < HOP * 10:
            return [], language
        feats, content_frames = self._features(audio)
        duration = content_frames / FRAMES_PER_SECOND
        enc = self._encode(feats)

        multilingual = self.ct2.is_multilingual
        detected: tuple = ()
        if multilingual and (detect or not language):
            detected = tuple((tok[2:-2], float(p)) for tok, p in self.ct2.detect_language(enc)[0][:DETECTED_KEPT])
            language = language or detected[0][0]
        tokenizer = Tokenizer(self.hf_tokenizer, multilingual, task=task, language=language or "en")

        prompt_tokens = self._prompt(tokenizer, prompt)
        n_ts = int(round(duration / SECONDS_PER_TIMESTAMP))
        # forbid timestamps after the end of the audio (+0.1 s of slack)
        first_forbidden = tokenizer.timestamp_begin + n_ts + 6
        last_ts = tokenizer.timestamp_begin + 1500
        suppress = [-1] + list(range(first_forbidden, last_ts + 1))
        max_new = int(TOKENS_BASE + TOKENS_PER_SECOND * duration)
        o = self.options
        result = self.ct2.generate(
            enc,
            [prompt_tokens],
            beam_size=o.beam_size,
            patience=o.patience,
            length_penalty=o.length_penalty,
            max_length=min(448, len(prompt_tokens) + max_new),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=o.suppress_blank,
            suppress_tokens=suppress,
            max_initial_timestamp_index=int(round(o.max_initial_timestamp / SECONDS_PER_TIMESTAMP)),
        )[0]
        tokens = list(result.sequences_ids[0])
        avg_logprob = result.scores[0] * (len(tokens) ** o.length_penalty) / (len(tokens) + 1)
        segments = self._split(tokenizer, tokens, duration)
        if not segments:
            return [], language
        text_all = "".join(s.text for s in segments)
        ratio = compression_ratio(text_all)
        for s in segments:
            s.no_speech_prob = float(result.no_speech_prob)
            s.avg_logprob = float(avg_logprob)
            s.compression_ratio = ratio
            s.language = language or "en"
            s.language_prob, s.language_probs = dict(detected).get(s.language), detected
        if o.word_timestamps:
            self._add_words(tokenizer, segments, enc, content_frames, duration)
        for s in segments:
            s.text = s.text.strip()
        return segments, language

    def _prompt(self, tokenizer, prompt: str) -> list[int]:
        out: list[int] = []
        if prompt and prompt.strip():
            toks = tokenizer.encode(" " + prompt.strip())
            out = [tokenizer.sot_prev] + toks[-self.options.max_prompt_tokens :]
        return out + list(tokenizer.sot_sequence)

    # -- parse timestamp tokens into segments -------------------------------
    def _split(self, tokenizer, tokens: list[int], duration: float) -> list[Segment]:
        ts0 = tokenizer.timestamp_begin
        eot = tokenizer.eot
        segments: list[Segment] = []
        current: list[int] = []
        start = 0.0
        opened = False
        for tok in tokens:
            if tok == eot:
                break
            if tok >= ts0:
                t = (tok - ts0) * SECONDS_PER_TIMESTAMP
                if current:
                    seg = Segment(start=start, end=min(t, duration), text="")
                    seg.tokens = current  # type: ignore[attr-defined]
                    segments.append(seg)
                    current = []
                    opened = False
                else:
                    start = t
                    opened = True
            else:
                if not current and not opened:
                    start = segments[-1].end if segments else 0.0
                current.append(tok)
        if current:  # an unfinished segment runs to the end of the audio
            seg = Segment(start=start, end=duration, text="")
            seg.tokens = current  # type: ignore[attr-defined]
            segments.append(seg)
        for seg in segments:
            seg.text = tokenizer.decode(seg.tokens)
        return [s for s in segments if s.text.strip()]

    # -- word timestamps by cross-attention alignment ------------------------
    def _add_words(self, tokenizer, segments: list[Segment], enc, content_frames: int, duration: float):
        text_tokens = [t for s in segments for t in s.tokens if t < tokenizer.eot]
        if not text_tokens:
            return
        aligned = self.ct2.align(enc, tokenizer.sot_sequence, [text_tokens], content_frames, median_filter_width=7)[0]
        text_idx = np.array([p[0] for p in aligned.alignments])
        time_idx = np.array([p[1] for p in aligned.alignments])
        words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
        if len(word_tokens) <= 1 or len(text_idx) == 0:
            return
        token_probs = list(getattr(aligned, "text_token_probs", None) or [])
        bounds = np.concatenate([[0], np.cumsum([len(t) for t in word_tokens[:-1]])])
        jumps = np.concatenate([[True], np.diff(text_idx) != 0])
        jump_times = time_idx[jumps] / (FRAMES_PER_SECOND / 2)
        n = min(len(bounds) - 1, len(jump_times) - 1)
        timed = []
        for i in range(len(words) - 1):
            if i >= n:
                break
            beg = float(jump_times[bounds[i]]) if bounds[i] < len(jump_times) else duration
            end = float(jump_times[bounds[i + 1]]) if bounds[i + 1] < len(jump_times) else duration
            first = int(bounds[i])
            probs = token_probs[first:first + len(word_tokens[i])]
            prob = float(min(probs)) if probs else None  # a word is as sure as its least sure token
            timed.append([words[i], word_tokens[i], min(beg, duration), min(end, duration), prob])
        timed = _merge_punctuation(timed)
        # hand the words back to their segments by token count
        k = 0
        for seg in segments:
            need = len([t for t in seg.tokens if t < tokenizer.eot])
            got = 0
            seg.words = []
            seg.word_probs = []
            while k < len(timed) and got < need:
                word, toks, beg, end, prob = timed[k]
                if word.strip():
                    seg.words.append((round(beg, 3), round(max(end, beg), 3), word))
                    seg.word_probs.append(prob)
                got += len(toks)
                k += 1
            if seg.words:
                seg.end = max(seg.end, seg.words[-1][0])


def _has_sound(rest: np.ndarray, before: np.ndarray, ratio: float = 0.05) -> bool:
    """Is there more than near-silence in ``rest``, relative to the speech ``before`` it?"""
    if len(rest) == 0 or len(before) == 0:
        return False
    loud = float(np.sqrt(np.mean(np.square(before, dtype=np.float64))))
    level = float(np.sqrt(np.mean(np.square(rest, dtype=np.float64))))
    return level > ratio * loud


def _least(a, b):
    return b if a is None else a if b is None else min(a, b)


def _merge_punctuation(timed: list) -> list:
    """Attach leading quotes/brackets to the next word and trailing marks to the previous."""
    out: list = []
    pending = None
    for item in timed:
        word = item[0]
        stripped = word.strip()
        if pending is not None:
            item = [pending[0] + word.lstrip(), pending[1] + item[1], pending[2], item[3], _least(pending[4], item[4])]
            pending = None
            word = item[0]
            stripped = word.strip()
        if stripped and all(c in PREPEND for c in stripped) and word.startswith(" "):
            pending = item
            continue
        # trailing marks, and any other symbols-only piece glued to the word before it
        # ("12" + "%"): Whisper splits these off inconsistently ("12%," is one word, "12"
        # "%" two), and the streaming policy must see the same words in every hypothesis
        glued = all(c in APPEND for c in stripped) or not any(c.isalnum() for c in stripped)
        if stripped and glued and out and not word.startswith(" "):
            prev = out[-1]
            out[-1] = [prev[0] + word, prev[1] + item[1], prev[2], prev[3], _least(prev[4], item[4])]
            continue
        out.append(item)
    if pending is not None:
        out.append(pending)
    return out
