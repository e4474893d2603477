"""The ASR worker actor, in-process (no sockets, no threads): messages in, commits and eos out.

A real :class:`workers.asr_worker.ASRWorker` gets the bus messages of one stream (speech, a
pause, a long gap, more speech, eos) through its own ``receive`` and ``tick``; a scripted
perfect recogniser stands in for the model, and a recording publisher for the bus. The
worker must publish every word once, in order, with the commit fields filled in, then the
stream's eos, and forget the stream.
"""

from __future__ import annotations

import numpy as np

from pipeline import messages as m
from pipeline.config import BusConfig, WorkerConfig
from pipeline.sequence import Sequencer
from tests.fakes import TimelineASR, words
from workers.asr_worker import ASRWorker
from workers.decode_jobs import DecodeRunner

FIRST = words("alpha bravo charlie delta", start=0.1, dur=0.35, gap=0.1)  # 0.1 .. 1.9
SECOND = words("echo foxtrot golf hotel", start=4.1, dur=0.35, gap=0.1)  # after a 2 s pause


class RecordingPublisher:
    def __init__(self):
        self.seq = Sequencer()
        self.sent: list[tuple[str, m.Message]] = []

    def send(self, topic, msg) -> bool:
        m.decode(m.encode(topic, msg))  # what goes out is valid on the wire
        self.sent.append((topic, msg))
        return True


def make_worker():
    # the timeline of these checks: a decode every second of speech
    worker = ASRWorker("asr", BusConfig(), WorkerConfig(name="asr", utterance_gap=1.0, partials=True,
                                                        min_chunk_size=1.0, first_chunk_size=0.0,
                                                        utterance_chunk_size=0.0))
    worker.asr = TimelineASR(FIRST + SECOND, start_of=lambda audio: worker.streams["s"].processor.buffer_time_offset)
    worker.runner = DecodeRunner(1)
    worker.pub = RecordingPublisher()
    return worker


def send(worker, topic, msg, now):
    worker.receive(m.encode(topic, msg))
    worker.tick(now)


def speech(worker, beg, end, seq, now, wall0=1000.0):
    t = beg
    while t < end - 1e-9:
        pcm = (np.full(1600, 100, dtype="<i2")).tobytes()
        send(worker, "speech.s", m.Audio(stream="s", seq=seq, t=round(t, 3), wall0=wall0, pcm=pcm), now)
        seq += 1
        t += 0.1
    return seq


def test_a_worker_commits_each_word_once_through_speech_pause_gap_and_eos():
    worker = make_worker()
    seq = 0
    send(worker, "speech.s", m.SpeechStart(stream="s", seq=seq, t=0.0, wall0=1000.0), 0.0)
    seq = speech(worker, 0.0, 2.0, seq + 1, 1.0)
    send(worker, "speech.s", m.SpeechEnd(stream="s", seq=seq, t=2.0), 2.0)
    send(worker, "speech.s", m.SpeechStart(stream="s", seq=seq + 1, t=4.0), 4.0)
    seq = speech(worker, 4.0, 6.0, seq + 2, 5.0)
    send(worker, "speech.s", m.EndOfStream(stream="s", seq=seq, t=6.0), 6.0)
    for _ in range(5):
        worker.tick(7.0)

    sent = worker.pub.sent
    commits = [msg for topic, msg in sent if isinstance(msg, m.Commit)]
    # (the first word of the stream gets a capital: sentence case)
    assert [w[2].strip().lower() for c in commits for w in c.words] == [w[2].strip() for w in FIRST + SECOND]
    assert all(c.worker == "asr" and c.backend == "scripted" and c.wall0 == 1000.0 for c in commits)
    assert [c.seq for c in commits] == sorted(c.seq for c in commits)
    # the pause committed the first four words before any audio after it arrived
    first_after_pause = next(i for i, (t, msg) in enumerate(sent) if isinstance(msg, m.Commit)
                             and msg.words[-1][2].strip() == "delta")
    assert all(not (isinstance(msg, m.Commit) and msg.beg >= 4.0) for _, msg in sent[:first_after_pause])
    topic, last = sent[-1]
    assert topic == "transcript.asr.s" and isinstance(last, m.EndOfStream) and last.t == 6.0
    assert any(isinstance(msg, m.Partial) for _, msg in sent)
    assert worker.streams == {} and worker.counters["commits"] == len(commits)
    # the buffer started afresh after the gap: no decode covered both sentences
    assert all(not (c.start is not None and c.start < 2.0 and c.end > 4.0) for c in worker.asr.calls)


