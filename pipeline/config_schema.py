"""The typed, frozen sections of a pipeline config, each with its own checks.

Every default is defined once: where a section configures something of the speech layer
(the VAD, the streaming processor, the schedule), its defaults are that layer's
(:class:`asr_core.vad.VADOptions`, :class:`asr_core.online.StreamingOptions`,
:class:`asr_core.streaming.Schedule`) and its checks are the ones those classes make.

``check()`` raises :class:`SectionError` with the key (relative to the section) and what is
wrong; :mod:`pipeline.config` adds the file and the section's place and runs the checks
that involve several sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asr_core.online import StreamingOptions
from asr_core.streaming import Schedule
from asr_core.vad import VADOptions

from .messages import valid_id, valid_language

WORKER_TASKS = ("transcribe", "translate")
SINK_KINDS = ("console", "jsonl", "srt", "vtt", "txt")
INPUT_KINDS = ("mic", "stdin", "file", "auto")
NAME_RULE = "1-64 letters, digits, '_', '-', ':' or '@'"


class SectionError(ValueError):
    """A bad value in one section: ``key`` (relative to the section) and what is wrong with it."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


def _name(value: str, key: str = "name") -> None:
    if not valid_id(value):
        raise SectionError(key, f"{value!r} must be {NAME_RULE}")


def _speech_checks(key_of_error: str, build) -> None:
    """Run a speech-layer constructor's own checks, reporting its message under ``key_of_error``."""
    try:
        build()
    except ValueError as exc:
        raise SectionError(key_of_error, str(exc)) from None


@dataclass(frozen=True)
class SecurityConfig:
    curve: bool = False  # ZeroMQ CURVE: encrypted, and only authorized client keys get in
    keys_dir: str = "~/.config/voxpipe/keys"  # made by `voxpipe keys DIR` (see pipeline/security.py)
    client: str = "client"  # this program's keypair: KEYS_DIR/<client>.key and .key_secret

    @property
    def enabled(self) -> bool:
        return self.curve


@dataclass(frozen=True)
class BusConfig:
    xsub: str = "tcp://127.0.0.1:7701"  # publishers connect here
    xpub: str = "tcp://127.0.0.1:7702"  # subscribers connect here
    hwm: int = 2000
    linger_ms: int = 500
    heartbeat_interval: float = 1.0
    security: SecurityConfig = field(default_factory=SecurityConfig)

    def check(self) -> None:
        import re

        for key in ("xsub", "xpub"):
            ep = getattr(self, key)
            if not re.match(r"^(tcp|ipc|inproc)://.+", ep):
                raise SectionError(key, f"{ep!r} is not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:7701)")
        if self.xsub == self.xpub:
            raise SectionError("xpub", f"bus.xsub and bus.xpub are the same endpoint {self.xsub!r}")
        if self.hwm < 1:
            raise SectionError("hwm", "must be at least 1")
        if self.heartbeat_interval <= 0:
            raise SectionError("heartbeat_interval", "must be positive")


@dataclass(frozen=True)
class BrokerConfig:
    name: str = "broker"

    def check(self) -> None:
        _name(self.name)


@dataclass(frozen=True)
class SourceConfig:
    name: str = "capture"
    input: str = "mic"  # mic | file:PATH | stdin | auto:PATH (mic if there is one, else the file)
    stream: str = ""  # stream id; default: the source's name
    device: str | None = None  # mic: sounddevice device name or index
    speed: float = 1.0  # file/stdin: replay speed (1.0 = real time, 0 = as fast as possible)
    frame_ms: int = 100
    loop: bool = False
    sample_rate: int = 16000  # stdin: rate of the raw PCM on stdin
    wait_for: tuple | None = None  # actors to wait for; default: VAD and workers
    wait_timeout: float = 120.0
    # what this source asks of the workers (protocol 4.1): the language spoken (auto: detect) and the
    # task; None: the workers' own. Workers with language auto and a multilingual model follow it.
    language: str | None = None
    task: str | None = None

    @property
    def stream_id(self) -> str:
        return self.stream or self.name

    def check(self) -> None:
        _name(self.name)
        _name(self.stream_id, "stream")
        kind, _, arg = self.input.partition(":")
        if kind not in INPUT_KINDS or (kind in ("mic", "stdin") and arg):
            raise SectionError("input", f"{self.input!r} is not mic, stdin, file:PATH or auto:PATH")
        if kind in ("file", "auto") and not arg:
            raise SectionError("input", f"'{kind}:' needs the path of an audio file")
        if self.speed < 0:
            raise SectionError("speed", "must be >= 0 (0 = as fast as possible)")
        if not 1 <= self.frame_ms <= 5000:
            raise SectionError("frame_ms", "must be between 1 and 5000")
        if self.sample_rate <= 0:
            raise SectionError("sample_rate", "must be positive")
        if self.wait_timeout < 0:
            raise SectionError("wait_timeout", "must be >= 0")
        for n in self.wait_for or ():
            _name(n, "wait_for")
        if self.language is not None and not valid_language(self.language):
            raise SectionError("language", f"{self.language!r} is not a language code (en, de, ...) or auto")
        if self.task is not None and self.task not in WORKER_TASKS:
            raise SectionError("task", f"{self.task!r} is not transcribe or translate")


