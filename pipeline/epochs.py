"""Stale transcript messages of a dispatched pool: the one rule every subscriber applies.

A pool's commits, partials, errors and ``eos`` carry the ``epoch`` of the assignment that
made them (docs/protocol.md, section 11). When the dispatcher moves a stream to another
worker (the old one stopped heartbeating, or it is draining) the epoch grows. A worker that
was presumed dead but is still alive may publish a few more messages with its old epoch:
they are *stale* and must be ignored, or a word would be committed twice.

:class:`EpochFilter` keeps, per pool and stream (``transcript.<pool>.<stream>`` and
``partial.<pool>.<stream>`` together), the newest epoch seen and says whether a message is
current. Messages without an epoch (workers outside a pool, older senders) are always
current. An admitted ``eos`` ends the stream (a stream id used again starts over). Memory is
bounded: the least recently used streams are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict

from . import messages as m

MAX_TOPICS = 4096


class EpochFilter:
    def __init__(self, max_topics: int = MAX_TOPICS):
        self.max_topics = max_topics
        self._epochs: OrderedDict[str, int] = OrderedDict()
        self.stale = 0  # messages refused so far

    def admit(self, topic: str, msg: m.Message) -> bool:
        """True if ``msg`` on ``topic`` is current (deliver it), False if it is stale (drop it)."""
        epoch = getattr(msg, "epoch", None)
        if epoch is None:
            return True
        key = self._key(topic)
        newest = self._epochs.pop(key, None)
        if newest is not None and epoch < newest:
            self._epochs[key] = newest
            self.stale += 1
            return False
        if isinstance(msg, m.EndOfStream):
            return True  # the stream ended: forget it
        self._epochs[key] = epoch
        while len(self._epochs) > self.max_topics:
            self._epochs.popitem(last=False)
        return True

    def epoch(self, topic: str) -> int | None:
        """The newest epoch seen for ``topic``'s pool and stream (None: none, or the stream ended)."""
        return self._epochs.get(self._key(topic))

    @staticmethod
    def _key(topic: str) -> str:
        family, _, rest = topic.partition(".")
        return rest if family in ("transcript", "partial") else topic
