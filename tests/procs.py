"""Process helpers for tests that run real voxpipe actors on loopback.

Plain helpers, usable from any test file::

    from tests.procs import Pipeline

    with Pipeline(tmp_path) as p:            # two free ports, a broker
        p.start("vad", ["vad"])             # voxpipe vad --xsub ... --xpub ...
        p.wait_ready("vad")                 # heartbeat with ready: true
        sub = p.subscribe("speech.")         # a synced pipeline.client.Subscription
        p.start("cap", ["capture", "file:x.wav", "--speed", "0", "--wait-for", "vad"])
        ...
    # every process is stopped (SIGTERM, then SIGKILL) on exit, even on failure

Nothing here sleeps blindly: waits are on heartbeats, handshakes or process
exits, each with a deadline. Each process's stderr goes to a log file under
the pipeline's folder; :meth:`Pipeline.logs` gathers them for failure messages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from pipeline import messages as m

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
VOXPIPE = [sys.executable, "-m", "apps.cli"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Bus:
    xsub: str
    xpub: str

    @classmethod
    def free(cls) -> Bus:
        a = free_port()
        b = free_port()
        while b == a:
            b = free_port()
        return cls(f"tcp://127.0.0.1:{a}", f"tcp://127.0.0.1:{b}")

    def args(self) -> list[str]:
        return ["--xsub", self.xsub, "--xpub", self.xpub]

    def config(self, security=None):
        """A :class:`pipeline.config.BusConfig` for these endpoints (for Publisher/Subscriber)."""
        from pipeline.config import BusConfig, SecurityConfig

        return BusConfig(xsub=self.xsub, xpub=self.xpub, security=security or SecurityConfig())

    def yaml(self, security=None) -> str:
        text = f"bus:\n  xsub: {self.xsub}\n  xpub: {self.xpub}\n"
        if security is not None and security.curve:
            text += f"  security:\n    curve: true\n    keys_dir: {security.keys_dir}\n    client: {security.client}\n"
        return text


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


class Proc:
    """A started process with its stderr in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 cwd: str | None = None, **popen):
        """``popen``: more subprocess.Popen arguments (stdin, stdout, text, ...)."""
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # a process started again under the same name keeps the earlier log
        self.popen = subprocess.Popen(argv, stderr=self._log, env=env or child_env(), cwd=cwd or str(ROOT), **popen)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, timeout: float) -> int:
        """Exit code; raises TimeoutError (with the log) if still running after ``timeout``."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still running after {timeout}s\n{self.log()[-3000:]}") from None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.popen.stdin, self.popen.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._log.close()


def start_actor(args: list[str], env: dict | None = None, *, name: str | None = None, log_dir: str | Path | None = None,
                **popen) -> Proc:
    """``voxpipe <args>`` as a process (stderr to ``log_dir/<name>.log``)."""
    name = name or args[0]
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="voxpipe-test-"))
    return Proc(name, VOXPIPE + list(args), log_dir / f"{name}.log", env=child_env(env), **popen)


def heartbeats(xpub: str, timeout: float, prefix: str = "status.", security=None):
    """Yield (time, Heartbeat) from the bus until ``timeout`` seconds have passed (CURVE keys: ``security``)."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if security is not None and security.curve:
        from pipeline.security import apply_client_keys

        apply_client_keys(sock, security)
    sock.connect(xpub)
    sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(min(left, 0.2) * 1000) + 1):
                yield time.monotonic(), None  # lets callers check on their processes
                continue
            try:
                _, msg = m.decode(sock.recv_multipart())
            except m.ProtocolError:
                continue
            if isinstance(msg, m.Heartbeat) and msg.role != "probe":
                yield time.monotonic(), msg
    finally:
        sock.close()


def wait_ready(xpub: str, names, timeout: float = 30.0, procs: list[Proc] | None = None,
               security=None) -> dict[str, m.Heartbeat]:
    """Wait for a heartbeat with ``ready: true`` from every actor in ``names``.

    Returns the first ready heartbeat of each. Raises TimeoutError naming the
    missing actors, or RuntimeError as soon as one of ``procs`` has exited.
    """
    names = [names] if isinstance(names, str) else list(names)
    seen: dict[str, m.Heartbeat] = {}
    for _, hb in heartbeats(xpub, timeout, security=security):
        if hb is not None and hb.ready and hb.name in names:
            seen.setdefault(hb.name, hb)
            if len(seen) == len(names):
                return seen
        for p in procs or ():
            if not p.alive():
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode} before being ready\n{p.log()[-3000:]}")
    raise TimeoutError(f"not ready after {timeout}s: {sorted(set(names) - set(seen))}")