def vad_heartbeat(worker, seq, streams=(), ended=()):
    hb = m.Heartbeat(stream="", seq=seq, name="vad", role="vad", ready=True, pid=1,
                     info={"streams": list(streams), **({"ended": list(ended)} if ended else {})})
    send(worker, "status.vad", hb, 0.0)


def test_messages_lost_on_the_way_are_said_on_the_stream_and_heartbeats_lost_are_only_counted():
    worker = make_worker()
    vad_heartbeat(worker, 0, streams=["s"])
    vad_heartbeat(worker, 3, streams=["s"])  # two heartbeats lost: counted, nobody to tell
    assert (worker.counters["gaps"], worker.counters["stream_gaps"]) == (2, 0)
    seq = speech(worker, 0.0, 0.5, 0, 0.0)
    speech(worker, 0.5, 1.0, seq + 3, 0.0)  # three frames of the stream lost before these
    assert (worker.counters["gaps"], worker.counters["stream_gaps"]) == (5, 3)
    st = worker.streams["s"]
    assert st.held_report.startswith("3 message(s) of this stream were lost on the way")
    worker._end_stream(st)  # the report goes out at the latest with the stream's end
    said = [msg for t, msg in worker.pub.sent if t == "transcript.asr.s"]
    assert [type(msg).__name__ for msg in said] == ["Error", "EndOfStream"]
    assert said[0].message.startswith("3 message(s) of this stream were lost on the way")


def test_eos_for_a_stream_without_speech_is_answered_with_eos_once_its_vad_confirms_it():
    worker = make_worker()
    vad_heartbeat(worker, 0, streams=["quiet"])
    send(worker, "speech.quiet", m.EndOfStream(stream="quiet", seq=0, t=3.0), 0.0)
    assert worker.pub.sent == []  # held: anyone may publish an eos
    vad_heartbeat(worker, 1, ended=["quiet"])
    assert [(t, type(msg).__name__) for t, msg in worker.pub.sent] == [("transcript.asr.quiet", "EndOfStream")]


def test_an_eos_nobody_vouches_for_changes_nothing():
    worker = make_worker()
    vad_heartbeat(worker, 0, streams=["s"])
    seq = speech(worker, 0.0, 0.5, 0, 0.0)
    send(worker, "speech.s", m.EndOfStream(stream="s", seq=seq, t=0.5), 0.0)  # forged: the VAD still serves s
    send(worker, "speech.ghost", m.EndOfStream(stream="ghost", seq=0, t=0.5), 0.0)  # a stream nobody announced
    vad_heartbeat(worker, 1, streams=["s"])
    worker.believer.hold = 0.0
    worker.tick(1.0)
    assert "s" in worker.streams and not worker.streams["s"].session.end_requested
    assert worker.pub.sent == [] and worker.counters["unconfirmed_eos"] == 1


def test_a_frame_that_goes_back_in_time_is_dropped_and_counted():
    worker = make_worker()
    speech(worker, 0.0, 0.5, 0, 0.0)
    pcm = np.zeros(1600, dtype="<i2").tobytes()
    send(worker, "speech.s", m.Audio(stream="s", seq=5, t=0.2, pcm=pcm), 0.5)
    assert worker.counters["out_of_step"] == 1
    assert worker.streams["s"].session.received_until == 0.5
