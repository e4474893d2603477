"""The sink actor: transcripts from the bus into a console or a file.

``voxpipe sink OUTPUT [--workers a,b]`` or ``voxpipe sink --config C --name N``
(the sink's section gives ``output``, ``workers`` and ``partials``; a given
``OUTPUT`` or ``--workers`` overrides it).

It subscribes to ``transcript.`` (``transcript.<pool>.`` for each selected
worker) and, for a console with partials, to ``partial.``; commits, eos and
errors go to the output (:mod:`pipeline.outputs`, :mod:`workers.console`).

Stopping: on the first SIGTERM/SIGINT the sink keeps listening until every
(worker, stream) it has seen without an ``eos`` gets one (that is the
workers' final flush), or ``--grace`` seconds pass, then closes its output
(cue files get their last cue) and exits 0. Heartbeats count what it
received and wrote.

Late subscribers: with ``snapshot: ENDPOINT`` in its section the sink also
keeps the transcript messages it has seen (a JSONL sink reloads them from its
file at start) and serves them to ``voxpipe listen --from-start`` and
``pipeline.client.subscribe(..., from_start=True)`` (:mod:`pipeline.snapshot`).

What it believes: it also subscribes to ``status.`` and writes a transcript
message only while its worker's heartbeat lists the stream, an ``eos`` only once
the worker's next heartbeat lists the stream as ended, and no commit with more
text than its span can hold (:mod:`pipeline.roster`; counted ``unserved``,
``unconfirmed_eos``, ``oversized``). Memory is bounded by ``max_streams`` and
``max_stream_bytes`` (outputs and snapshot history; ``refused`` counts what did
not fit).

It exits 0 only when everything it took was written: an output that cannot be
opened is one line and exit 1 at once; a write that failed makes it exit 1 when
it stops (``write_failures``).
"""

from __future__ import annotations

import time

from pipeline import messages as m
from pipeline.config import ConfigError, SinkConfig
from pipeline.epochs import EpochFilter
from pipeline.errors import RuntimeFailure
from pipeline.outputs import Budget, open_file_output, parse_output
from pipeline.roster import Believer
from pipeline.snapshot import History, SnapshotServer

from .base import Actor, actor_config, add_actor_arguments, run_actor
from .console import ConsoleOutput

DEFAULT_GRACE = 4.0  # under honcho's 5 s before SIGKILL, so cue files still get their last cue


