"""How many concurrent real-time streams one worker holds.

The search runs rounds of ``N = 1, 2, 3, ...`` concurrent streams of one clip
(one worker serving them all) and stops at the first ``N`` that does not
hold, at ``max_streams``, or once ``budget_s`` seconds have been spent. A
round *holds* when:

* every stream finished: the worker sent ``eos`` within the round's time
  (else it fell behind real time);
* the p90 latency of the committed words, over all streams, is at most
  ``max_p90`` seconds (a round without any committed word does not hold:
  nothing was measured);
* the worker's last ``eos`` of each stream came at most ``max_tail_lag``
  seconds after that stream's audio ended (a growing backlog shows here);
* no worker errors and no messages lost on the bus.

The capacity is the largest ``N`` such that it and every smaller ``N`` tried held
(0 when one stream did not). It is *exact* when ``N + 1`` was tried and
failed, a *lower bound* when the search stopped at ``max_streams``, at the
time budget, or at a failing step further than ``N + 1`` (``steps``: the
numbers of streams to try, e.g. 1, 4, 8, 12, 16, to find a large capacity
in fewer rounds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CapacityOptions:
    max_streams: int = 8
    max_p90: float = 3.0
    max_tail_lag: float = 6.0
    budget_s: float = 900.0
    steps: tuple | None = None  # the numbers of streams to try, in order (default 1 .. max_streams)


def judge(fig: dict, opts: CapacityOptions) -> tuple[bool, list[str]]:
    """Whether one round held, and why not."""
    why = []
    unfinished = [s["stream"] for s in fig["per_stream"] if not s["finished"]]
    if unfinished:
        why.append(f"{len(unfinished)} stream(s) not finished in time (behind real time)")
    lat = fig.get("latency")
    if lat is None:
        why.append("no committed words: latency not measured")
    elif lat["p90"] > opts.max_p90:
        why.append(f"p90 latency {lat['p90']:.2f}s > {opts.max_p90:g}s")
    lag = fig.get("tail_lag_max")
    if lag is not None and lag > opts.max_tail_lag:
        why.append(f"last transcript {lag:.2f}s after the audio ended > {opts.max_tail_lag:g}s")
    if fig.get("worker_errors"):
        why.append(f"{fig['worker_errors']} worker error(s)")
    if fig.get("gaps"):
        why.append(f"{fig['gaps']} message(s) lost on the bus")
    return not why, why


def search(run_step: Callable[[int], dict], opts: CapacityOptions, clip_name: str) -> dict:
    """``run_step(n)`` runs one round of ``n`` streams and returns its figures (metrics.round_figures)."""
    t0 = time.monotonic()
    steps, capacity, stopped = [], 0, "max_streams"
    tries = list(opts.steps) if opts.steps else list(range(1, opts.max_streams + 1))
    for k, n in enumerate(tries):
        if k and time.monotonic() - t0 > opts.budget_s:
            stopped = "budget"
            break
        fig = run_step(n)
        held, why = judge(fig, opts)
        lat = fig.get("latency") or {}
        steps.append({"streams": n, "held": held, "reasons": why, "p50": lat.get("p50"), "p90": lat.get("p90"),
                      "max": lat.get("max"), "tail_lag_max": fig.get("tail_lag_max"),
                      "wer": fig.get("wer"), "first_word_delay": fig.get("first_word_delay"),
                      "worker_core_share": _worker_share(fig),
                      "non_worker_core_share": fig.get("non_worker_core_share"),
                      "machine_busy_cores": fig.get("machine_busy_cores"), "wall_s": fig.get("wall_s"),
                      "decode_queue": (fig.get("worker") or {}).get("decode_queue"),
                      "batch_size_mean": (fig.get("worker") or {}).get("batch_size_mean"),
                      "queue_wait_mean_s": (fig.get("worker") or {}).get("queue_wait_mean_s"),
                      "label": fig.get("label")})
        if not held:
            stopped = "failed"
            break
        capacity = n
    # exact only when the round that failed had one stream more than the last that held
    exact = stopped == "failed" and steps[-1]["streams"] == capacity + 1
    return {"clip": clip_name, "capacity": capacity, "bound": "exact" if exact else "lower",
            "stopped_by": stopped, "criteria": {"max_p90_s": opts.max_p90, "max_tail_lag_s": opts.max_tail_lag,
                                                "max_streams": opts.max_streams, "budget_s": opts.budget_s},
            "search_s": round(time.monotonic() - t0, 1), "steps": steps}


def _worker_share(fig: dict) -> float | None:
    """The worker processes' share of one core (a pool's replicas together)."""
    shares = [c["core_share"] for c in fig.get("cost", {}).values() if c["role"] == "worker"]
    return None if not shares or None in shares else round(sum(shares), 3)
