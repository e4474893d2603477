#!/usr/bin/env python3
"""The multilingual ``base`` model through the full pipeline, per clip: language given, auto, translate.

For each clip ``NAME.wav`` of the corpus whose ``NAME.json`` has ``text``, ``language`` and
``translation_en`` (default: ``tests/data/multilingual``, copied from ../shared/corpus-multilingual):

1. offline: one pass of the worker's backend (faster-whisper ``base``, CPU int8) over the whole
   clip, in the clip's language (the offline WER), with ``auto`` (the language it detects, the
   WER) and translating (the English content words found, see below);
2. the full pipeline (``voxpipe transcribe``: broker, VAD, worker, capture at ``--speed``, real
   time by default) in each mode: ``given`` (the clip's language: the streaming WER, target at
   most the offline WER + 0.03), ``auto`` (the languages the commits report, with the model's
   probability and the uncertain flag, and the WER), ``translate`` (``task: translate`` with
   ``auto``; and ``translate-given``, with the clip's language): the share of the distinct
   content words of ``translation_en`` (normalised, scikit-learn's English stop words left
   out) found in the English output.

WER: Whisper's basic normaliser for languages other than English (apps/bench/evaluation.py).
Writes ``--out`` (JSON) and prints a markdown table per mode.

Usage (about 5 minutes on 2 cores; run it under the CPU lock):
  flock /tmp/voxpipe-cpu.lock scripts/multilingual_bench.py [--corpus DIR] [--clips a,b]
      [--modes given,auto,translate,translate-given] [--speed 1.0] [--out bench-out/multilingual.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr_core.blas import one_blas_thread  # noqa: E402

one_blas_thread()  # before numpy: the offline pass with the numerics of the pipeline it is compared with

import numpy as np  # noqa: E402

from apps.bench.evaluation import content_word_share, wer  # noqa: E402

MODES = ("given", "auto", "translate", "translate-given")


def load_clips(corpus: Path, names: list[str] | None) -> list[dict]:
    clips = []
    for meta in sorted(corpus.glob("*.json")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        wav = meta.with_suffix(".wav")
        if wav.is_file() and {"text", "language", "translation_en"} <= set(data) and (
                not names or meta.stem in names):
            clips.append({"name": meta.stem, "wav": wav, **data})
    if not clips:
        raise SystemExit(f"no clips with text, language and translation_en in {corpus}")
    return clips


def settings(mode: str, clip: dict) -> tuple[str, str]:
    """(language, task) of a mode for a clip."""
    given = clip["language"]
    return {"given": (given, "transcribe"), "auto": ("auto", "transcribe"),
            "translate": ("auto", "translate"), "translate-given": (given, "translate")}[mode]


def score(mode: str, clip: dict, text: str) -> dict:
    if mode.startswith("translate"):
        return {"content_share": round(content_word_share(clip["translation_en"], text), 3)}
    return {"wer": round(wer(clip["text"], text, clip["language"]), 3)}


def offline(clips: list[dict], model: str, modes: list[str]) -> dict:
    """Per clip and mode: one pass over the whole clip (in-process, the worker's backend)."""
    from asr_core.audio import load_audio
    from asr_core.registry import create_backend

    out: dict = {}
    asr = create_backend("faster-whisper", "auto", model, device="cpu")  # language and task per call
    asr.transcribe(np.zeros(16000, dtype=np.float32))  # warm-up
    for clip in clips:
        audio = load_audio(clip["wav"])
        for mode in modes:
            language, task = settings(mode, clip)
            t0 = time.process_time()
            result = asr.transcribe(audio, language=None if language == "auto" else language, task=task)
            text = "".join(w[2] for w in asr.ts_words(result)).strip()
            code, detected = asr.language_of(result)
            out.setdefault(clip["name"], {})[mode] = {
                "text": text, "language": code, "detected": [[c, round(p, 3)] for c, p in detected[:3]],
                "cpu_s": round(time.process_time() - t0, 2), **score(mode, clip, text)}
    return out


def streaming(clip: dict, mode: str, model: str, speed: float, work: Path, config: str | None) -> dict:
    """One ``voxpipe transcribe`` run of the full pipeline; its commits, scored."""
    language, task = settings(mode, clip)
    jsonl = work / f"{clip['name']}-{mode}.jsonl"
    cmd = [sys.executable, "-m", "apps.cli", "transcribe", str(clip["wav"]), "--model", model,
           "--language", language, "--task", task, "--speed", str(speed), "-o", f"jsonl:{jsonl}"]
    if config:
        cmd += ["--config", config]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    t0 = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=600)
    if run.returncode != 0:
        return {"error": f"exit {run.returncode}: {run.stderr.strip()[-800:]}"}
    commits = [r for r in map(json.loads, jsonl.read_text().splitlines()) if r.get("kind") == "commit"]
    text = " ".join(r["text"].strip() for r in commits)
    languages: dict[str, dict] = {}
    for r in commits:
        code = r.get("language") or "?"
        seen = languages.setdefault(code, {"commits": 0, "uncertain": 0, "prob": []})
        seen["commits"] += 1
        seen["uncertain"] += bool(r.get("language_uncertain"))
        if r.get("language_prob") is not None:
            seen["prob"].append(r["language_prob"])
    for seen in languages.values():
        probs = seen.pop("prob")
        seen["prob_max"] = max(probs) if probs else None
    latencies = [r["emitted"] - r["wall0"] - w[1] for r in commits for w in r["words"]]
    latencies.sort()
    return {"text": text, "commits": len(commits), "languages": languages,
            "latency_p50": round(latencies[len(latencies) // 2], 2) if latencies else None,
            "wall_s": round(time.monotonic() - t0, 1), **score(mode, clip, text)}


def languages_cell(langs: dict) -> str:
    parts = []
    for code, seen in sorted(langs.items(), key=lambda kv: -kv[1]["commits"]):
        flag = f", {seen['uncertain']} uncertain" if seen["uncertain"] else ""
        prob = f" p≤{seen['prob_max']:.2f}" if seen.get("prob_max") is not None else ""
        parts.append(f"{code} ×{seen['commits']}{prob}{flag}")
    return "; ".join(parts) or "—"


def table(report: dict, modes: list[str]) -> str:
    lines = []
    for mode in modes:
        translate = mode.startswith("translate")
        metric = "content_share" if translate else "wer"
        lines += [f"\n### {mode}\n",
                  f"| clip | offline {metric} | streaming {metric} | difference | offline: decoded in (detected) | "
                  "commits' languages | p50 latency (s) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, per in report["clips"].items():
            off, live = per["offline"].get(mode, {}), per["streaming"].get(mode, {})
            if "error" in live:
                lines.append(f"| {name} | {off.get(metric)} | error | | | {live['error'][:80]} | |")
                continue
            diff = live[metric] - off[metric] if metric in live and metric in off else None
            det = off.get("detected") or []
            off_lang = f"{off.get('language')}" + (f" (detected {det[0][0]} {det[0][1]:.2f})" if det else "")
            lines.append(f"| {name} | {off.get(metric)} | {live.get(metric)} | "
                         f"{'' if diff is None else f'{diff:+.3f}'} | {off_lang} | "
                         f"{languages_cell(live.get('languages', {}))} | {live.get('latency_p50')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "data" / "multilingual"))
    ap.add_argument("--clips", default=None, help="only these clips (a,b)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--model", default="base")
    ap.add_argument("--speed", type=float, default=1.0, help="capture replay speed (1 = real time)")
    ap.add_argument("--config", default=None, help="pipeline YAML for voxpipe transcribe (default: configs/file.yaml)")
    ap.add_argument("--no-offline", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "multilingual.json"))
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"unknown mode {bad[0]!r} (modes: {', '.join(MODES)})")
    clips = load_clips(Path(args.corpus), args.clips.split(",") if args.clips else None)
    report: dict = {"model": args.model, "speed": args.speed, "modes": modes, "clips": {}}
    off = {} if args.no_offline else offline(clips, args.model, modes)
    with tempfile.TemporaryDirectory(prefix="voxpipe-ml-") as tmp:
        for clip in clips:
            per = report["clips"].setdefault(clip["name"], {"language": clip["language"],
                                                             "offline": off.get(clip["name"], {}), "streaming": {}})
            for mode in modes:
                per["streaming"][mode] = r = streaming(clip, mode, args.model, args.speed, Path(tmp), args.config)
                print(f"{clip['name']} {mode}: {json.dumps({k: v for k, v in r.items() if k != 'text'})}",
                      file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    print(table(report, modes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
