#!/usr/bin/env python3
"""What one batched CTranslate2 call saves over single decodes on this machine (tiny.en, CPU).

N short buffers (3 s of the corpus clips, different audio each) are decoded three ways,
each timed over a few repetitions after a warm-up:

* singles: one ``transcribe`` per buffer on two threads at once (the unbatched worker on
  two cores: ``concurrency`` 2, one CPU thread per decode);
* one batch: one ``transcribe_batch`` of all N on one thread (CPU seconds: what a batch
  saves in work);
* two batches: N/2 each, on the two threads at once (the batching worker on two cores).

The wall-time ratio singles / two batches is the most that batching can add to a 2-core
worker's capacity: streams decoded in full batches every chunk, with no waiting.

  scripts/batch_cost.py [--streams 2,4,8,12] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # as the voxpipe command does
    os.environ.setdefault(_var, "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from asr_core.audio import load_audio  # noqa: E402
from asr_core.registry import create_backend  # noqa: E402

CLIPS = ("history", "kitchen", "meeting", "weather")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", default="2,4,8,12")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds of audio per buffer")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    clips = [load_audio(str(ROOT / "tests" / "data" / f"{c}.wav")) for c in CLIPS]

    def buffers(n: int) -> list:
        return [clips[i % len(clips)][int(16000 * (1 + i)):int(16000 * (1 + i + args.seconds))].astype(np.float32)
                for i in range(n)]

    asr = create_backend("faster-whisper", "en", "tiny.en", device="cpu", cpu_threads=1, num_workers=2)
    asr.transcribe(buffers(1)[0])
    asr.transcribe_batch(buffers(2), ["", ""])
    pool = ThreadPoolExecutor(2)

    def timed(work, clock=time.perf_counter) -> float:
        t0 = clock()
        for _ in range(args.reps):
            work()
        return (clock() - t0) / args.reps

    print(f"| buffers of {args.seconds:g} s | singles, 2 threads: wall | two batches, 2 threads: wall | speed-up | "
          "one batch: CPU s against singles' |")
    print("| --- | --- | --- | --- | --- |")
    for n in (int(x) for x in args.streams.split(",")):
        b = buffers(n)
        half = max(1, n // 2)
        singles = timed(lambda b=b: list(pool.map(asr.transcribe, b)))
        parts = [b[:half], b[half:]] if n > 1 else [b]
        batches = timed(lambda parts=parts: list(pool.map(lambda part: asr.transcribe_batch(part, [""] * len(part)),
                                                          parts)))
        cpu_singles = timed(lambda b=b: [asr.transcribe(x) for x in b], time.process_time)
        cpu_batch = timed(lambda b=b, n=n: asr.transcribe_batch(b, [""] * n), time.process_time)
        print(f"| {n} | {singles:.3f} s | {batches:.3f} s | {singles / batches:.2f}x | "
              f"{cpu_batch:.3f} / {cpu_singles:.3f} = {cpu_batch / cpu_singles:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
