"""pipeline.client.subscribe, `voxpipe listen` and examples/subscribe_transcripts.py against a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pipeline import messages as m
from pipeline.client import subscribe
from tests.procs import ROOT, BusPublisher, Pipeline

WALL0 = 1_700_000_000.0


def commit(seq: int, beg: float, end: float, text: str, stream: str = "s1", emitted: float | None = None) -> m.Commit:
    return m.Commit(stream=stream, seq=seq, beg=beg, end=end, text=text, words=[[beg, end, text]], worker="asr",
                    backend="faster-whisper", model="tiny.en", emitted=emitted or WALL0 + end + 0.5, wall0=WALL0)


def eos(seq: int, stream: str = "s1") -> m.EndOfStream:
    return m.EndOfStream(stream=stream, seq=seq, t=9.0, worker="asr")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    with Pipeline(tmp_path_factory.mktemp("client")) as p:
        yield p


def test_subscribe_yields_typed_messages_and_counts_rejects_and_gaps(pipe):
    sub = subscribe("transcript.", xpub=pipe.bus.xpub, timeout=10, stop_after_eos=True)
    with BusPublisher(pipe.bus, vouch=True) as pub:
        pub.wait_subscribed("transcript.")
        pub.send("transcript.asr.s1", commit(0, 0.0, 1.0, " one"))
        pub.send("transcript.asr.s1", commit(1, 1.0, 2.0, " two"))
        pub.send_raw([b"transcript.asr.s1", b"\xc1"])  # not msgpack
        pub.send_raw([b"transcript.asr.s1", m.encode("transcript.asr.s2", commit(2, 2.0, 3.0, " x", "s2"))[1]])
        pub.send("transcript.asr.s1", commit(5, 5.0, 6.0, " six"))  # seq 2, 3, 4 lost
        pub.send("transcript.asr.s1", eos(6))
        pub.send("transcript.asr.s1", commit(7, 7.0, 8.0, " after eos: not read"))
        got = list(sub)
    assert [type(x) for x in got] == [m.Commit, m.Commit, m.Commit, m.EndOfStream]
    assert [x.text for x in got[:3]] == [" one", " two", " six"]
    assert got[0].latency == pytest.approx(0.5)
    assert sub.rejected == 2 and sub.gaps == 3 and sub.received == 4
    assert sub.closed


def test_restarted_sender_is_not_a_gap_and_timeout_ends_iteration(pipe):
    sub = subscribe("transcript.asr.", xpub=pipe.bus.xpub, timeout=0.5)
    with BusPublisher(pipe.bus, vouch=True) as pub:
        pub.wait_subscribed("transcript.asr.")
        for seq in (0, 1, 2, 0, 1):  # the worker restarted after seq 2
            pub.send("transcript.asr.s1", commit(seq, seq, seq + 1.0, f" {seq}"))
        t0 = time.monotonic()
        got = list(sub)
    assert len(got) == 5 and sub.gaps == 0
    assert 0.4 < time.monotonic() - t0 < 5 and sub.closed


def test_sync_then_stop_after_n_eos(pipe):
    with subscribe(["transcript.", "speech."], xpub=pipe.bus.xpub, stop_after_eos=2, timeout=10,
                   xsub=pipe.bus.xsub) as sub:
        assert sub.sync(5)
        with BusPublisher(pipe.bus, vouch=True) as pub:
            pub.wait_subscribed("speech.")
            pub.send("speech.a", m.EndOfStream(stream="a", seq=0))
            pub.send("transcript.asr.b", eos(0, "b"))
            pub.send("transcript.asr.c", commit(0, 0, 1, " late"))
            topics = [t for t, _ in sub.items()]
    assert topics == ["speech.a", "transcript.asr.b"]


def run(argv, **kw) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT), **kw)


def test_listen_prints_readable_lines_and_json(pipe):
    vox = [sys.executable, "-m", "apps.cli", "listen"]
    # distinct prefixes: the broker forwards only the first subscription to a given prefix
    readable = run(vox + ["speech.s1", "transcript.", "--xpub", pipe.bus.xpub, "--count", "3"])
    js = run(vox + ["speech.", "--json", "--xpub", pipe.bus.xpub, "--count", "2"])
    try:
        with BusPublisher(pipe.bus, vouch=True) as pub:
            for prefix in ("transcript.", "speech.s1", "speech."):
                pub.wait_subscribed(prefix)
            pub.send("speech.s1", m.Audio(stream="s1", seq=0, t=1.5, wall0=WALL0, pcm=b"\x00\x01" * 1600))
            pub.send("speech.s1", m.SpeechEnd(stream="s1", seq=1, t=1.7))
            pub.send("transcript.asr.s1", commit(0, 0.5, 1.7, " hello world"))
            out, err = readable.communicate(timeout=10)
            js_out, _ = js.communicate(timeout=10)
    finally:
        for p in (readable, js):
            p.kill()
    lines = out.splitlines()
    assert readable.returncode == 0 and len(lines) == 3, err
    assert "speech.s1 audio t=1.500 0.100s 3200 bytes" in lines[0]
    assert "speech.s1 speech_end t=1.700" in lines[1]
    assert "transcript.asr.s1 commit" in lines[2] and "'hello world'" in lines[2] and "latency 0.50s" in lines[2]
    records = [json.loads(x) for x in js_out.splitlines()]
    assert records[0]["kind"] == "audio" and records[0]["pcm_bytes"] == 3200 and "pcm" not in records[0]
    assert records[1] == {**records[1], "kind": "speech_end", "t": 1.7, "topic": "speech.s1", "seq": 1}


def test_listen_from_start_needs_a_snapshot_endpoint(pipe):
    p = subprocess.run([sys.executable, "-m", "apps.cli", "listen", "--from-start", "--xpub", pipe.bus.xpub],
                       capture_output=True, text=True, timeout=20, cwd=str(ROOT))
    assert p.returncode == 3 and "serves snapshots" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_example_prints_commits_with_latency_until_eos(tmp_path):
    with Pipeline(tmp_path) as pipe:  # a broker of its own: the example's are the first subscriptions there
        example_prints_commits_with_latency_until_eos(pipe)


def example_prints_commits_with_latency_until_eos(pipe):
    ex = run([sys.executable, str(ROOT / "examples" / "subscribe_transcripts.py"), "--xpub", pipe.bus.xpub,
              "--timeout", "20"])
    try:
        with BusPublisher(pipe.bus, vouch=True) as pub:
            pub.wait_subscribed("transcript.")
            pub.wait_subscribed("status.")  # the heartbeats that vouch for the transcripts reach it too
            pub.send("transcript.asr.s1", commit(0, 0.0, 1.2, " the weather report", emitted=WALL0 + 1.2 + 0.75))
            pub.send("transcript.w2.s1", m.Commit(**{**commit(0, 0.0, 1.0, " other").__dict__, "worker": "w2"}))
            pub.send("transcript.asr.s1", eos(1))
            pub.send("transcript.w2.s1", m.EndOfStream(stream="s1", seq=1, worker="w2"))
            out, err = ex.communicate(timeout=20)
    finally:
        ex.kill()
    assert ex.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("asr/s1 [   0.00-   1.20] latency  0.75s  the weather report")
    assert "w2/s1" in lines[1] and "latency  0.50s" in lines[1]
    assert lines[2:4] == ["asr/s1 ended", "w2/s1 ended"]
    assert lines[4].startswith("2 commits")
