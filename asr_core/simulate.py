"""``voxpipe simulate WAV``: real-time streaming simulation from a file.

Modes:

* default, computationally aware: audio "arrives" at wall-clock speed; each
  chunk is at least ``--min-chunk-size`` seconds, more when decoding the
  previous one took longer;
* ``--comp-unaware``: the clock stops while decoding and every chunk is
  exactly the minimum size (deterministic);
* ``--offline``: the whole file in one pass.

stdout gets one line per commit: ``EMIT_MS BEG_MS END_MS TEXT``; logs go to
stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

log = logging.getLogger("voxpipe.simulate")


def add_asr_arguments(p: argparse.ArgumentParser) -> None:
    """Backend and streaming options shared by commands that build a processor."""
    p.add_argument("--backend", default="faster-whisper", help="ASR backend name or package.module:Class")
    p.add_argument("--model", default="tiny.en", help="model name (tiny.en and base resolve offline when bundled)")
    p.add_argument("--model-dir", default=None, help="local model folder (overrides --model)")
    p.add_argument("--model-cache-dir", default=None, help="where downloaded or assembled models are kept")
    p.add_argument("--lan", "--language", dest="lan", default="auto", help="language code, or 'auto' to detect")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    p.add_argument("--min-chunk-size", type=float, default=1.0, help="seconds of new audio per decode (minimum)")
    p.add_argument("--buffer-trimming", default="segment", choices=["segment", "sentence"])
    p.add_argument("--buffer-trimming-sec", type=float, default=15.0)
    p.add_argument("--vac", action="store_true", help="voice activity controller: decode speech only, flush at speech ends")
    p.add_argument("--vac-chunk-size", type=float, default=0.04, help="seconds of audio per VAC step")
    p.add_argument("--vad", action="store_true", help="ask the backend to filter non-speech itself")
    p.add_argument("--settle", type=float, default=0.0, metavar="SEC",
                   help="commit a word SEC after it was heard even without agreement (0: LocalAgreement only)")
    p.add_argument("--early-commit", type=float, default=0.0, metavar="SEC",
                   help="commit a word the model is sure of SEC after it was heard, unconfirmed (0: off)")
    p.add_argument("--early-commit-prob", type=float, default=0.6, metavar="P",
                   help="how sure: the word's probability at least P (default 0.6)")
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE",
        help="backend option, e.g. -o beam_size=5 -o cpu_threads=2 -o device=cuda",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def parse_options(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"backend option {pair!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def register(sub) -> None:
    p = sub.add_parser("simulate", help="stream a file through one processor and print the commits")
    p.add_argument("audio", metavar="WAV", help="audio file (converted to 16 kHz mono if needed)")
    add_asr_arguments(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--comp-unaware", action="store_true", help="stop the clock while decoding (deterministic)")
    mode.add_argument("--offline", action="store_true", help="transcribe the whole file at once")
    p.set_defaults(func=run)


def build_processor(asr, args):
    from .online import OnlineASRProcessor, StreamingOptions
    from .vac import VACOnlineASRProcessor

    options = StreamingOptions(
        buffer_trimming=args.buffer_trimming, buffer_trimming_sec=args.buffer_trimming_sec,
        settle_sec=args.settle, early_commit_sec=args.early_commit, early_commit_prob=args.early_commit_prob,
    )
    if args.vac:
        return VACOnlineASRProcessor(args.min_chunk_size, asr, options=options)
    return OnlineASRProcessor(asr, options=options)


def load_backend(args):
    from .registry import create_backend

    return create_backend(
        args.backend,
        args.lan,
        args.model,
        cache_dir=args.model_cache_dir,
        model_dir=args.model_dir,
        task=args.task,
        vad=args.vad,
        **parse_options(args.option),
    )


class Printer:
    def __init__(self, out=sys.stdout):
        self.out = out
        self.lines: list[tuple[float, float, float, str]] = []

    def emit(self, commit, emit_s: float) -> None:
        if not commit or commit.beg is None:
            return
        line = (emit_s * 1000, commit.beg * 1000, commit.end * 1000, commit.text)
        self.lines.append(line)
        print("%1.0f %1.0f %1.0f %s" % line, file=self.out, flush=True)


def simulate(asr, audio, args, printer: Printer) -> None:
    from .base import SAMPLING_RATE

    duration = len(audio) / SAMPLING_RATE
    if args.offline:
        t0 = time.monotonic()
        result = asr.transcribe(audio)
        from .online import Commit

        for_words = asr.ts_words(result)
        sep = getattr(asr, "sep", " ")
        if for_words:
            text = sep.join(w[2] for w in for_words).strip()
            printer.emit(Commit(for_words[0][0], for_words[-1][1], text, tuple(for_words)), time.monotonic() - t0)
        return
    proc = build_processor(asr, args)
    step = args.vac_chunk_size if args.vac else args.min_chunk_size
    if args.comp_unaware:
        end = 0.0
        while end < duration:
            beg, end = end, min(duration, end + step)
            proc.insert_audio_chunk(audio[int(beg * SAMPLING_RATE) : int(end * SAMPLING_RATE)])
            printer.emit(proc.process_iter(), end)
        printer.emit(proc.finish(), duration)
        return
    start = time.monotonic()
    beg = 0.0
    while beg < duration:
        now = time.monotonic() - start
        if now < beg + step:
            time.sleep(beg + step - now)
        end = min(duration, time.monotonic() - start)
        proc.insert_audio_chunk(audio[int(beg * SAMPLING_RATE) : int(end * SAMPLING_RATE)])
        beg = end
        printer.emit(proc.process_iter(), time.monotonic() - start)
    printer.emit(proc.finish(), time.monotonic() - start)


def run(args) -> int:
    from .audio import AudioFileError, load_audio
    from .base import BackendError

    try:
        audio = load_audio(args.audio)
    except AudioFileError as exc:
        print(f"voxpipe simulate: {exc}", file=sys.stderr)
        return 2
    try:
        asr = load_backend(args)
    except (BackendError, ValueError) as exc:
        print(f"voxpipe simulate: {exc}", file=sys.stderr)
        return 4
    log.info("audio %s: %.1fs; backend %s", args.audio, len(audio) / 16000, asr.describe())
    printer = Printer()
    try:
        asr.transcribe(audio[:16000])  # warm-up, so the first chunk is not slower than the rest
        simulate(asr, audio, args, printer)
    except BackendError as exc:
        print(f"voxpipe simulate: {exc}", file=sys.stderr)
        return 1
    return 0
