"""``voxpipe bench``: replay a corpus through the real pipeline and report what it measured.

Phases, in order (each one's figures are null with a reason if it could not
be measured, never invented):

1. transport: one-hop latency and throughput of a real broker of its own
   (:mod:`.transport`);
2. the pipeline of ``--config`` (default ``configs/file.yaml``: broker, VAD,
   one tiny.en worker) starts on a private bus, and each clip is replayed at
   real time on ``--streams`` concurrent streams, one round per clip
   (:mod:`.session`), while psutil samples every actor (:mod:`.sampler`);
3. with ``--capacity``: rounds of 1, 2, 3, ... streams until one does not
   hold (:mod:`.capacity`);
4. with ``--baseline CONFIG``: phases 2 and 3 again on that pipeline (say the same
   worker with ``batch: false``), so that the figures of both come from one run and
   :mod:`.compare` can give their ratios;
5. the pipeline stops; the worker's backend is loaded in-process for the
   offline WER of each clip and a replay of the worker's decodes (:mod:`.offline`);
6. ``bench.json``, ``bench.md`` and ``latency.png`` under ``--out``
   (default ``bench-out/<date-time>/``), plus the derived configs and the
   actors' last log lines.
"""

from __future__ import annotations

import dataclasses
import datetime
import shlex
import signal
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure accuracy, latency, cost and capacity of a pipeline on a corpus")
    p.add_argument("--corpus", default=None, metavar="DIR",
                   help="clips NAME.wav + NAME.json with a text field (default: tests/data)")
    p.add_argument("--clips", default=None, metavar="A,B", help="only these clips, in this order")
    p.add_argument("--all-clips", action="store_true", help="include the *_gaps clips (left out by default)")
    p.add_argument("--config", "-c", default=None, help="pipeline YAML (default: configs/file.yaml)")
    p.add_argument("--worker", default=None, help="which of the config's workers to measure (default: the first)")
    p.add_argument("--streams", type=int, default=1, help="concurrent streams per clip (default 1)")
    p.add_argument("--min-chunk-size", type=float, default=None, help="override the worker's min_chunk_size")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: bench-out/<date-time>)")
    p.add_argument("--round-timeout", type=float, default=60.0,
                   help="seconds after a clip's audio ends to wait for the worker's eos (default 60)")
    g = p.add_argument_group("capacity")
    g.add_argument("--capacity", action="store_true", help="also find how many real-time streams one worker holds")
    g.add_argument("--max-streams", type=int, default=8, help="capacity: largest number of streams to try (8)")
    g.add_argument("--capacity-clip", default=None, help="capacity: the clip to replay (default: the first)")
    g.add_argument("--max-p90", type=float, default=3.0, help="capacity: p90 latency limit in seconds (3)")
    g.add_argument("--max-tail-lag", type=float, default=6.0,
                   help="capacity: latest eos after the audio ended, in seconds (6)")
    g.add_argument("--capacity-budget", type=float, default=900.0, help="capacity: seconds before no new step starts")
    g.add_argument("--capacity-streams", default=None, metavar="N,N,...",
                   help="capacity: the numbers of streams to try, in order (default 1, 2, ... --max-streams)")
    g.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="run the measured worker as a pool of N replicas behind the dispatcher (also for N=1: "
                        "the same path for the baseline); each offers --max-streams slots")
    g.add_argument("--pin-cores", action="store_true",
                   help="pin replica k to CPU core k-1 (os.sched_setaffinity; one decode thread each)")
    g = p.add_argument_group("comparison")
    g.add_argument("--baseline", default=None, metavar="CONFIG",
                   help="also measure this pipeline (clip rounds and capacity) in the same run and report "
                        "--config's figures against it (e.g. the same worker with batch: false)")
    g = p.add_argument_group("transport")
    g.add_argument("--no-transport", action="store_true", help="skip the broker measurement")
    g.add_argument("--hop-rate", type=float, default=200.0, help="frames/s for the hop latency (200)")
    g.add_argument("--transport-seconds", type=float, default=5.0, help="seconds of each transport phase (5)")
    p.add_argument("--no-offline", action="store_true", help="skip the offline WER and the decode replay")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", "-v", action="store_true", help="show every actor's log on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    from pipeline.errors import UsageError

    try:
        import matplotlib  # noqa: F401
        import psutil  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"{exc.name} is missing: pip install 'voxpipe[bench]'") from None

    def interrupted(signum, _frame):
        raise KeyboardInterrupt  # unwinds through the cleanup: every actor is stopped

    signal.signal(signal.SIGTERM, interrupted)
    return Bench(args).run()


