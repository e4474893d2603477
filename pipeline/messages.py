"""The voxpipe wire format, version 1: typed envelopes over ZeroMQ multipart.

Every message is ``[topic, header]`` or ``[topic, header, payload]``:

* ``topic``: UTF-8 text, e.g. ``audio.<stream>`` (see the ``*_topic`` helpers);
* ``header``: a msgpack map that always has ``v`` (1), ``kind``, ``stream``
  and ``seq`` (per sender and stream, from 0);
* ``payload``: raw bytes beside the header (only ``audio``: mono int16
  little-endian PCM), never inside it.

Kinds form a closed table (:data:`KINDS`). Decoding checks the version, the
kind, every required field's type and range, that the topic agrees with the
header, and the audio payload; anything else raises :class:`ProtocolError`.
No class is ever looked up by a name taken from the wire.

This module is the public contract described in ``docs/protocol.md``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import msgpack

VERSION = 1
SAMPLE_RATE = 16000
MAX_AUDIO_BYTES = SAMPLE_RATE * 2 * 5  # 5 s of 16 kHz int16 mono in one frame
MAX_HEADER_BYTES = 64 * 1024
MAX_TOPIC_BYTES = 256  # the longest valid topic, partial.<64>.<64>, has 137
MAX_TEXT_CHARS = 20000
MAX_WORDS = 5000
TASKS = ("transcribe", "translate")
_ID = re.compile(r"^[A-Za-z0-9_\-:@]{1,64}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,8}([_-][A-Za-z0-9]{1,8})*$")


class ProtocolError(ValueError):
    """A message that does not follow the protocol; ``reason`` is a short tag."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def valid_id(value: object) -> bool:
    """Stream, worker and actor ids: 1-64 of letters, digits, ``_ - : @`` (no dots)."""
    return isinstance(value, str) and bool(_ID.match(value))


# -- topics ------------------------------------------------------------------
def audio_topic(stream: str) -> str:
    return f"audio.{stream}"


def speech_topic(stream: str) -> str:
    return f"speech.{stream}"


def transcript_topic(worker: str, stream: str) -> str:
    return f"transcript.{worker}.{stream}"


def partial_topic(worker: str, stream: str) -> str:
    return f"partial.{worker}.{stream}"


def status_topic(actor: str) -> str:
    return f"status.{actor}"


def dispatch_topic(worker: str, stream: str) -> str:
    """A pool worker's own input: the streams the dispatcher assigned to it (docs/protocol.md, section 11)."""
    return f"dispatch.{worker}.{stream}"


# ids after the family in a topic: audio.<stream>, transcript.<pool>.<stream>, status.<actor>, ...
_TOPIC_IDS = {"audio": 1, "speech": 1, "status": 1, "transcript": 2, "partial": 2, "dispatch": 2}

# reason codes of ``error`` messages (the ``code`` field)
POOL_FULL = "pool_full"  # every worker of the pool is full: the stream was refused (by the dispatcher)
STREAMS_FULL = "streams_full"  # a worker outside a pool holds max_streams: the stream was refused
FAILOVER = "failover"  # the stream's worker stopped heartbeating; another one goes on from its last commit
BACKEND_FAILED = "backend_failed"  # the backend failed on the stream; the worker goes on from scratch
ERROR_CODES = (POOL_FULL, STREAMS_FULL, FAILOVER, BACKEND_FAILED)


@dataclass(frozen=True)
class Topic:
    """A topic's parts: ``family``, ``worker`` (transcript and partial topics, else "") and the last id."""

    family: str
    worker: str
    id: str  # the stream (the actor, for status topics)


def parse_topic(topic: str) -> Topic:
    """The parts of a topic of one of the protocol's shapes; raises ProtocolError otherwise."""
    family, _, rest = topic.partition(".")
    if family not in _TOPIC_IDS or not rest:
        raise ProtocolError("topic", f"unknown topic family in {topic[:80]!r}")
    ids = rest.split(".")
    if len(ids) != _TOPIC_IDS[family] or not all(valid_id(i) for i in ids):
        worker = "<worker>." if _TOPIC_IDS[family] > 1 else ""
        raise ProtocolError("topic", f"topic {topic[:80]!r} is not {family}.{worker}<id>")
    return Topic(family, ids[0] if len(ids) == 2 else "", ids[-1])


