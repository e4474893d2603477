"""A pool's wire additions: dispatch topics, assignment fields, reason codes, and the stale-message rule."""

from __future__ import annotations

import msgpack
import pytest

from pipeline import messages as m
from pipeline.epochs import EpochFilter


def commit(epoch, seq=0, stream="s1"):
    return m.Commit(stream=stream, seq=seq, beg=0.0, end=1.0, text="hi", worker="asr-1", epoch=epoch)


def test_fields_added_to_version_1_are_left_out_when_not_set():
    plain = m.Commit(stream="s1", seq=0, text="hi", worker="asr")
    header = msgpack.unpackb(m.encode("transcript.asr.s1", plain)[1])
    assert not {"epoch", "code", "moved"} & set(header)  # byte for byte what older workers send
    _, back = m.decode(m.encode("transcript.asr.s1", commit(3)))
    assert back.epoch == 3 and m.as_dict(plain).get("epoch", "absent") == "absent"


def test_an_assignment_travels_on_the_worker_s_dispatch_topic():
    start = m.SpeechStart(stream="s1", seq=0, t=4.0, epoch=2, committed_until=3.5, committed=[[3.0, 3.5, "so"]],
                          next_seq=7)
    topic, back = m.decode(m.encode(m.dispatch_topic("asr-2", "s1"), start))
    assert topic == "dispatch.asr-2.s1" and back == start
    assert m.parse_topic(topic) == m.Topic("dispatch", "asr-2", "s1")
    moved = m.EndOfStream(stream="s1", seq=1, epoch=2, moved=True)
    assert m.decode(m.encode("dispatch.asr-2.s1", moved))[1].moved is True
    err = m.Error(stream="s1", seq=0, message="refused", code=m.POOL_FULL)
    assert m.decode(m.encode("transcript.asr.s1", err))[1].code == "pool_full"


@pytest.mark.parametrize("topic,msg", [
    ("dispatch.asr.s1", m.Commit(stream="s1", seq=0)),  # commits are not dispatched
    ("dispatch.s1", m.Audio(stream="s1", seq=0, pcm=b"\0\0")),  # a dispatch topic names its worker
    ("transcript.asr.s1", commit(-1)),
    ("transcript.asr.s1", m.Error(stream="s1", seq=0, code="not a code")),
    ("dispatch.a.s1", m.SpeechStart(stream="s1", seq=0, next_seq=True)),
])
def test_malformed_pool_messages_are_rejected(topic, msg):
    with pytest.raises(m.ProtocolError):
        m.decode(m.encode(topic, msg))


def test_messages_of_an_older_epoch_are_stale_until_the_stream_ends():
    f = EpochFilter()
    t = "transcript.asr.s1"
    assert f.admit(t, commit(1)) and f.admit(t, commit(2, seq=1))
    assert not f.admit(t, commit(1, seq=2))  # the worker presumed dead, still talking
    assert not f.admit("partial.asr.s1", m.Partial(stream="s1", seq=0, epoch=1))  # partials of the stream too
    assert f.admit(t, m.Commit(stream="s1", seq=3))  # no epoch: never stale
    assert f.admit("transcript.other.s1", commit(1))  # another pool is another stream
    assert not f.admit(t, m.EndOfStream(stream="s1", seq=4, epoch=1))
    assert f.admit(t, m.EndOfStream(stream="s1", seq=4, epoch=2))
    assert f.admit(t, commit(1))  # the stream id used again: it starts over
    assert f.stale == 3
