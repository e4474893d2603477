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

from asr_core.batching import BATCH_SETTINGS
from asr_core.online import StreamingOptions
from asr_core.streaming import Schedule
from asr_core.vad import VADOptions

from .messages import valid_id, valid_language
from .outputs import DEFAULT_MAX_STREAM_BYTES, DEFAULT_MAX_STREAMS

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
    max_streams_per_publisher: int = 16  # live stream ids one publisher may keep on audio.* (the broker drops more)
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
        if self.max_streams_per_publisher < 1:
            raise SectionError("max_streams_per_publisher", "must be at least 1")


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
    # seconds of new audio that make a decode due with spare capacity (grows under load up to
    # max_chunk_size); 0.75 s: docs/benchmarks.md, "Words sooner"
    min_chunk_size: float = 0.75
    first_chunk_size: float = 0.2  # the chunk until the stream's first word is committed (0: off); benchmarks.md
    utterance_chunk_size: float = 0.5  # the chunk until the first word after a long pause is committed (0: off)
    buffer_trimming: str = _STREAMING.buffer_trimming
    buffer_trimming_sec: float = _STREAMING.buffer_trimming_sec
    idle_timeout: float = 30.0
    partials: bool = True
    input: str = "speech"  # speech (from the VAD) | audio (raw capture)
    max_streams: int = 16  # live streams at once; messages of further new streams are refused (counted)
    concurrency: int = 0  # decode threads; 0: one per core (up to 4) when the backend allows it, else 1
    # decode streams that are due together in one batched call (backends that batch); auto: on a GPU only
    batch: bool | str = "auto"
    batch_window_ms: float = 50.0  # a due decode waits this long for streams about to be due to join its batch
    max_batch: int = 16  # streams in one batch at most
    utterance_gap: float = _SCHEDULE.utterance_gap  # a pause longer than this starts a fresh audio buffer
    # seconds a speech_end waits for audio that would show it was none (a forged one); None: automatic
    # (0 with CURVE, where only the VAD may publish marks; else vad.min_silence_ms + 0.15)
    pause_hold: float | None = None
    settle_sec: float = _STREAMING.settle_sec  # commit a word this long after it was heard even without agreement
    early_commit_sec: float = _STREAMING.early_commit_sec  # commit a word the model is sure of this long after
    early_commit_prob: float = _STREAMING.early_commit_prob  # "sure": the model's word probability at least this
    options: dict = field(default_factory=dict)
    # pools (docs/running.md, "Worker pools"): workers of one pool share its streams, each stream decoded by one
    pool: str = ""  # the pool's name (its topics: transcript.<pool>.<stream>); default: the worker's name
    replicas: int = 1  # processes of this entry, named <name>-1 ... <name>-N when more than one
    slots: int = 0  # streams this worker takes from the dispatcher; 0: from its measured real-time factor
    pin_cores: bool = False  # replica k runs on CPU core k-1 (modulo the cores it may use); one decode thread

    @property
    def pool_name(self) -> str:
        return self.pool or self.name

    def actor_names(self) -> list[str]:
        """The processes of this entry: its name, or ``<name>-1`` ... ``<name>-N`` for replicas."""
        if self.replicas == 1:
            return [self.name]
        return [replica_name(self.name, k) for k in range(1, self.replicas + 1)]

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
        return Schedule(min_chunk_size=self.min_chunk_size, first_chunk_size=self.first_chunk_size,
                        utterance_chunk_size=self.utterance_chunk_size,
                        utterance_gap=self.utterance_gap,
                        at_pause="flush" if self.input == "speech" else "ignore", pause_hold=self.pause_hold or 0.0)

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
        if self.batch not in BATCH_SETTINGS:
            raise SectionError("batch", f"{self.batch!r} is not true, false or auto")
        if not 0 <= self.batch_window_ms <= 1000:
            raise SectionError("batch_window_ms", "must be between 0 and 1000")
        if self.max_batch < 1:
            raise SectionError("max_batch", "must be at least 1")
        if self.settle_sec < 0 or self.early_commit_sec < 0:
            raise SectionError("settle_sec", "settle_sec and early_commit_sec must be >= 0 (0: off)")
        if not 0 <= self.early_commit_prob <= 1:
            raise SectionError("early_commit_prob", "must be between 0 and 1")
        if self.pause_hold is not None and self.pause_hold < 0:
            raise SectionError("pause_hold", "must be >= 0 (or left out: automatic)")
        if self.pool:
            _name(self.pool, "pool")
        if not 1 <= self.replicas <= 64:
            raise SectionError("replicas", "must be between 1 and 64")
        for n in self.actor_names():
            _name(n, "replicas")  # <name>-N must still be a valid name
        if self.slots < 0:
            raise SectionError("slots", "must be >= 0 (0: from the measured real-time factor)")


