"""``latency.png``: the latency of each committed word over stream time, one line per stream.

The top panel shows the clip rounds, the bottom one (with ``--capacity``)
every stream of every capacity step, coloured by the number of streams.
Dashed lines mark the p50 and p90 targets and the capacity limit.
"""

from __future__ import annotations

from pathlib import Path


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
        for y, style, name in ((1.5, ":", "p50 target"), (2.5, "--", "p90 target"), (3.0, "-.", "capacity limit")):
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
