"""The dispatcher's rules (workers/pool_table.py), on a scripted clock: assignment, admission, failover, drain.

A :class:`PoolTable` is fed heartbeats, a stream's messages and its pool's commits as the
dispatcher would receive them, and what it queues to publish is read back. Every message
it queues must be valid on the wire.
"""

from __future__ import annotations

import numpy as np

from pipeline import messages as m
from pipeline.config import DispatcherConfig
from pipeline.liveness import Liveness
from workers.pool_table import REPLAY_CONTEXT_S, PoolTable

PCM = np.zeros(1600, dtype="<i2").tobytes()  # 100 ms


def table(now=0.0, **cfg):
    return PoolTable({"p": "speech"}, DispatcherConfig(**cfg), Liveness(1.0, 3), now)


def hb(name, pool="p", slots=2, pid=1, **info):
    return m.Heartbeat(stream="", seq=0, name=name, role="worker", ready=True, pid=pid,
                       info={"pool": pool, "dispatched": True, "slots": slots, **info})


def join(t, *names, now=0.0, **info):
    for n in names:
        t.on_subscription(True, f"dispatch.{n}.")
        t.on_heartbeat(hb(n, **info), now)


def sent(t):
    out, t.out = t.out, []
    for topic, msg in out:
        m.decode(m.encode(topic, msg))  # everything queued is valid on the wire
    return out


class Stream:
    """A stream's messages as the dispatcher gets them: audio.<s> frames, then the VAD's speech.<s>."""

    def __init__(self, t, name="s1"):
        self.t, self.name, self.pos, self.seq = t, name, 0.0, 0

    def start(self, now):
        self.t.on_input("audio", m.Audio(stream=self.name, seq=0, t=0.0, wall0=1000.0, pcm=PCM), now)
        self.speech(m.SpeechStart(stream=self.name, seq=0, t=self.pos, wall0=1000.0), now)

    def speech(self, msg, now):
        self.t.on_input("speech", msg, now)
        self.seq += 1

    def audio(self, seconds, now):
        for _ in range(round(seconds * 10)):
            self.speech(m.Audio(stream=self.name, seq=self.seq, t=round(self.pos, 3), wall0=1000.0, pcm=PCM), now)
            self.pos += 0.1

    def pause(self, now):
        self.speech(m.SpeechEnd(stream=self.name, seq=self.seq, t=round(self.pos, 3)), now)

    def eos(self, now):
        self.speech(m.EndOfStream(stream=self.name, seq=self.seq, t=round(self.pos, 3)), now)


def commit(t, worker, beg, end, seq, epoch, stream="s1", pool="p"):
    msg = m.Commit(stream=stream, seq=seq, beg=beg, end=end, text="w", words=[[beg, end, "w"]], worker=worker,
                   emitted=0.0, wall0=1000.0, epoch=epoch)
    t.on_transcript(m.transcript_topic(pool, stream), msg)


def to(out, worker):
    return [msg for topic, msg in out if topic.startswith(f"dispatch.{worker}.")]


def test_each_new_stream_goes_to_the_worker_with_most_free_slots_and_stays_there():
    t = table()
    join(t, "a", slots=3)
    join(t, "b", slots=1)
    streams = [Stream(t, f"s{i}") for i in range(3)]
    for s in streams:
        s.start(1.0)
    sent(t)
    holders = {s.name: t.entries[("p", s.name)].holder for s in streams}
    # 3 free slots against 1: a; 2 against 1: a; 1 against 1: the one holding fewer, b
    assert holders == {"s0": "a", "s1": "a", "s2": "b"}
    assert t.choose("p", 1.0).name == "a"  # the only free slot left
    streams[2].audio(0.5, 2.0)
    out = sent(t)
    assert [topic for topic, _ in out] == ["dispatch.b.s2"] * 5  # sticky: only its worker hears it
    assert all(isinstance(x, m.Audio) for x in to(out, "b"))