REPLICA_FROM_HOST = "auto"  # ``--replica auto``: the replica id is the host's name (replicated containers)


def replica_name(name: str, replica: str | int) -> str:
    """The actor name of replica ``replica`` of worker entry ``name``."""
    return f"{name}-{replica}"


@dataclass(frozen=True)
class DispatcherConfig:
    """The actor that assigns each stream to one worker of each pool (workers/dispatcher.py)."""

    enabled: bool | None = None  # None: on when some pool has more than one worker process
    name: str = "dispatcher"
    dead_after: float = 3.0  # a worker without a heartbeat for this long is dead: its streams move
    replay_sec: float = 30.0  # audio kept per stream since its last commit, replayed to the next worker
    handoff_timeout: float = 5.0  # a draining worker's stream moves at its next pause, or after this long
    max_streams: int = 256  # streams assigned at once over all pools; further new ones are refused
    idle_timeout: float = 30.0  # a stream without a message for this long is forgotten

    def check(self) -> None:
        _name(self.name)
        for key in ("dead_after", "replay_sec", "handoff_timeout", "idle_timeout"):
            if getattr(self, key) <= 0:
                raise SectionError(key, "must be positive")
        if self.max_streams < 1:
            raise SectionError("max_streams", "must be at least 1")


@dataclass(frozen=True)
class SinkConfig:
    name: str = "sink"
    output: str = "console"  # console | jsonl:PATH | srt:PATH | vtt:PATH | txt:PATH
    workers: tuple = ()  # only these workers (default: all)
    partials: bool = True  # console only: show partials live
    snapshot: str | None = None  # endpoint to serve the transcript so far on (pipeline/snapshot.py)
    max_streams: int = DEFAULT_MAX_STREAMS  # (worker, stream) pairs kept in memory (outputs, snapshot history)
    max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES  # bytes of transcript kept in memory per pair

    def check(self) -> None:
        import re

        _name(self.name)
        if self.max_streams < 1:
            raise SectionError("max_streams", "must be at least 1")
        if self.max_stream_bytes < 1000:
            raise SectionError("max_stream_bytes", "must be at least 1000")
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


def pool_of(worker: WorkerConfig) -> str:
    """The name in a worker's transcript topics (``transcript.<pool>.<stream>``): its pool's, else its own."""
    return getattr(worker, "pool", None) or worker.name


GATEWAY_PREFIX_CHARS = 40  # of the gateway's name, at the start of every stream id it makes


def gateway_stream_prefix(name: str) -> str:
    """How every stream id of the gateway ``name`` begins (what its audio topics, and its key's rights, are)."""
    return f"{name[:GATEWAY_PREFIX_CHARS]}-"


