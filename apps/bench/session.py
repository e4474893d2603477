"""The pipeline under test: its actors on a private bus, and rounds of captures.

:func:`bench_config` derives the persistent part of a config (broker, VAD,
one worker; no sources, sinks or web page; two free ports). A
:class:`BenchSession` starts those actors with :class:`apps.runner.ProcessRunner`
(the command lines come from :func:`apps.plan.actor_processes`), waits
until each has reported ready and the bench's subscription is in place, then
runs *rounds*: ``N`` captures of one clip at once, real time, distinct stream
ids. Each round's captures come from a config of their own (the same bus,
VAD and worker, plus the round's sources) and wait, besides the VAD and the
worker, for a *gate*: a heartbeat the bench publishes once every capture of
the round is up, so the streams start together and no process start-up
falls inside the measured window. A round ends when the worker has sent
``eos`` for every stream, or ``tail_timeout`` seconds after the audio ended.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from honcho.printer import Printer

from apps.plan import actor_processes, stop_stages
from apps.runner import ProcessRunner
from pipeline.config import Config, ConfigError, SourceConfig, load_config
from pipeline.derived_config import private_bus, write_config
from pipeline.errors import RuntimeFailure

from .corpus import Clip
from .sampler import Sampler
from .watch import BusWatch, StreamRecord

CAPTURE_WAIT = 120.0  # seconds for a round's captures to start and wait at the gate
GATE_REPEAT = 0.25  # the gate heartbeat is repeated until every capture has started


class BenchError(RuntimeFailure):
    """The pipeline could not be measured (an actor died, nothing got ready)."""


@dataclass
class RoundResult:
    label: str
    clip: Clip
    n: int
    streams: list
    t_start: float  # Unix time: the gate opened (first snapshot)
    t_end: float  # Unix time: the last eos arrived, or the round timed out (second snapshot)
    timed_out: bool
    actors: dict = field(default_factory=dict)  # name -> {role, pid, cpu_s, rss_peak}
    machine_busy_s: float | None = None
    worker_before: dict = field(default_factory=dict)  # the worker's heartbeat counters at the gate
    worker_after: dict = field(default_factory=dict)  # ... after its last eos
    worker_info: dict = field(default_factory=dict)
    bench_cpu_s: float | None = None  # the bench process itself (subscriber, sampler)
    worker_names: tuple = ()  # the measured pool's worker processes (one, or its replicas)

    @property
    def wall(self) -> float:
        return self.t_end - self.t_start


def bench_config(cfg: Config, worker: str | None = None, min_chunk_size: float | None = None,
                 replicas: int | None = None, pin_cores: bool = False, max_streams: int = 0) -> Config:
    """The persistent actors of ``cfg`` on a private bus: broker, VAD, one worker entry.

    ``replicas``: that worker as a pool of N processes behind the dispatcher (also for N = 1,
    so that 1 and N replicas are measured on the same path), each offering ``max_streams``
    slots so that admission never limits a capacity round; ``pin_cores``: replica k on core k-1.
    """
    if not cfg.workers:
        raise ConfigError(f"{cfg.path}: no workers to measure")
    w = cfg.worker(worker) if worker else cfg.workers[0]
    if min_chunk_size is not None:
        if min_chunk_size <= 0:
            raise ConfigError("--min-chunk-size must be positive")
        w = dataclasses.replace(w, min_chunk_size=float(min_chunk_size))
    dispatcher = cfg.dispatcher
    if replicas is not None:
        if not 1 <= replicas <= 64:
            raise ConfigError("--replicas must be between 1 and 64")
        slots = max(w.max_streams, max_streams)
        w = dataclasses.replace(w, replicas=replicas, slots=slots, max_streams=slots)
        dispatcher = dataclasses.replace(dispatcher, enabled=True)
    if pin_cores:
        w = dataclasses.replace(w, pin_cores=True)
    return dataclasses.replace(cfg, sources=(), sinks=(), workers=(w,), bus=private_bus(cfg.bus),
                               web=dataclasses.replace(cfg.web, enabled=False),
                               gateway=dataclasses.replace(cfg.gateway, enabled=False), dispatcher=dispatcher)


class BenchSession:
    def __init__(self, cfg: Config, template: SourceConfig, workdir: Path, sampler: Sampler, verbose: bool = False):
        self.workdir = Path(workdir)
        self.cfg = load_config(write_config(cfg, self.workdir / "pipeline.yaml"))
        self.template = template
        self.worker = self.cfg.workers[0]
        self.worker_names = tuple(self.worker.actor_names())  # the processes of the measured pool
        self.sampler = sampler
        self.verbose = verbose
        self.procs = actor_processes(self.cfg)
        self.roles = {p.name: p.role for p in self.procs}
        self.runner = ProcessRunner(self.procs, printer=Printer(sys.stderr), echo=verbose)
        self.round_runners: list[ProcessRunner] = []
        self.watch: BusWatch | None = None

    # -- start and stop ------------------------------------------------------------------------
    def start(self, timeout: float = 300.0) -> None:
        self.watch = BusWatch(self.cfg.bus, self.worker.pool_name)
        self.sampler.watch("bench", "bench", os.getpid())
        self.runner.start()
        want = set(self.roles)
        deadline = time.monotonic() + timeout
        while True:
            self._check()
            self.watch.pump(50)
            self._register(self.runner, self.roles)
            ready = {n for n in want if (hb := self.watch.latest(n)) is not None and hb.ready}
            if ready == want:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"not ready after {timeout:.0f}s: {', '.join(sorted(want - ready))}")
        if not self.watch.sync():
            raise BenchError("the bench's subscription did not reach the broker")

    def stop(self) -> None:
        for r in self.round_runners:
            r.stop([list(r.procs)], timeout=5.0)
        self.runner.stop(stop_stages(self.procs), timeout=30.0)
        if self.watch is not None:
            self.watch.close()
            self.watch = None

    def logs(self) -> dict[str, str]:
        out = {n: self.runner.tail(n, 80) for n in self.runner.procs}
        for r in self.round_runners:
            out.update({n: r.tail(n, 80) for n in r.procs})
        return out

    def _register(self, runner: ProcessRunner, roles: dict) -> None:
        for name, pid in runner.pids.items():
            if name not in self.sampler.series:
                self.sampler.watch(name, roles[name], pid)

    def _check(self, round_runner: ProcessRunner | None = None) -> None:
        for name, rc in self.runner.poll(0):
            raise BenchError(f"{name} exited (rc={rc}) during the bench\n--- last lines from {name} ---\n"
                             f"{self.runner.tail(name)}")
        if round_runner is not None:
            for name, rc in round_runner.poll(0):
                if rc != 0:
                    raise BenchError(f"capture {name} exited (rc={rc})\n--- last lines from {name} ---\n"
                                     f"{round_runner.tail(name)}")

    # -- a round -------------------------------------------------------------------------------------
    def _round_runner(self, label: str, clip: Clip, streams: list[str], gate: str) -> ProcessRunner:
        vad = (self.cfg.vad.name,) if self.cfg.vad.enabled else ()
        waits = vad + tuple(self.cfg.expand_names([self.worker.name])) + (gate,)
        sources = tuple(
            dataclasses.replace(self.template, name=s, stream=s, input=f"file:{clip.wav}", speed=1.0, loop=False,
                                wait_for=waits, wait_timeout=600.0)
            for s in streams
        )
        path = write_config(dataclasses.replace(self.cfg, sources=sources), self.workdir / f"round-{label}.yaml")
        procs = [p for p in actor_processes(load_config(path)) if p.role == "capture"]
        runner = ProcessRunner(procs, printer=Printer(sys.stderr), echo=self.verbose)
        self.round_runners.append(runner)
        return runner

    def _waiting_at_gate(self, name: str, gate: str) -> bool:
        hb = self.watch.latest(name)
        if hb is None or not hb.ready or hb.info.get("state") != "waiting":
            return False
        return set(hb.info.get("waiting_for", ())) <= {gate}

    def run_round(self, label: str, clip: Clip, n: int, tail_timeout: float, keep_speech: bool = False,
                  progress=None) -> RoundResult:
        """Replay ``clip`` on ``n`` streams at once; ``progress(seconds)`` is told how far the audio is."""
        watch, sampler = self.watch, self.sampler
        streams = [f"{label}-{i}" for i in range(1, n + 1)]
        records = [StreamRecord(s, clip.name, keep_speech=keep_speech and i == 0) for i, s in enumerate(streams)]
        for rec in records:
            watch.track(rec)
        gate = f"gate-{label}"
        runner = self._round_runner(label, clip, streams, gate)
        roles = {s: "capture" for s in streams}
        runner.start()
        deadline = time.monotonic() + CAPTURE_WAIT
        while not all(self._waiting_at_gate(s, gate) for s in streams):
            self._check(runner)
            watch.pump(50)
            self._register(runner, roles)
            if time.monotonic() > deadline:
                late = [s for s in streams if not self._waiting_at_gate(s, gate)]
                raise BenchError(f"round {label}: captures not waiting at the gate after {CAPTURE_WAIT:.0f}s: "
                                 f"{', '.join(late)}")
        self._register(runner, roles)
        before = self._worker_counters()
        t_start = sampler.snapshot()
        watch.open_gate(gate)
        last_gate = time.monotonic()
        stop_at = t_start + clip.seconds + tail_timeout
        while not all(r.finished for r in records) and time.time() < stop_at:
            self._check(runner)
            watch.pump(20)
            if time.monotonic() - last_gate > GATE_REPEAT and any(
                    (h := watch.latest(s)) is not None and h.info.get("state") == "waiting" for s in streams):
                watch.open_gate(gate)
                last_gate = time.monotonic()
            if progress is not None:
                progress(min(time.time() - t_start, clip.seconds))
        timed_out = not all(r.finished for r in records)
        t_end = sampler.snapshot()
        after, info = self._worker_after(max((r.eos_received or 0.0) for r in records))
        runner.stop([streams], timeout=5.0)
        actors = {}
        for name, role in list(self.roles.items()) + list(roles.items()):
            s = sampler.series.get(name)
            actors[name] = {"role": role, "pid": s.pid if s else None,
                            "cpu_s": sampler.cpu_between(name, t_start, t_end),
                            "rss_peak": sampler.rss_peak(name, t_start, t_end)}
        return RoundResult(label, clip, n, records, t_start, t_end, timed_out, actors,
                           sampler.machine_busy(t_start, t_end), before, after, info,
                           sampler.cpu_between("bench", t_start, t_end), self.worker_names)

    def _worker_counters(self, hbs=None) -> dict:
        """The measured pool's heartbeat counters, summed over its worker processes ({} if one is missing)."""
        hbs = hbs if hbs is not None else [self.watch.latest(n) for n in self.worker_names]
        if any(hb is None for hb in hbs):
            return {}
        total: dict = {}
        for hb in hbs:
            for k, v in hb.counters.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    total[k] = total.get(k, 0) + v
        if len(hbs) > 1 and hbs:  # a ratio is not a sum: the pool's rtf from its sums
            total["rtf"] = round(total["decode_seconds"] / total["audio_seconds"], 3) if total.get(
                "audio_seconds") else 0.0
        return total

    def _worker_after(self, since: float, timeout: float = 3.0) -> tuple[dict, dict]:
        """The pool's counters (summed) and its first worker's info, from heartbeats sent after ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hbs = [self.watch.latest(n) for n in self.worker_names]
            if all(hb is not None and hb.time >= since for hb in hbs):
                info = dict(hbs[0].info)
                counters = self._worker_counters(hbs)
                info["rtf"] = counters.get("rtf", info.get("rtf"))
                return counters, info
            self.watch.pump(50)
        hb = self.watch.latest(self.worker_names[0])
        return {}, (dict(hb.info) if hb else {})
