"""Late subscribers: the transcript so far from a sink's snapshot, then the live commits, no gap, no duplicate."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import msgpack
import pytest
import zmq

from pipeline import messages as m
from pipeline.bus import Publisher, Subscriber, handshake
from pipeline.client import subscribe
from pipeline.snapshot import History, Merger, answer, fetch
from tests.procs import ROOT, Pipeline, Vouching, free_port

WALL0 = 1_700_000_000.0


def commit(seq: int, stream: str = "s1", worker: str = "asr", text: str | None = None) -> m.Commit:
    return m.Commit(stream=stream, seq=seq, beg=float(seq), end=seq + 0.5, text=text or f" w{seq}", words=[],
                    worker=worker, backend="test", model="none", emitted=WALL0 + seq + 1, wall0=WALL0)


def eos(seq: int, stream: str = "s1", worker: str = "asr") -> m.EndOfStream:
    return m.EndOfStream(stream=stream, seq=seq, t=seq + 1.0, worker=worker)


# -- the pieces ----------------------------------------------------------------------------------------------
def test_history_keeps_transcripts_per_topic_bounded():
    h = History(max_topics=2, max_per_topic=3)
    for i in range(5):
        h.add("transcript.asr.s1", commit(i))
    h.add("partial.asr.s1", m.Partial(stream="s1", seq=0, text="x", worker="asr"))  # not kept
    h.add("transcript.asr.s2", commit(0, "s2"))
    h.add("transcript.asr.s3", commit(0, "s3"))  # s1 is the least recently active: forgotten
    assert [t for t, _ in h.select(["transcript."])] == ["transcript.asr.s2", "transcript.asr.s3"]
    h.add("transcript.asr.s3", commit(1, "s3"))
    assert [msg.seq for _, msg in h.select(["transcript.asr.s3"])] == [0, 1]


def test_bad_requests_get_an_error_reply():
    h = History()
    for request in (b"\xc1", msgpack.packb({"v": 2, "prefixes": ["x"]}), msgpack.packb({"v": 1, "prefixes": "x"}),
                    msgpack.packb({"v": 1, "prefixes": [1]}), msgpack.packb([1]), b"\x00" * 5000):
        head = msgpack.unpackb(answer(h, request)[0])
        assert head["kind"] == "error", request


def test_merger_skips_duplicates_and_finds_holes_and_restarts():
    snap = [("transcript.asr.s1", commit(i)) for i in range(3)]
    mg = Merger(snap)
    assert mg.check("transcript.asr.s1", commit(1)) == "dup"
    assert mg.check("transcript.asr.s1", commit(2)) == "dup"
    assert mg.check("transcript.asr.s1", commit(3)) == "new"
    assert mg.check("transcript.asr.s1", commit(4)) == "new"
    assert mg.check("transcript.asr.s2", commit(7, "s2")) == "new"  # a topic the snapshot did not have

    mg = Merger(snap)
    assert mg.check("transcript.asr.s1", commit(5)) == 3  # 3 and 4 are missing: fetch them again
    fresh = snap + [("transcript.asr.s1", commit(i)) for i in (3, 4)]
    assert [msg.seq for _, msg in mg.fill("transcript.asr.s1", 3, 5, fresh)] == [3, 4]

    # a worker that restarted after the snapshot: its seq 0 is new, not a duplicate of the old seq 0
    mg = Merger(snap)
    assert mg.check("transcript.asr.s1", commit(0, text=" after a restart")) == "new"
    # the snapshot holds two epochs (a restart before it): only the last one is matched
    two = snap + [("transcript.asr.s1", commit(0, text=" again"))]
    mg = Merger(two)
    assert mg.check("transcript.asr.s1", commit(0, text=" again")) == "dup"
    assert mg.check("transcript.asr.s1", commit(1, text=" again 1")) == "new"


# -- with a real sink ---------------------------------------------------------------------------------------
class FakeWorker(threading.Thread):
    """Publishes commits on several topics at a steady rate, then eos on each, as a worker would
    (with heartbeats listing its streams, several times a second)."""

    def __init__(self, bus, streams=("s1", "s2"), n: int = 400, rate: float = 400.0):
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.pub = Publisher(self.ctx, bus)
        sub = Subscriber(self.ctx, bus, [])
        assert handshake(self.pub, sub, "fake-worker", timeout=10.0)
        sub.close()
        self.streams, self.n, self.rate = streams, n, rate
        self.published = 0
        self.halfway = threading.Event()
        self.vouching = Vouching(self.pub.send)

    def send(self, topic, msg):
        self.vouching.before(topic, msg)
        self.pub.send(topic, msg)
        self.vouching.after(topic, msg)

    def run(self):
        t0 = time.monotonic()
        for i in range(self.n):
            for s in self.streams:
                self.send(m.transcript_topic("asr", s), commit(i, s))
            if i % 20 == 19:
                self.vouching.beat("asr")
            self.published = i + 1
            if i == self.n // 3:
                self.halfway.set()
            time.sleep(max(0.0, t0 + (i + 1) / self.rate - time.monotonic()))
        for s in self.streams:
            self.send(m.transcript_topic("asr", s), eos(self.n, s))

    def close(self):
        self.pub.close()
        self.ctx.term()


@pytest.fixture
def sink(tmp_path):
    with Pipeline(tmp_path) as p:
        p.snapshot = f"tcp://127.0.0.1:{free_port()}"
        p.cfg = p.write_config(f"""
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{tmp_path}/t.jsonl
    snapshot: {p.snapshot}