@dataclass(frozen=True)
class GatewayConfig:
    """``voxpipe serve``: Deepgram-, OpenAI- and whisper_streaming-compatible endpoints (workers/gateway)."""

    enabled: bool = False
    name: str = "gateway"
    host: str = "127.0.0.1"
    port: int = 8000  # HTTP and WebSocket: /v1/listen, /v1/audio/*, /v1/realtime
    tcp_port: int | None = None  # whisper_streaming's raw-PCM TCP protocol (43007 in configs/serve.yaml); null: off
    pool: str | None = None  # whose transcripts clients get (transcript.<pool>.*); default: the first worker's
    translate_pool: str | None = None  # /v1/audio/translations; default: the first worker with task translate
    language_pools: dict = field(default_factory=dict)  # language code -> pool, for requests that name one
    api_keys: tuple = ()  # when set, every client sends one; required beyond loopback
    max_connections: int = 16  # client connections (and uploads) at once: a worker serves 16 streams by default
    max_frame_bytes: int = 1 << 20  # largest WebSocket message; a bigger one closes the connection (1009)
    max_messages_per_s: float = 200.0  # per connection, averaged over a 2 s burst
    max_session_s: float = 3600.0  # longest connection, and longest uploaded file
    idle_timeout: float = 10.0  # Deepgram's: nothing from the client this long closes it (1011 NET-0001)
    max_upload_bytes: int = 25 * 1024 * 1024  # the OpenAI API's file limit

    @property
    def keys(self) -> tuple:
        return tuple(k for k in self.api_keys if k)

    def pools(self) -> tuple:
        """Every pool the gateway may route a client to, default first."""
        names = [self.pool, self.translate_pool, *self.language_pools.values()]
        return tuple(dict.fromkeys(n for n in names if n))

    def resolved(self, workers: tuple) -> GatewayConfig:
        """Defaults that depend on the workers: ``pool`` and ``translate_pool``."""
        from dataclasses import replace

        pool = self.pool or (pool_of(workers[0]) if workers else WorkerConfig.name)
        translate = self.translate_pool or next((pool_of(w) for w in workers if w.task == "translate"), None)
        return replace(self, pool=pool, translate_pool=translate)

    def check(self) -> None:
        from .security import is_loopback_host

        _name(self.name)
        for key in ("port", "tcp_port"):
            port = getattr(self, key)
            if port is not None and not 0 <= port <= 65535:
                raise SectionError(key, f"{port} is not a port number")
        if not is_loopback_host(self.host) and not self.keys:
            raise SectionError("host", f"{self.host} binds beyond loopback: set gateway.api_keys "
                                       "(clients send Authorization: Token KEY or Bearer KEY)")
        if self.tcp_port is not None and not is_loopback_host(self.host):
            raise SectionError("tcp_port", "whisper_streaming's TCP protocol has no way to send a key: "
                                           "it is served on a loopback host only")
        for key in ("pool", "translate_pool"):
            if getattr(self, key) is not None:
                _name(getattr(self, key), key)
        for lang, pool in self.language_pools.items():
            if not isinstance(lang, str) or not isinstance(pool, str) or not valid_id(pool):
                raise SectionError("language_pools", f"{lang!r}: {pool!r} must map a language code to a pool name")
        for key in ("max_connections", "max_frame_bytes", "max_upload_bytes"):
            if getattr(self, key) < 1:
                raise SectionError(key, "must be at least 1")
        for key in ("max_messages_per_s", "max_session_s", "idle_timeout"):
            if getattr(self, key) <= 0:
                raise SectionError(key, "must be positive")


@dataclass(frozen=True)
class HealthConfig:
    """``/healthz`` and ``/readyz`` on every actor (workers/health_http.py); off by default."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9900  # the first actor's port (see ``consecutive``)
    consecutive: bool = True  # actor i of the plan (voxpipe procfile order) listens on port + i; false: all on port
    ports: dict = field(default_factory=dict)  # actor name -> its own port (wins over the rule above)

    def port_for(self, name: str, names: list[str]) -> int | None:
        """The port actor ``name`` serves its health endpoints on (None: off, or not an actor of the plan)."""
        if not self.enabled:
            return None
        if name in self.ports:
            return int(self.ports[name])
        if not self.consecutive:
            return self.port
        return self.port + names.index(name) if name in names else None

    def check(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SectionError("port", f"{self.port} is not a port number")
        for name, port in self.ports.items():
            if not valid_id(name) or not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
                raise SectionError("ports", f"{name!r}: {port!r} must be an actor name and a port number")


@dataclass(frozen=True)
class MetricsConfig:
    """The ``metrics`` actor (workers/metrics.py): Prometheus text at ``http://host:port/metrics``."""

    enabled: bool = False
    name: str = "metrics"
    host: str = "127.0.0.1"
    port: int = 9870

    def check(self) -> None:
        _name(self.name)
        if not 0 <= self.port <= 65535:
            raise SectionError("port", f"{self.port} is not a port number")


