"""Browser streams and their transcripts: the state the web page and the bus share.

:class:`WebHub` is the one object both threads of the web actor touch, under
one lock:

* the web server thread (FastRTC callbacks, Gradio timer ticks, downloads)
  opens a stream per browser session, pushes its microphone audio
  (:meth:`WebHub.push_audio`, any rate and layout: made 16 kHz mono int16
  here) and closes it; it reads transcripts and worker states to draw pages;
* the bus thread takes the audio frames and ``eos`` to publish
  (:meth:`WebHub.take_outgoing`; it numbers them, so nothing here touches a
  socket) and feeds back what the workers say (:meth:`WebHub.on_message`:
  commits, partials, ``eos``, errors and heartbeats).

Transcripts are kept per pool (the middle of ``transcript.<pool>.<stream>``; a worker
outside a pool is its own pool), whichever replica made them; the page's "worker" menu
lists the pools seen in heartbeats, ready when one of their workers is. A pool's refusal
(an ``error`` with a reason code) is shown on the page; late messages of a pool worker
presumed dead are dropped (:mod:`pipeline.epochs`).

Frames are 100 ms like the capture actor's. ``t`` is the stream position
(samples sent so far / 16000), ``wall0`` the Unix time of sample 0: the
arrival time of the first chunk minus its duration, fixed for the stream, as
for a live microphone.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from pipeline import messages as m
from pipeline.epochs import EpochFilter
from pipeline.formats import CueBuilder, commit_words, join_commit_texts, render_srt

SR = m.SAMPLE_RATE
FRAME_SAMPLES = SR // 10  # 100 ms per published frame
MAX_OUTGOING = 600  # frames queued for the bus (60 s of one stream) before the oldest are dropped
KEEP_CLOSED = 64  # finished streams kept for their page and downloads
WORKER_STALE_S = 5.0  # a worker without a heartbeat for this long is shown as gone
LISTENING_S = 1.5  # audio within this many seconds means "listening"
EXPORT_FORMATS = {"txt": "text/plain", "srt": "application/x-subrip", "json": "application/json"}


class SessionRefused(RuntimeError):
    """No new stream now (the actor is stopping, or the id is taken)."""


# -- audio ------------------------------------------------------------------------------------------
def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """Any int16/float array, 1-D or (channels, n) / (n, channels), as mono float32 in [-1, 1]."""
    a = np.asarray(samples)
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    elif a.dtype.kind in "iu":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    else:
        a = a.astype(np.float32)
    if a.ndim == 2:
        a = a.mean(axis=0 if a.shape[0] <= a.shape[1] else 1)
    return np.ascontiguousarray(a.reshape(-1))


class LinearResampler:
    """Streaming linear-interpolation resampler to 16 kHz (continuous across chunks)."""

    def __init__(self, rate: int):
        if rate <= 0:
            raise ValueError(f"bad sample rate {rate}")
        self.rate = rate
        self.step = rate / SR  # input samples per output sample
        self.pos = 0.0  # position of the next output sample, relative to self.tail[0]
        self.tail = np.zeros(0, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.rate == SR:
            return x
        buf = np.concatenate([self.tail, x]) if len(self.tail) else x
        if len(buf) < 2:
            self.tail = buf
            return np.zeros(0, dtype=np.float32)
        n = int(np.floor((len(buf) - 1 - self.pos) / self.step)) + 1
        idx = self.pos + self.step * np.arange(max(n, 0))
        out = np.interp(idx, np.arange(len(buf)), buf).astype(np.float32)
        nxt = self.pos + self.step * max(n, 0)
        keep = min(int(np.floor(nxt)), len(buf))
        self.tail = buf[keep:]
        self.pos = nxt - keep
        return out


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")


def _language_of(commit) -> dict:
    """A commit's language fields for a :class:`View` (none for a commit that does not say)."""
    if commit is None or not commit.language:
        return {}
    return {"language": commit.language, "language_prob": commit.language_prob,
            "language_uncertain": bool(commit.language_uncertain)}


# -- state ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outgoing:
    """A message for the bus thread to publish: ``audio`` or ``eos`` of one stream."""

    kind: str
    stream: str
    t: float
    wall0: float = 0.0
    pcm: bytes = b""
    language: str | None = None  # what the page asks of the workers: the language spoken (auto: detect)
    task: str | None = None  # transcribe | translate