def wait_heartbeat(xpub: str, name: str, predicate, timeout: float = 10.0, security=None) -> m.Heartbeat:
    """The first heartbeat from ``name`` for which ``predicate(hb)`` is true."""
    last = None
    for _, hb in heartbeats(xpub, timeout, prefix=m.status_topic(name), security=security):
        if hb is not None and hb.name == name:
            last = hb
            if predicate(hb):
                return hb
    raise TimeoutError(f"no matching heartbeat from {name} in {timeout}s (last: {last})")


class Pipeline:
    """A broker on two free ports plus any ``voxpipe`` commands; all stopped on exit."""

    def __init__(self, workdir: str | Path | None = None, env: dict | None = None, broker: bool = True,
                 ready_timeout: float = 20.0, curve_keys: str | Path | None = None, actors: str = ""):
        """``curve_keys``: a ``voxpipe keys`` folder; the bus then runs with CURVE (every ``start`` gets
        ``--config`` with the bus section, and the pipeline's own sockets use the client keys).
        ``actors``: YAML of the pipeline's actors (sources, workers, sinks) for the broker's config: with
        CURVE, the broker lets each actor's key publish only that actor's topics."""
        from pipeline.config import SecurityConfig

        self.dir = Path(workdir or tempfile.mkdtemp(prefix="voxpipe-test-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = env or {}
        self.bus = Bus.free()
        self.security = SecurityConfig(curve=True, keys_dir=str(curve_keys)) if curve_keys else None
        self.bus_config_path: Path | None = None
        if self.security is not None:
            self.bus_config_path = self.dir / "bus.yaml"
            self.bus_config_path.write_text(self.bus.yaml(self.security))
        self.broker_config: Path | None = None
        if actors:
            self.broker_config = self.dir / "broker.yaml"
            self.broker_config.write_text(self.bus.yaml(self.security) + actors)
        self.procs: dict[str, Proc] = {}
        self.ready_timeout = ready_timeout
        self._subs: list = []
        self._want_broker = broker

    def __enter__(self) -> Pipeline:
        try:
            if self._want_broker:
                self.start("broker", ["broker"] + (["--config", str(self.broker_config)] if self.broker_config else []))
                self.wait_ready("broker")
        except BaseException:
            self.stop_all()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    # -- processes -------------------------------------------------------------------------
    def start(self, name: str, args: list[str], *, bus: bool = True, env: dict | None = None, **popen) -> Proc:
        """``voxpipe <args> [--xsub X --xpub Y]`` as process ``name`` (a unique label)."""
        if name in self.procs and self.procs[name].alive():
            raise ValueError(f"a process named {name!r} is running")
        argv = list(args) + (self.bus.args() if bus else [])
        if bus and self.bus_config_path is not None and "--config" not in argv:
            argv += ["--config", str(self.bus_config_path)]
        proc = Proc(name, VOXPIPE + argv, self.dir / f"{name}.log", env=child_env({**self.env, **(env or {})}), **popen)
        self.procs[name] = proc
        return proc

    def spawn(self, name: str, argv: list[str], env: dict | None = None, **popen) -> Proc:
        """Any command (not only voxpipe) as process ``name``, stopped with the others.

        ``env`` is the complete environment (default: :func:`child_env`).
        """
        proc = Proc(name, list(argv), self.dir / f"{name}.log", env=env or child_env(self.env), **popen)
        self.procs[name] = proc
        return proc

    def wait_ready(self, *names: str, timeout: float | None = None) -> dict[str, m.Heartbeat]:
        return wait_ready(self.bus.xpub, names, timeout or self.ready_timeout, procs=list(self.procs.values()),
                          security=self.security)

    def wait_heartbeat(self, name: str, predicate, timeout: float = 10.0) -> m.Heartbeat:
        return wait_heartbeat(self.bus.xpub, name, predicate, timeout, security=self.security)

    def wait_exit(self, name: str, timeout: float = 30.0) -> int:
        return self.procs[name].wait(timeout)

    def stop(self, name: str, timeout: float = 10.0) -> int:
        """SIGTERM (drain), then SIGKILL after ``timeout``; the exit code."""
        p = self.procs[name]
        p.signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except TimeoutError:
            p.kill()
            return p.popen.returncode

    def stop_all(self, timeout: float = 5.0) -> None:
        for sub in self._subs:
            sub.close()
        procs = list(self.procs.values())[::-1]
        for p in procs:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            p.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {n} (rc={p.popen.poll()}) ---\n{p.log()[-2000:]}" for n, p in self.procs.items())

    # -- bus access ---------------------------------------------------------------------------
    def subscribe(self, *prefixes: str, timeout: float | None = 30.0, sync: bool = True, **kwargs):
        """A :class:`pipeline.client.Subscription` on this bus, synced (probe round trip) unless told not to."""
        from pipeline.client import Subscription

        kwargs.setdefault("config", self.bus.config(self.security))
        sub = Subscription(list(prefixes), xpub=self.bus.xpub, xsub=self.bus.xsub, timeout=timeout, **kwargs)
        self._subs.append(sub)
        if sync and not sub.sync(timeout=10.0):
            raise TimeoutError("subscription did not sync through the broker")
        return sub

    def write_config(self, body: str, name: str = "pipeline.yaml") -> Path:
        """A YAML config: this pipeline's ``bus:`` section (with its security) followed by ``body``."""
        path = self.dir / name
        path.write_text(self.bus.yaml(self.security) + body)
        return path


class Session:
    """A command in a session of its own (e.g. a process manager) whose descendants are all killed at the end.

    It remembers every descendant it has seen (:meth:`track`, called by :meth:`alive`), since a process
    manager may have restarted some, and puts children in process groups of their own.
    """

    def __init__(self, argv: list[str], log_path: Path, env: dict | None = None, cwd: str | None = None):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # a process started again under the same name keeps the earlier log
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd or str(ROOT),
                                      env=env or child_env(), start_new_session=True)
        self.known: dict[int, object] = {}

    def track(self) -> None:
        import psutil

        try:
            for c in psutil.Process(self.popen.pid).children(recursive=True):
                self.known.setdefault(c.pid, c)
        except psutil.NoSuchProcess:
            pass

    def alive(self) -> bool:
        self.track()
        return self.popen.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def cleanup(self, timeout: float = 30.0) -> None:
        """SIGTERM to the session (the manager stops its children), then SIGKILL to whatever is left."""
        self.track()
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for proc in self.known.values():  # psutil checks the pid still is that process
            try:
                if proc.is_running():
                    if os.getpgid(proc.pid) == proc.pid:
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.kill()
            except Exception:  # noqa: BLE001 - gone meanwhile
                pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


class Vouching:
    """Heartbeats as the workers whose topics a test publishes on, the way a real worker does.

    Receivers believe a transcript only while its worker's heartbeat lists the stream, and an
    eos only once the worker's next heartbeat lists it as ended (pipeline.roster). Call
    :meth:`before` and :meth:`after` around each message sent (``send(topic, msg)`` does the rest).
    """

    def __init__(self, send):
        self.send = send
        self.served: dict[str, set] = {}
        self.seq = 0

    def beat(self, worker: str, ended=()) -> None:
        info = {"streams": sorted(self.served.get(worker, ())), **({"ended": list(ended)} if ended else {})}
        self.send(m.status_topic(worker), m.Heartbeat(stream="", seq=self.seq, name=worker, role="worker",
                                                      ready=True, pid=os.getpid(), time=time.time(), info=info))
        self.seq += 1

    def before(self, topic: str, msg: m.Message) -> None:
        parts = m.parse_topic(topic)
        if parts.family in ("transcript", "partial") and not isinstance(msg, m.EndOfStream):
            served = self.served.setdefault(parts.worker, set())
            if parts.id not in served:
                served.add(parts.id)
                self.beat(parts.worker)

    def after(self, topic: str, msg: m.Message) -> None:
        parts = m.parse_topic(topic)
        if parts.family == "transcript" and isinstance(msg, m.EndOfStream):
            self.served.setdefault(parts.worker, set()).discard(parts.id)
            self.beat(parts.worker, ended=[parts.id])


class BusPublisher:
    """A publisher for tests that can tell when a subscription has reached it.

    It is an XPUB connected to the broker's XSUB endpoint: the broker forwards
    every subscription to it, so :meth:`wait_subscribed` can wait for a
    subscriber (any process, e.g. one under test) without guessing. The broker
    forwards only the first subscription to a given prefix: give each
    subscriber you wait for its own prefix.
    """

    def __init__(self, bus: Bus, vouch: bool = False, queue_all: bool = False):
        """``vouch``: heartbeat as the workers whose transcripts it sends (:class:`Vouching`).
        ``queue_all``: no send limit (ZeroMQ's high-water mark, 1000 messages, would drop a flood's
        messages on a loaded machine before the broker sees them)."""
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 1000)
        if queue_all:
            self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.sock.connect(bus.xsub)
        self.seen: set[bytes] = set()
        self.vouching = Vouching(self._send) if vouch else None

    def wait_subscribed(self, prefix: str, timeout: float = 10.0) -> None:
        want = prefix.encode()
        deadline = time.monotonic() + timeout
        while want not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nobody subscribed to {prefix!r} in {timeout}s (seen: {sorted(self.seen)})")
            if self.sock.poll(int(left * 1000) + 1):
                frame = self.sock.recv()
                if frame[:1] == b"\x01":
                    self.seen.add(frame[1:])

    def _send(self, topic: str, msg: m.Message) -> None:
        self.sock.send_multipart(m.encode(topic, msg))

    def send(self, topic: str, msg: m.Message) -> None:
        if self.vouching is not None:
            self.vouching.before(topic, msg)
        self._send(topic, msg)
        if self.vouching is not None:
            self.vouching.after(topic, msg)

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()

    def __enter__(self) -> BusPublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
