"""One client connection's audio on the bus (the server thread's side).

The connection pushes 16 kHz mono int16 audio (:meth:`BusStream.push`); it
goes out in frames of ``frame_s`` (100 ms for live clients, like a
microphone's; 0.5 s for uploads) on ``audio.<stream>``, with ``t`` the stream
position and ``wall0`` such that ``wall0 + t_end`` is never later than the
moment the frame was sent (the capture's rule for live and for fast replay,
docs/protocol.md section 6).

:meth:`BusStream.end_segment` ends the current bus stream with ``eos`` (the
VAD closes its segment, the worker flushes everything and sends ``eos`` on the
transcript topic); the next audio starts a new bus stream
(``<id>-1``, ``<id>-2``, ...) whose stream time 0 is the connection's second
:attr:`BusStream.seconds` at that point: that is how a flush in the middle of
a connection (Deepgram's ``Finalize``, a Realtime ``commit``) is done without
any new message on the bus. Every message of those streams comes back on
:attr:`BusStream.queue` and is fed to the connection's :class:`.results.Results`.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from pipeline import messages as m

from .hub import GatewayHub
from .results import Results

SR = m.SAMPLE_RATE
LIVE_FRAME_S = 0.1
UPLOAD_FRAME_S = 0.5


class BusStream:
    def __init__(self, hub: GatewayHub, kind: str, results: Results, frame_s: float = LIVE_FRAME_S):
        self.hub = hub
        self.results = results
        self.id = hub.new_stream_id(kind)
        self.frame = int(frame_s * SR)
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.stream: str | None = None  # the open segment's bus stream
        self.segments: list[str] = []
        self.samples = 0  # connection samples pushed
        self._seg_samples = 0  # samples published in the open segment
        self._pending = np.zeros(0, dtype="<i2")
        self._wall0: float | None = None

    @property
    def seconds(self) -> float:
        """Connection seconds of audio pushed so far."""
        return self.samples / SR

    def push(self, pcm: np.ndarray) -> None:
        """16 kHz mono int16 samples, in order."""
        if not len(pcm):
            return
        if self.stream is None:
            self._open_segment()
        self._pending = np.concatenate([self._pending, pcm]) if len(self._pending) else np.asarray(pcm, "<i2")
        self.samples += len(pcm)
        while len(self._pending) >= self.frame:
            self._emit(self._pending[: self.frame])
            self._pending = self._pending[self.frame:]

    def end_segment(self, discard: bool = False) -> str | None:
        """End the open bus stream (its last frame, then ``eos``); None if none was open."""
        if self.stream is None:
            return None
        if len(self._pending):
            self._emit(self._pending)
            self._pending = np.zeros(0, dtype="<i2")
        ended = self.stream
        self.hub.send_eos(ended, self._seg_samples / SR)
        self.results.finalizing(ended, discard=discard)
        self.stream, self._wall0 = None, None
        return ended

    def close(self) -> None:
        """The connection is gone: end its audio; stop listening to every segment."""
        self.end_segment()
        for s in self.segments:
            self.hub.unroute(s)

    async def next_message(self, timeout: float) -> tuple[str, m.Message] | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def drain_messages(self) -> list[tuple[str, m.Message]]:
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    # -- inside --------------------------------------------------------------------------------------
    def _open_segment(self) -> None:
        n = len(self.segments)
        self.stream = self.id if n == 0 else f"{self.id}-{n}"
        self.segments.append(self.stream)
        self._seg_samples = 0
        self.hub.route(self.stream, self.loop, self.queue)
        self.results.add_segment(self.stream, self.samples / SR)

    def _emit(self, pcm: np.ndarray) -> None:
        t = self._seg_samples / SR
        wall0 = time.time() - (t + len(pcm) / SR)
        self._wall0 = wall0 if self._wall0 is None else min(self._wall0, wall0)
        self.hub.send_audio(self.stream, t, self._wall0, pcm.tobytes())
        self._seg_samples += len(pcm)
