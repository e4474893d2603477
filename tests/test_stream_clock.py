"""A stream cannot be derailed by one message: its time, its wall0 and its pauses are its own.

Specified on the stream's clock (``asr_core.stream_clock``), and on its two owners: the VAD's
speech gate and the worker's streaming session (with a scripted recogniser):

* a frame far ahead of or behind the stream is set aside and changes nothing; the frames after
  it are taken as if it had never come;
* a source that really starts over (t back to 0) is followed once half a second of it has come
  and the old timeline went quiet; nothing of it is lost;
* a wall0 that jumps is not taken; a capture replaying faster moves it, and that is taken;
* a pause mark whose t is not where the audio ends, a flood of them, or one that the audio right
  after it contradicts, flushes nothing; a real pause still flushes.
"""

from __future__ import annotations

import numpy as np
import pytest

from asr_core.online import OnlineASRProcessor, StreamingOptions
from asr_core.speech_gate import SR, SpeechGate
from asr_core.stream_clock import StreamClock, Verdict
from asr_core.streaming import Schedule, Step, StreamingSession
from tests.fakes import TimelineASR, ramp, words


# -- the clock -----------------------------------------------------------------------------------
def test_one_frame_far_ahead_or_behind_moves_nothing():
    c = StreamClock()
    for k in range(10):
        assert c.offer(k * 0.1, 0.1, wall0=1000.0).verdict is Verdict.TAKE
    assert c.offer(1e6, 0.1, wall0=1e15).verdict is Verdict.HOLD  # the lie
    assert c.offer(0.2, 0.1).verdict is Verdict.HOLD  # back in time
    assert c.offer(1.0, 0.1, wall0=1000.0).verdict is Verdict.TAKE  # the stream goes on
    assert c.end == pytest.approx(1.1) and c.wall0 == 1000.0
    assert c.counts.out_of_step == 2 and c.counts.switches == 0


def test_lost_frames_are_a_gap_not_a_lie():
    c = StreamClock()
    c.offer(0.0, 0.1)
    offer = c.offer(3.1, 0.1)  # 3 s lost (a broker restart)
    assert offer.verdict is Verdict.TAKE and offer.gap == pytest.approx(3.0)


def test_a_source_that_starts_over_is_followed_without_losing_it():
    c = StreamClock()
    for k in range(50):
        c.offer(10 + k * 0.1, 0.1, item=("old", k))
    verdicts = [c.offer(k * 0.1, 0.1, item=("new", k)) for k in range(6)]
    assert [v.verdict for v in verdicts[:4]] == [Verdict.HOLD] * 4
    switch = verdicts[4]
    assert switch.verdict is Verdict.SWITCH and switch.items == tuple(("new", k) for k in range(5))
    assert verdicts[5].verdict is Verdict.TAKE and c.end == pytest.approx(0.6)


def test_a_timeline_of_lies_never_takes_over_while_the_stream_goes_on():
    c = StreamClock()
    c.offer(0.0, 0.1)
    for k in range(1, 40):  # a forger sends its own contiguous timeline between the real frames
        assert c.offer(500 + k * 0.1, 0.1).verdict is Verdict.HOLD
        assert c.offer(k * 0.1, 0.1).verdict is Verdict.TAKE
    assert c.counts.switches == 0 and c.end == pytest.approx(4.0)


def test_wall0_moves_only_as_far_as_time_explains():
    c = StreamClock()
    c.offer(0.0, 0.1, wall0=1000.0, now=0.0)
    c.offer(0.1, 0.1, wall0=999.925, now=0.025)  # replayed at 4x: wall0 falls 0.075 s per frame
    assert c.wall0 == pytest.approx(999.925)
    c.offer(0.2, 0.1, wall0=1000.0 + 1e6, now=0.05)  # a lie: the latency would read 1e6 s
    assert c.wall0 == pytest.approx(999.925) and c.counts.wall0_ignored == 1


def test_after_a_pause_the_next_frame_may_jump_any_distance_forward():
    c = StreamClock()
    c.offer(0.0, 0.1)
    assert c.offer(300.0, 0.1).verdict is Verdict.HOLD
    c.allow_jump()
    assert c.offer(300.0, 0.1).verdict is Verdict.TAKE


# -- the VAD's speech gate -----------------------------------------------------------------------------
class Segmenter:
    """Speech wherever the samples are loud (above 1000), as events; stands in for Silero."""

    def __init__(self, t0):
        self.t = t0
        self.speaking = False
        self.pause_started = None

    def process(self, floats):
        from types import SimpleNamespace

        events = []
        for i in range(0, len(floats), 160):
            loud = bool(np.abs(floats[i:i + 160]).max() > 1000 / 32768)
            if loud != self.speaking:
                self.speaking = loud
                events.append(SimpleNamespace(kind="start" if loud else "end", t=self.t))
            self.t += len(floats[i:i + 160]) / SR
        return events

    def flush(self):
        pass


def loud(seconds):
    return np.full(int(seconds * SR), 8000, dtype="<i2")


