"""The ASR worker: one backend, many streams, commits on the transcript topic.

A worker loads its backend once (it reports ready only after), subscribes to
``speech.`` (audio gated by the VAD actor) or ``audio.`` (raw capture), and
keeps one :class:`asr_core.online.OnlineASRProcessor` per stream id, created
the first time the stream is seen and freed after ``eos`` or
``idle_timeout`` seconds without a message.

When to decode:

* every ``min_chunk_size`` seconds of new audio, the next hypothesis
  (LocalAgreement commits what two consecutive ones agree on; a word the
  model is sure of commits from its first hypothesis once it ended
  ``early_commit_sec`` before the end of the audio, and any word once it
  ended ``settle_sec`` before);
* at a ``speech_end`` (a pause the VAD heard), a *flush*: the tail is decoded
  and every word before the pause is committed at once, while the audio
  stays in the buffer as context for what is said next;
* when speech resumes more than ``utterance_gap`` seconds later, the buffer
  starts afresh (everything before was already committed at the pause);
* at ``eos``, idle timeout or shutdown, a *finish*: decode, commit, free.

Decodes run on ``concurrency`` threads (auto: one per core for backends that
allow concurrent calls), one job per stream at a time, the streams with the
oldest undecoded audio first; the actor's own thread keeps receiving, so
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

import dataclasses
import os
import time
from collections import deque
from dataclasses import dataclass, field

from pipeline import messages as m

from .base import Actor, actor_config, add_actor_arguments, run_actor
from .decode_jobs import FINISH, FLUSH, ITER, DecodeRunner, JobResult

WARMUP_SECONDS = 1.0
MAX_BACKLOG_S = 120.0  # undecoded audio per stream beyond which new frames are dropped (counted)
BUSY_POLL_MS = 5  # loop period while decodes run on the pool, so results go out at once
MARK_FLUSH, MARK_EOS = "flush", "eos"


def streaming_options(w):
    """The streaming processor's options for a worker's config (a :class:`pipeline.config.WorkerConfig`)."""
    from asr_core.online import StreamingOptions

    return StreamingOptions(
        buffer_trimming=w.buffer_trimming, buffer_trimming_sec=w.buffer_trimming_sec, settle_sec=w.settle_sec,
        early_commit_sec=w.early_commit_sec, early_commit_prob=w.early_commit_prob,
    )


@dataclass
class StreamState:
    stream: str
    processor: object
    wall0: float = 0.0
    last_seen: float = 0.0
    # audio frames (t, samples) and marks (MARK_FLUSH, MARK_EOS) not yet given
    # to the processor: it may be busy decoding on another thread
    inbox: deque = field(default_factory=deque)
    job: str | None = None  # the next job this stream needs (FLUSH / FINISH), if any
    eos: bool = False  # the stream ends after its FINISH job
    busy: bool = False
    last_partial: str = ""
    commits: int = 0
    failures: int = 0
    received_until: float = 0.0  # stream time just after the last received sample


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

        return OnlineASRProcessor(self.asr, options=streaming_options(self.wcfg))

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
                st.inbox.append(MARK_FLUSH)
                self._feed(st)
        elif isinstance(msg, m.SpeechStart):
            self._stream(msg)
        elif isinstance(msg, m.EndOfStream):
            st = self.streams.get(msg.stream)
            if st is not None:
                st.inbox.append(MARK_EOS)
                self._feed(st)
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
        if st.processor.undecoded_seconds > MAX_BACKLOG_S:  # far more than decoding keeps up with
            self.limited.warning("backlog", "stream %s: %.0fs of audio not decoded yet, frame dropped",
                                 msg.stream, st.processor.undecoded_seconds)
            self.counters["dropped"] += 1
            return
        st.inbox.append((msg.t, pcm16_to_float(msg.pcm)))
        st.received_until = msg.t + msg.duration
        self._feed(st)

    def _feed(self, st: StreamState) -> None:
        """Hand the inbox to the processor, up to the next mark or needed job (never while busy)."""
        proc = st.processor
        while st.inbox and not st.busy and st.job is None:
            item = st.inbox[0]
            if item == MARK_FLUSH:
                st.inbox.popleft()
                if proc.buffer_duration:
                    st.job = FLUSH
                continue
            if item == MARK_EOS:
                st.inbox.popleft()
                st.job, st.eos = FINISH, True
                continue
            t, samples = item
            if proc.buffer_duration and t - proc.buffer_end > self.wcfg.utterance_gap:
                # speech resumes after a long pause: start a fresh buffer; when
                # something is still unconfirmed, finish the old one first
                if proc.hyp.pending() or proc.undecoded_seconds > 0.05:
                    st.job = FINISH
                    continue
                proc.init(t)
            st.inbox.popleft()
            proc.insert_audio_chunk(samples, t=t)

    # -- scheduling ----------------------------------------------------------------
    def tick(self, now: float) -> None:
        for stream, result in self.runner.done():
            st = self.streams.get(stream)
            if st is not None:
                self._apply(st, result)
        while self.runner.free > 0:
            st, kind = self._next_job()
            if st is None:
                break
            st.busy = True
            st.job = None
            self.runner.submit(st.stream, st.processor, kind)
            if self.runner.concurrency == 1:
                break  # inline: one decode per loop turn, so messages keep flowing
        for stream, result in self.runner.done():
            st = self.streams.get(stream)
            if st is not None:
                self._apply(st, result)
        self.poll_ms = BUSY_POLL_MS if self.runner.running else 50
        for st in list(self.streams.values()):
            if now - st.last_seen > self.wcfg.idle_timeout and not st.eos and MARK_EOS not in st.inbox:
                self.log.info("stream %s idle for %.0fs: flushing and freeing it", st.stream, now - st.last_seen)
                st.inbox.append(MARK_EOS)
                self._feed(st)

    def _next_job(self) -> tuple[StreamState | None, str | None]:
        best, best_key, best_kind = None, None, None
        for st in self.streams.values():
            if st.busy:
                continue
            undecoded = st.processor.undecoded_seconds
            if st.job is not None:
                key, kind = (0, -undecoded), st.job
            elif undecoded >= self.wcfg.min_chunk_size:
                key, kind = (1, -undecoded), ITER
            else:
                continue
            if best_key is None or key < best_key:
                best, best_key, best_kind = st, key, kind
        return best, best_kind

    def _apply(self, st: StreamState, result: JobResult) -> None:
        """A finished job's outcome, on the actor's thread: publish, then feed on."""
        st.busy = False
        c = self.counters
        c["decodes"] += result.decodes
        c["decode_seconds"] = round(c["decode_seconds"] + result.decode_seconds, 3)
        c["decoded_audio_seconds"] = round(c["decoded_audio_seconds"] + result.decoded_audio_seconds, 3)
        if result.error is not None:
            self._fail(st, result.error)
        else:
            self._publish_commit(st, result.commit)
            if st.eos and result.kind == FINISH:
                self._end_stream(st)
                return
            if self.wcfg.partials:
                self._publish_partial(st)
        self._feed(st)
        self._update_rtf()

    def _fail(self, st: StreamState, exc: BaseException) -> None:
        st.failures += 1
        self.counters["stream_errors"] += 1
        self.log.error("stream %s: backend failed (%s: %s); resetting its processor", st.stream, type(exc).__name__, exc)
        message = f"{type(exc).__name__}: {exc}"[:500]
        topic = m.transcript_topic(self.name, st.stream)
        self.publish(topic, m.Error(stream=st.stream, seq=self.pub.seq(topic), message=message, worker=self.name))
        self._ended_audio += st.processor.stats.audio_seconds
        st.processor = self._new_processor()
        queued = [x[0] for x in st.inbox if isinstance(x, tuple)]
        st.processor.init(queued[0] if queued else st.received_until)  # go on from the next audio
        st.job = None
        if st.eos:
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
            if not st.eos and MARK_EOS not in st.inbox:
                st.inbox.append(MARK_EOS)
                self._feed(st)

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
