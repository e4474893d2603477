"""A pool worker in-process (workers/pool_member.py): assignments, resuming after another worker, handing over.

Two real :class:`workers.asr_worker.ASRWorker` objects of one pool get what the dispatcher
would send them on ``dispatch.<worker>.<stream>``; a scripted perfect recogniser stands in
for the model and a recording publisher for the bus. Between them they must commit every
word of the stream exactly once, on the pool's topic, under the epoch of their assignment.
"""

from __future__ import annotations

import numpy as np

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
