"""The capture actor: audio from a file, stdin or a microphone onto ``audio.<stream>``.

Before the first sample it waits, without sleeping, until every consumer
named in ``wait_for`` has published a heartbeat with ``ready: true`` (by
default, with ``--config``: the VAD if enabled and every worker), then runs
one more bus handshake, which guarantees that those consumers'
subscriptions have reached this publisher, so the start of the file is not
lost. After ``wait_timeout`` seconds it warns and starts anyway.

Frames of ``frame_ms`` are paced on a monotonic clock from absolute
deadlines (no drift): a frame is sent when its last sample is due, i.e. at
``start + end / speed``; ``speed`` 0 sends as fast as possible.

Timing fields (what ``t`` and ``wall0`` mean here):

* ``t`` is always the true stream position: file seconds, sample-exact,
  contiguous from 0 (it keeps growing across ``--loop`` rounds).
* ``wall0`` is chosen so that ``wall0 + t_end`` is the Unix time at which the
  frame ending at ``t_end`` was sent (became available), so the latency
  ``emitted - wall0 - end`` measured downstream is the real delay between
  the audio being available and its transcript being published. At
  ``--speed 1`` (and for the microphone) ``wall0`` is constant: the Unix
  time of stream time 0. At other speeds it changes from frame to frame:
  ``wall0 = start + t_end / speed - t_end``. With ``--speed 0`` it is the
  send time minus ``t_end``. Receivers should take ``wall0`` from the most
  recent frame.

At the end of a file (or stdin) it sends the last partial frame and ``eos``,
then exits 0; the first SIGTERM/SIGINT sends ``eos`` at once and exits (if
it comes while still waiting for the consumers, nothing was sent: no eos).
Stdin is paced like a file; for a live producer (e.g. ``arecord``) use
``--speed 0`` so frames go out as they arrive.

With ``--config`` it also listens to its stream's transcript topics (one per pool): a pool
that refuses the stream (an ``error`` with code ``pool_full`` or ``streams_full``) is logged
and counted (``refusals``; heartbeat ``info.refused_by``), and so is a failover.
"""

from __future__ import annotations

import math
import time

import numpy as np
import zmq

from pipeline import messages as m
from pipeline.bus import handshake
from pipeline.config import ConfigError, SourceConfig
from pipeline.errors import ExitCode

from .base import Actor, actor_config, add_actor_arguments, run_actor
from .capture_sources import SR, CaptureError, InputSpec, Source, open_source, parse_input

MAX_BATCH = 50  # frames sent per loop turn when behind schedule (keeps heartbeats regular)
LIVE_POLL_MS = 5  # how often a live source (stdin, mic) is checked for new samples


