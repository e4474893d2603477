"""Whether a backend keeps up with live audio: its real-time factor over the recent decodes.

The real-time factor (RTF) here is the backend's speed: seconds spent decoding per second of
audio decoded (each decode covers the whole buffer). Above 1, decoding a buffer takes longer
than the buffer lasts, so every decode falls further behind the speaker: a live transcript
lags more and more (until the buffer's hard bound cuts it). Below 1 the lag stays bounded.

:class:`KeepUpMonitor` sums the decodes of the last ``window_s`` seconds and judges only once
they hold at least ``min_decode_s`` of decoding, so one slow decode (a cold cache, another
process on the CPU) is not a verdict. It reports the moment the RTF *stays* above 1 (falls
behind) and the moment it is back below ``recover`` (keeps up again), once each, so its
owner can warn once per episode.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

BEHIND = "behind"
KEEPING_UP = "keeping_up"


@dataclass
class KeepUpMonitor:
    window_s: float = 10.0  # seconds of recent decodes that count
    min_decode_s: float = 2.0  # decoding time the window must hold before a verdict
    limit: float = 1.0  # RTF above this: falling behind
    recover: float = 0.9  # RTF below this (after falling behind): keeping up again
    behind: bool = False
    _decodes: deque = field(default_factory=deque)  # (time, decode seconds, audio seconds)

    def add(self, now: float, decode_seconds: float, audio_seconds: float) -> str | None:
        """One finished step's cost; returns :data:`BEHIND` or :data:`KEEPING_UP` when the verdict changes."""
        if decode_seconds <= 0 and audio_seconds <= 0:
            return None
        self._decodes.append((now, float(decode_seconds), float(audio_seconds)))
        while self._decodes and now - self._decodes[0][0] > self.window_s and len(self._decodes) > 1:
            self._decodes.popleft()
        spent = sum(d[1] for d in self._decodes)
        if spent < self.min_decode_s:
            return None
        rtf = self.rtf
        if not self.behind and rtf > self.limit:
            self.behind = True
            return BEHIND
        if self.behind and rtf < self.recover:
            self.behind = False
            return KEEPING_UP
        return None

    @property
    def rtf(self) -> float:
        """Decode seconds per second of audio decoded, over the window (0 before any decode)."""
        audio = sum(d[2] for d in self._decodes)
        spent = sum(d[1] for d in self._decodes)
        if audio <= 0:
            return 0.0
        return spent / audio

    @property
    def window_seconds(self) -> float:
        """Wall seconds the window's decodes span."""
        return self._decodes[-1][0] - self._decodes[0][0] if len(self._decodes) > 1 else 0.0
