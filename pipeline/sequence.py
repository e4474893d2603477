"""Sequence numbers on the bus: the sender's counter and the receiver's gap count (protocol section 5).

Every sender numbers its messages per topic from 0 (:class:`Sequencer`); a receiver that
sees a topic's ``seq`` jump ahead knows how many messages it lost on the way
(:class:`GapCounter`). A ``seq`` below the expected one is a sender (or stream) that started
over, not a loss; after an ``eos`` the topic's next message may start from 0 again. Memory
and the count are bounded, so forged numbers cannot blow either up: a jump of more than
``max_plausible`` is not counted as a loss (``implausible`` counts it) and moves nothing,
unless the topic's next message continues from it (then the sender really jumped).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict

MAX_TRACKED_TOPICS = 4096  # topics whose next seq is remembered (least recent forgotten first)
MAX_GAP_COUNT = 1_000_000  # a single seq jump counts at most this much
MAX_PLAUSIBLE_JUMP = 10_000  # a longer jump is a forged seq until the next message continues it


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

    def __init__(self, max_topics: int = MAX_TRACKED_TOPICS, max_jump: int = MAX_GAP_COUNT,
                 max_plausible: int = MAX_PLAUSIBLE_JUMP) -> None:
        self.max_topics = max_topics
        self.max_jump = max_jump
        self.max_plausible = max_plausible
        self.total = 0
        self.implausible = 0  # jumps too long to be losses (forged seq values)
        self.restarted = False  # the last observed message started a new run (seq below the expected one)
        self._expect: OrderedDict[str, int] = OrderedDict()  # topic -> next seq, most recent last
        self._suspect: OrderedDict[str, int] = OrderedDict()  # topic -> seq of an implausible jump

    def observe(self, topic: str, seq: int, ends: bool = False) -> int:
        """Account for message ``seq`` on ``topic`` (``ends``: it was the topic's eos)."""
        expected = self._expect.pop(topic, None)
        suspect = self._suspect.pop(topic, None)
        self.restarted = expected is not None and seq < expected
        missing = 0
        if expected is not None and seq - expected > self.max_plausible:
            if suspect != seq - 1:
                self.implausible += 1  # moves nothing, unless the next message continues it
                self._remember(self._suspect, topic, seq)
                self._remember(self._expect, topic, expected)
                return 0
            # the sender did jump (two in a row): go on from here, without counting a loss
        elif expected is not None and seq > expected:
            missing = min(seq - expected, self.max_jump)
        self.total += missing
        if not ends:
            self._remember(self._expect, topic, seq + 1)
        return missing

    def _remember(self, table: OrderedDict, topic: str, value: int) -> None:
        table[topic] = value
        if len(table) > self.max_topics:
            table.popitem(last=False)

    def forget(self, topic: str) -> None:
        self._expect.pop(topic, None)
        self._suspect.pop(topic, None)