@dataclass
class WorkerTranscript:
    commits: list = field(default_factory=list)  # m.Commit, in arrival order
    partial: str = ""
    ended: bool = False
    error: str = ""

    @property
    def text(self) -> str:
        return join_commit_texts(c.text for c in self.commits)


@dataclass
class StreamSession:
    stream: str
    key: str  # secret for this stream's downloads
    opened: float  # Unix time
    wall0: float | None = None
    samples: int = 0  # samples published (the next frame's t * SR)
    last_audio: float = 0.0  # monotonic
    closed: bool = False
    resampler: LinearResampler | None = None
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<i2"))
    transcripts: dict = field(default_factory=dict)  # worker -> WorkerTranscript
    language: str | None = None  # the page's choice, sent with every frame (None: the workers' own)
    task: str | None = None

    @property
    def seconds(self) -> float:
        return (self.samples + len(self.pending)) / SR


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    ready: bool
    backend: str
    model: str
    language: str
    seen: float  # monotonic time of the last heartbeat
    behind: bool = False  # its heartbeat says it cannot keep up with live audio (info.behind)
    rtf: float = 0.0  # its recent real-time factor (info.rtf_recent)

    def fresh(self, now: float | None = None) -> bool:
        return ((now if now is not None else time.monotonic()) - self.seen) < WORKER_STALE_S

    def label(self) -> str:
        return f"{self.name} ({self.backend} {self.model}, {self.language})"


@dataclass(frozen=True)
class View:
    """What one page shows: its stream, the chosen worker and that worker's transcript."""

    stream: str | None
    open: bool
    listening: bool
    seconds: float
    worker: WorkerInfo | None
    workers: tuple  # WorkerInfo offered under the chosen language
    languages: tuple
    committed: str = ""
    partial: str = ""
    ended: bool = False
    error: str = ""
    key: str = ""
    denied: str = ""
    language: str = ""  # the language of the latest commit (given or detected), if it said
    language_prob: float | None = None  # when detected: the model's probability of it
    language_uncertain: bool = False


