"""The commit policy of the streaming processor (LocalAgreement), with scripted backends.

Rules specified here:

* nothing is committed on the first hypothesis;
* the longest common prefix of two consecutive hypotheses is committed (a word
  agrees only where both place it within a second of each other);
* a decode cut short (the same buffer, fewer than half the words the decode
  before heard) is set aside, at most twice in a row, except a pause's or the
  end's decode of the whole buffer;
* words before the last commit are never committed again;
* a word really said twice ("very very") survives the de-duplication of
  re-transcribed words, and a re-transcribed word does not;
* the buffer is trimmed at a segment end (segment mode) or at the end of the
  second-to-last committed sentence (sentence mode), once it is longer than
  ``buffer_trimming_sec``, and the text that scrolls out becomes the prompt;
* ``partial()`` exposes the unconfirmed tail of the latest hypothesis;
* with ``early_commit_sec``, leading words the model is sure of (its word
  probability at least ``early_commit_prob``) that end that long before the
  end of the audio commit from the first hypothesis that has them; an unsure
  word stops it, a looping hypothesis commits nothing early, and a backend
  without probabilities never commits early.
"""

from __future__ import annotations

import numpy as np
import pytest

from asr_core.online import OnlineASRProcessor, StreamingOptions
from tests.fakes import ScriptedASR, TimelineASR, ramp, words

SR = 16000


def rules(**changes) -> StreamingOptions:
    """The pipeline's options without sentence case (the scripted words here are lower-case on purpose)."""
    return StreamingOptions(sentence_case=False, **changes)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


def texts(commit) -> list[str]:
    return [w[2] for w in commit.words]


def step(proc, seconds: float = 1.0):
    proc.insert_audio_chunk(silence(seconds))
    return proc.process_iter()


class SureOfSomeWords(ScriptedASR):
    """A scripted backend that also reports a probability per word."""

    def __init__(self, script, probs):
        self.probs = list(probs)
        super().__init__(script)

    def word_probabilities(self, result):
        return self.probs[: sum(len(s.words) for s in result)]


# -- LocalAgreement ----------------------------------------------------------


def test_nothing_is_committed_on_the_first_hypothesis():
    proc = OnlineASRProcessor(ScriptedASR(["the cat sat on the mat"]))
    commit = step(proc)
    assert not commit
    assert commit.text == "" and commit.beg is None
    # the hypothesis is not lost: it is the unconfirmed tail
    assert proc.partial().text == "the cat sat on the mat"


def test_longest_common_prefix_of_two_consecutive_hypotheses_is_committed():
    asr = ScriptedASR(["the cat sat on", "the cat sat in the hat"])
    proc = OnlineASRProcessor(asr)
    assert not step(proc)
    commit = step(proc)
    assert texts(commit) == ["the", "cat", "sat"]
    assert commit.text == "the cat sat"
    # times are those of the committed words (0.5 s apart, 0.4 s long)
    assert commit.beg == pytest.approx(0.0) and commit.end == pytest.approx(1.4)
    # a Commit unpacks like the classic (beg, end, text) tuple
    beg, end, text = commit
    assert (beg, end, text) == (commit.beg, commit.end, "the cat sat")


def test_the_newer_hypothesis_is_the_one_compared_next():
    # H2 and H3 agree on "in the"; H1 ("on") no longer matters
    asr = ScriptedASR(["the cat sat on", "the cat sat in the hat", "the cat sat in the hut now"])
    proc = OnlineASRProcessor(asr)
    step(proc)
    assert step(proc).text == "the cat sat"
    assert step(proc).text == "in the"


AFTERNOON = [(8.34, 8.48, " In"), (8.48, 8.62, " the"), (8.62, 8.92, " afternoon"), (8.96, 9.38, " the"),
             (9.38, 9.56, " wind"), (9.56, 9.8, " will"), (9.8, 10.1, " turn"), (10.06, 10.3, " to"),
             (10.3, 10.44, " the")]


