"""Other programs on the bus, as processes of their own, for the slow-subscriber test.

``python -m tests.bus_peers flood XSUB RATE SECONDS``
    publishes ``partial`` messages of ~1 KB on ``partial.flooder.f1`` at RATE a second.

``python -m tests.bus_peers subscriber XPUB SECONDS [--stall-after A --stall-for B]``
    subscribes to everything; reads, stops reading for B seconds after A seconds (its queues fill up and
    the broker drops what does not fit), then reads on; prints ``{"received", "gaps", "stall": [begin, end]}``
    (Unix times) as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def flood(xsub: str, rate: float, seconds: float) -> int:
    import zmq

    from pipeline import messages as m

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(xsub)
    text = "x" * 900
    t0 = time.monotonic()
    seq = 0
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * rate)
        while seq < due:
            sock.send_multipart(m.encode("partial.flooder.f1", m.Partial(stream="f1", seq=seq, text=text,
                                                                         worker="flooder")))
            seq += 1
        time.sleep(0.01)
    sock.close()
    ctx.term()
    print(json.dumps({"sent": seq}), flush=True)
    return 0


def subscriber(xpub: str, seconds: float, stall_after: float | None, stall_for: float) -> int:
    """Light on CPU (only ``seq`` is read from each header), so reading or not changes little else."""
    import msgpack
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(xpub)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    expected: dict[bytes, int] = {}
    received = gaps = 0
    t0 = time.monotonic()
    stalled = False
    stall = []
    while (now := time.monotonic() - t0) < seconds:
        if stall_after is not None and not stalled and now >= stall_after:
            stalled = True
            stall.append(time.time())
            time.sleep(stall_for)  # stuck: not reading at all
            stall.append(time.time())
        if not sock.poll(100):
            continue
        frames = sock.recv_multipart()
        received += 1
        try:
            seq = msgpack.unpackb(frames[1])["seq"]
        except Exception:  # noqa: BLE001
            continue
        if frames[0].startswith(b"status."):
            continue  # probes share topics with heartbeats
        if frames[0] in expected and seq > expected[frames[0]]:
            gaps += seq - expected[frames[0]]
        expected[frames[0]] = seq + 1
    print(json.dumps({"received": received, "gaps": gaps, "stall": stall}), flush=True)
    sock.close()
    ctx.term()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bus_peers")
    sub = p.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("flood")
    f.add_argument("xsub")
    f.add_argument("rate", type=float)
    f.add_argument("seconds", type=float)
    s = sub.add_parser("subscriber")
    s.add_argument("xpub")
    s.add_argument("seconds", type=float)
    s.add_argument("--stall-after", type=float, default=None)
    s.add_argument("--stall-for", type=float, default=10.0)
    a = p.parse_args(argv)
    if a.mode == "flood":
        return flood(a.xsub, a.rate, a.seconds)
    return subscriber(a.xpub, a.seconds, a.stall_after, a.stall_for)


if __name__ == "__main__":
    sys.exit(main())
