"""The sink actor on a real bus (no model): filtering, JSONL records, cue files, drain on SIGTERM."""

import json
import time

import pytest
import zmq

from pipeline import messages as m
from pipeline.bus import Publisher, Subscriber, handshake
from pipeline.config import BusConfig
from tests.procs import Pipeline, Vouching

BODY = """
workers:
  - name: a
  - name: b
sinks:
  - name: j
    output: jsonl:{dir}/t.jsonl
    workers: [a]
  - name: s
    output: srt:{dir}/t.srt
"""


def words(text, start):
    return [[round(start + 0.4 * i, 3), round(start + 0.4 * (i + 1), 3), " " + w] for i, w in enumerate(text.split())]


class FakeWorkers:
    """Publishes transcript messages as workers ``a`` and ``b`` would."""

    def __init__(self, xsub, xpub):
        self.ctx = zmq.Context()
        bus = BusConfig(xsub=xsub, xpub=xpub)
        self.pub = Publisher(self.ctx, bus)
        self.sub = Subscriber(self.ctx, bus, [])
        assert handshake(self.pub, self.sub, "fake-workers", timeout=10.0)
        self.vouching = Vouching(self.pub.send)  # heartbeats listing the streams, as real workers send

    def send(self, topic, msg):
        self.vouching.before(topic, msg)
        self.pub.send(topic, msg)
        self.vouching.after(topic, msg)

    def commit(self, worker, stream, text, start):
        topic = m.transcript_topic(worker, stream)
        w = words(text, start)
        self.send(topic, m.Commit(stream=stream, seq=self.pub.seq(topic), beg=w[0][0], end=w[-1][1],
                                  text="".join(x[2] for x in w), words=w, worker=worker,
                                  backend="fake", model="none", emitted=time.time(), wall0=time.time()))

    def partial(self, worker, stream, text):
        topic = m.partial_topic(worker, stream)
        self.send(topic, m.Partial(stream=stream, seq=self.pub.seq(topic), text=text, worker=worker))

    def eos(self, worker, stream):
        topic = m.transcript_topic(worker, stream)
        self.send(topic, m.EndOfStream(stream=stream, seq=self.pub.seq(topic), t=9.0, worker=worker))

    def close(self):
        self.pub.close()
        self.sub.close()
        self.ctx.term()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sink_filters_writes_and_drains_on_sigterm(tmp_path):
    with Pipeline(tmp_path / "run") as p:
        cfg = p.write_config(BODY.format(dir=tmp_path))
        p.start("j", ["sink", "--config", str(cfg), "--name", "j"])
        p.start("s", ["sink", "--config", str(cfg), "--name", "s", "--grace", "1.5"])
        p.wait_ready("j", "s")
        fake = FakeWorkers(p.bus.xsub, p.bus.xpub)
        try:
            fake.commit("a", "mic", "Hello there.", 0.0)
            fake.commit("b", "mic", "From the other worker", 0.0)
            fake.partial("a", "mic", "and th")
            fake.commit("a", "mic", "And then", 1.0)
            jsonl = tmp_path / "t.jsonl"
            assert wait_for(lambda: len(records(jsonl)) == 2), p.logs()
            # written and synced as they come: cue files hold the complete cues already
            assert wait_for(lambda: (tmp_path / "t.a.mic.srt").exists()), p.logs()
            assert "Hello there." in (tmp_path / "t.a.mic.srt").read_text()

            p.procs["j"].signal()
            p.procs["s"].signal()
            time.sleep(0.5)  # the sinks are draining: the workers' final flush still gets in
            fake.commit("a", "mic", "the end.", 1.8)
            fake.eos("a", "mic")
            assert p.wait_exit("j", 10) == 0
            assert p.wait_exit("s", 10) == 0  # b never sent eos: s gave up after its grace
        finally:
            fake.close()

    recs = records(jsonl)
    assert [(r["kind"], r["worker"], r["seq"]) for r in recs] == [
        ("commit", "a", 0), ("commit", "a", 1), ("commit", "a", 2), ("eos", "a", 3)]
    assert "".join(r["text"] for r in recs if r["kind"] == "commit") == " Hello there. And then the end."
    assert recs[0]["topic"] == "transcript.a.mic" and recs[0]["words"][0] == [0.0, 0.4, " Hello"]

    # two workers in the config: one cue file per worker and stream, all cues finalised
    srt_a = (tmp_path / "t.a.mic.srt").read_text()
    assert srt_a == ("1\n00:00:00,000 --> 00:00:00,800\nHello there.\n\n"
                     "2\n00:00:01,000 --> 00:00:02,600\nAnd then the end.\n")
    srt_b = (tmp_path / "t.b.mic.srt").read_text()
    assert srt_b == "1\n00:00:00,000 --> 00:00:01,600\nFrom the other worker\n"
    assert not (tmp_path / "t.srt").exists()


