"""The ASR worker: one backend, many streams, commits on the transcript topic.

A worker loads its backend once (it reports ready only after), subscribes to
``speech.`` (audio gated by the VAD actor) or ``audio.`` (raw capture), and
keeps one :class:`asr_core.online.OnlineASRProcessor` per stream id, created
the first time the stream is seen and freed after ``eos`` or
``idle_timeout`` seconds without a message.

Scheduling is single-threaded and fair: each loop iteration runs at most one
decode, for the stream whose undecoded audio is oldest, so messages keep
flowing and heartbeats stay regular. A ``speech_end`` flushes its utterance
first (decoding the tail, then committing everything), which is what keeps
latency low at the end of sentences. A backend failure on one stream
(any exception, MemoryError included) resets that stream's processor and
publishes an ``error`` on its transcript topic; other streams go on.

Hostile but well-formed input stays contained: at most ``max_streams``
streams live at once (further new ones are refused and counted,
``streams_refused``), a stream's undecoded backlog is bounded
(``MAX_BACKLOG_S``), and a jump far ahead in a stream's time flushes it
instead of filling the hole with silence.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from pipeline import messages as m

from .base import Actor, actor_config, add_actor_arguments, run_actor

WARMUP_SECONDS = 1.0
MAX_JUMP_S = 10.0  # a forward jump in a stream's audio up to this is filled with silence; beyond, flush first
MAX_BACKLOG_S = 120.0  # undecoded audio per stream beyond which new frames are dropped (counted)


@dataclass
class StreamState:
    stream: str
    processor: object
    wall0: float = 0.0
    last_seen: float = 0.0
    flush_pending: bool = False
    eos_pending: bool = False
    last_partial: str = ""
    commits: int = 0
    failures: int = 0
    received_until: float = 0.0  # stream time just after the last received sample
    extra: dict = field(default_factory=dict)


class ASRWorker(Actor):
    role = "worker"

    def __init__(self, name, bus, wcfg, config=None):
        super().__init__(name, bus, config)
        self.wcfg = wcfg
        self.asr = None
        self.streams: dict[str, StreamState] = {}
        self.counters.update({"commits": 0, "decodes": 0, "stream_errors": 0, "streams_total": 0})
        self._decode_seconds = 0.0
        self._audio_seconds = 0.0
        self.drain_timeout = 60.0

    # -- setup -------------------------------------------------------------------
    def subscriptions(self):
        return ["speech." if self.wcfg.input == "speech" else "audio."]

    def setup(self) -> None:
        import numpy as np

        from asr_core.registry import create_backend

        w = self.wcfg
        t0 = time.monotonic()
        self.asr = create_backend(
            w.backend, w.language, w.model, cache_dir=w.cache_dir, model_dir=w.model_dir,
            task=w.task, **dict(w.options),
        )
        # one throw-away decode so the first real one is not slower than the rest
        self.asr.transcribe(np.zeros(int(WARMUP_SECONDS * 16000), dtype=np.float32))
        self.log.info("backend %s loaded in %.1fs", self.asr.describe(), time.monotonic() - t0)

    def info(self) -> dict:
        d = self.asr.describe() if self.asr is not None else {"backend": self.wcfg.backend, "model": self.wcfg.model}
        d["rtf"] = self._rtf()
        d["streams"] = sorted(self.streams)
        return d

    def _new_processor(self):
        from asr_core.online import OnlineASRProcessor, StreamingOptions

        w = self.wcfg
        options = StreamingOptions(buffer_trimming=w.buffer_trimming, buffer_trimming_sec=w.buffer_trimming_sec)
        return OnlineASRProcessor(self.asr, options=options)

    def _stream(self, msg: m.Message) -> StreamState | None:
        """The stream's state (made on its first message); None when refused (``max_streams`` live)."""
        st = self.streams.get(msg.stream)
        if st is None:
            if not self.admit_stream(msg.stream, len(self.streams), self.wcfg.max_streams):
                return None
            st = StreamState(msg.stream, self._new_processor())
            self.streams[msg.stream] = st
            self.counters["streams_total"] += 1
            self.counters["streams_active"] = len(self.streams)
            self.log.info("new stream %s", msg.stream)
        st.last_seen = time.monotonic()
        wall0 = getattr(msg, "wall0", None)
        if wall0:
            st.wall0 = wall0
        return st

    # -- messages ----------------------------------------------------------------
    def handle(self, topic: str, msg: m.Message) -> None:
        if self.stopping and not isinstance(msg, m.EndOfStream):
            return
        if isinstance(msg, m.Audio):
            self._audio(msg)
        elif isinstance(msg, m.SpeechEnd):
            st = self._stream(msg)
            if st is not None:
                st.flush_pending = True
        elif isinstance(msg, m.SpeechStart):
            self._stream(msg)
        elif isinstance(msg, m.EndOfStream):
            st = self.streams.get(msg.stream)
            if st is not None:
                st.eos_pending = True
            elif not self.stopping:  # a stream without speech: nothing to flush, but say it ended
                topic = m.transcript_topic(self.name, msg.stream)
                self.publish(topic, m.EndOfStream(stream=msg.stream, seq=self.pub.seq(topic), t=msg.t, worker=self.name))

    def _audio(self, msg: m.Audio) -> None:
        from asr_core.audio import pcm16_to_float

        st = self._stream(msg)
        if st is None:
            return
        if msg.t + 1e-3 < st.received_until:
            self.limited.warning("late", "stream %s: frame at %.2fs is late, dropped", msg.stream, msg.t)
            self.counters["dropped"] += 1
            return
        proc = st.processor
        if proc.undecoded_seconds > MAX_BACKLOG_S:  # far more than decoding keeps up with: keep memory bounded
            self.limited.warning("backlog", "stream %s: %.0fs of audio not decoded yet, frame dropped",
                                 msg.stream, proc.undecoded_seconds)
            self.counters["dropped"] += 1
            return
        if proc.buffer_duration and msg.t - st.received_until > MAX_JUMP_S:
            # audio far ahead of the buffer (frames lost, or a forged t): commit the buffer and restart it at
            # the new time, rather than filling the hole with silence
            self.limited.warning("jump", "stream %s: audio jumps %.1fs ahead; flushing", msg.stream,
                                 msg.t - st.received_until)
            st.flush_pending = True
            self._work(st)
            st = self.streams.get(msg.stream)
            if st is None:
                return
        st.processor.insert_audio_chunk(pcm16_to_float(msg.pcm), t=msg.t)
        st.received_until = msg.t + msg.duration

    # -- scheduling ----------------------------------------------------------------
    def tick(self, now: float) -> None:
        st = self._next_job()
        if st is not None:
            self._work(st)
        for st in list(self.streams.values()):
            if now - st.last_seen > self.wcfg.idle_timeout and not st.eos_pending:
                self.log.info("stream %s idle for %.0fs: flushing and freeing it", st.stream, now - st.last_seen)
                st.eos_pending = True

    def _next_job(self) -> StreamState | None:
        best, best_key = None, None
        for st in self.streams.values():
            proc = st.processor
            if st.flush_pending or st.eos_pending:
                key = (0, -proc.undecoded_seconds)
            elif proc.undecoded_seconds >= self.wcfg.min_chunk_size:
                key = (1, -proc.undecoded_seconds)
            else:
                continue
            if best_key is None or key < best_key:
                best, best_key = st, key
        return best

    def _work(self, st: StreamState) -> None:
        proc = st.processor
        decode_before = proc.stats.decode_seconds
        try:
            if st.flush_pending or st.eos_pending:
                st.flush_pending = False
                commit = proc.finish()
            else:
                commit = proc.process_iter()
        except Exception as exc:  # noqa: BLE001 - one stream's failure stays with it
            self._fail(st, exc)
            return
        self._decode_seconds += proc.stats.decode_seconds - decode_before
        self.counters["decodes"] = self.counters.get("decodes", 0) + 1
        self._publish_commit(st, commit)
        if st.eos_pending:
            self._end_stream(st)
        elif self.wcfg.partials:
            self._publish_partial(st)

    def _fail(self, st: StreamState, exc: BaseException) -> None:
        st.failures += 1
        self.counters["stream_errors"] += 1
        self.log.error("stream %s: backend failed (%s: %s); resetting its processor", st.stream, type(exc).__name__, exc)
        message = f"{type(exc).__name__}: {exc}"[:500]
        topic = m.transcript_topic(self.name, st.stream)
        self.publish(topic, m.Error(stream=st.stream, seq=self.pub.seq(topic), message=message, worker=self.name))
        offset = st.received_until
        st.processor = self._new_processor()
        st.processor.init(offset)
        st.flush_pending = False
        if st.eos_pending:
            self._end_stream(st)

    # -- output ----------------------------------------------------------------------
    def _publish_commit(self, st: StreamState, commit) -> None:
        if not commit or commit.beg is None:
            return
        desc = self.asr.describe()
        topic = m.transcript_topic(self.name, st.stream)
        msg = m.Commit(
            stream=st.stream, seq=self.pub.seq(topic), beg=float(commit.beg), end=float(commit.end),
            text=commit.text, words=[[float(b), float(e), w] for b, e, w in commit.words],
            worker=self.name, backend=desc.get("backend", ""), model=str(desc.get("model", "")),
            emitted=time.time(), wall0=st.wall0,
        )
        self.publish(topic, msg)
        st.commits += 1
        st.last_partial = ""
        self.counters["commits"] += 1

    def _publish_partial(self, st: StreamState) -> None:
        part = st.processor.partial()
        if part.text == st.last_partial:
            return
        st.last_partial = part.text
        topic = m.partial_topic(self.name, st.stream)
        self.publish(topic, m.Partial(
            stream=st.stream, seq=self.pub.seq(topic), beg=part.beg, end=part.end, text=part.text,
            worker=self.name, emitted=time.time(), wall0=st.wall0,
        ))

    def _end_stream(self, st: StreamState) -> None:
        topic = m.transcript_topic(self.name, st.stream)
        self.publish(topic, m.EndOfStream(stream=st.stream, seq=self.pub.seq(topic), t=st.received_until, worker=self.name))
        self._audio_seconds += st.processor.stats.audio_seconds
        self.streams.pop(st.stream, None)
        self.counters["streams_active"] = len(self.streams)
        self.log.info("stream %s ended: %d commit(s), rtf %.2f", st.stream, st.commits, st.processor.stats.rtf)

    # -- shutdown ----------------------------------------------------------------------
    def drain(self) -> None:
        """Flush every stream: decode its tail, publish the commits and eos."""
        for st in list(self.streams.values()):
            st.eos_pending = True
        while self.streams:
            st = next(iter(self.streams.values()))
            self._work(st)

    def drained(self) -> bool:
        return not self.streams

    def _rtf(self) -> float:
        """Decode seconds per second of audio received, over all streams so far."""
        audio = self._audio_seconds + sum(st.processor.stats.audio_seconds for st in self.streams.values())
        return round(self._decode_seconds / audio, 3) if audio else 0.0