def test_the_first_frames_wait_for_a_worker_and_reach_it_in_order():
    t = table(now=0.0)
    s = Stream(t)
    s.start(0.1)
    s.audio(1.0, 0.2)  # nobody in the pool yet
    assert sent(t) == [] and t.entries[("p", "s1")].state == "waiting"
    join(t, "a", now=0.5)
    t.tick(0.6)
    got = to(sent(t), "a")
    assert isinstance(got[0], m.SpeechStart) and got[0].epoch == 1 and got[0].committed_until is None
    assert isinstance(got[1], m.SpeechStart) and got[1].epoch is None  # the VAD's own, kept
    assert [x.t for x in got[2:]] == [round(0.1 * i, 3) for i in range(10)]
    assert [x.seq for x in got] == list(range(12))


def test_a_full_pool_refuses_a_new_stream_at_once_with_a_reason_code_then_says_it_ended():
    t = table()
    join(t, "a", slots=2)
    for name in ("s1", "s2"):
        Stream(t, name).start(1.0)
    sent(t)
    third = Stream(t, "s3")
    third.start(1.0)
    out = sent(t)
    assert [(topic, type(msg).__name__) for topic, msg in out] == [("transcript.p.s3", "Error")]
    err = out[0][1]
    assert err.code == m.POOL_FULL and "full" in err.message and err.seq == 0
    third.audio(1.0, 1.1)
    assert sent(t) == []  # nothing of it goes anywhere
    third.eos(2.0)
    out = sent(t)
    assert [(topic, type(msg).__name__, msg.seq) for topic, msg in out] == [("transcript.p.s3", "EndOfStream", 1)]
    assert t.counters["streams_refused"] == 1 and ("p", "s3") not in t.entries


def test_a_dead_worker_s_stream_moves_with_its_audio_since_the_last_commit():
    t = table(dead_after=3.0)
    join(t, "a", now=0.0)
    join(t, "b", now=0.0, slots=1)
    s = Stream(t)
    s.start(0.5)
    s.audio(6.0, 1.0)
    holder = t.entries[("p", "s1")].holder
    other = "b" if holder == "a" else "a"
    commit(t, holder, 0.2, 3.0, seq=0, epoch=1)
    sent(t)
    t.on_heartbeat(hb(other, slots=2), 2.5)  # only the other one goes on heartbeating
    t.tick(2.9)
    assert sent(t) == []  # not dead yet
    t.on_heartbeat(hb(other, slots=2), 3.5)
    t.tick(3.0)
    out = sent(t)
    errors = [msg for topic, msg in out if topic == "transcript.p.s1"]
    assert len(errors) == 1 and errors[0].code == m.FAILOVER and errors[0].epoch == 2 and errors[0].seq == 1
    assert holder in errors[0].message
    got = to(out, other)
    start = got[0]
    assert isinstance(start, m.SpeechStart) and start.epoch == 2 and start.committed_until == 3.0
    assert start.committed == [[0.2, 3.0, "w"]] and start.next_seq == 2
    audio = [x for x in got if isinstance(x, m.Audio)]
    assert audio[0].t == round(3.0 - REPLAY_CONTEXT_S, 3) and audio[-1].t == 5.9  # from 2 s before the commit
    assert t.entries[("p", "s1")].holder == other
    # the old holder is told to let go, in case it is alive after all
    assert [(type(x).__name__, x.moved, x.epoch) for x in to(out, holder)] == [("EndOfStream", True, 1)]
    s.audio(0.2, 3.1)
    assert [topic for topic, _ in sent(t)] == [f"dispatch.{other}.s1"] * 2


