"""What the pool tests check in a transcript: each word once, no hole in time, clips joined into a longer one.

Transcripts here are the JSONL sink's records (``kind``, ``topic``, ``worker``, ``epoch``,
``words`` ...). A word is ``(beg, end, text, worker)`` in stream seconds.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

from pipeline.epochs import EpochFilter
from pipeline.formats import join_commit_texts
from pipeline.messages import KINDS

OVERLAP_TOLERANCE = 0.12  # a commit may begin up to 0.1 s before the previous one ended (docs/protocol.md 4.4)


def jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def current(records: list[dict]) -> list[dict]:
    """The records a subscriber keeps: late ones of an older assignment epoch are dropped (pipeline.epochs)."""
    f = EpochFilter()
    out = []
    for r in records:
        cls = KINDS[r["kind"]]
        msg = cls(**{k: r[k] for k in ("stream", "seq", "epoch") if k in r and k in cls.__dataclass_fields__})
        if f.admit(r["topic"], msg):
            out.append(r)
    return out


def commits(records: list[dict], pool: str, stream: str) -> list[dict]:
    topic = f"transcript.{pool}.{stream}"
    return [r for r in current(records) if r["topic"] == topic and r["kind"] == "commit"]


def words(records: list[dict], pool: str, stream: str) -> list[tuple]:
    return [(w[0], w[1], w[2], r["worker"]) for r in commits(records, pool, stream) for w in r["words"]]


def text(records: list[dict], pool: str, stream: str) -> str:
    return join_commit_texts(r["text"] for r in commits(records, pool, stream))


def repeated(ws: list[tuple]) -> list[tuple]:
    """Words that start before the previous word ended (beyond the protocol's tolerance): committed twice."""
    return [(a, b) for a, b in zip(ws, ws[1:], strict=False) if b[0] < a[1] - OVERLAP_TOLERANCE]


def handovers(ws: list[tuple]) -> list[float]:
    """Where the stream went from one worker to another: the first word of the new worker."""
    return [b[0] for a, b in zip(ws, ws[1:], strict=False) if a[3] != b[3]]


def near(ws: list[tuple], times: list[float], span: float) -> str:
    """The text of the words of ``ws`` that begin within ``span`` seconds of one of ``times``."""
    return " ".join(w[2].strip() for w in ws if any(abs(w[0] - t) <= span for t in times))


def uncovered(reference: list[tuple], ws: list[tuple], before: float = float("inf"), slack: float = 0.3) -> list:
    """Words of ``reference`` ending before ``before`` that no word of ``ws`` overlaps in time: lost."""
    lost = []
    for b, e, t, *_ in reference:
        if e >= before:
            continue
        if not any(x[0] < e + slack and x[1] > b - slack for x in ws):
            lost.append((b, e, t))
    return lost


def join_clips(clips: list[Path], out: Path, gap: float = 0.6) -> str:
    """Write the clips one after the other (``gap`` seconds of silence between) as one WAV; its reference text."""
    from apps.bench.evaluation import reference_text

    parts, texts = [], []
    for c in clips:
        with wave.open(str(c), "rb") as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
            parts.append(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"))
        parts.append(np.zeros(int(gap * 16000), dtype="<i2"))
        texts.append(reference_text(c))
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.concatenate(parts[:-1]).tobytes())
    return " ".join(texts)
