"""A pool worker in-process (workers/pool_member.py): assignments, resuming after another worker, handing over.

Two real :class:`workers.asr_worker.ASRWorker` objects of one pool get what the dispatcher
would send them on ``dispatch.<worker>.<stream>``; a scripted perfect recogniser stands in
for the model and a recording publisher for the bus. Between them they must commit every
word of the stream exactly once, on the pool's topic, under the epoch of their assignment.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline import messages as m
from pipeline.config import BusConfig, WorkerConfig
from tests.fakes import TimelineASR, words
from tests.test_asr_worker import RecordingPublisher
from workers.asr_worker import ASRWorker
from workers.decode_jobs import DecodeRunner

TIMELINE = words("one two three four five six seven eight nine ten eleven twelve", start=0.2, dur=0.3, gap=0.2)
PCM = np.full(1600, 100, dtype="<i2").tobytes()


def pool_worker(name):
    worker = ASRWorker(name, BusConfig(), WorkerConfig(name="w", pool="p", partials=False, settle_sec=0.0,
                                                       early_commit_sec=0.0, min_chunk_size=1.0,
                                                       first_chunk_size=0.0,
                                                       utterance_chunk_size=0.0), dispatched=True)
    worker.asr = TimelineASR(TIMELINE, start_of=lambda audio: worker.streams["s"].processor.buffer_time_offset)
    worker.runner = DecodeRunner(1)
    worker.pub = RecordingPublisher()
    return worker


def deliver(worker, msg, now=0.0):
    worker.receive(m.encode(m.dispatch_topic(worker.name, msg.stream), msg))
    for _ in range(3):
        worker.tick(now)


def audio(worker, beg, end, seq):
    t = beg
    while t < end - 1e-9:
        deliver(worker, m.Audio(stream="s", seq=seq, t=round(t, 3), wall0=1000.0, pcm=PCM))
        seq += 1
        t += 0.1
    return seq


def commits(worker):
    return [(topic, msg) for topic, msg in worker.pub.sent if isinstance(msg, m.Commit)]


def test_a_worker_that_takes_over_commits_only_what_comes_after_the_last_commit():
    a, b = pool_worker("w-1"), pool_worker("w-2")
    deliver(a, m.SpeechStart(stream="s", seq=0, t=0.0, wall0=1000.0, epoch=1))
    audio(a, 0.0, 3.2, 1)  # a decodes for a while, then "dies"
    first = commits(a)
    assert first and all(topic == "transcript.p.s" and c.epoch == 1 and c.worker == "w-1" for topic, c in first)
    done = [w for _, c in first for w in c.words]
    until = done[-1][1]
    # b resumes from the dispatcher's view: the last commit, its words, the next seq, and audio from 2 s before
    deliver(b, m.SpeechStart(stream="s", seq=0, t=until - 2.0, epoch=2, committed_until=until,
                             committed=[list(w) for w in done], next_seq=len(first)))
    seq = audio(b, round(until - 2.0, 1), 6.2, 1)
    deliver(b, m.EndOfStream(stream="s", seq=seq, t=6.2))
    later = commits(b)
    assert all(topic == "transcript.p.s" and c.epoch == 2 and c.worker == "w-2" for topic, c in later)
    assert [c.seq for _, c in later] == list(range(len(first), len(first) + len(later)))  # the topic's numbering
    said = [w[2].strip().lower() for _, c in first + later for w in c.words]  # sentence starts get a capital
    assert said == [w[2].strip() for w in TIMELINE]  # every word once, in order
    topic, last = b.pub.sent[-1]
    assert topic == "transcript.p.s" and isinstance(last, m.EndOfStream) and last.epoch == 2


def test_a_moved_stream_is_finished_without_eos_and_its_release_is_acknowledged():
    a = pool_worker("w-1")
    deliver(a, m.SpeechStart(stream="s", seq=0, t=0.0, wall0=1000.0, epoch=1))
    seq = audio(a, 0.0, 2.0, 1)
    assert a.info()["epochs"] == {"s": 1} and a.info()["pool"] == "p"
    deliver(a, m.EndOfStream(stream="s", seq=seq, t=2.0, epoch=1, moved=True))
    assert a.streams == {}
    assert not any(isinstance(msg, m.EndOfStream) for _, msg in a.pub.sent)  # the stream goes on elsewhere
    said = [w[2].strip().lower() for _, c in commits(a) for w in c.words]
    assert said == ["one", "two", "three", "four"]  # the finish committed what it had heard
    info = a.info()
    assert info["released"] == [["s", 1]] and info["epochs"] == {}
    # a handover for a stream it does not hold (any more) is acknowledged at once
    deliver(a, m.EndOfStream(stream="x", seq=0, epoch=3, moved=True))
    assert a.info()["released"][-1] == ["x", 3]


def test_a_pool_worker_hears_only_its_dispatch_topic_and_a_newer_assignment_starts_over():
    a = pool_worker("w-1")
    assert a.subscriptions() == ["dispatch.w-1."]
    deliver(a, m.SpeechStart(stream="s", seq=0, t=0.0, epoch=1))
    audio(a, 0.0, 0.5, 1)
    deliver(a, m.SpeechStart(stream="s", seq=6, t=3.0, epoch=4, committed_until=2.9, next_seq=9))
    st = a.streams["s"]
    assert st.epoch == 4 and st.session.received_until == 0.0  # fresh state, nothing of the old epoch
    assert a.pub.seq("transcript.p.s") == 9


# -- a handover at a pause, with the worker's default schedule -------------------------------------------------
def vad_stream(pause_at: float, pause_len: float, end: float) -> list[m.Message]:
    """What the VAD publishes for speech from 0 to ``end`` with one pause: 100 ms frames, none in the pause."""
    msgs: list[m.Message] = [m.SpeechStart(stream="s", seq=0, t=0.0, wall0=1000.0)]
    t = 0.0
    while t < end - 1e-9:
        if pause_at - 1e-9 <= t < pause_at + pause_len - 1e-9:
            if abs(t - pause_at) < 1e-6:
                msgs.append(m.SpeechEnd(stream="s", seq=len(msgs), t=pause_at))
        else:
            if abs(t - pause_at - pause_len) < 1e-6:
                msgs.append(m.SpeechStart(stream="s", seq=len(msgs), t=round(t, 3)))
            msgs.append(m.Audio(stream="s", seq=len(msgs), t=round(t, 3), wall0=1000.0, pcm=PCM))
        t = round(t + 0.1, 3)
    return msgs


@pytest.mark.parametrize("pause_len", [0.3, 0.6, 1.3, 2.5])  # shorter and longer than utterance_gap (1 s)
def test_a_stream_handed_over_at_a_pause_is_committed_once_with_the_default_schedule(pause_len):
    from workers.pool_table import REPLAY_CONTEXT_S

    speech = words(" ".join(f"w{i}" for i in range(24)), start=0.2, dur=0.3, gap=0.1)
    pause_at = 4.0
    timeline = [w for w in speech if w[1] <= pause_at] + [
        (round(b + pause_len, 3), round(e + pause_len, 3), x) for b, e, x in speech if b >= pause_at]
    msgs = vad_stream(pause_at, pause_len, end=timeline[-1][1] + 0.3)

    def worker(name):  # the default schedule: first chunk, early commit, settle
        w = ASRWorker(name, BusConfig(), WorkerConfig(name="w", pool="p", partials=False), dispatched=True)
        w.asr = TimelineASR(timeline, start_of=lambda audio: w.streams["s"].processor.buffer_time_offset)
        w.runner, w.pub = DecodeRunner(1), RecordingPublisher()
        return w

    a, b = worker("w-1"), worker("w-2")
    deliver(a, m.SpeechStart(stream="s", seq=0, t=0.0, wall0=1000.0, epoch=1))
    at_pause = next(i for i, x in enumerate(msgs) if isinstance(x, m.SpeechEnd))
    for msg in msgs[1:at_pause + 1]:
        deliver(a, msg, now=msg.t)
    deliver(a, m.EndOfStream(stream="s", seq=at_pause + 1, t=pause_at, epoch=1, moved=True))  # moved at the pause
    first = commits(a)
    assert a.info()["released"] == [["s", 1]]
    done = [w for _, c in first for w in c.words]
    until = max(c.end for _, c in first)
    # the dispatcher replays what it kept: every message from REPLAY_CONTEXT_S before the last commit on
    kept = [x for x in msgs[1:] if x.t + (0.1 if isinstance(x, m.Audio) else 0.0) > until - REPLAY_CONTEXT_S]
    deliver(b, m.SpeechStart(stream="s", seq=0, t=kept[0].t, wall0=1000.0, epoch=2, committed_until=until,
                             committed=[list(w) for w in done[-12:]], next_seq=len(first)))
    for i, msg in enumerate(kept, start=1):
        deliver(b, dataclasses.replace(msg, seq=i), now=msg.t)  # the dispatcher numbers its own topic
    deliver(b, m.EndOfStream(stream="s", seq=len(kept) + 1, t=msgs[-1].t + 0.1))
    said = [w[2].strip().lower() for _, c in first + commits(b) for w in c.words]
    assert said == [w[2].strip() for w in timeline], f"committed until {until:.2f} before the handover"
    assert b.counters["stream_gaps"] == 0  # the replay continues the dispatch topic
