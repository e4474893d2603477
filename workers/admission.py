"""Who gets a stream slot when every slot is taken: a flood of stream ids does not starve a real stream.

An actor that keeps per-stream state (the VAD, a worker) has ``max_streams`` slots. When they are
all taken, a new stream may still take the slot of a *spare* one: a stream that never carried
speech (the VAD) or was never decoded (a worker), so nothing of it is lost:

* any new stream may take the slot of a spare stream that has been quiet for ``quiet`` seconds
  (the least recently heard first);
* a stream that keeps coming back after being refused (a real stream sends a frame every 100 ms;
  a flood sends each id once) is *persistent*: it takes the slot of the spare stream that has
  sent the fewest frames, quiet or not, so a stream that starts during a flood of one-frame
  streams is in at its second frame.

Otherwise the new stream is refused (the caller counts it, ``streams_refused``). Refusals are
remembered for ``remember`` seconds, for at most ``max_waiting`` stream ids.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

QUIET_S = 0.3
REMEMBER_S = 1.0
MAX_WAITING = 1024


@dataclass(frozen=True)
class Slot:
    last_seen: float  # monotonic time of its latest message
    frames: int  # messages it has sent
    spare: bool  # it never carried speech / was never decoded: its slot may be given away


class Admission:
    def __init__(self, quiet: float = QUIET_S, remember: float = REMEMBER_S, max_waiting: int = MAX_WAITING):
        self.quiet, self.remember, self.max_waiting = quiet, remember, max_waiting
        self.waiting: OrderedDict[str, float] = OrderedDict()  # refused stream -> when

    def victim(self, stream: str, slots: dict[str, Slot], now: float) -> str | None:
        """With every slot taken: the stream whose slot ``stream`` takes, or None (refused: remembered)."""
        spare = [(slot, name) for name, slot in slots.items() if slot.spare]
        while self.waiting and next(iter(self.waiting.values())) < now - self.remember:
            self.waiting.popitem(last=False)
        persistent = stream in self.waiting
        if persistent and spare:
            chosen = min(spare, key=lambda x: (x[0].frames, x[0].last_seen))[1]
        else:
            quiet = [(slot.last_seen, name) for slot, name in spare if now - slot.last_seen >= self.quiet]
            chosen = min(quiet)[1] if quiet else None
        if chosen is None:
            self.waiting.pop(stream, None)
            self.waiting[stream] = now
            while len(self.waiting) > self.max_waiting:
                self.waiting.popitem(last=False)
        else:
            self.waiting.pop(stream, None)
        return chosen
