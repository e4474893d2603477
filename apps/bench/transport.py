"""The broker's one-hop latency and throughput, with messages the size of audio frames.

A real ``voxpipe broker`` runs on two free ports. A sender process (this
module run as ``python -m apps.bench.transport XSUB RATE SECONDS BYTES``)
publishes ``audio`` messages on ``audio.hop`` with a realistic header and a
payload of ``BYTES`` (3200: 100 ms of 16 kHz int16), plus an extra header
field ``sent`` (its Unix send time; receivers ignore unknown fields). The
bench receives them on a SUB through the broker:

* latency: ``RATE`` messages per second for ``SECONDS``; each message is
  decoded and validated, and ``received - sent`` is one hop (publisher ->
  broker -> subscriber); p50, p99 and max;
* throughput: as fast as the sender can for ``SECONDS``; frames per second
  the subscriber received (and how many were lost), and the broker's CPU per
  frame, which says whether the broker or the Python ends were the limit.

The first ``WARMUP`` seconds of each phase are left out (connections settling).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import msgpack

from pipeline import messages as m

TOPIC = "audio.hop"
WARMUP = 0.5


def frames(seq: int, payload: bytes) -> list[bytes]:
    t = seq * len(payload) / 2 / 16000
    header = m.Audio(stream="hop", seq=seq, t=t, wall0=time.time() - t, pcm=payload).header()
    header["sent"] = time.time()
    return [TOPIC.encode(), msgpack.packb(header, use_bin_type=True), payload]


def send_main(argv: list[str]) -> int:
    """The sender: ``XSUB RATE SECONDS BYTES`` (RATE 0: as fast as possible); prints what it sent."""
    import zmq

    xsub, rate, seconds, size = argv[0], float(argv[1]), float(argv[2]), int(argv[3])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 2000)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(xsub)
    time.sleep(0.3)  # the broker passes the subscription on when we connect
    payload = bytes(size)
    start = time.monotonic()
    n = 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        if rate > 0:
            due = start + n / rate
            if due > now:
                time.sleep(due - now)
        sock.send_multipart(frames(n, payload), copy=False)
        n += 1
    print(json.dumps({"sent": n, "seconds": time.monotonic() - start}), flush=True)
    sock.close()
    ctx.term()
    return 0


class _Broker:
    def __init__(self, verbose: bool):
        from honcho.printer import Printer

        from apps.plan import ActorProcess, voxpipe_command
        from apps.runner import ProcessRunner
        from pipeline.config import BusConfig
        from pipeline.derived_config import private_bus

        self.bus = private_bus(BusConfig())
        argv = voxpipe_command() + ["broker", "--xsub", self.bus.xsub, "--xpub", self.bus.xpub, "--name", "hop-broker"]
        self.runner = ProcessRunner([ActorProcess("hop-broker", "broker", tuple(argv))], printer=Printer(sys.stderr),
                                    echo=verbose)

    def pid(self, timeout: float = 10.0) -> int | None:
        deadline = time.monotonic() + timeout
        while "hop-broker" not in self.runner.pids and time.monotonic() < deadline:
            self.runner.poll(0.05)
        return self.runner.pids.get("hop-broker")


def _sender(xsub: str, rate: float, seconds: float, size: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "apps.bench.transport", xsub, str(rate), str(seconds), str(size)],
                            stdout=subprocess.PIPE, text=True)


def _cpu(proc) -> float | None:
    try:
        ct = proc.cpu_times()
        return ct.user + ct.system
    except Exception:  # noqa: BLE001 - the broker is gone: no figure
        return None


def _receive(sub, sender: subprocess.Popen, decode: bool, limit: float) -> tuple[list, list, int]:
    """(receive times, send times) of every message until the sender is done and the bus is quiet."""
    got, sent, bad = [], [], 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not sub.poll(100):
            if sender.poll() is not None:
                break
            continue
        for _ in range(10000):
            try:
                fr = sub.recv_multipart(flags=1, copy=decode)  # zmq.NOBLOCK
            except Exception:  # noqa: BLE001 - zmq.Again: nothing more queued
                break
            got.append(time.time())
            if decode:
                try:
                    m.decode(fr)
                except m.ProtocolError:
                    bad += 1
                    got.pop()
                    continue
                sent.append(msgpack.unpackb(fr[1], raw=False)["sent"])
    return got, sent, bad


def _sent(sender: subprocess.Popen) -> dict:
    out, _ = sender.communicate(timeout=10)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def measure(rate: float = 200.0, seconds: float = 5.0, blast_seconds: float = 3.0, size: int = 3200,
            verbose: bool = False) -> dict:
    import psutil
    import zmq

    from apps.bench.evaluation import percentile

    broker = _Broker(verbose)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 2000)
    sub.setsockopt(zmq.LINGER, 0)
    result: dict = {"payload_bytes": size, "missing": {}}
    try:
        broker.runner.start()
        sub.connect(broker.bus.xpub)
        sub.setsockopt(zmq.SUBSCRIBE, b"status.hop-broker")
        sub.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
        deadline = time.monotonic() + 30.0
        while True:
            if sub.poll(100):
                topic = sub.recv_multipart()[0]
                if topic.startswith(b"status."):
                    break
            broker.runner.poll(0)
            if time.monotonic() > deadline or "hop-broker" in broker.runner.returncodes:
                raise RuntimeError("the broker did not start:\n" + broker.runner.tail("hop-broker"))
        sub.setsockopt(zmq.UNSUBSCRIBE, b"status.hop-broker")
        pid = broker.pid()
        bproc = psutil.Process(pid) if pid else None

        # one-hop latency at a steady rate
        c0 = _cpu(bproc) if bproc else None
        snd = _sender(broker.bus.xsub, rate, WARMUP + seconds, size)
        got, sent, bad = _receive(sub, snd, decode=True, limit=WARMUP + seconds + 30)
        c1 = _cpu(bproc) if bproc else None
        info = _sent(snd)
        hops = [g - s for g, s in zip(got, sent, strict=False) if sent and s >= sent[0] + WARMUP]
        lat = {"rate_hz": rate, "seconds": seconds, "sent": info.get("sent"), "received": len(got), "rejected": bad}
        if info.get("sent") is not None:
            lat["lost"] = info["sent"] - len(got)
        if hops:
            lat.update(p50_ms=round(percentile(hops, 50) * 1000, 3), p99_ms=round(percentile(hops, 99) * 1000, 3),
                       max_ms=round(max(hops) * 1000, 3), n=len(hops))
        else:
            lat.update(p50_ms=None, p99_ms=None, max_ms=None, n=0)
            result["missing"]["latency"] = "no message came through the broker"
        if c0 is not None and c1 is not None and info.get("sent"):
            lat["broker_cpu_us_per_frame"] = round((c1 - c0) / info["sent"] * 1e6, 2)
        result["latency"] = lat

        # throughput: as fast as the sender can
        c0 = _cpu(bproc) if bproc else None
        snd = _sender(broker.bus.xsub, 0, WARMUP + blast_seconds, size)
        got, _, _ = _receive(sub, snd, decode=False, limit=WARMUP + blast_seconds + 30)
        c1 = _cpu(bproc) if bproc else None
        info = _sent(snd)
        thr = {"seconds": blast_seconds, "sent": info.get("sent"), "received": len(got)}
        window = [g for g in got if got and g >= got[0] + WARMUP]
        if len(window) > 1 and window[-1] > window[0]:
            fps = (len(window) - 1) / (window[-1] - window[0])
            thr.update(frames_per_s=round(fps, 1), mb_per_s=round(fps * size / 1e6, 2))
        else:
            thr.update(frames_per_s=None, mb_per_s=None)
            result["missing"]["throughput"] = "too few messages came through the broker"
        if info.get("sent") is not None:
            thr["lost"] = info["sent"] - len(got)
        if c0 is not None and c1 is not None and info.get("sent"):
            thr["broker_cpu_us_per_frame"] = round((c1 - c0) / info["sent"] * 1e6, 2)
            thr["broker_core_share"] = round((c1 - c0) / max(info.get("seconds") or blast_seconds, 1e-9), 3)
        result["throughput"] = thr
    finally:
        sub.close()
        ctx.term()
        broker.runner.stop([["hop-broker"]], timeout=5.0)
    return result


if __name__ == "__main__":
    sys.exit(send_main(sys.argv[1:]))