class Sink(Actor):
    role = "sink"

    def __init__(self, name, bus, scfg: SinkConfig, config=None, grace: float = DEFAULT_GRACE, several=None,
                 console_out=None):
        super().__init__(name, bus, config)
        try:
            self.kind, self.path = parse_output(scfg.output)
        except ValueError as exc:
            raise ConfigError(f"sink {name}: {exc}") from None
        self.scfg = scfg
        self.workers = tuple(scfg.workers)
        self.grace = grace
        self.drain_timeout = grace + 1.0
        self.several = self._expects_several() if several is None else several
        self._console_out = console_out
        self.output = None
        self.history = History(max_topics=scfg.max_streams, max_bytes_per_topic=scfg.max_stream_bytes) \
            if scfg.snapshot else None
        self.snapshots: SnapshotServer | None = None
        self.open_pairs: set[tuple[str, str]] = set()
        self._drain_deadline = 0.0
        self.epochs = EpochFilter()  # late messages of a pool worker presumed dead are dropped
        self.believer = Believer(bus.heartbeat_interval)
        self.last_failure = ""
        self.counters.update({"commits": 0, "partials": 0, "eos": 0, "worker_errors": 0, "written": 0,
                              "write_failures": 0, "filtered": 0, "refused": 0, "unserved": 0,
                              "unconfirmed_eos": 0, "oversized": 0, "stale": 0})

    def _expected_pairs(self) -> list[tuple[str, str]]:
        """The (worker, stream) pairs the config says this sink will get."""
        cfg = self.config
        if cfg is None:
            return []
        workers = [p for p in cfg.pools() if not self.workers or p in self.workers]
        return [(w, s.stream_id) for w in workers for s in cfg.sources]

    def _expects_several(self) -> bool:
        """Several (pool, stream) pairs expected, going by the config (a pool's replicas share its topics)."""
        cfg = self.config
        if cfg is None:
            return False
        pools = [p for p in cfg.pools() if not self.workers or p in self.workers]
        return len(pools) * max(1, len(cfg.sources)) > 1

    # -- actor hooks -----------------------------------------------------------------------------
    def subscriptions(self):
        families = ["transcript"]
        if self.kind == "console" and self.scfg.partials:
            families.append("partial")
        if not self.workers:
            return [f"{fam}." for fam in families] + ["status."]
        return [f"{fam}.{w}." for fam in families for w in self.workers] + ["status."]

    def setup(self) -> None:
        if self.kind == "console":
            self.output = ConsoleOutput(out=self._console_out, partials=self.scfg.partials, several=self.several)
        else:
            budget = Budget(self.scfg.max_streams, self.scfg.max_stream_bytes)
            try:
                self.output = open_file_output(self.kind, self.path, self.several, budget, self._expected_pairs())
            except OSError as exc:
                raise RuntimeFailure(f"sink {self.name}: cannot write {self.scfg.output}: "
                                     f"{exc.strerror or exc}") from None
        self.log.info("writing %s", self.scfg.output)
        if self.history is not None:
            kept = self.history.load_jsonl(self.path) if self.kind == "jsonl" else 0
            self.snapshots = SnapshotServer(self.ctx, self.scfg.snapshot, self.bus, self.history)
            self.log.info("serving snapshots on %s (%d message(s) from %s)", self.scfg.snapshot, kept,
                          self.path or "before")

    def tick(self, now: float) -> None:
        for topic, msg in self.believer.expire(time.monotonic()):
            self._take(topic, msg)
        self.counters.update({k: v for k, v in self.believer.counts.as_dict().items() if k != "held"})
        if self.snapshots is not None and self.snapshots.serve():
            self.counters["snapshots"] = self.snapshots.served

    def info(self) -> dict:
        return {
            "output": self.scfg.output,
            "workers": list(self.workers),
            "files": self.output.files() if self.output is not None else [],
            "open": sorted(f"{w}/{s}" for w, s in self.open_pairs),
            "snapshot": self.scfg.snapshot,
        }

    def handle(self, topic: str, msg: m.Message) -> None:
        now = time.monotonic()
        if isinstance(msg, m.Heartbeat):
            believed = self.believer.heartbeat(msg, now)
        else:
            believed = self.believer.offer(topic, msg, now)
        for t, believed_msg in believed:
            self._take(t, believed_msg)

    def _take(self, topic: str, msg: m.Message) -> None:
        parts = m.parse_topic(topic)
        family, worker, stream = parts.family, parts.worker, parts.id
        if family not in ("transcript", "partial") or not worker:
            return
        if self.workers and worker not in self.workers:
            self.counters["filtered"] += 1
            return
        if not self.epochs.admit(topic, msg):
            self.counters["stale"] += 1
            return
        pair = (worker, stream)
        if self.history is not None:
            self.history.add(topic, msg)
        try:
            if isinstance(msg, m.Commit):
                self.counters["commits"] += 1
                self.open_pairs.add(pair)
                self.output.commit(worker, stream, topic, msg)
            elif isinstance(msg, m.Partial):
                self.counters["partials"] += 1
                self.open_pairs.add(pair)
                self.output.partial(worker, stream, topic, msg)
            elif isinstance(msg, m.EndOfStream):
                self.counters["eos"] += 1
                self.open_pairs.discard(pair)
                self.output.eos(worker, stream, topic, msg)
            elif isinstance(msg, m.Error):
                self.counters["worker_errors"] += 1
                self.log.warning("worker %s, stream %s: %s", worker, stream, msg.message)
                self.output.error(worker, stream, topic, msg)
        except OSError as exc:
            self.counters["write_failures"] += 1
            self.last_failure = exc.strerror or str(exc)
            self.limited.warning("write", "cannot write %s: %s", self.scfg.output, exc)
        finally:
            self.counters["written"] = self.output.written
            self.counters["refused"] = getattr(self.output, "refused", 0)

    def drain(self) -> None:
        self._drain_deadline = time.monotonic() + self.grace
        if self.open_pairs:
            self.log.info("waiting up to %.0fs for the final flush of %s", self.grace,
                          ", ".join(f"{w}/{s}" for w, s in sorted(self.open_pairs)))

    def drained(self) -> bool:
        return not self.open_pairs or time.monotonic() >= self._drain_deadline

    def run(self) -> int:
        code = super().run()
        if self.counters["write_failures"]:
            raise RuntimeFailure(f"sink {self.name}: {self.counters['write_failures']} write(s) to {self.scfg.output} "
                                 f"failed ({self.last_failure})")
        return code

    def teardown(self) -> None:
        if self.snapshots is not None:
            self.snapshots.close()
        if self.output is None:
            return
        try:
            self.output.close()
        except OSError as exc:
            self.counters["write_failures"] += 1
            self.last_failure = exc.strerror or str(exc)
            self.log.error("cannot finish %s: %s", self.scfg.output, exc)
        self.counters["written"] = self.output.written
        self.log.info("wrote %d record(s) to %s: %d commit(s), %d eos, %d error(s)", self.output.written,
                      self.scfg.output, self.counters["commits"], self.counters["eos"], self.counters["worker_errors"])


# -- command line ---------------------------------------------------------------------------------
def register(sub) -> None:
    p = sub.add_parser("sink", help="write transcripts to the console or a file (jsonl/srt/vtt/txt)")
    p.add_argument("output", nargs="?", default=None,
                   help="console | jsonl:PATH | srt:PATH | vtt:PATH | txt:PATH (default: the config's)")
    p.add_argument("--workers", default=None, help="comma-separated worker names to keep (default: all)")
    p.add_argument("--no-partials", action="store_true", help="console: do not show partial hypotheses")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE,
                   help="seconds to wait for the workers' final flush after a stop signal (default %(default)s)")
    add_actor_arguments(p, "sink")
    p.set_defaults(func=run)


def run(args) -> int:
    def build():
        # a sink named on the command line with its own output is a new sink; without
        # either, the config's first sink
        cfg = actor_config(args, "sinks", {
            "output": args.output, "partials": False if args.no_partials else None,
            "workers": None if args.workers is None else [w.strip() for w in args.workers.split(",") if w.strip()],
        }, default_name="sink", new=args.output is not None, first=True)
        scfg = cfg.sink(args.name) if args.name else (cfg.sinks[-1] if args.output is not None else cfg.sinks[0])
        return Sink(scfg.name, cfg.bus, scfg, cfg, grace=args.grace)

    return run_actor(build)
