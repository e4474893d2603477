"""Late subscribers: the transcript so far, then the live messages, without gaps or duplicates.

A subscriber that connects after a stream started has missed its first
commits (there is no replay on the bus). A sink configured with
``snapshot: ENDPOINT`` keeps what it has seen on ``transcript.*`` (commits,
errors, eos; per topic, bounded) in a :class:`History`, loaded from its JSONL
file at start when it writes one, and answers snapshot requests on a ROUTER
socket bound to that endpoint (:class:`SnapshotServer`; protocol section 10).

The client side follows ZeroMQ's "clone" pattern (:class:`Merger`, used by
``pipeline.client.Subscription(from_start=True)`` and ``voxpipe listen
--from-start``):

1. subscribe and sync (the subscription is in place: nothing published from
   now on is missed; the SUB socket queues it meanwhile);
2. fetch the snapshot and deliver it;
3. deliver the live messages, skipping those the snapshot already had (same
   topic, same ``seq``, same content), and, when the first live message of a
   topic is ahead of the snapshot (the sink had not received the messages in
   between yet), fetching that topic's snapshot again to fill the hole.

``seq`` restarts at 0 when a worker restarts or a stream id is used again;
records of a topic form *epochs* (each starts where ``seq`` does not grow),
and only the last epoch is matched against live messages.

Memory is bounded: a history keeps its records as the frames they travel in, at most
``max_bytes_per_topic`` of them per topic (the oldest go first) for at most ``max_topics``
topics (the least recently active goes first); a reply is made of those same frames (sent
without copying them), so answering a request does not grow the sink.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import OrderedDict, deque

import msgpack
import zmq

from . import messages as m
from .outputs import DEFAULT_MAX_STREAM_BYTES, DEFAULT_MAX_STREAMS

VERSION = 1
MAX_TOPICS = DEFAULT_MAX_STREAMS  # topics a history keeps (the least recently active is forgotten first)
MAX_PER_TOPIC = 10000  # messages kept per topic (the oldest are forgotten first)
MAX_BYTES_PER_TOPIC = DEFAULT_MAX_STREAM_BYTES  # bytes of frames kept per topic (the oldest are forgotten first)
MAX_REQUEST_BYTES = 4096
MAX_PREFIXES = 32
REQUESTS_PER_TICK = 8
FAMILIES = ("transcript",)  # what a history keeps

log = logging.getLogger("voxpipe.snapshot")


class SnapshotError(RuntimeError):
    """No snapshot: the endpoint did not answer in time, or answered with an error."""


# -- server side ---------------------------------------------------------------------------------
class _Records:
    """One topic's records: their wire frames, oldest first, and how many bytes they hold."""

    def __init__(self) -> None:
        self.frames: deque[list[bytes]] = deque()
        self.bytes = 0


class History:
    """Transcript messages per topic, in arrival order, bounded in count and bytes."""

    def __init__(self, max_topics: int = MAX_TOPICS, max_per_topic: int = MAX_PER_TOPIC,
                 max_bytes_per_topic: int = MAX_BYTES_PER_TOPIC):
        self.max_topics, self.max_per_topic, self.max_bytes_per_topic = max_topics, max_per_topic, max_bytes_per_topic
        self.topics: OrderedDict[str, _Records] = OrderedDict()
        self.forgotten = 0  # records let go to stay within the bounds

    def add(self, topic: str, msg: m.Message) -> None:
        if m.parse_topic(topic).family not in FAMILIES or isinstance(msg, m.Partial):
            return
        frames = m.encode(topic, msg)
        size = sum(len(f) for f in frames)
        if size > self.max_bytes_per_topic:
            self.forgotten += 1
            return
        records = self.topics.pop(topic, None) or _Records()
        records.frames.append(frames)
        records.bytes += size
        while len(records.frames) > self.max_per_topic or records.bytes > self.max_bytes_per_topic:
            records.bytes -= sum(len(f) for f in records.frames.popleft())
            self.forgotten += 1
        self.topics[topic] = records
        while len(self.topics) > self.max_topics:
            self.forgotten += len(self.topics.popitem(last=False)[1].frames)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.topics.values())

    def frames(self, prefixes) -> list[list[bytes]]:
        """The wire frames of every kept message whose topic starts with one of ``prefixes``, topic by topic."""
        return [f for t, records in self.topics.items() if t.startswith(tuple(prefixes)) for f in records.frames]

    def select(self, prefixes) -> list[tuple[str, m.Message]]:
        """Every kept message whose topic starts with one of ``prefixes``, topic by topic in arrival order."""
        return [m.decode(f) for f in self.frames(prefixes)]

    def load_jsonl(self, path) -> int:
        """Refill from a sink's JSONL file (after a restart); returns the messages taken. Bad lines are skipped."""
        n = 0
        try:
            fh = open(path, encoding="utf-8")
        except OSError:
            return 0
        with fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    cls = m.KINDS[rec["kind"]]
                    fields = {f.name: rec[f.name] for f in dataclasses.fields(cls) if f.name in rec and f.name != "pcm"}
                    topic, msg = m.decode(m.encode(rec["topic"], cls(**fields)))
                except Exception:  # noqa: BLE001 - a torn or foreign line
                    continue
                self.add(topic, msg)
                n += 1
        return n


def _reply(header: dict, records=()) -> list[bytes]:
    frames = [msgpack.packb({"v": VERSION, **header}, use_bin_type=True)]
    for record in records:
        frames += record
    return frames


