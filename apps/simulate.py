"""``voxpipe simulate WAV``: real-time streaming simulation from a file, without a bus.

The commit policy (``--policy``):

* ``pipeline`` (default): exactly what ``voxpipe up`` does with the clip: 100 ms frames
  through the Silero VAD (the VAD actor's speech gate), and the ASR worker's streaming
  session (a decode every ``--min-chunk-size`` seconds of speech, a flush at each pause,
  a fresh buffer after a long pause) with the worker's commit options (settling and early
  commits);
* ``la2``: whisper_streaming's whisper_online.py: no VAD, chunks of ``--min-chunk-size``,
  LocalAgreement-2 only.

``--vac`` puts whisper_streaming's voice activity controller in front of either (the VAD
with 500 ms pauses, each speech segment finished as its own utterance). ``--settle`` and
``--early-commit`` override the policy's commit options.

Clock modes:

* default, computationally aware: audio "arrives" at wall-clock speed and decoding takes the
  time it takes, so a chunk is longer when the previous decode was slow;
* ``--comp-unaware``: the clock stops while decoding (deterministic);
* ``--offline``: the whole file in one pass.

stdout gets one line per commit: ``EMIT_MS BEG_MS END_MS TEXT``; logs go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time

log = logging.getLogger("voxpipe.simulate")

POLICIES = ("pipeline", "la2")


def add_asr_arguments(p: argparse.ArgumentParser) -> None:
    """Backend and streaming options shared by commands that build a processor."""
    p.add_argument("--backend", default="faster-whisper", help="ASR backend name or package.module:Class")
    p.add_argument("--model", default="tiny.en", help="model name (tiny.en and base resolve offline when bundled)")
    p.add_argument("--model-dir", default=None, help="local model folder (overrides --model)")
    p.add_argument("--model-cache-dir", default=None, help="where downloaded or assembled models are kept")
    p.add_argument("--lan", "--language", dest="lan", default="auto", help="language code, or 'auto' to detect")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    p.add_argument("--policy", default="pipeline", choices=POLICIES,
                   help="pipeline: what voxpipe up does (VAD, pause flushes, the worker's commit options); "
                        "la2: whisper_online.py's LocalAgreement-2 (default %(default)s)")
    p.add_argument("--min-chunk-size", type=float, default=1.0, help="seconds of new audio per decode (minimum)")
    p.add_argument("--buffer-trimming", default="segment", choices=["segment", "sentence"])
    p.add_argument("--buffer-trimming-sec", type=float, default=15.0)
    p.add_argument("--vac", action="store_true",
                   help="whisper_streaming's voice activity controller: decode speech only, finish each utterance")
    p.add_argument("--vac-chunk-size", type=float, default=0.04, help="seconds of audio per VAC step")
    p.add_argument("--vad", action="store_true", help="ask the backend to filter non-speech itself")
    p.add_argument("--settle", type=float, default=None, metavar="SEC",
                   help="commit a word SEC after it was heard even without agreement (0: off; default: the policy's)")
    p.add_argument("--early-commit", type=float, default=None, metavar="SEC",
                   help="commit a word the model is sure of SEC after it was heard, unconfirmed "
                        "(0: off; default: the policy's)")
    p.add_argument("--early-commit-prob", type=float, default=None, metavar="P",
                   help="how sure: the word's probability at least P (default: the policy's)")
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


def streaming_options(args):
    """The commit options of ``--policy``, with the command line's changes."""
    from asr_core.online import StreamingOptions

    base = StreamingOptions() if args.policy == "pipeline" else StreamingOptions.la2()
    changes = {"buffer_trimming": args.buffer_trimming, "buffer_trimming_sec": args.buffer_trimming_sec}
    for key, value in (("settle_sec", args.settle), ("early_commit_sec", args.early_commit),
                       ("early_commit_prob", args.early_commit_prob)):
        if value is not None:
            changes[key] = value
    return dataclasses.replace(base, **changes)


def build_session(asr, args):
    """The streaming session and the feed (frames, VAD) that ``--policy`` and ``--vac`` describe."""
    from asr_core.online import OnlineASRProcessor
    from asr_core.replay import Feed
    from asr_core.streaming import Schedule, StreamingSession
    from asr_core.vac import VAC_MIN_SILENCE_MS
    from asr_core.vad import VADOptions

    if args.vac:
        feed = Feed(frame_s=args.vac_chunk_size, vad=VADOptions(min_silence_ms=VAC_MIN_SILENCE_MS))
        schedule = Schedule(args.min_chunk_size, at_pause="finish")
    elif args.policy == "pipeline":
        feed = Feed()
        schedule = Schedule(args.min_chunk_size)
    else:
        feed = Feed(frame_s=args.min_chunk_size, vad=None)
        schedule = Schedule(args.min_chunk_size, at_pause="ignore")
    return StreamingSession(OnlineASRProcessor(asr, options=streaming_options(args)), schedule), feed


def load_backend(args):
    from asr_core.registry import create_backend

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
        print("{:1.0f} {:1.0f} {:1.0f} {}".format(*line), file=self.out, flush=True)


def simulate(asr, audio, args, printer: Printer) -> None:
    from asr_core.base import SAMPLING_RATE
    from asr_core.online import Commit
    from asr_core.replay import stream_audio

    if args.offline:
        t0 = time.monotonic()
        words = asr.ts_words(asr.transcribe(audio))
        if words:
            text = getattr(asr, "sep", " ").join(w[2] for w in words).strip()
            printer.emit(Commit(words[0][0], words[-1][1], text, tuple(words)), time.monotonic() - t0)
        return
    session, feed = build_session(asr, args)
    log.info("policy %s%s: %.1fs of audio", args.policy, " + VAC" if args.vac else "", len(audio) / SAMPLING_RATE)
    stream_audio(session, audio, feed, clock="unaware" if args.comp_unaware else "real", on_commit=printer.emit)


def run(args) -> int:
    from asr_core.audio import load_audio
    from asr_core.base import BackendError
    from pipeline.errors import RuntimeFailure, UsageError

    audio = load_audio(args.audio)
    try:
        asr = load_backend(args)
    except ValueError as exc:  # a bad -o option or value
        raise BackendError(str(exc)) from None
    log.info("audio %s: %.1fs; backend %s", args.audio, len(audio) / 16000, asr.describe())
    printer = Printer()
    try:
        asr.transcribe(audio[:16000])  # warm-up, so the first chunk is not slower than the rest
        simulate(asr, audio, args, printer)
    except BackendError as exc:
        raise RuntimeFailure(str(exc)) from None
    except ValueError as exc:  # a streaming option out of range
        raise UsageError(str(exc)) from None
    return 0
