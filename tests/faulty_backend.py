"""A real tiny.en backend that fails on marked audio, for the worker's error-isolation tests.

Name it in a worker's config as ``backend: tests.faulty_backend:FaultyWhisper``.
Audio that carries a marker (a run of ``RUN`` samples with exactly one int16
value, see :func:`mark`) makes ``transcribe`` raise: ``RAISE`` a
RuntimeError, ``OOM`` a MemoryError. Everything else is decoded by the real
faster-whisper model. Buffers are per stream in the worker, so a marked stream
fails and an unmarked one beside it does not.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from asr_core.backends.faster_whisper import FasterWhisperASR

RAISE = 12345
OOM = -12345
RUN = 16


def _has(audio: np.ndarray, value: int) -> bool:
    hits = (np.asarray(audio, dtype=np.float32) == np.float32(value / 32768.0)).astype(np.int32)
    return len(hits) >= RUN and int(np.convolve(hits, np.ones(RUN, dtype=np.int32), "valid").max()) >= RUN


class FaultyWhisper(FasterWhisperASR):
    def transcribe(self, audio, init_prompt: str = ""):
        if _has(audio, RAISE):
            raise RuntimeError("injected backend failure (marked audio)")
        if _has(audio, OOM):
            raise MemoryError("injected out of memory (marked audio)")
        return super().transcribe(audio, init_prompt)


def mark(src: Path, dst: Path, value: int, every: float = 0.04, seconds: float | None = None) -> Path:
    """A copy of the WAV ``src`` with a marker run every ``every`` seconds (optionally cut to ``seconds``).

    The default spacing puts a whole run in any stretch of audio the worker would decode (over 0.05 s).
    """
    with wave.open(str(src), "rb") as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
    if seconds is not None:
        x = x[: int(seconds * rate)]
    for start in range(0, len(x) - RUN, int(every * rate)):
        x[start:start + RUN] = value
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return dst


class NoModel(FasterWhisperASR):
    """A backend whose model never loads: a worker with it exits (code 4) at once, every time it starts."""

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        from asr_core.base import ModelNotFound

        raise ModelNotFound("this test backend has no model")
