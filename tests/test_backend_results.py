"""What the built-in backends make of their engines' raw results (no model needed).

* words the model itself calls non-speech are left out of ``ts_words``: Whisper's rule
  (an average log-probability under -1, where Whisper calls a decode failed, with a no-speech
  probability over 0.45; Whisper's own bar is 0.6), a no-speech
  probability over 0.8 whatever the text's probability ("Thank you." on silence), a loop
  the model half takes for silence, and text without a letter or a digit (". . .");
* each word's probability, where the engine gives one, is passed on
  (``word_probabilities``, one per word of ``ts_words``), so that sure words
  can commit early; where it gives none, the probability is unknown (None);
* times are clipped to the audio that was transcribed.
"""

from __future__ import annotations

import importlib

import pytest

from asr_core.base import BackendUnavailable
from asr_core.result import Segment, is_speech, speech_word_probs, speech_words


def test_non_speech_segments_give_no_words_and_no_probabilities():
    speech = Segment(0.0, 1.0, "hello", words=[(0.0, 0.5, " hello")], word_probs=[0.9])
    noise = Segment(1.0, 2.0, "thanks", words=[(1.0, 1.5, " thanks")], word_probs=[0.2],
                    no_speech_prob=0.95, avg_logprob=-1.5)
    assert speech_words([speech, noise]) == [(0.0, 0.5, " hello")]
    assert speech_word_probs([speech, noise]) == [0.9]


@pytest.mark.parametrize("text, nsp, lp, cr, speech", [
    ("hello there", 0.05, -0.3, 1.0, True),
    ("die auf die Durchsagen am Bahnsteig", 0.78, -0.9, 0.9, True),  # base on a synthetic German voice
    ("Thank you.", 0.97, -0.86, 0.6, False),  # tiny.en on silence: fluent, and sure there is no speech
    ("I don't know what I'm going to do.", 0.9, -1.2, 0.8, False),  # Whisper's own rule
    ("I'm not sure what to do.", 0.71, -1.3, 0.8, False),
    ("you you you you", 0.6, -1.42, 1.14, False),  # tiny.en on room noise, under Whisper's own bar of 0.6
    ("you", 0.5, -1.35, 0.33, False),
    ("And", 0.26, -2.16, 0.3, True),  # the first word of noisy speech in a short window: sure it is speech
    ("don't know what don't know what don't know what", 0.6, -0.2, 6.9, False),  # a loop on noise
    ("and the the the the the", 0.1, -0.2, 3.0, True),  # a loop on speech: the streaming policy cuts it
    (". . . .", 0.05, -0.6, 0.7, False),
    ("____", 0.4, -0.5, 1.9, False),
    ("ご視聴ありがとうございました", 0.3, -0.5, 0.9, True),  # letters of any script count
])
def test_what_the_model_itself_calls_non_speech(text, nsp, lp, cr, speech):
    seg = Segment(0.0, 1.0, text, no_speech_prob=nsp, avg_logprob=lp, compression_ratio=cr)
    assert is_speech(seg) is speech


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
