"""Figures from what the bench observed: per stream, per round, and over several rounds.

A figure that could not be measured is ``None``, and the ``missing`` map of
the object that holds it says why (``{"latency": "no committed words"}``);
nothing is filled in with a zero or a guess.

* WER: Whisper English normalisation (:mod:`apps.bench.evaluation`) of the
  reference and of the commit texts joined; over several streams or clips,
  word errors summed over reference words summed.
* Formatted WER: the same on the words as written (case and punctuation
  count); sentence marks: of the offline pass's sentence ends, the share the
  stream has at the same words.
* Groups: the clips' figures pooled per group (``clean``, ``noisy``, ``gaps``,
  by the clip's name); the targets are judged on the clean group.
* Latency of a committed word: ``emitted - wall0 - word_end`` (the commit's
  ``emitted`` and ``wall0``, the word's own end).
* First-word delay: the first commit's ``emitted`` minus the Unix time of
  the VAD's first ``speech_start`` (``wall0 + t``).
* Tail lag: the worker's ``eos`` arriving, minus the Unix time the audio
  ended (``wall0 + clip seconds``): how far behind real time it finished.
* Cost: CPU seconds of each actor between the round's two snapshots, per
  second of audio it served (a capture serves one stream, the others all
  ``N``), per wall second (share of one core), and peak RSS.
"""

from __future__ import annotations

import statistics

from apps.bench.evaluation import edit_distance, normalize, percentile, sentence_marks_kept

MB = 1024 * 1024


def _r(x, nd=4):
    return None if x is None else round(float(x), nd)


def latency_stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"p50": _r(percentile(values, 50)), "p90": _r(percentile(values, 90)), "max": _r(max(values)),
            "mean": _r(statistics.fmean(values)), "n": len(values)}


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance, reference words) after normalisation."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    return edit_distance(ref, hyp), len(ref)


def formatted_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance, reference words) on the words as written (no normalisation)."""
    ref, hyp = reference.split(), hypothesis.split()
    return edit_distance(ref, hyp), len(ref)


def ratio(errors: int, words: int) -> float:
    return errors / words if words else (0.0 if errors == 0 else 1.0)


# -- one stream ------------------------------------------------------------------------------------
def stream_figures(rec, clip) -> dict:
    from pipeline.formats import join_commit_texts

    missing: dict[str, str] = {}
    text = join_commit_texts(c.text for c in rec.commits)
    series = [[_r(w[1], 3), _r(c.emitted - c.wall0 - w[1])] for c in rec.commits for w in c.words]
    f = {"stream": rec.stream, "clip": clip.name, "finished": rec.finished, "commits": len(rec.commits),
         "words": len(series), "transcript": text, "gaps": rec.gaps, "worker_errors": list(rec.errors),
         "speech_seconds": _r(rec.speech_seconds, 3)}
    if rec.finished:
        err, ref = word_errors(clip.text, text)
        ferr, fref = formatted_errors(clip.text, text)
        f.update(wer=_r(ratio(err, ref)), word_errors=err, ref_words=ref,
                 formatted_wer=_r(ratio(ferr, fref)), formatted_errors=ferr, ref_tokens=fref)
    else:
        f.update(wer=None, word_errors=None, ref_words=None, formatted_wer=None, formatted_errors=None,
                 ref_tokens=None)
        missing["wer"] = "the worker did not finish the stream (no eos): the transcript is incomplete"
    f["latency"] = latency_stats([s[1] for s in series])
    if f["latency"] is None:
        missing["latency"] = "no committed words" if not rec.commits else "commits without word timings"
    first = rec.speech_starts[0] if rec.speech_starts else None
    f["speech_start"] = _r(first[0], 3) if first else None
    if first and rec.commits:
        wall0 = first[1] or rec.commits[0].wall0
        f["first_word_delay"] = _r(rec.commits[0].emitted - (wall0 + first[0]))
    else:
        f["first_word_delay"] = None
        missing["first_word_delay"] = "no commits" if first else "the VAD reported no speech_start"
    wall0 = rec.wall0
    if rec.finished and wall0:
        f["tail_lag"] = _r(rec.eos_received - (wall0 + clip.seconds))
    else:
        f["tail_lag"] = None
        missing["tail_lag"] = ("the worker did not finish the stream" if not rec.finished
                               else "wall0 unknown (no speech and no commits on this stream)")
    f["series"] = series
    f["missing"] = missing
    return f


# -- cost -------------------------------------------------------------------------------------------
def actor_cost(rr, name: str, a: dict) -> dict:
    """One actor in one round: CPU per audio second (of the streams it served), per wall second, RSS."""
    audio = rr.clip.seconds * (1 if a["role"] == "capture" else rr.n)
    cpu = a["cpu_s"]
    return {"role": a["role"], "cpu_s": _r(cpu), "audio_s": _r(audio, 3),
            "cpu_per_audio_s": _r(cpu / audio) if cpu is not None and audio else None,
            "core_share": _r(cpu / rr.wall) if cpu is not None and rr.wall > 0 else None,
            "rss_peak_mb": _r(a["rss_peak"] / MB, 1) if a["rss_peak"] else None}


def worker_figures(rr, worker_name: str) -> dict:
    """The measured worker's figures; a pool's replicas (``rr.worker_names``) together."""
    missing = {}
    cpus = [rr.actors.get(n, {}).get("cpu_s") for n in (getattr(rr, "worker_names", ()) or (worker_name,))]
    cpu = None if None in cpus else sum(cpus)
    audio = rr.clip.seconds * rr.n
    before, after = rr.worker_before.get("decodes"), rr.worker_after.get("decodes")
    decodes = after - before if before is not None and after is not None else None
    if decodes is None:
        missing["decodes"] = "no worker heartbeat after the round (its counters were not read)"
    f = {"decodes": decodes, "decodes_per_audio_s": _r(decodes / audio) if decodes is not None else None,
         "cpu_per_decode_s": _r(cpu / decodes) if decodes and cpu is not None else None,
         "rtf": rr.worker_info.get("rtf"),
         "speech_seconds": _r(sum(r.speech_seconds for r in rr.streams), 3),
         # the worker's recent queue waits and batch sizes (its heartbeat after the round)
         "decode_queue": rr.worker_info.get("decode_queue"), "batch": rr.worker_info.get("batch")}
    if f["cpu_per_decode_s"] is None and "decodes" not in missing:
        missing["cpu_per_decode_s"] = "no decodes in the round" if decodes == 0 else "no CPU sample"
    db, ds, dw = (_delta(rr, k) for k in ("batches", "batched_steps", "queue_wait_s"))
    f["batch_size_mean"] = _r(ds / db, 2) if db and ds is not None else None
    f["queue_wait_mean_s"] = _r(dw / ds) if ds and dw is not None else None
    f["rtf_note"] = "the worker's own figure: decode seconds per second of speech it received, since it started"
    f["missing"] = missing
    return f


def _delta(rr, key: str):
    """A worker counter's increase over the round (None when not reported)."""
    before, after = rr.worker_before.get(key), rr.worker_after.get(key)
    return after - before if before is not None and after is not None else None