@dataclass(frozen=True)
class RestartConfig:
    """How ``voxpipe up`` (and the exports) restart a crashed actor: see :mod:`apps.restart`."""

    backoff: float = 0.5  # seconds before the first restart; doubled with each failure in the window
    backoff_max: float = 8.0
    max_failures: int = 5  # this many failures of one actor within `window` seconds stop the pipeline
    window: float = 60.0
    hang_timeout: float = 30.0  # an actor without a heartbeat this long is killed (and restarted); 0: never

    def check(self) -> None:
        if self.backoff < 0 or self.backoff_max < self.backoff:
            raise SectionError("backoff", "needs 0 <= backoff <= backoff_max")
        if self.max_failures < 1:
            raise SectionError("max_failures", "must be at least 1")
        if self.window <= 0:
            raise SectionError("window", "must be positive")
        if self.hang_timeout < 0:
            raise SectionError("hang_timeout", "must be >= 0 (0: never)")


@dataclass(frozen=True)
class Config:
    bus: BusConfig = field(default_factory=BusConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    sources: tuple = ()
    vad: VADConfig = field(default_factory=VADConfig)
    workers: tuple = ()
    sinks: tuple = ()
    web: WebConfig = field(default_factory=WebConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    restart: RestartConfig = field(default_factory=RestartConfig)
    version: int = 1
    path: str | None = None  # the file it was loaded from
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)

    def worker(self, name: str) -> WorkerConfig:
        return _by_name(self.workers, name, "worker")

    def pools(self) -> dict[str, list[str]]:
        """Pool name -> the actor names of its workers, in config order."""
        out: dict[str, list[str]] = {}
        for w in self.workers:
            out.setdefault(w.pool_name, []).extend(w.actor_names())
        return out

    @property
    def dispatched(self) -> bool:
        """Do the pools get their streams from the dispatcher (else every worker hears every stream)?"""
        if self.dispatcher.enabled is not None:
            return self.dispatcher.enabled and bool(self.workers)
        return any(len(names) > 1 for names in self.pools().values())

    def expand_names(self, names) -> list[str]:
        """Actor names, with a worker entry or a pool standing for its worker processes (and the dispatcher)."""
        pools = self.pools()
        entries = {w.name: w.actor_names() for w in self.workers}
        out: list[str] = []
        for n in names:
            got = entries.get(n) or pools.get(n) or [n]
            if self.dispatched and n in {**entries, **pools}:
                got = [self.dispatcher.name, *got]
            out += [g for g in got if g not in out]
        return out

    def source(self, name: str) -> SourceConfig:
        return _by_name(self.sources, name, "source")

    def sink(self, name: str) -> SinkConfig:
        return _by_name(self.sinks, name, "sink")

    def actor_names(self) -> list[str]:
        names = [self.broker.name]
        names += [s.name for s in self.sources]
        if self.vad.enabled:
            names.append(self.vad.name)
        if self.dispatched:
            names.append(self.dispatcher.name)
        names += [n for w in self.workers for n in w.actor_names()]
        names += [s.name for s in self.sinks]
        if self.web.enabled:
            names.append(self.web.name)
        if self.gateway.enabled:
            names.append(self.gateway.name)
        if self.metrics.enabled:
            names.append(self.metrics.name)
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