def test_a_draining_worker_hands_its_stream_over_at_the_next_pause():
    t = table()
    join(t, "a", slots=1)
    s = Stream(t)
    s.start(0.1)
    join(t, "b", slots=1)
    s.audio(2.0, 0.5)
    commit(t, "a", 0.1, 1.5, seq=0, epoch=1)
    t.on_heartbeat(hb("a", slots=1, draining=True, epochs={"s1": 1}), 1.0)
    s.audio(0.5, 1.1)
    assert all(topic == "dispatch.a.s1" for topic, _ in sent(t))  # still a's until the pause
    s.pause(1.2)
    out = sent(t)
    assert [type(x).__name__ for x in to(out, "a")] == ["SpeechEnd", "EndOfStream"]
    assert to(out, "a")[-1].moved and to(out, "a")[-1].epoch == 1
    s.audio(0.3, 1.3)  # speech after the pause waits for the handover
    assert sent(t) == []
    t.on_heartbeat(hb("a", slots=1, draining=True, released=[["s1", 1]]), 1.5)
    got = to(sent(t), "b")
    assert got[0].epoch == 2 and got[0].committed_until == 1.5 and got[0].next_seq == 1
    kinds = [type(x).__name__ for x in got[1:]]
    assert kinds.count("SpeechEnd") == 1 and kinds[-3:] == ["Audio"] * 3
    assert t.counters["handoffs"] == 1 and t.entries[("p", "s1")].holder == "b"


def test_without_a_pause_a_draining_worker_s_stream_moves_after_the_handoff_timeout():
    t = table(handoff_timeout=2.0)
    join(t, "a", slots=1, now=1.0)
    s = Stream(t)
    s.start(1.0)
    join(t, "b", slots=1, now=1.0)
    t.on_heartbeat(hb("a", slots=1, draining=True), 1.0)
    s.audio(1.0, 1.5)
    t.tick(2.9)
    assert t.entries[("p", "s1")].state == "held"
    t.tick(3.0)
    assert to(sent(t), "a")[-1].moved


def test_a_worker_that_stops_after_finishing_moves_its_streams_without_an_error():
    t = table()
    join(t, "a", slots=1)
    s = Stream(t)
    s.start(0.1)
    join(t, "b", slots=1)
    s.audio(1.0, 0.5)
    commit(t, "a", 0.1, 0.9, seq=0, epoch=1)
    sent(t)
    t.on_heartbeat(hb("a", slots=1, draining=True, stopping=True, released=[["s1", 1]]), 1.0)
    out = sent(t)
    assert not [msg for topic, msg in out if topic.startswith("transcript.")]
    assert to(out, "b")[0].epoch == 2 and to(out, "b")[0].committed_until == 0.9


def test_a_worker_presumed_dead_that_comes_back_is_told_to_drop_the_moved_stream():
    t = table()
    join(t, "a", now=0.0)
    join(t, "b", now=0.0)
    s = Stream(t)
    s.start(0.1)
    holder = t.entries[("p", "s1")].holder
    other = "b" if holder == "a" else "a"
    t.on_heartbeat(hb(other), 3.0)
    t.tick(3.5)
    sent(t)
    t.on_heartbeat(hb(holder, epochs={"s1": 1}), 4.0)  # it was only hung
    out = to(sent(t), holder)
    assert [(x.moved, x.epoch) for x in out] == [(True, 1)]
    t.on_heartbeat(hb(holder, epochs={"s1": 1}), 4.5)
    assert sent(t) == []  # told once


def test_kept_audio_is_bounded():
    t = table(replay_sec=2.0)
    s = Stream(t)
    s.start(0.1)
    s.audio(5.0, 0.2)
    e = t.entries[("p", "s1")]
    assert abs(e.retained_audio - 2.0) < 1e-6 and t.counters["replay_dropped_seconds"] == 3.0


def test_stale_commits_do_not_move_the_retention_point():
    t = table()
    join(t, "a")
    s = Stream(t)
    s.start(0.1)
    s.audio(3.0, 0.2)
    commit(t, "a", 0.0, 2.5, seq=0, epoch=7)  # an epoch this stream is not in
    assert t.entries[("p", "s1")].committed_until is None


def test_a_restarted_dispatcher_leaves_each_stream_with_the_worker_that_holds_it():
    t = table(now=10.0)
    join(t, "a", now=10.0, epochs={"s1": 4})
    join(t, "b", now=10.0)
    s = Stream(t)
    s.audio(0.3, 10.1)  # the stream goes on after our restart
    out = sent(t)
    e = t.entries[("p", "s1")]
    assert e.holder == "a" and e.epoch == 4 and e.state == "held"
    assert [type(x).__name__ for x in to(out, "a")] == ["Audio"] * 3  # no new assignment, no replay
    assert to(out, "b") == []