# -- accuracy of streams beside their clips' offline passes ---------------------------------------------
def accuracy_figures(pairs: list[tuple[dict, dict | None]]) -> dict:
    """WER, formatted WER and sentence marks of finished streams (``(stream figures, offline figures)``
    pairs), pooled, beside the offline passes of the same clips (counted once per stream)."""
    missing: dict[str, str] = {}
    done = [(s, o) for s, o in pairs if s["wer"] is not None]
    out: dict = {"streams": len(done)}
    if not done:
        missing["wer"] = "no stream finished"
    out["wer"] = _r(ratio(sum(s["word_errors"] for s, _ in done), sum(s["ref_words"] for s, _ in done))) if done \
        else None
    out["formatted_wer"] = (_r(ratio(sum(s["formatted_errors"] for s, _ in done),
                                     sum(s["ref_tokens"] for s, _ in done))) if done else None)
    offs = [o for _, o in done]
    if done and all(o and o.get("wer") is not None for o in offs):
        out["offline_wer"] = _r(ratio(sum(o["word_errors"] for o in offs), sum(o["ref_words"] for o in offs)))
        out["offline_formatted_wer"] = _r(ratio(sum(o["formatted_errors"] for o in offs),
                                                sum(o["ref_tokens"] for o in offs)))
        kept = total = 0
        for s, o in done:
            k, t = sentence_marks_kept(o["transcript"], s["transcript"])
            kept, total = kept + k, total + t
        out["sentence_marks"] = {"kept": kept, "offline": total, "share": _r(kept / total) if total else None}
        if not total:
            missing["sentence_marks"] = "the offline passes ended no sentence"
    else:
        out["offline_wer"] = out["offline_formatted_wer"] = out["sentence_marks"] = None
        missing["offline_wer"] = next((o.get("missing", {}).get("wer") for o in offs if o and o.get("missing")),
                                      "not measured for every clip")
    out["wer_gap"] = _r(out["wer"] - out["offline_wer"]) if out["wer"] is not None and out["offline_wer"] is not None \
        else None
    out["formatted_gap"] = (_r(out["formatted_wer"] - out["offline_formatted_wer"])
                            if out["formatted_wer"] is not None and out["offline_formatted_wer"] is not None else None)
    out["missing"] = missing
    return out