_VAD = VADOptions()


@dataclass(frozen=True)
class VADConfig:
    enabled: bool = True
    name: str = "vad"
    threshold: float = _VAD.threshold
    neg_threshold: float = _VAD.neg_threshold
    min_silence_ms: int = _VAD.min_silence_ms  # a pause this long ends a speech segment (the worker flushes there)
    speech_pad_ms: int = _VAD.speech_pad_ms
    min_speech_ms: int = _VAD.min_speech_ms
    max_streams: int = 32  # live streams at once; frames of further new streams are refused (counted)
    idle_timeout: float = 30.0  # a stream without a frame for this long is closed (as if it sent eos)

    def options(self) -> VADOptions:
        return VADOptions(threshold=self.threshold, neg_threshold=self.neg_threshold,
                          min_silence_ms=self.min_silence_ms, speech_pad_ms=self.speech_pad_ms,
                          min_speech_ms=self.min_speech_ms)

    def check(self) -> None:
        _name(self.name)
        _speech_checks("threshold", self.options)
        if self.max_streams < 1:
            raise SectionError("max_streams", "must be at least 1")
        if self.idle_timeout <= 0:
            raise SectionError("idle_timeout", "must be positive")


_STREAMING = StreamingOptions()
_SCHEDULE = Schedule()


@dataclass(frozen=True)
class WorkerConfig:
    name: str = "asr"
    backend: str = "faster-whisper"
    model: str | None = "tiny.en"
    model_dir: str | None = None
    cache_dir: str | None = None
    language: str = "auto"
    task: str = "transcribe"
    min_chunk_size: float = _SCHEDULE.min_chunk_size
    buffer_trimming: str = _STREAMING.buffer_trimming
    buffer_trimming_sec: float = _STREAMING.buffer_trimming_sec
    idle_timeout: float = 30.0
    partials: bool = True
    input: str = "speech"  # speech (from the VAD) | audio (raw capture)
    max_streams: int = 16  # live streams at once; messages of further new streams are refused (counted)
    concurrency: int = 0  # decode threads; 0: one per core (up to 4) when the backend allows it, else 1
    utterance_gap: float = _SCHEDULE.utterance_gap  # a pause longer than this starts a fresh audio buffer
    settle_sec: float = _STREAMING.settle_sec  # commit a word this long after it was heard even without agreement
    early_commit_sec: float = _STREAMING.early_commit_sec  # commit a word the model is sure of this long after
    early_commit_prob: float = _STREAMING.early_commit_prob  # "sure": the model's word probability at least this
    options: dict = field(default_factory=dict)

    @property
    def english_only(self) -> bool:
        """A Whisper English-only model by name (``tiny.en``, ``base.en``, ...: no other language, no translation)."""
        return bool(self.model) and not self.model_dir and str(self.model).endswith(".en")

    def streaming_options(self) -> StreamingOptions:
        return StreamingOptions(
            buffer_trimming=self.buffer_trimming, buffer_trimming_sec=self.buffer_trimming_sec,
            settle_sec=self.settle_sec, early_commit_sec=self.early_commit_sec,
            early_commit_prob=self.early_commit_prob,
        )

    def schedule(self) -> Schedule:
        # without the VAD (input: audio) there are no pauses to flush at
        return Schedule(min_chunk_size=self.min_chunk_size, utterance_gap=self.utterance_gap,
                        at_pause="flush" if self.input == "speech" else "ignore")

    def check(self) -> None:
        from asr_core.registry import available_backends, is_known_backend

        _name(self.name)
        if not is_known_backend(self.backend):
            raise SectionError("backend",
                               f"unknown backend {self.backend!r} (known: {', '.join(available_backends())})")
        if self.task not in WORKER_TASKS:
            raise SectionError("task", f"{self.task!r} is not transcribe or translate")
        if self.english_only and self.language not in ("auto", "en"):
            raise SectionError("language", f"model {self.model!r} is English-only: it cannot transcribe "
                                           f"{self.language!r} (use a multilingual model, e.g. base)")
        if self.english_only and self.task == "translate":
            raise SectionError("task", f"model {self.model!r} is English-only: it cannot translate "
                                       "(use a multilingual model, e.g. base)")
        if self.input not in ("speech", "audio"):
            raise SectionError("input", f"{self.input!r} is not speech or audio")
        _speech_checks("buffer_trimming", self.streaming_options)
        _speech_checks("min_chunk_size", self.schedule)
        if self.idle_timeout <= 0:
            raise SectionError("idle_timeout", "must be positive")
        if self.max_streams < 1:
            raise SectionError("max_streams", "must be at least 1")
        if self.concurrency < 0:
            raise SectionError("concurrency", "must be >= 0 (0: automatic)")
        if self.settle_sec < 0 or self.early_commit_sec < 0:
            raise SectionError("settle_sec", "settle_sec and early_commit_sec must be >= 0 (0: off)")
        if not 0 <= self.early_commit_prob <= 1:
            raise SectionError("early_commit_prob", "must be between 0 and 1")


