"""``voxpipe transcribe FILE``: run the pipeline of a config on one file, to the end.

1. The config (default ``configs/file.yaml``) is derived (:mod:`pipeline.derived_config`):
   its first source (or ``--source``) reads FILE (``--speed`` replays faster),
   other sources and the web page are dropped, the bus moves to two free
   local ports (a running ``voxpipe up`` is not disturbed), and the sinks are
   the ``--output`` ones if given, else the config's file sinks (console
   sinks are dropped: the transcript is printed at the end). Their files are
   started afresh. The result is validated like any config (exit 3).
   ``--model``, ``--language`` and ``--task`` set every worker's.
2. Broker, VAD, workers and sinks start; once each has reported ready on the
   bus, the capture starts (it also waits for them, via ``wait_for``).
3. When every pool (a worker outside a pool is a pool of its own) has published
   ``eos`` for the stream, everything is stopped in pipeline order, and the
   transcript (one line per pool, ``pool: text`` when several) is printed; exit 0.
   A pool that refuses the stream publishes an ``error`` and then ``eos``; late
   messages of a pool worker presumed dead are ignored (:mod:`pipeline.epochs`).
4. An actor that dies (the capture may exit 0 when its file is done), or
   ``--timeout``, stops everything: one line saying why, the last lines of
   the failed actor's log, exit 1. Ctrl-C: stop in order, exit 130.

It tells the truth: an output that cannot be written is one line naming it, before
anything starts (``--output``, or the config key) or when a sink could not write it
(exit 1, never "written to" a file that is not there); a bad option value is one line
with its config key (exit 3); a port the config names that is taken is one line (exit 1);
a WAV file whose header promises more audio than it holds gets a warning; an empty
transcript is an empty file.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
import wave
from pathlib import Path

import zmq

from pipeline import messages as m
from pipeline.bus import Subscriber
from pipeline.config import ConfigError, SinkConfig, load_config
from pipeline.errors import ExitCode, RuntimeFailure, UsageError

STAGE_TIMEOUT = 30.0


def default_config() -> str:
    """``configs/file.yaml`` of this checkout, else of the current directory."""
    here = Path(__file__).resolve().parent.parent / "configs" / "file.yaml"
    return str(here) if here.is_file() else "configs/file.yaml"


def audio_seconds(path: Path) -> float | None:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, OSError, EOFError):
        return None


# -- the derived config ---------------------------------------------------------------------------
def _sink_name(kind: str, taken: set[str]) -> str:
    name, i = f"out-{kind}", 2
    while name in taken:
        name, i = f"out-{kind}-{i}", i + 1
    taken.add(name)
    return name


def derive(cfg, audio: Path, speed: float | None, outputs: list[str] | None, source: str | None,
           speech: dict | None = None):
    """The config that runs ``audio`` through ``cfg``'s pipeline on a private bus.

    ``speech``: worker settings for every worker (``model``, ``language``, ``task``), from the
    command line; None or a missing key keeps the config's.
    """
    from pipeline.derived_config import private_bus

    if not cfg.workers:
        raise ConfigError(f"{cfg.path}: no workers to transcribe with")
    changes = {k: v for k, v in (speech or {}).items() if v is not None}
    if changes:
        from pipeline.config_schema import SectionError

        workers = tuple(dataclasses.replace(w, **changes) for w in cfg.workers)
        for w in workers:
            try:
                w.check()
            except SectionError as exc:
                flags = " ".join(f"--{k} {v}" for k, v in changes.items())
                raise ConfigError(f"{flags}: worker {w.name}: {exc}") from None
        cfg = dataclasses.replace(cfg, workers=workers)
    if source:
        src = cfg.source(source)
    elif cfg.sources:
        src = cfg.sources[0]
    else:
        from pipeline.config import SourceConfig

        src = SourceConfig()
    taken = {cfg.broker.name, src.name, cfg.vad.name, cfg.dispatcher.name} | set(cfg.actor_names())
    if outputs:
        sinks = []
        for spec in outputs:
            kind = spec.partition(":")[0]
            if kind == "console":
                raise ConfigError("--output console: transcribe prints the transcript itself")
            sinks.append(SinkConfig(name=_sink_name(kind, taken), output=spec, partials=False))
    else:
        sinks = [s for s in cfg.sinks if not s.output.startswith("console")]
    waits = (([cfg.vad.name] if cfg.vad.enabled else []) + cfg.expand_names([w.name for w in cfg.workers])
             + [s.name for s in sinks])
    src = dataclasses.replace(src, input=f"file:{audio.resolve()}", speed=speed or src.speed, loop=False,
                              wait_for=tuple(waits))
    web = dataclasses.replace(cfg.web, enabled=False)
    # a private run: no fixed ports of the operations endpoints or the gateway (they could be a running pipeline's)
    ops = {"health": dataclasses.replace(cfg.health, enabled=False),
           "metrics": dataclasses.replace(cfg.metrics, enabled=False),
           "gateway": dataclasses.replace(cfg.gateway, enabled=False)}
    return dataclasses.replace(cfg, sources=(src,), sinks=tuple(sinks), web=web, bus=private_bus(cfg.bus), **ops)


def _output_files(cfg) -> dict[str, list[Path]]:
    """Per file sink (its output spec), the files it may write: ``PATH``, and ``STEM.<worker>.<stream>.EXT``."""
    from pipeline.outputs import pair_path

    streams = [s.stream_id for s in cfg.sources]
    files = {}
    for s in cfg.sinks:
        kind, _, path = s.output.partition(":")
        if path:
            base = Path(path)
            files[s.output] = [base] + [pair_path(base, pool, st) for pool in cfg.pools() for st in streams]
    return files


def _fresh_outputs(cfg) -> None:
    """Remove what an earlier run left in the sinks' files (jsonl appends; cue files per pair)."""
    for output, candidates in _output_files(cfg).items():
        for p in candidates:
            try:
                if p.is_file():
                    p.unlink()
            except OSError as exc:
                raise RuntimeFailure(f"cannot start {output} afresh: cannot remove {p}: {exc.strerror}") from None


