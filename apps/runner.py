"""Run a pipeline's actor processes with honcho, and stop them in pipeline order.

Built on honcho's :class:`honcho.process.Process` (each command in a shell,
in a session of its own, output merged and read line by line) and
:class:`honcho.printer.Printer` (``12:00:01 name | line``). What it adds to
``honcho start``:

* processes can be started in groups (``start(names)``), so a caller can
  wait for some actors to be ready before starting others, and one that
  exited can be started again (``restart(name)``, :mod:`apps.restart`);
* :meth:`ProcessRunner.stop` is staged: SIGTERM to one stage (e.g. the
  sources), wait until it has exited (up to ``timeout``, then SIGKILL), then
  the next, broker last (see :data:`apps.plan.STOP_STAGES`). honcho
  signals everything at once and kills after 5 s, which can take the broker
  away before the workers' final flush has crossed it;
* the last lines of every process's output are kept for error reports.

Signals go to each child's process group (``killpg``), like honcho does.
"""

from __future__ import annotations

import datetime
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from honcho.colour import get_colours
from honcho.printer import Message, Printer
from honcho.process import Process

from .plan import ActorProcess

SYSTEM = "system"
FORCE_WAIT = 3.0  # after a forced stop (second signal): SIGTERM again, then SIGKILL after this


class SignalCounter:
    """Counts SIGINT/SIGTERM instead of dying of them; remembers the first."""

    def __init__(self):
        self.count = 0
        self.first: int | None = None

    def __call__(self, signum, _frame):
        self.count += 1
        if self.first is None:
            self.first = signum

    def install(self) -> SignalCounter:
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)
        return self


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the printer as they are written
    env.update(extra or {})
    return env


class ProcessRunner:
    def __init__(self, procs: Iterable[ActorProcess], printer: Printer | None = None, echo: bool = True,
                 keep_lines: int = 80, env: dict | None = None, cwd: str | None = None):
        self.procs = {p.name: p for p in procs}
        self.events: queue.Queue = queue.Queue()
        self.printer = printer if printer is not None else Printer(sys.stdout)
        self.printer.width = max([len(SYSTEM)] + [len(n) for n in self.procs])
        self.echo = echo
        self.env = child_env() if env is None else env
        self.cwd = cwd
        self.tails = {name: deque(maxlen=keep_lines) for name in self.procs}
        self.pids: dict[str, int] = {}
        self.returncodes: dict[str, int] = {}
        self.started: set[str] = set()
        self._colours = get_colours()
        self._assigned: dict = {}
        self._threads: list[threading.Thread] = []

    # -- starting --------------------------------------------------------------------------
    def start(self, names: Iterable[str] | None = None, env: dict | None = None) -> None:
        for name in (list(self.procs) if names is None else names):
            if name in self.started:
                continue
            p = self.procs[name]
            # exec: the actor replaces the shell, so signals and exit codes are its own
            proc = Process(f"exec {p.cmd}", name=name, colour=self._colour(name), env={**self.env, **(env or {})},
                           cwd=self.cwd)
            t = threading.Thread(target=proc.run, args=(self.events, False), name=f"honcho-{name}", daemon=True)
            self.started.add(name)
            t.start()
            self._threads.append(t)

    def restart(self, name: str, env: dict | None = None) -> None:
        """Start ``name`` again after it exited (its output keeps its colour)."""
        if name in self.started and name not in self.returncodes:
            return  # still running
        self.started.discard(name)
        self.returncodes.pop(name, None)
        self.pids.pop(name, None)
        self.start([name], env=env)

    def _colour(self, name: str):
        if name not in self._assigned:
            self._assigned[name] = next(self._colours)
        return self._assigned[name]

    # -- events -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """A line from the runner itself, in honcho's format."""
        msg = Message(type="line", data=text + "\n", time=datetime.datetime.now(), name=SYSTEM, colour=None)
        self.printer.write(msg)

    def poll(self, timeout: float = 0.1) -> list[tuple[str, int]]:
        """Handle pending events (waiting up to ``timeout`` for the first); returns (name, rc) of exits."""
        stopped = []
        try:
            msg = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return stopped
        while True:
            if msg.type == "line":
                text = msg.data.decode("utf-8", "replace") if isinstance(msg.data, bytes) else msg.data
                self.tails[msg.name].append(text.rstrip("\n"))
                if self.echo:
                    self.printer.write(msg)
            elif msg.type == "start":
                self.pids[msg.name] = msg.data["pid"]
                if self.echo:
                    self.say(f"{msg.name} started (pid={msg.data['pid']})")
            elif msg.type == "stop":
                rc = msg.data["returncode"]
                self.returncodes[msg.name] = rc
                stopped.append((msg.name, rc))
                if self.echo:
                    self.say(f"{msg.name} stopped (rc={rc})")
            try:
                msg = self.events.get_nowait()
            except queue.Empty:
                return stopped

    def running(self, names: Iterable[str] | None = None) -> list[str]:
        names = list(self.procs) if names is None else list(names)
        return [n for n in names if n in self.started and n not in self.returncodes]

    def tail(self, name: str, lines: int = 20) -> str:
        return "\n".join(list(self.tails[name])[-lines:])

    # -- signalling -----------------------------------------------------------------------------
    def _await_pids(self, names: list[str], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while any(n not in self.pids and n not in self.returncodes for n in names) and time.monotonic() < deadline:
            self.poll(0.05)

    def signal(self, names: Iterable[str], signum: int) -> None:
        names = self.running(names)
        self._await_pids(names)
        for n in names:
            pid = self.pids.get(n)
            if pid is None or n in self.returncodes:
                continue
            if self.echo:
                self.say(f"sending {signal.Signals(signum).name} to {n} (pid {pid})")
            try:
                os.killpg(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def wait(self, names: Iterable[str], timeout: float, interrupt: Callable[[], bool] = lambda: False) -> bool:
        """Handle events until ``names`` have all exited (True), ``timeout`` passes or ``interrupt()``."""
        names = list(names)
        deadline = time.monotonic() + timeout
        while self.running(names):
            if time.monotonic() >= deadline or interrupt():
                return False
            self.poll(0.05)
        return True

    # -- stopping ---------------------------------------------------------------------------------
    def stop(self, stages: list[list[str]], timeout: float = 30.0, force: Callable[[], bool] = lambda: False) -> None:
        """SIGTERM stage by stage, each waited for (SIGKILL after ``timeout``); ``force()`` cuts it short."""
        for stage in stages:
            if force():
                break
            names = self.running(stage)
            if not names:
                continue
            self.signal(names, signal.SIGTERM)
            if not self.wait(names, timeout, interrupt=force) and not force():
                late = self.running(names)
                self.say(f"{', '.join(late)} did not stop within {timeout:.0f}s: killing")
                self.signal(late, signal.SIGKILL)
                self.wait(late, FORCE_WAIT)
        rest = self.running()
        if rest:  # forced: a second SIGTERM makes a draining actor exit now
            self.signal(rest, signal.SIGTERM)
            if not self.wait(rest, FORCE_WAIT):
                self.signal(self.running(), signal.SIGKILL)
                self.wait(self.running(), FORCE_WAIT)
        for t in self._threads:
            t.join(timeout=1.0)
        self.poll(0)
