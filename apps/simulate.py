"""``voxpipe simulate WAV``: real-time streaming simulation from a file, without a bus.

The commit policy (``--policy``):

* ``pipeline`` (default): the ASR worker's streaming session on whisper_online's schedule,
  otherwise what ``voxpipe up`` does with the clip: 100 ms frames through the Silero VAD
  (the VAD actor's speech gate), a decode every ``--min-chunk-size`` seconds of speech (1.0
  by default, and no shorter first or utterance chunk; the worker's are 0.75, 0.2 and
  0.5 s), a flush at each pause, a fresh buffer after a long pause, and the worker's commit
  options (settling and early commits);
* ``la2``: whisper_streaming's whisper_online.py: no VAD, chunks of ``--min-chunk-size``,
  LocalAgreement-2 only.

``--vac`` puts whisper_streaming's voice activity controller in front of either (the VAD
with 500 ms pauses, each speech segment finished as its own utterance). ``--settle`` and
``--early-commit`` override the policy's commit options.

Clock modes:

* default, computationally aware: audio "arrives" at wall-clock speed and decoding takes the
  time it takes, so a chunk is longer when the previous decode was slow;
* ``--comp-unaware``: the clock stops while decoding (deterministic);
* ``--offline``: the whole file in one pass (with ``--comp-unaware`` too: emitted at the end
  of the audio, as if decoding took no time).

``--start-at SEC`` skips the audio before SEC; times stay on the file's clock.

stdout gets one line per commit: ``EMIT_MS BEG_MS END_MS TEXT`` (``--format whisper_online``:
whisper_online.py's ``%1.4f %1.0f %1.0f TEXT``, the text joined as the backend gave it); logs
go to stderr.

Every flag of whisper_streaming's ``whisper_online.py`` is accepted in its own spelling too
(``--model_dir``, ``--model_cache_dir``, ``--buffer_trimming``, ``--buffer_trimming_sec``,
``--comp_unaware``, ``--start_at``, ``-l``), so its command lines run unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time

log = logging.getLogger("voxpipe.simulate")

POLICIES = ("pipeline", "la2")
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
FORMATS = ("voxpipe", "whisper_online")


def add_model_arguments(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The backend, model and buffer flags of whisper_streaming's ``whisper_online.py``, in both spellings.

    Shared by ``voxpipe simulate`` and ``voxpipe web`` (whose pipeline flags need to know what was
    given, hence ``defaults=False``: every default is None and the worker config's applies).
    """

    def d(value):
        return value if defaults else None

    p.add_argument("--backend", default=d("faster-whisper"), help="ASR backend name or package.module:Class")
    p.add_argument("--model", default=d("tiny.en"),
                   help="model name (tiny.en and base resolve offline when bundled; default tiny.en)")
    p.add_argument("--model-dir", "--model_dir", dest="model_dir", default=None,
                   help="local model folder (overrides --model)")
    p.add_argument("--model-cache-dir", "--model_cache_dir", dest="model_cache_dir", default=None,
                   help="where downloaded or assembled models are kept")
    p.add_argument("--lan", "--language", dest="lan", default=d("auto"),
                   help="language code, or 'auto' to detect (default auto)")
    p.add_argument("--task", default=d("transcribe"), choices=["transcribe", "translate"])
    p.add_argument("--min-chunk-size", type=float, default=d(1.0),
                   help="seconds of new audio per decode (minimum; default "
                        + ("1.0)" if defaults else "the worker's, 0.75)"))
    p.add_argument("--buffer-trimming", "--buffer_trimming", dest="buffer_trimming", default=d("segment"),
                   choices=["segment", "sentence"], help="cut the buffer at a segment or a sentence end")
    p.add_argument("--buffer-trimming-sec", "--buffer_trimming_sec", dest="buffer_trimming_sec", type=float,
                   default=d(15.0), help="buffer length (seconds) past which it is cut (default 15)")
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE",
        help="backend option, e.g. -o beam_size=5 -o cpu_threads=2 -o device=cuda",
    )


