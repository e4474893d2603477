"""``voxpipe status [--config C]``: is every actor of the pipeline up and ready? For scripts and CI.

Listens to the heartbeats on the config's bus (CURVE keys work) for at most the liveness timeout
(:mod:`pipeline.liveness`: 3 heartbeat intervals, 3 s by default), or less once every actor of the
config has said it is ready, then prints one line per actor (the config's, then any other heard)::

    broker   broker  ready     age 0.3s  pid 4242  host box
    asr      worker  ready     age 0.1s  pid 4245  host box  streams 1/16

Exit 0 only when every actor of the config is ready; 1 when one is missing, down or not ready
(a worker still loading its model, or killed: it then sends no heartbeat within the timeout).
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.config import load_config
from pipeline.errors import ExitCode

from .bus_view import READY, ActorRow, BusView, drain, open_status_socket


def format_row(row: ActorRow) -> str:
    parts = [f"{row.name:<12} {row.role or '-':<8} {row.state:<8}"]
    parts.append(f"age {row.age:.1f}s" if row.age is not None else "no heartbeat")
    if row.pid:
        parts.append(f"pid {row.pid}")
    if row.host:
        parts.append(f"host {row.host}")
    if row.streams is not None and row.role == "worker":
        parts.append(f"streams {row.streams}/{row.slots}" if row.slots else f"streams {row.streams}")
    if not row.expected:
        parts.append("(not in the config)")
    return "  ".join(parts)


def watch(cfg, wait: float | None = None) -> list[ActorRow]:
    """The rows after listening until every actor is ready or ``wait`` seconds (default: the liveness timeout)."""
    import zmq

    view = BusView(cfg.actor_names(), interval=cfg.bus.heartbeat_interval)
    wait = view.liveness.timeout if wait is None else wait
    ctx = zmq.Context()
    sub = open_status_socket(ctx, cfg.bus)
    try:
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            drain(sub, view, int(min(left, 0.1) * 1000) + 1)
            if all(r.state == READY for r in view.rows() if r.expected):
                break
        return view.rows()
    finally:
        sub.close()
        ctx.term()


def register(sub) -> None:
    p = sub.add_parser("status", help="one line per actor from the bus; exit 0 only when every actor is ready")
    p.add_argument("--config", "-c", default=None, help="pipeline YAML (its bus and its actors)")
    p.add_argument("--xsub", default=None, help=argparse.SUPPRESS)  # accepted like the other commands
    p.add_argument("--xpub", default=None, help="broker XPUB endpoint (overrides the config)")
    p.add_argument("--wait", type=float, default=None,
                   help="seconds to listen at most (default: the liveness timeout, 3 heartbeat intervals)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pipeline.config import Override

    cfg = load_config(args.config, check_files=False, overrides=[Override("bus", {"xpub": args.xpub,
                                                                                 "xsub": args.xsub})])
    rows = watch(cfg, args.wait)
    for row in rows:
        print(format_row(row))
    sys.stdout.flush()
    return ExitCode.OK if all(r.ready for r in rows if r.expected) else ExitCode.RUNTIME
