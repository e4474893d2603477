#!/usr/bin/env python
"""Print every commit with its latency until every stream has ended (or Ctrl-C).

    python examples/subscribe_transcripts.py --config configs/default.yaml
    python examples/subscribe_transcripts.py --xpub tcp://127.0.0.1:7702 --prefix transcript.asr.

Latency is ``emitted - wall0 - end``: seconds between the end of the spoken
span and the moment the worker published its text.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.client import subscribe
from pipeline.messages import Commit, EndOfStream, Error


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", "-c", default=None, help="pipeline YAML (its bus: section)")
    ap.add_argument("--xpub", default=None, help="broker XPUB endpoint (overrides the config)")
    ap.add_argument("--prefix", default="transcript.", help="topic prefix (default: transcript.)")
    ap.add_argument("--timeout", type=float, default=None, help="give up after this many seconds without a message")
    args = ap.parse_args(argv)

    latencies: list[float] = []
    sub = subscribe(args.prefix, config=args.config, xpub=args.xpub, timeout=args.timeout, stop_after_eos=True)
    try:
        with sub:
            for msg in sub:
                if isinstance(msg, Commit):
                    latencies.append(msg.latency)
                    print(f"{msg.worker}/{msg.stream} [{msg.beg:7.2f}-{msg.end:7.2f}] "
                          f"latency {msg.latency:5.2f}s  {msg.text.strip()}", flush=True)
                elif isinstance(msg, Error):
                    print(f"{msg.worker}/{msg.stream} error: {msg.message}", file=sys.stderr)
                elif isinstance(msg, EndOfStream):
                    print(f"{msg.worker}/{msg.stream} ended", flush=True)
    except KeyboardInterrupt:
        pass
    if latencies:
        ordered = sorted(latencies)
        print(f"{len(ordered)} commits, latency median {ordered[len(ordered) // 2]:.2f}s, max {ordered[-1]:.2f}s")
    if sub.rejected or sub.gaps:
        print(f"{sub.rejected} malformed message(s) skipped, {sub.gaps} lost", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
