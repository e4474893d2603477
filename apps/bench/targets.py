"""The published targets, each checked against the figures: met, missed (by how much) or not measured.

They are stated for the clean clips (the ``clean`` group; the noisy WER on the
``noisy`` group), one stream, the worker's own ``min_chunk_size``, tiny.en on
CPU; a report made under other settings says so beside each.
"""

from __future__ import annotations

TARGETS = (
    # key, what, comparison, target, unit
    ("wer_gap", "streaming WER minus offline WER (clean clips)", "<=", 0.01, ""),
    ("latency_p50", "committed-word latency p50 (clean clips)", "<=", 0.9, "s"),
    ("latency_p90", "committed-word latency p90 (clean clips)", "<=", 1.6, "s"),
    ("first_word_delay", "first word after speech start, worst clean clip", "<=", 1.2, "s"),
    ("formatted_gap", "formatted WER minus offline formatted WER (clean clips)", "<=", 0.03, ""),
    ("sentence_marks", "offline sentence ends kept at the same words (clean clips)", ">=", 0.9, ""),
    ("noisy_wer_gap", "streaming WER minus offline WER (noisy clips)", "<=", 0.03, ""),
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
CONDITIONS = {"streams": 1, "model": "tiny.en"}


def _group(o: dict, name: str) -> tuple[dict, str | None]:
    """The figures of a group of clips, or (the overall figures, None) for a report without groups."""
    groups = o.get("groups")
    if groups is None:
        return o, None
    if name not in groups:
        return {}, f"no {name} clips in the corpus"
    return groups[name], None


def _value(key: str, report: dict):
    o = report.get("overall") or {}
    if key in ("wer_gap", "noisy_wer_gap", "formatted_gap"):
        g, why = _group(o, "noisy" if key == "noisy_wer_gap" else "clean")
        miss = g.get("missing", {})
        return g.get(key.replace("noisy_", "")), why or miss.get("wer") or miss.get("offline_wer") or "no rounds"
    if key == "sentence_marks":
        g, why = _group(o, "clean")
        marks = g.get("sentence_marks") or {}
        return marks.get("share"), why or g.get("missing", {}).get("sentence_marks") or "no offline pass"
    if key == "first_word_delay":
        g, why = _group(o, "clean")
        return (g.get("first_word_delay") or {}).get("max"), why or "no first word measured"
    if key in ("latency_p50", "latency_p90"):
        g, why = _group(o, "clean")
        lat = g.get("latency")
        return (lat or {}).get(key[-3:]), None if lat else (why or g.get("missing", {}).get("latency") or "no rounds")
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
