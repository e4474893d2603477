"""A voxpipe subscriber written only from docs/protocol.md: pyzmq + msgpack, no voxpipe imports.

    python tests/doc_subscriber.py --xpub EP --xsub EP --prefix speech. --until-eos speech.s1 --timeout 30

Prints JSON lines on stdout:

* ``{"event": "ready"}`` once its subscriptions are in place (doc 1.1: probe);
* ``{"event": "message", "topic", "header", "pcm_bytes", "pcm_sha1", "latency"}``
  for each valid message (``latency`` for commits and partials, doc section 6);
* ``{"event": "rejected", "rule": N, "why": ...}`` for each invalid one (doc section 7);
* ``{"event": "done", "rejected", "lost", "timed_out"}`` at the end (``lost`` from seq, doc section 5).

It stops when every ``--until-eos`` topic has delivered its ``eos``, or after
``--timeout`` seconds. Exit code 0, or 1 on timeout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

import msgpack
import zmq

VERSION = 1
SR = 16000
MAX_HEADER = 65536
MAX_PCM = 160000
MAX_TEXT = 20000
MAX_WORDS = 5000
ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-:@")

# doc section 3: which kinds each topic family carries
FAMILIES = {
    "audio": {"audio", "eos"},
    "speech": {"audio", "eos", "speech_start", "speech_end"},
    "transcript": {"commit", "error", "eos"},
    "partial": {"partial"},
    "status": {"heartbeat"},
}


class Invalid(Exception):
    def __init__(self, rule: int, why: str):
        super().__init__(why)
        self.rule = rule


def is_id(x) -> bool:
    return isinstance(x, str) and 1 <= len(x) <= 64 and set(x) <= ID_CHARS


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_time(x) -> bool:
    return is_number(x) and x >= 0


def is_text(x) -> bool:
    return isinstance(x, str) and len(x) <= MAX_TEXT


def is_worker(x) -> bool:
    return x == "" or is_id(x)


def is_words(x) -> bool:
    return isinstance(x, list) and len(x) <= MAX_WORDS and all(
        isinstance(w, list) and len(w) == 3 and is_number(w[0]) and is_number(w[1]) and isinstance(w[2], str)
        for w in x)


def optional(check):
    return lambda x: x is None or check(x)


# doc section 4: required and optional fields per kind
FIELDS = {
    "audio": {"t": is_time, "sr": lambda x: isinstance(x, int) and not isinstance(x, bool), "wall0": is_number},
    "eos": {"t?": is_time, "worker?": is_worker},
    "speech_start": {"t": is_time, "wall0?": is_number},
    "speech_end": {"t": is_time, "wall0?": is_number},
    "commit": {"beg": is_time, "end": is_time, "text": is_text, "words": is_words, "worker": is_worker,
               "backend": is_text, "model": is_text, "emitted": is_number, "wall0": is_number},
    "partial": {"beg?": is_time, "end?": is_time, "text": is_text, "worker": is_worker, "emitted?": is_number,
                "wall0?": is_number},
    "error": {"message": is_text, "worker": is_worker},
    "heartbeat": {"name": is_worker, "role": is_text, "ready?": lambda x: isinstance(x, bool),
                  "pid?": lambda x: isinstance(x, int) and not isinstance(x, bool), "time?": is_number,
                  "counters": lambda x: isinstance(x, dict), "info?": lambda x: isinstance(x, dict)},
}


def validate(frames: list[bytes]) -> tuple[str, dict, bytes | None]:
    """(topic, header, payload) of a valid message; raises Invalid (doc section 7)."""
    if len(frames) not in (2, 3):
        raise Invalid(1, f"{len(frames)} frames")
    try:
        topic = frames[0].decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(1, "topic is not UTF-8") from None
    if len(frames[1]) > MAX_HEADER:
        raise Invalid(2, "header too large")
    try:
        h = msgpack.unpackb(frames[1], raw=False)
    except Exception as exc:  # noqa: BLE001
        raise Invalid(2, f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(h, dict):
        raise Invalid(2, "header is not a map")
    if h.get("v") != VERSION or isinstance(h.get("v"), bool):
        raise Invalid(3, f"version {h.get('v')!r}")
    kind = h.get("kind")
    if not isinstance(kind, str) or kind not in FIELDS:
        raise Invalid(3, f"kind {kind!r}")
    stream, seq = h.get("stream"), h.get("seq")
    if not (is_id(stream) or (kind == "heartbeat" and stream == "")):
        raise Invalid(4, f"stream {stream!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise Invalid(4, f"seq {seq!r}")
    for name, check in FIELDS[kind].items():
        opt = name.endswith("?")
        name = name.rstrip("?")
        if name not in h:
            if opt:
                continue
            raise Invalid(5, f"{kind} without {name}")
        if not (optional(check) if opt else check)(h[name]):
            raise Invalid(5, f"{kind}.{name} = {h[name]!r}")
    family, _, rest = topic.partition(".")
    if kind not in FAMILIES.get(family, ()) or not rest:
        raise Invalid(6, f"{kind} on {topic}")
    if stream and rest.rsplit(".", 1)[-1] != stream:
        raise Invalid(6, f"topic {topic} vs stream {stream}")
    if kind == "audio":
        if len(frames) != 3:
            raise Invalid(7, "audio without payload")
        pcm = frames[2]
        if h["sr"] != SR or not pcm or len(pcm) % 2 or len(pcm) > MAX_PCM:
            raise Invalid(7, f"sr {h['sr']}, {len(pcm)} payload bytes")
        return topic, h, pcm
    if len(frames) == 3:
        raise Invalid(8, f"{kind} with a payload")
    return topic, h, None


def sync(ctx, sub, xsub: str, timeout: float) -> bool:
    """Doc 1.1: probe heartbeats on status.<id> until one comes back through the broker."""
    me = f"docsub-{os.getpid()}"
    topic = f"status.{me}"
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(xsub)
    deadline = time.monotonic() + timeout
    try:
        seq = 0
        while time.monotonic() < deadline:
            probe = {"v": 1, "kind": "heartbeat", "stream": "", "seq": seq, "name": me, "role": "probe",
                     "counters": {}, "time": time.time()}
            pub.send_multipart([topic.encode(), msgpack.packb(probe)])
            seq += 1
            end = time.monotonic() + 0.1
            while (left := end - time.monotonic()) > 0:
                if sub.poll(int(left * 1000) + 1) and sub.recv_multipart()[0] == topic.encode():
                    return True
        return False
    finally:
        sub.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
        pub.close()


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--xpub", required=True)
    ap.add_argument("--xsub", default=None, help="to sync with a probe before reporting ready")
    ap.add_argument("--prefix", action="append", default=[])
    ap.add_argument("--until-eos", action="append", default=[], metavar="TOPIC")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(args.xpub)
    for p in args.prefix or ["transcript."]:
        sub.setsockopt(zmq.SUBSCRIBE, p.encode())
    if args.xsub and not sync(ctx, sub, args.xsub, 10.0):
        emit(event="error", why="no probe came back")
        return 1
    emit(event="ready")
    expected: dict[str, int] = {}
    waiting = set(args.until_eos)
    rejected = lost = 0
    deadline = time.monotonic() + args.timeout
    timed_out = False
    while waiting or not args.until_eos:
        left = deadline - time.monotonic()
        if left <= 0 or not sub.poll(int(left * 1000) + 1):
            timed_out = True
            break
        frames = sub.recv_multipart()
        try:
            topic, h, pcm = validate(frames)
        except Invalid as exc:
            rejected += 1
            emit(event="rejected", rule=exc.rule, why=str(exc))
            continue
        if h["kind"] == "heartbeat" and h["role"] == "probe":
            continue
        if topic in expected and h["seq"] > expected[topic]:  # doc section 5
            lost += h["seq"] - expected[topic]
        expected[topic] = h["seq"] + 1
        record = {"event": "message", "topic": topic, "header": h}
        if pcm is not None:
            record["pcm_bytes"] = len(pcm)
            record["pcm_sha1"] = hashlib.sha1(pcm).hexdigest()
        if h["kind"] in ("commit", "partial") and is_number(h.get("emitted")) and is_number(h.get("wall0")) \
                and is_number(h.get("end")):
            record["latency"] = h["emitted"] - h["wall0"] - h["end"]  # doc section 6
        emit(**record)
        if h["kind"] == "eos":
            expected.pop(topic, None)
            waiting.discard(topic)
    emit(event="done", rejected=rejected, lost=lost, timed_out=timed_out)
    sub.close()
    ctx.term()
    return 1 if timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
