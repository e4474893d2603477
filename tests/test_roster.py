"""What a receiver believes (pipeline.roster), who may publish what (pipeline.permissions), forged seq values.

* a transcript counts only while its worker's heartbeat lists the stream; one that comes first
  waits a little for that heartbeat, then is dropped and counted;
* an eos counts only once a heartbeat of whoever served the stream lists it as ended; a stream
  nobody announced (a producer without heartbeats) is believed as before;
* a commit with more text than its span can hold is dropped;
* with CURVE each actor's key may publish only its own topics; every publisher may keep only
  so many stream ids live;
* a forged seq far ahead is not a loss, and does not move the count.
"""

from __future__ import annotations

import pytest

from pipeline import messages as m
from pipeline.config import load_config
from pipeline.permissions import PublisherQuota, TopicGuard, quota_limits, rights_for
from pipeline.roster import Believer
from pipeline.sequence import GapCounter


def hb(name, seq=0, role="worker", streams=(), ended=()):
    info = {"streams": list(streams)}
    if ended:
        info["ended"] = list(ended)
    return m.Heartbeat(stream="", seq=seq, name=name, role=role, ready=True, pid=1, info=info)


def commit(stream="s1", worker="asr", seq=0, text=" hello", beg=0.0, end=1.0):
    return m.Commit(stream=stream, seq=seq, beg=beg, end=end, text=text, words=[], worker=worker, emitted=1.0,
                    wall0=0.0)


def eos(stream="s1", worker="asr", seq=1):
    return m.EndOfStream(stream=stream, seq=seq, t=1.0, worker=worker)


def test_a_transcript_counts_while_its_worker_lists_the_stream():
    b = Believer(hold=2.0)
    assert b.heartbeat(hb("asr", streams=["s1"]), 0.0) == []
    assert b.offer("transcript.asr.s1", commit(), 0.1) == [("transcript.asr.s1", commit())]
    assert b.offer("transcript.asr.s9", commit("s9"), 0.1) == []  # asr does not serve s9
    assert b.offer("transcript.evil.s1", commit(worker="evil"), 0.1) == []  # nobody called evil heartbeats
    assert b.expire(3.0) == [] and b.counts.unserved == 2


def test_a_transcript_that_comes_before_the_heartbeat_waits_for_it():
    b = Believer(hold=2.0)
    assert b.offer("transcript.asr.s1", commit(seq=0), 0.0) == []
    assert b.offer("transcript.asr.s1", commit(seq=1), 0.1) == []
    released = b.heartbeat(hb("asr", streams=["s1"]), 0.5)
    assert [msg.seq for _, msg in released] == [0, 1] and b.counts.unserved == 0


def test_an_eos_counts_once_the_worker_says_it_ended_the_stream():
    b = Believer(hold=2.0)
    b.heartbeat(hb("asr", streams=["s1"]), 0.0)
    assert b.offer("transcript.asr.s1", eos(), 0.1) == []  # held
    assert b.heartbeat(hb("asr", seq=1, streams=["s1"]), 0.5) == []  # still served: that eos was forged
    assert b.expire(2.2) == [] and b.counts.unconfirmed_eos == 1
    b.offer("transcript.asr.s1", eos(), 3.0)
    assert b.heartbeat(hb("asr", seq=2, ended=["s1"]), 3.1) == [("transcript.asr.s1", eos())]


def test_an_eos_for_a_stream_that_never_existed_is_dropped():
    b = Believer(hold=1.0)
    b.heartbeat(hb("asr", streams=["real"]), 0.0)
    for i in range(100):
        b.offer(f"transcript.asr.ghost{i}", eos(f"ghost{i}"), 0.0)
    b.heartbeat(hb("asr", seq=1, streams=["real"]), 0.5)
    assert b.expire(1.5) == [] and b.counts.unconfirmed_eos == 100 and b.n_held == 0


def test_ends_of_audio_streams_need_their_announcer_to_confirm_them():
    b = Believer(hold=1.0)
    b.heartbeat(hb("cap", role="capture", streams=["mic"]), 0.0)
    assert b.offer("audio.mic", m.EndOfStream(stream="mic", seq=9, t=3.0), 0.1) == []
    assert b.offer("audio.other", m.EndOfStream(stream="other", seq=0), 0.1) != []  # nobody announced it
    confirmed = b.heartbeat(hb("cap", seq=1, role="capture", ended=["mic"]), 0.2)
    assert [t for t, _ in confirmed] == ["audio.mic"]
    assert b.offer("audio.mic", m.Audio(stream="mic", seq=1, pcm=b"\x00\x00"), 0.3) != []  # audio passes