def add_asr_arguments(p: argparse.ArgumentParser) -> None:
    """Backend and streaming options shared by commands that build a processor."""
    add_model_arguments(p)
    p.add_argument("--policy", default="pipeline", choices=POLICIES,
                   help="pipeline: what voxpipe up does (VAD, pause flushes, the worker's commit options); "
                        "la2: whisper_online.py's LocalAgreement-2 (default %(default)s)")
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
    p.add_argument("--log-level", "-l", dest="log_level", default="INFO", choices=LOG_LEVELS)


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
    p.add_argument("--comp-unaware", "--comp_unaware", dest="comp_unaware", action="store_true",
                   help="stop the clock while decoding (deterministic)")
    p.add_argument("--offline", action="store_true",
                   help="transcribe the whole file at once (with --comp-unaware: emitted at the end of the audio)")
    p.add_argument("--start-at", "--start_at", dest="start_at", type=float, default=0.0, metavar="SEC",
                   help="skip the audio before SEC (times stay on the file's clock)")
    p.add_argument("--format", default="voxpipe", choices=FORMATS,
                   help="voxpipe: 'EMIT_MS BEG_MS END_MS TEXT' with whole milliseconds; whisper_online: "
                        "whisper_online.py's lines ('%%1.4f %%1.0f %%1.0f' and the text as the backend joined it)")
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
    """One stdout line per commit, in voxpipe's format or whisper_online.py's."""

    def __init__(self, out=sys.stdout, fmt: str = "voxpipe"):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self.out = out
        self.fmt = fmt
        self.lines: list[tuple[float, float, float, str]] = []

    def emit(self, commit, emit_s: float) -> None:
        if not commit or commit.beg is None:
            return
        emit_ms = emit_s * 1000
        if self.fmt == "whisper_online":
            text = commit.raw_text or commit.text
            line = (emit_ms, commit.beg * 1000, commit.end * 1000, text)
            # whisper_online.py's "%1.4f %1.0f %1.0f %s"
            print("{:1.4f} {:1.0f} {:1.0f} {}".format(*line), file=self.out, flush=True)
        else:
            line = (emit_ms, commit.beg * 1000, commit.end * 1000, commit.text)
            print("{:1.0f} {:1.0f} {:1.0f} {}".format(*line), file=self.out, flush=True)
        self.lines.append(line)


def simulate(asr, audio, args, printer: Printer) -> None:
    """Stream ``audio`` (the whole file; ``--start-at`` is applied here) through ``asr``; commits to ``printer``."""
    from asr_core.base import SAMPLING_RATE
    from asr_core.online import Commit
    from asr_core.replay import stream_audio

    start = max(0.0, float(getattr(args, "start_at", 0.0) or 0.0))
    duration = len(audio) / SAMPLING_RATE
    if start >= duration:
        raise ValueError(f"--start-at {start:g} is at or past the end of the audio ({duration:.2f}s)")
    audio = audio[int(round(start * SAMPLING_RATE)):]
    if args.offline:
        t0 = time.monotonic()
        words = [(b + start, e + start, w) for b, e, w in asr.ts_words(asr.transcribe(audio))]
        if words:
            sep = getattr(asr, "sep", " ")
            raw = sep.join(w[2] for w in words)
            stripped = tuple((b, e, w.strip()) for b, e, w in words)
            # with --comp-unaware the clock stops while decoding: the line is "emitted" at the end of the audio
            at = duration - start if args.comp_unaware else time.monotonic() - t0
            printer.emit(Commit(words[0][0], words[-1][1], raw.strip(), stripped, raw), at + start)
        return
    session, feed = build_session(asr, args)
    log.info("policy %s%s: %.1fs of audio%s", args.policy, " + VAC" if args.vac else "", len(audio) / SAMPLING_RATE,
             f" from {start:g}s" if start else "")
    # the unaware clock is stream time (on the file's clock); the real one counts wall seconds from
    # the start of playback, which whisper_online.py starts at --start_at too
    clock = "unaware" if args.comp_unaware else "real"
    wall_shift = 0.0 if args.comp_unaware else start
    stream_audio(session, audio, feed, clock=clock, offset=start,
                 on_commit=lambda commit, at: printer.emit(commit, at + wall_shift))


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
    printer = Printer(fmt=args.format)
    try:
        asr.transcribe(audio[:16000])  # warm-up, so the first chunk is not slower than the rest
        simulate(asr, audio, args, printer)
    except BackendError as exc:
        raise RuntimeFailure(str(exc)) from None
    except ValueError as exc:  # a streaming option out of range
        raise UsageError(str(exc)) from None
    return 0