""")
        p.start("out", ["sink", "--config", str(p.cfg), "--name", "out"])
        p.wait_ready("out")
        yield p


def test_a_late_subscriber_gets_everything_once(sink):
    worker = FakeWorker(sink.bus.config())
    worker.start()
    try:
        assert worker.halfway.wait(10)
        joined_at = worker.published
        late = subscribe("transcript.", config=str(sink.cfg), from_start=True, stop_after_eos=2, timeout=20)
        got: dict[str, list[int]] = {}
        for topic, msg in late.items():
            got.setdefault(topic, []).append(msg.seq)
            assert msg.text == f" w{msg.seq}" if isinstance(msg, m.Commit) else True
        worker.join(20)
    finally:
        worker.close()
    print(f"\nlate subscriber: joined after {joined_at} of {worker.n} commits per stream; got every seq once "
          f"({late.duplicates} live duplicate(s) skipped)")
    assert joined_at < worker.n
    assert got == {f"transcript.asr.{s}": list(range(worker.n + 1)) for s in ("s1", "s2")}
    assert late.gaps == 0 and late.rejected == 0


def test_restarted_sink_and_restarted_worker_are_in_the_snapshot(sink):
    worker = FakeWorker(sink.bus.config(), streams=("s1",), n=5, rate=1000)
    worker.run()  # seq 0-4 and eos 5
    sink.wait_heartbeat("out", lambda h: h.counters["written"] >= 6)
    assert sink.stop("out") == 0
    sink.start("out", ["sink", "--config", str(sink.cfg), "--name", "out"])  # reloads its JSONL
    sink.wait_ready("out")
    restarted = FakeWorker(sink.bus.config(), streams=("s1",), n=3, rate=1000)  # a restarted worker: seq from 0
    restarted.run()
    sink.wait_heartbeat("out", lambda h: h.counters["written"] >= 4)
    worker.close()
    restarted.close()
    snap = fetch(zmq.Context.instance(), sink.snapshot, ["transcript.asr."], sink.bus.config())
    assert [(msg.kind, msg.seq) for _, msg in snap] == \
        [("commit", i) for i in range(5)] + [("eos", 5)] + [("commit", i) for i in range(3)] + [("eos", 3)]


def test_listen_from_start(sink):
    worker = FakeWorker(sink.bus.config(), streams=("s1",), n=4, rate=1000)
    worker.run()
    worker.close()
    sink.wait_heartbeat("out", lambda h: h.counters["written"] >= 5)
    res = subprocess.run([sys.executable, "-m", "apps.cli", "listen", "--from-start", "--config", str(sink.cfg),
                          "--timeout", "1"], capture_output=True, text=True, cwd=str(ROOT), timeout=30)
    lines = res.stdout.splitlines()
    assert res.returncode == 0, res.stderr
    assert [line.split()[2] for line in lines] == ["commit"] * 4 + ["eos"]
    assert "'w0'" in lines[0] and "'w3'" in lines[3]