def test_the_gate_ignores_a_far_frame_and_goes_on():
    gate = SpeechGate(Segmenter, 0)
    events = []
    for k in range(10):
        events += gate.push(k * 1600, loud(0.1), wall0=1000.0)
    assert gate.push(int(1e6 * SR), loud(0.1), wall0=1e15) == []
    for k in range(10, 20):
        events += gate.push(k * 1600, loud(0.1), wall0=1000.0)
    audio = [e for e in events if e[0] == "audio"]
    assert sum(len(e[2]) for e in audio) == 20 * 1600  # every real sample, once
    assert gate.received == 20 * 1600 and gate.wall0 == 1000.0
    assert gate.clock.counts.out_of_step == 1


# -- the worker's streaming session ----------------------------------------------------------------
TIMELINE = words("one two three four five six seven eight", start=0.1, dur=0.3, gap=0.2)  # 0.1 .. 3.9


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def session(now=None, hold=0.2, heard_until=None):
    return StreamingSession(OnlineASRProcessor(TimelineASR(TIMELINE), options=StreamingOptions.la2()),
                            Schedule(1.0, pause_hold=hold), now=now, heard_until=heard_until)


def feed(s, beg, end, step=0.1):
    t = beg
    while t < end - 1e-9:
        s.push_audio(round(t, 3), ramp(t, min(end, t + step)))
        t = round(t + step, 3)


def test_a_pause_mark_not_where_the_audio_ends_is_ignored():
    s = session()
    feed(s, 0.0, 2.0)
    s.run_due()
    assert not s.push_pause(t=1.3)
    assert s.due() is None and s.counts["marks_ignored"] == 1


def test_a_flood_of_pause_marks_flushes_once_at_most():
    clock = Clock()
    s = session(now=clock)
    feed(s, 0.0, 2.0)
    s.run_due()
    taken = [s.push_pause(t=2.0) for _ in range(50)]
    assert taken.count(True) == 1 and s.counts["marks_ignored"] == 49


def test_speech_that_goes_on_where_it_paused_cancels_the_pause():
    clock = Clock()
    s = session(now=clock)
    feed(s, 0.0, 2.0)
    s.run_due()
    assert s.push_pause(t=2.0)
    assert s.due() is None  # held: the speech may go on right there
    feed(s, 2.0, 2.1)
    assert s.counts["pauses_cancelled"] == 1 and s.pending is None


def test_a_real_pause_flushes_after_the_hold_or_when_speech_resumes_later():
    clock = Clock()
    s = session(now=clock)
    feed(s, 0.0, 2.0)
    s.run_due()
    s.push_pause(t=2.0)
    clock.t = 0.25  # nothing came: it was a pause
    assert s.due() is Step.FLUSH
    s.run_due()
    other = session(now=Clock())
    feed(other, 0.0, 2.0)
    other.run_due()
    other.push_pause(t=2.0)
    feed(other, 2.6, 2.7)  # the next segment, after the silence the VAD left out
    assert other.due() is Step.FLUSH


def test_a_pause_held_while_the_driver_stalls_waits_until_it_has_read_its_queue():
    clock, heard = Clock(), Clock()  # the driver stalled: it has read nothing since the pause came
    s = session(now=clock, heard_until=heard)
    feed(s, 0.0, 2.0)
    s.run_due()
    s.push_pause(t=2.0)
    clock.t = 1.0  # a second later, with the frames that continue the speech still queued
    assert s.due() is None
    feed(s, 2.0, 2.1)  # the queue read at last: the speech went on
    heard.t = 1.0
    assert s.due() is not Step.FLUSH and s.counts["pauses_cancelled"] == 1


def test_a_session_ignores_a_far_frame_and_transcribes_the_rest():
    s = session(hold=0.0)
    out = []
    for beg in (0.0, 1.0, 2.0, 3.0):
        feed(s, beg, beg + 0.5)
        s.push_audio(1e6, ramp(0.0, 0.1), wall0=1e15)  # one lie per second
        feed(s, beg + 0.5, beg + 1.0)
        out += s.run_due()
    s.push_end()
    out += s.run_due()
    assert [w[2].strip() for c in out for w in c.words] == [w[2].strip() for w in TIMELINE]
    assert s.clock.counts.out_of_step == 4 and s.received_until == pytest.approx(4.0)


def test_only_the_first_audio_of_an_announced_segment_may_jump_over_the_silence():
    s = session(hold=0.0)
    feed(s, 0.0, 1.0)
    s.push_pause(t=1.0)
    assert not s.push_audio(1e6, ramp(0.0, 0.1))  # a lie right after a pause is still a lie
    assert not s.push_start(0.5)  # a segment cannot start before the end of the audio
    assert s.push_start(40.0)
    assert s.push_audio(40.0, ramp(40.0, 40.1))  # the VAD left 39 s of silence out
    assert s.received_until == pytest.approx(40.1) and s.counts["marks_ignored"] == 1