class Capture(Actor):
    role = "capture"

    def __init__(self, name, bus, scfg: SourceConfig, spec: InputSpec, source: Source,
                 wait_for: tuple = (), config=None, pools: tuple = ()):
        super().__init__(name, bus, config)
        self.pools = tuple(pools)  # whose transcript topics of our stream we watch for refusals
        self.refused_by: list[str] = []
        self.counters["refusals"] = 0
        self.scfg = scfg
        self.spec = spec
        self.source = source
        self.stream = scfg.stream_id
        self.topic = m.audio_topic(self.stream)
        self.speed = float(scfg.speed)
        self.frame_samples = max(1, SR * int(scfg.frame_ms) // 1000)
        self.wait_for = tuple(n for n in wait_for if n != name)
        self.seen_ready: set[str] = set()
        self.state = "waiting"
        self.sent = 0  # samples sent so far = stream position of the next frame
        self._frame = np.zeros(0, dtype="<i2")
        self._eof = False
        self._wait_deadline: float | None = None
        self._start_mono = 0.0
        self._start_wall = 0.0
        self.exit_code = 0

    def run(self) -> int:
        return super().run() or self.exit_code

    # -- actor hooks ----------------------------------------------------------------
    def subscriptions(self):
        watch = [m.transcript_topic(p, self.stream) for p in self.pools]
        return (["status."] if self.wait_for else []) + watch

    def handle(self, topic: str, msg: m.Message) -> None:
        if isinstance(msg, m.Error) and msg.code is not None:
            pool = m.parse_topic(topic).worker
            if msg.code in (m.POOL_FULL, m.STREAMS_FULL):
                self.counters["refusals"] += 1
                if pool not in self.refused_by:
                    self.refused_by.append(pool)
                self.log.warning("pool %s refused stream %s (%s): %s", pool, self.stream, msg.code, msg.message)
            elif msg.code == m.FAILOVER:
                self.log.warning("pool %s, stream %s: %s", pool, self.stream, msg.message)
            return
        if isinstance(msg, m.Heartbeat) and msg.ready and msg.name in self.wait_for:
            if msg.name not in self.seen_ready:
                self.log.info("%s is ready", msg.name)
            self.seen_ready.add(msg.name)

    def tick(self, now: float) -> None:
        if self.state == "waiting":
            self._check_wait(now)
        elif self.state == "sending":
            self._pump()

    def drain(self) -> None:
        if self.state == "sending":
            self._finish("stop signal")
        self.state = "done"

    def info(self) -> dict:
        d = {"stream": self.stream, "input": str(self.spec), "seconds": round(self.sent / SR, 3),
             "state": self.state, "speed": self.speed, "streams": [] if self.state == "done" else [self.stream]}
        if self.state == "waiting":
            d["waiting_for"] = sorted(set(self.wait_for) - self.seen_ready)
        if self.refused_by:
            d["refused_by"] = list(self.refused_by)
        return d

    def teardown(self) -> None:
        self.source.close()

    # -- waiting for the consumers ---------------------------------------------------------
    def _check_wait(self, now: float) -> None:
        if self._wait_deadline is None:
            self._wait_deadline = now + float(self.scfg.wait_timeout)
            if self.wait_for:
                self.log.info("waiting for %s to be ready (up to %.0fs)", ", ".join(self.wait_for),
                              self.scfg.wait_timeout)
        missing = set(self.wait_for) - self.seen_ready
        if missing and now < self._wait_deadline:
            return
        if missing:
            self.log.warning("gave up waiting for %s after %.0fs: starting anyway", ", ".join(sorted(missing)),
                             self.scfg.wait_timeout)
        self._begin()

    def _begin(self) -> None:
        if self.wait_for:
            self.sub.sock.setsockopt(zmq.UNSUBSCRIBE, b"status.")
            if "status." in self.sub.prefixes:
                self.sub.prefixes.remove("status.")
            # our own probe comes back only after every subscription the broker
            # forwarded before it, including the consumers' audio.: nothing is lost
            if not handshake(self.pub, self.sub, self.name, timeout=5.0, backlog=[]):
                self.log.warning("no handshake through the broker; the first frames may be lost")
        try:
            self.source.start()
        except CaptureError as exc:
            self.log.error("%s", exc)
            self.exit_code = ExitCode.RUNTIME
            self.state = "done"
            self.stopping = True
            return
        self._start_mono = time.monotonic()
        self._start_wall = time.time()
        self.state = "sending"
        self.counters["streams_active"] = 1
        self.log.info("sending %s as stream %s (speed %s)", self.spec, self.stream,
                      self.speed if self.source.paced else "live")

    # -- sending ---------------------------------------------------------------------------------
    def _pump(self) -> None:
        n = self.frame_samples
        for _ in range(MAX_BATCH):
            if len(self._frame) < n and not self._eof:
                data, self._eof = self.source.read(n - len(self._frame))
                if len(data):
                    self._frame = np.concatenate([self._frame, data]) if len(self._frame) else data
            if len(self._frame) < n and not self._eof:
                self.poll_ms = LIVE_POLL_MS  # a live source: more samples later
                return
            if len(self._frame) == 0:
                self._finish("end of input")
                return
            end = self.sent + len(self._frame)
            wall0 = self._wall0(end)
            if wall0 is None:
                return  # not due yet; poll_ms is set to wake up on time
            self.publish(self.topic, m.Audio(
                stream=self.stream, seq=self.pub.seq(self.topic), t=self.sent / SR, sr=SR,
                wall0=wall0, pcm=self._frame.tobytes(), language=self.scfg.language, task=self.scfg.task,
            ))
            self.sent = end
            self._frame = np.zeros(0, dtype="<i2")
        self.poll_ms = 0  # behind schedule: come straight back

    def _wall0(self, end: int) -> float | None:
        """wall0 for the frame ending at sample ``end``, or None if it is not due yet."""
        t_end = end / SR
        if not self.source.paced:  # live microphone: wall0 is fixed by the first sample
            first = getattr(self.source, "first_wall", None)
            return first if first is not None else time.time() - t_end
        if self.speed <= 0:
            return time.time() - t_end
        offset = t_end / self.speed
        wait = self._start_mono + offset - time.monotonic()
        if wait > 0:
            self.poll_ms = max(1, min(50, math.ceil(wait * 1000)))
            return None
        return self._start_wall + offset - t_end

    def _finish(self, reason: str) -> None:
        self.publish(self.topic, m.EndOfStream(stream=self.stream, seq=self.pub.seq(self.topic), t=self.sent / SR))
        self.log.info("%s: sent %.2fs of audio, eos", reason, self.sent / SR)
        self.state = "done"
        self.note_ended(self.stream)  # the VAD believes the eos once our heartbeat lists it as ended
        self.counters["streams_active"] = 0
        self.poll_ms = 50
        self.source.close()
        self.stopping = True


# -- command line ---------------------------------------------------------------------------------
def default_wait_for(cfg) -> tuple:
    """The consumers that must be up before audio flows: the VAD (if enabled), the dispatcher, every worker."""
    names = [cfg.vad.name] if cfg.vad.enabled else []
    return tuple(names + cfg.expand_names([w.name for w in cfg.workers]))


def register(sub) -> None:
    p = sub.add_parser("capture", help="publish audio from a file, stdin or the microphone")
    p.add_argument("input", nargs="?", default=None, metavar="INPUT",
                   help="mic, file:PATH, auto:PATH (mic, else the file) or stdin (raw int16 mono PCM); "
                        "default: the config's, else mic")
    add_actor_arguments(p, "capture")
    p.add_argument("--stream", default=None, help="stream id (default: the source's name)")
    p.add_argument("--speed", type=float, default=None, help="file/stdin replay speed (1 = real time, 0 = no pacing)")
    p.add_argument("--device", default=None, help="microphone: sounddevice name or index")
    p.add_argument("--frame-ms", type=int, default=None, help="milliseconds of audio per frame (default 100)")
    p.add_argument("--loop", action="store_true", help="file: start over at the end")
    p.add_argument("--sample-rate", type=int, default=None, help="stdin: sample rate of the raw PCM (default 16000)")
    p.add_argument("--wait-for", default=None, metavar="A,B",
                   help="actors that must be ready before sending ('' for none; default with --config: vad + workers)")
    p.add_argument("--wait-timeout", type=float, default=None, help="seconds to wait for them, then start anyway")
    p.add_argument("--language", default=None,
                   help="ask the workers for this language (a code, or auto: detect); default: theirs")
    p.add_argument("--task", default=None, choices=["transcribe", "translate"],
                   help="ask the workers for this task; default: theirs")
    p.set_defaults(func=run)


def run(args) -> int:
    source: list[Source] = []

    def build():
        cfg = actor_config(args, "sources", {
            "input": args.input, "stream": args.stream, "speed": args.speed, "device": args.device,
            "frame_ms": args.frame_ms, "sample_rate": args.sample_rate, "wait_timeout": args.wait_timeout,
            "loop": True if args.loop else None,
            "language": args.language, "task": args.task,
            "wait_for": None if args.wait_for is None else [n.strip() for n in args.wait_for.split(",") if n.strip()],
        }, default_name="capture")
        scfg = cfg.source(args.name) if args.name else cfg.sources[0]
        if scfg.wait_for is not None:  # a worker entry or a pool named there stands for its processes
            wait_for = tuple(cfg.expand_names(scfg.wait_for)) if args.config else scfg.wait_for
        else:
            wait_for = default_wait_for(cfg) if args.config else ()
        spec = parse_input(scfg.input)
        if spec.kind != "mic" and scfg.device is not None and args.device is not None:
            raise ConfigError("--device applies to mic input only")
        src = open_source(spec, loop=scfg.loop, sample_rate=scfg.sample_rate, device=scfg.device,
                          frame_ms=scfg.frame_ms)
        source.append(src)
        pools = tuple(cfg.pools()) if args.config else ()
        return Capture(scfg.name, cfg.bus, scfg, spec, src, wait_for, cfg, pools=pools)

    try:
        return run_actor(build)
    finally:
        for src in source:
            src.close()
