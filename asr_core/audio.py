"""Reading audio files as float32 mono 16 kHz, and PCM conversions."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

SAMPLING_RATE = 16000


class AudioFileError(ValueError):
    """An audio file is missing or cannot be decoded (one clear line)."""


def pcm16_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(audio: np.ndarray) -> bytes:
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def _read_plain_wav(path: Path) -> np.ndarray | None:
    """16-bit 16 kHz mono WAV through the standard library; None for anything else."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getframerate() != SAMPLING_RATE or w.getnchannels() != 1:
                return None
            return pcm16_to_float(w.readframes(w.getnframes()))
    except (wave.Error, EOFError):
        return None


def wav_truncation(path: str | Path) -> tuple[float, float] | None:
    """(seconds the WAV header promises, seconds the file holds) when it holds less (a cut-off file); else None."""
    try:
        with wave.open(str(path), "rb") as w:
            promised, rate = w.getnframes(), w.getframerate()
            held = 0
            while True:
                block = w.readframes(1 << 16)
                if not block:
                    break
                held += len(block) // (w.getsampwidth() * w.getnchannels())
    except (wave.Error, EOFError, OSError):
        return None
    if rate <= 0 or held >= promised:
        return None
    return promised / rate, held / rate


def load_audio(path: str | Path) -> np.ndarray:
    """Load any audio file as float32 mono 16 kHz (converted when needed)."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    audio = _read_plain_wav(path)
    if audio is not None:
        if audio.size == 0:
            raise AudioFileError(f"audio file {path} holds no samples")
        return audio
    try:
        from faster_whisper.audio import decode_audio
    except ImportError as exc:  # pragma: no cover
        raise AudioFileError(f"{path}: only 16 kHz mono 16-bit WAV can be read without faster-whisper (PyAV)") from exc
    try:
        audio = decode_audio(str(path), sampling_rate=SAMPLING_RATE)
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types
        raise AudioFileError(f"cannot read audio file {path}: {type(exc).__name__}: {exc}") from exc
    if audio.size == 0:
        raise AudioFileError(f"audio file {path} holds no samples")
    return np.asarray(audio, dtype=np.float32)


def resample(audio: np.ndarray, sr_from: int, sr_to: int = SAMPLING_RATE) -> np.ndarray:
    """Linear-phase polyphase-free resampling by interpolation (for live capture)."""
    if sr_from == sr_to or len(audio) == 0:
        return np.asarray(audio, dtype=np.float32)
    n_out = int(round(len(audio) * sr_to / sr_from))
    x_old = np.arange(len(audio), dtype=np.float64) / sr_from
    x_new = np.arange(n_out, dtype=np.float64) / sr_to
    return np.interp(x_new, x_old, audio).astype(np.float32)
