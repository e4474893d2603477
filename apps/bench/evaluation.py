"""Word error rate after Whisper-style English normalisation, formatted accuracy, and latency percentiles.

* :func:`wer`: word errors per reference word after Whisper's English normaliser (case,
  punctuation and spelling variants do not count);
* :func:`formatted_wer`: the same on the words exactly as written (a word whose case or
  punctuation differs is an error): what a reader of subtitles sees;
* :func:`sentence_marks_kept`: of the sentence ends (``.``, ``?``, ``!``) of one
  transcript (the offline pass), how many the other one (streaming) has at the same
  word, after aligning the two on their normalised words.

English text is normalised with Whisper's English normaliser (spellings, numbers, contractions);
any other language with Whisper's basic one (case, punctuation and symbols only), since the
English rules would rewrite words of other languages.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@lru_cache(maxsize=1)
def _basic_normalizer():
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize(text: str, language: str | None = "en") -> str:
    """``text`` normalised for scoring: English rules for ``en`` (and None), the basic ones otherwise."""
    return _normalizer()(text) if language in (None, "en") else _basic_normalizer()(text)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str, language: str | None = "en") -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (both normalised for ``language``)."""
    ref = normalize(reference, language).split()
    hyp = normalize(hypothesis, language).split()
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def formatted_wer(reference: str, hypothesis: str) -> float:
    """Word error rate on the words as written: case and punctuation count, nothing is normalised."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


SENTENCE_MARKS = (".", "?", "!")
_CLOSERS = "\"')]}”’"
_KEY = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    return _KEY.sub("", word.casefold())


def ends_sentence(word: str) -> bool:
    return word.rstrip(_CLOSERS).endswith(SENTENCE_MARKS)


def align(ref: list[str], hyp: list[str]) -> list[int | None]:
    """For each word of ``ref``, the index of the word of ``hyp`` it is aligned to (None: deleted).

    A Levenshtein alignment on case- and punctuation-free keys (substitutions align too).
    """
    a, b = [_key(w) for w in ref], [_key(w) for w in hyp]
    n, m = len(a), len(b)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    out: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        if d[i][j] == d[i - 1][j - 1] + (a[i - 1] != b[j - 1]):
            out[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif d[i][j] == d[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return out


def sentence_marks_kept(source: str, other: str) -> tuple[int, int]:
    """(kept, total): sentence ends of ``source`` whose aligned word in ``other`` ends a sentence too.

    The last word of either text always ends it, so a final mark counts only when written.
    """
    src, oth = source.split(), other.split()
    marks = [i for i, w in enumerate(src) if ends_sentence(w)]
    where = align(src, oth)
    kept = sum(1 for i in marks if where[i] is not None and ends_sentence(oth[where[i]]))
    return kept, len(marks)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def reference_text(wav_path: str | Path) -> str:
    """The ``text`` of the JSON file beside a corpus clip."""
    return json.loads(Path(wav_path).with_suffix(".json").read_text())["text"]


@lru_cache(maxsize=1)
def _stop_words() -> frozenset:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(normalize(w) for w in ENGLISH_STOP_WORDS)


def content_words(text: str) -> set[str]:
    """The distinct English content words of ``text``: normalised, without stop words (scikit-learn's list)."""
    return {w for w in normalize(text).split() if w not in _stop_words() and any(c.isalpha() for c in w)}


def content_word_share(reference: str, hypothesis: str) -> float:
    """The share of ``reference``'s distinct content words found in ``hypothesis`` (English; 1.0 for none)."""
    want = content_words(reference)
    if not want:
        return 1.0
    return len(want & set(normalize(hypothesis).split())) / len(want)
