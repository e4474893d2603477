"""Clips without speech, made with numpy (deterministic): silence, room noise, music-like tones.

Whisper invents text for audio like this ("Thanks for watching!", "you", a line of
notes); these clips are what the pipeline must transcribe as nothing at all.

* ``silence``: a quiet microphone: dither at about -75 dBFS with a faint mains hum;
* ``room``: room noise: pink noise (a fan, air conditioning) at about -35 dBFS, a
  50 Hz hum with harmonics, and now and then a knock or a click (a desk, a door);
* ``tones``: music-like tones: a melody of harmonic notes (a soft organ or piano:
  attack, decay, vibrato) over held chords, 100 beats per minute.

:func:`write_clip` writes one as a 16 kHz mono 16-bit WAV (what a capture reads).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

SR = 16000
KINDS = ("silence", "room", "tones")


def _db(level_dbfs: float) -> float:
    return float(10 ** (level_dbfs / 20))


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f) noise of unit RMS, by shaping white noise in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    return x / np.sqrt(np.mean(x**2))


def _hum(t: np.ndarray, base: float = 50.0) -> np.ndarray:
    return sum(np.sin(2 * np.pi * base * k * t) / k for k in (1, 2, 3, 5))


def silence(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return _db(-75) * rng.standard_normal(len(t)) + _db(-80) * _hum(t)


def room(seconds: float, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = _db(-35) * _pink(n, rng) + _db(-45) * _hum(t)
    # knocks and clicks: short decaying bursts, a few per ten seconds
    for start in rng.uniform(0, seconds - 0.5, size=max(1, int(seconds / 3))):
        i = int(start * SR)
        length = int(rng.uniform(0.01, 0.15) * SR)
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 5))
        x[i:i + length] += _db(rng.uniform(-24, -14)) * burst
    return x


NOTE_NAMES = {"C": -9, "D": -7, "E": -5, "F": -4, "G": -2, "A": 0, "B": 2}


def _freq(note: str) -> float:
    """``A4`` -> 440 Hz (no sharps needed here)."""
    return 440.0 * 2 ** ((NOTE_NAMES[note[0]] + 12 * (int(note[1:]) - 4)) / 12)


def _tone(freq: float, seconds: float, rng: np.random.Generator, vibrato: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * freq * t + (vibrato * np.sin(2 * np.pi * 5.5 * t) if vibrato else 0.0)
    x = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) * 0.6 ** (k - 1) for k in range(1, 7))
    attack = np.minimum(1.0, t / 0.02)
    return x * attack * np.exp(-t / max(seconds, 0.3) * 1.5)


def tones(seconds: float, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = np.zeros(n + SR)
    beat = 60 / 100
    melody = "E4 G4 A4 G4 E4 D4 C4 D4 E4 E4 D4 D4 E4 G4 A4 C5 B4 A4 G4 E4".split()
    chords = [("C3", "E3", "G3"), ("A2", "C3", "E3"), ("F2", "A2", "C3"), ("G2", "B2", "D3")]
    i, k = 0, 0
    while i < n:
        note = melody[k % len(melody)]
        length = beat * (2 if k % 4 == 3 else 1)
        seg = _tone(_freq(note), length, rng, vibrato=0.4)
        x[i:i + len(seg)] += 0.25 * seg[: n + SR - i]
        if k % 4 == 0:
            for c in chords[(k // 4) % len(chords)]:
                held = _tone(_freq(c), 4 * beat, rng)
                x[i:i + len(held)] += 0.12 * held[: n + SR - i]
        i += int(length * SR)
        k += 1
    x = x[:n]
    return 0.3 * x / np.max(np.abs(x))


def make(kind: str, seconds: float = 30.0) -> np.ndarray:
    """Float32 samples in [-1, 1] of one of :data:`KINDS`."""
    x = {"silence": silence, "room": room, "tones": tones}[kind](seconds)
    return np.clip(x, -1, 1).astype(np.float32)


def write_clip(path: str | Path, kind: str, seconds: float = 30.0) -> Path:
    """``make(kind, seconds)`` as a 16 kHz mono 16-bit WAV at ``path``."""
    path = Path(path)
    pcm = (make(kind, seconds) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    return path
