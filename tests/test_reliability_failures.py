"""Failures with the real tiny.en worker: a backend that fails on one stream, the broker killed and restarted,
every process stopped with SIGTERM mid-stream.

The worker's backend is :class:`tests.faulty_backend.FaultyWhisper`: the real model, except that marked
audio makes it raise.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from pipeline import messages as m
from tests.faulty_backend import OOM, RAISE, mark
from tests.procs import DATA, Pipeline

pytestmark = [pytest.mark.model, pytest.mark.realtime]

CLIP = DATA / "kitchen.wav"
CLIP_S = 25.2


def wer_of(text: str, clip=CLIP) -> float:
    from apps.bench.evaluation import reference_text, wer

    return wer(reference_text(clip), text)


def jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def sources(*items) -> str:
    """YAML for sources: (name, wav, speed)."""
    return "sources:\n" + "".join(f"  - name: {n}\n    input: file:{w}\n    speed: {s}\n" for n, w, s in items)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """broker, VAD, the faulty worker and a JSONL sink; sources are added to the config per test."""
    d = tmp_path_factory.mktemp("failures")
    boom = mark(CLIP.with_name("weather.wav"), d / "boom.wav", RAISE, seconds=8)
    oom = mark(CLIP.with_name("history.wav"), d / "oom.wav", OOM, seconds=8)
    with Pipeline(d) as p:
        p.cfg = p.write_config(sources(("good", CLIP, 2), ("boom", boom, 2), ("oom", oom, 2), ("steady", CLIP, 1.5))
                               + f"""
workers:
  - name: asr
    backend: tests.faulty_backend:FaultyWhisper
    model: tiny.en
    language: en
sinks:
  - name: out
    output: jsonl:{d}/t.jsonl
