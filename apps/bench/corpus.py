"""The clips a bench replays: ``NAME.wav`` beside ``NAME.json`` (with a ``text`` field).

The default corpus is the repository's ``tests/data``; ``--corpus DIR`` names
another. The clips with long pauses (``*_gaps``) are left out unless
``--all-clips`` is given, and ``--clips a,b`` picks any clips by name, in that
order. Each clip belongs to a group by its name: ``*_noisy`` (speech with pauses
under noise), ``*_gaps``, or ``clean`` (the rest, on which the published targets
are stated); the figures are reported per group.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent.parent


class CorpusError(UsageError):
    """A corpus or clip that cannot be used: one line for the user."""


@dataclass(frozen=True)
class Clip:
    name: str
    wav: Path
    text: str
    seconds: float

    @property
    def group(self) -> str:
        """``noisy`` (``*_noisy``), ``gaps`` (``*_gaps``) or ``clean``: the figures are reported per group."""
        return group_of(self.name)

    @property
    def slug(self) -> str:
        """The name as it may appear in stream and actor ids."""
        return re.sub(r"[^A-Za-z0-9_\-]", "_", self.name)[:32] or "clip"


GROUPS = ("clean", "noisy", "gaps")


def group_of(name: str) -> str:
    for group in GROUPS[1:]:
        if name.endswith("_" + group):
            return group
    return "clean"


def default_corpus() -> Path:
    here = ROOT / "tests" / "data"
    return here if here.is_dir() else Path("tests/data")


def wav_seconds(path: Path) -> float:
    from asr_core.audio import AudioFileError, load_audio

    try:
        return len(load_audio(path)) / 16000.0
    except AudioFileError as exc:
        raise CorpusError(str(exc)) from None


def load_clip(wav: Path) -> Clip:
    meta = wav.with_suffix(".json")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except OSError:
        raise CorpusError(f"{wav}: no reference file {meta.name} beside it") from None
    except ValueError as exc:
        raise CorpusError(f"{meta}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise CorpusError(f"{meta}: needs a text field (the reference transcript)")
    return Clip(wav.stem, wav.resolve(), data["text"], wav_seconds(wav))


def load_corpus(directory: str | Path | None = None, clips: list[str] | None = None,
                clean_only: bool = True) -> list[Clip]:
    """The selected clips: ``clips`` by name, else every clip (without ``*_gaps`` when ``clean_only``)."""
    folder = Path(directory) if directory else default_corpus()
    if not folder.is_dir():
        raise CorpusError(f"corpus {str(folder)!r} is not a folder")
    wavs = {p.stem: p for p in sorted(folder.glob("*.wav")) if p.with_suffix(".json").is_file()}
    if clips:
        missing = [c for c in clips if c not in wavs]
        if missing:
            raise CorpusError(f"no clip {missing[0]!r} in {folder} (have: {', '.join(wavs) or 'none'})")
        names = list(clips)
    else:
        names = [n for n in wavs if not (clean_only and n.endswith("_gaps"))]
    if not names:
        raise CorpusError(f"no clips (NAME.wav with NAME.json) in {folder}")
    return [load_clip(wavs[n]) for n in names]
