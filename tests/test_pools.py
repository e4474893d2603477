"""Worker pools with the real tiny.en workers: each stream decoded by one worker, a rolling restart, admission.

Every test runs the real processes on a private bus (tests/procs.py): broker, VAD, the
dispatcher, the workers (a pool ``ref`` of one worker is the one-worker run the pool of two
is compared with, on the same audio at the same time), a JSONL sink and the captures.
Transcripts are read from the sink's file as any subscriber would (late messages of an
older assignment epoch dropped: tests/pool_checks.py).
"""

from __future__ import annotations

import signal
import time

import pytest

from apps.bench.evaluation import normalize, reference_text, wer
from pipeline import messages as m
from tests import clips
from tests.pool_checks import commits, handovers, join_clips, jsonl, near, repeated, text, uncovered, words
from tests.procs import DATA, Pipeline

pytestmark = [pytest.mark.model, pytest.mark.realtime, pytest.mark.alone]  # 6 to 12 streams on 2 cores

# six streams of the clean clips (two of them twice, as streams of their own)
SIX = {"s1": "history", "s2": "kitchen", "s3": "meeting", "s4": "weather", "s5": "history", "s6": "weather"}
# each clip's first sentences (11 to 13 s): enough words per stream for a WER, half the time of whole clips
SIX_SENTENCES = {"history": 2, "kitchen": 2, "meeting": 3, "weather": 3}
HANDOVER_SPAN = 6.0  # seconds either side of a handover within which the rolled text should match the undisturbed one


