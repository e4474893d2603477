"""A whole uploaded file through the pool: what the REST endpoints (OpenAI's, Deepgram's pre-recorded) share.

The decoded audio (16 kHz mono int16) goes to the bus as one stream, as fast
as the VAD and the worker take it (:class:`.results.Progress` keeps the
worker's backlog bounded), not at real time; :func:`run_file` yields the
commits as they arrive and returns at the stream's ``eos``.
:func:`timed_words` makes their word times monotonic and keeps them inside the
audio, which both APIs promise their clients.
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.formats import Word

from .bus_stream import UPLOAD_FRAME_S, BusStream
from .context import Admitted, Gateway
from .results import Final, Results, SegmentDone


def upload_timeout(duration: float) -> float:
    """How long the worker may take over ``duration`` seconds of audio before the request fails (504)."""
    return max(120.0, 3.0 * duration)


async def run_file(gw: Gateway, admitted: Admitted, pcm: np.ndarray, timeout: float, kind: str):
    """The commits of ``pcm`` sent through the pool at full speed, as they arrive (raises TimeoutError).

    ``kind`` goes into the bus stream's id (``<gateway>-<kind>-<id>``), saying which API it came from."""
    results = Results(admitted.pool)
    stream = BusStream(gw.hub, kind, results, frame_s=UPLOAD_FRAME_S)
    deadline = time.monotonic() + timeout
    sent = 0
    try:
        if not len(pcm):
            return
        while True:
            now = time.monotonic()
            while sent < len(pcm) and results.progress.may_send(stream.seconds, now):
                stream.push(pcm[sent: sent + stream.frame])
                sent += stream.frame
            if sent >= len(pcm) and stream.stream is not None:
                stream.end_segment()
            item = await stream.next_message(0.02)
            out = results.feed(item[0], item[1], time.monotonic()) if item else []
            out += results.tick(time.monotonic())
            for r in out:
                if isinstance(r, Final) and r.words:
                    yield r
                elif isinstance(r, SegmentDone):
                    return
            if now > deadline:
                raise TimeoutError
    finally:
        stream.close()


def timed_words(finals: list[Final], duration: float) -> list[Word]:
    """Every committed word, in order, with times made monotonic and kept inside the audio."""
    out: list[Word] = []
    last = 0.0
    for f in finals:
        for w in f.words:
            beg = min(max(w.beg, last), duration)
            end = min(max(w.end, beg), duration)
            out.append(Word(beg, end, w.text))
            last = beg
    return out