def test_an_oversized_commit_is_dropped():
    b = Believer()
    b.heartbeat(hb("asr", streams=["s1"]), 0.0)
    assert b.offer("transcript.asr.s1", commit(text="x" * 19000, beg=1.0, end=2.0), 0.1) == []
    assert b.offer("transcript.asr.s1", commit(text=" a fair sentence of speech", beg=1.0, end=3.0), 0.1) != []
    assert b.counts.oversized == 1


def test_held_messages_are_bounded():
    b = Believer(max_held=10)
    for i in range(100):
        b.offer(f"transcript.x.s{i}", commit(f"s{i}", worker="x"), 0.0)
    assert b.n_held == 10 and b.counts.unserved == 90


# -- who may publish what ---------------------------------------------------------------------------
@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"""
sources:
  - name: cap
    input: file:{tmp_path}/x.wav
    stream: mic
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{tmp_path}/t.jsonl
""")
    return load_config(path, check_files=False)


@pytest.mark.parametrize("identity,topic,allowed", [
    ("cap", "audio.mic", True), ("cap", "audio.other", False), ("cap", "speech.mic", False),
    ("cap", "transcript.asr.mic", False), ("cap", "status.cap", True), ("cap", "status.asr", False),
    ("vad", "speech.mic", True), ("vad", "audio.mic", False), ("vad", "status.vad", True),
    ("asr", "transcript.asr.mic", True), ("asr", "partial.asr.mic", True), ("asr", "transcript.asr2.mic", False),
    ("asr", "status.asr", True), ("out", "status.out", True), ("out", "transcript.asr.mic", False),
    ("client", "status.client-1-0", True), ("client", "status.asr", False), ("client", "audio.mic", False),
])
def test_each_key_may_publish_its_own_topics_only(cfg, identity, topic, allowed):
    assert TopicGuard(cfg).allowed(identity, topic.encode()) is allowed


def test_a_worker_of_a_pool_may_publish_under_the_pool_too(cfg):
    import dataclasses

    pooled = dataclasses.replace(cfg.workers[0])
    object.__setattr__(pooled, "pool", "fleet")  # a config that gives the worker a pool (worker pools)
    rights = rights_for(dataclasses.replace(cfg, workers=(pooled,)), "asr")
    assert rights.allows(b"transcript.fleet.mic") and rights.allows(b"transcript.asr.mic")


