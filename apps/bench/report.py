"""``bench.json`` (every figure) and ``bench.md`` (the tables people read)."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(report: dict, path: Path) -> Path:
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _f(x, nd=2, unit="") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x}{unit}"
    return f"{x:.{nd}f}{unit}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _batch(step: dict) -> str:
    b = (step.get("decode_queue") or {}).get("batch_size")
    mean = step.get("batch_size_mean")
    return f"{_f(mean, 1)} / {b['max'] if b else 'n/a'}"


def _wait(step: dict) -> str:
    w = (step.get("decode_queue") or {}).get("queue_wait_ms")
    mean = step.get("queue_wait_mean_s")
    return f"{_f(mean * 1000 if mean is not None else None, 0)} / {w['p90']:.0f} ms" if w else "n/a"


def _marks(m: dict | None) -> str:
    return "n/a" if not m else f"{m['kept']}/{m['offline']}"


def _lat(lat: dict | None, key: str) -> str:
    return _f(lat.get(key) if lat else None, 2, " s")


def markdown(r: dict) -> str:
    s, mach, git = r["settings"], r["machine"], r["git"]
    o = r.get("overall") or {}
    lines = [f"# voxpipe bench, {r['date']}", ""]
    lines += [f"- command: `{r['command']}`",
              f"- commit: `{git.get('commit')}`" + (" (with uncommitted changes)" if git.get("dirty") else "")
              + (f"; **{git['changed_during_run']}**" if git.get("changed_during_run") else ""),
              f"- machine: {mach['cpu']}, {mach['logical_cores']} logical cores, {mach['ram_gb']} GB RAM, "
              f"{mach['os']}, Python {mach['python']}; load average at start {mach.get('load_average')}",
              f"- pipeline: {s['backend']} {s['model']} (options {s['worker_options']}; the worker says "
              f"{ {k: v for k, v in (r.get('worker_info') or {}).items() if k not in ('rtf', 'streams')} }), "
              f"min_chunk_size {s['min_chunk_size']} s, "
              f"VAD {'on' if s['vad'] else 'off'}, {s['streams']} stream(s) per clip, real time",
              f"- corpus: {s['corpus']} ({', '.join(s['clips'])})"]
    if o.get("machine_busy_cores") is not None:
        lines.append(f"- the machine was busy with other programs: {o['other_programs_cores']:.2f} cores on average "
                     f"during the rounds (all processes: {o['machine_busy_cores']:.2f} of {mach['logical_cores']})")
    lines.append("")
    lines += ["## Targets", ""]
    lines += _table(["target", "wanted", "measured", "met", "note"],
                    [[t["what"], t["target"], _f(t["value"], 3 if t["unit"] != "ms" else 2), _f(t["met"]),
                      t["note"]] for t in r.get("targets", [])])
    lines += ["## Accuracy and latency per clip", ""]
    rows = []
    for f in r.get("rounds", []):
        rows.append([f["clip"], _f(f["seconds"], 1, " s"), str(f["streams"]), _f(f["wer"], 3), _f(f["offline_wer"], 3),
                     _f(f["wer_gap"], 3), _f(f.get("formatted_wer"), 3), _f(f.get("offline_formatted_wer"), 3),
                     _marks(f.get("sentence_marks")), _lat(f["latency"], "p50"), _lat(f["latency"], "p90"),
                     _lat(f["latency"], "max"),
                     _f(f["first_word_delay"], 2, " s"), _f(f["tail_lag_max"], 2, " s"),
                     str(sum(x["commits"] for x in f["per_stream"]))])
    groups = o.get("groups") or {}
    for name, g in groups.items():
        lat, fw = g.get("latency"), g.get("first_word_delay") or {}
        rows.append([f"**{name}**", "", "", _f(g["wer"], 3), _f(g["offline_wer"], 3), _f(g["wer_gap"], 3),
                     _f(g["formatted_wer"], 3), _f(g["offline_formatted_wer"], 3), _marks(g["sentence_marks"]),
                     _lat(lat, "p50"), _lat(lat, "p90"), _lat(lat, "max"),
                     f"{_f(fw.get('median'), 2, ' s')} (median), {_f(fw.get('max'), 2, ' s')} (max)", "", ""])
    if o and len(groups) != 1:
        lat, fw = o.get("latency"), o.get("first_word_delay") or {}
        rows.append(["**all**", _f(o["audio_s"], 1, " s"), "", _f(o["wer"], 3), _f(o["offline_wer"], 3),
                     _f(o["wer_gap"], 3), "", "", "", _lat(lat, "p50"), _lat(lat, "p90"), _lat(lat, "max"),
                     _f(fw.get("median"), 2, " s") + " (median)", "", ""])
    lines += _table(["clip", "audio", "streams", "WER", "offline WER", "gap", "fWER", "offline fWER", "marks",
                     "p50", "p90", "max", "first word", "tail lag", "commits"], rows)
    lines += ["WER after Whisper English normalisation; fWER: the same on the words as written (case and punctuation "
              "count); marks: the offline pass's sentence ends found at the same words; groups (bold) pool the clips "
              "of each kind (the targets are judged on the clean ones); latency of each committed word = emitted - "
              "wall0 - word end; first word = first commit's emission after the VAD's first speech_start; tail lag = "
              "worker's eos after the audio ended.", ""]
    if any(f["streams"] > 1 for f in r.get("rounds", [])):
        lines += ["### Per stream", ""]
        lines += _table(["stream", "WER", "p50", "p90", "max", "first word", "tail lag"],
                        [[x["stream"], _f(x["wer"], 3), _lat(x["latency"], "p50"), _lat(x["latency"], "p90"),
                          _lat(x["latency"], "max"), _f(x["first_word_delay"], 2, " s"), _f(x["tail_lag"], 2, " s")]
                         for f in r["rounds"] for x in f["per_stream"]])
    if o.get("cost"):
        lines += ["## Cost per actor (clip rounds)", ""]
        lines += _table(["actor", "processes", "CPU s", "CPU s per audio s", "share of one core", "peak RSS"],
                        [[role, str(c["processes"]), _f(c["cpu_s"], 2), _f(c["cpu_per_audio_s"], 4),
                          _pct(c["core_share"]), _f(c["rss_peak_mb"], 0, " MB")] for role, c in o["cost"].items()])
        lines += [f"Everything but the worker together: {_pct(o.get('non_worker_core_share'))} of one core. "
                  "Audio seconds: a capture serves its own stream; the broker, VAD and worker serve all of them. "
                  f"The bench itself (subscriber and sampler, not counted above): {_pct(o.get('bench_core_share'))}.",
                  ""]
        w = o.get("worker") or {}
        lines += ["### Where the worker's CPU goes", ""]
        rows = [["decodes", _f(w.get("decodes"))], ["decodes per second of audio", _f(w.get("decodes_per_audio_s"), 3)],
                ["CPU seconds per decode", _f(w.get("cpu_per_decode_s"), 3)],
                ["real-time factor (worker's heartbeat: decode s per speech s)", _f(w.get("rtf"), 3)],
                ["worker CPU s per decode wall s (1.0 = a core to itself)", _f(w.get("cpu_per_decode_wall_s"), 2)]]
        rep = r.get("decode_replay") or {}
        if rep.get("decodes"):
            rows += [["replay: decodes / flushes", f"{rep['decodes']} / {rep['flushes']}"],
                     ["replay: audio seconds per decode", _f(rep.get("decoded_audio_per_decode_s"), 2)],
                     ["replay: CPU seconds per decode", _f(rep.get("cpu_per_decode_s"), 3)]]
        off = r.get("offline_cost") or {}
        if off.get("cpu_per_audio_s") is not None:
            rows.append(["one offline pass: CPU s per audio s", _f(off["cpu_per_audio_s"], 3)])
        lines += _table(["figure", "value"], rows)
        if rep.get("decodes"):
            lines += ["The replay feeds the speech the worker was sent (recorded from `speech.*`) to the same "
                      "processor in-process, decoding as a one-stream worker does; the worker itself reports only "
                      "its decode count and real-time factor.", ""]
    t = r.get("transport")
    if t:
        lat, thr = t.get("latency", {}), t.get("throughput", {})
        lines += ["## Transport (the real broker, one hop, audio-frame-sized messages)", ""]
        lines += _table(["figure", "value"], [
            ["payload", f"{t['payload_bytes']} bytes + header"],
            ["steady rate", _f(lat.get("rate_hz"), 0, " frames/s")],
            ["hop latency p50 / p99 / max", f"{_f(lat.get('p50_ms'), 3)} / {_f(lat.get('p99_ms'), 3)} / "
                                            f"{_f(lat.get('max_ms'), 3)} ms"],
            ["lost at the steady rate", _f(lat.get("lost"))],
            ["broker CPU per frame at the steady rate", _f(lat.get("broker_cpu_us_per_frame"), 1, " us")],
            ["frames/s carried, sender flat out", _f(thr.get("frames_per_s"), 0)],
            ["broker share of a core then", _pct(thr.get("broker_core_share"))],
            ["lost then (slow Python ends, bounded queues)", _f(thr.get("lost"))]])
    c = r.get("capacity")
    if c:
        reps = s.get("replicas")
        pinned = " pinned to a core each" if s.get("pin_cores") else ""
        who = f"a pool of {reps} replica(s){pinned}" if reps else "one worker"
        lines += [f"## Capacity ({c['clip']}, {who})", ""]
        lines += _table(["streams", "held", "WER", "p50", "p90", "max", "tail lag", "worker core", "others",
                         "batch mean / max", "queue wait mean / p90", "why not"],
                        [[str(x["streams"]), _f(x["held"]), _f(x.get("wer"), 3), _f(x["p50"], 2, " s"),
                          _f(x["p90"], 2, " s"), _f(x["max"], 2, " s"), _f(x["tail_lag_max"], 2, " s"),
                          _pct(x["worker_core_share"]), _pct(x["non_worker_core_share"]), _batch(x), _wait(x),
                          "; ".join(x["reasons"])]
                         for x in c["steps"]])
        bound = "" if c["bound"] == "exact" else f" (a lower bound: stopped by {c['stopped_by']})"
        lines += [f"Capacity: **{c['capacity']}** concurrent real-time stream(s){bound}; held = every stream finished, "
                  f"p90 <= {c['criteria']['max_p90_s']} s, "
                  f"last transcript <= {c['criteria']['max_tail_lag_s']} s after "
                  "the audio ended, no errors or lost messages.", ""]
    b = r.get("baseline")
    if b:
        lines += comparison_lines(r, b)
    miss = r.get("missing") or []
    if miss:
        lines += ["## Not measured", ""] + [f"- {m}" for m in miss] + [""]
    return "\n".join(lines)


def comparison_lines(r: dict, b: dict) -> list[str]:
    """The measured pipeline beside ``--baseline``: one stream, and capacity."""
    comp = r.get("comparison") or {}
    o, bo = r.get("overall") or {}, b.get("overall") or {}
    lines = [f"## Against the baseline ({b.get('config')}, measured in the same run)", ""]

    def row(what, ours, theirs, nd=3, unit=""):
        return [what, _f(ours, nd, unit), _f(theirs, nd, unit)]

    lo, lb = o.get("latency") or {}, bo.get("latency") or {}
    cap, bcap = r.get("capacity") or {}, b.get("capacity") or {}
    rows = [row("one stream: WER (clip rounds)", o.get("wer"), bo.get("wer")),
            row("one stream: latency p50", lo.get("p50"), lb.get("p50"), 2, " s"),
            row("one stream: latency p90", lo.get("p90"), lb.get("p90"), 2, " s"),
            row("one stream: worker CPU s per audio s", (o.get("worker") or {}).get("cpu_per_audio_s"),
                (bo.get("worker") or {}).get("cpu_per_audio_s")),
            [f"capacity at p90 <= {(cap.get('criteria') or {}).get('max_p90_s', 3)} s",
             f"{_f(cap.get('capacity'))} ({cap.get('bound', 'n/a')})",
             f"{_f(bcap.get('capacity'))} ({bcap.get('bound', 'n/a')})"],
            row("WER at the capacity point minus one-stream WER", comp.get("wer_under_load"),
                comp.get("baseline_wer_under_load"))]
    lines += _table(["figure", "measured", "baseline"], rows)
    lines += [f"Capacity ratio: **{_f(comp.get('capacity_ratio'), 2)}**.", ""]
    if bcap.get("steps"):
        lines += ["### Baseline capacity steps", ""]
        lines += _table(["streams", "held", "WER", "p50", "p90", "max", "tail lag", "worker core", "why not"],
                        [[str(x["streams"]), _f(x["held"]), _f(x.get("wer"), 3), _f(x["p50"], 2, " s"),
                          _f(x["p90"], 2, " s"), _f(x["max"], 2, " s"), _f(x["tail_lag_max"], 2, " s"),
                          _pct(x["worker_core_share"]), "; ".join(x["reasons"])] for x in bcap["steps"]])
    return lines


def write_markdown(report: dict, path: Path) -> Path:
    path.write_text(markdown(report), encoding="utf-8")
    return path


def collect_missing(report: dict) -> list[str]:
    """Every ``missing`` reason in the report, with the path of the object that holds it."""
    out: list[str] = []

    def walk(node, path):
        if isinstance(node, dict):
            miss = node.get("missing")
            if isinstance(miss, dict):
                out.extend(f"{'/'.join(path) or 'report'}: {k}: {why}" for k, why in miss.items())
            for k, v in node.items():
                if k != "missing" and isinstance(v, (dict, list)):
                    walk(v, path + [str(k)])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                name = (v.get("stream") or v.get("label")) if isinstance(v, dict) else None
                walk(v, path + [str(name or i)])

    walk(report, [])
    return out
