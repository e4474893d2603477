"""The process plan of a pipeline: one command line per actor in a config.

Order (also the start order): broker, sources (``capture``), the VAD when
enabled, the dispatcher when the pools have one (:attr:`pipeline.config.Config.dispatched`),
workers, sinks, the web page, the gateway (``voxpipe serve``) and the metrics actor when
enabled. Every line reads
``NAME: <voxpipe> <role> --config CONFIG --name NAME``; a worker entry with ``replicas: N``
gives N lines, ``NAME-K: <voxpipe> worker --config CONFIG --name NAME --replica K``.

``<voxpipe>`` is the ``voxpipe`` console script next to the running Python
(so a venv works without being activated), else ``python -m apps.cli``
with that Python. The portable form (``portable=True``) writes plain
``voxpipe`` and keeps the config path as given, for a Procfile that lives in
the repository and is run with the venv activated.

Shutdown goes the other way, in stages (:data:`STOP_STAGES`): sources, the gateway and
the web page first (they send ``eos`` for their streams), then the VAD, the dispatcher, the
workers (final flush), sinks, and the broker last, so that every stage's last messages still have a bus.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config

# roles in stopping order; each stage is stopped (and waited for) before the next
STOP_STAGES = (("capture", "web", "serve"), ("vad",), ("dispatcher",), ("worker",), ("sink",), ("broker",))


@dataclass(frozen=True)
class ActorProcess:
    name: str
    role: str  # the voxpipe subcommand: broker | capture | vad | dispatcher | worker | sink | web | serve | metrics
    argv: tuple  # full command line

    @property
    def cmd(self) -> str:
        return shlex.join(self.argv)


def voxpipe_command(portable: bool = False) -> list[str]:
    """How to run this installation's ``voxpipe`` without relying on PATH."""
    if portable:
        return ["voxpipe"]
    script = Path(sys.executable).parent / "voxpipe"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "apps.cli"]


def actor_processes(cfg: Config, config_path: str | None = None, portable: bool = False) -> list[ActorProcess]:
    """The processes that run ``cfg``; ``config_path`` defaults to the file it was loaded from."""
    path = config_path or cfg.path
    if not path:
        raise ValueError("the config has no file to point the processes at")
    if not portable:
        path = str(Path(path).resolve())
    exe = voxpipe_command(portable)
    roles = [(cfg.broker.name, "broker")]
    roles += [(s.name, "capture") for s in cfg.sources]
    if cfg.vad.enabled:
        roles.append((cfg.vad.name, "vad"))
    if cfg.dispatched:
        roles.append((cfg.dispatcher.name, "dispatcher"))
    procs = [ActorProcess(name, role, tuple(exe + [role, "--config", path, "--name", name])) for name, role in roles]
    for w in cfg.workers:
        for k, name in enumerate(w.actor_names(), 1):
            replica = ["--replica", str(k)] if w.replicas > 1 else []
            procs.append(ActorProcess(name, "worker", tuple(exe + ["worker", "--config", path, "--name", w.name]
                                                            + replica)))
    procs += [ActorProcess(s.name, "sink", tuple(exe + ["sink", "--config", path, "--name", s.name]))
              for s in cfg.sinks]
    if cfg.web.enabled:
        procs.append(ActorProcess(cfg.web.name, "web", tuple(exe + ["web", "--config", path, "--name", cfg.web.name])))
    if cfg.gateway.enabled:
        procs.append(ActorProcess(cfg.gateway.name, "serve",
                                  tuple(exe + ["serve", "--config", path, "--name", cfg.gateway.name])))
    if cfg.metrics.enabled:  # the metrics actor (workers/metrics.py); stops with the sinks
        name = cfg.metrics.name
        procs.append(ActorProcess(name, "metrics", tuple(exe + ["metrics", "--config", path, "--name", name])))
    return procs


def render_procfile(procs: list[ActorProcess]) -> str:
    return "".join(f"{p.name}: {p.cmd}\n" for p in procs)


def stop_stages(procs: list[ActorProcess]) -> list[list[str]]:
    """Process names grouped in stopping order; roles not listed in STOP_STAGES stop with the sinks."""
    known = {role for stage in STOP_STAGES for role in stage}
    stages = []
    for stage in STOP_STAGES:
        roles = set(stage)
        if "sink" in roles:
            roles |= {p.role for p in procs if p.role not in known}
        names = [p.name for p in procs if p.role in roles]
        if names:
            stages.append(names)
    return stages
