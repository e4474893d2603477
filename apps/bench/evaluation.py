"""Word error rate after Whisper-style normalisation, and latency percentiles.

English text is normalised with Whisper's English normaliser (spellings, numbers, contractions);
any other language with Whisper's basic one (case, punctuation and symbols only), since the
English rules would rewrite words of other languages.
"""

from __future__ import annotations

import json
import math
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
