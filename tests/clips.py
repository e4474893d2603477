"""The speech clips of tests/data, whole or cut, as the tests play them.

Most real-time tests do not need a clip's full 25 s to prove what they prove: two or
three sentences (10 to 16 s) carry enough words for a WER, and every second cut is a
second less of the suite. :func:`sentences` cuts a clip after its N-th sentence, in
the silence that follows it, and gives the reference text of exactly those sentences.

The cut points (:data:`SENTENCE_ENDS`) are the ends of the digital silences after each
sentence (``tests.conftest.silences(name, 0.15)``), checked against tiny.en's word
times (the sentence's last word ends inside that silence).
"""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
RATE = 16000

#: clip -> where the silence after its 1st, 2nd, ... sentence ends (s)
SENTENCE_ENDS: dict[str, tuple[float, ...]] = {
    "weather": (2.93, 8.22, 12.59, 17.14, 21.75),
    "kitchen": (6.83, 10.87, 15.63, 20.14),
    "history": (6.36, 11.69, 17.58),
    "meeting": (2.32, 5.82, 12.77, 18.41, 20.73, 25.53),
}


def pcm(name: str) -> np.ndarray:
    """The clip ``tests/data/NAME.wav`` as 16-bit samples (16 kHz mono)."""
    with wave.open(str(DATA / f"{name}.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2), name
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """``samples`` (int16, or float in [-1, 1]) as a 16 kHz mono 16-bit WAV at ``path``."""
    if samples.dtype.kind == "f":
        samples = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def head(name: str, seconds: float, folder: Path) -> Path:
    """The first ``seconds`` of the clip, written under ``folder``."""
    return write_wav(Path(folder) / f"{name}-{seconds:g}s.wav", pcm(name)[: int(seconds * RATE)])


def sentence_texts(name: str) -> list[str]:
    """The clip's reference text, sentence by sentence."""
    from apps.bench.evaluation import reference_text

    return re.split(r"(?<=[.!?])\s+", reference_text(DATA / f"{name}.wav").strip())


def sentences(name: str, n: int, folder: Path, lead: float = 0.0, tail: float = 0.0) -> tuple[Path, str]:
    """The clip's first ``n`` sentences (with ``lead``/``tail`` s of silence around), and their reference text."""
    ends = SENTENCE_ENDS[name]
    assert 1 <= n <= len(ends), f"{name}: cut points for at most {len(ends)} sentences"
    texts = sentence_texts(name)
    assert len(texts) > n, f"{name}: the reference has {len(texts)} sentences"
    x = pcm(name)[: int(ends[n - 1] * RATE)]
    x = np.concatenate([np.zeros(int(lead * RATE), "<i2"), x, np.zeros(int(tail * RATE), "<i2")])
    path = write_wav(Path(folder) / f"{name}-{n}-sentences.wav", x)
    return path, " ".join(texts[:n])
