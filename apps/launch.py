"""Launching a whole pipeline from its config: ``voxpipe procfile`` and ``voxpipe up``.

* ``voxpipe procfile CONFIG`` prints one Procfile line per actor
  (:mod:`apps.plan`); ``--portable`` writes ``voxpipe`` and the config
  path as given (the repository's ``Procfile`` is made that way).
* ``voxpipe up CONFIG`` validates the config (a bad one: one line, exit 3,
  nothing started), then runs every actor with honcho (:mod:`apps.runner`).
  SIGINT/SIGTERM stops the pipeline in order (sources send eos, the VAD
  passes it on, workers flush, sinks write, broker last) and exits 130/143
  like honcho. A source that ends (its file is done, exit 0) leaves the rest
  running; any other exit stops everything and becomes the exit code.

Beside them: ``voxpipe transcribe FILE`` (:mod:`apps.transcribe`), ``voxpipe web`` without a
config (:mod:`apps.web`, which runs its pipeline with :func:`run_processes`), ``voxpipe export``
(:mod:`apps.export`), ``voxpipe keys DIR`` (:mod:`pipeline.security`).
"""

from __future__ import annotations

import re
import socket
import sys

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
    busy = []
    for ep in (bus.xsub, bus.xpub):
        mt = re.match(r"^tcp://\[?([^\]]+?)\]?:(\d+)$", ep)
        if not mt:
            continue
        host = "0.0.0.0" if mt.group(1) == "*" else mt.group(1)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ does: TIME_WAIT is no obstacle
            try:
                s.bind((host, int(mt.group(2))))
            except OSError:
                busy.append(ep)
    return busy


def run_up(args) -> int:
    from .plan import actor_processes

    cfg = load_config(args.config)
    check_bus_free(cfg.bus)
    return run_processes(actor_processes(cfg), args.stop_timeout)


def check_bus_free(bus) -> None:
    busy = busy_endpoints(bus)
    if busy:
        raise RuntimeFailure(f"cannot start: {' and '.join(busy)} already in use (another pipeline on this bus?)")


def run_processes(procs, stop_timeout: float = STOP_TIMEOUT) -> int:
    """Run a pipeline's processes (honcho) until one fails or a signal comes; stop them in order; the exit code."""
    from .plan import stop_stages
    from .runner import ProcessRunner

    roles = {p.name: p.role for p in procs}
    runner = ProcessRunner(procs)
    signals = SignalCounter().install()
    runner.start()
    rc = None
    while rc is None:
        for name, code in runner.poll(0.1):
            if roles[name] == "capture" and code == 0:
                runner.say(f"{name} has finished its input; the rest keeps running (Ctrl-C to stop)")
                continue
            runner.say(f"{name} exited (rc={code}): stopping the pipeline")
            rc = code if code else 1
            break
        if rc is None and signals.count:
            rc = int(ExitCode.for_signal(signals.first))
            runner.say("stop signal: stopping the pipeline in order (again to force)")
        if rc is None and not runner.running():
            rc = 0
    limit = 1 if signals.count else 0  # one more signal than the one that stopped us forces it
    force = lambda: signals.count > limit  # noqa: E731
    runner.stop(stop_stages(procs), timeout=stop_timeout, force=force)
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