def answer(history: History, request: bytes) -> list[bytes]:
    """The reply frames to one request frame (an error reply for a bad request)."""
    try:
        req = msgpack.unpackb(request, raw=False) if len(request) <= MAX_REQUEST_BYTES else None
    except Exception:  # noqa: BLE001
        req = None
    prefixes = req.get("prefixes") if isinstance(req, dict) and req.get("v") == VERSION else None
    if not (isinstance(prefixes, list) and 0 < len(prefixes) <= MAX_PREFIXES
            and all(isinstance(p, str) for p in prefixes)):
        return _reply({"kind": "error", "message": "bad snapshot request"})
    records = history.frames(prefixes)
    return _reply({"kind": "snapshot", "records": len(records), "time": time.time()}, records)


class SnapshotServer:
    """A ROUTER socket answering snapshot requests from a :class:`History` (call :meth:`serve` often)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, bus, history: History):
        from .bus import apply_options, prepare_bind
        from .security import apply_server_keys, start_authenticator

        self.history = history
        self.auth = None
        self.sock = ctx.socket(zmq.ROUTER)
        try:
            apply_options(self.sock, bus)
            self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
            self.sock.setsockopt(zmq.SNDHWM, 4)  # replies share the history's frames: a few in flight at most
            if bus.security.enabled:
                self.auth = start_authenticator(ctx, bus.security)
                apply_server_keys(self.sock, bus.security)
            prepare_bind(endpoint)
            self.sock.bind(endpoint)
        except BaseException:
            self.close()
            raise
        self.served = 0
        self.refused = 0

    def serve(self) -> int:
        """Answer the requests waiting now (a few at most); returns how many."""
        n = 0
        while n < REQUESTS_PER_TICK:
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            n += 1
            # REQ clients: [identity, b"", request]; DEALER clients may leave out the empty frame
            ident, body = frames[0], frames[1:]
            envelope = [ident, b""] if body[:1] == [b""] else [ident]
            body = body[1:] if body[:1] == [b""] else body
            reply = answer(self.history, body[0] if len(body) == 1 else b"")
            if len(body) != 1:
                self.refused += 1
            else:
                self.served += 1
            try:
                self.sock.send_multipart(envelope + reply, flags=zmq.NOBLOCK, copy=False)
            except zmq.ZMQError:  # the client is gone or not reading
                self.refused += 1
        return n

    def close(self) -> None:
        self.sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


# -- client side -----------------------------------------------------------------------------------
def fetch(ctx: zmq.Context, endpoint: str, prefixes, bus, timeout: float = 10.0) -> list[tuple[str, m.Message]]:
    """The snapshot for ``prefixes`` from ``endpoint``: validated (topic, message) pairs. Raises SnapshotError."""
    from .bus import apply_options
    from .security import apply_client_keys

    sock = ctx.socket(zmq.REQ)
    try:
        apply_options(sock, bus)
        sock.setsockopt(zmq.LINGER, 0)
        if bus.security.enabled:
            apply_client_keys(sock, bus.security)
        sock.connect(endpoint)
        sock.send(msgpack.packb({"v": VERSION, "prefixes": list(prefixes)}, use_bin_type=True))
        if not sock.poll(int(timeout * 1000)):
            raise SnapshotError(f"no snapshot from {endpoint} in {timeout:.0f}s (is a sink with snapshot: running?)")
        frames = sock.recv_multipart()
    finally:
        sock.close()
    try:
        head = msgpack.unpackb(frames[0], raw=False)
    except Exception:  # noqa: BLE001
        head = None
    if not isinstance(head, dict) or head.get("kind") != "snapshot" or (len(frames) - 1) % 2:
        detail = head.get("message") if isinstance(head, dict) else head
        raise SnapshotError(f"bad snapshot reply from {endpoint}: {detail!r}")
    out = []
    for i in range(1, len(frames), 2):
        try:
            out.append(m.decode(frames[i:i + 2]))
        except m.ProtocolError as exc:
            log.warning("snapshot: skipped a malformed record: %s", exc)
    return out


def last_epoch(records) -> dict[str, dict[int, m.Message]]:
    """Per topic, seq -> message of its last epoch (the records after the last time seq did not grow)."""
    epochs: dict[str, dict[int, m.Message]] = {}
    last: dict[str, int] = {}
    for topic, msg in records:
        if topic in last and msg.seq <= last[topic]:
            epochs[topic] = {}
        epochs.setdefault(topic, {})[msg.seq] = msg
        last[topic] = msg.seq
    return epochs


class Merger:
    """Decides, per live message, whether the snapshot already delivered it (clone pattern, step 3)."""

    def __init__(self, records):
        self.known = last_epoch(records)
        # topics still being matched: next seq after the snapshot's last epoch
        self.next = {t: max(e) + 1 for t, e in self.known.items() if e}

    def check(self, topic: str, msg: m.Message) -> str | int:
        """``"dup"`` (skip it), ``"new"`` (deliver it), or the first missing seq (fill ``[that, msg.seq)`` first)."""
        nxt = self.next.get(topic)
        if nxt is None:
            return "new"
        if msg.seq < nxt:
            if self.known[topic].get(msg.seq) == msg:
                return "dup"
            del self.next[topic]  # a new epoch (the sender restarted) after the snapshot
            return "new"
        del self.next[topic]
        return "new" if msg.seq == nxt else nxt

    def fill(self, topic: str, first: int, upto: int, records) -> list[tuple[str, m.Message]]:
        """From a fresh snapshot: the last epoch's messages of ``topic`` with ``first <= seq < upto``."""
        epoch = last_epoch(r for r in records if r[0] == topic).get(topic, {})
        return [(topic, epoch[s]) for s in range(first, upto) if s in epoch]
