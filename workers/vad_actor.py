"""The VAD actor: ``audio.<stream>`` in, speech only out on ``speech.<stream>``.

One :class:`asr_core.speech_gate.SpeechGate` (Silero VAD + segmenter) per
stream, created when the stream is first seen and freed on ``eos`` or after
``idle_timeout`` seconds without a frame. For each stream it publishes, in
order: ``speech_start`` (t), the audio inside the segment (with its
``speech_pad_ms`` pre-roll, cut sample-exact at the start and end, each frame
with its own ``t``), ``speech_end`` (t); and ``eos`` after closing an open
segment. ``wall0`` is the stream's, by the rule below; the source's optional ``language``
and ``task`` (what it asks of the workers) are copied from the latest input frame.

A stream's time and ``wall0`` are fixed by its own frames (the gate's
:class:`~asr_core.stream_clock.StreamClock`): a frame that does not continue
it is set aside and counted (``out_of_step``), a ``wall0`` that jumps is not
taken (``wall0_ignored``), and the stream switches to a timeline of set-aside
frames only once that holds half a second of audio and the old one went quiet
(``timeline_switches``: a restarted capture).

At most ``vad.max_streams`` streams are live at once. A stream that never
carried speech is forgotten after ``NO_SPEECH_IDLE_S`` without a frame, and
when every slot is taken a new stream may take the slot of one that never
carried speech (:mod:`workers.admission`: a quiet one, or, for a stream that
keeps coming back, the one with the fewest frames; ``streams_evicted``), so a
flood of stream ids does not keep a real stream out; else its frames are
refused and counted (``streams_refused``) until one ends or idles out.
A stream that goes idle is closed as if it had sent ``eos`` (so the workers
flush); if it comes back it starts over (its ``seq`` restarts at 0).

An ``eos`` on ``audio.<stream>`` is believed when the heartbeat of whoever
announced the stream (its capture) lists it as ended (:mod:`pipeline.roster`;
a forged one is dropped and counted, ``unconfirmed_eos``). The end of a stream
that never carried speech is passed on as ``eos`` on ``speech.<stream>`` too,
so the workers can say it ended.
Heartbeat ``info.cpu_per_audio_s`` is the VAD's own CPU seconds per second
of audio processed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from asr_core.speech_gate import SR, SpeechGate, to_samples
from pipeline import messages as m
from pipeline.config import VADConfig
from pipeline.roster import Believer

from .admission import Admission, Slot
from .base import Actor, actor_config, add_actor_arguments, run_actor

NO_SPEECH_IDLE_S = 2.0  # a stream that never carried speech is forgotten after this long without a frame
CLOCK_COUNTERS = {"out_of_step": "out_of_step", "switches": "timeline_switches", "wall0_ignored": "wall0_ignored"}


@dataclass
class StreamGate:
    gate: SpeechGate
    last_seen: float = 0.0
    frames: int = 0
    hints: dict = field(default_factory=dict)  # the source's language and task, passed on to the workers

    @property
    def wall0(self) -> float:
        return self.gate.wall0


class VADActor(Actor):
    role = "vad"

    def __init__(self, name, bus, vcfg: VADConfig, config=None):
        super().__init__(name, bus, config)
        self.vcfg = vcfg
        self.idle_timeout = vcfg.idle_timeout
        self.streams: dict[str, StreamGate] = {}
        self.counters.update({"speech_segments": 0, "streams_total": 0, "streams_evicted": 0, "unconfirmed_eos": 0,
                              **{c: 0 for c in CLOCK_COUNTERS.values()}})
        self.believer = Believer(bus.heartbeat_interval)
        self.admission = Admission()
        self._model_path = None
        self._cpu = 0.0
        self._audio = 0.0

    def subscriptions(self):
        return ["audio.", "status."]

    def setup(self) -> None:
        from asr_core.vad import SileroVAD, silero_model_path

        self._model_path = silero_model_path()
        SileroVAD(self._model_path)  # fail now, with one line, if the model cannot load

    def _make_segmenter(self, t0: float):
        from asr_core.vad import SileroVAD, SpeechSegmenter

        return SpeechSegmenter(self.vcfg.options(), SileroVAD(self._model_path), t0=t0)

    def info(self) -> dict:
        v = self.vcfg
        return {
            "threshold": v.threshold, "neg_threshold": v.neg_threshold, "min_silence_ms": v.min_silence_ms,
            "speech_pad_ms": v.speech_pad_ms, "streams": sorted(self.streams),
            "cpu_per_audio_s": round(self._cpu / self._audio, 5) if self._audio else 0.0,
        }

    # -- messages ------------------------------------------------------------------------
    def handle(self, topic: str, msg: m.Message) -> None:
        now = time.monotonic()
        if isinstance(msg, m.Heartbeat):
            self._ends(self.believer.heartbeat(msg, now))
        elif isinstance(msg, m.Audio):
            self._audio_frame(msg, now)
        elif isinstance(msg, m.EndOfStream):
            self._ends(self.believer.offer(topic, msg, now))

    def _ends(self, believed) -> None:
        for _topic, msg in believed:
            st = self.streams.get(msg.stream)
            if st is not None:
                self._close(msg.stream, st, msg.t)
            elif self.believer.roster.announced(msg.stream, time.monotonic()):
                self._end_unseen(msg.stream, msg.t)

    def _admit(self, stream: str, now: float) -> bool:
        """Room for a new stream: a free slot, else that of one that never carried speech (workers.admission)."""
        if len(self.streams) >= self.vcfg.max_streams:
            slots = {s: Slot(st.last_seen, st.frames, st.gate.segments == 0) for s, st in self.streams.items()}
            victim = self.admission.victim(stream, slots, now)
            if victim is not None:
                self._forget(victim)
                self.counters["streams_evicted"] += 1
                self.limited.warning("evicted", "stream %s takes the slot of %s (no speech, quiet)", stream, victim)
        return self.admit_stream(stream, len(self.streams), self.vcfg.max_streams)

    def _audio_frame(self, msg: m.Audio, now: float) -> None:
        st = self.streams.get(msg.stream)
        n = to_samples(msg.t)
        if st is None:
            if not self._admit(msg.stream, now):
                return
            gate = SpeechGate(self._make_segmenter, self.vcfg.speech_pad_ms, first_sample=n)
            st = self.streams[msg.stream] = StreamGate(gate)
            self.counters["streams_total"] += 1
            self.counters["streams_active"] = len(self.streams)
            self.announce()
            self.log.info("new stream %s at t=%.2f", msg.stream, msg.t)
        st.last_seen = now
        st.frames += 1
        st.hints = {k: v for k, v in (("language", msg.language), ("task", msg.task)) if v is not None}
        c0 = time.process_time()
        before = dict(st.gate.clock.counts.__dict__)
        events = st.gate.push(n, np.frombuffer(msg.pcm, dtype="<i2"), msg.wall0, now)
        self._cpu += time.process_time() - c0
        self._audio += msg.duration
        for key, counter in CLOCK_COUNTERS.items():
            delta = getattr(st.gate.clock.counts, key) - before[key]
            if delta:
                self.counters[counter] += delta
                self.limited.warning(key, "stream %s: frame at t=%.3f: %s (the stream is at %.3f)", msg.stream,
                                     msg.t, counter.replace("_", " "), (st.gate.clock.end or 0.0))
        self._publish_events(msg.stream, st, events)

    def _publish_events(self, stream: str, st: StreamGate, events) -> None:
        topic = m.speech_topic(stream)
        seq = self.pub.seq
        for ev in events:
            if ev[0] == "audio":
                self.publish(topic, m.Audio(stream=stream, seq=seq(topic), t=ev[1] / SR, sr=SR, wall0=st.wall0,
                                            pcm=ev[2].tobytes(), **st.hints))
            elif ev[0] == "start":
                self.counters["speech_segments"] += 1
                self.publish(topic, m.SpeechStart(stream=stream, seq=seq(topic), t=ev[1] / SR, wall0=st.wall0))
            else:
                self.publish(topic, m.SpeechEnd(stream=stream, seq=seq(topic), t=ev[1] / SR, wall0=st.wall0))

    def _close(self, stream: str, st: StreamGate, t: float | None, eos: bool = True) -> None:
        self._publish_events(stream, st, st.gate.close())
        if not eos:
            return
        end = t if t is not None else st.gate.received / SR
        self._forget(stream)
        self._end_unseen(stream, end)
        self.log.info("stream %s ended at t=%.2f (%d speech segment(s))", stream, end, st.gate.segments)

    def _end_unseen(self, stream: str, t: float | None) -> None:
        topic = m.speech_topic(stream)
        self.publish(topic, m.EndOfStream(stream=stream, seq=self.pub.seq(topic), t=t))
        self.pub.seq.forget(topic)
        self.note_ended(stream)

    def _forget(self, stream: str) -> None:
        self.streams.pop(stream, None)
        self.counters["streams_active"] = len(self.streams)

    def tick(self, now: float) -> None:
        self._ends(self.believer.expire(time.monotonic()))
        self.counters["unconfirmed_eos"] = self.believer.counts.unconfirmed_eos
        for stream, st in list(self.streams.items()):
            if st.gate.segments == 0 and now - st.last_seen > NO_SPEECH_IDLE_S:
                self._forget(stream)  # it never said anything: nothing to close
            elif now - st.last_seen > self.idle_timeout:
                self.log.info("stream %s idle for %.0fs: closing it", stream, now - st.last_seen)
                self._close(stream, st, None)

    def drain(self) -> None:
        """Close open speech segments (speech_end); the streams themselves go on."""
        for stream, st in list(self.streams.items()):
            self._close(stream, st, None, eos=False)


def register(sub) -> None:
    p = sub.add_parser("vad", help="gate audio.* down to speech on speech.* (Silero VAD)")
    add_actor_arguments(p, "vad")
    p.add_argument("--threshold", type=float, default=None, help="speech starts at this probability")
    p.add_argument("--neg-threshold", type=float, default=None, help="silence is below this probability")
    p.add_argument("--min-silence-ms", type=int, default=None, help="silence that ends a segment")
    p.add_argument("--speech-pad-ms", type=int, default=None, help="padding kept before and after speech")
    p.add_argument("--idle-timeout", type=float, default=None,
                   help="close a stream after this many seconds without a frame (default 30)")
    p.set_defaults(func=run)


def run(args) -> int:
    def build():
        cfg = actor_config(args, "vad", {
            "name": args.name, "threshold": args.threshold, "neg_threshold": args.neg_threshold,
            "min_silence_ms": args.min_silence_ms, "speech_pad_ms": args.speech_pad_ms,
            "idle_timeout": args.idle_timeout,
        })
        return VADActor(cfg.vad.name, cfg.bus, cfg.vad, cfg)

    return run_actor(build)
