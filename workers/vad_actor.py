"""The VAD actor: ``audio.<stream>`` in, speech only out on ``speech.<stream>``.

One :class:`asr_core.speech_gate.SpeechGate` (Silero VAD + segmenter) per
stream, created when the stream is first seen and freed on ``eos`` or after
``idle_timeout`` seconds without a frame. For each stream it publishes, in
order: ``speech_start`` (t), the audio inside the segment (with its
``speech_pad_ms`` pre-roll, cut sample-exact at the start and end, each frame
with its own ``t``), ``speech_end`` (t); and ``eos`` after closing an open
segment. ``wall0`` is copied from the latest input frame, and so are the source's optional
``language`` and ``task`` (what it asks of the workers).

A frame whose ``t`` goes backwards is dropped and counted (``out_of_order``).
At most ``vad.max_streams`` streams are live at once: frames of further new
streams are refused and counted (``streams_refused``) until one ends or
idles out.
A stream that goes idle is closed as if it had sent ``eos`` (so the workers
flush); if it comes back it starts over (its ``seq`` restarts at 0).
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

from .base import Actor, actor_config, add_actor_arguments, run_actor


@dataclass
class StreamGate:
    gate: SpeechGate
    wall0: float = 0.0
    last_seen: float = 0.0
    hints: dict = field(default_factory=dict)  # the source's language and task, passed on to the workers


class VADActor(Actor):
    role = "vad"

    def __init__(self, name, bus, vcfg: VADConfig, config=None):
        super().__init__(name, bus, config)
        self.vcfg = vcfg
        self.idle_timeout = vcfg.idle_timeout
        self.streams: dict[str, StreamGate] = {}
        self.counters.update({"speech_segments": 0, "out_of_order": 0, "streams_total": 0})
        self._model_path = None
        self._cpu = 0.0
        self._audio = 0.0

    def subscriptions(self):
        return ["audio."]

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
        if isinstance(msg, m.Audio):
            self._audio_frame(msg)
        elif isinstance(msg, m.EndOfStream):
            st = self.streams.get(msg.stream)
            if st is not None:
                self._close(msg.stream, st, msg.t)

    def _audio_frame(self, msg: m.Audio) -> None:
        st = self.streams.get(msg.stream)
        n = to_samples(msg.t)
        if st is None:
            if not self.admit_stream(msg.stream, len(self.streams), self.vcfg.max_streams):
                return
            gate = SpeechGate(self._make_segmenter, self.vcfg.speech_pad_ms, first_sample=n)
            st = self.streams[msg.stream] = StreamGate(gate)
            self.counters["streams_total"] += 1
            self.counters["streams_active"] = len(self.streams)
            self.log.info("new stream %s at t=%.2f", msg.stream, msg.t)
        st.wall0 = msg.wall0
        st.hints = {k: v for k, v in (("language", msg.language), ("task", msg.task)) if v is not None}
        st.last_seen = time.monotonic()
        c0 = time.process_time()
        events = st.gate.push(n, np.frombuffer(msg.pcm, dtype="<i2"))
        self._cpu += time.process_time() - c0
        self._audio += msg.duration
        if events is None:
            self.counters["out_of_order"] += 1
            self.limited.warning("backwards", "stream %s: frame at t=%.3f goes backwards (expected %.3f), dropped",
                                 msg.stream, msg.t, st.gate.received / SR)
            return
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
        topic = m.speech_topic(stream)
        end = t if t is not None else st.gate.received / SR
        self.publish(topic, m.EndOfStream(stream=stream, seq=self.pub.seq(topic), t=end))
        self.pub.seq.forget(topic)
        del self.streams[stream]
        self.counters["streams_active"] = len(self.streams)
        self.log.info("stream %s ended at t=%.2f (%d speech segment(s))", stream, end, st.gate.segments)

    def tick(self, now: float) -> None:
        for stream, st in list(self.streams.items()):
            if now - st.last_seen > self.idle_timeout:
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
