"""Who is alive on the bus: heartbeats with a miss count.

Every actor publishes a heartbeat on ``status.<name>`` about every ``bus.heartbeat_interval``
seconds. A peer is *alive* while its heartbeats come, and *dead* once ``misses`` intervals
have passed without one (the ZeroMQ guide's Paranoid Pirate rule: dead after 3 missed).
A dead peer that heartbeats again is alive again (a restarted worker, a healed network),
with a new ``incarnation`` when its pid changed.

This is the one liveness rule: the pool dispatcher's failover, the launcher's restart
rule, ``voxpipe status`` and the metrics all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import messages as m


@dataclass
class Peer:
    name: str
    role: str
    pid: int
    last_seen: float  # monotonic seconds of the latest heartbeat
    ready: bool = False
    info: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    dead: bool = False
    incarnation: int = 0  # counts the times the peer came back with another pid


class Liveness:
    def __init__(self, interval: float = 1.0, misses: int = 3):
        if interval <= 0 or misses < 1:
            raise ValueError("interval must be positive and misses at least 1")
        self.interval = interval
        self.misses = misses
        self.peers: dict[str, Peer] = {}

    @property
    def timeout(self) -> float:
        """Seconds without a heartbeat after which a peer is dead."""
        return self.interval * self.misses

    def beat(self, hb: m.Heartbeat, now: float) -> Peer:
        """Take a heartbeat (probes are not heartbeats: the caller skips them)."""
        peer = self.peers.get(hb.name)
        if peer is None:
            peer = self.peers[hb.name] = Peer(hb.name, hb.role, hb.pid, now)
        elif peer.pid != hb.pid:
            peer.incarnation += 1
            peer.pid = hb.pid
        peer.role, peer.last_seen, peer.ready, peer.dead = hb.role, now, hb.ready, False
        peer.info, peer.counters = dict(hb.info), dict(hb.counters)
        return peer

    def age(self, name: str, now: float) -> float | None:
        peer = self.peers.get(name)
        return None if peer is None else now - peer.last_seen

    def alive(self, name: str, now: float) -> bool:
        peer = self.peers.get(name)
        return peer is not None and now - peer.last_seen < self.timeout

    def newly_dead(self, now: float) -> list[Peer]:
        """Peers that have just passed the timeout (each death is reported once)."""
        out = []
        for peer in self.peers.values():
            if not peer.dead and now - peer.last_seen >= self.timeout:
                peer.dead = True
                out.append(peer)
        return out

    def forget(self, name: str) -> None:
        self.peers.pop(name, None)