def test_the_same_word_seconds_apart_in_two_hypotheses_is_no_agreement():
    # a decode cut short can put a word seconds away from where the previous hypothesis had it ("in" at
    # 10.3 s for the "In" at 8.34 s); agreeing on the text alone would commit it there and leave the words
    # between behind the commit
    proc = OnlineASRProcessor(ScriptedASR([]), options=rules(settle_sec=0.0, early_commit_sec=0.0))
    hyp = proc.hyp
    hyp.insert(AFTERNOON[:3], 0.0)
    assert hyp.flush() == []
    hyp.insert([(10.3, 10.58, " in")], 0.0)
    assert not hyp.set_aside and hyp.flush() == []  # not the same "in"
    hyp.insert(AFTERNOON, 0.0)
    assert hyp.flush() == []  # compared with the misplaced one: nothing agrees yet
    hyp.insert(AFTERNOON, 0.0)
    assert [w[2].strip() for w in hyp.flush()] == "In the afternoon the wind will turn to the".split()


def test_a_decode_cut_short_twice_in_a_row_is_set_aside_and_nothing_is_lost():
    # measured in a rolling restart: a decode of the buffer heard "... in the afternoon the wind will turn to",
    # then the next two decodes of the same buffer (5.3 and 6.1 s) came back as "moving in", the "in" stretched
    # to the end of the audio each time; agreeing with each other, they committed "in" at 11.96 s, and
    # "turn to the west and the sky should" was lost behind it
    proc = OnlineASRProcessor(ScriptedASR([]), options=rules(settle_sec=0.0, early_commit_sec=0.0))
    hyp = proc.hyp
    hyp.insert(AFTERNOON[:6], 0.0)
    assert hyp.flush() == []
    hyp.insert(AFTERNOON[:8], 0.0)
    assert [w[2].strip() for w in hyp.flush()] == "In the afternoon the wind will".split()
    for in_at in (11.18, 11.96):
        hyp.insert([(5.98, 6.26, " moving"), (in_at, in_at + 0.02, " in")], 0.0)
        assert hyp.set_aside and hyp.flush() == []
    assert [w[2].strip() for w in hyp.pending()] == "turn to".split()
    hyp.insert(AFTERNOON + [(10.44, 10.8, " west"), (10.8, 11.08, " and")], 0.0)
    assert not hyp.set_aside
    assert [w[2].strip() for w in hyp.flush()] == "turn to".split()  # agreed with the hypothesis before them


def test_a_shorter_hypothesis_of_a_buffer_cut_since_is_not_set_aside():
    hyp = OnlineASRProcessor(ScriptedASR([]), options=rules(settle_sec=0.0, early_commit_sec=0.0)).hyp
    hyp.insert(AFTERNOON, 0.0)
    hyp.flush()
    hyp.insert([(0.0, 0.3, " turn")], 9.8)  # a buffer that starts elsewhere (the old one was trimmed)
    assert not hyp.set_aside


def test_a_short_hypothesis_is_believed_after_two_set_aside():
    proc = OnlineASRProcessor(ScriptedASR([]), options=rules(settle_sec=0.0, early_commit_sec=0.0))
    hyp = proc.hyp
    hyp.insert([(1.0, 1.2, " thank"), (1.2, 1.4, " you"), (1.4, 1.6, " for"), (1.6, 1.9, " watching")], 0.0)
    hyp.flush()  # a hallucination over noise, say: the next decodes disagree with it
    short = [(1.0, 1.3, " okay")]
    outcomes = []
    for _ in range(4):
        hyp.insert(short, 0.0)
        outcomes.append(hyp.set_aside)
        hyp.flush()
    assert outcomes == [True, True, False, False]
    assert [w[2].strip() for w in hyp.pending()] == []  # "okay" agreed with itself and was committed
    assert [w[2].strip() for w in hyp.committed_in_buffer] == ["okay"]


def test_a_decode_of_the_whole_buffer_at_a_pause_is_believed_even_when_short():
    # the finish rule (tests/test_streaming_bugs.py): what the last decode heard supersedes older guesses
    proc = OnlineASRProcessor(ScriptedASR([]), options=rules())
    proc.hyp.insert(AFTERNOON, 0.0)
    proc.hyp.flush()
    proc.hyp.insert([(10.2, 10.44, " in")], 0.0)
    assert proc.hyp.set_aside
    proc.hyp.believe_latest()
    proc.hyp.previous = []
    assert [w[2].strip() for w in proc.hyp.commit_all()] == ["in"]


