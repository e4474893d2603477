"""Transcript formats: pure functions from commits to JSONL, SRT, WebVTT and text.

Nothing here touches files or the bus; :mod:`pipeline.outputs` does the
writing. A commit's ``words`` (``[[beg, end, word], ...]``, stream seconds)
are grouped into subtitle cues by :class:`CueBuilder`:

* a cue ends after a word that ends a sentence (``.``, ``?``, ``!``);
* a cue never spans more than ``max_seconds`` (7 s) or ``max_chars`` (84
  characters, i.e. two lines of 42); when the next word would overflow it,
  the cue is cut at its last clause boundary (``,``, ``;``, ``:``) in its
  second half if it has one, else just before that word;
* a pause longer than ``max_gap`` (1.5 s) between two words also ends a cue.

A commit without word timings is spread evenly over its ``beg``..``end``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline import messages as m

MAX_CUE_SECONDS = 7.0
MAX_CUE_CHARS = 84
LINE_CHARS = 42
MAX_GAP_SECONDS = 1.5
SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
CLAUSE_END = (",", ";", ":", "，")
MIN_CUE_SECONDS = 0.1


@dataclass(frozen=True)
class Word:
    beg: float
    end: float
    text: str


@dataclass(frozen=True)
class Cue:
    beg: float
    end: float
    text: str


# -- timestamps ----------------------------------------------------------------------
def _hmsms(seconds: float) -> tuple[int, int, int, int]:
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    mi, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return h, mi, s, ms


def srt_time(seconds: float) -> str:
    """``HH:MM:SS,mmm`` (SubRip)."""
    h, mi, s, ms = _hmsms(seconds)
    return f"{h:02d}:{mi:02d}:{s:02d},{ms:03d}"


def vtt_time(seconds: float) -> str:
    """``HH:MM:SS.mmm`` (WebVTT)."""
    h, mi, s, ms = _hmsms(seconds)
    return f"{h:02d}:{mi:02d}:{s:02d}.{ms:03d}"


# -- words and cues -----------------------------------------------------------------------
def commit_words(commit: m.Commit) -> list[Word]:
    """The commit's timed words (stripped, empty ones dropped); spread its text if it has none."""
    words = [Word(float(b), float(e), str(w).strip()) for b, e, w in commit.words]
    words = [w for w in words if w.text]
    if words:
        return words
    tokens = commit.text.split()
    if not tokens:
        return []
    beg, end = float(commit.beg), max(float(commit.end), float(commit.beg))
    step = (end - beg) / len(tokens)
    return [Word(beg + i * step, beg + (i + 1) * step, t) for i, t in enumerate(tokens)]


def join_words(words: Iterable[Word]) -> str:
    return " ".join(w.text for w in words)


class CueBuilder:
    """Groups words, fed in time order, into cues; returns each cue as it completes."""

    def __init__(self, max_seconds: float = MAX_CUE_SECONDS, max_chars: int = MAX_CUE_CHARS,
                 max_gap: float = MAX_GAP_SECONDS):
        self.max_seconds, self.max_chars, self.max_gap = max_seconds, max_chars, max_gap
        self.pending: list[Word] = []

    def add(self, words: Iterable[Word]) -> list[Cue]:
        done: list[Cue] = []
        for w in words:
            if self.pending and w.beg - self.pending[-1].end > self.max_gap:
                done.append(self._close(len(self.pending)))
            while self.pending and not self._fits(self.pending + [w]):
                done.append(self._close(self._cut_point()))
            self.pending.append(w)
            if w.text.endswith(SENTENCE_END):
                done.append(self._close(len(self.pending)))
        return done

    def flush(self) -> list[Cue]:
        """The cue in progress, if any (at end of stream)."""
        return [self._close(len(self.pending))] if self.pending else []

    def _fits(self, words: list[Word]) -> bool:
        if len(words) == 1:
            return True
        return words[-1].end - words[0].beg <= self.max_seconds and len(join_words(words)) <= self.max_chars

    def _cut_point(self) -> int:
        """How many pending words go into the cue being cut: at a clause end in the second half, or all."""
        n = len(self.pending)
        for i in range(n - 1, n // 2 - 1, -1):
            if i < n - 1 and self.pending[i].text.endswith(CLAUSE_END):
                return i + 1
        return n

    def _close(self, n: int) -> Cue:
        words, self.pending = self.pending[:n], self.pending[n:]
        return Cue(words[0].beg, max(words[-1].end, words[0].beg), join_words(words))


def wrap_cue_text(text: str, width: int = LINE_CHARS) -> list[str]:
    """One line if it fits, else two lines split at the space nearest the middle (greedy past that)."""
    if len(text) <= width:
        return [text]
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces:
        return [text]
    mid = len(text) / 2
    cut = min(spaces, key=lambda i: abs(i - mid))
    first, second = text[:cut], text[cut + 1:]
    if len(first) <= width and len(second) <= width:
        return [first, second]
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


def tidy_cues(cues: list[Cue]) -> list[Cue]:
    """Cues sorted by start, each at least MIN_CUE_SECONDS long, none overlapping the next."""
    cues = sorted((c for c in cues if c.text.strip()), key=lambda c: c.beg)
    out = []
    for i, c in enumerate(cues):
        end = max(c.end, c.beg + MIN_CUE_SECONDS)
        if i + 1 < len(cues):
            end = min(end, max(cues[i + 1].beg, c.beg + 0.001))
        out.append(Cue(c.beg, end, c.text))
    return out


def render_srt(cues: list[Cue]) -> str:
    blocks = []
    for i, c in enumerate(tidy_cues(cues), 1):
        lines = "\n".join(wrap_cue_text(c.text))
        blocks.append(f"{i}\n{srt_time(c.beg)} --> {srt_time(c.end)}\n{lines}\n")
    return "\n".join(blocks)


def render_vtt(cues: list[Cue], note: str | None = None) -> str:
    parts = ["WEBVTT\n"]
    if note:
        parts.append(f"NOTE {note}\n")
    for c in tidy_cues(cues):
        lines = "\n".join(wrap_cue_text(c.text))
        parts.append(f"{vtt_time(c.beg)} --> {vtt_time(c.end)}\n{lines}\n")
    return "\n".join(parts)


# -- JSONL and text ---------------------------------------------------------------------------
def jsonl_record(topic: str, msg: m.Message, received: float | None = None) -> dict:
    """One JSON object for a commit, eos or error: the message's fields plus topic and receive time."""
    record = {"kind": msg.kind, "topic": topic}
    record.update(m.as_dict(msg))
    if not record.get("worker"):
        record["worker"] = m.parse_topic(topic).worker
    record["received"] = round(time.time() if received is None else received, 6)
    return record


def jsonl_line(topic: str, msg: m.Message, received: float | None = None) -> str:
    return json.dumps(jsonl_record(topic, msg, received), ensure_ascii=False) + "\n"


def join_commit_texts(texts: Iterable[str]) -> str:
    """Running text from commit texts (words carry their own leading spaces, or none)."""
    return " ".join(t.strip() for t in texts if t and t.strip())


def render_txt(paragraphs: list[tuple[str | None, str]]) -> str:
    """One paragraph (one line) per entry, blank lines between; a label prefixes it when given."""
    out = []
    for label, text in paragraphs:
        out.append(f"[{label}] {text}" if label else text)
    return "\n\n".join(out) + ("\n" if out else "")