# -- message types -------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    kind: ClassVar[str] = ""
    # topic families ("audio", "speech", ...) this kind may travel on
    families: ClassVar[tuple[str, ...]] = ()
    stream: str
    seq: int

    def header(self) -> dict[str, Any]:
        h = {"v": VERSION, "kind": self.kind}
        for f in fields(self):
            if f.name != "pcm":
                value = getattr(self, f.name)
                if value is None and f.name in _OMIT_UNSET:
                    continue
                h[f.name] = value
        return h


@dataclass(frozen=True)
class Audio(Message):
    kind: ClassVar[str] = "audio"
    families: ClassVar[tuple[str, ...]] = ("audio", "speech", "dispatch")
    t: float = 0.0  # stream seconds of the first sample
    sr: int = SAMPLE_RATE
    wall0: float = 0.0  # Unix time at which stream time 0 was captured
    pcm: bytes = b""  # travels as the third frame
    # what the source asks of the workers (optional): the language spoken ("auto": detect it)
    # and the task; a worker configured with language auto follows them
    language: str | None = None
    task: str | None = None

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.sr


@dataclass(frozen=True)
class EndOfStream(Message):
    kind: ClassVar[str] = "eos"
    families: ClassVar[tuple[str, ...]] = ("audio", "speech", "transcript", "dispatch")
    t: float | None = None  # stream seconds at which the stream ended, when known
    worker: str | None = None  # set on transcript topics
    epoch: int | None = None  # transcript topics of a dispatched pool: the assignment it belongs to
    moved: bool | None = None  # dispatch topics: the stream moves to another worker (it does not end)


@dataclass(frozen=True)
class SpeechStart(Message):
    kind: ClassVar[str] = "speech_start"
    families: ClassVar[tuple[str, ...]] = ("speech", "dispatch")
    t: float = 0.0
    wall0: float | None = None
    # dispatch topics: an assignment (its epoch), and where the stream's transcript stands
    epoch: int | None = None
    committed_until: float | None = None  # stream seconds up to which the pool has committed
    committed: list | None = None  # the last committed words, [[beg, end, word], ...]
    next_seq: int | None = None  # the transcript topic's next seq


@dataclass(frozen=True)
class SpeechEnd(Message):
    kind: ClassVar[str] = "speech_end"
    families: ClassVar[tuple[str, ...]] = ("speech", "dispatch")
    t: float = 0.0
    wall0: float | None = None


@dataclass(frozen=True)
class Commit(Message):
    kind: ClassVar[str] = "commit"
    families: ClassVar[tuple[str, ...]] = ("transcript",)
    beg: float = 0.0
    end: float = 0.0
    text: str = ""
    words: list = field(default_factory=list)  # [[beg, end, word], ...]
    worker: str = ""
    backend: str = ""
    model: str = ""
    emitted: float = 0.0  # Unix time the commit was published
    wall0: float = 0.0  # copied from the stream
    epoch: int | None = None  # a dispatched pool's assignment epoch (late commits of an older one are stale)
    language: str | None = None  # the language spoken: given, or detected by the model
    language_prob: float | None = None  # the model's probability of that language, when it detected it
    language_uncertain: bool | None = None  # detected, but the model is not sure of it

    @property
    def latency(self) -> float:
        """Seconds from the end of the span being spoken to its publication."""
        return self.emitted - self.wall0 - self.end

    def word_latencies(self) -> list[float]:
        """Per committed word: seconds from the end of its being spoken to its publication
        (``emitted - wall0 - word end``, the bench's latency); [] when the stream's ``wall0`` is unknown."""
        if not self.wall0:
            return []
        return [self.emitted - self.wall0 - float(w[1]) for w in self.words]


