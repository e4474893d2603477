"""Malformed and hostile bus messages for the fuzz tests, with what each receiver must make of them.

:func:`malformed` yields messages every receiver must reject (protocol section
7), each on a topic of one family (``audio.``, ``speech.``, ``transcript.``,
or ``status.``), so the rejections each actor must count are known: the VAD
subscribes to ``audio.``, a worker to ``speech.``, a sink to ``transcript.``.
Every case is checked against :func:`pipeline.messages.decode` as it is made.

:func:`hostile` yields *valid* messages meant to hurt: thousands of stream
ids, absurd and jumping times, forged ends of streams, huge ``seq`` values.
They must not be rejected, and must not hurt the other streams.
Messages of :func:`hostile` never use the stream ids in ``protect``.

:func:`lying` yields valid messages that lie about a *live* stream (the one under
test): a frame far ahead with a wall0 from another century, a forged ``eos`` on
each of its topics, ends of 2,000 streams that never existed, oversized commits,
forged commits for streams nobody serves, a forged ``seq``. Each must be bounded,
ignored or rejected by a rule, and counted (the expected counters are with each
family); the stream's own frames after them are still transcribed. Lies that need
the stream's live position (pause marks at its end, every 100 ms) are made by
:class:`MarkForger`. A forged commit that fits a served stream exactly cannot be
told from a real one without keys (that is what CURVE is for): none is sent.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import msgpack

from pipeline import messages as m

FAMILIES = ("audio", "speech", "transcript", "status")
SR = 16000


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def pcm(rng: random.Random, seconds: float = 0.1, amp: int = 300) -> bytes:
    n = int(seconds * SR)
    return bytes(rng.getrandbits(8) for _ in range(2 * n)) if amp < 0 else \
        b"".join(int(rng.uniform(-amp, amp)).to_bytes(2, "little", signed=True) for _ in range(n))


def _valid(family: str, stream: str, rng: random.Random) -> tuple[str, dict, bytes | None]:
    """A valid (topic, header, payload) of the family, to be broken."""
    if family in ("audio", "speech"):
        return f"{family}.{stream}", {"v": 1, "kind": "audio", "stream": stream, "seq": rng.randrange(1000),
                                      "t": rng.uniform(0, 100), "sr": SR, "wall0": 1.7e9}, b"\x00\x01" * 800
    if family == "transcript":
        return f"transcript.asr.{stream}", {
            "v": 1, "kind": "commit", "stream": stream, "seq": rng.randrange(1000), "beg": 1.0, "end": 2.0,
            "text": " hello", "words": [[1.0, 2.0, " hello"]], "worker": "asr", "backend": "x", "model": "y",
            "emitted": 1.7e9, "wall0": 1.7e9}, None
    return f"status.{stream}", {"v": 1, "kind": "heartbeat", "stream": "", "seq": 1, "name": stream,
                                "role": "worker", "counters": {}}, None


def _frames(topic, header, payload) -> list[bytes]:
    t = topic if isinstance(topic, bytes) else topic.encode()
    h = header if isinstance(header, bytes) else pack(header)
    return [t, h] + ([payload] if payload is not None else [])


def _nested(header: dict, depth: int) -> bytes:
    """``header`` plus a field nested ``depth`` arrays deep (built by hand: msgpack refuses to pack it)."""
    body = b"".join(pack(k) + pack(v) for k, v in header.items()) + pack("junk") + b"\x91" * depth + b"\x90"
    return b"\xde" + (len(header) + 1).to_bytes(2, "big") + body


def _mutations(rng: random.Random, family: str, stream: str):
    """One malformed message per mutation kind (name, frames)."""
    topic, h, payload = _valid(family, stream, rng)
    num_fields = [k for k in ("t", "wall0", "beg", "end", "emitted") if k in h]
    yield "not msgpack", _frames(topic, bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 40))) + b"\xc1",
                                 payload)
    yield "truncated", _frames(topic, pack(h)[: rng.randrange(1, len(pack(h)) - 1)], payload)
    yield "not a map", _frames(topic, pack(rng.choice([[1, 2], 5, "x", None, True, 1.5])), payload)
    yield "bad v", _frames(topic, {**h, "v": rng.choice([0, 2, "1", 1.0, True, None, -1, 2**40])}, payload)
    yield "no v", _frames(topic, {k: v for k, v in h.items() if k != "v"}, payload)
    yield "unknown kind", _frames(topic, {**h, "kind": rng.choice(["hack", "", "Audio", 5, None, "snapshot"])}, payload)
    gone = rng.choice([k for k in h if k != "v"])
    yield "missing field", _frames(topic, {k: v for k, v in h.items() if k != gone}, payload)
    if num_fields:
        key = rng.choice(num_fields)
        yield "mistyped number", _frames(topic, {**h, key: rng.choice(["1.0", [1], {"a": 1}, True, None, b"\x01"])},
                                         payload)
        yield "nan/inf", _frames(topic, {**h, rng.choice(num_fields): rng.choice([math.nan, math.inf, -math.inf])},
                                 payload)
    yield "bad seq", _frames(topic, {**h, "seq": rng.choice([-1, True, 1.5, "3", None])}, payload)
    bad_ids = ["s" * 65, "a b", "é", 7, None, "a/b"] + ([""] if family != "status" else [])  # heartbeats may have ""
    yield "bad stream id", _frames(topic, {**h, "stream": rng.choice(bad_ids)}, payload)
    yield "stream mismatch", _frames(topic, {**h, "stream": stream + "x"}, payload)
    yield "topic not utf-8", _frames(f"{family}.".encode() + b"\xff\xfe" + stream.encode(), h, payload)
    yield "topic shape", _frames(f"{family}.a.b.{stream}" if family != "transcript" else f"transcript.{stream}",
                                 h, payload)
    yield "topic too long", _frames(f"{family}." + "x" * 300 + f".{stream}", h, payload)
    yield "one frame", [topic.encode()]
    yield "four frames", _frames(topic, h, payload or b"") + [b"extra"]
    if rng.random() < 0.25:  # the big ones, now and then
        yield "oversized header", _frames(topic, {**h, "junk": "x" * (m.MAX_HEADER_BYTES + 10)}, payload)
    yield "nesting bomb", _frames(topic, _nested(h, rng.randrange(1100, 3000)), payload)
    yield "int map keys", _frames(topic, pack({1: 2, **h}), payload)
    yield "bin stream id", _frames(topic, {**h, "stream": stream.encode()}, payload)
    if family in ("audio", "speech"):
        yield "odd pcm", _frames(topic, h, b"\x00" * (2 * rng.randrange(1, 800) + 1))
        yield "empty pcm", _frames(topic, h, b"")
        yield "no pcm", _frames(topic, h, None)
        if rng.random() < 0.25:
            yield "pcm too large", _frames(topic, h, b"\x00\x00" * (m.MAX_AUDIO_BYTES // 2 + 1))
        rate = rng.choice([8000, 44100, 48000, 0, -16000, "16000", 16000.0, True])
        yield "wrong rate", _frames(topic, {**h, "sr": rate}, payload)
        yield "negative t", _frames(topic, {**h, "t": -rng.uniform(0.001, 100)}, payload)
        yield "kind not on family", _frames(topic, {**h, "kind": "commit"}, payload)
    if family == "speech":
        yield "speech_start with pcm", _frames(topic, {"v": 1, "kind": "speech_start", "stream": stream,
                                                       "seq": 1, "t": 1.0}, b"\x00\x00")
        yield "heartbeat on speech", _frames(topic, {"v": 1, "kind": "heartbeat", "stream": stream, "seq": 1,
                                                     "name": "x", "role": "vad", "counters": {}}, None)
    if family == "transcript":
        yield "text too long", _frames(topic, {**h, "text": "x" * (m.MAX_TEXT_CHARS + 1)}, None)
        yield "too many words", _frames(topic, {**h, "words": [[0, 1, "w"]] * (m.MAX_WORDS + 1)}, None)
        yield "bad word", _frames(topic, {**h, "words": [[0, math.nan, "w"]]}, None)
        yield "negative end", _frames(topic, {**h, "end": -1.0}, None)
        yield "commit with payload", _frames(topic, h, b"\x00\x00")
        yield "audio on transcript", _frames(topic, {**h, "kind": "audio", "t": 0.0, "sr": SR, "wall0": 0.0},
                                             b"\x00\x00")
    if family == "status":
        yield "heartbeat stream mismatch", _frames(topic, {**h, "stream": stream + "y"}, None)


def malformed(n: int, streams=("real", "s1", "x"), seed: int = 1):
    """``n`` malformed messages, spread over the families: a list of (family, case, frames)."""
    rng = random.Random(seed)
    out = []
    rounds = 0
    while len(out) < n:
        family = FAMILIES[rounds % len(FAMILIES)]
        rounds += 1
        for case, frames in _mutations(rng, family, rng.choice(streams)):
            try:
                m.decode(frames)
            except m.ProtocolError:
                out.append((family, case, frames))
            else:  # pragma: no cover - the corpus itself is wrong
                raise AssertionError(f"{family}/{case} is not malformed: {frames[:2]}")
            if len(out) >= n:
                break
    return out


def hostile(seed: int = 2, flood: int = 1500, protect=("real",)):
    """Valid but hostile messages: a list of (family, case, frames)."""
    rng = random.Random(seed)
    out = []
    noise = pcm(rng, 0.1)

    def add(family, case, topic, msg):
        assert msg.stream not in protect
        out.append((family, case, m.encode(topic, msg)))

    for i in range(flood):  # a stream id flood on the capture's topics: one frame each, absurd times
        s = f"flood{i}"
        add("audio", "stream flood", f"audio.{s}", m.Audio(stream=s, seq=rng.choice([0, 2**62]),
                                                             t=rng.choice([0.0, 1e9, 1e300]),
                                                             wall0=rng.choice([0.0, -1e15, 1e15]), pcm=noise))
    for i in range(flood // 5):  # ... and on the VAD's: speech segments of unknown streams
        s = f"sflood{i}"
        add("speech", "speech flood", f"speech.{s}", m.SpeechStart(stream=s, seq=0, t=0.0, wall0=1.7e9))
        add("speech", "speech flood", f"speech.{s}", m.Audio(stream=s, seq=1, t=0.0, wall0=1.7e9, pcm=noise))
    for s, family in (("jumpy", "audio"), ("jumpy", "speech")):  # huge jumps forward and back in one stream
        for k, t in enumerate((0.0, 0.1, 1e6, 0.2, 1e12, 1e12 + 3600.0, 5.0)):
            add(family, "time jumps", f"{family}.{s}", m.Audio(stream=s, seq=k, t=t, wall0=1.7e9, pcm=noise))
    for i in range(30):  # forged ends of streams nobody started
        s = f"ghost{i}"
        add("audio", "forged eos", f"audio.{s}", m.EndOfStream(stream=s, seq=0))
        add("speech", "forged eos", f"speech.{s}", m.EndOfStream(stream=s, seq=0, t=1e300))
    for i in range(20):  # a stranger's commits and heartbeats
        add("transcript", "stranger commit", f"transcript.stranger.s{i}", m.Commit(
            stream=f"s{i}", seq=i, beg=0.0, end=1.0, text=" forged", words=[], worker="stranger",
            emitted=1.7e9, wall0=1.7e9))
        add("status", "forged heartbeat", f"status.ghost{i}",
            m.Heartbeat(stream="", seq=i, name=f"ghost{i}", role="worker"))
    rng.shuffle(out)
    return out


def lying(stream: str = "real", worker: str = "asr", seed: int = 3, ghosts: int = 2000, oversized: int = 300,
          strangers: int = 1000):
    """Valid messages that lie about the live ``stream`` (see the module's docstring): (family, case, frames)."""
    rng = random.Random(seed)
    noise = pcm(rng, 0.1)
    out = []

    def add(family, case, topic, msg):
        out.append((family, case, m.encode(topic, msg)))

    tr = f"transcript.{worker}.{stream}"
    add("audio", "time jump", f"audio.{stream}", m.Audio(stream=stream, seq=2**40, t=1e6, wall0=1e15, pcm=noise))
    add("speech", "time jump", f"speech.{stream}", m.Audio(stream=stream, seq=2**40, t=1e6, wall0=1e15, pcm=noise))
    add("audio", "time back", f"audio.{stream}", m.Audio(stream=stream, seq=0, t=0.0, wall0=-1e9, pcm=noise))
    add("audio", "forged eos", f"audio.{stream}", m.EndOfStream(stream=stream, seq=1, t=0.5))
    add("speech", "forged eos", f"speech.{stream}", m.EndOfStream(stream=stream, seq=2, t=0.5))
    add("transcript", "forged eos", tr, m.EndOfStream(stream=stream, seq=141_999_107, t=0.5, worker=worker))
    for i in range(ghosts):  # ends of streams that never existed, at every hop
        s = f"ghost{i}"
        family = ("transcript", "speech", "audio")[i % 3]
        topic = f"transcript.{worker}.{s}" if family == "transcript" else f"{family}.{s}"
        add(family, "ghost eos", topic, m.EndOfStream(stream=s, seq=0, t=1.0, worker=worker))
    big = "x" * (m.MAX_TEXT_CHARS - 10)
    for i in range(oversized):  # ~62 KB commits: the protocol's maximum, on the real stream and elsewhere
        s = stream if i % 2 == 0 else f"big{i}"
        add("transcript", "oversized commit", f"transcript.{worker}.{s}", m.Commit(
            stream=s, seq=10_000 + i, beg=1.0, end=2.0, text=big, words=[[1.0, 2.0, " w"]] * 2000, worker=worker,
            emitted=1.7e9, wall0=1.7e9))
    for i in range(strangers):  # commits for streams the worker does not serve
        s = f"unserved{i % 50}"
        add("transcript", "unserved commit", f"transcript.{worker}.{s}", m.Commit(
            stream=s, seq=i // 50, beg=0.0, end=1.0, text=" forged", words=[], worker=worker, emitted=1.7e9,
            wall0=1.7e9))
    rng.shuffle(out)
    return out


class MarkForger:
    """Lies that need a live stream's position, for ``seconds``: pause marks on ``speech.<stream>`` every
    ``period`` seconds at the stream's end (every other one a ``speech_start``), and now and then the next frame
    of ``audio.<stream>`` ahead of the capture, a copy of the last one at the right time, with a ``wall0`` from
    another century (the capture's own frame then comes second: the same samples, so nothing is lost).

    It reads the stream like any subscriber, so each mark has the time where the stream's audio ends and the
    next ``seq`` (the strongest forgery without keys). Run :meth:`run` in a thread; ``sent`` counts the marks,
    ``wall0_lies`` the frames.
    """

    def __init__(self, bus, stream: str, period: float = 0.1, seconds: float = 10.0, wall0_every: float = 3.0):
        self.bus, self.stream, self.period, self.seconds, self.wall0_every = bus, stream, period, seconds, wall0_every
        self.sent = 0
        self.wall0_lies = 0

    def run(self) -> None:
        import time

        import zmq

        from pipeline.bus import Publisher, Subscriber

        ctx = zmq.Context()
        speech, audio = f"speech.{self.stream}", f"audio.{self.stream}"
        sub, pub = Subscriber(ctx, self.bus, [speech, audio]), Publisher(ctx, self.bus)
        end, seq, frame = None, 0, None
        try:
            t0 = time.monotonic()
            next_mark = next_lie = t0
            while time.monotonic() - t0 < self.seconds:
                try:
                    got = sub.recv(timeout_ms=10)
                except m.ProtocolError:  # the garbage sent meanwhile
                    continue
                if got is not None:
                    topic, msg = got
                    if topic == speech:
                        seq = msg.seq + 1
                        if isinstance(msg, m.Audio):
                            end = msg.t + msg.duration
                    elif isinstance(msg, m.Audio) and msg.wall0 < 1e12:
                        frame = msg
                now = time.monotonic()
                if end is not None and now >= next_mark:
                    kind = m.SpeechEnd if self.sent % 2 == 0 else m.SpeechStart
                    pub.send(speech, kind(stream=self.stream, seq=seq, t=end, wall0=1.7e9))
                    self.sent += 1
                    next_mark += self.period
                if frame is not None and now >= next_lie:
                    pub.send(audio, m.Audio(stream=self.stream, seq=frame.seq + 1, t=frame.t + frame.duration,
                                            wall0=1e15, pcm=frame.pcm))
                    self.wall0_lies += 1
                    next_lie = now + self.wall0_every
        finally:
            sub.close()
            pub.close()
            ctx.term()


def expected_rejections(corpus) -> Counter:
    """Malformed messages per family (= per subscribing actor)."""
    return Counter(family for family, _, _ in corpus)