class WebHub:
    """Thread-safe registry of browser streams, their transcripts and the workers seen."""

    def __init__(self, worker_order: tuple = (), worker_languages: dict | None = None,
                 max_outgoing: int = MAX_OUTGOING):
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, StreamSession] = OrderedDict()
        self._out: deque = deque()
        self._max_out = max_outgoing
        self._workers: dict[str, WorkerInfo] = {}  # the latest heartbeat of each worker (replica), by its name
        self._epochs = EpochFilter()
        self._order = {name: i for i, name in enumerate(worker_order)}
        self._languages = dict(worker_languages or {})
        self._denied: OrderedDict[str, str] = OrderedDict()
        self._hints: OrderedDict[str, tuple] = OrderedDict()  # stream -> (language, task), also before it opens
        self.closing = False
        self.counters = {"streams_total": 0, "audio_seconds": 0.0, "dropped_frames": 0, "denied": 0}

    # -- browser side -----------------------------------------------------------------------------
    def open_stream(self, stream: str) -> StreamSession:
        if not m.valid_id(stream):
            raise SessionRefused(f"bad stream id {stream!r}")
        with self._lock:
            if self.closing:
                raise SessionRefused("the server is shutting down")
            if stream in self._sessions:
                raise SessionRefused(f"stream {stream} exists")
            s = StreamSession(stream, secrets.token_urlsafe(16), time.time())
            s.language, s.task = self._hints.get(stream, (None, None))
            self._sessions[stream] = s
            self.counters["streams_total"] += 1
            self._forget_old()
            return s

    def set_hints(self, stream: str, language: str | None, task: str | None) -> None:
        """What the page asks of the workers for ``stream`` (open or about to open): the language
        spoken (``auto``: detected) and the task (``transcribe`` | ``translate``); None: the workers' own."""
        language = language if language and m.valid_language(language) else None
        task = task if task in m.TASKS else None
        with self._lock:
            self._hints[stream] = (language, task)
            self._hints.move_to_end(stream)
            while len(self._hints) > 4 * KEEP_CLOSED:
                self._hints.popitem(last=False)
            s = self._sessions.get(stream)
            if s is not None:
                s.language, s.task = language, task

    def deny(self, stream: str, reason: str) -> None:
        """Remember that ``stream`` was refused (the page says why)."""
        with self._lock:
            self._denied[stream] = reason
            self.counters["denied"] += 1
            while len(self._denied) > KEEP_CLOSED:
                self._denied.popitem(last=False)

    def push_audio(self, stream: str, rate: int, samples: np.ndarray) -> None:
        """Microphone samples of an open stream (int16 or float, any layout and rate)."""
        x = to_mono_float(samples)
        now_wall, now_mono = time.time(), time.monotonic()
        with self._lock:
            s = self._sessions.get(stream)
            if s is None or s.closed or not len(x):
                return
            if s.resampler is None or s.resampler.rate != rate:
                s.resampler = LinearResampler(rate)
            pcm = float_to_pcm16(s.resampler(x))
            if s.wall0 is None:
                s.wall0 = now_wall - len(pcm) / SR
            s.last_audio = now_mono
            s.pending = np.concatenate([s.pending, pcm]) if len(s.pending) else pcm
            while len(s.pending) >= FRAME_SAMPLES:
                self._emit_frame(s, s.pending[:FRAME_SAMPLES])
                s.pending = s.pending[FRAME_SAMPLES:]

    def close_stream(self, stream: str) -> bool:
        """End a stream: its last partial frame, then ``eos``. False if it was not open."""
        with self._lock:
            s = self._sessions.get(stream)
            if s is None or s.closed:
                return False
            self._close(s)
            return True

    def view(self, stream: str | None, worker: str | None = None, language: str | None = None) -> View:
        now = time.monotonic()
        with self._lock:
            workers = self._live_workers(now)
            languages = tuple(sorted({w.language for w in workers}))
            offered = tuple(w for w in workers if not language or language == "any" or w.language == language)
            chosen = next((w for w in offered if w.name == worker), offered[0] if offered else None)
            s = self._sessions.get(stream) if stream else None
            if s is None:
                denied = self._denied.get(stream, "") if stream else ""
                return View(None, False, False, 0.0, chosen, offered, languages, denied=denied)
            tr = s.transcripts.get(chosen.name) if chosen else None
            return View(
                stream=s.stream, open=not s.closed, listening=not s.closed and now - s.last_audio < LISTENING_S,
                seconds=s.seconds, worker=chosen, workers=offered, languages=languages,
                committed=tr.text if tr else "", partial=tr.partial if tr and not tr.ended else "",
                ended=bool(tr and tr.ended), error=tr.error if tr else "", key=s.key,
                **_language_of(tr.commits[-1] if tr and tr.commits else None),
            )

    def export(self, stream: str, key: str, worker: str, fmt: str) -> tuple[str, str, str] | None:
        """(filename, content type, body) of a stream's transcript, or None if the key does not match."""
        with self._lock:
            s = self._sessions.get(stream)
            if s is None or fmt not in EXPORT_FORMATS or not secrets.compare_digest(s.key, key or ""):
                return None
            tr = s.transcripts.get(worker) or WorkerTranscript()
            commits = list(tr.commits)
            info = next((w for w in self._workers.values() if w.name == worker), None)
            ended, partial = tr.ended, tr.partial
        name = f"{stream}-{worker}.{fmt}" if m.valid_id(worker) else f"{stream}.{fmt}"
        if fmt == "txt":
            body = join_commit_texts(c.text for c in commits) + "\n"
        elif fmt == "srt":
            cues = CueBuilder()
            out = []
            for c in commits:
                out += cues.add(commit_words(c))
            body = render_srt(out + cues.flush())
        else:
            body = json.dumps({
                "stream": stream, "worker": worker, "ended": ended,
                "backend": info.backend if info else "", "model": info.model if info else "",
                "language": info.language if info else "",
                "text": join_commit_texts(c.text for c in commits), "partial": "" if ended else partial,
                "commits": [m.as_dict(c) for c in commits],
            }, ensure_ascii=False, indent=1) + "\n"
        return name, EXPORT_FORMATS[fmt], body

    def open_streams(self) -> list[str]:
        with self._lock:
            return [s.stream for s in self._sessions.values() if not s.closed]

    # -- bus side ---------------------------------------------------------------------------------------
    def take_outgoing(self, limit: int = 1000) -> list[Outgoing]:
        with self._lock:
            n = min(limit, len(self._out))
            return [self._out.popleft() for _ in range(n)]

    def pending_outgoing(self) -> int:
        with self._lock:
            return len(self._out)

    def close_all(self) -> int:
        """Stop accepting streams and end every open one (first stop signal)."""
        with self._lock:
            self.closing = True
            open_ = [s for s in self._sessions.values() if not s.closed]
            for s in open_:
                self._close(s)
            return len(open_)

    def on_message(self, topic: str, msg: m.Message) -> None:
        if isinstance(msg, m.Heartbeat):
            if msg.role == "worker" and msg.name:
                self._on_heartbeat(msg)
            return
        parts = m.parse_topic(topic)
        family = parts.family
        worker = parts.worker or getattr(msg, "worker", None)  # the pool
        with self._lock:
            s = self._sessions.get(msg.stream)
            if s is None or not worker or not self._epochs.admit(topic, msg):
                return
            tr = s.transcripts.setdefault(worker, WorkerTranscript())
            if isinstance(msg, m.Commit):
                tr.commits.append(msg)
                tr.partial = ""
            elif isinstance(msg, m.Partial):
                if not tr.ended:
                    tr.partial = msg.text
            elif isinstance(msg, m.EndOfStream) and family == "transcript":
                tr.ended, tr.partial = True, ""
            elif isinstance(msg, m.Error) and msg.code != m.FAILOVER:  # a failover goes on by itself
                tr.error = msg.message

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            return self._live_workers(time.monotonic())

    # -- inside the lock --------------------------------------------------------------------------------
    def _on_heartbeat(self, hb: m.Heartbeat) -> None:
        info = hb.info or {}
        language = str(info.get("language") or self._languages.get(hb.name) or "unknown")
        pool = info.get("pool") if m.valid_id(info.get("pool")) else hb.name
        rtf = info.get("rtf_recent", 0.0)
        w = WorkerInfo(pool, bool(hb.ready), str(info.get("backend", "")), str(info.get("model", "")),
                       language, time.monotonic(), behind=info.get("behind") is True,
                       rtf=float(rtf) if isinstance(rtf, (int, float)) else 0.0)
        with self._lock:
            self._workers[hb.name] = w

    def _live_workers(self, now: float) -> list[WorkerInfo]:
        """One entry per pool with a fresh heartbeat: ready when one of its workers is."""
        pools: dict[str, WorkerInfo] = {}
        for w in self._workers.values():
            if not w.fresh(now):
                continue
            seen = pools.get(w.name)
            if seen is None or (w.ready and not seen.ready):
                pools[w.name] = w
        live = list(pools.values())
        return sorted(live, key=lambda w: (self._order.get(w.name, len(self._order)), w.name))

    def _emit_frame(self, s: StreamSession, pcm: np.ndarray) -> None:
        self._queue(Outgoing("audio", s.stream, s.samples / SR, s.wall0 or 0.0, pcm.tobytes(), s.language, s.task))
        s.samples += len(pcm)
        self.counters["audio_seconds"] += len(pcm) / SR

    def _close(self, s: StreamSession) -> None:
        if len(s.pending):
            self._emit_frame(s, s.pending)
            s.pending = np.zeros(0, dtype="<i2")
        s.closed = True
        s.resampler = None
        self._out.append(Outgoing("eos", s.stream, s.samples / SR))  # never dropped

    def _queue(self, item: Outgoing) -> None:
        if len(self._out) >= self._max_out:
            for i, old in enumerate(self._out):
                if old.kind == "audio":
                    del self._out[i]
                    self.counters["dropped_frames"] += 1
                    break
        self._out.append(item)

    def _forget_old(self) -> None:
        closed = [k for k, s in self._sessions.items() if s.closed]
        for k in closed[: max(0, len(closed) - KEEP_CLOSED)]:
            del self._sessions[k]