""")
        p.out = d / "t.jsonl"
        for name, role in (("vad", "vad"), ("asr", "worker"), ("out", "sink")):
            p.start(name, [role, "--config", str(p.cfg), "--name", name])
        p.wait_ready("vad", "asr", "out", timeout=120)
        yield p


def test_a_failing_stream_leaves_its_neighbour_complete(pipe):
    sub = pipe.subscribe("transcript.asr.", timeout=60)
    for name in ("good", "boom", "oom"):
        pipe.start(f"cap-{name}", ["capture", "--config", str(pipe.cfg), "--name", name])
    seen: dict[str, list] = {"good": [], "boom": [], "oom": []}
    ended = set()
    for _topic, msg in sub.items():
        seen[msg.stream].append(msg)
        if isinstance(msg, m.EndOfStream):
            ended.add(msg.stream)
            if ended == set(seen):
                break
    good = [x for x in seen["good"] if isinstance(x, m.Commit)]
    text = " ".join(c.text for c in good)
    errors = {s: [x.message for x in seen[s] if isinstance(x, m.Error)] for s in seen}
    hb = pipe.wait_heartbeat("asr", lambda h: h.counters["streams_active"] == 0, timeout=20)
    print(f"\nbackend failures: good stream WER {wer_of(text):.3f} over {good[-1].end:.1f}s; "
          f"errors: boom {len(errors['boom'])}, oom {len(errors['oom'])}, good {len(errors['good'])}; "
          f"worker stream_errors {hb.counters['stream_errors']}")
    assert not errors["good"] and wer_of(text) <= 0.25, text
    assert good[-1].end > CLIP_S - 2.0  # complete to the end
    assert errors["boom"] and all(e.startswith("RuntimeError: injected") for e in errors["boom"])
    assert errors["oom"] and all(e.startswith("MemoryError: injected") for e in errors["oom"])
    assert not [x for x in seen["boom"] + seen["oom"] if isinstance(x, m.Commit)]
    assert hb.counters["stream_errors"] == len(errors["boom"]) + len(errors["oom"])
    assert pipe.procs["asr"].alive()
    recs = jsonl(pipe.out)
    assert sum(r["kind"] == "error" for r in recs) == hb.counters["stream_errors"]


def test_the_broker_killed_and_restarted_mid_stream(pipe):
    sub = pipe.subscribe("transcript.asr.steady", timeout=60)
    pipe.start("cap-steady", ["capture", "--config", str(pipe.cfg), "--name", "steady"])
    commits, arrivals, reports = [], [], []
    restarted = None
    for _topic, msg in sub.items():
        if isinstance(msg, m.EndOfStream):
            break
        if isinstance(msg, m.Error):  # what was lost, said on the stream's transcript
            reports.append(msg.message)
            continue
        commits.append(msg)
        arrivals.append(time.monotonic())
        if len(commits) == 2 and restarted is None:
            pipe.procs["broker"].popen.kill()  # kill -9
            pipe.procs["broker"].wait(5)
            killed = time.monotonic()
            time.sleep(1.0)  # an outage of a second (everything published meanwhile is lost)
            pipe.start("broker2", ["broker"])
            restarted = time.monotonic()
    resumed = next(t for t, c in zip(arrivals, commits, strict=False) if t > restarted) - restarted
    after = [c for t, c in zip(arrivals, commits, strict=False) if t > restarted]
    hbs = {n: pipe.wait_heartbeat(n, lambda h: True) for n in ("vad", "asr")}
    text = " ".join(c.text for c in commits)
    print(f"\nbroker kill -9 at {killed - arrivals[0]:.1f}s after the first commit, restarted 1.0s later: "
          f"commits resumed {resumed:.2f}s after the restart ({len(after)} more, up to {commits[-1].end:.1f}s); "
          f"lost on the way in: vad {hbs['vad'].counters['gaps']} audio frame(s), "
          f"asr {hbs['asr'].counters['gaps']} message(s), {hbs['asr'].counters['stream_gaps']} of the stream; "
          f"WER {wer_of(text):.3f}; reported: {reports}")
    assert after and resumed < 10.0
    # gaps count every topic, heartbeats too (they carry no stream); stream_gaps, messages of the stream
    if hbs["asr"].counters["stream_gaps"]:
        assert any("lost on the way" in r for r in reports), reports
    assert [c.seq for c in commits] == sorted(c.seq for c in commits)  # the worker went on (no restart)
    assert commits[-1].end > CLIP_S - 2.0  # the stream went on to its end
    assert all(pipe.procs[n].alive() for n in ("vad", "asr", "out", "broker2"))
    assert wer_of(text) <= 0.4, text
    recs = [r for r in jsonl(pipe.out) if r["stream"] == "steady"]
    assert recs[-1]["kind"] == "eos" and {r["seq"] for r in recs if r["kind"] == "commit"} >= {c.seq for c in after}


def test_sigterm_mid_stream_keeps_every_commit(tmp_path):
    """SIGTERM to every process at once (what supervisord's stop of the group and honcho do)."""
    with Pipeline(tmp_path) as p:
        out = tmp_path / "t.jsonl"
        cfg = p.write_config(sources(("mic", CLIP, 1)) + f"""
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{out}
""")
        for name, role in (("vad", "vad"), ("asr", "worker"), ("out", "sink")):
            p.start(name, [role, "--config", str(cfg), "--name", name])
        p.wait_ready("vad", "asr", "out", timeout=120)
        sub = p.subscribe("transcript.", timeout=15)
        p.start("cap", ["capture", "--config", str(cfg), "--name", "mic"])
        seen = []
        for _topic, msg in sub.items():
            seen.append((time.time(), msg))
            if len([x for _, x in seen if isinstance(x, m.Commit)]) == 3:
                break
        cut = time.time()
        for proc in p.procs.values():
            proc.signal(signal.SIGTERM)
        for _topic, msg in sub.items():  # what still comes: the final flush, then the end of the stream
            seen.append((time.time(), msg))
            if isinstance(msg, m.EndOfStream):
                break
        codes = {name: proc.wait(20) for name, proc in p.procs.items()}
    recs = jsonl(out)
    written = {r["seq"]: r for r in recs if r["kind"] == "commit"}
    commits = [x for _, x in seen if isinstance(x, m.Commit)]
    missing = [c.seq for c in commits if c.seq not in written or written[c.seq]["text"] != c.text]
    flush = [r for r in recs if r["kind"] == "commit" and r["emitted"] >= cut]
    eos = [r for r in recs if r["kind"] == "eos"]
    print(f"\nSIGTERM at {eos[0]['t'] if eos else -1:.1f}s of audio: {len(commits)} commit(s) seen, all in the JSONL "
          f"({len(written)}), {len(flush)} from the final flush, exit codes {codes}")
    assert codes == {name: 0 for name in codes}, p.logs()
    assert not missing, missing
    assert flush and eos and recs[-1]["kind"] == "eos" and eos[0]["t"] < CLIP_S - 5
    assert flush[-1]["end"] > commits[2].end
