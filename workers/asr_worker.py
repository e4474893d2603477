"""The ASR worker: one backend, many streams, commits on the transcript topic.

A worker loads its backend once (it reports ready only after), subscribes to
``speech.`` (audio gated by the VAD actor) or ``audio.`` (raw capture), and
keeps one :class:`asr_core.streaming.StreamingSession` per stream id, created
the first time the stream is seen and freed after ``eos`` or
``idle_timeout`` seconds without a message. When a stream decodes, flushes at
a pause, starts afresh and finishes is the session's rule (``min_chunk_size``,
``utterance_gap``; see :mod:`asr_core.streaming`); this module only moves
messages in and out and runs the sessions' steps.

Decodes run on ``concurrency`` threads (auto: one per core for backends that
allow concurrent calls), one step per stream at a time, pending flushes first,
then the oldest undecoded audio; the actor's own thread keeps receiving, so
audio that arrives during a decode waits in the stream's inbox. A backend
failure on one stream (any exception, MemoryError included) resets that
stream's processor and publishes an ``error`` on its transcript topic; other
streams go on.

Hostile but well-formed input stays contained: at most ``max_streams``
streams live at once (further new ones are refused and counted,
``streams_refused``), a stream's undecoded backlog is bounded
(``MAX_BACKLOG_S``), and a jump ahead in a stream's time restarts its buffer
instead of filling the hole with silence.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from asr_core.streaming import Step, StepResult, StreamingSession
from pipeline import messages as m

from .base import Actor, actor_config, add_actor_arguments, run_actor
from .decode_jobs import DecodeRunner

WARMUP_SECONDS = 1.0
MAX_BACKLOG_S = 120.0  # undecoded audio per stream beyond which new frames are dropped (counted)
BUSY_POLL_MS = 5  # loop period while decodes run on the pool, so results go out at once


@dataclass
class StreamState:
    """What the worker keeps per stream beside its session: the bus side."""

    stream: str
    session: StreamingSession
    wall0: float = 0.0
    last_seen: float = 0.0
    last_partial: str = ""
    commits: int = 0
    failures: int = 0

    @property
    def processor(self):
        return self.session.processor


class ASRWorker(Actor):
    role = "worker"

    def __init__(self, name, bus, wcfg, config=None):
        super().__init__(name, bus, config)
        self.wcfg = wcfg
        self.asr = None
        self.runner: DecodeRunner | None = None
        self.streams: dict[str, StreamState] = {}
        self.counters.update({
            "commits": 0, "decodes": 0, "stream_errors": 0, "streams_total": 0,
            "decode_seconds": 0.0, "decoded_audio_seconds": 0.0, "audio_seconds": 0.0, "rtf": 0.0,
        })
        self._ended_audio = 0.0  # audio seconds of streams that have ended
        self.drain_timeout = 60.0

    # -- setup -------------------------------------------------------------------
    def subscriptions(self):
        return ["speech." if self.wcfg.input == "speech" else "audio."]

    def _concurrency(self, backend_cls) -> int:
        if not getattr(backend_cls.capabilities, "concurrent", False):
            return 1
        if self.wcfg.concurrency > 0:
            return self.wcfg.concurrency
        return max(1, min(os.cpu_count() or 1, 4))

    def setup(self) -> None:
        import numpy as np

        from asr_core.registry import backend_class, create_backend

        w = self.wcfg
        t0 = time.monotonic()
        concurrency = self._concurrency(backend_class(w.backend))
        options = dict(w.options)
        if concurrency > 1:
            options.setdefault("num_workers", concurrency)  # let that many calls run at once
        self.asr = create_backend(
            w.backend, w.language, w.model, cache_dir=w.cache_dir, model_dir=w.model_dir, task=w.task, **options,
        )
        # one throw-away decode so the first real one is not slower than the rest
        self.asr.transcribe(np.zeros(int(WARMUP_SECONDS * 16000), dtype=np.float32))
        self.runner = DecodeRunner(concurrency)
        self.log.info("backend %s loaded in %.1fs; %d decode thread(s)", self.asr.describe(),
                      time.monotonic() - t0, concurrency)

    def teardown(self) -> None:
        if self.runner is not None:
            self.runner.close()

    def info(self) -> dict:
        d = self.asr.describe() if self.asr is not None else {"backend": self.wcfg.backend, "model": self.wcfg.model}
        d["language"] = self.wcfg.language
        d["rtf"] = self.counters["rtf"]
        d["concurrency"] = self.runner.concurrency if self.runner else 0
        d["streams"] = sorted(self.streams)
        return d

    def _new_processor(self):
        from asr_core.online import OnlineASRProcessor

        return OnlineASRProcessor(self.asr, options=self.wcfg.streaming_options())

    def _stream(self, msg: m.Message) -> StreamState | None:
        """The stream's state (made on its first message); None when refused (``max_streams`` live)."""
        st = self.streams.get(msg.stream)
        if st is None:
            if not self.admit_stream(msg.stream, len(self.streams), self.wcfg.max_streams):
                return None
            st = StreamState(msg.stream, StreamingSession(self._new_processor(), self.wcfg.schedule()))
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
                st.session.push_pause()
        elif isinstance(msg, m.SpeechStart):
            self._stream(msg)
        elif isinstance(msg, m.EndOfStream):
            st = self.streams.get(msg.stream)
            if st is not None:
                st.session.push_end()
            elif not self.stopping:  # a stream without speech: nothing to flush, but say it ended
                topic = m.transcript_topic(self.name, msg.stream)
                self.publish(topic, m.EndOfStream(stream=msg.stream, seq=self.pub.seq(topic), t=msg.t,
                                                  worker=self.name))

    def _audio(self, msg: m.Audio) -> None:
        from asr_core.audio import pcm16_to_float

        st = self._stream(msg)
        if st is None:
            return
        if not st.session.accepts(msg.t):
            self.limited.warning("late", "stream %s: frame at %.2fs is late, dropped", msg.stream, msg.t)
            self.counters["dropped"] += 1
            return
        if st.processor.undecoded_seconds > MAX_BACKLOG_S:  # far more than decoding keeps up with
            self.limited.warning("backlog", "stream %s: %.0fs of audio not decoded yet, frame dropped",
                                 msg.stream, st.processor.undecoded_seconds)
            self.counters["dropped"] += 1
            return
        st.session.push_audio(msg.t, pcm16_to_float(msg.pcm))

    # -- scheduling ----------------------------------------------------------------
    def tick(self, now: float) -> None:
        self._collect()
        while self.runner.free > 0:
            st, step = self._next_step()
            if st is None:
                break
            st.session.start(step)
            self.runner.submit(st.stream, st.session, step)
            if self.runner.concurrency == 1:
                break  # inline: one decode per loop turn, so messages keep flowing
        self._collect()
        self.poll_ms = BUSY_POLL_MS if self.runner.running else 50
        for st in list(self.streams.values()):
            if now - st.last_seen > self.wcfg.idle_timeout and not st.session.end_requested:
                self.log.info("stream %s idle for %.0fs: flushing and freeing it", st.stream, now - st.last_seen)
                st.session.push_end()

    def _collect(self) -> None:
        for stream, result in self.runner.done():
            st = self.streams.get(stream)
            if st is not None:
                self._apply(st, result)

    def _next_step(self) -> tuple[StreamState | None, Step | None]:
        """The stream whose step is most urgent: flushes and finishes first, then the oldest undecoded audio."""
        best, best_key, best_step = None, None, None
        # each stream's share of the decode threads: with spare capacity its chunks stay small
        share = self.runner.concurrency / max(1, len(self.streams))
        for st in self.streams.values():
            step = st.session.due(share)
            if step is None:
                continue
            key = st.session.priority()
            if best_key is None or key < best_key:
                best, best_key, best_step = st, key, step
        return best, best_step

    def _apply(self, st: StreamState, result: StepResult) -> None:
        """A finished step's outcome, on the actor's thread: publish, then feed on."""
        c = self.counters
        c["decodes"] += result.decodes
        c["decode_seconds"] = round(c["decode_seconds"] + result.decode_seconds, 3)
        c["decoded_audio_seconds"] = round(c["decoded_audio_seconds"] + result.decoded_audio_seconds, 3)
        commit = st.session.complete(result)
        if result.error is not None:
            self._fail(st, result.error)
        else:
            self._publish_commit(st, commit)
            if st.session.ended:
                self._end_stream(st)
                return
            if self.wcfg.partials:
                self._publish_partial(st)
        self._update_rtf()

    def _fail(self, st: StreamState, exc: BaseException) -> None:
        st.failures += 1
        self.counters["stream_errors"] += 1
        self.log.error("stream %s: backend failed (%s: %s); resetting its processor",
                       st.stream, type(exc).__name__, exc)
        message = f"{type(exc).__name__}: {exc}"[:500]
        topic = m.transcript_topic(self.name, st.stream)
        self.publish(topic, m.Error(stream=st.stream, seq=self.pub.seq(topic), message=message, worker=self.name))
        self._ended_audio += st.processor.stats.audio_seconds
        st.session.restart(self._new_processor())  # go on from the next audio
        if st.session.ended:
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
        self.publish(topic, m.EndOfStream(stream=st.stream, seq=self.pub.seq(topic), t=st.session.received_until,
                                          worker=self.name))
        self._ended_audio += st.processor.stats.audio_seconds
        self.streams.pop(st.stream, None)
        self.counters["streams_active"] = len(self.streams)
        self.log.info("stream %s ended: %d commit(s), rtf %.2f", st.stream, st.commits, st.processor.stats.rtf)

    def _update_rtf(self) -> None:
        """Decode seconds per second of audio received, over all streams so far."""
        audio = self._ended_audio + sum(st.processor.stats.audio_seconds for st in self.streams.values())
        self.counters["audio_seconds"] = round(audio, 3)
        self.counters["rtf"] = round(self.counters["decode_seconds"] / audio, 3) if audio else 0.0

    # -- shutdown ----------------------------------------------------------------------
    def drain(self) -> None:
        """Every stream ends: its tail is decoded, its commits and eos published (by tick)."""
        for st in self.streams.values():
            st.session.push_end()

    def drained(self) -> bool:
        if self.streams and self.runner.running:
            self.runner.wait(0.05)
        return not self.streams


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
        cfg = actor_config(args, "workers", {
            "backend": args.backend, "model": args.model, "model_dir": args.model_dir,
            "language": args.language, "min_chunk_size": args.min_chunk_size, "input": args.input,
        }, default_name="asr", first=True)
        wcfg = cfg.worker(args.name) if args.name else cfg.workers[0]
        return ASRWorker(wcfg.name, cfg.bus, wcfg, cfg)

    return run_actor(build)
