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

from ..batching import PROMPT_SHARE, Window, group_windows
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
    beam_size: int = 3
    patience: float = 1.0
    length_penalty: float = 1.0
    max_initial_timestamp: float = 1.0
    suppress_blank: bool = True
    word_timestamps: bool = True
    # silence appended after the audio: with less room after the speech the
    # decoder more often replays what it already said (1 s: 34 replays in 221
    # decodes over the test clips, 2 s: 19, 3 s: 8 but a higher WER). 1.5 s with
    # beam 3: the same WER as 2 s with beam 5 over the 12 corpus clips (clean 0.095
    # against 0.104, noisy and gapped 0.153 against 0.150) for 13-19% less CPU
    # (docs/benchmarks.md, "Where a decode's CPU goes")
    pad_seconds: float = 1.5
    max_prompt_tokens: int = 223


class WindowDecoder:
    # CTranslate2 decodes a batch only with prompts of one length: the longer ones are cut
    # to the shortest of their group (asr_core.batching.group_windows)
    prompt_share: float | None = PROMPT_SHARE

    def __init__(self, whisper_model, options: WindowOptions):
        # whisper_model: faster_whisper.WhisperModel (for its tokenizer and features)
        self.wm = whisper_model
        self.ct2 = whisper_model.model
        self.fe = whisper_model.feature_extractor
        self.hf_tokenizer = whisper_model.hf_tokenizer
        self.options = options

    # -- features -----------------------------------------------------------
    def window_frames(self, n_samples: int) -> int:
        """The window a buffer of ``n_samples`` is decoded in alone: its audio plus ``pad_seconds``, whole seconds."""
        target_seconds = math.ceil(n_samples / SAMPLING_RATE + self.options.pad_seconds)
        return min(MAX_FRAMES, target_seconds * FRAMES_PER_SECOND)

    def _features(self, audio: np.ndarray, target: int | None = None) -> tuple[np.ndarray, int]:
        """Log-mel features of ``audio`` padded with silence to ``target`` frames (default: its own window)."""
        content_frames = len(audio) // HOP
        target = self.window_frames(len(audio)) if target is None else target
        padded = np.zeros(target * HOP, dtype=np.float32)
        padded[: len(audio)] = audio[: target * HOP]
        feats = self.fe(padded, padding=0)[:, :target]
        if feats.shape[1] < target:
            feats = np.pad(feats, ((0, 0), (0, target - feats.shape[1])), mode="edge")
        return feats, min(content_frames, target)

    def _encode(self, feats: np.ndarray):
        """Encoder output of one window (``[n_mels, frames]``) or a batch of them (``[batch, n_mels, frames]``)."""
        import ctranslate2

        batch = feats if feats.ndim == 3 else feats[None, :, :]
        x = ctranslate2.StorageView.from_array(np.ascontiguousarray(batch))
        return self.ct2.encode(x, to_cpu=False)

    def _tokenizer(self, language: str | None, task: str):
        from faster_whisper.tokenizer import Tokenizer

        key = (language or "en", task)
        cache = self.__dict__.setdefault("_tokenizers", {})
        if key not in cache:
            cache[key] = Tokenizer(self.hf_tokenizer, self.ct2.is_multilingual, task=task, language=key[0])
        return cache[key]

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
        (result,) = self.decode_batch([audio], [prompt], [language], [task], detect=detect)
        if isinstance(result, BaseException):
            raise result
        return result

    def decode_batch(self, audios: list, prompts: list[str], languages: list, tasks: list[str],
                     max_pad_seconds: float = 0.0, max_batch: int = 16, detect: bool = False) -> list:
        """:meth:`decode` of several buffers at once: one list of segments, or an exception, per buffer.

        Each buffer has its own prompt, language (None: detected) and task; ``detect`` as in
        :meth:`decode`, for every buffer.

        Buffers whose windows differ by at most ``max_pad_seconds`` (and whose prompts are
        of similar lengths, :func:`asr_core.batching.group_windows`) are encoded and
        decoded as one batch, padded to the longest; the second windows of the buffers
        that need one run as a second batch. A buffer alone in its group is decoded exactly
        as :meth:`decode` does.
        """
        n = len(audios)
        if not len(prompts) == len(languages) == len(tasks) == n:
            raise ValueError(f"{n} buffers but {len(prompts)} prompts, {len(languages)} languages, {len(tasks)} tasks")
        groups = dict(max_pad_frames=int(round(max_pad_seconds * FRAMES_PER_SECOND)), max_batch=max_batch)
        out: list = [None] * n
        for task in sorted(set(tasks)):  # a batch decodes in one task (its start sequence)
            items = [i for i in range(n) if tasks[i] == task]
            decoded = self._decode_task([audios[i] for i in items], [prompts[i] for i in items],
                                        [languages[i] for i in items], task, groups, detect)
            for i, result in zip(items, decoded, strict=True):
                out[i] = result
        return out

    def _decode_task(self, audios: list, prompts: list[str], languages: list, task: str, groups: dict,
                     detect: bool) -> list:
        """:meth:`decode_batch` of buffers that share one task: first windows, then the second windows."""
        firsts = self._decode_windows(list(audios), list(prompts), list(languages), task, detect=detect, **groups)
        out: list = list(firsts)
        more: list[tuple[int, float]] = []  # (item, seek) of the buffers that get a second window
        for i, first in enumerate(firsts):
            if isinstance(first, BaseException):
                continue
            segments, _lang = first
            out[i] = segments
            audio = audios[i]
            # where the transcript stops: the last word's end (a segment left open
            # by an early end of text runs to the end of the audio on paper only)
            ends = [w[1] for s in segments for w in s.words] or [s.end for s in segments]
            seek = max(ends, default=0.0)
            start = int(seek * SAMPLING_RATE)
            duration = len(audio) / SAMPLING_RATE
            if segments and duration - seek >= SEEK_MIN_S and _has_sound(audio[start:], audio[:start]):
                more.append((i, seek))
        if more:
            rests = [audios[i][int(seek * SAMPLING_RATE):] for i, seek in more]
            more_prompts = [(prompts[i] + " " + " ".join(s.text for s in out[i])).strip() for i, _ in more]
            seconds = self._decode_windows(rests, more_prompts, [firsts[i][1] for i, _ in more], task, **groups)
            for (i, seek), second in zip(more, seconds, strict=True):
                if isinstance(second, BaseException):
                    out[i] = second
                    continue
                # on silence Whisper invents text ("Thank you so much for joining us.")
                kept = [s for s in second[0] if s.no_speech_prob <= NO_SPEECH_MAX]
                for s in kept:
                    s.start, s.end = round(s.start + seek, 3), round(s.end + seek, 3)
                    s.words = [(round(b + seek, 3), round(e + seek, 3), w) for b, e, w in s.words]
                out[i] = out[i] + kept
        return out

    def _decode_windows(self, audios: list, prompts: list[str], languages: list, task: str,
                        max_pad_frames: int = 0, max_batch: int = 16, detect: bool = False) -> list:
        """One window per buffer: ``(segments, language)`` or the exception, per buffer.

        ``languages``: each buffer's (None: detected); ``detect``: detect it also where given.
        """

        results: list = [None] * len(audios)
        windows, prompt_tokens = [], {}
        tokenizer = self._tokenizer(None, task)  # prompt text encodes the same in every language
        for i, audio in enumerate(audios):
            if len(audio) < HOP * 10:
                results[i] = ([], languages[i])
                continue
            try:
                prompt_tokens[i] = self._prompt_tokens(tokenizer, prompts[i])
            except Exception as exc:  # noqa: BLE001 - this buffer fails, the others go on
                results[i] = exc
                continue
            windows.append(Window(i, self.window_frames(len(audio)), len(prompt_tokens[i])))
        for group in group_windows(windows, max_pad_frames, max_batch, self.prompt_share):
            items = [w.index for w in group]
            try:
                self._decode_group(items, audios, prompt_tokens, languages, task, results, detect)
            except Exception as exc:  # noqa: BLE001 - one item may have failed the batch: each alone
                if len(items) == 1:
                    results[items[0]] = exc
                    continue
                for i in items:
                    try:
                        self._decode_group([i], audios, prompt_tokens, languages, task, results, detect)
                    except Exception as one:  # noqa: BLE001
                        results[i] = one
        return results

    def _decode_group(self, items: list[int], audios: list, prompt_tokens: dict, languages: list, task: str,
                      results: list, detect: bool = False, detections: dict | None = None) -> None:
        """Encode and decode the buffers ``items`` as one batch, padded to the longest window.

        A buffer's language is its own (``languages[i]``) or, where None, the one detected
        in its window; ``detect``: detect it also where given (the segments report what the
        model heard). A batch decodes in one language: buffers in different ones are split
        into a batch per language. ``detections``: what was already detected, by item.
        """
        detections = {} if detections is None else detections
        multilingual = self.ct2.is_multilingual
        needs = multilingual and any((detect or not languages[i]) and i not in detections for i in items)
        langs = [languages[i] or (detections[i][0][0] if detections.get(i) else None) for i in items]
        if not needs:
            if self._split_languages(items, langs, audios, prompt_tokens, languages, task, results, detections):
                return
        target = max(self.window_frames(len(audios[i])) for i in items)
        features = [self._features(audios[i], target) for i in items]
        enc = self._encode(np.stack([f for f, _ in features]))
        if needs:
            for i, found in zip(items, self.ct2.detect_language(enc), strict=True):
                detections[i] = tuple((tok[2:-2], float(p)) for tok, p in found[:DETECTED_KEPT])
            langs = [languages[i] or detections[i][0][0] for i in items]
            if self._split_languages(items, langs, audios, prompt_tokens, languages, task, results, detections):
                return
        tokenizer = self._tokenizer(langs[0], task)
        content = [c for _, c in features]
        durations = [c / FRAMES_PER_SECOND for c in content]
        keep = min(len(prompt_tokens[i]) for i in items)  # one prompt length per batch
        prompts = [self._prompt_sequence(tokenizer, prompt_tokens[i][len(prompt_tokens[i]) - keep:]) for i in items]
        limits = [self._max_length(len(prompts[0]), d) for d in durations]
        o = self.options
        generated = self.ct2.generate(
            enc,
            prompts,
            beam_size=o.beam_size,
            patience=o.patience,
            length_penalty=o.length_penalty,
            max_length=max(limits),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=o.suppress_blank,
            suppress_tokens=self._suppress(tokenizer, max(durations)),
            max_initial_timestamp_index=int(round(o.max_initial_timestamp / SECONDS_PER_TIMESTAMP)),
        )
        per_item = []
        for k, result in enumerate(generated):
            found = detections.get(items[k], ())
            tokens = list(result.sequences_ids[0])
            limit = self._new_tokens(len(prompts[k]), limits[k])
            if len(tokens) > limit:  # a batch decodes as long as its longest item may: this one may not
                tokens = tokens[:limit]
            avg_logprob = result.scores[0] * (len(tokens) ** o.length_penalty) / (len(tokens) + 1)
            segments = self._split(tokenizer, tokens, durations[k])
            text_all = "".join(s.text for s in segments)
            ratio = compression_ratio(text_all)
            for s in segments:
                s.no_speech_prob = float(result.no_speech_prob)
                s.avg_logprob = float(avg_logprob)
                s.compression_ratio = ratio
                s.language = langs[k] or "en"
                s.language_prob, s.language_probs = dict(found).get(s.language), found
            per_item.append(segments)
        if o.word_timestamps and any(per_item):
            text_tokens = [[t for s in segs for t in s.tokens if t < tokenizer.eot] for segs in per_item]
            aligned = self.ct2.align(enc, tokenizer.sot_sequence, text_tokens, content, median_filter_width=7)
            for segs, alignment, toks, d in zip(per_item, aligned, text_tokens, durations, strict=True):
                if toks:
                    self._add_words(tokenizer, segs, alignment, toks, d)
        for i, segs, lang in zip(items, per_item, langs, strict=True):
            for s in segs:
                s.text = s.text.strip()
            results[i] = (segs, lang)

    def _split_languages(self, items: list[int], langs: list, audios: list, prompt_tokens: dict, languages: list,
                         task: str, results: list, detections: dict) -> bool:
        """Decode ``items`` as one batch per language when their languages ``langs`` differ (True if so)."""
        if len(items) < 2 or len(set(langs)) < 2:
            return False
        chosen = list(languages)
        for i, lang in zip(items, langs, strict=True):
            chosen[i] = lang
        for lang in sorted(set(langs), key=str):  # one start sequence per generate and align call
            same = [i for i, x in zip(items, langs, strict=True) if x == lang]
            self._decode_group(same, audios, prompt_tokens, chosen, task, results, False, detections)
        return True

    def _suppress(self, tokenizer, duration: float) -> list[int]:
        """Forbid timestamps after the end of the audio (+0.1 s of slack)."""
        n_ts = int(round(duration / SECONDS_PER_TIMESTAMP))
        first_forbidden = tokenizer.timestamp_begin + n_ts + 6
        last_ts = tokenizer.timestamp_begin + 1500
        return [-1] + list(range(first_forbidden, last_ts + 1))

    @staticmethod
    def _max_length(prompt_length: int, duration: float) -> int:
        """``max_length`` for ``generate``: the prompt plus a bound on the new tokens from the window's duration."""
        return min(448, prompt_length + int(TOKENS_BASE + TOKENS_PER_SECOND * duration))

    @staticmethod
    def _new_tokens(prompt_length: int, max_length: int) -> int:
        """How many tokens CTranslate2 generates at most with this ``max_length`` (it counts the prompt in)."""
        start_step = prompt_length - 1 if prompt_length > 1 else 0  # tokens before the start token
        return min(max_length // 2, max_length - start_step) if start_step else max_length // 2

    def _prompt(self, tokenizer, prompt: str) -> list[int]:
        return self._prompt_sequence(tokenizer, self._prompt_tokens(tokenizer, prompt))

    def _prompt_tokens(self, tokenizer, prompt: str) -> list[int]:
        """The previous-text tokens of ``prompt`` (its last ``max_prompt_tokens``)."""
        if not prompt or not prompt.strip():
            return []
        return tokenizer.encode(" " + prompt.strip())[-self.options.max_prompt_tokens :]

    @staticmethod
    def _prompt_sequence(tokenizer, text_tokens: list[int]) -> list[int]:
        out = [tokenizer.sot_prev] + list(text_tokens) if text_tokens else []
        return out + list(tokenizer.sot_sequence)

    # -- parse timestamp tokens into segments -------------------------------
    @staticmethod
    def _split(tokenizer, tokens: list[int], duration: float) -> list[Segment]:
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
    @staticmethod
    def _add_words(tokenizer, segments: list[Segment], aligned, text_tokens: list[int], duration: float):
        """Word times (and probabilities) from ``aligned``: CTranslate2's alignment of ``text_tokens``."""
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