def worker_yaml(name: str, replicas: int = 1, **extra) -> str:
    lines = [f"  - name: {name}", "    model: tiny.en", "    language: en", "    partials: false",
             f"    replicas: {replicas}"] + [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def sources_yaml(items) -> str:
    """(name, wav, speed) -> the sources section."""
    return "sources:\n" + "".join(f"  - name: {n}\n    input: file:{w}\n    speed: {s}\n" for n, w, s in items)


def start_pipeline(p: Pipeline, workers: list[tuple[str, str | None]], sink: bool = True) -> None:
    """VAD, dispatcher, the workers ((entry, replica) pairs) and the sink, each ready before going on."""
    names = ["vad", "dispatcher"]
    p.start("vad", ["vad", "--config", str(p.cfg)])
    p.start("dispatcher", ["dispatcher", "--config", str(p.cfg)])
    for entry, replica in workers:
        name = f"{entry}-{replica}" if replica else entry
        names.append(name)
        p.start(name, ["worker", "--config", str(p.cfg), "--name", entry] + (["--replica", replica] if replica else []))
    if sink:
        p.start("out", ["sink", "--config", str(p.cfg), "--name", "out"])
        names.append("out")
    p.wait_ready(*names, timeout=180)


def wait_for(predicate, p: Pipeline, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f}s\n{p.logs()}")
        time.sleep(0.2)


def ended(records, pool, stream) -> bool:
    return any(r["kind"] == "eos" and r["topic"] == f"transcript.{pool}.{stream}" for r in records)


# -- a pool of two, six streams ---------------------------------------------------------------------------------
def test_a_pool_of_two_transcribes_each_of_six_streams_exactly_once(tmp_path):
    out = tmp_path / "t.jsonl"
    cut = {c: clips.sentences(c, n, tmp_path) for c, n in SIX_SENTENCES.items()}  # clip -> (wav, reference)
    with Pipeline(tmp_path) as p:
        # at 0.7 x real time: two pools of tiny.en on 6 streams fit on a 2-core machine
        p.cfg = p.write_config(sources_yaml((s, cut[c][0], 0.7) for s, c in SIX.items()) + "workers:\n"
                               + worker_yaml("ref") + worker_yaml("duo", 2) + f"""
sinks:
  - name: out
    output: jsonl:{out}
""")
        start_pipeline(p, [("ref", None), ("duo", "1"), ("duo", "2")])
        for s in SIX:  # each waits for the VAD, the dispatcher and every worker, then starts at once
            p.start(s, ["capture", "--config", str(p.cfg), "--name", s])
        wait_for(lambda: all(ended(jsonl(out), pool, s) for pool in ("ref", "duo") for s in SIX), p, 240,
                 "eos of every stream from both pools")
        duo = {n: p.wait_heartbeat(n, lambda h: True) for n in ("duo-1", "duo-2")}
        disp = p.wait_heartbeat("dispatcher", lambda h: True)
    recs = jsonl(out)
    holders = {}
    for s in SIX:
        cs = commits(recs, "duo", s)
        assert cs, f"nothing committed for {s}"
        holders[s] = {c["worker"] for c in cs}
        assert len(holders[s]) == 1, f"{s} was committed by {holders[s]}"  # one worker, all along
        assert {c["epoch"] for c in cs} == {1}
        ws = words(recs, "duo", s)
        assert not repeated(ws), f"{s}: a word committed twice: {repeated(ws)}"
    # most free capacity first: three streams each (they arrive one after the other)
    assert sorted(sum(1 for h in holders.values() if h == {n}) for n in ("duo-1", "duo-2")) == [3, 3], holders
    # no audio was decoded twice: the two workers together received what the one worker of ref received
    audio = sum(hb.counters["audio_seconds"] for hb in duo.values())
    speech = sum(clips.SENTENCE_ENDS[c][SIX_SENTENCES[c] - 1] for c in SIX.values())
    assert audio > 0.6 * speech and disp.counters["assigned"] == 12 and disp.counters["failovers"] == 0
    scores = {s: (wer(cut[c][1], text(recs, "ref", s)), wer(cut[c][1], text(recs, "duo", s))) for s, c in SIX.items()}
    print("\nWER one worker / pool of two: " + ", ".join(f"{s} {a:.3f}/{b:.3f}" for s, (a, b) in scores.items()))
    for s, (one, two) in scores.items():
        if two > one:
            print(f"{s} one worker:  {text(recs, 'ref', s)}\n{s} pool of two: {text(recs, 'duo', s)}")
    # real-time runs on two shared cores differ by a few words, more often against the pool: its workers hold three
    # streams each, the one worker six, and a less loaded worker decodes with shorter chunks (asr_core.streaming's
    # load rule), which now and then mishear a word at a chunk's edge (meeting's "twelve percent" as "well percent";
    # likely, not proven). Measured in five runs (two in full suite runs, three alone): per stream -2 to +4 words,
    # the six together -2 to +6. So each stream may be four words off and the six together nine: a pool that hears
    # less (a stream resumed without its context, a lost sentence) costs far more.
    extra = 0.0
    for s, (one, two) in scores.items():
        ref_words = len(normalize(cut[SIX[s]][1]).split())  # the words WER counts
        assert two <= one + 4.0 / ref_words + 1e-9, f"{s}: WER {two:.3f} with the pool of two, {one:.3f} alone"
        extra += (two - one) * ref_words
    assert extra <= 9.0 + 1e-6, f"the pool of two made {extra:.0f} more word errors than one worker in all"


# -- a rolling restart ------------------------------------------------------------------------------------------
def test_a_rolling_restart_of_the_pool_loses_no_word(tmp_path):
    clip = tmp_path / "long.wav"
    ref_text = join_clips([DATA / "weather.wav", DATA / "kitchen.wav", DATA / "meeting.wav"], clip)  # 79 s
    out = tmp_path / "t.jsonl"
    with Pipeline(tmp_path) as p:
        p.cfg = p.write_config(sources_yaml([("long", clip, 2.0)]) + "workers:\n" + worker_yaml("ref")
                               + worker_yaml("main", 2) + f"""
sinks:
  - name: out
    output: jsonl:{out}
""")
        start_pipeline(p, [("ref", None), ("main", "1"), ("main", "2")])
        p.start("long", ["capture", "--config", str(p.cfg), "--name", "long"])
        wait_for(lambda: len(commits(jsonl(out), "main", "long")) >= 3, p, 60, "three commits")
        restarted = []
        for _ in range(2):  # SIGTERM the worker holding the stream, start it again, then the other one
            holder = commits(jsonl(out), "main", "long")[-1]["worker"]
            assert p.stop(holder, timeout=30) == 0, p.logs()
            restarted.append(holder)
            p.start(holder, ["worker", "--config", str(p.cfg), "--name", "main", "--replica", holder[-1]])
            p.wait_ready(holder, timeout=120)
            wait_for(lambda h=holder: commits(jsonl(out), "main", "long")[-1]["worker"] != h, p, 60,
                     f"commits from the worker after {holder}")
        wait_for(lambda: ended(jsonl(out), "main", "long") and ended(jsonl(out), "ref", "long"), p, 120,
                 "the end of the stream")
        disp = p.wait_heartbeat("dispatcher", lambda h: True)
        sink = p.wait_heartbeat("out", lambda h: True)
        logs = f"dispatcher: {disp.counters}\nsink: {sink.counters}\n{p.logs()}"  # for a failure's message
    recs = jsonl(out)
    assert sorted(restarted) == ["main-1", "main-2"], restarted
    assert disp.counters["handoffs"] >= 2 and disp.counters["failovers"] == 0, disp.counters
    assert not [r for r in recs if r["kind"] == "error"], "a handover is not an error"
    ws, ref_ws = words(recs, "main", "long"), words(recs, "ref", "long")
    assert len({w[3] for w in ws}) == 2
    assert not repeated(ws), repeated(ws)
    assert not uncovered(ref_ws, ws), (f"lost in the restarts: {uncovered(ref_ws, ws)}; handovers at {handovers(ws)}"
                                       f"\n{logs}")
    # Two live workers on two cores never decode at quite the same moments, so the two texts differ here and
    # there wherever the clip is (0.02-0.03 WER apart between runs): what a handover could spoil is checked
    # where it happened, the whole text only for a loss of context that lasts (a prompt not carried over).
    at = handovers(ws)
    local = wer(near(ref_ws, at, HANDOVER_SPAN), near(ws, at, HANDOVER_SPAN))
    one, rolled = wer(ref_text, text(recs, "ref", "long")), wer(ref_text, text(recs, "main", "long"))
    print(f"\nrolling restart of {restarted}: WER {rolled:.3f} against {one:.3f} undisturbed; "
          f"{local:.3f} apart within {HANDOVER_SPAN:.0f} s of the handovers at {at}")
    detail = (f"rolled: {text(recs, 'main', 'long')}\nundisturbed: {text(recs, 'ref', 'long')}\n"
              f"handovers at {at}")
    assert local <= 0.1, detail
    assert rolled <= one + 0.04, detail


# -- admission --------------------------------------------------------------------------------------------------
def test_a_full_pool_refuses_the_third_stream_within_a_second_and_serves_the_first_two(tmp_path):
    clip = DATA / "weather.wav"
    out = tmp_path / "t.jsonl"
    with Pipeline(tmp_path) as p:
        p.cfg = p.write_config(sources_yaml([(s, clip, 2.0) for s in ("s1", "s2", "s3")]) + "workers:\n"
                               + worker_yaml("asr", slots=2) + f"""
dispatcher:
  enabled: true
sinks:
  - name: out
    output: jsonl:{out}
""")
        start_pipeline(p, [("asr", None)])
        sub = p.subscribe("audio.s3", "transcript.asr.s3", timeout=60)
        for s in ("s1", "s2"):
            p.start(s, ["capture", "--config", str(p.cfg), "--name", s])
        p.wait_heartbeat("dispatcher", lambda h: len(h.info.get("streams", {})) == 2, timeout=60)
        p.start("s3", ["capture", "--config", str(p.cfg), "--name", "s3"])
        first_audio = refusal = None
        for msg in sub:
            now = time.monotonic()
            if isinstance(msg, m.Audio) and first_audio is None:
                first_audio = now
            elif isinstance(msg, m.Error):
                refusal = (now, msg)
                break
        assert first_audio is not None and refusal is not None, p.logs()
        capture = p.wait_heartbeat("s3", lambda h: h.counters.get("refusals", 0) >= 1, timeout=10)
        wait_for(lambda: ended(jsonl(out), "asr", "s1") and ended(jsonl(out), "asr", "s2"), p, 90, "s1 and s2")
        disp = p.wait_heartbeat("dispatcher", lambda h: True)
        p.procs["s3"].signal(signal.SIGTERM)
        wait_for(lambda: ended(jsonl(out), "asr", "s3"), p, 30, "the refused stream's eos")
    at, err = refusal
    print(f"\nrefused {at - first_audio:.2f}s after the stream's first frame: {err.message}")
    assert err.code == m.POOL_FULL and at - first_audio < 1.0
    assert "refused" in p.procs["s3"].log_path.read_text() and capture.info["refused_by"] == ["asr"]
    assert disp.counters["streams_refused"] == 1
    recs = jsonl(out)
    assert not commits(recs, "asr", "s3")
    for s in ("s1", "s2"):
        assert not [r for r in recs if r["kind"] == "error" and r["stream"] == s]
        score = wer(reference_text(clip), text(recs, "asr", s))
        assert score <= 0.25, (s, text(recs, "asr", s))