def register(sub) -> None:
    p = sub.add_parser("worker", help="run an ASR worker (one backend, many streams)")
    add_actor_arguments(p, "asr")
    p.add_argument("--backend", default=None, help="backend name (overrides the config)")
    p.add_argument("--model", default=None, help="model name (overrides the config)")
    p.add_argument("--model-dir", default=None, help="local model folder (overrides the config)")
    p.add_argument("--language", default=None, help="language code or auto (overrides the config)")
    p.add_argument("--min-chunk-size", type=float, default=None, help="seconds of new audio per decode")
    p.add_argument("--input", choices=["speech", "audio"], default=None, help="consume speech.* (VAD) or audio.*")
    p.set_defaults(func=run)


def run(args) -> int:
    def build():
        cfg = actor_config(args)
        if cfg.workers:
            wcfg = cfg.worker(args.name) if args.name else cfg.workers[0]
        else:
            from pipeline.config import WorkerConfig

            wcfg = WorkerConfig(name=args.name or "asr")
        overrides = {
            "backend": args.backend, "model": args.model, "model_dir": args.model_dir,
            "language": args.language, "min_chunk_size": args.min_chunk_size, "input": args.input,
        }
        wcfg = dataclasses.replace(wcfg, **{k: v for k, v in overrides.items() if v is not None})
        return ASRWorker(wcfg.name, cfg.bus, wcfg, cfg)

    return run_actor(build)
