"""What the built-in backends make of their engines' raw results (no model needed).

* words the model itself calls non-speech are left out of ``ts_words``;
* each word's probability, where the engine gives one, is passed on
  (``word_probabilities``, one per word of ``ts_words``), so that sure words
  can commit early; where it gives none, the probability is unknown (None);
* times are clipped to the audio that was transcribed.
"""

from __future__ import annotations

import importlib

import pytest

from asr_core.base import BackendUnavailable
from asr_core.result import Segment, speech_word_probs, speech_words


def test_non_speech_segments_give_no_words_and_no_probabilities():
    speech = Segment(0.0, 1.0, "hello", words=[(0.0, 0.5, " hello")], word_probs=[0.9])
    noise = Segment(1.0, 2.0, "thanks", words=[(1.0, 1.5, " thanks")], word_probs=[0.2],
                    no_speech_prob=0.95, avg_logprob=-1.5)
    assert speech_words([speech, noise]) == [(0.0, 0.5, " hello")]
    assert speech_word_probs([speech, noise]) == [0.9]


def test_a_segment_without_probabilities_has_unknown_ones():
    seg = Segment(0.0, 1.0, "a b", words=[(0.0, 0.4, " a"), (0.5, 0.9, " b")])
    assert speech_word_probs([seg]) == [None, None]


def backend_module(name: str):
    try:
        return importlib.import_module(f"asr_core.backends.{name}")
    except BackendUnavailable as exc:  # its engine is not installed here
        pytest.skip(str(exc).splitlines()[0])


@pytest.mark.parametrize(
    "name, word_key, prob_key",
    [("mlx_whisper", "word", "probability"), ("whisper_timestamped", "text", "confidence")],
)
def test_engine_segments_keep_word_probabilities_and_clip_times(name, word_key, prob_key):
    module = backend_module(name)
    raw = {
        "start": 0.0, "end": 2.5, "text": " the cat",
        "words": [
            {word_key: " the", "start": 0.0, "end": 0.4, prob_key: 0.97},
            {word_key: " cat", "start": 0.5, "end": 2.5, prob_key: 0.41},
        ],
    }
    seg = module.to_segment(raw, duration=2.0)
    assert seg.words == [(0.0, 0.4, " the"), (0.5, 2.0, " cat")]
    assert seg.word_probs == [pytest.approx(0.97), pytest.approx(0.41)]
    assert seg.end == 2.0
