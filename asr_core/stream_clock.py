"""A stream's clock: where the stream is in time and when it was captured, fixed by its own frames.

Every receiver of a stream's audio (the VAD's :class:`~asr_core.speech_gate.SpeechGate`, the
worker's :class:`~asr_core.streaming.StreamingSession`) keeps one. It is the one timing rule
of a stream, so that a single frame that lies about its time cannot take the stream over:

* the stream's position is the end of the last frame **taken**; the first frame fixes it;
* a frame that starts at the position (within ``tolerance``), or after a gap of at most
  ``max_jump`` seconds (frames lost on the way, a broker restart), is taken; so is a forward
  jump of any length right after a pause (:meth:`allow_jump`: the VAD leaves silence out);
* any other frame (back in time, or far ahead) is **set aside**, not taken. Set-aside frames
  that continue one another form a candidate timeline; when it holds ``confirm`` seconds of
  audio and no frame of the current timeline came meanwhile, the stream **switches** to it
  (a source that restarted from 0, a long gap that was real) and the set-aside frames are
  handed back in order, so nothing of them is lost. A frame of the current timeline drops
  the candidate: one frame at ``t = 1e6`` among real ones never moves the stream;
* ``wall0`` (the Unix time of stream time 0) is taken from taken frames only, and only when
  it moved by no more than the stream time and the wall time since the last one (plus
  ``wall_slack``): a capture replaying faster than real time moves it that much, a forged
  frame moves it arbitrarily.

No threads, no sockets: the owner passes ``now`` (monotonic seconds) for the wall0 rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

TOLERANCE = 1e-3  # seconds of timestamp jitter that still count as contiguous
MAX_JUMP = 10.0  # a forward gap this long is taken at once (lost frames); longer ones are set aside
CONFIRM = 0.5  # seconds of contiguous set-aside audio that make the stream switch to them
WALL_SLACK = 1.0  # seconds wall0 may move beyond what the elapsed stream and wall time explain
MAX_HELD = 256  # set-aside frames kept at most (tiny frames cannot grow memory)


class Verdict(str, Enum):
    TAKE = "take"  # the frame continues the stream: process it (``gap`` says how far after its end)
    HOLD = "hold"  # set aside: do nothing with it now
    SWITCH = "switch"  # the stream switched to the set-aside frames: process ``items`` in order, afresh


@dataclass(frozen=True)
class Offer:
    verdict: Verdict
    gap: float = 0.0  # TAKE: seconds between the stream's end and the frame (0 when contiguous)
    items: tuple = ()  # SWITCH: the owners' items of the new timeline, oldest first


@dataclass
class ClockCounts:
    out_of_step: int = 0  # frames set aside (not continuing the stream's time)
    switches: int = 0  # times the stream switched to a set-aside timeline
    wall0_ignored: int = 0  # frames whose wall0 jumped and was not taken


@dataclass
class _Held:
    t: float
    duration: float
    item: object
    wall0: float | None


@dataclass
class StreamClock:
    max_jump: float = MAX_JUMP
    confirm: float = CONFIRM
    tolerance: float = TOLERANCE
    wall_slack: float = WALL_SLACK
    end: float | None = None  # stream seconds just after the last taken frame
    wall0: float | None = None
    counts: ClockCounts = field(default_factory=ClockCounts)

    def __post_init__(self) -> None:
        self._held: list[_Held] = []
        self._free_jump = False
        self._wall_at: tuple[float, float] | None = None  # (stream time, now) when wall0 was last taken

    # -- the rule --------------------------------------------------------------------------
    def continues(self, t: float) -> bool:
        """Would a frame starting at ``t`` be taken now?"""
        if self.end is None:
            return True
        gap = t - self.end
        return -self.tolerance <= gap <= self.max_jump or (self._free_jump and gap > 0)

    def offer(self, t: float, duration: float, item=None, wall0: float | None = None, now: float = 0.0) -> Offer:
        """A frame of ``duration`` seconds at stream time ``t`` (``item``: what to hand back on a switch)."""
        if self.continues(t):
            gap = 0.0 if self.end is None else max(0.0, t - self.end)
            self._held.clear()
            self._free_jump = False
            self.end = t + duration if self.end is None else max(self.end, t + duration)
            self.take_wall0(wall0, t + duration, now)
            return Offer(Verdict.TAKE, gap)
        self.counts.out_of_step += 1
        held = self._held
        if not held or abs(t - (held[-1].t + held[-1].duration)) > self.tolerance or len(held) >= MAX_HELD:
            held.clear()
        held.append(_Held(t, duration, item, wall0))
        if held[-1].t + held[-1].duration - held[0].t < self.confirm:
            return Offer(Verdict.HOLD)
        # a timeline of its own, and the current one has gone quiet meanwhile: the stream is there now
        self.counts.switches += 1
        items = tuple(h.item for h in held)
        self.end = held[-1].t + held[-1].duration
        self.wall0, self._wall_at = None, None
        for h in held:
            self.take_wall0(h.wall0, h.t + h.duration, now)
        held.clear()
        self._free_jump = False
        return Offer(Verdict.SWITCH, 0.0, items)

    def allow_jump(self) -> None:
        """The next frame may jump forward by any amount (after a pause: the silence is left out)."""
        self._free_jump = True

    def take_wall0(self, wall0: float | None, t_end: float, now: float) -> bool:
        """Take ``wall0`` from a frame ending at stream time ``t_end`` unless it jumped (counted)."""
        if wall0 is None:
            return False
        if self.wall0 is not None and self._wall_at is not None:
            t_prev, now_prev = self._wall_at
            allowed = abs(t_end - t_prev) + abs(now - now_prev) + self.wall_slack
            if abs(wall0 - self.wall0) > allowed:
                self.counts.wall0_ignored += 1
                return False
        self.wall0 = float(wall0)
        self._wall_at = (t_end, now)
        return True

    @property
    def holding(self) -> float:
        """Seconds of audio set aside now."""
        return sum(h.duration for h in self._held)
