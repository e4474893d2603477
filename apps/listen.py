"""``voxpipe listen``: show what travels on the bus, for a person at a terminal.

One line per message: local time, topic, kind and the fields that matter
(a commit's span, text and latency; an audio frame's time and size — never
its samples). ``--json`` prints JSON lines instead (audio as ``pcm_bytes``).
Malformed messages are reported on stderr; so are ``seq`` gaps.
``--from-start`` first prints the transcript so far, from a sink that serves
snapshots (:mod:`pipeline.snapshot`), then goes on live.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from pipeline import messages as m


def _span(beg, end) -> str:
    if beg is None or end is None:
        return "[  -  ]"
    return f"[{beg:7.2f}-{end:7.2f}]"


def describe(msg: m.Message) -> str:
    """The human-readable fields of one message."""
    if isinstance(msg, m.Audio):
        return f"t={msg.t:.3f} {msg.duration:.3f}s {len(msg.pcm)} bytes wall0={msg.wall0:.3f}"
    if isinstance(msg, (m.SpeechStart, m.SpeechEnd)):
        return f"t={msg.t:.3f}"
    if isinstance(msg, m.EndOfStream):
        t = "" if msg.t is None else f"t={msg.t:.3f}"
        return f"{t} {msg.worker or ''}".strip()
    if isinstance(msg, m.Commit):
        return f"{_span(msg.beg, msg.end)} {msg.text.strip()!r} ({msg.worker} {msg.model}, latency {msg.latency:.2f}s)"
    if isinstance(msg, m.Partial):
        return f"{_span(msg.beg, msg.end)} ~{msg.text.strip()!r}"
    if isinstance(msg, m.Error):
        return f"{msg.worker}: {msg.message}"
    if isinstance(msg, m.Heartbeat):
        counters = " ".join(f"{k}={v}" for k, v in msg.counters.items() if v)
        return f"{msg.role} {'ready' if msg.ready else 'not-ready'} pid={msg.pid} {counters}".strip()
    return ""


def as_json(topic: str, msg: m.Message, received: float) -> str:
    d = m.as_dict(msg)
    d["topic"] = topic
    d["received"] = round(received, 6)
    if isinstance(msg, m.Audio):
        d["pcm_bytes"] = len(msg.pcm)
    return json.dumps(d, ensure_ascii=False)


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def register(sub) -> None:
    p = sub.add_parser("listen", help="print what a topic prefix carries (default: transcript.)")
    p.add_argument("prefixes", nargs="*", metavar="PREFIX", help="topic prefixes, e.g. transcript. speech.mic status.")
    p.add_argument("--json", action="store_true", help="JSON lines instead of readable lines")
    p.add_argument("--from-start", action="store_true",
                   help="first the transcript so far (from the config's sink with snapshot:, or --snapshot), then live")
    p.add_argument("--snapshot", default=None, metavar="ENDPOINT",
                   help="snapshot endpoint of a sink (implies --from-start)")
    p.add_argument("--config", "-c", default=None, help="pipeline YAML (for the bus endpoints)")
    p.add_argument("--xpub", default=None, help="broker XPUB endpoint (overrides the config)")
    p.add_argument("--xsub", default=None,
                   help="broker XSUB endpoint (overrides the config; --from-start syncs through it)")
    p.add_argument("--count", type=int, default=None, help="exit after this many messages")
    p.add_argument("--timeout", type=float, default=None, help="exit after this many seconds without a message")
    p.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)


def run(args) -> int:
    from pipeline.client import Subscription
    from pipeline.errors import RuntimeFailure
    from pipeline.snapshot import SnapshotError

    prefixes = args.prefixes or ["transcript."]

    def on_reject(exc: m.ProtocolError, frames) -> None:
        topic = bytes(frames[0])[:80].decode("utf-8", "replace") if frames else "?"
        print(f"voxpipe listen: rejected a message on {topic!r}: {exc}", file=sys.stderr)

    try:
        subscription = Subscription(prefixes, config=args.config, xpub=args.xpub, xsub=args.xsub, timeout=args.timeout,
                                    on_reject=on_reject, from_start=bool(args.from_start or args.snapshot),
                                    snapshot=args.snapshot)
    except SnapshotError as exc:
        raise RuntimeFailure(str(exc)) from None
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"listening on {', '.join(prefixes)} at {subscription.bus.xpub} (Ctrl-C to stop)", file=sys.stderr)
    shown = 0
    try:
        with subscription:
            for topic, msg in subscription.items():
                now = time.time()
                if subscription.missing_before_last:
                    print(f"voxpipe listen: {subscription.missing_before_last} message(s) lost "
                          f"before this one on {topic}",
                          file=sys.stderr)
                if args.json:
                    line = as_json(topic, msg, now)
                else:
                    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
                    line = f"{stamp} {topic} {msg.kind} {describe(msg)}"
                print(line, flush=True)
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # e.g. piped into head
        return 0
    dup = f", {subscription.duplicates} already in the snapshot" if subscription.duplicates else ""
    dup += f", {subscription.stale} stale (an older assignment epoch)" if subscription.stale else ""
    print(f"voxpipe listen: {shown} message(s), {subscription.rejected} rejected, {subscription.gaps} lost{dup}",
          file=sys.stderr)
    return 0
