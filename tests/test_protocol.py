"""Wire format v1: round trips and every rejection rule of docs/protocol.md section 7."""

from __future__ import annotations

import math

import msgpack
import pytest

from pipeline import messages as m

PCM = b"\x01\x00\xff\x7f" * 800  # 1600 samples


def header(**fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def audio_frames(topic="audio.s1", pcm=PCM, **over):
    h = {"v": 1, "kind": "audio", "stream": "s1", "seq": 3, "t": 1.5, "sr": 16000, "wall0": 1700000000.25}
    h.update(over)
    h = {k: v for k, v in h.items() if v is not _DROP}
    frames = [topic.encode(), header(**h)]
    return frames + ([pcm] if pcm is not None else [])


def commit_header(**over):
    h = {"v": 1, "kind": "commit", "stream": "s1", "seq": 0, "beg": 1.0, "end": 2.5, "text": " hello there",
         "words": [[1.0, 1.6, " hello"], [1.6, 2.5, " there"]], "worker": "asr", "backend": "faster-whisper",
         "model": "tiny.en", "emitted": 1700000003.0, "wall0": 1700000000.0}
    h.update(over)
    return {k: v for k, v in h.items() if v is not _DROP}


_DROP = object()

ROUND_TRIP = [
    ("audio.s1", m.Audio(stream="s1", seq=0, t=0.1, sr=16000, wall0=1700000000.5, pcm=PCM)),
    ("speech.s1", m.Audio(stream="s1", seq=7, t=12.25, wall0=1.0, pcm=b"\x00\x80")),
    ("audio.s1", m.EndOfStream(stream="s1", seq=9, t=30.0)),
    ("transcript.asr.s1", m.EndOfStream(stream="s1", seq=2, t=None, worker="asr")),
    ("speech.s1", m.SpeechStart(stream="s1", seq=1, t=3.2, wall0=1700000000.0)),
    ("speech.s1", m.SpeechEnd(stream="s1", seq=2, t=4.0, wall0=None)),
    ("transcript.asr.s1", m.Commit(**{k: v for k, v in commit_header().items() if k not in ("v", "kind")})),
    ("partial.asr.s1", m.Partial(stream="s1", seq=0, beg=None, end=None, text="", worker="asr", emitted=5.0,
                                 wall0=1.0)),
    ("transcript.asr.s1", m.Error(stream="s1", seq=4, message="RuntimeError: boom", worker="asr")),
    ("status.vad", m.Heartbeat(stream="", seq=12, name="vad", role="vad", ready=True, pid=42, time=1.5,
                               counters={"frames_in": 3}, info={"x": [1, 2]})),
]


@pytest.mark.parametrize("topic,msg", ROUND_TRIP, ids=[f"{t}-{msg.kind}" for t, msg in ROUND_TRIP])
def test_round_trip(topic, msg):
    frames = m.encode(topic, msg)
    assert frames[0] == topic.encode()
    assert len(frames) == (3 if isinstance(msg, m.Audio) else 2)
    got_topic, got = m.decode(frames)
    assert got_topic == topic
    assert got == msg
    assert type(got) is type(msg)
    h = msgpack.unpackb(frames[1])
    assert h["v"] == 1 and h["kind"] == msg.kind and "pcm" not in h


def test_audio_payload_is_beside_the_header():
    msg = m.Audio(stream="s1", seq=0, t=0.0, wall0=0.0, pcm=PCM)
    frames = m.encode("audio.s1", msg)
    assert frames[2] == PCM and len(frames[1]) < 100
    assert m.decode(frames)[1].duration == pytest.approx(0.1)


def test_latency_and_unknown_fields_are_ignored():
    frames = [b"transcript.asr.s1", header(**commit_header(future_field={"a": 1}))]
    _, msg = m.decode(frames)
    assert msg.latency == pytest.approx(1700000003.0 - 1700000000.0 - 2.5)


def test_optional_fields_may_be_absent_or_nil():
    _, msg = m.decode([b"speech.s1", header(v=1, kind="speech_end", stream="s1", seq=0, t=2.0)])
    assert msg.wall0 is None
    _, msg = m.decode([b"audio.s1", header(v=1, kind="eos", stream="s1", seq=0, t=None)])
    assert msg.t is None
    _, msg = m.decode([b"status.x", header(v=1, kind="heartbeat", stream="", seq=0, name="x", role="r", counters={})])
    assert msg.ready is False and msg.info == {}


def test_a_commit_may_say_its_language_and_how_sure_the_model_is():
    """Optional fields (protocol 4.4): an old commit without them still decodes, with None."""
    _, old = m.decode([b"transcript.asr.s1", header(**commit_header())])
    assert (old.language, old.language_prob, old.language_uncertain) == (None, None, None)
    frames = [b"transcript.asr.s1", header(**commit_header(language="de", language_prob=0.31,
                                                           language_uncertain=True))]
    _, msg = m.decode(frames)
    assert (msg.language, msg.language_prob, msg.language_uncertain) == ("de", 0.31, True)


def reason(frames) -> str:
    with pytest.raises(m.ProtocolError) as err:
        m.decode(frames)
    return err.value.reason


# (label, frames, expected reason tag)
REJECTED = [
    ("one frame", [b"audio.s1"], "frames"),
    ("four frames", audio_frames() + [b"x"], "frames"),
    ("topic not utf-8", [b"audio.\xff", header(v=1, kind="eos", stream="s1", seq=0)], "topic"),
    ("undecodable msgpack", [b"audio.s1", b"\xc1\xc1", PCM], "msgpack"),
    ("truncated msgpack", [b"audio.s1", header(v=1, kind="eos", stream="s1", seq=0)[:-3]], "msgpack"),
    ("header not a map", [b"audio.s1", msgpack.packb([1, "eos", "s1", 0])], "header"),
    ("header too large", [b"transcript.asr.s1", header(**commit_header(text="x" * 70000))], "size"),
    ("unknown version", audio_frames(v=2), "version"),
    ("missing version", audio_frames(v=_DROP), "version"),
    ("version as text", audio_frames(v="1"), "version"),
    ("version as boolean", audio_frames(v=True), "version"),
    ("version as float", audio_frames(v=1.0), "version"),
    ("unknown kind", [b"audio.s1", header(v=1, kind="video", stream="s1", seq=0)], "kind"),
    ("kind not text", [b"audio.s1", header(v=1, kind=1, stream="s1", seq=0)], "kind"),
    ("missing stream", audio_frames(stream=_DROP), "field"),
    ("stream with a dot", audio_frames(topic="audio.a.b", stream="a.b"), "field"),
    ("stream too long", audio_frames(topic="audio." + "s" * 65, stream="s" * 65), "field"),
    ("empty stream outside heartbeats", audio_frames(topic="audio.", stream=""), "field"),
    ("negative seq", audio_frames(seq=-1), "field"),
    ("boolean seq", audio_frames(seq=True), "field"),
    ("float seq", audio_frames(seq=1.0), "field"),
    ("missing t", audio_frames(t=_DROP), "field"),
    ("t as text", audio_frames(t="1.5"), "field"),
    ("negative t", audio_frames(t=-0.1), "field"),
    ("nan t", audio_frames(t=math.nan), "field"),
    ("infinite wall0", audio_frames(wall0=math.inf), "field"),
    ("boolean sr", audio_frames(sr=True), "field"),
    ("missing commit text", [b"transcript.asr.s1", header(**commit_header(text=_DROP))], "field"),
    ("commit text not text", [b"transcript.asr.s1", header(**commit_header(text=b"hi"))], "field"),
    ("malformed words", [b"transcript.asr.s1", header(**commit_header(words=[[1.0, " hi"]]))], "field"),
    ("word time as text", [b"transcript.asr.s1", header(**commit_header(words=[["1", 2.0, "x"]]))], "field"),
    ("bad worker id", [b"transcript.asr.s1", header(**commit_header(worker="a.b"))], "field"),
    ("language not a code", [b"transcript.asr.s1", header(**commit_header(language="de!"))], "field"),
    ("language_prob above 1", [b"transcript.asr.s1", header(**commit_header(language_prob=1.5))], "field"),
    ("language_uncertain not boolean", [b"transcript.asr.s1", header(**commit_header(language_uncertain=1))],
     "field"),
    ("text too long", [b"partial.asr.s1", header(v=1, kind="partial", stream="s1", seq=0, text="x" * 20001,
                                                 worker="asr")], "field"),
    ("ready not boolean", [b"status.x", header(v=1, kind="heartbeat", stream="", seq=0, name="x", role="r",
                                               ready=1, counters={})], "field"),
    ("counters not a map", [b"status.x", header(v=1, kind="heartbeat", stream="", seq=0, name="x", role="r",
                                                counters=[1])], "field"),
    ("odd PCM bytes", audio_frames(pcm=PCM + b"\x00"), "pcm"),
    ("empty PCM", audio_frames(pcm=b""), "pcm"),
    ("audio without payload", audio_frames(pcm=None), "frames"),
    ("eos with a payload", [b"audio.s1", header(v=1, kind="eos", stream="s1", seq=0), b"\x00\x00"], "frames"),
    ("wrong sample rate", audio_frames(sr=44100), "rate"),
    ("oversize audio frame", audio_frames(pcm=b"\x00\x00" * (5 * 16000 + 1)), "size"),
    ("topic stream mismatch", audio_frames(topic="audio.s2"), "topic"),
    ("transcript stream mismatch", [b"transcript.asr.other", header(**commit_header())], "topic"),
    ("kind not allowed on family", [b"audio.s1", header(**commit_header())], "topic"),
    ("speech_start on audio topic", [b"audio.s1", header(v=1, kind="speech_start", stream="s1", seq=0, t=1.0)],
     "topic"),
    ("unknown family", audio_frames(topic="video.s1"), "topic"),
    ("topic without stream", audio_frames(topic="audio"), "topic"),
]


@pytest.mark.parametrize("frames,tag", [(f, t) for _, f, t in REJECTED], ids=[label for label, _, _ in REJECTED])
def test_rejected(frames, tag):
    assert reason(frames) == tag


def test_limits_are_inclusive():
    # exactly 5 s of audio and exactly 20000 characters are still accepted
    _, msg = m.decode(audio_frames(pcm=b"\x00\x00" * (5 * 16000)))
    assert msg.duration == pytest.approx(5.0)
    _, msg = m.decode([b"partial.asr.s1", header(v=1, kind="partial", stream="s1", seq=0, text="x" * 20000,
                                                 worker="asr")])
    assert len(msg.text) == 20000


def test_valid_ids():
    for good in ("a", "mic-1", "room:2@host", "A_b", "x" * 64):
        assert m.valid_id(good)
    for bad in ("", "a.b", "a b", "é", "x" * 65, None, 3):
        assert not m.valid_id(bad)