@dataclass(frozen=True)
class Partial(Message):
    kind: ClassVar[str] = "partial"
    families: ClassVar[tuple[str, ...]] = ("partial",)
    beg: float | None = None
    end: float | None = None
    text: str = ""
    worker: str = ""
    emitted: float = 0.0
    wall0: float = 0.0
    epoch: int | None = None


@dataclass(frozen=True)
class Error(Message):
    kind: ClassVar[str] = "error"
    families: ClassVar[tuple[str, ...]] = ("transcript",)
    message: str = ""
    worker: str = ""
    epoch: int | None = None
    code: str | None = None  # why (ERROR_CODES; receivers must accept others)


@dataclass(frozen=True)
class Heartbeat(Message):
    kind: ClassVar[str] = "heartbeat"
    families: ClassVar[tuple[str, ...]] = ("status",)
    name: str = ""
    role: str = ""
    ready: bool = False
    pid: int = 0
    time: float = 0.0
    counters: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


KINDS: dict[str, type[Message]] = {
    cls.kind: cls for cls in (Audio, EndOfStream, SpeechStart, SpeechEnd, Commit, Partial, Error, Heartbeat)
}

# field name -> (accepted types, required, check)
_NUM = (int, float)


def _finite(x) -> bool:
    return isinstance(x, _NUM) and not isinstance(x, bool) and math.isfinite(x)


def _nonneg(x) -> bool:
    return _finite(x) and x >= 0


def _opt(check):
    return lambda x: x is None or check(x)


def _words(x) -> bool:
    if not isinstance(x, list) or len(x) > MAX_WORDS:
        return False
    for w in x:
        if not (isinstance(w, (list, tuple)) and len(w) == 3
                and _finite(w[0]) and _finite(w[1]) and isinstance(w[2], str)):
            return False
    return True


def _text(x) -> bool:
    return isinstance(x, str) and len(x) <= MAX_TEXT_CHARS


def _name(x) -> bool:
    return x == "" or valid_id(x)


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def valid_language(x: object) -> bool:
    """A language code (``en``, ``de``, ``haw``, ``yue``, ``zh-Hant`` ...; ``auto`` passes too)."""
    return isinstance(x, str) and bool(_LANGUAGE.match(x))


_CHECKS: dict[str, Any] = {
    "t": _nonneg,
    "sr": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "wall0": _finite,
    "beg": _nonneg,
    "end": _nonneg,
    "text": _text,
    "words": _words,
    "worker": _name,
    "backend": _text,
    "model": _text,
    "emitted": _finite,
    "message": _text,
    "name": _name,
    "role": _text,
    "ready": lambda x: isinstance(x, bool),
    "pid": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "time": _finite,
    "counters": lambda x: isinstance(x, dict),
    "info": lambda x: isinstance(x, dict),
    "epoch": _count,
    "next_seq": _count,
    "committed_until": _nonneg,
    "committed": _words,
    "moved": lambda x: isinstance(x, bool),
    "code": valid_id,
    "language": valid_language,
    "language_prob": lambda x: _finite(x) and 0 <= x <= 1,
    "language_uncertain": lambda x: isinstance(x, bool),
    "task": lambda x: x in TASKS,
}
_OPTIONAL = {
    ("eos", "t"), ("eos", "worker"), ("speech_start", "wall0"), ("speech_end", "wall0"),
    ("partial", "beg"), ("partial", "end"), ("heartbeat", "info"), ("heartbeat", "pid"),
    ("heartbeat", "time"), ("heartbeat", "ready"), ("partial", "emitted"), ("partial", "wall0"),
    ("eos", "epoch"), ("eos", "moved"), ("commit", "epoch"), ("partial", "epoch"), ("error", "epoch"),
    ("error", "code"), ("speech_start", "epoch"), ("speech_start", "committed_until"),
    ("speech_start", "committed"), ("speech_start", "next_seq"),
    ("commit", "language"), ("commit", "language_prob"), ("commit", "language_uncertain"),
    ("audio", "language"), ("audio", "task"),
}
# optional fields added to version 1 later: left out of the header when not set, so that
# messages without them are byte for byte what they were
_OMIT_UNSET = {"epoch", "moved", "committed_until", "committed", "next_seq", "code", "language", "language_prob",
               "language_uncertain", "task"}


