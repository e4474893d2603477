"""Liveness from heartbeats: alive while they come, dead after ``misses`` intervals without one, once."""

from __future__ import annotations

from pipeline import messages as m
from pipeline.liveness import Liveness


def hb(name="w1", pid=10, ready=True):
    return m.Heartbeat(stream="", seq=0, name=name, role="worker", ready=ready, pid=pid, time=0.0)


def test_a_peer_is_dead_after_three_missed_heartbeats_and_reported_once():
    live = Liveness(interval=1.0, misses=3)
    live.beat(hb(), now=0.0)
    assert live.alive("w1", 2.9) and live.newly_dead(2.9) == []
    assert not live.alive("w1", 3.0)
    assert [p.name for p in live.newly_dead(3.0)] == ["w1"]
    assert live.newly_dead(4.0) == []


def test_a_peer_that_comes_back_is_alive_and_a_new_pid_is_a_new_incarnation():
    live = Liveness(interval=1.0, misses=3)
    live.beat(hb(pid=10), 0.0)
    live.newly_dead(5.0)
    peer = live.beat(hb(pid=11), 6.0)
    assert live.alive("w1", 6.5) and not peer.dead and peer.incarnation == 1
    assert live.age("w1", 7.0) == 1.0 and live.age("nobody", 7.0) is None
