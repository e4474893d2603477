#!/usr/bin/env python3
"""Commit-policy settings compared on a deterministic replay of a corpus.

Each setting is a keyword dict of changes to the pipeline's ``StreamingOptions``
and schedule (from the worker's defaults, ``WorkerConfig``: ``dict()`` is today's policy);
``min_chunk_size``, ``first_chunk_size``, ``utterance_chunk_size``, ``utterance_gap``,
``max_load`` and ``max_chunk_size`` go to the ``Schedule``, ``beam_size`` to the backend (the
offline pass keeps the default beam), ``vad_*`` keys
(``vad_min_silence_ms``, ...) to the VAD's ``VADOptions`` (``vad=None``: no VAD, every frame
goes to the session). Per clip, the audio goes through exactly what ``voxpipe simulate
--comp-unaware`` runs (the pipeline's 100 ms frames, VAD and
streaming session: :mod:`asr_core.replay`), with the clock stopped while decoding
(``--clock aware``: on a virtual clock that each step moves on by the CPU seconds it
took, as a one-stream worker with a core to itself).

Printed per setting and per group of clips (clean, ``*_noisy``, ``*_gaps``):

* WER: word errors summed over reference words (Whisper normalisation), beside the
  offline pass's (one ``transcribe`` of the whole clip, same model);
* fWER: the same without normalisation (case and punctuation count), beside offline's;
* marks: the share of the offline pass's sentence ends found at the same words;
* latency p50/p90 of each committed word (the audio time at which it was committed
  minus its end: decode time included only with ``--clock aware``) and the first word
  (first commit minus the first speech the VAD forwarded), in stream seconds;
* cost: decoded audio seconds and decode CPU seconds per second of audio.

Usage:
  scripts/commit_policy_sweep.py [--corpus DIR] [--clips a,b] [--show] "dict()" \\
      "dict(early_commit_sec=0.0)" "dict(settle_sec=0.0, early_commit_sec=0.0)"
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr_core.blas import one_blas_thread  # noqa: E402

one_blas_thread()  # as the voxpipe command does, before numpy: the same CPU cost and numerics as the worker

from apps.bench.evaluation import (  # noqa: E402
    formatted_wer,
    percentile,
    reference_text,
    sentence_marks_kept,
    wer,
)
from asr_core.audio import load_audio  # noqa: E402
from asr_core.online import OnlineASRProcessor, StreamingOptions  # noqa: E402
from asr_core.registry import create_backend  # noqa: E402
from asr_core.replay import Feed, stream_audio  # noqa: E402
from asr_core.streaming import Schedule, StreamingSession  # noqa: E402
from asr_core.vad import VADOptions  # noqa: E402
from pipeline.config_schema import WorkerConfig  # noqa: E402

SCHEDULE_KEYS = ("min_chunk_size", "utterance_gap", "at_pause", "max_load", "max_chunk_size", "first_chunk_size",
                "utterance_chunk_size")
BACKEND_KEYS = ("beam_size",)


def parse_setting(text: str) -> dict:
    node = ast.parse(text, mode="eval").body
    if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict" and not node.args):
        raise SystemExit(f"a setting is dict(key=value, ...), not {text!r}")
    return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}


def split_setting(setting: dict) -> tuple[StreamingOptions, Schedule, Feed]:
    rest = {k: v for k, v in setting.items() if k not in BACKEND_KEYS}
    worker = WorkerConfig()  # dict() is the worker's policy: its schedule and streaming options
    schedule = dataclasses.replace(worker.schedule(), **{k: rest.pop(k) for k in SCHEDULE_KEYS if k in rest})
    rest = {**dataclasses.asdict(worker.streaming_options()), **rest}
    if "vad" in rest and rest.pop("vad") is None:  # dict(vad=None): every frame to the session, no pauses
        return StreamingOptions(**rest), dataclasses.replace(schedule, at_pause="ignore"), Feed(vad=None)
    vad = {k[4:]: rest.pop(k) for k in list(rest) if k.startswith("vad_")}
    return StreamingOptions(**rest), schedule, Feed(vad=dataclasses.replace(VADOptions(), **vad))


@dataclasses.dataclass
class ClipRun:
    text: str
    latencies: list
    first_word: float | None
    decoded_audio_s: float
    cpu_s: float
    seconds: float


def run_clip(asr, audio, options: StreamingOptions, schedule: Schedule, feed: Feed, clock: str) -> ClipRun:
    session = StreamingSession(OnlineASRProcessor(asr, options=options), schedule)
    first_audio: list[float] = []
    original = session.push_audio

    def push_audio(t, samples):
        if not first_audio:
            first_audio.append(t)
        return original(t, samples)

    session.push_audio = push_audio  # type: ignore[method-assign]
    texts, latencies, first = [], [], None
    c0 = time.process_time()
    for at, commit in stream_audio(session, audio, feed, clock=clock):
        if first is None and commit.words and first_audio:
            first = at - first_audio[0]
        texts.append(commit.text)
        latencies += [at - w[1] for w in commit.words]
    cpu = time.process_time() - c0
    return ClipRun(" ".join(t for t in texts if t), latencies, first, session.processor.stats.decoded_audio_seconds,
                   cpu, len(audio) / 16000)


def group_of(name: str) -> str:
    for suffix in ("_noisy", "_gaps"):
        if name.endswith(suffix):
            return suffix[1:]
    return "clean"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("settings", nargs="+")
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "data"))
    ap.add_argument("--clips", default="history,kitchen,meeting,weather")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--clock", choices=("unaware", "aware"), default="unaware",
                    help="unaware: decoding takes no time (deterministic); aware: each step takes its CPU time")
    ap.add_argument("--json", metavar="FILE", help="also write every figure (and transcript) to FILE")
    ap.add_argument("--show", action="store_true", help="print each clip's transcript beside the offline one")
    ap.add_argument("--plot", metavar="PNG", help="also draw latency against WER for the clean clips (CPU beside each)")
    args = ap.parse_args()
    asr = create_backend("faster-whisper", lan="en", model=args.model, device="cpu")
    names = args.clips.split(",")
    clips = {}
    for name in names:
        path = Path(args.corpus) / f"{name}.wav"
        audio = load_audio(path)
        offline = "".join(w[2] for w in asr.ts_words(asr.transcribe(audio))).strip()
        clips[name] = (audio, reference_text(path), offline)
    results: list[dict] = []
    for text in args.settings:
        setting = parse_setting(text)
        options, schedule, feed = split_setting(setting)
        backend_opts = {k: setting[k] for k in BACKEND_KEYS if k in setting}
        streaming_asr = create_backend("faster-whisper", lan="en", model=args.model, device="cpu",
                                       **backend_opts) if backend_opts else asr
        runs = {n: run_clip(streaming_asr, clips[n][0], options, schedule, feed, args.clock) for n in names}
        print(text, flush=True)
        for group in ("clean", "noisy", "gaps"):
            members = [n for n in names if group_of(n) == group]
            if not members:
                continue
            acc = dict(err=0.0, off=0.0, ferr=0.0, foff=0.0, words=0, kept=0, marks=0)
            lat, firsts, per_clip = [], [], []
            dec = cpu = secs = 0.0
            for n in members:
                audio, ref, offline = clips[n]
                r = runs[n]
                nref = len(ref.split())
                w, fw = wer(ref, r.text), formatted_wer(ref, r.text)
                acc["err"] += w * nref
                acc["off"] += wer(ref, offline) * nref
                acc["ferr"] += fw * nref
                acc["foff"] += formatted_wer(ref, offline) * nref
                acc["words"] += nref
                kept, marks = sentence_marks_kept(offline, r.text)
                acc["kept"] += kept
                acc["marks"] += marks
                lat += r.latencies
                if r.first_word is not None:
                    firsts.append(r.first_word)
                dec += r.decoded_audio_s
                cpu += r.cpu_s
                secs += r.seconds
                per_clip.append(f"{n}={w:.3f}/{wer(ref, offline):.3f}")
                if args.show:
                    print(f"  [{n}] stream : {r.text}\n  [{n}] offline: {offline}")
            nw = acc["words"]
            results.append({"setting": text, "group": group, "clips": members, "wer": acc["err"] / nw,
                            "offline_wer": acc["off"] / nw, "formatted_wer": acc["ferr"] / nw,
                            "offline_formatted_wer": acc["foff"] / nw, "marks": [acc["kept"], acc["marks"]],
                            "p50": percentile(lat, 50), "p90": percentile(lat, 90),
                            "first_word_max": max(firsts, default=None), "decoded_per_s": dec / secs,
                            "cpu_per_s": cpu / secs, "clock": args.clock,
                            "per_clip": {n: runs[n].text for n in members}})
            print(f"  {group}: WER {acc['err'] / nw:.3f} (offline {acc['off'] / nw:.3f}; {' '.join(per_clip)}); "
                  f"fWER {acc['ferr'] / nw:.3f} (offline {acc['foff'] / nw:.3f}); "
                  f"marks {acc['kept']}/{acc['marks']}; latency p50 {percentile(lat, 50):.2f} s, "
                  f"p90 {percentile(lat, 90):.2f} s; first word {max(firsts, default=float('nan')):.2f} s max; "
                  f"decoded {dec / secs:.2f} s/s, CPU {cpu / secs:.3f} s/s", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.plot:
        from apps.bench.plot import plot_tradeoff

        print(f"wrote {plot_tradeoff(results, Path(args.plot))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
