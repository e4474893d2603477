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

Hostile but well-formed input stays contained (the rules are the session's,
:mod:`asr_core.streaming` and :mod:`asr_core.stream_clock`; this module counts):

* a frame that does not continue its stream's time is set aside (``out_of_step``),
  a ``wall0`` that jumps is not taken (``wall0_ignored``);
* a ``speech_end`` that is not where the stream's audio ends, or that the audio
  right after it contradicts, changes nothing (``marks_ignored``,
  ``pauses_cancelled``);
* an ``eos`` is believed only when the heartbeat of whoever announced the stream
  (the VAD) lists it as ended (:mod:`pipeline.roster`; ``unconfirmed_eos``), and the
  end of a stream this worker never saw is answered only for a stream someone
  announced;
* at most ``max_streams`` streams live at once: when all are taken, a new stream may take
  the slot of one that was never decoded (:mod:`workers.admission`; ``streams_evicted``),
  else it is refused (``streams_refused``); a stream's undecoded backlog is bounded
  (``MAX_BACKLOG_S``).

What was lost is said on the stream's transcript topic with an ``error``: when this
worker joins a stream mid-speech (it was restarted), when the VAD restarted under a
live stream, when messages of the stream were lost on the way (``seq`` gaps).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from asr_core.streaming import Step, StepResult, StreamingSession
from pipeline import messages as m
from pipeline.config import check_backend_options
from pipeline.errors import ConfigError
from pipeline.roster import Believer

from .admission import Admission, Slot
from .base import Actor, actor_config, add_actor_arguments, run_actor
from .decode_jobs import DecodeRunner
from .stream_accounting import CLOCK_COUNTERS, StreamAccounting

WARMUP_SECONDS = 1.0
MAX_BACKLOG_S = 120.0  # undecoded audio per stream beyond which new frames are dropped (counted)
BUSY_POLL_MS = 5  # loop period while decodes run on the pool, so results go out at once
PAUSE_HOLD_MARGIN_S = 0.15  # automatic pause_hold: vad.min_silence_ms plus a frame and this margin


@dataclass
class StreamState:
    """What the worker keeps per stream beside its session: the bus side."""

    stream: str
    session: StreamingSession
    last_seen: float = 0.0
    last_partial: str = ""
    commits: int = 0
    failures: int = 0
    frames: int = 0  # messages received
    lost: int = 0  # messages lost on the way, not yet reported
    lost_reported: float = 0.0

    @property
    def processor(self):
        return self.session.processor

    @property
    def wall0(self) -> float:
        return self.session.wall0


