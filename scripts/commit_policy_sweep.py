#!/usr/bin/env python3
"""Commit-policy settings compared on a deterministic replay of a corpus.

Each setting is a keyword dict of changes to the pipeline's ``StreamingOptions``
(its defaults are the worker's: ``dict()`` is today's policy). Per clip, the audio
goes through exactly what ``voxpipe simulate --comp-unaware`` runs (the pipeline's
100 ms frames, VAD and streaming session: :mod:`asr_core.replay`), with the clock
stopped while decoding. Prints, per setting, the WER over the clips (word errors
summed over reference words) and the p50/p90 of each committed word's latency (the
audio time at which it was committed minus its end: decode time not included).

Usage:
  scripts/commit_policy_sweep.py [--corpus DIR] [--clips a,b] "dict()" \
      "dict(early_commit_sec=0.0)" "dict(settle_sec=0.0, early_commit_sec=0.0)"
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.bench.evaluation import percentile, reference_text, wer  # noqa: E402
from asr_core.audio import load_audio  # noqa: E402
from asr_core.online import OnlineASRProcessor, StreamingOptions  # noqa: E402
from asr_core.registry import create_backend  # noqa: E402
from asr_core.replay import Feed, stream_audio  # noqa: E402
from asr_core.streaming import Schedule, StreamingSession  # noqa: E402


def parse_setting(text: str) -> dict:
    node = ast.parse(text, mode="eval").body
    if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict" and not node.args):
        raise SystemExit(f"a setting is dict(key=value, ...), not {text!r}")
    return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}


def run_clip(asr, path: Path, options: StreamingOptions, schedule: Schedule) -> tuple[str, list[float]]:
    session = StreamingSession(OnlineASRProcessor(asr, options=options), schedule)
    texts, latencies = [], []
    for at, commit in stream_audio(session, load_audio(path), Feed(), clock="unaware"):
        texts.append(commit.text)
        latencies += [at - w[1] for w in commit.words]
    return " ".join(texts), latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("settings", nargs="+")
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "data"))
    ap.add_argument("--clips", default="history,kitchen,meeting,weather")
    ap.add_argument("--model", default="tiny.en")
    args = ap.parse_args()
    asr = create_backend("faster-whisper", lan="en", model=args.model, device="cpu")
    for text in args.settings:
        setting = parse_setting(text)
        schedule = Schedule(**{k: setting.pop(k) for k in ("min_chunk_size", "utterance_gap") if k in setting})
        errors = ref_words = 0.0
        latencies: list[float] = []
        per_clip = []
        for name in args.clips.split(","):
            path = Path(args.corpus) / f"{name}.wav"
            hyp, lat = run_clip(asr, path, StreamingOptions(**setting), schedule)
            ref = reference_text(path)
            w = wer(ref, hyp)
            per_clip.append(f"{name}={w:.3f}")
            errors += w * len(ref.split())
            ref_words += len(ref.split())
            latencies += lat
        print(f"{setting}: WER {errors / ref_words:.3f} ({' '.join(per_clip)}); latency p50 "
              f"{percentile(latencies, 50):.2f} s, p90 {percentile(latencies, 90):.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
