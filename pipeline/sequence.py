"""Sequence numbers on the bus: the sender's counter and the receiver's gap count (protocol section 5).

Every sender numbers its messages per topic from 0 (:class:`Sequencer`); a receiver that
sees a topic's ``seq`` jump ahead knows how many messages it lost on the way
(:class:`GapCounter`). A ``seq`` below the expected one is a sender (or stream) that started
over, not a loss; after an ``eos`` the topic's next message may start from 0 again. Memory
and the count are bounded, so forged numbers cannot blow either up.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict

MAX_TRACKED_TOPICS = 4096  # topics whose next seq is remembered (least recent forgotten first)
MAX_GAP_COUNT = 1_000_000  # a single seq jump counts at most this much


class Sequencer:
    """Per-topic (or per-stream) sequence numbers for one sender, from 0."""

    def __init__(self) -> None:
        self._next: dict[str, int] = defaultdict(int)

    def __call__(self, key: str) -> int:
        n = self._next[key]
        self._next[key] = n + 1
        return n

    def forget(self, key: str) -> None:
        self._next.pop(key, None)

    def continue_from(self, key: str, next_seq: int) -> None:
        """Number ``key``'s next message ``next_seq`` (a pool worker taking over a topic another one numbered)."""
        self._next[key] = int(next_seq)


class GapCounter:
    """Messages lost per topic, from ``seq`` jumps; ``observe`` returns how many were missing just before."""

    def __init__(self, max_topics: int = MAX_TRACKED_TOPICS, max_jump: int = MAX_GAP_COUNT) -> None:
        self.max_topics = max_topics
        self.max_jump = max_jump
        self.total = 0
        self._expect: OrderedDict[str, int] = OrderedDict()  # topic -> next seq, most recent last

    def observe(self, topic: str, seq: int, ends: bool = False) -> int:
        """Account for message ``seq`` on ``topic`` (``ends``: it was the topic's eos)."""
        expected = self._expect.pop(topic, None)
        missing = min(seq - expected, self.max_jump) if expected is not None and seq > expected else 0
        self.total += missing
        if not ends:
            self._expect[topic] = seq + 1
            if len(self._expect) > self.max_topics:
                self._expect.popitem(last=False)
        return missing

    def forget(self, topic: str) -> None:
        self._expect.pop(topic, None)
