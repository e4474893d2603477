#!/usr/bin/env python3
"""Words the worker would commit on audio without speech: the deterministic replay, no VAD.

The three clips of tests/nonspeech.py (a quiet microphone, room noise, music-like tones;
30 s each) go to a streaming session frame by frame, as a worker with ``input: audio``
sees them, under several chunk sizes and both replay clocks (decoding taking no time,
or its CPU time). Every committed word is a hallucination; the last line is their count.

    scripts/nonspeech_replay.py [--model tiny.en] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "scripts")]

from commit_policy_sweep import parse_setting, run_clip, split_setting  # noqa: E402

from asr_core.registry import create_backend  # noqa: E402
from tests.nonspeech import KINDS, make  # noqa: E402

CHUNKINGS = ("min_chunk_size=0.5", "min_chunk_size=0.6", "min_chunk_size=0.75", "min_chunk_size=0.9",
             "min_chunk_size=1.0, first_chunk_size=0, utterance_chunk_size=0", "min_chunk_size=1.25")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    asr = create_backend("faster-whisper", "en", args.model)
    total = 0
    for kind in KINDS:
        audio = (make(kind, args.seconds) * 32767).astype("int16").astype("float32") / 32768  # as a WAV holds it
        for chunking in CHUNKINGS:
            options, schedule, feed = split_setting(parse_setting(f"dict(vad=None, {chunking})"))
            for clock in ("unaware", "aware"):
                text = run_clip(asr, audio, options, schedule, feed, clock).text.strip()
                total += len(text.split())
                if text:
                    print(f"{kind} ({chunking}, clock {clock}): {text[:100]!r}")
    print(f"words committed on {len(KINDS)} clips x {len(CHUNKINGS)} chunkings x 2 clocks: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