def test_a_word_placed_a_little_differently_by_the_next_hypothesis_still_agrees():
    proc = OnlineASRProcessor(ScriptedASR([]), options=rules(settle_sec=0.0, early_commit_sec=0.0))
    proc.hyp.insert([(1.0, 1.3, " cat"), (1.3, 1.6, " sat")], 0.0)
    proc.hyp.flush()
    proc.hyp.insert([(1.6, 1.9, " cat"), (1.9, 2.2, " sat"), (2.2, 2.5, " down")], 0.0)  # 0.6 s later
    assert [w[2].strip() for w in proc.hyp.flush()] == ["cat", "sat"]


def test_words_before_the_last_commit_are_not_committed_again():
    asr = ScriptedASR(
        [
            "the cat sat on",
            "the cat sat on the mat",
            "the cat sat on the mat today",
            "the cat sat on the mat today again",
        ]
    )
    proc = OnlineASRProcessor(asr)
    out = [step(proc).text for _ in range(4)]
    assert out == ["", "the cat sat on", "the mat", "today"]
    assert [w[2].strip() for w in proc.history] == "the cat sat on the mat today".split()


def test_a_word_really_said_twice_survives_deduplication():
    # "very" at 1.0-1.4 s and again at 1.5-1.9 s: two words, both must commit
    asr = ScriptedASR(["it is very", "it is very very good", "it is very very good indeed"])
    proc = OnlineASRProcessor(asr)
    step(proc)
    assert step(proc).text == "it is very"
    assert step(proc).text == "very good"
    assert " ".join(w[2].strip() for w in proc.history) == "it is very very good"


def test_a_retranscribed_word_is_not_committed_twice():
    # the third hypothesis hears the committed "very" again, 0.32 s later than
    # before (still overlapping it): it is the same sound, not a second "very"
    shifted = [(0.0, 0.4, " it"), (0.5, 0.9, " is"), (1.32, 1.6, " very"), (1.6, 2.0, " good"), (2.1, 2.5, " now")]
    asr = ScriptedASR(["it is very", "it is very good", shifted])
    proc = OnlineASRProcessor(asr)
    step(proc)
    assert step(proc).text == "it is very"
    assert step(proc).text == "good"
    assert proc.partial().text == "now"


def test_flush_at_a_pause_commits_the_tail_and_keeps_the_audio_as_context():
    # a pause after "three four": flush() decodes the new audio, commits every
    # word at once, and keeps the buffer, so the next hypothesis (which hears
    # the same words again) commits only what is new after the pause
    asr = ScriptedASR(["one two", "one two three four", "one two three four", "one two three four five six"])
    proc = OnlineASRProcessor(asr)
    step(proc)
    assert step(proc).text == "one two"
    proc.insert_audio_chunk(silence(0.5))
    assert proc.flush().text == "three four"
    assert asr.calls[-1].seconds == pytest.approx(2.5)  # the flush decoded the new half second
    assert proc.buffer_duration == pytest.approx(2.5)  # the audio stayed
    step(proc)
    assert step(proc).text == "five six"


def test_flush_cuts_the_buffer_at_a_committed_word_keeping_flush_keep_sec_of_context():
    said = "one two three four five six seven eight"  # a word every 0.5 s, the last ends at 3.9 s
    asr = ScriptedASR([said])
    proc = OnlineASRProcessor(asr, options=rules(flush_keep_sec=2.0))
    proc.insert_audio_chunk(silence(5.0))
    assert proc.flush().text == said
    # cut at the end of the last word that ends at least 2 s before the buffer's end (5.0 s)
    assert proc.buffer_time_offset == pytest.approx(2.9)  # "six" ends at 2.9 s
    assert proc.buffer_duration == pytest.approx(2.1)
    # the words kept as context are not committed again
    asr.script = [[(w[0] - 2.9, w[1] - 2.9, w[2]) for w in words(said + " nine ten") if w[0] >= 2.9]]
    step(proc)
    assert step(proc).text == "nine ten"


def test_finish_commits_the_unconfirmed_tail():
    asr = ScriptedASR(["one two", "one two three four"])
    proc = OnlineASRProcessor(asr)
    step(proc)
    assert step(proc).text == "one two"
    final = proc.finish()
    assert final.text == "three four"
    assert proc.partial().text == ""


