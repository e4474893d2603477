"""The streaming session: the one rule of when a stream decodes, flushes, starts afresh and finishes.

Specified here, with a perfect scripted recogniser (``TimelineASR`` on ramp audio, so the
processor's clock is checked against the truth):

* a decode is due once ``min_chunk_size`` seconds of audio are new, never before; when the
  driver says the stream has only a share of its decode threads and decodes are slow, the
  chunk grows (the stream's decode time over ``max_load`` x share, up to ``max_chunk_size``);
  until the stream has committed its first word, ``first_chunk_size`` is the chunk (when shorter;
  a translated stream's is ``utterance_chunk_size``),
  and until a later fresh buffer has, ``utterance_chunk_size``;
* audio that arrives while a step runs waits in the inbox and goes in afterwards;
* a pause (``at_pause="flush"``) commits every word before it at once and keeps the audio
  as context; ``at_pause="finish"`` starts a fresh buffer; ``ignore`` does nothing;
* speech that resumes more than ``utterance_gap`` after the buffer starts a fresh buffer,
  finishing the old one first when a word is still unconfirmed;
* the end of the stream finishes it: the tail is decoded, everything committed, and the
  session takes no more input;
* audio that goes back in time is refused; a failed step loses that buffer only;
* flushes and finishes come before decodes among streams (``priority``).
"""

from __future__ import annotations

import pytest

from asr_core.online import OnlineASRProcessor, StreamingOptions
from asr_core.streaming import Mark, Pause, Schedule, Step, StepResult, StreamingSession
from tests.fakes import ScriptedASR, TimelineASR, ramp, words

TIMELINE = words("one two three four five six seven eight", start=0.1, dur=0.3, gap=0.2)  # 0.1 .. 3.9


def session(asr=None, schedule=None, options=None):
    asr = asr or TimelineASR(TIMELINE)
    return StreamingSession(OnlineASRProcessor(asr, options=options or StreamingOptions.la2()),
                            schedule or Schedule(1.0))


def feed(s, beg, end, step=0.1):
    t = beg
    while t < end - 1e-9:
        s.push_audio(round(t, 3), ramp(t, min(end, t + step)))
        t = round(t + step, 3)


def committed(commits):
    return [w[2].strip() for c in commits for w in c.words]


def test_a_decode_is_due_only_once_min_chunk_size_of_audio_is_new():
    s = session()
    feed(s, 0.0, 0.9)
    assert s.due() is None
    feed(s, 0.9, 1.0)
    assert s.due() is Step.DECODE
    s.run_due()
    assert s.due() is None and s.processor.undecoded_seconds == 0


def decoded_once(s, decode_seconds):
    """Run one decode step that (the session is told) took ``decode_seconds``."""
    s.start(Step.DECODE)
    result = s.run(Step.DECODE)
    s.complete(StepResult(Step.DECODE, result.commit, None, decode_seconds, result.decoded_audio_seconds, 1))


def test_with_spare_capacity_a_decode_is_due_every_min_chunk_size():
    s = session(schedule=Schedule(0.3))
    feed(s, 0.0, 0.3)
    decoded_once(s, 0.1)  # decodes are cheap: 0.1 s
    feed(s, 0.3, 0.6)
    assert s.chunk(share=1.0) == pytest.approx(0.3)
    assert s.due(share=1.0) is Step.DECODE


def test_a_busy_worker_decodes_a_stream_less_often():
    s = session(schedule=Schedule(0.3, max_load=0.8, max_chunk_size=2.0))
    feed(s, 0.0, 0.3)
    decoded_once(s, 0.4)  # a decode takes 0.4 s
    # a thread to itself: at most 80% busy, so a chunk of 0.4 / 0.8 = 0.5 s
    assert s.chunk(share=1.0) == pytest.approx(0.5)
    feed(s, 0.3, 0.6)
    assert s.due(share=1.0) is None
    feed(s, 0.6, 0.8)
    assert s.due(share=1.0) is Step.DECODE
    # five streams on two threads: each may keep 0.4 of a thread busy: 0.4 / (0.8 * 0.4) = 1.25 s
    assert s.chunk(share=0.4) == pytest.approx(1.25)
    assert s.chunk(share=0.1) == pytest.approx(2.0)  # at most max_chunk_size
    # without a share (the deterministic replay), decode cost does not matter
    assert s.chunk() == pytest.approx(0.3) and s.due() is Step.DECODE