# -- encoding --------------------------------------------------------------------
def encode(topic: str, msg: Message) -> list[bytes]:
    """Frames for ``msg`` on ``topic``: [topic, header] or [topic, header, pcm]."""
    header = msgpack.packb(msg.header(), use_bin_type=True)
    frames = [topic.encode("utf-8"), header]
    if isinstance(msg, Audio):
        frames.append(msg.pcm)
    return frames


def decode(frames: list[bytes]) -> tuple[str, Message]:
    """Parse and validate a multipart message; raises ProtocolError."""
    if len(frames) not in (2, 3):
        raise ProtocolError("frames", f"expected 2 or 3 frames, got {len(frames)}")
    if len(frames[0]) > MAX_TOPIC_BYTES:
        raise ProtocolError("size", f"topic of {len(frames[0])} bytes")
    try:
        topic = bytes(frames[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("topic", "topic is not UTF-8") from None
    raw = bytes(frames[1])
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError("size", f"header of {len(raw)} bytes")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types
        raise ProtocolError("msgpack", type(exc).__name__) from None
    if not isinstance(header, dict):
        raise ProtocolError("header", "header is not a map")
    if type(header.get("v")) is not int or header["v"] != VERSION:  # not True, not 1.0
        raise ProtocolError("version", f"unsupported v={header.get('v')!r}")
    kind = header.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError("kind", f"unknown kind {kind!r}")
    stream, seq = header.get("stream"), header.get("seq")
    if not (stream == "" and cls is Heartbeat) and not valid_id(stream):
        raise ProtocolError("field", f"bad stream id {stream!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ProtocolError("field", f"bad seq {seq!r}")
    kwargs: dict[str, Any] = {"stream": stream, "seq": seq}
    for f in fields(cls):
        if f.name in ("stream", "seq", "pcm"):
            continue
        if f.name not in header:
            if (kind, f.name) in _OPTIONAL:
                continue
            raise ProtocolError("field", f"{kind} without {f.name!r}")
        value = header[f.name]
        check = _CHECKS[f.name]
        if (kind, f.name) in _OPTIONAL:
            check = _opt(check)
        if not check(value):
            raise ProtocolError("field", f"{kind}.{f.name} has a bad value")
        kwargs[f.name] = value
    if topic.partition(".")[0] not in cls.families:
        raise ProtocolError("topic", f"{kind} on topic {topic[:80]!r}")
    topic_stream = parse_topic(topic).id
    if stream and topic_stream != stream:
        raise ProtocolError("topic", f"topic {topic!r} does not match stream {stream!r}")
    if cls is Audio:
        kwargs["pcm"] = _check_pcm(frames, kwargs)
    elif len(frames) == 3:
        raise ProtocolError("frames", f"{kind} carries no payload")
    return topic, cls(**kwargs)


def _check_pcm(frames: list[bytes], kwargs: dict) -> bytes:
    if len(frames) != 3:
        raise ProtocolError("frames", "audio without a payload")
    if kwargs["sr"] != SAMPLE_RATE:
        raise ProtocolError("rate", f"sample rate {kwargs['sr']} (only {SAMPLE_RATE} Hz is accepted)")
    pcm = bytes(frames[2])
    if len(pcm) % 2:
        raise ProtocolError("pcm", "odd number of PCM bytes")
    if len(pcm) > MAX_AUDIO_BYTES:
        raise ProtocolError("size", f"audio frame of {len(pcm)} bytes")
    if not pcm:
        raise ProtocolError("pcm", "empty audio frame")
    return pcm


def as_dict(msg: Message) -> dict[str, Any]:
    """A JSON-friendly record of a message (without the PCM payload)."""
    d = asdict(msg)
    d.pop("pcm", None)
    for key in _OMIT_UNSET:
        if d.get(key, 0) is None:
            del d[key]
    d["kind"] = msg.kind
    return d