# -- partial() ----------------------------------------------------------------


def test_partial_exposes_the_unconfirmed_tail_with_times():
    asr = ScriptedASR(["the cat sat on", "the cat sat in the hat"])
    proc = OnlineASRProcessor(asr)
    step(proc)
    assert proc.partial().text == "the cat sat on"
    step(proc)
    tail = proc.partial()
    assert tail.text == "in the hat"
    assert tail.beg == pytest.approx(1.5) and tail.end == pytest.approx(2.9)
    # partial() is a view: it commits nothing
    assert proc.stats.committed_words == 3


# -- buffer trimming ---------------------------------------------------------

# Ten sentences of five words; each word 0.3 s long, one every 0.4 s, and a
# 0.4 s pause after each sentence, so a sentence takes 2.4 s.
SENTENCES = [f"s{i}a s{i}b s{i}c s{i}d s{i}e." for i in range(10)]


def sentence_timeline() -> list[tuple]:
    out, t = [], 0.2
    for s in SENTENCES:
        ws = words(s, t, dur=0.3, gap=0.1)
        out += ws
        t = ws[-1][1] + 0.5
    return out


def run_stream(proc, until: float, chunk: float = 1.0, spy=None):
    """Feed ramp audio in ``chunk``-second pieces; returns all commits."""
    commits, t = [], 0.0
    while t < until - 1e-9:
        proc.insert_audio_chunk(ramp(t, min(until, t + chunk)))
        t = min(until, t + chunk)
        c = proc.process_iter()
        if c:
            commits.append(c)
        if spy is not None:
            spy(proc, t)
    c = proc.finish()
    if c:
        commits.append(c)
    return commits


def spy_on_cuts(proc) -> list[dict]:
    """Record every chunk_at() call with the state it was decided on."""
    cuts: list[dict] = []
    orig = proc.chunk_at

    def chunk_at(t):
        cuts.append(
            {
                "t": t,
                "buffer": proc.buffer_duration,
                "offset": proc.buffer_time_offset,
                "committed": list(proc.hyp.committed_in_buffer),
                "segment_ends": list(proc.last_segment_ends),
                "last_committed": proc.hyp.last_committed_time,
            }
        )
        orig(t)

    proc.chunk_at = chunk_at
    return cuts


def all_words(commits) -> list[str]:
    return [w[2] for c in commits for w in c.words]


def test_segment_mode_trims_the_buffer_at_a_committed_segment_end():
    timeline = sentence_timeline()
    asr = TimelineASR(timeline, segment_marks=".")
    proc = OnlineASRProcessor(asr, options=rules(buffer_trimming="segment", buffer_trimming_sec=4.0))
    cuts = spy_on_cuts(proc)
    commits = run_stream(proc, timeline[-1][1] + 1.0)

    # everything said is committed exactly once, in order, with its own times
    assert all_words(commits) == [w[2].strip() for w in timeline]
    assert [w[:2] for c in commits for w in c.words] == [w[:2] for w in timeline]

    sentence_ends = {w[1] for w in timeline if w[2].endswith(".")}
    assert len(cuts) >= 3
    for cut in cuts:
        # trimmed only once the buffer is longer than buffer_trimming_sec ...
        assert cut["buffer"] > 4.0
        # ... at the end of a segment of the latest hypothesis (not its last one) ...
        assert any(abs(cut["t"] - e) < 1e-6 for e in sentence_ends)
        assert any(abs(cut["t"] - e) < 1e-6 for e in cut["segment_ends"][:-1])
        # ... that is already committed
        assert cut["t"] <= cut["last_committed"] + 1e-9
    # the buffer never grows far past the trimming threshold
    assert max(c.seconds for c in asr.calls) <= 4.0 + 2.4 + 1.0


def test_text_that_scrolls_out_of_the_buffer_becomes_the_prompt():
    timeline = sentence_timeline()
    asr = TimelineASR(timeline, segment_marks=".")
    proc = OnlineASRProcessor(asr, options=rules(buffer_trimming="segment", buffer_trimming_sec=4.0))
    run_stream(proc, timeline[-1][1] + 1.0)
    trimmed = [c for c in asr.calls if c.start > 0]
    assert trimmed, "the buffer was never trimmed"
    assert all(c.prompt == "" for c in asr.calls if c.start == 0)
    for call in trimmed:
        said_before = "".join(w[2] for w in timeline if w[1] <= call.start + 1e-6).strip()
        assert call.prompt, f"no prompt for the buffer starting at {call.start}"
        assert said_before.endswith(call.prompt)
        # and nothing from inside the buffer is in the prompt
        assert call.prompt.split()[-1] == said_before.split()[-1]


