"""``latency.png``: the latency of each committed word over stream time, one line per stream.

The top panel shows the clip rounds, the bottom one (with ``--capacity``)
every stream of every capacity step, coloured by the number of streams.
Dashed lines mark the p50 and p90 targets and the capacity limit.
"""

from __future__ import annotations

from pathlib import Path

from .targets import TARGETS


def target(key: str) -> float:
    return next(t[3] for t in TARGETS if t[0] == key)


def plot_latency(report: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report.get("rounds", [])
    cap = report.get("capacity_rounds", [])
    panels = [("clip rounds", rounds)] + ([("capacity steps", cap)] if cap else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 4.2 * len(panels)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (title, figs) in zip(axes[:, 0], panels, strict=False):
        top = max((r["streams"] for r in figs), default=1)
        for r in figs:
            for s in r["per_stream"]:
                if not s["series"]:
                    continue
                xs, ys = zip(*s["series"], strict=False)
                if title == "capacity steps":
                    colour = cmap((r["streams"] - 1) / max(1, top - 1) * 0.9)
                    label = f"{r['streams']} streams" if s is r["per_stream"][0] else None
                    ax.plot(xs, ys, ".-", color=colour, alpha=0.7, lw=0.8, ms=3, label=label)
                else:
                    ax.plot(xs, ys, ".-", lw=1, ms=3, label=s["stream"])
        for y, style, name in ((target("latency_p50"), ":", "p50 target"), (target("latency_p90"), "--", "p90 target"),
                               (3.0, "-.", "capacity limit")):
            ax.axhline(y, color="grey", ls=style, lw=0.8, label=name)
        ax.set_title(f"latency of committed words ({title})")
        ax.set_xlabel("stream time of the word's end (s)")
        ax.set_ylabel("emitted - wall0 - word end (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tradeoff(results: list[dict], path: Path, group: str = "clean") -> Path:
    """The commit-policy sweep's settings as points: latency (p50 and p90) against WER, CPU beside each.

    ``results``: ``scripts/commit_policy_sweep.py --json``'s records; those of ``group`` are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["group"] == group]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for key, marker, name in (("p50", "o", "p50"), ("p90", "s", "p90")):
        ax.scatter([r[key] for r in rows], [r["wer"] for r in rows], marker=marker, label=f"latency {name}")
    for k, r in enumerate(rows):
        label = (r["setting"].removeprefix("dict(").removesuffix(")").replace("first_chunk_size", "first")
                 .replace("min_chunk_size", "chunk").replace("_sec", "").replace("_", " ")) or "defaults"
        ax.annotate(f"{label}\nCPU {r['cpu_per_s']:.3f} s/s", (r["p50"], r["wer"]), fontsize=6,
                    xytext=(4, 4 - 14 * (k % 3)), textcoords="offset points")
        ax.plot([r["p50"], r["p90"]], [r["wer"], r["wer"]], color="grey", lw=0.6, alpha=0.6)
    if rows:
        ax.axhline(rows[0]["offline_wer"] + 0.01, color="grey", ls="--", lw=0.8, label="offline WER + 0.01")
    for x, style, name in ((target("latency_p50"), ":", "p50 target"), (target("latency_p90"), "-.", "p90 target")):
        ax.axvline(x, color="grey", ls=style, lw=0.8, label=name)
    ax.set_xlabel("committed-word latency (s; a line joins a setting's p50 and p90)")
    ax.set_ylabel(f"WER ({group} clips)")
    ax.set_title("commit policy: latency against WER (scripts/commit_policy_sweep.py)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