# -- one round --------------------------------------------------------------------------------------
def round_figures(rr, worker_name: str, offline: dict | None = None) -> dict:
    streams = [stream_figures(r, rr.clip) for r in rr.streams]
    missing: dict[str, str] = {}
    done = [s for s in streams if s["wer"] is not None]
    f = {"label": rr.label, "clip": rr.clip.name, "group": rr.clip.group, "seconds": _r(rr.clip.seconds, 3),
         "streams": rr.n, "wall_s": _r(rr.wall, 3), "timed_out": rr.timed_out}
    f["wer"] = _r(ratio(sum(s["word_errors"] for s in done), sum(s["ref_words"] for s in done))) if done else None
    if not done:
        missing["wer"] = "no stream finished"
    f["offline_wer"] = offline.get("wer") if offline else None
    if f["offline_wer"] is None:
        missing["offline_wer"] = (offline or {}).get("missing", {}).get("wer", "not measured")
    f["wer_gap"] = _r(f["wer"] - f["offline_wer"]) if f["wer"] is not None and f["offline_wer"] is not None else None
    acc = accuracy_figures([(s, offline) for s in streams])
    f.update({k: acc[k] for k in ("formatted_wer", "offline_formatted_wer", "formatted_gap", "sentence_marks")})
    f["latency"] = latency_stats([p[1] for s in streams for p in s["series"]])
    if f["latency"] is None:
        missing["latency"] = "no committed words on any stream"
    delays = [s["first_word_delay"] for s in streams if s["first_word_delay"] is not None]
    f["first_word_delay"] = _r(statistics.fmean(delays)) if delays else None
    if not delays:
        missing["first_word_delay"] = "no stream had both a speech_start and a commit"
    lags = [s["tail_lag"] for s in streams if s["tail_lag"] is not None]
    f["tail_lag_max"] = max(lags) if lags and len(lags) == len(streams) else None
    if f["tail_lag_max"] is None:
        missing["tail_lag_max"] = "not every stream finished with a known wall0"
    f["gaps"] = sum(s["gaps"] for s in streams)
    f["worker_errors"] = sum(len(s["worker_errors"]) for s in streams)
    f["cost"] = {name: actor_cost(rr, name, a) for name, a in rr.actors.items()}
    f["worker"] = worker_figures(rr, worker_name)
    nw = [a["cpu_s"] for name, a in rr.actors.items() if a["role"] != "worker"]
    f["non_worker_core_share"] = _r(sum(nw) / rr.wall) if nw and None not in nw and rr.wall > 0 else None
    f["machine_busy_cores"] = _r(rr.machine_busy_s / rr.wall, 3) if rr.machine_busy_s is not None and rr.wall else None
    f["bench_core_share"] = _r(rr.bench_cpu_s / rr.wall) if rr.bench_cpu_s is not None and rr.wall else None
    if rr.timed_out:
        missing["timed_out"] = ("the round ended at its timeout, before every stream finished: its cost and counts "
                                "cover only the time until then")
    f["per_stream"] = streams
    f["missing"] = missing
    return f


