#!/usr/bin/env python3
"""How firm is the offline reference? One pass over each clip of a corpus, three ways, with N BLAS threads.

The streaming WER is judged against one offline pass of the same model. This
prints, per group of clips (clean, ``*_noisy``, ``*_gaps``), the word errors of
that pass as the bench makes it (the worker's decoder: one short window, beam
3), with beam 5 in the same window, and with faster-whisper's own loop and beam
5 (its ``transcribe`` defaults), all with ``--blas-threads`` threads (the
pipeline runs with 1, asr_core/blas.py). Run it with 1 and with 2 to see how far
the numerics alone move the reference.

Usage: scripts/offline_reference.py [--corpus DIR] [--blas-threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSES = (("the bench's (short window, beam 3)", {}), ("short window, beam 5", {"beam_size": 5}),
          ("faster-whisper's loop, beam 5", {"beam_size": 5, "window": "full"}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--blas-threads", type=int, default=1)
    args = ap.parse_args()
    from asr_core.blas import VARIABLES  # (imports no numpy)

    for name in VARIABLES:  # before numpy is imported
        os.environ[name] = str(args.blas_threads)

    from apps.bench.evaluation import reference_text
    from apps.bench.metrics import word_errors
    from asr_core.audio import load_audio
    from asr_core.registry import create_backend

    clips = sorted(Path(args.corpus).glob("*.wav"))
    groups = {"clean": [c for c in clips if "_" not in c.stem],
              "noisy": [c for c in clips if c.stem.endswith("_noisy")],
              "gaps": [c for c in clips if c.stem.endswith("_gaps")]}
    print(f"BLAS threads: {args.blas_threads}")
    print("| pass | " + " | ".join(f"{g} errors / words (WER)" for g, cs in groups.items() if cs) + " |")
    print("|---|" + "---|" * sum(1 for cs in groups.values() if cs))
    for label, opts in PASSES:
        asr = create_backend("faster-whisper", "en", args.model, device="cpu", **opts)
        cells = []
        for cs in groups.values():
            if not cs:
                continue
            errors = words = 0
            for clip in cs:
                text = "".join(w[2] for w in asr.ts_words(asr.transcribe(load_audio(clip))))
                e, n = word_errors(reference_text(clip), text)
                errors, words = errors + e, words + n
            cells.append(f"{errors} / {words} ({errors / words:.3f})")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
