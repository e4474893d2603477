"""Gating one audio stream down to its speech, sample-exact.

A :class:`SpeechGate` feeds a stream's audio to a
:class:`asr_core.vad.SpeechSegmenter` and turns its start/end events into
what the VAD actor forwards: ``("start", n)``, ``("audio", n, samples)``,
``("end", n)``, where ``n`` is an absolute sample index in the stream
(stream time ``n / 16000``).

* Audio not yet forwarded stays in a buffer; outside speech only the last
  ``speech_pad_ms`` (the pre-roll a start reaches back into) is kept.
* Forwarded audio covers exactly ``[start, end)`` of each segment: while the
  segmenter is in speech, audio is forwarded up to the earliest time the
  segment could still end at (the start of a pending silence, or the end of
  what has been classified, plus the padding); audio in a pending silence is
  held back until the segmenter either ends the segment or resumes speech.
  So in speech audio flows with ~no delay; only pauses are held.
* Segments never overlap: a start is never before the previous end.
* Samples are int16 PCM (the bus's audio) or float32 in [-1, 1]; they are forwarded as
  they came.
* Input frames must be contiguous; the stream's time is its
  :class:`~asr_core.stream_clock.StreamClock`'s (``gate.clock``): a frame that does
  not continue it (back in time, or more than ``max_jump`` ahead) is set aside and
  produces nothing, and when the stream switches to a timeline of set-aside frames
  (a restarted source) any open segment ends and the segmenter restarts there. A
  forward gap up to ``max_fill`` seconds is filled with silence, a longer one ends
  any open segment and restarts the segmenter at the new position. ``wall0`` is the
  clock's too (``gate.wall0``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .stream_clock import StreamClock, Verdict

SR = 16000
TOLERANCE = 16  # samples (1 ms) of timestamp jitter treated as contiguous

Event = tuple  # ("start", n) | ("audio", n, samples) | ("end", n)


def to_samples(t: float) -> int:
    return int(round(t * SR))


class SpeechGate:
    def __init__(self, make_segmenter: Callable[[float], object], speech_pad_ms: int, first_sample: int = 0,
                 max_fill: float = 1.0, max_chunk: int = SR, dtype="<i2"):
        self.make_segmenter = make_segmenter
        self.dtype = np.dtype(dtype)
        self.pad = int(speech_pad_ms) * SR // 1000
        self.max_fill = int(max_fill * SR)
        self.max_chunk = int(max_chunk)
        self.segments = 0
        self.clock = StreamClock()
        self._restart(first_sample)
        self._last_end = 0

    def _restart(self, n: int) -> None:
        self.seg = self.make_segmenter(n / SR)
        self.buf = np.zeros(0, dtype=self.dtype)
        self.buf0 = n  # stream sample index of buf[0]
        self.in_speech = False

    @property
    def received(self) -> int:
        """Stream sample index just after the last received sample."""
        return self.buf0 + len(self.buf)

    @property
    def wall0(self) -> float:
        return self.clock.wall0 or 0.0

    # -- input -----------------------------------------------------------------------
    def push(self, n: int, samples: np.ndarray, wall0: float | None = None, now: float = 0.0) -> list[Event]:
        """Audio starting at sample ``n``; the events it causes (none for a frame set aside)."""
        offer = self.clock.offer(n / SR, len(samples) / SR, (n, samples), wall0, now)
        if offer.verdict is Verdict.HOLD:
            return []
        if offer.verdict is Verdict.SWITCH:
            events = self.close()
            first = offer.items[0][0]
            self._restart(first)
            self._last_end = min(self._last_end, first)
            for k, held in offer.items:
                events += self._take(k, held)
            return events
        return self._take(n, samples)

    def _take(self, n: int, samples: np.ndarray) -> list[Event]:
        events: list[Event] = []
        expected = self.received
        if n < expected - TOLERANCE:  # the clock let it through only within its tolerance
            samples = samples[expected - n:]
            n = expected
        if n > expected + TOLERANCE:
            if n - expected <= self.max_fill:
                self._feed(np.zeros(n - expected, dtype=self.dtype), events)
            else:
                events += self.close()
                self._restart(n)
        self._feed(np.asarray(samples, dtype=self.dtype), events)
        return events

    def close(self) -> list[Event]:
        """End an open segment at the end of the stream (eos, idle, shutdown)."""
        events: list[Event] = []
        if self.in_speech:
            silence = self._silence_since()
            end = self.received if silence is None else min(self.received, silence + self.pad)
            self._end(end, events)
        self.seg.flush()
        return events

    # -- internals -------------------------------------------------------------------
    def _feed(self, samples: np.ndarray, events: list[Event]) -> None:
        if len(samples) == 0:
            return
        self.buf = np.concatenate([self.buf, samples]) if len(self.buf) else samples.copy()
        floats = samples.astype(np.float32) / 32768.0 if self.dtype.kind == "i" else samples
        for ev in self.seg.process(floats):
            if ev.kind == "start" and not self.in_speech:
                self._start(to_samples(ev.t), events)
            elif ev.kind == "end" and self.in_speech:
                self._end(to_samples(ev.t), events)
        if self.in_speech:
            silence = self._silence_since()
            horizon = to_samples(self.seg.t) if silence is None else silence
            self._forward(min(self.received, horizon + self.pad), events)
        else:
            self._drop(to_samples(self.seg.t) - self.pad)

    def _silence_since(self) -> int | None:
        t = getattr(self.seg, "pause_started", None)
        return None if t is None else to_samples(t)

    def _start(self, n: int, events: list[Event]) -> None:
        n = min(max(n, self.buf0, self._last_end), self.received)
        self._drop(n)
        self.in_speech = True
        self.segments += 1
        events.append(("start", n))

    def _end(self, n: int, events: list[Event]) -> None:
        n = min(max(n, self.buf0), self.received)
        self._forward(n, events)
        self.in_speech = False
        self._last_end = n
        events.append(("end", n))

    def _forward(self, upto: int, events: list[Event]) -> None:
        while self.buf0 < upto:
            k = min(upto - self.buf0, self.max_chunk)
            events.append(("audio", self.buf0, self.buf[:k]))
            self.buf = self.buf[k:]
            self.buf0 += k

    def _drop(self, upto: int) -> None:
        k = min(max(0, upto - self.buf0), len(self.buf))
        if k:
            self.buf = self.buf[k:]
            self.buf0 += k