def test_the_gateway_may_publish_the_audio_of_its_own_client_streams_only(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("workers:\n  - name: asr\ngateway:\n  enabled: true\n  name: gw\n")
    rights = rights_for(load_config(path, check_files=False), "gw")
    assert rights.allows(b"audio.gw-dg-0a1b2c3d4e") and rights.allows(b"status.gw")
    for topic in (b"audio.mic", b"audio.gw2-dg-0a", b"transcript.asr.gw-dg-0a", b"speech.gw-dg-0a", b"status.asr"):
        assert not rights.allows(topic), topic


def test_a_publisher_keeps_only_so_many_stream_ids_live():
    q = PublisherQuota({b"audio": 3}, idle=5.0)
    assert [q.admit("conn:1", f"audio.s{i}".encode(), 0.0) for i in range(5)] == [True] * 3 + [False] * 2
    assert q.admit("conn:2", b"audio.s9", 0.0)  # another publisher has its own quota
    assert q.admit("conn:1", b"audio.s0", 1.0)  # a live one goes on
    assert q.admit("conn:1", b"audio.s7", 6.5)  # s1 and s2 went quiet: room again
    assert q.admit("conn:1", b"status.x", 0.0)  # heartbeats are not streams


def test_quota_limits_follow_the_config(cfg):
    limits = quota_limits(cfg)
    assert limits[b"audio"] == 16 and limits[b"speech"] == cfg.vad.max_streams and limits[b"transcript"] == 16


# -- forged seq ------------------------------------------------------------------------------------
def test_a_forged_seq_far_ahead_is_not_a_loss():
    g = GapCounter()
    for seq in range(5):
        g.observe("speech.s", seq)
    assert g.observe("speech.s", 141_999_107) == 0 and g.implausible == 1
    assert g.observe("speech.s", 5) == 0 and g.total == 0  # the real sender goes on, nothing lost
    assert g.observe("speech.s", 8) == 2 and g.total == 2  # a real loss still counts


def test_a_sender_that_really_jumps_is_followed():
    g = GapCounter()
    g.observe("t", 0)
    g.observe("t", 50_000)
    assert g.observe("t", 50_001) == 0 and g.observe("t", 50_003) == 1


# -- who gets a stream slot ------------------------------------------------------------------------
def test_a_stream_that_keeps_coming_back_gets_in_during_a_flood_of_one_frame_streams():
    from workers.admission import Admission, Slot

    a = Admission(quiet=0.3)
    full = {f"flood{i}": Slot(last_seen=1.0, frames=1, spare=True) for i in range(8)}
    assert a.victim("flood99", full, 1.1) is None  # nothing quiet yet: refused
    assert a.victim("real", full, 1.1) is None  # the real stream's first frame: refused too ...
    assert a.victim("real", full, 1.2) in full  # ... its second takes the slot of a one-frame stream
    speaking = {"real": Slot(1.2, 5, spare=False), **{f"f{i}": Slot(1.0, 1, spare=True) for i in range(7)}}
    assert a.victim("f100", speaking, 1.35) == "f0"  # a quiet spare one goes first
    assert a.victim("f101", {"real": Slot(1.3, 50, spare=False)}, 9.0) is None  # speech is never given away


# -- worker pools: the pool's members and the dispatcher vouch for the pool's topics ---------------------------
def member(name, pool="asr", streams=(), ended=()):
    beat = hb(name, streams=streams, ended=ended)
    return m.Heartbeat(**{**beat.__dict__, "info": {**beat.info, "pool": pool}})


def test_a_replica_vouches_for_its_pool_s_transcript_of_the_streams_it_holds():
    b = Believer(hold=2.0)
    b.heartbeat(member("asr-1", streams=["s1"]), 0.0)
    b.heartbeat(member("asr-2", streams=["s2"]), 0.0)
    assert b.offer("transcript.asr.s1", commit(worker="asr-1"), 0.1) != []
    assert b.offer("transcript.asr.s2", commit("s2", worker="asr-2"), 0.1) != []
    assert b.offer("transcript.asr.s3", commit("s3"), 0.1) == []  # no replica holds s3
    assert b.offer("transcript.big.s1", commit(worker="asr-1"), 0.1) == []  # asr-1 is not of pool big
    assert b.expire(3.0) == [] and b.counts.unserved == 2


def test_a_pool_s_eos_counts_once_the_replica_or_the_dispatcher_lists_it_as_ended():
    b = Believer(hold=2.0)
    b.heartbeat(member("asr-1", streams=["s1"]), 0.0)
    assert b.offer("transcript.asr.s1", eos(worker="asr-1"), 0.1) == []
    assert b.heartbeat(member("asr-1", ended=["s1"]), 0.5) == [("transcript.asr.s1", eos(worker="asr-1"))]
    dispatcher = m.Heartbeat(stream="", seq=0, name="dispatcher", role="dispatcher", ready=True, pid=1,
                             info={"pools": {"asr": {}}, "streams": {"asr/s7": ["", 1, "refused"]}})
    b.heartbeat(dispatcher, 0.6)
    refusal = m.Error(stream="s7", seq=0, message="refused: pool asr is full", worker="", code="pool_full")
    assert b.offer("transcript.asr.s7", refusal, 0.7) == [("transcript.asr.s7", refusal)]
    assert b.offer("transcript.asr.s7", eos("s7", worker=""), 0.8) == []
    ended = m.Heartbeat(**{**dispatcher.__dict__, "seq": 1, "info": {**dispatcher.info, "ended": ["s7"]}})
    assert b.heartbeat(ended, 1.0) == [("transcript.asr.s7", eos("s7", worker=""))]


def test_the_dispatcher_and_each_replica_may_publish_their_pool_s_topics_only():
    import textwrap

    cfg_text = textwrap.dedent("""
        workers:
          - name: asr
            replicas: 2
        """)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pool.yaml"
        path.write_text(cfg_text)
        cfg = load_config(path, check_files=False)
    assert rights_for(cfg, "asr-2").allows(b"transcript.asr.s1")
    assert not rights_for(cfg, "asr-2").allows(b"transcript.other.s1")
    d = rights_for(cfg, "dispatcher")
    assert d.allows(b"dispatch.asr-1.s1") and d.allows(b"transcript.asr.s1") and not d.allows(b"audio.s1")
