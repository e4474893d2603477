"""Latency through the Deepgram-compatible endpoint, beside the bus's own figure in the same run.

``python -m apps.bench.gateway [--config configs/serve.yaml] [--clips weather,kitchen] [--corpus DIR]``

The config's broker, VAD, first worker and gateway start on a private bus
(free ports; the TCP listener off). Each clip is streamed at real time to
``ws://127.0.0.1:PORT/v1/listen`` (``encoding=linear16``, 100 ms chunks, each
sent once its 100 ms are over, as from a microphone, then ``CloseStream``),
the way the Deepgram SDK does it (the same frames, with the ``websockets``
library it uses underneath), one clip after the other, while a subscriber on
the bus records the worker's commits of that stream. Per word:

* **audio sent -> is_final**: the moment the ``is_final`` result holding the
  word reached the client, minus the moment the client sent the chunk in which
  the word ends (the issue's measure);
* **word spoken -> is_final**: the same arrival, minus the moment the word's end
  was spoken (the first chunk's sending minus 100 ms, plus the word's end);
* **bus** (the baseline, same words, same run): the commit's ``emitted`` minus
  ``wall0 + word end``, the pipeline's own latency (docs/benchmarks.md); the
  gateway sets ``wall0`` from the audio's arrival, so this starts from the
  same moment as the line above;
* the difference of the last two is what the endpoint adds: the client's hop
  in, the results' way from the worker through the gateway to the client, and
  the hold of a commit that follows a pause (up to 60 ms, to tell whether it is
  ``speech_final``).

p50, p90 and max of each, per clip and over all clips; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path


def _pcm(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
            raise SystemExit(f"{path}: the bench streams 16 kHz mono 16-bit WAV clips")
        return w.readframes(w.getnframes())


async def _stream(url: str, pcm: bytes, chunk_s: float = 0.1) -> tuple[list, list]:
    """(send time of each chunk, [(receive time, Results message)]) of one real-time stream."""
    import websockets

    step = int(16000 * chunk_s) * 2
    sent: list[float] = []
    got: list[tuple[float, dict]] = []
    async with websockets.connect(url, max_size=None) as ws:
        async def receive():
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "Results":
                    got.append((time.time(), msg))

        rx = asyncio.create_task(receive())
        t0 = time.monotonic()
        for i, start in enumerate(range(0, len(pcm), step)):  # like a microphone: a chunk once it is over
            await asyncio.sleep(max(0.0, t0 + (i + 1) * chunk_s - time.monotonic()))
            await ws.send(pcm[start: start + step])
            sent.append(time.time())
        await ws.send(json.dumps({"type": "CloseStream"}))
        await asyncio.wait_for(rx, 120)
    return sent, got


def _endpoint_latencies(sent: list, got: list, chunk_s: float = 0.1) -> tuple[list[float], list[float]]:
    """Per final word: (received - sending of the chunk holding its end, received - when its end was spoken)."""
    start = sent[0] - chunk_s  # the first chunk goes out once its 100 ms have been "spoken"
    from_sent, from_spoken = [], []
    for recv, msg in got:
        if not msg["is_final"]:
            continue
        for w in msg["channel"]["alternatives"][0]["words"]:
            i = min(len(sent) - 1, max(0, int(w["end"] / chunk_s - 1e-9)))
            from_sent.append(recv - sent[i])
            from_spoken.append(recv - (start + w["end"]))
    return from_sent, from_spoken


class _Tap(threading.Thread):
    """Bus messages on some prefixes, from a thread; commits give the per-word bus latency."""

    def __init__(self, bus, prefixes: list[str]):
        super().__init__(daemon=True)
        import zmq

        from pipeline.bus import Publisher, Subscriber, handshake

        self.ctx = zmq.Context()
        self.sub = Subscriber(self.ctx, bus, prefixes)
        pub = Publisher(self.ctx, bus)
        try:
            self.synced = handshake(pub, self.sub, "gateway-bench", timeout=10.0)
        finally:
            pub.close()
        self.latencies: list[float] = []
        self.ready: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        from pipeline import messages as m

        try:
            while not self.stop.is_set():
                try:
                    got = self.sub.recv(200)
                except m.ProtocolError:
                    continue
                if got is None:
                    continue
                msg = got[1]
                if isinstance(msg, m.Commit):
                    self.latencies += [msg.emitted - msg.wall0 - float(e) for _, e, _ in msg.words]
                elif isinstance(msg, m.Heartbeat) and msg.ready and msg.role != "probe":
                    self.ready.add(msg.name)
        finally:
            self.sub.close()
            self.ctx.term()


def _wait_ready(tap: _Tap, names: set, runner, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not names <= tap.ready:
        runner.poll(0.1)
        if runner.returncodes or time.monotonic() > deadline:
            raise SystemExit(f"not ready: {', '.join(sorted(names - tap.ready))} "
                             f"(exited: {runner.returncodes or 'none'})")


def _stats(xs: list[float]) -> dict:
    from apps.bench.evaluation import percentile

    if not xs:
        return {"n": 0, "p50": None, "p90": None, "max": None}
    return {"n": len(xs), "p50": round(percentile(xs, 50), 3), "p90": round(percentile(xs, 90), 3),
            "max": round(max(xs), 3)}


def measure(config: str, clips: list[Path], verbose: bool = False) -> dict:
    from honcho.printer import Printer

    from apps.plan import actor_processes, stop_stages
    from apps.runner import ProcessRunner
    from pipeline.config import load_config
    from pipeline.derived_config import free_tcp_port, private_bus, write_config

    base = load_config(config)
    gw = dataclasses.replace(base.gateway, enabled=True, port=free_tcp_port(), tcp_port=None, api_keys=())
    cfg = dataclasses.replace(base, sources=(), sinks=(), workers=base.workers[:1], bus=private_bus(base.bus),
                              web=dataclasses.replace(base.web, enabled=False), gateway=gw)
    workdir = Path(tempfile.mkdtemp(prefix="voxpipe-gateway-bench-"))
    cfg = load_config(write_config(cfg, workdir / "pipeline.yaml"))
    procs = actor_processes(cfg)
    runner = ProcessRunner(procs, printer=Printer(sys.stderr), echo=verbose)
    result: dict = {"config": config, "model": cfg.workers[0].model, "clips": {}}
    runner.start()
    try:
        tap = _Tap(cfg.bus, ["status.", f"transcript.{cfg.gateway.pool}.{cfg.gateway.name[:40]}-"])
        tap.start()
        _wait_ready(tap, {p.name for p in procs}, runner, timeout=180)
        url = f"ws://127.0.0.1:{cfg.gateway.port}/v1/listen?encoding=linear16&sample_rate=16000&punctuate=true"
        every: dict = {"endpoint": [], "spoken": [], "bus": []}
        for clip in clips:
            before = len(tap.latencies)
            sent, got = asyncio.run(_stream(url, _pcm(clip)))
            time.sleep(1.0)  # the last commits' copies on the tap
            lat = dict(zip(("endpoint", "spoken"), _endpoint_latencies(sent, got), strict=True))
            lat["bus"] = tap.latencies[before:]
            for k, xs in lat.items():
                every[k] += xs
            result["clips"][clip.stem] = {k: _stats(xs) for k, xs in lat.items()}
        tap.stop.set()
        tap.join(5)
        result["all"] = {k: _stats(xs) for k, xs in every.items()}
        s, b = result["all"]["spoken"], result["all"]["bus"]
        if s["n"] and b["n"]:
            result["all"]["added"] = {k: round(s[k] - b[k], 3) for k in ("p50", "p90")}
    finally:
        runner.stop(stop_stages(procs), timeout=30.0)
    return result


def report(result: dict) -> str:
    lines = ["| clip | words | audio sent -> is_final p50 / p90 / max | word spoken -> is_final p50 / p90 | "
             "bus: word spoken -> commit p50 / p90 |", "| --- | --- | --- | --- | --- |"]
    for name, r in list(result["clips"].items()) + [("all", result["all"])]:
        e, s, b = r["endpoint"], r["spoken"], r["bus"]
        lines.append(f"| {name} | {e['n']} | {e['p50']} / {e['p90']} / {e['max']} s | {s['p50']} / {s['p90']} s "
                     f"| {b['p50']} / {b['p90']} s |")
    if "added" in result["all"]:
        a = result["all"]["added"]
        lines.append(f"\nthe endpoint adds {a['p50'] * 1000:.0f} ms (p50) / {a['p90'] * 1000:.0f} ms (p90) to the "
                     "bus's latency (word spoken -> is_final received, minus word spoken -> commit published)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.bench.gateway", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/serve.yaml")
    p.add_argument("--corpus", default="tests/data")
    p.add_argument("--clips", default="weather,kitchen", metavar="A,B")
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--verbose", "-v", action="store_true")
    args = p.parse_args(argv)
    clips = [Path(args.corpus) / f"{c.strip()}.wav" for c in args.clips.split(",") if c.strip()]
    result = measure(args.config, clips, args.verbose)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