# -- several rounds ----------------------------------------------------------------------------------
def overall_figures(rounds: list, figs: list[dict], offline: dict) -> dict:
    """Pooled over the rounds ``rounds`` (RoundResult) with their figures ``figs``."""
    missing: dict[str, str] = {}
    streams = [s for f in figs for s in f["per_stream"]]
    done = [s for s in streams if s["wer"] is not None]
    audio = sum(rr.clip.seconds * rr.n for rr in rounds)
    wall = sum(rr.wall for rr in rounds)
    out = {"rounds": len(rounds), "streams_per_round": sorted({rr.n for rr in rounds}), "audio_s": _r(audio, 3),
           "wall_s": _r(wall, 3), "unfinished_streams": len(streams) - len([s for s in streams if s["finished"]])}
    out["wer"] = _r(ratio(sum(s["word_errors"] for s in done), sum(s["ref_words"] for s in done))) if done else None
    if not done:
        missing["wer"] = "no stream finished"
    offs = [offline.get(rr.clip.name) for rr in rounds]
    if offs and all(o and o.get("wer") is not None for o in offs):
        out["offline_wer"] = _r(ratio(sum(o["word_errors"] for o in offs), sum(o["ref_words"] for o in offs)))
    else:
        out["offline_wer"] = None
        missing["offline_wer"] = "not measured for every clip"
    out["wer_gap"] = (_r(out["wer"] - out["offline_wer"])
                      if out["wer"] is not None and out["offline_wer"] is not None else None)
    out["latency"] = latency_stats([p[1] for s in streams for p in s["series"]])
    if out["latency"] is None:
        missing["latency"] = "no committed words"
    delays = [s["first_word_delay"] for s in streams if s["first_word_delay"] is not None]
    out["first_word_delay"] = ({"median": _r(statistics.median(delays)), "max": _r(max(delays)), "n": len(delays)}
                               if delays else None)
    if not delays:
        missing["first_word_delay"] = "no stream had both a speech_start and a commit"
    out["groups"] = group_figures(figs, offline)
    out["cost"] = pooled_cost(rounds)
    roles = out["cost"]
    nw = [roles[r]["cpu_s"] for r in roles if r != "worker"]
    out["non_worker_core_share"] = _r(sum(nw) / wall) if nw and None not in nw and wall else None
    w = [f["worker"] for f in figs]
    decodes = [x["decodes"] for x in w]
    wcpu = roles.get("worker", {}).get("cpu_s")
    rtf = w[-1]["rtf"] if w else None
    speech = sum(x["speech_seconds"] for x in w)
    out["worker"] = {
        "cpu_per_audio_s": roles.get("worker", {}).get("cpu_per_audio_s"),
        "decodes": sum(decodes) if None not in decodes else None,
        "decodes_per_audio_s": _r(sum(decodes) / audio) if None not in decodes and audio else None,
        "cpu_per_decode_s": _r(wcpu / sum(decodes)) if None not in decodes and sum(decodes) and wcpu else None,
        "rtf": rtf,
        # the worker's decode wall time over these rounds is rtf x the speech it was sent (its rtf counts
        # from its start, and these are its first rounds); CPU over that: 1.0 when it had a core to itself
        "cpu_per_decode_wall_s": _r(wcpu / (rtf * speech)) if rtf and speech and wcpu else None,
    }
    bench = [rr.bench_cpu_s for rr in rounds]
    out["bench_core_share"] = _r(sum(bench) / wall) if None not in bench and wall else None
    busy = [rr.machine_busy_s for rr in rounds]
    if None not in busy and wall:
        ours = sum(a["cpu_s"] or 0.0 for rr in rounds for a in rr.actors.values()) + sum(b or 0.0 for b in bench)
        out["machine_busy_cores"] = _r(sum(busy) / wall, 3)
        out["other_programs_cores"] = _r(max(0.0, sum(busy) - ours) / wall, 3)
    out["missing"] = missing
    return out


def group_figures(figs: list[dict], offline: dict) -> dict:
    """Per group of clips (``clean``, ``noisy``, ``gaps``): accuracy beside offline, latency, first word."""
    out = {}
    for group in dict.fromkeys(f.get("group", "clean") for f in figs):
        members = [f for f in figs if f.get("group", "clean") == group]
        streams = [(s, offline.get(f["clip"])) for f in members for s in f["per_stream"]]
        g = accuracy_figures(streams)
        g["clips"] = [f["clip"] for f in members]
        g["latency"] = latency_stats([p[1] for s, _ in streams for p in s["series"]])
        if g["latency"] is None:
            g["missing"]["latency"] = "no committed words"
        delays = [s["first_word_delay"] for s, _ in streams if s["first_word_delay"] is not None]
        g["first_word_delay"] = ({"median": _r(statistics.median(delays)), "max": _r(max(delays)), "n": len(delays)}
                                 if delays else None)
        if not delays:
            g["missing"]["first_word_delay"] = "no stream had both a speech_start and a commit"
        out[group] = g
    return out


def pooled_cost(rounds: list) -> dict:
    """Per role over several rounds: CPU seconds, per audio second served, share of a core, peak RSS."""
    acc: dict[str, dict] = {}
    for rr in rounds:
        served = set()  # roles whose audio this round is counted (a pool's replicas serve the streams once)
        for name, a in rr.actors.items():
            r = acc.setdefault(a["role"], {"cpu_s": 0.0, "audio_s": 0.0, "wall_s": 0.0, "rss": 0, "names": set(),
                                           "unsampled": False})
            if a["cpu_s"] is None:
                r["unsampled"] = True
            else:
                r["cpu_s"] += a["cpu_s"]
            if a["role"] == "capture":
                r["audio_s"] += rr.clip.seconds
            elif a["role"] not in served:
                served.add(a["role"])
                r["audio_s"] += rr.clip.seconds * rr.n
            r["rss"] = max(r["rss"], a["rss_peak"] or 0)
            r["names"].add(name)
        for role in {a["role"] for a in rr.actors.values()}:
            acc[role]["wall_s"] += rr.wall
    out = {}
    for role, r in acc.items():
        cpu = None if r["unsampled"] else r["cpu_s"]
        out[role] = {"processes": len(r["names"]), "cpu_s": _r(cpu), "audio_s": _r(r["audio_s"], 3),
                     "cpu_per_audio_s": _r(cpu / r["audio_s"]) if cpu is not None and r["audio_s"] else None,
                     "core_share": _r(cpu / r["wall_s"]) if cpu is not None and r["wall_s"] else None,
                     "rss_peak_mb": _r(r["rss"] / MB, 1) if r["rss"] else None}
    return out
