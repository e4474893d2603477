"""The restart rule: one crashed actor is restarted, the rest go on; an actor that keeps failing stops it all.

Under ``voxpipe up`` (:mod:`apps.launch`) every actor runs under :class:`RestartRule` (the
config's ``restart:`` section): when it exits unexpectedly (any exit but a source's 0, which
means its input is done) it is started again after a back-off (``backoff`` seconds, doubling
with each failure in the ``window``, at most ``backoff_max``); its ``max_failures``-th
failure within ``window`` seconds gives up, and the pipeline stops with one line saying
who failed how often. An actor that is alive but sends no heartbeat for ``hang_timeout``
seconds (liveness, :mod:`pipeline.liveness`) is killed, and so restarted by the same rule.

The restarted process finds the streams where they are: a worker or the VAD picks each
live stream up from its next message, and the worker says what was lost with an ``error``
on the stream's transcript topic (:mod:`workers.asr_worker`). ``VOXPIPE_RESTARTS`` in its
environment counts its restarts.

The same rule goes into the process-manager exports (:mod:`apps.export`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pipeline.config import RestartConfig


@dataclass
class RestartTracker:
    """Failures per actor within the rule's window; what to do about the next one."""

    rule: RestartConfig = field(default_factory=RestartConfig)

    def __post_init__(self) -> None:
        self.failures: dict[str, deque] = {}
        self.restarts: dict[str, int] = {}

    def failed(self, name: str, now: float) -> float | None:
        """``name`` just failed: seconds to wait before restarting it, or None (give up)."""
        recent = self.failures.setdefault(name, deque())
        recent.append(now)
        while recent and recent[0] < now - self.rule.window:
            recent.popleft()
        if len(recent) >= self.rule.max_failures:
            return None
        self.restarts[name] = self.restarts.get(name, 0) + 1
        return min(self.rule.backoff_max, self.rule.backoff * 2 ** (len(recent) - 1))

    def count(self, name: str) -> int:
        """Failures of ``name`` within the window (as of its last failure)."""
        return len(self.failures.get(name, ()))


class HeartbeatWatch:
    """Heartbeats of the launched actors, read off the bus: who has gone silent while still running.

    An actor counts only once its current run has sent a heartbeat (loading a model takes a
    while before the first one): :meth:`forget` it when it exits or is started again.
    """

    def __init__(self, bus, names, hang_timeout: float):
        import math

        import zmq

        from pipeline.bus import Subscriber
        from pipeline.liveness import Liveness

        self.names = set(names)
        self.liveness = Liveness(bus.heartbeat_interval, max(3, math.ceil(hang_timeout / bus.heartbeat_interval)))
        self.ctx = zmq.Context()
        self.sub = Subscriber(self.ctx, bus, ["status."])

    def hung(self, now: float) -> list[str]:
        """Read what has come; the launched actors that have just passed the hang timeout."""
        from pipeline import messages as m

        while True:
            frames = self.sub.recv_frames(timeout_ms=0)
            if frames is None:
                break
            try:
                _, msg = m.decode(frames)
            except m.ProtocolError:
                continue
            if isinstance(msg, m.Heartbeat) and msg.role != "probe" and msg.name in self.names:
                self.liveness.beat(msg, now)
        return [p.name for p in self.liveness.newly_dead(now)]

    def forget(self, name: str) -> None:
        self.liveness.forget(name)

    def close(self) -> None:
        self.sub.close()
        self.ctx.term()


# -- supervisord: the rule as an event listener ---------------------------------------------------------
def guard_events(stdin, stdout, group: str, tracker: RestartTracker, stop, log, clock=None) -> None:
    """supervisord's event listener protocol: count unexpected exits of ``group``'s programs; ``stop`` it on
    the rule's last straw (or when supervisord gave up starting one, FATAL)."""
    import time as _time

    from supervisor import childutils

    clock = clock or _time.monotonic
    while True:
        childutils.listener.ready(stdout)
        line = stdin.readline()
        if not line:  # supervisord is gone
            return
        headers = childutils.get_headers(line)
        payload = stdin.read(int(headers.get("len", 0)))
        event = headers.get("eventname", "")
        fields = dict(tok.split(":", 1) for tok in payload.split() if ":" in tok)
        name, in_group = fields.get("processname", "?"), fields.get("groupname") == group
        why = None
        if in_group and event == "PROCESS_STATE_EXITED" and fields.get("expected") == "0":
            if tracker.failed(name, clock()) is None:
                why = f"{name} failed {tracker.count(name)} times within {tracker.rule.window:g}s"
            else:
                log(f"voxpipe: {name} exited unexpectedly ({tracker.count(name)} of {tracker.rule.max_failures} "
                    f"failures allowed within {tracker.rule.window:g}s): supervisord restarts it")
        elif in_group and event == "PROCESS_STATE_FATAL":
            why = f"{name} could not be started"
        if why:
            log(f"voxpipe: {why}: stopping the pipeline (group {group})")
            stop(group)
        childutils.listener.ok(stdout)


def register(sub) -> None:
    p = sub.add_parser("restart-guard", help="(supervisord event listener) stop the pipeline's group when one "
                                             "program keeps failing (made by voxpipe export supervisord)")
    p.add_argument("--group", required=True, help="the supervisord group of the pipeline")
    p.add_argument("--max-failures", type=int, default=RestartConfig.max_failures)
    p.add_argument("--window", type=float, default=RestartConfig.window)
    p.set_defaults(func=run_guard)


def run_guard(args) -> int:
    import os
    import sys

    from supervisor import childutils

    def stop(group: str) -> None:
        childutils.getRPCInterface(os.environ).supervisor.stopProcessGroup(group, False)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    rule = RestartConfig(max_failures=args.max_failures, window=args.window)
    guard_events(sys.stdin, sys.stdout, args.group, RestartTracker(rule), stop, log)
    return 0