@dataclass(frozen=True)
class SinkConfig:
    name: str = "sink"
    output: str = "console"  # console | jsonl:PATH | srt:PATH | vtt:PATH | txt:PATH
    workers: tuple = ()  # only these workers (default: all)
    partials: bool = True  # console only: show partials live
    snapshot: str | None = None  # endpoint to serve the transcript so far on (pipeline/snapshot.py)

    def check(self) -> None:
        import re

        _name(self.name)
        kind, _, arg = self.output.partition(":")
        if kind not in SINK_KINDS:
            raise SectionError("output", f"{self.output!r} is not console, jsonl:PATH, srt:PATH, vtt:PATH or txt:PATH")
        if kind != "console" and not arg:
            raise SectionError("output", f"'{kind}:' needs a path")
        for w in self.workers:
            if not valid_id(w):
                raise SectionError("workers", f"{w!r} is not a worker name ({NAME_RULE})")
        if self.snapshot is not None and not re.match(r"^(tcp|ipc|inproc)://.+", self.snapshot):
            raise SectionError("snapshot", f"{self.snapshot!r} is not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:7703)")


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = False
    name: str = "web"
    host: str = "127.0.0.1"
    port: int = 9880
    token: str | None = None
    max_sessions: int = 16  # browser streams at once

    def check(self) -> None:
        from .security import is_loopback_host

        _name(self.name)
        if not 0 <= self.port <= 65535:
            raise SectionError("port", f"{self.port} is not a port number")
        if not is_loopback_host(self.host) and not self.token:
            raise SectionError("host", f"{self.host} binds beyond loopback: set web.token (the page will ask for it)")
        if self.max_sessions < 1:
            raise SectionError("max_sessions", "must be at least 1")


@dataclass(frozen=True)
class Config:
    bus: BusConfig = field(default_factory=BusConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    sources: tuple = ()
    vad: VADConfig = field(default_factory=VADConfig)
    workers: tuple = ()
    sinks: tuple = ()
    web: WebConfig = field(default_factory=WebConfig)
    version: int = 1
    path: str | None = None  # the file it was loaded from

    def worker(self, name: str) -> WorkerConfig:
        return _by_name(self.workers, name, "worker")

    def source(self, name: str) -> SourceConfig:
        return _by_name(self.sources, name, "source")

    def sink(self, name: str) -> SinkConfig:
        return _by_name(self.sinks, name, "sink")

    def actor_names(self) -> list[str]:
        names = [self.broker.name]
        names += [s.name for s in self.sources]
        if self.vad.enabled:
            names.append(self.vad.name)
        names += [w.name for w in self.workers]
        names += [s.name for s in self.sinks]
        if self.web.enabled:
            names.append(self.web.name)
        return names


def _by_name(items, name, what):
    from .errors import ConfigError

    for item in items:
        if item.name == name:
            return item
    raise ConfigError(f"no {what} named {name!r} (have: {', '.join(i.name for i in items) or 'none'})")


#: list sections and the class of their items
LIST_ITEMS: dict[str, type[SourceConfig] | type[WorkerConfig] | type[SinkConfig]] = {
    "sources": SourceConfig, "workers": WorkerConfig, "sinks": SinkConfig}
