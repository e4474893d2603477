"""The single-window CTranslate2 decoder (asr_core.backends.ct2_window).

* punctuation and symbols glued to a word stay with it, so that consecutive
  hypotheses split the same text into the same words ("12%" is one word
  whether Whisper tokenises it as "12%," or as "12" + "%");
* with the real model: word times lie inside the window, in order, and audio
  too short to hold a word gives no segment.
"""

from __future__ import annotations

import pytest

from asr_core.backends.ct2_window import _merge_punctuation
from asr_core.hypothesis import HypothesisBuffer


def merged(*pieces: str) -> list[str]:
    timed = [[w, [i], float(i), float(i) + 0.5, 0.9] for i, w in enumerate(pieces)]
    return [item[0] for item in _merge_punctuation(timed)]


def test_trailing_marks_attach_to_the_word_before():
    assert merged(" hello", ",", " world", ".") == [" hello,", " world."]


def test_symbols_glued_to_a_number_stay_with_it():
    assert merged(" by", " 12", "%", " but") == [" by", " 12%", " but"]
    assert merged(" 5", "/", " more") == [" 5/", " more"]


def test_leading_quotes_attach_to_the_word_after():
    assert merged(" he", " said", ' "', "stop", '"') == [" he", " said", ' "stop"']


def test_a_spaced_symbol_and_word_pieces_keep_their_own_words():
    # " &" was spoken as a word; "-year" holds letters: Whisper's own split stands
    assert merged(" salt", " &", " pepper") == [" salt", " &", " pepper"]
    assert merged(" a", " mid", "-year") == [" a", " mid", "-year"]


def test_merged_pieces_keep_the_tokens_of_both_and_the_times_of_the_word():
    out = _merge_punctuation([[" 12", [1], 1.0, 1.3, 0.9], ["%", [2], 1.3, 1.8, 0.6]])
    assert out == [[" 12%", [1, 2], 1.0, 1.3, 0.6]]  # and the probability of the less sure piece


def test_a_percent_sign_does_not_split_the_word_across_hypotheses():
    # both spellings of the same words agree, so "12%" commits whole
    hyp = HypothesisBuffer()
    first = [(0.0, 0.4, " by"), (0.4, 1.0, " 12%."), (1.0, 1.2, " But")]
    second = [(0.0, 0.4, " by"), (0.4, 1.0, merged(" 12", "%")[0]), (1.0, 1.2, " must")]
    hyp.insert(first, 0.0)
    hyp.flush()
    hyp.insert(second, 0.0)
    assert [w[2] for w in hyp.flush()] == [" by", " 12%"]


@pytest.mark.model
def test_word_times_lie_inside_the_window_and_in_order(tiny_en):
    from asr_core.audio import load_audio
    from tests.conftest import clip_path

    audio = load_audio(clip_path("weather"))[: int(4.3 * 16000)]
    segments = tiny_en.decoder.decode(audio, "", "en", "transcribe")
    ws = [w for s in segments for w in s.words]
    assert len(ws) >= 6
    assert all(0.0 <= b <= e <= 4.3 for b, e, _ in ws)
    assert [w[0] for w in ws] == sorted(w[0] for w in ws)
    assert all(s.start <= s.end <= 4.3 for s in segments)
    assert tiny_en.decoder.decode(audio[:800], "", "en", "transcribe") == []
