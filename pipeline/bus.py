"""Sockets on the voxpipe bus: a publisher and a subscriber per actor.

Every actor's PUB connects to the broker's XSUB endpoint and every SUB to its
XPUB endpoint; endpoints come from the config (:class:`pipeline.config.BusConfig`).
High-water marks bound every queue (a slow subscriber loses messages, it never
slows the publisher down), ``linger`` bounds shutdown, and reconnection is
automatic, so actors survive a broker restart: a SUB socket sends its
subscriptions again when it reconnects, and the broker's XSUB passes every
subscription it holds to each publisher that (re)connects. With
``bus.security.curve`` every socket is a CURVE client (:mod:`pipeline.security`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import zmq

from . import messages as m
from .sequence import Sequencer

log = logging.getLogger("voxpipe.bus")


# a frame larger than this makes the broker drop the sender's connection (the protocol allows 160000 bytes)
MAX_WIRE_BYTES = 1 << 20
HEARTBEAT_MS = 2000  # ZMTP pings: a peer silent for 3 of these is disconnected (and reconnected)
RECONNECT_MAX_MS = 2000  # the longest wait between reconnection attempts (they back off from 100 ms)


def apply_options(sock: zmq.Socket, bus) -> None:
    """Options every bus socket shares: bounded linger, fast reconnects, ZMTP heartbeats."""
    sock.setsockopt(zmq.LINGER, int(bus.linger_ms))
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_MS)


def prepare_bind(endpoint: str) -> None:
    """Before binding ``endpoint``: an ``ipc://`` socket's folder is made, private (0700), if it is missing.

    A bus on ``ipc://`` endpoints in such a folder admits only programs of the pipeline's user (and
    root): the safe single-host choice where other local users are not to be trusted (Linux, macOS).
    """
    import os
    from pathlib import Path

    scheme, _, path = endpoint.partition("://")
    if scheme == "ipc" and path and not path.startswith("@"):  # "@name": Linux's abstract namespace
        folder = Path(path).parent
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)


def _apply_common(sock: zmq.Socket, bus) -> None:
    apply_options(sock, bus)
    security = getattr(bus, "security", None)
    if security is not None and security.enabled:
        from .security import apply_client_keys

        apply_client_keys(sock, security)


class Publisher:
    """PUB socket connected to the broker's XSUB; counts what it could not send.

    With ``watch_subscriptions`` it is an XPUB instead, which also tells its owner which
    subscriptions have reached it (:meth:`subscription_changes`): a sender that must not
    publish into the void before a given subscriber listens (the pool dispatcher) waits for them.
    """

    def __init__(self, ctx: zmq.Context, bus, watch_subscriptions: bool = False) -> None:
        self.sock = ctx.socket(zmq.XPUB if watch_subscriptions else zmq.PUB)
        if watch_subscriptions:
            self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.sock.setsockopt(zmq.SNDHWM, int(bus.hwm))
        _apply_common(self.sock, bus)
        self.sock.connect(bus.xsub)
        self.seq = Sequencer()
        self.sent = 0
        self.dropped = 0

    def send(self, topic: str, msg: m.Message) -> bool:
        try:
            self.sock.send_multipart(m.encode(topic, msg), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def subscription_changes(self, limit: int = 1000) -> list[tuple[bool, str]]:
        """(subscribed, prefix) for each (un)subscription that has arrived (``watch_subscriptions`` only)."""
        out = []
        for _ in range(limit):
            try:
                frame = self.sock.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            if frame[:1] in (b"\x00", b"\x01"):
                out.append((frame[:1] == b"\x01", frame[1:].decode("utf-8", "replace")))
        return out

    def close(self) -> None:
        self.sock.close()


class Subscriber:
    """SUB socket connected to the broker's XPUB, subscribed to topic prefixes."""

    def __init__(self, ctx: zmq.Context, bus, prefixes: Iterable[str]) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, int(bus.hwm))
        _apply_common(self.sock, bus)
        self.sock.connect(bus.xpub)
        self.prefixes: list[str] = []
        for p in prefixes:
            self.subscribe(p)

    def subscribe(self, prefix: str) -> None:
        self.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
        self.prefixes.append(prefix)

    def recv_frames(self, timeout_ms: int | None = None) -> list[bytes] | None:
        if timeout_ms is not None and not self.sock.poll(timeout_ms):
            return None
        return self.sock.recv_multipart(copy=True)

    def recv(self, timeout_ms: int | None = None) -> tuple[str, m.Message] | None:
        """Next valid message, or None on timeout; raises ProtocolError on a bad one."""
        frames = self.recv_frames(timeout_ms)
        return None if frames is None else m.decode(frames)

    def close(self) -> None:
        self.sock.close()


def handshake(
    pub: Publisher, sub: Subscriber, name: str, timeout: float = 10.0, backlog: list | None = None
) -> bool:
    """Wait until a probe sent on our PUB comes back on our SUB through the broker.

    Proves both directions through the broker work and that subscriptions
    already made by other actors have reached our publisher, so nothing we
    send next is lost to the "slow joiner" race. Other messages that arrive
    meanwhile are appended to ``backlog`` (when given) rather than lost.
    Returns False on timeout.
    """
    topic = m.status_topic(name)
    sub.subscribe(topic)
    deadline = time.monotonic() + timeout
    probe_seq = 0
    while time.monotonic() < deadline:
        pub.send(topic, m.Heartbeat(stream="", seq=probe_seq, name=name, role="probe", time=time.time()))
        probe_seq += 1
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            frames = sub.recv_frames(timeout_ms=20)
            if frames is None:
                continue
            try:
                t, msg = m.decode(frames)
            except m.ProtocolError:
                t, msg = "", None
            if t != topic or not isinstance(msg, m.Heartbeat) or msg.role != "probe":
                if backlog is not None:
                    backlog.append(frames)
                continue
            else:
                sub.sock.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
                sub.prefixes.remove(topic)
                return True
    sub.sock.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
    sub.prefixes.remove(topic)
    return False