def test_sink_command_line_output_and_console(tmp_path):
    with Pipeline(tmp_path / "run") as p:
        txt = tmp_path / "t.txt"
        p.start("t", ["sink", f"txt:{txt}", "--workers", "b", "--name", "t"])
        p.start("c", ["sink", "console", "--name", "c"], stdout=open(tmp_path / "console.out", "wb"))
        p.wait_ready("t", "c")
        fake = FakeWorkers(p.bus.xsub, p.bus.xpub)
        try:
            fake.commit("a", "mic", "Not for the text file.", 0.0)
            fake.commit("b", "mic", "Only b here.", 0.0)
            fake.commit("b", "mic", "Still b.", 2.0)
            assert wait_for(lambda: txt.exists() and "Still b." in txt.read_text()), p.logs()
            fake.eos("a", "mic")
            fake.eos("b", "mic")
            t0 = time.monotonic()
            assert p.stop("t") == 0 and p.stop("c") == 0
            assert time.monotonic() - t0 < 8  # every stream had ended: no waiting for a final flush
        finally:
            fake.close()
    assert txt.read_text() == "Only b here. Still b.\n"
    # not a terminal: one plain line per commit, labelled since two pairs were seen
    assert (tmp_path / "console.out").read_text() == "Not for the text file.\n[b/mic] Only b here.\n[b/mic] Still b.\n"


@pytest.mark.parametrize("args, message", [
    (["mp3:x.mp3"], "is not console, jsonl:PATH"),
    (["jsonl:"], "needs a path"),
    (["console", "--workers", "bad.name"], "is not a worker name"),
])
def test_sink_bad_output_is_a_config_error(args, message):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "apps.cli", "sink", *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 3 and message in res.stderr


def test_a_sink_holds_at_most_its_streams_and_bytes_whatever_it_is_sent(tmp_path):
    """Budgets in memory: snapshot history and cue outputs keep ``max_streams`` pairs of ``max_stream_bytes``;
    a late subscriber's request is answered from what is kept (the sink does not grow for it)."""
    import psutil

    from pipeline.snapshot import fetch
    from tests.procs import free_port

    snapshot = f"tcp://127.0.0.1:{free_port()}"
    with Pipeline(tmp_path / "run") as p:
        cfg = p.write_config(f"""
workers:
  - name: a
sinks:
  - name: j
    output: jsonl:{tmp_path}/t.jsonl
    snapshot: {snapshot}
    max_streams: 4
    max_stream_bytes: 20000
  - name: s
    output: srt:{tmp_path}/t.srt
    max_streams: 4
    max_stream_bytes: 20000
""")
        p.start("j", ["sink", "--config", str(cfg), "--name", "j"])
        p.start("s", ["sink", "--config", str(cfg), "--name", "s"])
        p.wait_ready("j", "s")
        rss = {n: psutil.Process(p.procs[n].pid).memory_info().rss for n in ("j", "s")}
        fake = FakeWorkers(p.bus.xsub, p.bus.xpub)
        try:
            text = " ".join(["word"] * 60)  # 300 characters a commit, a commit a second of speech
            for i in range(1000):
                fake.commit("a", f"s{i % 12}", text, start=float(i))
                if i % 50 == 0:
                    fake.vouching.beat("a")  # a worker heartbeats about once a second
            p.wait_heartbeat("j", lambda h: h.counters["commits"] >= 1000, timeout=60)
            snap = fetch(zmq.Context.instance(), snapshot, ["transcript."], p.bus.config())
            hb = {n: p.wait_heartbeat(n, lambda h: h.counters["commits"] >= 1000) for n in ("j", "s")}
            grown = {n: psutil.Process(p.procs[n].pid).memory_info().rss - rss[n] for n in ("j", "s")}
        finally:
            fake.close()
    kept = sum(len(m.encode(t, x)[1]) for t, x in snap)
    print(f"\nbudget: 1000 commits on 12 streams; snapshot holds {len({t for t, _ in snap})} stream(s), "
          f"{kept} header bytes; sinks grew {grown['j'] >> 10} / {grown['s'] >> 10} KiB; "
          f"cue output refused {hb['s'].counters['refused']}")
    assert len({t for t, _ in snap}) == 4 and kept <= 4 * 20000
    assert hb["s"].counters["refused"] > 0 and len(records(tmp_path / "t.jsonl")) == 1000  # the file has it all
    assert max(grown.values()) < 20 << 20