def test_until_the_stream_commits_its_first_word_it_decodes_every_first_chunk_size():
    s = session(schedule=Schedule(1.0, first_chunk_size=0.5, utterance_gap=1.0))
    feed(s, 0.0, 0.5)
    assert s.chunk() == pytest.approx(0.5) and s.due() is Step.DECODE
    s.run_due()  # "one" (0.1-0.4) heard once: nothing agreed yet
    feed(s, 0.5, 1.0)
    assert committed(s.run_due()) == ["one"]  # the second hypothesis agrees: the first word at 1.0 s
    assert s.processor.buffer_words == 1 and s.chunk() == pytest.approx(1.0)  # then min_chunk_size
    feed(s, 1.0, 1.5)
    assert s.due() is None
    # a busy worker still decodes less often (the load rule wins over the first chunk)
    fresh = session(schedule=Schedule(1.0, first_chunk_size=0.5, max_chunk_size=2.0))
    feed(fresh, 0.0, 0.5)
    decoded_once(fresh, 0.8)
    assert fresh.chunk(share=1.0) == pytest.approx(1.0)
    # speech after a long pause is a fresh buffer, but not the stream's start: min_chunk_size
    s.push_pause()
    s.run_due()
    feed(s, 3.0, 3.5)
    assert s.processor.buffer_words == 0 and s.chunk() == pytest.approx(1.0) and s.due() is None


def test_a_translated_stream_starts_with_the_utterance_chunk_not_the_first_chunk():
    """A fraction of a second is too little to translate (the German clip's translation began "The his is about")."""
    from pipeline.config import BusConfig, WorkerConfig
    from workers.asr_worker import ASRWorker

    s = session(schedule=Schedule(1.0, first_chunk_size=0.2, utterance_chunk_size=0.5))
    assert s.chunk() == pytest.approx(0.2)
    s.processor.task = "translate"  # the stream asked for it (its hints)
    assert s.chunk() == pytest.approx(0.5)
    # or the worker translates every stream: its streams' processors say so
    for task, first in (("translate", 0.5), ("transcribe", 0.2)):
        worker = ASRWorker("asr", BusConfig(), WorkerConfig(name="asr", model="base", task=task))
        worker.asr = TimelineASR(TIMELINE)
        fresh = StreamingSession(worker._new_processor(), worker._schedule)
        assert fresh.chunk() == pytest.approx(first), task


def test_until_a_fresh_buffer_commits_its_first_word_it_decodes_every_utterance_chunk_size():
    s = session(schedule=Schedule(1.0, first_chunk_size=0.25, utterance_chunk_size=0.5, utterance_gap=1.0))
    assert s.chunk() == pytest.approx(0.25)  # the stream's start: the shorter of the two
    feed(s, 0.0, 1.0)
    s.run_due()
    feed(s, 1.0, 2.0)
    assert committed(s.run_due())
    assert s.chunk() == pytest.approx(1.0)
    s.push_pause()
    s.run_due()
    feed(s, 3.2, 3.7)  # speech after a long pause: a fresh buffer, its first word sooner again
    assert s.processor.buffer_words == 0 and s.chunk() == pytest.approx(0.5) and s.due() is Step.DECODE
    with pytest.raises(ValueError, match="utterance_chunk_size"):
        Schedule(utterance_chunk_size=-1)


def test_audio_that_arrives_during_a_step_waits_in_the_inbox():
    s = session()
    feed(s, 0.0, 1.0)
    s.start(s.due())
    feed(s, 1.0, 1.5)  # arrives while the decode runs (on another thread, in the worker)
    assert len(s.inbox) == 5 and s.processor.buffer_end == pytest.approx(1.0)
    s.complete(s.run(Step.DECODE))
    assert not s.inbox and s.processor.buffer_end == pytest.approx(1.5)


def test_a_pause_flushes_every_word_before_it_and_keeps_the_audio():
    s = session()
    feed(s, 0.0, 2.0)  # one two three four (1.6-1.9)
    s.run_due()
    s.push_pause()
    assert s.due() is Step.FLUSH
    commits = s.run_due()
    assert committed(commits) == ["one", "two", "three", "four"]
    assert s.processor.buffer_duration > 0  # kept as context for what comes next


def test_at_pause_finish_starts_a_fresh_buffer_and_ignore_does_nothing():
    s = session(schedule=Schedule(1.0, at_pause="finish"))
    feed(s, 0.0, 2.0)
    s.push_pause()
    assert committed(s.run_due()) == ["one", "two", "three", "four"]
    assert s.processor.buffer_duration == 0 and s.processor.buffer_time_offset == pytest.approx(2.0)
    quiet = session(schedule=Schedule(5.0, at_pause="ignore"))
    feed(quiet, 0.0, 2.0)
    quiet.push_pause()
    assert quiet.due() is None and quiet.run_due() == []


