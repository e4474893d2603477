#!/usr/bin/env python3
"""Commit-policy settings compared on a deterministic replay of a corpus.

Each setting is a ``StreamingOptions`` keyword dict. Per clip, the audio goes
to a VAC processor in 40 ms steps with the clock stopped while decoding
(computation-unaware), flushing at each 300 ms pause and keeping the audio
as context, as the pipeline's worker does; a decode is due every 1 s of new
speech. Prints, per setting, the WER over the clips (word errors summed over
reference words) and the p50/p90 of each committed word's latency (the audio
time at which it was committed minus its end: decode time not included).

Usage:
  scripts/commit_policy_sweep.py [--corpus DIR] [--clips a,b] "dict(settle_sec=2.0)" \
      "dict(settle_sec=2.0, early_commit_sec=0.3, early_commit_prob=0.6)"
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr_core.audio import load_audio  # noqa: E402
from asr_core.evaluation import percentile, reference_text, wer  # noqa: E402
from asr_core.online import StreamingOptions  # noqa: E402
from asr_core.registry import create_backend  # noqa: E402
from asr_core.vac import VACOnlineASRProcessor  # noqa: E402
from asr_core.vad import VADOptions  # noqa: E402

STEP_S = 0.04


def parse_setting(text: str) -> dict:
    node = ast.parse(text, mode="eval").body
    if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict" and not node.args):
        raise SystemExit(f"a setting is dict(key=value, ...), not {text!r}")
    return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}


def run_clip(asr, path: Path, options: StreamingOptions) -> tuple[str, list[float]]:
    audio = load_audio(path)
    proc = VACOnlineASRProcessor(1.0, asr, options=options, vad_options=VADOptions(min_silence_ms=300))
    proc.online.finish = proc.online.flush  # the worker flushes at pauses, keeping the audio as context
    step = int(STEP_S * 16000)
    texts, latencies = [], []
    for i in range(0, len(audio), step):
        proc.insert_audio_chunk(audio[i:i + step])
        now = min(len(audio), i + step) / 16000
        commit = proc.process_iter()
        if commit:
            texts.append(commit.text)
            latencies += [now - w[1] for w in commit.words]
    commit = proc.finish()
    if commit:
        texts.append(commit.text)
        latencies += [len(audio) / 16000 - w[1] for w in commit.words]
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
        errors = ref_words = 0.0
        latencies: list[float] = []
        per_clip = []
        for name in args.clips.split(","):
            path = Path(args.corpus) / f"{name}.wav"
            hyp, lat = run_clip(asr, path, StreamingOptions(**setting))
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
