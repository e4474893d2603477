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
audio that arrives during a decode waits in the stream's inbox. With batching
on (``batch: true``, or ``auto`` on a GPU: :func:`asr_core.batching.batching_on`) and
a backend that batches (``Capabilities.batch``), the streams
that are due together are decoded in one batched call per thread
(:mod:`workers.decode_batches` says which and when); each stream's step still
gets the hypothesis of its own buffer, prompt, language and task. A backend
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

In a dispatched pool (``pool:``/``replicas:``, docs/running.md) the worker subscribes to
``dispatch.<name>.`` instead and gets only the streams the dispatcher assigned to it, each
resumed where the pool's transcript stands (:mod:`workers.pool_member`); it publishes on the
pool's topics, ``transcript.<pool>.<stream>`` and ``partial.<pool>.<stream>``, which outside
a pool are the worker's own (the pool defaults to the worker's name).
"""

from __future__ import annotations

import time

from asr_core.keepup import KeepUpMonitor
from asr_core.streaming import StepResult, StreamingSession
from pipeline import messages as m
from pipeline.config import check_backend_options
from pipeline.config_schema import REPLICA_FROM_HOST, replica_name
from pipeline.errors import ConfigError
from pipeline.logformat import stream_context
from pipeline.roster import Believer

from .admission import Admission, Slot
from .base import Actor, actor_config, add_actor_arguments, run_actor
from .decode_batches import DecodeScheduler
from .decode_jobs import DecodeRunner
from .pool_member import PoolMember, host_replica_id, pin_to_core, usable_cores
from .stream_accounting import CLOCK_COUNTERS, StreamAccounting, StreamState
from .stream_hints import follow_hints

WARMUP_SECONDS = 1.0
MAX_BACKLOG_S = 120.0  # undecoded audio per stream beyond which new frames are dropped (counted)
BUSY_POLL_MS = 5  # loop period while decodes run on the pool, so results go out at once
PAUSE_HOLD_MARGIN_S = 0.15  # automatic pause_hold: vad.min_silence_ms plus a frame and this margin


class ASRWorker(StreamAccounting, Actor):
    role = "worker"

    def __init__(self, name, bus, wcfg, config=None, dispatched: bool = False, replica: str | None = None):
        super().__init__(name, bus, config)
        self.wcfg = wcfg
        self.pool = wcfg.pool_name  # the middle of our topics
        self.replica = replica
        self.member = PoolMember(self) if dispatched else None
        self._refused: dict[str, None] = {}  # streams told they were refused (outside a pool), recent last
        self.asr = None
        self.runner: DecodeRunner | None = None
        self.streams: dict[str, StreamState] = {}
        self.counters.update({
            "commits": 0, "decodes": 0, "stream_errors": 0, "streams_total": 0, "hypotheses_set_aside": 0,
            "decode_seconds": 0.0, "decoded_audio_seconds": 0.0, "audio_seconds": 0.0, "rtf": 0.0,
            "marks_ignored": 0, "pauses_cancelled": 0, "pauses_taken": 0, "unconfirmed_eos": 0, "streams_evicted": 0,
            "streams_joined": 0, "upstream_restarts": 0, "stream_gaps": 0, **{c: 0 for c in CLOCK_COUNTERS.values()},
            "hints_ignored": 0,
            # decode scheduling: jobs started (a batch is one), steps in them, seconds steps waited when due
            "batches": 0, "batched_steps": 0, "queue_wait_s": 0.0,
        })
        self.believer = Believer(bus.heartbeat_interval)
        self.admission = Admission()
        self._gone_counts: dict[str, int] = {}  # session counts of streams that have left
        self._schedule = self._with_pause_hold(wcfg.schedule(), config)
        self._ended_audio = 0.0  # audio seconds of streams that have ended
        self.keepup = KeepUpMonitor()  # warns once when the backend cannot keep up with live audio
        self.batching = False  # set in setup(): batch is on and the backend batches
        # when the streams' steps start, alone or batched; queue waits and batch sizes for the heartbeat
        self.scheduler = DecodeScheduler(self.counters, self._follow_hints, wcfg.max_batch, wcfg.batch_window_ms)
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
        if self.member is not None:  # the dispatcher vouches for what it forwards (it believes the VAD's eos)
            return [f"dispatch.{self.name}."]
        return ["speech." if self.wcfg.input == "speech" else "audio.", "status."]

    def _concurrency(self, backend_cls) -> int:
        if not getattr(backend_cls.capabilities, "concurrent", False):
            return 1
        if self.wcfg.concurrency > 0:
            return self.wcfg.concurrency
        return max(1, min(usable_cores(), 4))

    def setup(self) -> None:
        import numpy as np

        from asr_core.batching import batching_on
        from asr_core.registry import backend_class, create_backend

        w = self.wcfg
        t0 = time.monotonic()
        if w.pin_cores:
            self.log.info("pinned to CPU core %s", pin_to_core(self.replica))
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
        self.batching = batching_on(w.batch, self.asr)
        if self.batching:
            self.asr.transcribe_batch([np.zeros(int(WARMUP_SECONDS * 16000), dtype=np.float32)] * 2, ["", ""])
        self.runner = DecodeRunner(concurrency)
        self.log.info("backend %s loaded in %.1fs; %d decode thread(s)%s", self.asr.describe(),
                      time.monotonic() - t0, concurrency,
                      f", batches of up to {w.max_batch} streams" if self.batching else "")

    def teardown(self) -> None:
        if self.runner is not None:
            self.runner.close()

    def info(self) -> dict:
        if self.asr is not None:
            d = self.asr.describe()
        else:  # still loading: what will load (a model_dir wins over the name)
            from asr_core.models import model_label

            w = self.wcfg
            d = {"backend": w.backend, "model": model_label(w.model, w.model_dir, w.cache_dir)}
        d["language"] = self.wcfg.language
        d["task"] = self.wcfg.task
        d["rtf"] = self.counters["rtf"]
        d["rtf_recent"] = round(self.keepup.rtf, 3)  # decode seconds per second of audio decoded, last 10 s
        d["behind"] = self.keepup.behind  # that RTF stays above 1: the transcript falls behind live audio
        d["concurrency"] = self.runner.concurrency if self.runner else 0
        d["batch"] = self.batching
        d["decode_queue"] = self.scheduler.load.summary()
        d["streams"] = sorted(self.streams)
        d["max_streams"] = self.wcfg.max_streams  # slots: streams it serves at once
        d["pool"] = self.pool
        if self.member is not None:
            d.update(self.member.info())
        d["languages"] = {s: st.language for s, st in sorted(self.streams.items()) if st.language}
        return d

    def _new_processor(self):
        from asr_core.online import OnlineASRProcessor

        processor = OnlineASRProcessor(self.asr, options=self.wcfg.streaming_options())
        if self.wcfg.task == "translate":  # the schedule's translation rule reads the processor's task
            processor.task = "translate"
        return processor

    def _admit(self, stream: str) -> bool:
        """Room for a new stream: a free slot, else that of one that was never decoded (workers.admission)."""
        if len(self.streams) >= self.wcfg.max_streams and self.member is None:  # a pool's dispatcher admits
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
        """The stream's state (made on its first message); None when refused (``max_streams`` live).

        A refused stream is told once, with an ``error`` (code ``streams_full``) on its transcript topic."""
        st = self.streams.get(msg.stream)
        if st is None:
            if not self._admit(msg.stream):
                self._tell_refused(msg.stream)
                return None
            # a held pause counts only time in which the worker had read all it was sent
            session = StreamingSession(self._new_processor(), self._schedule, now=time.monotonic,
                                       heard_until=self.heard_all)
            st = StreamState(msg.stream, session)
            self.streams[msg.stream] = st
            self.counters["streams_total"] += 1
            self.counters["streams_active"] = len(self.streams)
            self.announce()  # subscribers believe its transcript once a heartbeat lists it
            self.log.info("new stream %s", msg.stream)
            if msg.seq > 0 and self.member is None and not any(s == msg.stream for s, _ in self._ended):
                # not one this run ended, nor one the pool's dispatcher moved here
                self.counters["streams_joined"] += 1
                self._report(st, f"worker {self.name} started on this stream while it was live (at "
                                 f"{getattr(msg, 't', 0.0):.2f}s): what came before did not reach this run of the "
                                 "worker; anything an earlier run had not committed is lost")
        st.last_seen = time.monotonic()
        st.frames += 1
        return st

    def _tell_refused(self, stream: str) -> None:
        if stream in self._refused or self.member is not None:
            return
        self._refused[stream] = None
        while len(self._refused) > 256:
            self._refused.pop(next(iter(self._refused)))
        topic = m.transcript_topic(self.pool, stream)
        self.publish(topic, m.Error(stream=stream, seq=self.pub.seq(topic), worker=self.name, code=m.STREAMS_FULL,
                                    message=f"refused: worker {self.name} serves {self.wcfg.max_streams} streams"))

    def forget_stream(self, st: StreamState) -> None:
        """Drop a stream's state without publishing anything (it was moved away under a newer epoch)."""
        self._ended_audio += st.processor.stats.audio_seconds
        self.streams.pop(st.stream, None)
        self.counters["streams_active"] = len(self.streams)

    def heartbeat_now(self) -> None:
        self._next_heartbeat = 0.0

    # -- messages ----------------------------------------------------------------
    def handle(self, topic: str, msg: m.Message) -> None:
        if isinstance(msg, m.Heartbeat):
            self._ends(self.believer.heartbeat(msg, time.monotonic()))
            return
        if self.stopping and self.member is None and not isinstance(msg, m.EndOfStream):
            return
        if self.member is not None and self.member.intercept(msg):
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
            if self.member is not None:
                self._ends([(topic, msg)])
            else:
                self._ends(self.believer.offer(topic, msg, time.monotonic()))

    def _ends(self, believed) -> None:
        for _topic, msg in believed:
            st = self.streams.get(msg.stream)
            if st is not None:
                st.session.push_end()
            elif not self.stopping and (self.member is not None
                                        or self.believer.roster.announced(msg.stream, time.monotonic())):
                # a stream without speech: nothing to flush, but say it ended
                topic = m.transcript_topic(self.pool, msg.stream)
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
        if st.session.push_audio(msg.t, pcm16_to_float(msg.pcm), msg.wall0):
            st.hints = (msg.language, msg.task)  # what the source asks for, from the frames that continue it
        elif not st.session.ended:
            self.limited.warning("out_of_step", "stream %s: frame at %.2fs does not continue the stream (at %.2fs): "
                                 "set aside", msg.stream, msg.t, st.session.received_until)

    # -- scheduling ----------------------------------------------------------------
    def tick(self, now: float) -> None:
        self._ends(self.believer.expire(time.monotonic()))
        self.counters["unconfirmed_eos"] = self.believer.counts.unconfirmed_eos
        self._refresh_counts()
        self._collect()
        gather_ms = self.scheduler.tick(self.streams, now, self.runner, self.asr, self.batching)
        self._collect()
        self.poll_ms = BUSY_POLL_MS if self.runner.running else 50
        if gather_ms is not None:
            self.poll_ms = max(1, min(self.poll_ms, gather_ms))
        for st in list(self.streams.values()):
            self._release_report(st, time.monotonic())
            if now - st.last_seen > self.wcfg.idle_timeout and not st.session.end_requested:
                self.log.info("stream %s idle for %.0fs: flushing and freeing it", st.stream, now - st.last_seen)
                st.session.push_end()

    def _follow_hints(self, st: StreamState) -> None:
        """The source's language and task for this stream, where this worker can follow them
        (:mod:`workers.stream_hints`); what it cannot do is counted (``hints_ignored``) and said."""
        if st.hints == st.followed:
            return
        st.followed = st.hints
        ignored = follow_hints(self.asr, st.processor, *st.hints)
        if ignored:
            self.counters["hints_ignored"] += 1
            self.limited.warning("hints", "stream %s asks for %s, which %s cannot do: ignored",
                                 st.stream, " and ".join(ignored), self.asr.model_name)

    def _collect(self) -> None:
        for stream, result in self.runner.done():
            st = self.streams.get(stream)
            if st is not None:
                with stream_context(stream):  # its log lines name the stream (--log-format json)
                    self._apply(st, result)
        self.scheduler.collected(self.runner)

    def _apply(self, st: StreamState, result: StepResult) -> None:
        """A finished step's outcome, on the actor's thread: publish, then feed on."""
        c = self.counters
        c["decodes"] += result.decodes
        c["hypotheses_set_aside"] += result.set_aside  # decodes cut short (asr_core.hypothesis)
        c["decode_seconds"] = round(c["decode_seconds"] + result.decode_seconds, 3)
        c["decoded_audio_seconds"] = round(c["decoded_audio_seconds"] + result.decoded_audio_seconds, 3)
        self._watch_speed(result)
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
        topic = m.transcript_topic(self.pool, st.stream)
        self.publish(topic, m.Error(stream=st.stream, seq=self.pub.seq(topic), message=message, worker=self.name,
                                    epoch=st.epoch, code=m.BACKEND_FAILED))
        self._ended_audio += st.processor.stats.audio_seconds
        st.session.restart(self._new_processor())  # go on from the next audio
        st.followed = None  # the new processor follows the stream's hints from its first step
        if st.session.ended:
            self._end_stream(st)

    # -- output ----------------------------------------------------------------------
    def _publish_commit(self, st: StreamState, commit) -> None:
        if not commit or commit.beg is None:
            return
        self._release_report(st)
        desc = self.asr.describe()
        topic = m.transcript_topic(self.pool, st.stream)
        st.language = commit.language.record() if commit.language is not None else {}
        msg = m.Commit(
            stream=st.stream, seq=self.pub.seq(topic), beg=float(commit.beg), end=float(commit.end),
            text=commit.text, words=[[float(b), float(e), w] for b, e, w in commit.words],
            worker=self.name, backend=desc.get("backend", ""), model=str(desc.get("model", "")),
            emitted=time.time(), wall0=st.wall0, epoch=st.epoch, **st.language,
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
        topic = m.partial_topic(self.pool, st.stream)
        self.publish(topic, m.Partial(
            stream=st.stream, seq=self.pub.seq(topic), beg=part.beg, end=part.end, text=part.text,
            worker=self.name, emitted=time.time(), wall0=st.wall0, epoch=st.epoch,
        ))

    def _end_stream(self, st: StreamState) -> None:
        self._release_report(st)
        if not st.handoff:
            topic = m.transcript_topic(self.pool, st.stream)
            self.publish(topic, m.EndOfStream(stream=st.stream, seq=self.pub.seq(topic),
                                              t=st.session.received_until, worker=self.name, epoch=st.epoch))
            self.note_ended(st.stream)
        self._ended_audio += st.processor.stats.audio_seconds
        self._gone(st)
        self.streams.pop(st.stream, None)
        self.counters["streams_active"] = len(self.streams)
        self.log.info("stream %s %s: %d commit(s), committed until %.2fs, rtf %.2f", st.stream,
                      "handed over" if st.handoff else "ended", st.commits, st.processor.hyp.last_committed_time,
                      st.processor.stats.rtf)
        if st.handoff and self.member is not None:
            self.member.acknowledge(st.stream, st.epoch)

    # -- shutdown ----------------------------------------------------------------------
    def drain(self) -> None:
        """Every stream ends: its tail is decoded, its commits and eos published (by tick).

        In a dispatched pool the streams are handed over instead (:meth:`PoolMember.drain`)."""
        if self.member is not None:
            self.member.drain()
            return
        for st in self.streams.values():
            st.session.push_end()

    def drained(self) -> bool:
        if self.streams and self.runner.running:
            self.runner.wait(0.05)
        if self.member is not None:
            return self.member.drained()
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
    p.add_argument("--replica", default=None, metavar="ID",
                   help="run as replica ID of the worker entry --name: actor <name>-<ID> in the entry's pool "
                        "(auto: this host's name, for containers that a scheduler replicates)")
    p.set_defaults(func=run)


def run(args) -> int:
    def build():
        cfg = actor_config(args, "workers", {
            "backend": args.backend, "model": args.model, "model_dir": args.model_dir,
            "language": args.language, "min_chunk_size": args.min_chunk_size, "input": args.input,
        }, default_name="asr", first=True)
        check_backend_options(cfg, cfg.path or "<defaults>")
        wcfg = cfg.worker(args.name) if args.name else cfg.workers[0]
        replica = host_replica_id(wcfg.name) if args.replica == REPLICA_FROM_HOST else args.replica
        if replica is not None and not m.valid_id(replica):
            raise ConfigError(f"--replica {replica!r}: use letters, digits, '_', '-', ':' or '@'")
        name = replica_name(wcfg.name, replica) if replica is not None else wcfg.name
        return ASRWorker(name, cfg.bus, wcfg, cfg, dispatched=cfg.dispatched, replica=replica)

    return run_actor(build)