def test_sentence_mode_trims_at_the_end_of_the_second_to_last_committed_sentence():
    timeline = sentence_timeline()
    # one segment per hypothesis: segment mode could never trim this stream
    asr = TimelineASR(timeline, segment_marks="")
    proc = OnlineASRProcessor(asr, options=rules(buffer_trimming="sentence", buffer_trimming_sec=6.0))
    cuts = spy_on_cuts(proc)
    commits = run_stream(proc, timeline[-1][1] + 1.0)

    assert all_words(commits) == [w[2].strip() for w in timeline]
    assert len(cuts) >= 2
    for cut in cuts:
        assert cut["buffer"] > 6.0
        ends = [w[1] for w in cut["committed"] if w[2].strip().endswith(".")]
        assert len(ends) >= 2
        assert cut["t"] == pytest.approx(ends[-2])
    # after each cut the last committed sentence is still in the buffer
    assert max(c.seconds for c in asr.calls) <= 6.0 + 2 * 2.4 + 1.0


def test_segment_mode_does_not_trim_below_buffer_trimming_sec():
    timeline = sentence_timeline()[:15]  # 3 sentences, 7.2 s
    asr = TimelineASR(timeline, segment_marks=".")
    proc = OnlineASRProcessor(asr, options=rules(buffer_trimming="segment", buffer_trimming_sec=15.0))
    cuts = spy_on_cuts(proc)
    commits = run_stream(proc, 8.0)
    assert cuts == []
    assert all_words(commits) == [w[2].strip() for w in timeline]
    assert all(c.start == 0.0 for c in asr.calls)


def test_invalid_trimming_mode_is_rejected():
    with pytest.raises(ValueError, match="buffer_trimming"):
        StreamingOptions(buffer_trimming="word")


# -- early commit of words the model is sure of ----------------------------------


def test_sure_words_well_before_the_end_commit_from_the_first_hypothesis():
    # "the" (ends 0.4 s) is sure; "cat" is not, so it and every word after it wait
    asr = SureOfSomeWords(["the cat sat"], probs=[0.95, 0.4, 0.95])
    proc = OnlineASRProcessor(asr, options=rules(early_commit_sec=0.3, early_commit_prob=0.6))
    commit = step(proc, 2.0)
    assert texts(commit) == ["the"]
    assert proc.partial().text == "cat sat"


def test_a_sure_word_too_close_to_the_end_of_the_audio_waits_for_agreement():
    # "sat" ends at 1.4 s, the audio at 1.5 s: 0.1 s < early_commit_sec
    asr = SureOfSomeWords(["the cat sat"], probs=[0.95, 0.95, 0.95])
    proc = OnlineASRProcessor(asr, options=rules(early_commit_sec=0.3, early_commit_prob=0.6))
    commit = step(proc, 1.5)
    assert texts(commit) == ["the", "cat"]
    # the next hypothesis agrees on "sat": it commits then, once
    commit = step(proc, 1.0)
    assert texts(commit) == ["sat"]


def test_without_word_probabilities_nothing_commits_early():
    proc = OnlineASRProcessor(ScriptedASR(["the cat sat"]), options=StreamingOptions(early_commit_sec=0.3))
    assert not step(proc, 3.0)


def test_early_commit_is_off_by_default_in_the_processor():
    asr = SureOfSomeWords(["the cat sat"], probs=[0.99, 0.99, 0.99])
    assert not step(OnlineASRProcessor(asr), 3.0)


def test_a_looping_hypothesis_commits_nothing_early_even_when_sure():
    # the model repeats a phrase it is sure of: the loop guard cuts it, and nothing commits unconfirmed
    looping = "go on " * 6
    asr = SureOfSomeWords([looping], probs=[0.99] * 12)
    proc = OnlineASRProcessor(asr, options=StreamingOptions(early_commit_sec=0.3))
    assert not step(proc, 8.0)