def _check_outputs(outputs: list[str] | None) -> None:
    """Every ``--output`` can be written, before anything starts (one line naming it otherwise)."""
    from pipeline.config import output_problem
    from pipeline.outputs import parse_output

    for spec in outputs or ():
        try:
            kind, path = parse_output(spec)
        except ValueError as exc:
            raise UsageError(f"--output: {exc}") from None
        problem = output_problem(path) if path else None
        if problem:
            raise UsageError(f"--output {spec}: {problem}")


def _missing_outputs(cfg) -> list[str]:
    """The file sinks of ``cfg`` that wrote no file at all."""
    return [out for out, files in _output_files(cfg).items() if not any(p.is_file() for p in files)]


# -- watching the bus -------------------------------------------------------------------------------
class TranscriptWatch:
    """Subscribes to transcripts and heartbeats; collects one stream's commits per pool (``workers``).

    Only what the workers vouch for counts (:mod:`pipeline.roster`): a forged commit or eos
    changes neither the transcript nor when it is complete; of a pool's messages only the
    current assignment's (:mod:`pipeline.epochs`).
    """

    def __init__(self, bus, stream: str, workers: list[str]):
        from pipeline.epochs import EpochFilter
        from pipeline.roster import Believer

        self.stream = stream
        self.workers = workers
        self.epochs = EpochFilter()
        self.ctx = zmq.Context()
        self.sub = Subscriber(self.ctx, bus, ["transcript.", "status."])
        self.believer = Believer(bus.heartbeat_interval)
        self.ready: set[str] = set()
        self.texts: dict[str, list[str]] = {w: [] for w in workers}
        self.commits = 0
        self.done: set[str] = set()
        self.errors: list[str] = []

    def pump(self, timeout_ms: int = 0) -> None:
        while True:
            try:
                got = self.sub.recv(timeout_ms)
            except m.ProtocolError:
                continue
            if got is None:
                return
            timeout_ms = 0
            topic, msg = got
            now = time.monotonic()
            if isinstance(msg, m.Heartbeat):
                if msg.ready and msg.role != "probe":
                    self.ready.add(msg.name)
                believed = self.believer.heartbeat(msg, now)
            else:
                believed = self.believer.offer(topic, msg, now)
            for t, believed_msg in believed + self.believer.expire(now):
                self._take(t, believed_msg)

    def _take(self, topic: str, msg: m.Message) -> None:
        worker = m.parse_topic(topic).worker
        if msg.stream != self.stream or worker not in self.texts or not self.epochs.admit(topic, msg):
            return
        if isinstance(msg, m.Commit):
            self.texts[worker].append(msg.text)
            self.commits += 1
        elif isinstance(msg, m.EndOfStream):
            self.done.add(worker)
        elif isinstance(msg, m.Error):
            self.errors.append(f"{worker}: {msg.message}")
            print(f"voxpipe: worker {worker} reported an error on {msg.stream}: {msg.message}", file=sys.stderr)

    @property
    def finished(self) -> bool:
        return self.done >= set(self.workers)

    def transcript(self) -> str:
        from pipeline.formats import join_commit_texts

        if len(self.workers) == 1:
            return join_commit_texts(self.texts[self.workers[0]])
        return "\n".join(f"{w}: {join_commit_texts(self.texts[w])}" for w in self.workers)

    def close(self) -> None:
        self.sub.close()
        self.ctx.term()