class Bench:
    def __init__(self, args):
        from apps.transcribe import default_config
        from pipeline.config import ConfigError, SourceConfig, load_config

        from .capacity import CapacityOptions
        from .corpus import load_corpus
        from .session import bench_config

        self.args = args
        if args.streams < 1 or args.max_streams < 1:
            raise ConfigError("--streams and --max-streams must be at least 1")
        names = [c.strip() for c in args.clips.split(",") if c.strip()] if args.clips else None
        self.clips = load_corpus(args.corpus, names, clean_only=not args.all_clips)
        base = load_config(args.config or default_config(), check_files=False)
        self.template = base.sources[0] if base.sources else SourceConfig()
        self.cfg = bench_config(base, args.worker, args.min_chunk_size, args.replicas, args.pin_cores,
                                args.max_streams)
        self.worker = self.cfg.workers[0]
        self.cap_clip = self.clips[0]
        if args.capacity_clip:
            found = [c for c in self.clips if c.name == args.capacity_clip]
            if not found:
                raise ConfigError(f"--capacity-clip {args.capacity_clip!r} is not one of the selected clips")
            self.cap_clip = found[0]
        steps = None
        if args.capacity_streams:
            try:
                steps = tuple(int(x) for x in args.capacity_streams.split(",") if x.strip())
            except ValueError:
                raise ConfigError(f"--capacity-streams {args.capacity_streams!r} is not a list of numbers") from None
            if not steps or min(steps) < 1 or list(steps) != sorted(set(steps)):
                raise ConfigError("--capacity-streams must be increasing numbers of at least 1")
        self.cap_opts = CapacityOptions(args.max_streams, args.max_p90, args.max_tail_lag, args.capacity_budget, steps)
        self.baseline_cfg = None
        if args.baseline:
            base_cfg = load_config(args.baseline, check_files=False)
            self.baseline_cfg = bench_config(base_cfg, args.worker, args.min_chunk_size, args.replicas, args.pin_cores,
                                             args.max_streams)  # measured the same way
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = Path(args.out or Path("bench-out") / stamp)
        self.out.mkdir(parents=True, exist_ok=True)
        self.report: dict = {}

    # -- progress -------------------------------------------------------------------------------
    def bar(self, desc: str, total: float, unit: str = "s"):
        from tqdm import tqdm

        return tqdm(total=round(total, 1), desc=desc, unit=unit, file=sys.stderr, disable=self.args.no_progress,
                    leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} {unit} [{elapsed}]")

    def say(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> int:
        from .machine import git_info, machine_info

        a, w = self.args, self.worker
        self.report = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join(["voxpipe", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else "voxpipe bench",
            "machine": machine_info(), "git": git_info(Path(__file__).resolve().parents[2]),
            "settings": {"corpus": str(Path(a.corpus).resolve()) if a.corpus else "tests/data",
                         "clips": [c.name for c in self.clips], "config": a.config or "configs/file.yaml",
                         "worker": w.name, "backend": w.backend, "model": w.model, "language": w.language,
                         "worker_options": dict(w.options), "min_chunk_size": w.min_chunk_size,
                         "vad": self.cfg.vad.enabled, "streams": a.streams, "speed": 1.0,
                         "replicas": w.replicas if a.replicas is not None else None, "pin_cores": w.pin_cores,
                         "capacity": dataclasses.asdict(self.cap_opts) if a.capacity else None},
        }
        from asr_core.registry import backend_class

        backend_class(w.backend)  # the in-process passes at the end run the code the worker starts with now
        t0 = time.monotonic()
        if not a.no_transport:
            self.transport()
        rounds, cap_rounds, self.report["capacity"] = self.pipeline(self.cfg, "pipeline")
        if self.report["capacity"] is None:
            del self.report["capacity"]
        baseline = self.pipeline(self.baseline_cfg, "baseline") if self.baseline_cfg is not None else None
        offline, replay = self.offline(rounds)
        self.figures(rounds, cap_rounds, offline, replay)
        if baseline is not None:
            self.baseline_figures(*baseline, offline)
        self.report["bench_seconds"] = round(time.monotonic() - t0, 1)
        end = git_info(Path(__file__).resolve().parents[2])
        if end.get("fingerprint") != self.report["git"].get("fingerprint"):
            self.report["git"]["changed_during_run"] = (
                f"the checkout changed while the bench ran (commit {end.get('commit')} at the end): actors started "
                "at different times may have run different code")
        self.write()
        return 0

    def transport(self) -> None:
        from . import transport

        bar = self.bar("broker hop", 2)
        try:
            self.report["transport"] = transport.measure(self.args.hop_rate, self.args.transport_seconds,
                                                         self.args.transport_seconds, verbose=self.args.verbose)
        except Exception as exc:  # noqa: BLE001 - reported as not measured
            self.report["transport"] = {"missing": {"latency": f"failed: {exc}", "throughput": f"failed: {exc}"}}
        bar.update(2)
        bar.close()
        lat = self.report["transport"].get("latency", {})
        self.say(f"broker hop: p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms; "
                 f"{self.report['transport'].get('throughput', {}).get('frames_per_s')} frames/s flat out")

    def pipeline(self, cfg, name: str) -> tuple[list, list, dict | None]:
        """Clip rounds (and the capacity search) on the pipeline ``cfg``; its files go under ``out/name``."""
        from .capacity import search
        from .metrics import round_figures
        from .sampler import Sampler
        from .session import BenchSession

        sampler = Sampler().start()
        session = BenchSession(cfg, self.template, self.out / name, sampler, verbose=self.args.verbose)
        rounds, cap_rounds, capacity = [], [], None
        tag = "" if name == "pipeline" else f"{name}-"
        bar = self.bar(f"starting the {name}", 1, "")
        try:
            session.start()
            bar.update(1)
            bar.close()
            for i, clip in enumerate(self.clips, 1):
                rr = self._round(session, f"{tag}r{i:02d}-{clip.slug}", clip, self.args.streams,
                                 self.args.round_timeout, keep_speech=True)
                rounds.append(rr)
            if self.args.capacity:
                def step(n):
                    rr = self._round(session, f"{tag}c{n:02d}", self.cap_clip, n, self.cap_opts.max_tail_lag + 10.0)
                    fig = round_figures(rr, self.worker.name)
                    cap_rounds.append((rr, fig))
                    return fig

                capacity = search(step, self.cap_opts, self.cap_clip.name)
                self.say(f"{name} capacity: {capacity['capacity']} stream(s) ({capacity['bound']})")
        finally:
            bar.close()
            session.stop()
            sampler.close()
            logs = self.out / ("logs" if name == "pipeline" else f"logs-{name}")
            logs.mkdir(exist_ok=True)
            for actor, text in session.logs().items():
                (logs / f"{actor}.log").write_text(text + "\n", encoding="utf-8")
        return rounds, cap_rounds, capacity

    def baseline_figures(self, rounds, cap_rounds, capacity, offline) -> None:
        """The baseline's figures beside the measured pipeline's (:mod:`.compare`)."""
        from .compare import comparison
        from .metrics import overall_figures, round_figures

        w = self.baseline_cfg.workers[0]
        figs = [round_figures(rr, w.name, offline.get(rr.clip.name)) for rr in rounds]
        self.report["baseline"] = {
            "config": self.args.baseline, "worker_options": dict(w.options), "batch": w.batch,
            "rounds": figs, "overall": overall_figures(rounds, figs, offline) if rounds else None,
            "capacity": capacity, "capacity_rounds": [round_figures(rr, w.name) for rr, _ in cap_rounds],
            "worker_info": dict(rounds[-1].worker_info) if rounds else None}
        self.report["comparison"] = comparison(self.report)

    def _round(self, session, label, clip, n, tail_timeout, keep_speech=False):
        from .metrics import latency_stats

        bar = self.bar(f"{label} x{n}", clip.seconds)
        last = [0.0]

        def progress(sec):
            sec = min(sec, bar.total)
            if sec - last[0] >= 0.5:
                bar.update(sec - last[0])
                last[0] = sec

        rr = session.run_round(label, clip, n, tail_timeout, keep_speech=keep_speech, progress=progress)
        bar.close()
        lat = latency_stats([c.emitted - c.wall0 - w[1] for r in rr.streams for c in r.commits for w in c.words])
        lat = f"p50 {lat['p50']:.2f} s, p90 {lat['p90']:.2f} s" if lat else "no committed words"
        self.say(f"{label}: {n} stream(s) of {clip.name}: {lat}"
                 + (" (timed out)" if rr.timed_out else ""))
        return rr

    def offline(self, rounds) -> tuple[dict, dict]:
        from asr_core.base import BackendError

        from .offline import decode_replay, load_backend, offline_clip

        if self.args.no_offline:
            why = {"wer": "skipped (--no-offline)"}
            return {c.name: {"wer": None, "missing": why} for c in self.clips}, {}
        bar = self.bar("offline pass and decode replay", len(self.clips) * 2, "steps")
        try:
            asr = load_backend(self.worker)
        except (BackendError, ValueError) as exc:
            bar.close()
            why = {"wer": f"the backend could not be loaded in-process: {exc}"}
            return {c.name: {"wer": None, "missing": why} for c in self.clips}, {}
        offline, replay = {}, {}
        for clip in self.clips:
            offline[clip.name] = offline_clip(asr, clip)
            bar.update(1)
        for rr in rounds:
            events = rr.streams[0].speech_events
            replay[rr.clip.name] = decode_replay(asr, events, self.worker)
            bar.update(1)
        bar.close()
        return offline, replay

    def figures(self, rounds, cap_rounds, offline, replay) -> None:
        from .metrics import _r, overall_figures, round_figures

        figs = [round_figures(rr, self.worker.name, offline.get(rr.clip.name)) for rr in rounds]
        r = self.report
        r["rounds"] = figs
        r["overall"] = overall_figures(rounds, figs, offline) if rounds else None
        r["capacity_rounds"] = [round_figures(rr, self.worker.name, offline.get(rr.clip.name)) for rr, _ in cap_rounds]
        from .compare import comparison

        r["comparison"] = comparison(r)
        last = (rounds or [rr for rr, _ in cap_rounds])[-1:]
        r["worker_info"] = dict(last[0].worker_info) if last else None
        r["offline"] = offline
        r["decode_replay"] = _sum_replay(replay)
        r["decode_replay_per_clip"] = replay
        offs = [o for o in offline.values() if o.get("cpu_s") is not None]
        audio = sum(c.seconds for c in self.clips if offline.get(c.name, {}).get("cpu_s") is not None)
        r["offline_cost"] = ({"cpu_s": _r(sum(o["cpu_s"] for o in offs)), "audio_s": _r(audio, 3),
                              "cpu_per_audio_s": _r(sum(o["cpu_s"] for o in offs) / audio)} if offs and audio
                             else {"cpu_per_audio_s": None, "missing": {"cpu_per_audio_s": "no offline pass"}})

    def write(self) -> None:
        from .plot import plot_latency
        from .report import collect_missing, write_json, write_markdown
        from .targets import evaluate

        r = self.report
        r["targets"] = evaluate(r)
        r["missing"] = collect_missing({k: v for k, v in r.items() if k != "missing"})
        png = self.out / "latency.png"
        try:
            plot_latency(r, png)
            r["plot"] = png.name
        except Exception as exc:  # noqa: BLE001 - the figures are still written
            r["plot"] = None
            r["missing"].append(f"plot: {type(exc).__name__}: {exc}")
        write_json(r, self.out / "bench.json")
        write_markdown(r, self.out / "bench.md")
        for t in r["targets"]:
            mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            print(f"{t['what']:<55} {str(t['value']):>10}  {t['target']:<10} {mark} {t['note']}")
        print(f"voxpipe bench: wrote {self.out / 'bench.json'}, {self.out / 'bench.md'}, {png}")


def _sum_replay(replay: dict) -> dict:
    from .metrics import _r

    done = [x for x in replay.values() if x.get("decodes")]
    if not done:
        return {"decodes": None, "missing": {"decodes": "no decode replay (--no-offline, or no speech)"}}
    dec = sum(x["decodes"] for x in done)
    audio = sum(x["decoded_audio_s"] for x in done)
    cpu = sum(x["cpu_s"] for x in done)
    speech = sum(x["speech_s"] for x in done)
    return {"decodes": dec, "flushes": sum(x["flushes"] for x in done), "speech_s": _r(speech, 3),
            "decoded_audio_s": _r(audio, 3), "decoded_audio_per_decode_s": _r(audio / dec, 3),
            "cpu_s": _r(cpu), "cpu_per_decode_s": _r(cpu / dec),
            "cpu_per_speech_s": _r(cpu / speech) if speech else None}
