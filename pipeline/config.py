"""Pipeline configuration: YAML loaded once into typed, frozen structures.

Loading validates everything before any process starts: unknown keys, wrong
types, unknown backends, unreadable files, bad names and endpoint clashes are
each reported as one :class:`ConfigError` line naming the file and the key.
String values may use ``${VAR}`` and ``${VAR:-default}`` from the environment.
Relative file paths are resolved against the current directory at load time.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from .messages import valid_id
from .yaml_typed import build, expand_env, expand_tree  # noqa: F401 (expand_env: part of this module's API)


class ConfigError(ValueError):
    """One line saying what is wrong and where."""


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


@dataclass(frozen=True)
class BrokerConfig:
    name: str = "broker"


@dataclass(frozen=True)
class SourceConfig:
    name: str = "capture"
    input: str = "mic"  # mic | file:PATH | stdin | auto:PATH (mic if there is one, else the file)
    stream: str = ""  # stream id; default: the source's name
    device: Optional[str] = None  # mic: sounddevice device name or index
    speed: float = 1.0  # file: replay speed (1.0 = real time)
    frame_ms: int = 100
    loop: bool = False
    sample_rate: int = 16000  # stdin: rate of the raw PCM on stdin
    wait_for: Optional[tuple] = None  # actors to wait for; default: VAD and workers
    wait_timeout: float = 120.0

    @property
    def stream_id(self) -> str:
        return self.stream or self.name


@dataclass(frozen=True)
class VADConfig:
    enabled: bool = True
    name: str = "vad"
    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_silence_ms: int = 300  # a pause this long ends a speech segment (the worker flushes there)
    speech_pad_ms: int = 100
    min_speech_ms: int = 100
    max_streams: int = 32  # live streams at once; frames of further new streams are refused (counted)


@dataclass(frozen=True)
class WorkerConfig:
    name: str = "asr"
    backend: str = "faster-whisper"
    model: Optional[str] = "tiny.en"
    model_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    language: str = "auto"
    task: str = "transcribe"
    min_chunk_size: float = 1.0
    buffer_trimming: str = "segment"
    buffer_trimming_sec: float = 15.0
    idle_timeout: float = 30.0
    partials: bool = True
    input: str = "speech"  # speech (from the VAD) | audio (raw capture)
    max_streams: int = 16  # live streams at once; messages of further new streams are refused (counted)
    concurrency: int = 0  # decode threads; 0: one per core (up to 4) when the backend allows it, else 1
    utterance_gap: float = 1.0  # a pause longer than this starts a fresh audio buffer
    settle_sec: float = 2.0  # commit a word this long after it was heard even without agreement (0: never)
    early_commit_sec: float = 0.3  # commit a word the model is sure of this long after it was heard (0: never)
    early_commit_prob: float = 0.6  # "sure": the model's word probability at least this
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SinkConfig:
    name: str = "sink"
    output: str = "console"  # console | jsonl:PATH | srt:PATH | vtt:PATH | txt:PATH
    workers: tuple = ()  # only these workers (default: all)
    partials: bool = True  # console only: show partials live
    snapshot: Optional[str] = None  # endpoint to serve the transcript so far on (pipeline/snapshot.py)


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = False
    name: str = "web"
    host: str = "127.0.0.1"
    port: int = 9880
    token: Optional[str] = None


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
    path: Optional[str] = None  # the file it was loaded from

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
    for item in items:
        if item.name == name:
            return item
    raise ConfigError(f"no {what} named {name!r} (have: {', '.join(i.name for i in items) or 'none'})")


LIST_ITEMS = {"sources": SourceConfig, "workers": WorkerConfig, "sinks": SinkConfig}
WORKER_TASKS = ("transcribe", "translate")


# -- loading -----------------------------------------------------------------------
def load_config(path: str | os.PathLike | None, check_files: bool = True) -> Config:
    """Read, expand, type-check and validate a YAML config file."""
    if path is None:
        return validate(Config(), "<defaults>", check_files)
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}: invalid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    data = expand_tree(data or {}, "", ConfigError)
    cfg = build(Config, data, "", file, ConfigError, lists={"Config": LIST_ITEMS})
    cfg = dataclasses.replace(cfg, path=str(Path(file).resolve()))
    return validate(cfg, file, check_files)


def _resolve_path(p: str) -> str:
    return str(Path(p).expanduser().resolve())


def validate(cfg: Config, file: str, check_files: bool = True) -> Config:
    """Semantic checks; returns the config with file paths made absolute."""
    from asr_core.registry import available_backends, is_known_backend

    def fail(msg: str):
        raise ConfigError(f"{file}: {msg}")

    names = cfg.actor_names()
    for n in names:
        if not valid_id(n):
            fail(f"actor name {n!r} must be 1-64 letters, digits, '_', '-', ':' or '@'")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        fail(f"actor name {sorted(dup)[0]!r} is used twice")
    bus = cfg.bus
    for key in ("xsub", "xpub"):
        ep = getattr(bus, key)
        if not re.match(r"^(tcp|ipc|inproc)://.+", ep):
            fail(f"bus.{key}: {ep!r} is not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:7701)")
    if bus.xsub == bus.xpub:
        fail(f"bus.xsub and bus.xpub are the same endpoint {bus.xsub!r}")
    if bus.hwm < 1 or bus.heartbeat_interval <= 0:
        fail("bus.hwm must be >= 1 and bus.heartbeat_interval > 0")
    ports = {_port(bus.xsub): "bus.xsub", _port(bus.xpub): "bus.xpub"}
    if cfg.web.enabled:
        if cfg.web.port in ports:
            fail(f"web.port {cfg.web.port} clashes with {ports[cfg.web.port]}")
    sources = []
    streams = set()
    for i, s in enumerate(cfg.sources):
        if not valid_id(s.stream_id):
            fail(f"sources[{i}].stream: {s.stream_id!r} is not a valid stream id")
        if s.stream_id in streams:
            fail(f"sources[{i}]: stream id {s.stream_id!r} is used by two sources")
        streams.add(s.stream_id)
        kind, _, arg = s.input.partition(":")
        if kind == "auto":  # resolved here, so every actor sees the same mic or file:PATH
            if not arg:
                fail(f"sources[{i}].input: 'auto:' needs the path of a fallback audio file")
            kind, arg = ("mic", "") if _has_microphone() else ("file", arg)
            s = dataclasses.replace(s, input=f"{kind}:{arg}" if arg else kind)
        if kind == "file":
            if not arg:
                fail(f"sources[{i}].input: 'file:' needs a path")
            p = Path(arg).expanduser()
            if check_files and not (p.is_file() and os.access(p, os.R_OK)):
                fail(f"sources[{i}].input: cannot read audio file {arg!r}")
            s = dataclasses.replace(s, input=f"file:{_resolve_path(arg)}")
        elif kind not in ("mic", "stdin") or (kind != "file" and arg):
            fail(f"sources[{i}].input: {s.input!r} is not mic, stdin or file:PATH")
        if s.speed <= 0 or s.frame_ms <= 0:
            fail(f"sources[{i}]: speed and frame_ms must be positive")
        sources.append(s)
    workers = []
    for i, w in enumerate(cfg.workers):
        if not is_known_backend(w.backend):
            fail(f"workers[{i}].backend: unknown backend {w.backend!r} (known: {', '.join(available_backends())})")
        if w.task not in WORKER_TASKS:
            fail(f"workers[{i}].task: {w.task!r} is not transcribe or translate")
        if w.buffer_trimming not in ("segment", "sentence"):
            fail(f"workers[{i}].buffer_trimming: {w.buffer_trimming!r} is not segment or sentence")
        if w.input not in ("speech", "audio"):
            fail(f"workers[{i}].input: {w.input!r} is not speech or audio")
        if w.input == "speech" and not cfg.vad.enabled:
            fail(f"workers[{i}].input is 'speech' but the VAD is disabled (use input: audio)")
        if w.min_chunk_size <= 0 or w.buffer_trimming_sec <= 0 or w.idle_timeout <= 0:
            fail(f"workers[{i}]: min_chunk_size, buffer_trimming_sec and idle_timeout must be positive")
        if w.max_streams < 1:
            fail(f"workers[{i}].max_streams must be at least 1")
        if w.concurrency < 0 or w.utterance_gap <= 0 or w.settle_sec < 0 or w.early_commit_sec < 0:
            fail(f"workers[{i}]: concurrency, settle_sec and early_commit_sec must be >= 0, utterance_gap > 0")
        if not 0 <= w.early_commit_prob <= 1:
            fail(f"workers[{i}].early_commit_prob must be between 0 and 1")
        if w.model_dir:
            if check_files and not Path(w.model_dir).expanduser().exists():
                fail(f"workers[{i}].model_dir: {w.model_dir!r} does not exist")
            w = dataclasses.replace(w, model_dir=_resolve_path(w.model_dir))
        workers.append(w)
    worker_names = {w.name for w in workers}
    sinks = []
    outputs = set()
    for i, s in enumerate(cfg.sinks):
        kind, _, arg = s.output.partition(":")
        if kind not in ("console", "jsonl", "srt", "vtt", "txt"):
            fail(f"sinks[{i}].output: {s.output!r} is not console, jsonl:PATH, srt:PATH, vtt:PATH or txt:PATH")
        if kind != "console":
            if not arg:
                fail(f"sinks[{i}].output: '{kind}:' needs a path")
            parent = Path(arg).expanduser().resolve().parent
            if check_files and parent.exists() and not os.access(parent, os.W_OK):
                fail(f"sinks[{i}].output: cannot write into {str(parent)!r}")
            s = dataclasses.replace(s, output=f"{kind}:{_resolve_path(arg)}")
            if s.output in outputs:
                fail(f"sinks[{i}].output: {arg!r} is written by two sinks")
            outputs.add(s.output)
        unknown = [w for w in s.workers if w not in worker_names]
        if unknown:
            fail(f"sinks[{i}].workers: no worker named {unknown[0]!r}")
        if s.snapshot is not None:
            if not re.match(r"^(tcp|ipc|inproc)://.+", s.snapshot):
                fail(f"sinks[{i}].snapshot: {s.snapshot!r} is not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:7703)")
            sp = _port(s.snapshot)
            clash = "a bus endpoint" if s.snapshot in (bus.xsub, bus.xpub) else None
            if sp is not None:
                clash = clash or ports.get(sp) or ("web.port" if cfg.web.enabled and sp == cfg.web.port else None)
                ports[sp] = f"sinks[{i}].snapshot"
            if clash:
                fail(f"sinks[{i}].snapshot: {s.snapshot!r} clashes with {clash}")
        sinks.append(s)
    from .security import secure_config

    try:  # endpoints beyond loopback need CURVE; with CURVE on, the keys must be there
        cfg = secure_config(dataclasses.replace(cfg, sinks=tuple(sinks)), check_files)
    except ValueError as exc:
        fail(str(exc))
    if cfg.vad.max_streams < 1:
        fail("vad.max_streams must be at least 1")
    if cfg.web.enabled and cfg.web.host not in ("127.0.0.1", "localhost", "::1") and not cfg.web.token:
        fail("web.host binds beyond loopback: set web.token (the page will ask for it)")
    return dataclasses.replace(cfg, sources=tuple(sources), workers=tuple(workers))


def _has_microphone() -> bool:
    """sounddevice is installed and sees an input device (for ``input: auto:PATH``)."""
    try:
        import sounddevice

        return any(d.get("max_input_channels", 0) > 0 for d in sounddevice.query_devices())
    except Exception:  # noqa: BLE001 - not installed, no PortAudio, no devices
        return False


def _port(endpoint: str) -> int | None:
    mt = re.match(r"^tcp://.*:(\d+)$", endpoint)
    return int(mt.group(1)) if mt else None
