#!/usr/bin/env python3
"""Per clip: `voxpipe simulate` (real time, one process) beside `voxpipe up configs/file.yaml`.

For each clip of a corpus (WAV + .json with ``text``) this measures, with the
real tiny.en model on this machine:

* simulate: ``voxpipe simulate --min-chunk-size 1.0`` with its defaults (the
  pipeline's policy), computationally aware (or ``--comp-unaware``),
  its WER and the latency of each commit (``EMIT_MS - END_MS``), and the
  offline WER (``--offline``) of the same model on the same clip;
* up: the whole process pipeline (broker, capture, VAD, worker, JSONL sink) of
  ``configs/file.yaml`` with the worker on simulate's schedule (1.0 s chunks, no
  shorter first or utterance chunk: :data:`SIMULATE_SCHEDULE`), so that the two differ
  only in being one process or several; its WER and the latency of each commit
  (``emitted - wall0 - end``).

Usage: scripts/compare_simulate_and_up.py [CORPUS_DIR] [--clips a,b] [--no-up] [--comp-unaware]
Prints a Markdown table; the figures are the same kind as the closing notes quote.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.bench.evaluation import percentile, reference_text, wer  # noqa: E402

VOXPIPE = [sys.executable, "-m", "apps.cli"]
# the worker keys that give it simulate's (whisper_online's) schedule instead of the worker's defaults
SIMULATE_SCHEDULE = {"min_chunk_size": 1.0, "first_chunk_size": 0, "utterance_chunk_size": 0}


def up_config(tmp: Path) -> Path:
    """configs/file.yaml with its worker on simulate's schedule."""
    text = (ROOT / "configs" / "file.yaml").read_text()
    anchor = "    model: tiny.en\n"
    if text.count(anchor) != 1:
        raise SystemExit("configs/file.yaml: expected one worker line 'model: tiny.en'")
    keys = "".join(f"    {k}: {v}\n" for k, v in SIMULATE_SCHEDULE.items())
    path = tmp / "file-simulate-schedule.yaml"
    path.write_text(text.replace(anchor, anchor + keys))
    return path


def simulate(clip: Path, *extra: str) -> list[tuple[float, float, float, str]]:
    out = subprocess.run(VOXPIPE + ["simulate", str(clip), "--min-chunk-size", "1.0", *extra],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    lines = []
    for line in out.splitlines():
        emit, beg, end, text = line.split(" ", 3)
        lines.append((float(emit) / 1000, float(beg) / 1000, float(end) / 1000, text))
    return lines


def up(clip: Path, timeout: float = 240.0) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t.jsonl"
        env = dict(os.environ, VOXPIPE_AUDIO=str(clip), VOXPIPE_OUT=str(out),
                   VOXPIPE_XSUB="tcp://127.0.0.1:7761", VOXPIPE_XPUB="tcp://127.0.0.1:7762")
        proc = subprocess.Popen(VOXPIPE + ["up", str(up_config(Path(tmp)))], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        records: list[dict] = []
        try:
            while time.monotonic() < deadline:
                if out.exists():
                    records = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
                    if any(r.get("kind") == "eos" for r in records):
                        break
                time.sleep(0.2)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(30)
        return [r for r in records if r.get("kind") == "commit"]


def fmt(x: float) -> str:
    return f"{x:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", nargs="?", default=str(ROOT / "tests" / "data"))
    ap.add_argument("--clips", default=None)
    ap.add_argument("--no-up", action="store_true")
    ap.add_argument("--comp-unaware", action="store_true",
                    help="simulate with the clock stopped while decoding (deterministic) instead of real time")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    names = args.clips.split(",") if args.clips else sorted(p.stem for p in corpus.glob("*.wav"))
    rows = []
    print("| clip | offline WER | simulate WER | simulate p50 / p90 | up WER | up p50 / p90 |")
    print("|---|---|---|---|---|---|")
    for name in names:
        clip = corpus / f"{name}.wav"
        ref = reference_text(clip)
        off = simulate(clip, "--offline")
        sim = simulate(clip, *(["--comp-unaware"] if args.comp_unaware else []))
        sim_lat = [e - end for e, _b, end, _t in sim]
        row = {
            "clip": name,
            "offline_wer": wer(ref, " ".join(t for *_x, t in off)),
            "sim_wer": wer(ref, " ".join(t for *_x, t in sim)),
            "sim_p50": percentile(sim_lat, 50), "sim_p90": percentile(sim_lat, 90),
        }
        if not args.no_up:
            commits = up(clip)
            up_lat = [c["emitted"] - c["wall0"] - c["end"] for c in commits]
            row.update(up_wer=wer(ref, " ".join(c["text"] for c in commits)),
                       up_p50=percentile(up_lat, 50), up_p90=percentile(up_lat, 90))
        rows.append(row)
        up_cells = (f"{row['up_wer']:.3f} | {fmt(row['up_p50'])} / {fmt(row['up_p90'])} s"
                    if "up_wer" in row else "n/a | n/a")
        print(f"| {name} | {row['offline_wer']:.3f} | {row['sim_wer']:.3f} | "
              f"{fmt(row['sim_p50'])} / {fmt(row['sim_p90'])} s | {up_cells} |", flush=True)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "clip"}
    up_cells = (f"{mean['up_wer']:.3f} | {fmt(mean['up_p50'])} / {fmt(mean['up_p90'])} s"
                if "up_wer" in mean else "n/a | n/a")
    print(f"| **mean** | {mean['offline_wer']:.3f} | {mean['sim_wer']:.3f} | "
          f"{fmt(mean['sim_p50'])} / {fmt(mean['sim_p90'])} s | {up_cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
