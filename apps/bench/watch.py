"""What the bench sees on the bus, as any subscriber would.

:class:`BusWatch` subscribes to ``transcript.<pool>.``, ``speech.`` and
``status.``, and files every valid message under the stream it belongs to
(:class:`StreamRecord`): the commits with their ``emitted``/``wall0`` and
word times, the VAD's ``speech_start`` events, the speech audio the worker
was given (kept only when asked, for the decode replay), the transcript
``eos`` and errors, and gaps in ``seq``. It also keeps each actor's latest
heartbeat and can publish the bench's own heartbeat (the gate the captures
wait for, so that a round's streams start together).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import zmq

from pipeline import messages as m
from pipeline.bus import Publisher, Subscriber, handshake
from pipeline.epochs import EpochFilter
from pipeline.sequence import GapCounter


@dataclass
class CommitRecord:
    beg: float
    end: float
    text: str
    words: list  # [[beg, end, word], ...] in stream seconds
    emitted: float
    wall0: float
    received: float


@dataclass
class StreamRecord:
    stream: str
    clip: str
    keep_speech: bool = False
    commits: list = field(default_factory=list)
    speech_starts: list = field(default_factory=list)  # (t, wall0, received)
    speech_seconds: float = 0.0  # speech audio the VAD passed on
    speech_events: list = field(default_factory=list)  # ("audio", t, pcm) / ("end", t) / ("eos", t)
    vad_eos: float | None = None  # Unix time the VAD's eos arrived
    eos_received: float | None = None  # Unix time the worker's eos arrived
    errors: list = field(default_factory=list)
    gaps: int = 0

    @property
    def finished(self) -> bool:
        return self.eos_received is not None

    @property
    def wall0(self) -> float | None:
        for c in self.commits:
            return c.wall0
        for _, wall0, _ in self.speech_starts:
            if wall0:
                return wall0
        return None


class BusWatch:
    def __init__(self, bus, worker: str, name: str = "bench"):
        """``worker``: the pool whose transcripts are filed (a worker outside a pool is its own)."""
        self.worker = worker
        self.name = name
        self.ctx = zmq.Context()
        self.sub = Subscriber(self.ctx, bus, [f"transcript.{worker}.", "speech.", "status."])
        self.pub = Publisher(self.ctx, bus)
        self.streams: dict[str, StreamRecord] = {}
        self.heartbeats: dict[str, tuple[m.Heartbeat, float]] = {}
        self.rejected = 0
        self.gaps = 0
        self._gap_counter = GapCounter()
        self._epochs = EpochFilter()  # a pool's late messages of an older assignment are dropped
        self._gate_seq = 0

    def sync(self, timeout: float = 10.0) -> bool:
        """Our subscriptions are in place at the broker (a probe came back)."""
        return handshake(self.pub, self.sub, f"{self.name}-{os.getpid()}", timeout=timeout)

    def track(self, record: StreamRecord) -> None:
        self.streams[record.stream] = record

    def latest(self, name: str) -> m.Heartbeat | None:
        got = self.heartbeats.get(name)
        return got[0] if got else None

    def open_gate(self, gate: str) -> None:
        """Publish a ready heartbeat as actor ``gate`` (captures that wait for it start)."""
        hb = m.Heartbeat(stream="", seq=self._gate_seq, name=gate, role="bench", ready=True, pid=os.getpid(),
                         time=time.time())
        self._gate_seq += 1
        self.pub.send(m.status_topic(gate), hb)

    # -- receiving ---------------------------------------------------------------------------------
    def pump(self, timeout_ms: int = 0) -> int:
        """Take every message that is waiting (waiting up to ``timeout_ms`` for the first)."""
        n = 0
        while True:
            frames = self.sub.recv_frames(timeout_ms)
            if frames is None:
                return n
            timeout_ms = 0
            now = time.time()
            try:
                topic, msg = m.decode(frames)
            except m.ProtocolError:
                self.rejected += 1
                continue
            n += 1
            if isinstance(msg, m.Heartbeat):
                if msg.role != "probe":
                    self.heartbeats[msg.name] = (msg, now)
                continue
            self._file(topic, msg, now)

    def _seq(self, topic: str, msg: m.Message, rec: StreamRecord) -> None:
        missing = self._gap_counter.observe(topic, msg.seq, ends=isinstance(msg, m.EndOfStream))
        rec.gaps += missing
        self.gaps += missing

    def _file(self, topic: str, msg: m.Message, now: float) -> None:
        rec = self.streams.get(msg.stream)
        if rec is None:
            return
        self._seq(topic, msg, rec)
        family = topic.split(".", 1)[0]
        if family == "speech":
            if isinstance(msg, m.Audio):
                rec.speech_seconds += msg.duration
                if rec.keep_speech:
                    rec.speech_events.append(("audio", msg.t, msg.pcm))
            elif isinstance(msg, m.SpeechStart):
                rec.speech_starts.append((msg.t, msg.wall0, now))
            elif isinstance(msg, m.SpeechEnd):
                if rec.keep_speech:
                    rec.speech_events.append(("end", msg.t, None))
            elif isinstance(msg, m.EndOfStream):
                rec.vad_eos = now
                if rec.keep_speech:
                    rec.speech_events.append(("eos", msg.t, None))
        elif family == "transcript" and self._epochs.admit(topic, msg):
            if isinstance(msg, m.Commit):
                rec.commits.append(CommitRecord(msg.beg, msg.end, msg.text, [list(w) for w in msg.words],
                                                msg.emitted, msg.wall0, now))
            elif isinstance(msg, m.Error):
                rec.errors.append(msg.message)
            elif isinstance(msg, m.EndOfStream):
                rec.eos_received = now

    def close(self) -> None:
        self.sub.close()
        self.pub.close()
        self.ctx.term()
