"""Launching a whole pipeline from its config: ``voxpipe procfile`` and ``voxpipe up``.

* ``voxpipe procfile CONFIG`` prints one Procfile line per actor
  (:mod:`apps.plan`); ``--portable`` writes ``voxpipe`` and the config
  path as given (the repository's ``Procfile`` is made that way).
* ``voxpipe up CONFIG`` validates the config (a bad one: one line, exit 3,
  nothing started) and checks that every port it names is free (exit 1), then
  runs every actor with honcho (:mod:`apps.runner`). SIGINT/SIGTERM stops the
  pipeline in order (sources send eos, the VAD passes it on, workers flush,
  sinks write, broker last) and exits 130/143 like honcho. A source that ends
  (its file is done, exit 0) leaves the rest running; any other exit is a crash:
  the actor is restarted under the config's restart rule (:mod:`apps.restart`),
  and when it keeps failing the pipeline stops with one line and exit 1.

Beside them: ``voxpipe transcribe FILE`` (:mod:`apps.transcribe`), ``voxpipe web`` without a
config (:mod:`apps.web`, which runs its pipeline with :func:`run_processes`), ``voxpipe export``
(:mod:`apps.export`), ``voxpipe keys DIR`` (:mod:`pipeline.security`).
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time

from pipeline.config import load_config
from pipeline.errors import ExitCode, RuntimeFailure

from .runner import SignalCounter

STOP_TIMEOUT = 30.0


# -- procfile ----------------------------------------------------------------------------------
def run_procfile(args) -> int:
    from .plan import actor_processes, render_procfile

    cfg = load_config(args.config)
    procs = actor_processes(cfg, args.config if args.portable else None, portable=args.portable)
    sys.stdout.write(render_procfile(procs))
    return 0


# -- up -------------------------------------------------------------------------------------------
def busy_endpoints(bus) -> list[str]:
    """The bus's TCP endpoints that something on this machine already listens on."""
    return [ep for ep in (bus.xsub, bus.xpub) if endpoint_busy(ep)]


def busy_ports(cfg) -> list[str]:
    """``key endpoint`` for every endpoint the config has an actor bind that is taken already."""
    from pipeline.config import bound_endpoints

    return [f"{key} {ep}" for key, ep in bound_endpoints(cfg) if endpoint_busy(ep)]


def check_ports(cfg) -> None:
    """Every port the config binds (bus, snapshots, web, health) is free, or one line and exit 1."""
    busy = busy_ports(cfg)
    if busy:
        raise RuntimeFailure(f"cannot start: {' and '.join(busy)} already in use (another pipeline on this bus?)")


def endpoint_busy(ep: str) -> bool:
    """Something on this machine listens on this TCP endpoint already (other schemes: never)."""
    mt = re.match(r"^tcp://\[?([^\]]+?)\]?:(\d+)$", ep)
    if not mt:
        return False
    host = "0.0.0.0" if mt.group(1) == "*" else mt.group(1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ does: TIME_WAIT is no obstacle
        try:
            s.bind((host, int(mt.group(2))))
        except OSError:
            return True
    return False


def run_up(args) -> int:
    from .plan import actor_processes

    cfg = load_config(args.config, check_backends=True)
    check_ports(cfg)
    return run_processes(actor_processes(cfg), args.stop_timeout, cfg.restart, cfg.bus)


def run_processes(procs, stop_timeout: float = STOP_TIMEOUT, rule=None, bus=None) -> int:
    """Run a pipeline's processes (honcho), restarting crashed actors under ``rule`` (a
    :class:`pipeline.config.RestartConfig`; hang detection needs the ``bus``), until one keeps
    failing or a signal comes; stop them in order; the exit code."""
    from pipeline.config_schema import RestartConfig

    from .plan import stop_stages
    from .restart import HeartbeatWatch, RestartTracker
    from .runner import ProcessRunner

    rule = rule or RestartConfig()
    roles = {p.name: p.role for p in procs}
    runner = ProcessRunner(procs)
    tracker = RestartTracker(rule)
    watch = HeartbeatWatch(bus, roles, rule.hang_timeout) if rule.hang_timeout and bus is not None else None
    signals = SignalCounter().install()
    runner.start()
    rc = None
    gave_up = ""
    due: dict[str, float] = {}  # actor -> when to start it again
    try:
        while rc is None:
            for name, code in runner.poll(0.1):
                if watch is not None:
                    watch.forget(name)
                if roles[name] == "capture" and code == 0:
                    runner.say(f"{name} has finished its input; the rest keeps running (Ctrl-C to stop)")
                    continue
                delay = tracker.failed(name, time.monotonic())
                if delay is None:
                    gave_up = (f"{name} failed {tracker.count(name)} times within {rule.window:.0f}s (last exit "
                               f"rc={code}): stopping the pipeline")
                    runner.say(gave_up)
                    rc = ExitCode.RUNTIME
                    break
                runner.say(f"{name} exited (rc={code}): restarting it in {delay:.1f}s "
                           f"(failure {tracker.count(name)} of {rule.max_failures} allowed within {rule.window:.0f}s)")
                due[name] = time.monotonic() + delay
            if rc is None and signals.count:
                rc = int(ExitCode.for_signal(signals.first))
                runner.say("stop signal: stopping the pipeline in order (again to force)")
                break
            now = time.monotonic()
            for name, at in list(due.items()):
                if rc is None and now >= at:
                    del due[name]
                    runner.restart(name, env={"VOXPIPE_RESTARTS": str(tracker.restarts.get(name, 0))})
            for name in watch.hung(now) if watch is not None and rc is None else ():
                if name in runner.running([name]):
                    runner.say(f"{name} sent no heartbeat for {rule.hang_timeout:.0f}s: killing it (to restart it)")
                    runner.signal([name], signal.SIGKILL)
            if rc is None and not runner.running() and not due:
                rc = 0
    finally:
        if watch is not None:
            watch.close()
    limit = 1 if signals.count else 0  # one more signal than the one that stopped us forces it
    force = lambda: signals.count > limit  # noqa: E731
    runner.stop(stop_stages(procs), timeout=stop_timeout, force=force)
    if gave_up:
        raise RuntimeFailure(gave_up)
    return rc


# -- command line ---------------------------------------------------------------------------------
def register(sub) -> None:
    p = sub.add_parser("procfile", help="print the Procfile lines for a pipeline config")
    p.add_argument("config", help="pipeline YAML")
    p.add_argument("--portable", action="store_true",
                   help="plain 'voxpipe' and the config path as given (for a Procfile kept in the repository)")
    p.set_defaults(func=run_procfile)

    p = sub.add_parser("up", help="validate a pipeline config and run all its actors (honcho)")
    p.add_argument("config", help="pipeline YAML")
    p.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT,
                   help="seconds each stage may take to stop before it is killed (default %(default)s)")
    p.set_defaults(func=run_up)