# -- the run --------------------------------------------------------------------------------------------
def run(args) -> int:
    audio = Path(args.file)
    if not audio.is_file():
        raise UsageError(f"cannot read audio file {args.file!r}")
    tmp = Path(tempfile.mkdtemp(prefix="voxpipe-transcribe-"))
    try:
        return _run(args, audio, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, audio: Path, tmp: Path) -> int:
    from asr_core.audio import wav_truncation
    from pipeline.derived_config import write_config

    from .launch import check_ports
    from .plan import actor_processes, stop_stages
    from .runner import ProcessRunner, SignalCounter

    _check_outputs(args.output)
    cut = wav_truncation(audio)
    if cut is not None:
        print(f"voxpipe transcribe: warning: {audio.name}: its header says {cut[0]:.1f}s of audio but it holds "
              f"{cut[1]:.1f}s (cut off?); transcribing what there is", file=sys.stderr)
    speech = {"model": args.model, "language": args.language, "task": args.task}
    cfg = derive(load_config(args.config, check_files=False, check_backends=True), audio, args.speed, args.output,
                 args.source, speech)
    cfg = load_config(write_config(cfg, tmp / "pipeline.yaml"))
    check_ports(cfg)
    _fresh_outputs(cfg)
    procs = actor_processes(cfg)
    capture = cfg.sources[0].name
    needed = set(cfg.sources[0].wait_for)
    duration = cut[1] if cut is not None else audio_seconds(audio)
    timeout = args.timeout or (180.0 + 2.0 * duration / cfg.sources[0].speed if duration else 900.0)

    from honcho.printer import Printer

    runner = ProcessRunner(procs, printer=Printer(sys.stderr), echo=args.verbose)
    watch = TranscriptWatch(cfg.bus, cfg.sources[0].stream_id, list(cfg.pools()))
    signals = SignalCounter().install()
    t0 = time.monotonic()
    failure = None
    try:
        runner.start([p.name for p in procs if p.name != capture])
        while True:
            for name, code in runner.poll(0.02):
                if name == capture and code == 0:
                    continue
                failure = (name, f"{name} exited with code {code} before the transcript was complete")
                break
            if failure or signals.count:
                break
            watch.pump(20)
            if capture not in runner.started and watch.ready >= needed:
                if args.verbose:
                    runner.say(f"all of {', '.join(sorted(needed))} ready: starting {capture}")
                runner.start([capture])
            if watch.finished:
                break
            if time.monotonic() - t0 > timeout:
                waiting = sorted(needed - watch.ready) or sorted(set(watch.workers) - watch.done)
                failure = (None, f"timed out after {timeout:.0f}s waiting for {', '.join(waiting)}")
                break
        limit = 1 if signals.count else 0
        runner.stop(stop_stages(procs), timeout=STAGE_TIMEOUT if not failure else 5.0,
                    force=lambda: signals.count > limit)
        watch.pump(0)
    finally:
        watch.close()
    if signals.count and not failure:
        print("voxpipe transcribe: interrupted", file=sys.stderr)
        return ExitCode.for_signal(signals.first)
    if failure:
        name, line = failure
        if name and runner.tails[name]:
            line += f"\n--- last lines from {name} ---\n{runner.tail(name)}"
        raise RuntimeFailure(f"transcribe failed: {line}")
    for s in cfg.sinks:  # a sink that could not write exits non-zero and says why on its last line
        rc = runner.returncodes.get(s.name)
        if rc:
            last = runner.tail(s.name, 1).strip()
            raise RuntimeFailure(f"transcribe: {s.output} was not written completely: "
                                 f"{last.split(': ', 1)[-1] if last else f'{s.name} exited with code {rc}'}")
    missing = _missing_outputs(cfg)
    if missing:
        raise RuntimeFailure(f"transcribe: {', '.join(missing)} was not written")
    print(watch.transcript())
    sys.stdout.flush()
    outs = ", ".join(s.output for s in cfg.sinks)
    print(f"voxpipe transcribe: {audio.name}: {watch.commits} commit(s) in {time.monotonic() - t0:.1f}s"
          + (f"; written to {outs}" if outs else ""), file=sys.stderr)
    return ExitCode.OK


def register(sub) -> None:
    p = sub.add_parser("transcribe", help="run the pipeline on one audio file to the end and print the transcript")
    p.add_argument("file", help="audio file (16 kHz mono WAV, or whatever the capture reads)")
    p.add_argument("--config", "-c", default=None, help="pipeline YAML (default: configs/file.yaml)")
    p.add_argument("--output", "-o", action="append", default=None, metavar="KIND:PATH",
                   help="write jsonl:PATH, srt:PATH, vtt:PATH or txt:PATH (repeatable; default: the config's sinks)")
    p.add_argument("--speed", type=float, default=None, help="replay speed (1.0 = real time; default: the config's)")
    p.add_argument("--source", default=None, help="which of the config's sources to feed (default: the first)")
    p.add_argument("--model", default=None,
                   help="model of every worker, e.g. base (multilingual, bundled by the base-model extra)")
    p.add_argument("--language", "--lan", dest="language", default=None,
                   help="language spoken (en, de, fr, ...) or auto: detected per utterance (default: the config's)")
    p.add_argument("--task", default=None, choices=["transcribe", "translate"],
                   help="translate: English text from any language (default: the config's)")
    p.add_argument("--timeout", type=float, default=None,
                   help="give up after this many seconds (default: 180 + twice the replay time)")
    p.add_argument("--verbose", "-v", action="store_true", help="show every actor's log on stderr")
    p.set_defaults(func=lambda args: run(_with_default_config(args)))


def _with_default_config(args):
    if args.config is None:
        args.config = default_config()
    return args
