"""Figures of the measured pipeline against itself under load, and against ``--baseline``.

* **WER under load**: the mean WER of the capacity round at the capacity point (every stream
  plays the capacity clip) minus that of its one-stream round (or, when the search started
  above one stream, of the one-stream clip round of that clip): what a full worker costs in
  accuracy.
* With ``--baseline``: the capacity of the measured pipeline over the baseline's (measured in
  the same run, on the same clip), and one stream's latency (p50, p90) and WER in the clip
  rounds of each, so that "batching costs nothing for one stream" is a figure too.

A figure that could not be computed is None, with the reason in ``missing``.
"""

from __future__ import annotations

from .metrics import _r


def _capacity_round(report_part: dict, streams: int) -> dict | None:
    return next((f for f in report_part.get("capacity_rounds") or [] if f.get("streams") == streams), None)


def wer_under_load(part: dict) -> tuple[float | None, str | None, dict]:
    """(WER at the capacity point minus the one-stream WER, why not, details) of a report (or its baseline)."""
    cap = part.get("capacity")
    if not cap:
        return None, "capacity not measured (run with --capacity)", {}
    n = cap.get("capacity") or 0
    one, full = _capacity_round(part, 1), _capacity_round(part, n)
    if one is None:  # the search started above one stream: the clip round of the capacity clip, one stream
        one = next((f for f in part.get("rounds") or [] if f.get("clip") == cap.get("clip") and f.get("streams") == 1),
                   None)
    if n < 1 or one is None or full is None:
        return None, "no capacity round held", {}
    if one.get("wer") is None or full.get("wer") is None:
        return None, "a capacity round has no WER (a stream did not finish)", {}
    return _r(full["wer"] - one["wer"]), None, {"streams": n, "wer": full["wer"], "one_stream_wer": one["wer"]}


def comparison(report: dict) -> dict:
    out: dict = {"missing": {}}
    value, why, detail = wer_under_load(report)
    out["wer_under_load"] = value
    out["wer_under_load_detail"] = detail
    if why:
        out["missing"]["wer_under_load"] = why
    base = report.get("baseline")
    if not base:
        for key in ("capacity_ratio", "one_stream_latency_delta", "one_stream_wer_delta"):
            out[key] = None
            out["missing"][key] = "no --baseline pipeline measured"
        return out
    out["baseline_config"] = base.get("config")
    ours, theirs = (report.get("capacity") or {}).get("capacity"), (base.get("capacity") or {}).get("capacity")
    out["capacity"] = {"measured": ours, "baseline": theirs,
                       "measured_bound": (report.get("capacity") or {}).get("bound"),
                       "baseline_bound": (base.get("capacity") or {}).get("bound")}
    if ours is None or theirs is None:
        out["capacity_ratio"] = None
        out["missing"]["capacity_ratio"] = "capacity not measured on both pipelines (run with --capacity)"
    elif theirs == 0:
        out["capacity_ratio"] = None
        out["missing"]["capacity_ratio"] = "the baseline held no stream"
    else:
        out["capacity_ratio"] = _r(ours / theirs, 3)
    o, b = report.get("overall") or {}, base.get("overall") or {}
    lo, lb = o.get("latency"), b.get("latency")
    if lo and lb:
        d50, d90 = _r(lo["p50"] - lb["p50"]), _r(lo["p90"] - lb["p90"])
        out["one_stream_latency"] = {"p50_delta": d50, "p90_delta": d90,
                                     "measured": {"p50": lo["p50"], "p90": lo["p90"]},
                                     "baseline": {"p50": lb["p50"], "p90": lb["p90"]}}
        out["one_stream_latency_delta"] = max(abs(d50), abs(d90))
    else:
        out["one_stream_latency_delta"] = None
        out["missing"]["one_stream_latency_delta"] = "no committed words in the clip rounds of one pipeline"
    if o.get("wer") is not None and b.get("wer") is not None:
        out["one_stream_wer_delta"] = _r(o["wer"] - b["wer"])
    else:
        out["one_stream_wer_delta"] = None
        out["missing"]["one_stream_wer_delta"] = "no WER in the clip rounds of one pipeline"
    wo, wb = (o.get("worker") or {}).get("cpu_per_audio_s"), (b.get("worker") or {}).get("cpu_per_audio_s")
    out["one_stream_worker_cpu"] = {"measured": wo, "baseline": wb,
                                    "ratio": _r(wo / wb, 3) if wo is not None and wb else None}
    value, why, detail = wer_under_load(base)
    out["baseline_wer_under_load"] = value
    out["baseline_wer_under_load_detail"] = detail
    return out
