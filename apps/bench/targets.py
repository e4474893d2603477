"""The published targets, each checked against the figures: met, missed (by how much) or not measured.

They are stated for the clean clips, one stream, ``--min-chunk-size 1.0``,
tiny.en on CPU; a report made under other settings says so beside each.
"""

from __future__ import annotations

TARGETS = (
    # key, what, comparison, target, unit
    ("wer_gap", "streaming WER minus offline WER", "<=", 0.03, ""),
    ("latency_p50", "committed-word latency p50", "<=", 1.5, "s"),
    ("latency_p90", "committed-word latency p90", "<=", 2.5, "s"),
    ("non_worker_core_share", "everything but the worker, share of one core", "<", 0.10, ""),
    ("broker_hop_p99", "broker one-hop latency p99", "<=", 2.0, "ms"),
    ("worker_cpu_per_audio_s", "worker CPU seconds per second of audio (one stream)", "<=", 0.22, ""),
    ("capacity", "concurrent real-time streams at p90 <= 3 s", ">=", 4, ""),
    ("wer_under_load", "WER at the capacity point minus one-stream WER", "<=", 0.015, ""),
    # against --baseline (the same worker with batch: false), measured in the same run
    ("capacity_ratio", "capacity over the baseline's", ">=", 1.5, ""),
    ("one_stream_latency_delta", "one stream: latency p50/p90 minus the baseline's (larger)", "<=", 0.05, "s"),
    ("one_stream_wer_delta", "one stream: WER minus the baseline's", "<=", 0.01, ""),
)
CONDITIONS = {"streams": 1, "min_chunk_size": 1.0, "model": "tiny.en"}


def _value(key: str, report: dict):
    o = report.get("overall") or {}
    if key == "wer_gap":
        miss = o.get("missing", {})
        return o.get("wer_gap"), miss.get("wer") or miss.get("offline_wer") or "no rounds"
    if key in ("latency_p50", "latency_p90"):
        lat = o.get("latency")
        return (lat or {}).get(key[-3:]), None if lat else (o.get("missing", {}).get("latency") or "no rounds")
    if key == "non_worker_core_share":
        return o.get("non_worker_core_share"), "no CPU samples"
    if key == "broker_hop_p99":
        t = report.get("transport")
        if not t:
            return None, "transport not measured (--no-transport)"
        return t.get("latency", {}).get("p99_ms"), t.get("missing", {}).get("latency", "no hop measured")
    if key == "worker_cpu_per_audio_s":
        return (o.get("worker") or {}).get("cpu_per_audio_s"), "no CPU samples of the worker"
    if key == "capacity":
        c = report.get("capacity")
        if not c:
            return None, "capacity not measured (run with --capacity)"
        return c.get("capacity"), None
    if key in ("wer_under_load", "capacity_ratio", "one_stream_latency_delta", "one_stream_wer_delta"):
        comp = report.get("comparison")
        if not comp:
            return None, "not compared" if key == "wer_under_load" else "no --baseline pipeline measured"
        return comp.get(key), comp.get("missing", {}).get(key)
    raise KeyError(key)


def evaluate(report: dict) -> list[dict]:
    settings = report.get("settings", {})
    off = [f"{k} {settings.get(k)!r} (target: {v!r})" for k, v in CONDITIONS.items()
           if k in settings and settings.get(k) != v]
    out = []
    for key, what, op, target, unit in TARGETS:
        value, why = _value(key, report)
        row = {"key": key, "what": what, "target": f"{op} {target:g}{unit and ' ' + unit}", "op": op,
               "threshold": target, "unit": unit, "value": value}
        if value is None:
            row.update(met=None, margin=None, note=why or "not measured")
        else:
            met = value <= target if op == "<=" else value < target if op == "<" else value >= target
            margin = round(value - target, 4)
            row.update(met=met, margin=margin, note="")
            if key == "capacity" and report["capacity"].get("bound") == "lower" and not met:
                row.update(met=None, note=f"search stopped by {report['capacity'].get('stopped_by')} at "
                                          f"{value} stream(s) held: a lower bound")
            elif not met:
                rel = f" ({abs(margin) / target:.0%})" if target else ""
                row["note"] = f"missed by {abs(margin):g}{unit and ' ' + unit}{rel}"
        if off:
            row["note"] = (row["note"] + "; " if row["note"] else "") + "measured with " + ", ".join(off)
        out.append(row)
    return out