def test_speech_after_a_long_pause_starts_a_fresh_buffer():
    s = session(schedule=Schedule(1.0, utterance_gap=1.0))
    feed(s, 0.0, 1.0)
    s.run_due()
    s.push_pause()
    s.run_due()  # everything before the pause is committed
    feed(s, 2.5, 3.5)  # 1.5 s later: no need to finish, nothing is unconfirmed
    assert s.processor.buffer_time_offset == pytest.approx(2.5)
    assert s.processor.buffer_duration == pytest.approx(1.0)


def test_a_long_pause_with_unconfirmed_words_finishes_the_old_buffer_first():
    s = session(schedule=Schedule(1.0, utterance_gap=1.0, at_pause="ignore"))
    feed(s, 0.0, 1.0)
    s.run_due()  # "one" heard once: unconfirmed
    assert s.processor.hyp.pending()
    feed(s, 2.5, 3.0)
    assert s.due() is Step.FINISH and isinstance(s.inbox[0], tuple)
    commits = s.run_due()
    assert committed(commits)[:1] == ["one"]
    assert s.processor.buffer_time_offset == pytest.approx(2.5)


def test_the_end_of_the_stream_decodes_the_tail_and_commits_everything():
    s = session()
    feed(s, 0.0, 4.0)
    s.run_due()
    s.push_end()
    assert s.end_requested and s.due() is Step.FINISH
    commits = s.run_due()
    assert s.ended
    everything = committed([c for c in commits])
    assert everything[-1] == "eight"
    assert not s.push_audio(4.0, ramp(4.0, 4.1)) and s.due() is None


def test_every_word_is_committed_once_whatever_the_steps():
    s = session(schedule=Schedule(1.0, at_pause="flush"))
    out = []
    for beg in (0.0, 1.0, 2.0, 3.0):
        feed(s, beg, beg + 1.0)
        out += s.run_due()
        if beg == 1.0:
            s.push_pause()
    s.push_end()
    out += s.run_due()
    assert committed(out) == [w[2].strip() for w in TIMELINE]


def test_audio_that_goes_back_in_time_is_refused():
    s = session()
    feed(s, 0.0, 1.0)
    assert not s.accepts(0.5)
    assert not s.push_audio(0.5, ramp(0.5, 0.6))
    assert s.received_until == pytest.approx(1.0)
    assert s.push_audio(1.0005, ramp(1.0, 1.1))  # within a millisecond: contiguous


def test_a_failed_step_loses_that_buffer_only():
    class Breaks(ScriptedASR):
        def transcribe(self, audio, init_prompt=""):
            if len(self.calls) == 0:
                self._record(audio, init_prompt)
                raise RuntimeError("engine fell over")
            return super().transcribe(audio, init_prompt)

    asr = Breaks(["two words"])
    s = session(asr)
    feed(s, 0.0, 1.0)
    step = s.due()
    s.start(step)
    result = s.run(step)
    assert isinstance(result.error, RuntimeError)
    s.complete(result)
    s.restart(OnlineASRProcessor(asr, options=StreamingOptions.la2()))
    feed(s, 1.0, 2.0)
    assert s.processor.buffer_time_offset == pytest.approx(1.0) and s.due() is Step.DECODE


def test_flushes_and_finishes_come_before_decodes():
    a, b = session(), session()
    feed(a, 0.0, 3.0)  # three seconds undecoded
    feed(b, 0.0, 1.0)
    b.push_pause()
    assert b.priority() < a.priority()
    assert sorted([a, b], key=StreamingSession.priority)[0] is b


def test_marks_are_typed():
    s = session()
    feed(s, 0.0, 0.5)
    s.start(Step.DECODE)  # hold the inbox
    s.push_pause()
    s.push_end()
    pause, end = list(s.inbox)[-2:]
    assert isinstance(pause, Pause) and pause.at == pytest.approx(0.5) and end is Mark.END


def test_a_schedule_rejects_values_that_make_no_sense():
    with pytest.raises(ValueError):
        Schedule(0.0)
    with pytest.raises(ValueError):
        Schedule(1.0, at_pause="sometimes")
    with pytest.raises(ValueError):
        Schedule(1.0, utterance_gap=0)
    with pytest.raises(ValueError):
        Schedule(1.0, max_load=0)
    with pytest.raises(ValueError):
        Schedule(1.0, max_chunk_size=0)

