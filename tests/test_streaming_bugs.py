"""Known bugs of other streaming Whisper implementations, which ours must not have.

(a) ``finish()`` decodes the audio not decoded yet, instead of returning the
    last hypothesis;
(b) with VAC, the speech between the last decode and the detected end of
    speech is transcribed (and each utterance keeps the stream's clock);
(c) when nothing gets committed, the buffer (and so the latency) stays bounded;
(d) a hypothesis looping on a phrase is not committed as stable;
(e) a word that only changes its punctuation ("word" / "word,") still commits;
(f) committed history and all internal lists stay bounded over hours;
(g) case and punctuation read as offline: a mark that only ends the audio
    waits for the next hypothesis, and a sentence begins with a capital.

Scripted backends (tests/fakes.py) make each case exact and fast; the
real-model counterparts of (a) and (b) are in test_streaming_wer.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from asr_core.online import OnlineASRProcessor, StreamingOptions
from asr_core.vac import VACOnlineASRProcessor
from tests.fakes import SR, ScriptedASR, ScriptedSegmenter, TimelineASR, ramp, words


def zeros(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


def committed_words(commits) -> list[str]:
    return [w[2] for c in commits for w in c.words]


# -- (a) finish() decodes the undecoded tail -----------------------------------

TAIL_TIMELINE = words("we will meet again on friday", start=0.2, dur=0.35, gap=0.15)  # last word 2.7-3.05


def test_a_finish_decodes_audio_that_arrived_after_the_last_decode():
    asr = TimelineASR(TAIL_TIMELINE)
    proc = OnlineASRProcessor(asr)
    commits = []
    for t in (0.0, 1.0, 2.0):
        proc.insert_audio_chunk(ramp(t, t + 1.0))
        commits.append(proc.process_iter())
    decodes_before = len(asr.calls)
    assert asr.calls[-1].end == pytest.approx(3.0)
    # "friday" ends at 3.05: only the tail that finish() must decode holds it
    proc.insert_audio_chunk(ramp(3.0, 3.6))
    commits.append(proc.finish())

    assert len(asr.calls) == decodes_before + 1, "finish() did not decode the tail"
    assert asr.calls[-1].end == pytest.approx(3.6), "finish() decoded less than the whole buffer"
    assert " ".join(committed_words(commits)).split() == "we will meet again on friday".split()
    last = commits[-1].words[-1]
    assert last[2].strip() == "friday" and last[:2] == pytest.approx((2.7, 3.05))


def test_a_finish_after_a_full_decode_does_not_decode_again():
    asr = TimelineASR(TAIL_TIMELINE)
    proc = OnlineASRProcessor(asr)
    for t in (0.0, 1.0, 2.0, 3.0):
        proc.insert_audio_chunk(ramp(t, t + 1.0))
        proc.process_iter()
    n = len(asr.calls)
    final = proc.finish()
    assert len(asr.calls) == n
    assert final.text.split()[-1] == "friday"


@pytest.mark.parametrize(
    "final_hypothesis,expected",
    [("thanks for watching", "watching"), ("thanks for", ""), ("", "")],
)
def test_a_finish_commits_what_its_own_decode_heard_not_an_older_guess(final_hypothesis, expected):
    # "watching you" at the end of the second hypothesis was a guess on cut-off
    # audio; the final decode hears the whole buffer, and only it counts
    asr = ScriptedASR(["thanks for", "thanks for watching you", final_hypothesis])
    proc = OnlineASRProcessor(asr)
    proc.insert_audio_chunk(ramp(0.0, 1.0))
    proc.process_iter()
    proc.insert_audio_chunk(ramp(1.0, 2.0))
    assert proc.process_iter().text == "thanks for"
    assert proc.partial().text == "watching you"
    proc.insert_audio_chunk(ramp(2.0, 2.5))
    final = proc.finish()
    assert len(asr.calls) == 3
    assert final.text == expected


def test_a_finish_leaves_a_fresh_buffer_at_the_stream_end():
    asr = TimelineASR(TAIL_TIMELINE)
    proc = OnlineASRProcessor(asr)
    proc.insert_audio_chunk(ramp(0.0, 3.6))
    proc.finish()
    assert proc.buffer_duration == 0.0
    assert proc.buffer_time_offset == pytest.approx(3.6)
    assert not proc.finish()  # nothing left, nothing decoded
    assert len(asr.calls) == 1


# -- (b) VAC: the end of each utterance is transcribed ---------------------------


def run_vac(vac, until: float, chunk: float = 0.04):
    """Feed ramp audio to a VAC processor as a live source would; (emit_time, commit) pairs."""
    out, t = [], 0.0
    while t < until - 1e-9:
        end = min(until, t + chunk)
        vac.insert_audio_chunk(ramp(t, end))
        t = end
        c = vac.process_iter()
        if c:
            out.append((t, c))
    c = vac.finish()
    if c:
        out.append((t, c))
    return out


def test_b_vac_transcribes_speech_between_the_last_decode_and_the_end_of_speech():
    # speech 0.5-3.8 s; decodes every 1.0 s of speech, so the last one covers up
    # to ~3.5 s; "tonight" (3.4-3.75) is heard only if the end of speech is decoded
    timeline = words("see you all at dinner tonight", start=0.5, dur=0.35, gap=0.23)
    assert timeline[-1][1] == pytest.approx(3.75)
    asr = TimelineASR(timeline)
    vac = VACOnlineASRProcessor(1.0, asr, segmenter=ScriptedSegmenter([(0.5, 3.8)], end_delay=0.5))
    out = run_vac(vac, 6.0)

    assert [w[2].strip() for _, c in out for w in c.words] == "see you all at dinner tonight".split()
    # flushed when the end of speech was detected (3.8 + 0.5 s), not at the end of the stream
    emitted_at = [t for t, c in out if any(w[2].strip() == "tonight" for w in c.words)][0]
    assert emitted_at <= 3.8 + 0.5 + 0.04 + 1e-9
    # a decode covered the whole utterance, up to the end of speech
    assert max(c.end for c in asr.calls) >= 3.75
    # and silence was never decoded
    assert all(c.start >= 0.5 - 0.1 - 1e-6 and c.end <= 4.3 + 1e-6 for c in asr.calls)


def test_b_each_utterance_keeps_the_stream_clock():
    # The second utterance starts (with padding) before the point up to which the
    # first utterance's buffer was filled: its words must still get their own times.
    first = words("good morning everyone", start=0.5, dur=0.3, gap=0.1)  # ends 1.6
    second = words("let us begin", start=2.3, dur=0.3, gap=0.1)
    asr = TimelineASR(first + second)
    # the end of the first utterance is detected at 2.2 s, when its buffer holds
    # audio up to 2.2 s; the second one is found to have started at 2.0 s
    seg = ScriptedSegmenter([(0.45, 1.65), (2.0, 3.6)], end_delay=0.5)
    vac = VACOnlineASRProcessor(1.0, asr, segmenter=seg)
    out = run_vac(vac, 5.0, chunk=0.1)
    got = [w for _, c in out for w in c.words]
    assert [w[2] for w in got] == "good morning everyone let us begin".split()
    assert [t for w in got for t in w[:2]] == pytest.approx([t for w in first + second for t in w[:2]])


def test_b_vac_keeps_the_stream_clock_when_a_chunk_overlaps_the_previous_one():
    # a source that re-sends the last 0.1 s (timestamps say so): the overlap is dropped
    timeline = words("keep the time", start=0.5, dur=0.3, gap=0.1)
    asr = TimelineASR(timeline)
    vac = VACOnlineASRProcessor(1.0, asr, segmenter=ScriptedSegmenter([(0.4, 1.8)], end_delay=0.5))
    out, t = [], 0.0
    while t < 3.0 - 1e-9:
        beg = max(0.0, t - 0.1)
        vac.insert_audio_chunk(ramp(beg, t + 0.5), t=beg)
        t += 0.5
        out.append(vac.process_iter())
    out.append(vac.finish())
    got = [w for c in out for w in c.words]
    assert [w[2] for w in got] == ["keep", "the", "time"]
    assert [x for w in got for x in w[:2]] == pytest.approx([x for w in timeline for x in w[:2]])
    assert vac.t == pytest.approx(3.0)


def test_b_an_utterance_shorter_than_a_chunk_is_transcribed():
    timeline = words("yes", start=1.0, dur=0.3)
    asr = TimelineASR(timeline)
    vac = VACOnlineASRProcessor(1.0, asr, segmenter=ScriptedSegmenter([(1.0, 1.35)], end_delay=0.5))
    out = run_vac(vac, 3.0)
    assert [(t, c.text) for t, c in out] == [(pytest.approx(1.88), "yes")]
    assert len(asr.calls) == 1


def test_b_vac_finish_flushes_an_utterance_still_open_at_the_end_of_the_stream():
    timeline = words("and that is all", start=0.5, dur=0.3, gap=0.1)  # ends 2.0
    asr = TimelineASR(timeline)
    vac = VACOnlineASRProcessor(1.0, asr, segmenter=ScriptedSegmenter([(0.5, 10.0)]))
    out = run_vac(vac, 2.1)
    assert committed_words(c for _, c in out) == "and that is all".split()
    assert max(c.end for c in asr.calls) == pytest.approx(2.1)


# -- (c) the buffer stays bounded when nothing agrees ------------------------------


def never_agreeing(i: int, seconds: float):
    """A different word every 0.5 s of the buffer, on every call: nothing ever agrees."""
    return [(k * 0.5, k * 0.5 + 0.4, f" c{i}w{k}") for k in range(int(seconds / 0.5))]


@pytest.mark.parametrize("trimming", ["segment", "sentence"])
def test_c_buffer_is_bounded_when_hypotheses_never_agree(trimming):
    # LocalAgreement alone (no settling of old words): only the hard bound can help
    opts = StreamingOptions(buffer_trimming=trimming, buffer_trimming_sec=15.0, max_buffer_sec=25.0, settle_sec=0.0)
    asr = ScriptedASR([never_agreeing])
    proc = OnlineASRProcessor(asr, options=opts)
    emitted = []
    for second in range(120):
        proc.insert_audio_chunk(zeros(1.0))
        c = proc.process_iter()
        assert proc.buffer_duration <= opts.max_buffer_sec + 1e-9, f"buffer {proc.buffer_duration:.1f}s at {second}s"
        if c:
            emitted.append((second + 1, c))
    assert max(c.seconds for c in asr.calls) <= opts.max_buffer_sec + 1.0 + 1e-9
    # the words are not held back for ever either: forced commits come out
    assert emitted and emitted[0][0] <= opts.max_buffer_sec + 1
    assert proc.stats.forced_cuts >= 120 // 25 - 1
    # latency of what is emitted is bounded by the buffer bound
    for t, c in emitted:
        assert t - c.end <= opts.max_buffer_sec + 1.0


def test_c_with_settling_words_that_never_agree_come_out_after_settle_sec():
    opts = StreamingOptions(settle_sec=2.0)
    asr = ScriptedASR([never_agreeing])
    proc = OnlineASRProcessor(asr, options=opts)
    emitted = []
    for second in range(120):
        proc.insert_audio_chunk(zeros(1.0))
        c = proc.process_iter()
        assert proc.buffer_duration <= opts.buffer_trimming_sec + 1.0 + 1e-9
        if c:
            emitted.append((second + 1, c))
    assert len(emitted) >= 100  # about every second
    for t, c in emitted:
        assert t - c.words[0][1] <= opts.settle_sec + 1.0 + 1e-9  # each word waited settle_sec + a chunk at most
    assert proc.stats.forced_cuts == 0


def test_c_a_buffer_without_any_word_is_cut_to_a_little_audio():
    opts = StreamingOptions()
    asr = ScriptedASR([[]])  # the model hears nothing (silence, music, noise)
    proc = OnlineASRProcessor(asr, options=opts)
    for _ in range(60):
        proc.insert_audio_chunk(zeros(1.0))
        proc.process_iter()
        assert proc.buffer_duration <= opts.silence_trim_sec + 1e-9
    assert max(c.seconds for c in asr.calls) <= opts.silence_trim_sec + 1.0 + 1e-9


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_buffer_sec=10.0, keep_after_cut_sec=10.0),
        dict(max_buffer_sec=10.0, keep_after_cut_sec=12.0),
        dict(silence_trim_sec=1.0, silence_keep_sec=1.5),
    ],
)
def test_c_options_that_would_defeat_the_bound_are_rejected(bad):
    with pytest.raises(ValueError, match="less than"):
        StreamingOptions(**bad)


def test_c_silence_after_committed_speech_is_not_decoded_again_and_again():
    # one sentence (one segment, so segment trimming never cuts), then a minute of silence
    timeline = words("one two three four five six", start=0.2, dur=0.3, gap=0.1)
    opts = StreamingOptions(sentence_case=False)
    asr = TimelineASR(timeline, segment_marks="")
    proc = OnlineASRProcessor(asr, options=opts)
    for second in range(60):
        proc.insert_audio_chunk(ramp(second, second + 1.0))
        proc.process_iter()
        if second > 10:
            assert proc.buffer_duration <= opts.silence_trim_sec + 1.0 + 1e-9
    assert " ".join(w[2].strip() for w in proc.history) == "one two three four five six"
    assert proc.stats.forced_cuts == 0  # silence is not a failure to agree
    assert sum(c.seconds for c in asr.calls[-30:]) <= 30 * (opts.silence_trim_sec + 1.0)


def test_c_forced_commits_keep_the_stream_order_and_clock():
    # hypotheses agree on nothing, but the words are right: forced commits must
    # emit each word once, in order, with its stream time
    timeline = words(" ".join(f"w{k}" for k in range(200)), start=0.0, dur=0.3, gap=0.2)  # 100 s

    def mishear(i, ws):  # a different spelling on every call: never two agreeing hypotheses
        return [(b, e, f"{w}~{i}") for b, e, w in ws]

    asr = TimelineASR(timeline, mishear=mishear)
    proc = OnlineASRProcessor(asr, options=StreamingOptions(max_buffer_sec=20.0, keep_after_cut_sec=5.0))
    commits = []
    t = 0.0
    while t < 100.0:
        proc.insert_audio_chunk(ramp(t, t + 1.0))
        t += 1.0
        c = proc.process_iter()
        if c:
            commits.append(c)
        assert proc.buffer_duration <= 20.0 + 1e-9
    commits.append(proc.finish())
    got = [w for c in commits for w in c.words]
    idx = [int(w[2].split("~")[0][1:]) for w in got]
    assert idx == sorted(set(idx)), "forced commits repeated or reordered words"
    assert len(idx) >= 150, f"only {len(idx)} of 200 words came out"
    for w in got:
        k = int(w[2].split("~")[0][1:])
        assert w[0] == pytest.approx(timeline[k][0])


# -- (d) a looping hypothesis is not committed as stable -------------------------------

LOOP = "so we went to the and the and the and the and the and the"


def test_d_a_phrase_repeated_in_a_loop_is_not_committed():
    asr = ScriptedASR([LOOP])  # the same looping hypothesis on every call
    proc = OnlineASRProcessor(asr)
    commits = []
    for _ in range(3):
        proc.insert_audio_chunk(zeros(1.0))
        commits.append(proc.process_iter())
    commits.append(proc.finish())
    text = " ".join(c.text for c in commits if c)
    assert text.startswith("so we went to the")
    assert "and the and the" not in text
    assert text.count("and the") <= 1
    assert proc.stats.loops_cut >= 1


def test_d_a_long_phrase_replayed_in_one_window_is_not_committed_twice():
    replay = "leave it in a covered bowl for an hour leave it in a covered bowl for an hour"
    asr = ScriptedASR([replay])
    proc = OnlineASRProcessor(asr)
    for _ in range(3):
        proc.insert_audio_chunk(zeros(1.0))
        proc.process_iter()
    proc.finish()
    text = " ".join(w[2].strip() for w in proc.history)
    assert text == "leave it in a covered bowl for an hour"


def test_d_a_short_phrase_replayed_at_the_end_of_the_window_is_not_committed():
    # Whisper on a window that ends mid-speech often starts reading it again
    asr = ScriptedASR(["thank you all for today thank you all"] * 2 + ["thank you all for today"])
    proc = OnlineASRProcessor(asr)
    for _ in range(2):
        proc.insert_audio_chunk(zeros(1.0))
        proc.process_iter()
    proc.insert_audio_chunk(zeros(0.5))
    proc.finish()
    assert " ".join(w[2].strip() for w in proc.history) == "thank you all for today"


def test_d_a_phrase_really_said_twice_is_not_taken_for_a_loop():
    # a repeated phrase followed by new words is speech: all of it must come out
    text = "we shall fight on the beaches we shall fight on the landing grounds and in the fields"
    timeline = words(text, start=0.2, dur=0.3, gap=0.1)
    asr = TimelineASR(timeline)
    proc = OnlineASRProcessor(asr)
    out = []
    for second in range(8):
        proc.insert_audio_chunk(ramp(second, second + 1.0))
        out.append(proc.process_iter())
    out.append(proc.finish())
    assert " ".join(c.text for c in out if c) == text
    # and it came out while streaming, not only at the end
    assert "landing" in " ".join(c.text for c in out[:-1] if c)


def test_d_a_word_said_a_few_times_is_not_a_loop():
    # "no no no" and "very very" are speech, not a decoding loop
    asr = ScriptedASR(["no no no I said very very good"])
    proc = OnlineASRProcessor(asr)
    for _ in range(2):
        proc.insert_audio_chunk(zeros(1.0))
        proc.process_iter()
    proc.finish()
    assert " ".join(w[2].strip() for w in proc.history) == "no no no I said very very good"
    assert proc.stats.loops_cut == 0


# -- (e) a word that only changes its punctuation still commits --------------------------


def test_e_a_word_that_only_changes_its_punctuation_commits():
    # the model keeps changing its mind about the comma: "word" / "word," / "word"
    asr = ScriptedASR(["I said hello", "I said hello,", "I said hello", "I said hello,"])
    proc = OnlineASRProcessor(asr)
    out = []
    for _ in range(2):
        proc.insert_audio_chunk(zeros(1.0))
        out.append(proc.process_iter())
    assert not out[0]
    assert [w[2] for w in out[1].words] == ["I", "said", "hello,"]  # the newer spelling


def test_e_case_and_trailing_marks_do_not_block_agreement():
    asr = ScriptedASR(["Well the report", "well, the report. Then"])
    proc = OnlineASRProcessor(asr)
    proc.insert_audio_chunk(zeros(1.0))
    proc.process_iter()
    proc.insert_audio_chunk(zeros(1.0))
    assert proc.process_iter().text == "well, the report."


def test_e_a_recommitted_word_with_new_punctuation_is_not_duplicated():
    # committed "hello"; the next hypothesis re-hears it as "hello," at the same time
    asr = ScriptedASR(["I said hello", "I said hello", "I said hello, Tom", "I said hello, Tom and"])
    proc = OnlineASRProcessor(asr)
    for _ in range(4):
        proc.insert_audio_chunk(zeros(1.0))
        proc.process_iter()
    assert " ".join(w[2].strip() for w in proc.history) == "I said hello Tom"


# -- (g) case and punctuation are as a reader expects --------------------------------------


def test_g_a_mark_that_only_ends_the_audio_waits_for_the_next_hypothesis():
    # at the end of the audio Whisper writes "changed." although "because" follows; the word
    # waits for the hypothesis that hears what follows, and commits as that one spells it
    asr = ScriptedASR(["time itself was changed.", "time itself was changed.", "time itself was changed, because the"])
    proc = OnlineASRProcessor(asr, options=StreamingOptions(settle_sec=0.0, early_commit_sec=0.0,
                                                            sentence_case=False))
    out = []
    for _ in range(3):
        proc.insert_audio_chunk(zeros(1.0))
        out += committed_words([proc.process_iter()])
    assert out == ["time", "itself", "was", "changed,"]


def test_g_at_a_pause_the_last_word_commits_with_its_mark():
    asr = ScriptedASR(["the trains needed a clock.", "the trains needed a clock."])
    proc = OnlineASRProcessor(asr, options=StreamingOptions(sentence_case=False))
    proc.insert_audio_chunk(zeros(1.0))
    first = proc.process_iter()
    proc.insert_audio_chunk(zeros(1.0))
    assert committed_words([first, proc.flush()])[-1] == "clock."


def test_g_whisper_streaming_rule_commits_a_marked_last_word_on_agreement():
    asr = ScriptedASR(["it was changed.", "it was changed."])
    proc = OnlineASRProcessor(asr)  # as whisper_online builds it: its rule exactly
    proc.insert_audio_chunk(zeros(1.0))
    proc.process_iter()
    proc.insert_audio_chunk(zeros(1.0))
    assert proc.process_iter().text == "it was changed."


def test_g_a_sentence_begins_with_a_capital_whatever_the_window_wrote():
    # the first window ends a sentence; the window after the pause starts inside the old one
    # and writes "day, towns grew": the committed text reads "day. Towns grew"
    before = words("in a single day.", start=0.0)  # ends at 1.9 s
    asr = ScriptedASR([before, before, words("day, towns grew around", start=1.5),
                       words("day, towns grew around it", start=1.5)])
    proc = OnlineASRProcessor(asr, options=StreamingOptions(settle_sec=0.0, early_commit_sec=0.0))
    text = []
    for i in range(4):
        proc.insert_audio_chunk(zeros(1.0))
        commit = proc.flush() if i == 1 else proc.process_iter()
        text.append(commit.text)
    assert " ".join(t for t in text if t) == "In a single day. Towns grew around"


def test_g_a_word_inside_a_sentence_keeps_its_case():
    asr = ScriptedASR(["Mr. Smith said the iPhone", "Mr. Smith said the iPhone was"])
    proc = OnlineASRProcessor(asr, options=StreamingOptions(settle_sec=0.0, early_commit_sec=0.0))
    proc.insert_audio_chunk(zeros(1.0))
    proc.process_iter()
    proc.insert_audio_chunk(zeros(1.0))
    # "Mr." counts as a sentence end (no abbreviation list): "Smith" was a capital anyway
    assert proc.process_iter().text == "Mr. Smith said the iPhone"


# -- (f) nothing grows without bound over hours ---------------------------------------------

WORD_EVERY = 0.5  # a word every 0.5 s, a sentence every 10 words


def endless_speech(t0: float, t1: float) -> list[tuple]:
    k0 = max(0, int(np.ceil((t0 - 1e-6) / WORD_EVERY)))
    out = []
    k = k0
    while k * WORD_EVERY + 0.4 <= t1 + 1e-6:
        text = f" w{k}." if k % 10 == 9 else f" w{k}"
        out.append((round(k * WORD_EVERY, 3), round(k * WORD_EVERY + 0.4, 3), text))
        k += 1
    return out


@pytest.mark.parametrize("trimming,hours", [("segment", 3), ("sentence", 1)])
def test_f_committed_history_and_buffers_stay_bounded_over_hours(trimming, hours):
    opts = StreamingOptions(buffer_trimming=trimming, buffer_trimming_sec=15.0)
    proc = None
    asr = TimelineASR(words_at=endless_speech, start_of=lambda audio: proc.buffer_time_offset)
    proc = OnlineASRProcessor(asr, options=opts)
    chunk = zeros(4.0)  # the audio content does not matter to this backend
    peak = dict(history=0, committed_in_buffer=0, previous=0, buffer=0.0, prompt=0)
    n_words = 0
    last_k = -1
    for _ in range(int(hours * 3600 / 4.0)):
        proc.insert_audio_chunk(chunk)
        c = proc.process_iter()
        for w in c.words:
            k = int(w[2].strip(".")[1:])
            assert k == last_k + 1, f"word w{k} after w{last_k}"
            last_k = k
        n_words += len(c.words)
        peak["history"] = max(peak["history"], len(proc.history))
        peak["committed_in_buffer"] = max(peak["committed_in_buffer"], len(proc.hyp.committed_in_buffer))
        peak["previous"] = max(peak["previous"], len(proc.hyp.previous))
        peak["buffer"] = max(peak["buffer"], proc.buffer_duration)
        peak["prompt"] = max(peak["prompt"], len(proc.prompt()[0]))
    # it kept transcribing all along ...
    assert n_words >= hours * 3600 / WORD_EVERY - 10
    # ... while every internal list stayed small
    assert peak["history"] <= opts.history_words
    assert peak["buffer"] <= opts.max_buffer_sec
    words_per_buffer = opts.max_buffer_sec / WORD_EVERY + 1
    assert peak["committed_in_buffer"] <= words_per_buffer
    assert peak["previous"] <= words_per_buffer
    assert peak["prompt"] <= opts.prompt_chars
    assert len(proc.last_segment_ends) <= words_per_buffer


def test_f_vac_state_stays_bounded_over_an_hour_of_utterances():
    # 5 s utterances separated by 1 s pauses, for an hour, fed in 0.5 s chunks
    speech = [(6.0 * i, 6.0 * i + 5.0) for i in range(600)]
    vac = None

    def heard(t0, t1):  # the words of endless_speech that fall inside an utterance
        return [w for w in endless_speech(t0, t1) if w[1] <= speech[int(w[0] // 6.0)][1]]

    asr = TimelineASR(words_at=heard, start_of=lambda audio: vac.online.buffer_time_offset)
    vac = VACOnlineASRProcessor(1.0, asr, segmenter=ScriptedSegmenter(speech, end_delay=0.5))
    chunk = zeros(0.5)
    n_words = 0
    peak_recent = peak_history = 0
    for _ in range(3600 * 2):
        vac.insert_audio_chunk(chunk)
        c = vac.process_iter()
        n_words += len(c.words)
        assert not vac.session.inbox  # everything handed to the processor
        peak_recent = max(peak_recent, len(vac.gate.buf))
        peak_history = max(peak_history, len(vac.online.history))
    assert n_words >= 600 * 10 - 20  # 10 words per utterance
    assert peak_recent <= 0.1 * SR + len(chunk)  # the speech gate keeps its 100 ms pre-roll and one chunk
    assert peak_history <= vac.online.options.history_words
    assert vac.online.buffer_duration <= 5.0 + 0.5 + 1e-9
