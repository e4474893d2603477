"""Streaming voice activity detection: Silero VAD through onnxruntime (no torch).

:class:`SileroVAD` turns 512-sample windows of 16 kHz audio into speech
probabilities, carrying the model state between calls. :class:`SpeechSegmenter`
turns those probabilities into speech start / end events with hysteresis
(start at ``threshold``, end after ``min_silence_ms`` below
``neg_threshold``) and padding, in absolute stream time.

The ONNX model is the one shipped inside the faster-whisper package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import BackendError

SAMPLING_RATE = 16000
WINDOW = 512
CONTEXT = 64


class VADUnavailable(BackendError):
    """The Silero model or onnxruntime is missing (exit code 4, like any model that cannot load)."""


def silero_model_path() -> Path:
    env = os.environ.get("VOXPIPE_SILERO_ONNX")
    if env:
        return Path(env)
    try:
        from faster_whisper.utils import get_assets_path
    except ImportError as exc:
        raise VADUnavailable("Silero VAD needs the faster-whisper package (it ships the ONNX model)") from exc
    path = Path(get_assets_path()) / "silero_vad_v6.onnx"
    if not path.is_file():
        candidates = sorted(Path(get_assets_path()).glob("silero*.onnx"))
        if not candidates:
            raise VADUnavailable(f"no Silero VAD ONNX model in {get_assets_path()}")
        path = candidates[-1]
    return path


class SileroVAD:
    """Stateful Silero VAD over a stream of 512-sample windows."""

    def __init__(self, path: str | Path | None = None):
        try:
            import onnxruntime
        except ImportError as exc:
            raise VADUnavailable("Silero VAD needs onnxruntime: pip install onnxruntime") from exc
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            str(path or silero_model_path()), providers=["CPUExecutionProvider"], sess_options=opts
        )
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Speech probabilities for each complete window that ``audio`` finishes."""
        buf = np.concatenate([self._pending, np.asarray(audio, dtype=np.float32)])
        n = len(buf) // WINDOW
        self._pending = buf[n * WINDOW :]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        windows = buf[: n * WINDOW].reshape(n, WINDOW)
        contexts = np.empty((n, CONTEXT), dtype=np.float32)
        contexts[0] = self._context
        if n > 1:
            contexts[1:] = windows[:-1, -CONTEXT:]
        self._context = windows[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        probs, self._h, self._c = self.session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(probs, dtype=np.float32).reshape(-1)


@dataclass(frozen=True)
class VADOptions:
    """Speech detection settings; the defaults are the pipeline's VAD (``vad:`` in a config)."""

    threshold: float = 0.5  # speech starts at this probability
    neg_threshold: float = 0.35  # and is silence below this one
    min_silence_ms: int = 300  # a pause this long ends a speech segment (the worker flushes there)
    speech_pad_ms: int = 100  # kept before and after speech
    min_speech_ms: int = 100  # (not used yet)

    def __post_init__(self):
        if not 0 < self.neg_threshold <= self.threshold < 1:
            raise ValueError("VAD thresholds need 0 < neg_threshold <= threshold < 1")
        if self.min_silence_ms < 0 or self.speech_pad_ms < 0 or self.min_speech_ms < 0:
            raise ValueError("min_silence_ms, speech_pad_ms and min_speech_ms must be >= 0")


@dataclass(frozen=True)
class SpeechEvent:
    kind: str  # "start" | "end"
    t: float  # stream seconds (padding included)


class SpeechSegmenter:
    """Speech start/end events from a stream of audio, in stream seconds."""

    def __init__(self, options: VADOptions | None = None, model: SileroVAD | None = None, t0: float = 0.0):
        self.options = options or VADOptions()
        self.model = model or SileroVAD()
        self.reset(t0)

    def reset(self, t0: float = 0.0) -> None:
        self.model.reset()
        self.t0 = t0  # stream time of the first sample: padding never reaches before it
        self.t = t0  # stream time of the next window
        self.in_speech = False
        self._speech_start = None
        self._silence_since = None

    @property
    def pause_started(self) -> float | None:
        """Stream time at which the current pause began, while in speech (None if not pausing)."""
        return self._silence_since if self.in_speech else None

    def process(self, audio: np.ndarray) -> list[SpeechEvent]:
        o = self.options
        pad = o.speech_pad_ms / 1000.0
        events: list[SpeechEvent] = []
        for p in self.model(audio):
            w0 = self.t
            self.t += WINDOW / SAMPLING_RATE
            if not self.in_speech:
                if p >= o.threshold:
                    self.in_speech = True
                    self._silence_since = None
                    self._speech_start = max(self.t0, w0 - pad)
                    events.append(SpeechEvent("start", self._speech_start))
                continue
            if p < o.neg_threshold:
                if self._silence_since is None:
                    self._silence_since = w0
                if self.t - self._silence_since >= o.min_silence_ms / 1000.0:
                    events.append(SpeechEvent("end", self._silence_since + pad))
                    self.in_speech = False
                    self._silence_since = None
            elif p >= o.threshold:
                self._silence_since = None
        return events

    def flush(self) -> list[SpeechEvent]:
        """End an open speech segment at the end of the stream."""
        if self.in_speech:
            self.in_speech = False
            return [SpeechEvent("end", self.t)]
        return []
