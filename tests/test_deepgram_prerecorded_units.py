"""Deepgram pre-recorded replies (``POST /v1/listen``): how words become utterances and paragraphs, which options
are refused. Logic only; tests/test_gateway_clients.py sends real files with the official SDK."""

from __future__ import annotations

import pytest

from pipeline.formats import Word
from workers.gateway.deepgram import OptionError
from workers.gateway.deepgram_rest import FileOptions, paragraphs, split_sentences, split_utterances

SPOKEN = [Word(0.0, 0.4, "Good"), Word(0.5, 0.9, "morning."), Word(1.0, 1.3, "Rain"), Word(1.4, 1.8, "later."),
          Word(3.0, 3.4, "Wind"), Word(3.5, 3.9, "too?")]  # a 1.2 s pause before "Wind"


def test_utterances_split_where_the_gap_between_words_reaches_utt_split():
    assert [[w.text for w in u] for u in split_utterances(SPOKEN, 0.8)] == [
        ["Good", "morning.", "Rain", "later."], ["Wind", "too?"]]
    assert len(split_utterances(SPOKEN, 2.0)) == 1
    assert len(split_utterances(SPOKEN, 0.05)) == 6
    assert split_utterances([], 0.8) == []


def test_sentences_end_after_a_final_mark_even_inside_a_quote():
    words = [Word(0, 1, "He"), Word(1, 2, '"stop."'), Word(2, 3, "Then"), Word(3, 4, "left")]
    assert [[w.text for w in s] for s in split_sentences(words)] == [["He", '"stop."'], ["Then", "left"]]


def test_paragraphs_are_the_utterances_with_their_sentences_and_deepgrams_transcript_layout():
    p = paragraphs(split_utterances(SPOKEN, 0.8))
    assert p["transcript"] == "\nGood morning. Rain later.\n\nWind too?\n"
    first, second = p["paragraphs"]
    assert first["num_words"] == 4 and (first["start"], first["end"]) == (0.0, 1.8)
    assert [s["text"] for s in first["sentences"]] == ["Good morning.", "Rain later."]
    assert (first["sentences"][1]["start"], first["sentences"][1]["end"]) == (1.0, 1.8)
    assert second["sentences"] == [{"text": "Wind too?", "start": 3.0, "end": 3.9}]


def test_file_options_take_deepgrams_flags_and_refuse_what_cannot_be_served():
    o = FileOptions.parse({"utterances": "true", "paragraphs": "1", "utt_split": "1.5", "punctuate": "true",
                           "model": "nova-3"})
    assert (o.utterances, o.paragraphs, o.utt_split, o.listen.punctuate, o.listen.model) == (True, True, 1.5, True,
                                                                                             "nova-3")
    assert FileOptions.parse({}) == FileOptions(FileOptions.parse({}).listen)  # defaults: no extras, 0.8 s
    for query, says in (({"callback": "https://example.com/hook"}, "callback"), ({"utt_split": "soon"}, "utt_split"),
                        ({"utt_split": "0"}, "out of range"), ({"utterances": "maybe"}, "utterances"),
                        ({"multichannel": "true"}, "multichannel"), ({"encoding": "linear16"}, "sample_rate")):
        with pytest.raises(OptionError, match=says):
            FileOptions.parse(query)
