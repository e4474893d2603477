#!/usr/bin/env python3
"""How many real-time tiny.en streams one GPU holds at p90 <= 2 s, with batching on and off.

The GPU machines lent to this project have PyTorch but no CTranslate2 and no package
registry, and the bundled tiny.en ``model.bin`` (75 MB) is over what travels with the
working tree. So the measurement runs the ``torch-whisper`` backend (Whisper in PyTorch,
batched across streams) on weights prepared here: every matrix int8 with a float16 scale
per row (about 39 MB), dequantized on the device.

  # here (the CPU machine): tiny.en -> build/gpu-tiny-en (int8 weights, tokenizer, mel filters, Silero VAD)
  scripts/gpu_capacity.py prepare build/gpu-tiny-en
  # a dry run here, on the CPU, two small rounds per mode:
  scripts/gpu_capacity.py measure build/gpu-tiny-en --device cpu --streams 1,2 --seconds 8 --out dry.json
  # there (the GPU machine; carry build/gpu-tiny-en), about 6 minutes:
  python3 scripts/gpu_capacity.py measure build/gpu-tiny-en --out $OUT/gpu.json

``measure`` replays the clip's speech (as the VAD forwards it) on N concurrent live streams
at real time in one process and decodes them with the worker's scheduling rule on one GPU
(:mod:`apps.bench.inprocess`): batching on (all due streams in one batched call) and off
(one stream's step at a time). For each mode it tries N = --streams in order until a round
does not hold (p90 <= --max-p90, every stream done, the last commit <= 6 s after the audio
ended), then bisects twice. It prints a table and writes every round (latency, WER, batch
sizes, queue waits, backend calls) with the device, torch version and peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_STREAMS = "1,8,16,32,64,96,128,192,256"


def prepare(args) -> int:
    from asr_core.backends.torch_model import save_prepared
    from asr_core.convert_ct2 import ct2_source

    out = save_prepared(ct2_source(args.model), args.out)
    try:
        from asr_core.vad import silero_model_path

        shutil.copyfile(silero_model_path(), out / "silero_vad.onnx")
    except Exception as exc:  # noqa: BLE001 - the measurement then runs without the VAD
        print(f"no Silero VAD copied ({exc}); measure will feed the audio without it", file=sys.stderr)
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"{out}: {size:.1f} MiB ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0


def _wer_function():
    try:
        from apps.bench.evaluation import wer

        wer("a b", "a b")
        return wer, "whisper-normalizer"
    except ImportError:  # not on the GPU machine: lower case, no punctuation
        from apps.bench.evaluation import edit_distance

        def simple(reference: str, hypothesis: str) -> float:
            ref = re.sub(r"[^\w\s']", " ", reference.lower()).split()
            hyp = re.sub(r"[^\w\s']", " ", hypothesis.lower()).split()
            return edit_distance(ref, hyp) / len(ref) if ref else float(bool(hyp))

        return simple, "simple (lower case, punctuation removed)"


def measure(args) -> int:
    import torch

    from apps.bench.inprocess import round_figures, run_round, search
    from asr_core.audio import load_audio
    from asr_core.registry import create_backend
    from asr_core.replay import Feed, speech_events
    from asr_core.vad import VADOptions

    folder = Path(args.model_dir)
    vad_model = folder / "silero_vad.onnx"
    if vad_model.is_file():
        os.environ.setdefault("VOXPIPE_SILERO_ONNX", str(vad_model))
    t0 = time.monotonic()
    asr = create_backend("torch-whisper", "en", None, model_dir=str(folder), device=args.device,
                         beam_size=args.beam_size)
    load_s = time.monotonic() - t0
    audio = load_audio(args.clip)
    if args.seconds:
        audio = audio[: int(args.seconds * 16000)]
    reference = None
    ref_path = Path(args.clip).with_suffix(".json")
    if ref_path.is_file() and not args.seconds:
        reference = json.loads(ref_path.read_text())["text"]
    try:
        events = list(speech_events(audio, Feed(vad=VADOptions())))
        feed = "Silero VAD (the pipeline's speech.* stream)"
    except Exception as exc:  # noqa: BLE001 - no onnxruntime or no model: the raw audio, no pauses
        events = list(speech_events(audio, Feed(vad=None)))
        feed = f"raw audio, no VAD ({type(exc).__name__}: {exc})"
    wer, normalizer = _wer_function()
    warm = [audio[: 16000 * 3]] * 4
    asr.transcribe_batch(warm, [""] * len(warm))  # kernels compiled and allocated before the clock runs
    asr.transcribe(warm[0])
    cuda = asr.device.startswith("cuda")
    tries = [int(x) for x in args.streams.split(",")]
    report = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
              "torch": torch.__version__, "python": platform.python_version(), "backend": asr.describe(),
              "model_dir": str(folder), "load_s": round(load_s, 1), "clip": str(args.clip),
              "clip_seconds": round(len(audio) / 16000, 2), "feed": feed, "wer_normalizer": normalizer,
              "criteria": {"max_p90_s": args.max_p90, "max_tail_lag_s": args.max_tail_lag}, "modes": {}}
    for batch in (True, False):
        if cuda:
            torch.cuda.reset_peak_memory_stats()

        def one(n, batch=batch):
            rr = run_round(asr, events, n, batch, max_batch=args.max_batch, stagger=args.stagger)
            fig = round_figures(rr, reference, args.max_p90, args.max_tail_lag, wer)
            q = fig["decode_queue"]
            print(f"{'batch' if batch else 'alone'} x{n}: p50 {fig['p50']} s, p90 {fig['p90']} s, max {fig['max']} s, "
                  f"WER {fig.get('wer')}, batch mean {q.get('batch_size', {}).get('mean')}, "
                  f"held {fig['held']} {'; '.join(fig['why_not'])}", flush=True)
            return fig

        result = search(one, tries, args.budget / 2)
        result["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None
        report["modes"]["batch" if batch else "unbatched"] = result
    on, off = report["modes"]["batch"], report["modes"]["unbatched"]
    report["capacity_ratio"] = round(on["capacity"] / off["capacity"], 2) if off["capacity"] else None
    print(json.dumps({k: report[k] for k in ("device", "backend", "feed", "capacity_ratio")}))
    for name, res in report["modes"].items():
        print(f"{name}: {res['capacity']} streams ({res['bound']}), peak GPU memory {res['peak_gpu_memory_mib']} MiB")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="convert a CTranslate2 Whisper model (default tiny.en) to a prepared folder")
    pp.add_argument("out")
    pp.add_argument("--model", default="tiny.en", help="bundled name or CTranslate2 folder (tiny.en)")
    pp.set_defaults(func=prepare)
    pm = sub.add_parser("measure", help="capacity with batching on and off, on this machine's GPU (or --device)")
    pm.add_argument("model_dir")
    pm.add_argument("--clip", default=str(ROOT / "tests" / "data" / "history.wav"))
    pm.add_argument("--seconds", type=float, default=None, help="only the first SECONDS of the clip (no WER then)")
    pm.add_argument("--device", default="auto")
    pm.add_argument("--beam-size", type=int, default=5)
    pm.add_argument("--streams", default=DEFAULT_STREAMS, help=f"numbers of streams to try ({DEFAULT_STREAMS})")
    pm.add_argument("--max-p90", type=float, default=2.0)
    pm.add_argument("--max-tail-lag", type=float, default=6.0)
    pm.add_argument("--max-batch", type=int, default=256)
    pm.add_argument("--stagger", type=float, default=0.0, help="spread the streams' starts over this many seconds")
    pm.add_argument("--budget", type=float, default=420.0, help="seconds for both searches together (420)")
    pm.add_argument("--out", default=None, help="write every figure to this JSON file")
    pm.set_defaults(func=measure)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