class ASRWorker(StreamAccounting, Actor):
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
            "marks_ignored": 0, "pauses_cancelled": 0, "unconfirmed_eos": 0, "streams_evicted": 0,
            "streams_joined": 0, "upstream_restarts": 0, **{c: 0 for c in CLOCK_COUNTERS.values()},
        })
        self.believer = Believer(bus.heartbeat_interval)
        self.admission = Admission()
        self._gone_counts: dict[str, int] = {}  # session counts of streams that have left
        self._schedule = self._with_pause_hold(wcfg.schedule(), config)
        self._ended_audio = 0.0  # audio seconds of streams that have ended
        self.drain_timeout = 60.0

    def _with_pause_hold(self, schedule, config):
        """``pause_hold`` when the config leaves it automatic: with CURVE only the VAD's key may publish pause
        marks (none needed); else long enough for the VAD to release audio it held in a dip of the speech."""
        import dataclasses

        if self.wcfg.pause_hold is not None:
            return dataclasses.replace(schedule, pause_hold=self.wcfg.pause_hold)
        if self.bus.security.enabled:
            return dataclasses.replace(schedule, pause_hold=0.0)
        min_silence = (config.vad.min_silence_ms if config is not None else 300) / 1000
        return dataclasses.replace(schedule, pause_hold=min_silence + PAUSE_HOLD_MARGIN_S)

    # -- setup -------------------------------------------------------------------
    def subscriptions(self):
        return ["speech." if self.wcfg.input == "speech" else "audio.", "status."]

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
        try:
            self.asr = create_backend(
                w.backend, w.language, w.model, cache_dir=w.cache_dir, model_dir=w.model_dir, task=w.task, **options,
            )
        except (TypeError, ValueError) as exc:  # an option value the backend cannot take
            raise ConfigError(f"worker {self.name}: options {dict(w.options)}: {exc}") from None
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

    def _admit(self, stream: str) -> bool:
        """Room for a new stream: a free slot, else that of one that was never decoded (workers.admission)."""
        if len(self.streams) >= self.wcfg.max_streams:
            now = time.monotonic()
            slots = {s: Slot(st.last_seen, st.frames, st.processor.stats.decodes == 0 and st.session.running is None)
                     for s, st in self.streams.items()}
            victim = self.admission.victim(stream, slots, now)
            if victim is not None:
                self._gone(self.streams.pop(victim))
                self.counters["streams_evicted"] += 1
                self.limited.warning("evicted", "stream %s takes the slot of %s (never decoded, quiet)", stream,
                                     victim)
        return self.admit_stream(stream, len(self.streams), self.wcfg.max_streams)

    def _stream(self, msg: m.Message) -> StreamState | None:
        """The stream's state (made on its first message); None when refused (``max_streams`` live)."""
        st = self.streams.get(msg.stream)
        if st is None:
            if not self._admit(msg.stream):
                return None
            session = StreamingSession(self._new_processor(), self._schedule, now=time.monotonic)
            st = StreamState(msg.stream, session)
            self.streams[msg.stream] = st
            self.counters["streams_total"] += 1
            self.counters["streams_active"] = len(self.streams)
            self.announce()  # subscribers believe its transcript once a heartbeat lists it
            self.log.info("new stream %s", msg.stream)
            if msg.seq > 0 and not any(s == msg.stream for s, _ in self._ended):  # not one this run ended
                self.counters["streams_joined"] += 1
                self._report(st, f"worker {self.name} started on this stream while it was live (at "
                                 f"{getattr(msg, 't', 0.0):.2f}s): what came before did not reach this run of the "
                                 "worker; anything an earlier run had not committed is lost")
        st.last_seen = time.monotonic()
        st.frames += 1
        return st

    # -- messages ----------------------------------------------------------------
    def handle(self, topic: str, msg: m.Message) -> None:
        if isinstance(msg, m.Heartbeat):
            self._ends(self.believer.heartbeat(msg, time.monotonic()))
            return
        if self.stopping and not isinstance(msg, m.EndOfStream):
            return
        if not isinstance(msg, m.EndOfStream):
            self._note_losses(msg)
        if isinstance(msg, m.Audio):
            self._audio(msg)
        elif isinstance(msg, m.SpeechEnd):
            st = self._stream(msg)
            if st is not None:
                st.session.push_pause(msg.t)
        elif isinstance(msg, m.SpeechStart):
            st = self._stream(msg)
            if st is not None:
                st.session.push_start(msg.t)
        elif isinstance(msg, m.EndOfStream):
            self._ends(self.believer.offer(topic, msg, time.monotonic()))

    def _ends(self, believed) -> None:
        for _topic, msg in believed:
            st = self.streams.get(msg.stream)
            if st is not None:
                st.session.push_end()
            elif not self.stopping and self.believer.roster.announced(msg.stream, time.monotonic()):
                # a stream without speech: nothing to flush, but say it ended
                topic = m.transcript_topic(self.name, msg.stream)
                self.publish(topic, m.EndOfStream(stream=msg.stream, seq=self.pub.seq(topic), t=msg.t,
                                                  worker=self.name))
                self.note_ended(msg.stream)

    def _audio(self, msg: m.Audio) -> None:
        from asr_core.audio import pcm16_to_float

        st = self._stream(msg)
        if st is None:
            return
        if st.processor.undecoded_seconds > MAX_BACKLOG_S:  # far more than decoding keeps up with
            self.limited.warning("backlog", "stream %s: %.0fs of audio not decoded yet, frame dropped",
                                 msg.stream, st.processor.undecoded_seconds)
            self.counters["dropped"] += 1
            return
        if not st.session.push_audio(msg.t, pcm16_to_float(msg.pcm), msg.wall0) and not st.session.ended:
            self.limited.warning("out_of_step", "stream %s: frame at %.2fs does not continue the stream (at %.2fs): "
                                 "set aside", msg.stream, msg.t, st.session.received_until)

    # -- scheduling ----------------------------------------------------------------
    def tick(self, now: float) -> None:
        self._ends(self.believer.expire(time.monotonic()))
        self.counters["unconfirmed_eos"] = self.believer.counts.unconfirmed_eos
        self._refresh_counts()
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
        for st in self.streams.values():
            step = st.session.due()
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
        self.note_ended(st.stream)
        self._ended_audio += st.processor.stats.audio_seconds
        self._gone(st)
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
        check_backend_options(cfg, cfg.path or "<defaults>")
        wcfg = cfg.worker(args.name) if args.name else cfg.workers[0]
        return ASRWorker(wcfg.name, cfg.bus, wcfg, cfg)

    return run_actor(build)
