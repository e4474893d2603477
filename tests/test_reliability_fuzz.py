"""Garbage on the bus: every actor drops, counts and survives it, and the transcript does not change."""

from __future__ import annotations

import re
import threading
import time

import pytest
import zmq

from pipeline import messages as m
from tests.fuzz_corpus import expected_rejections, hostile, malformed
from tests.procs import DATA, BusPublisher, Pipeline

CLIP = DATA / "kitchen.wav"
N_MALFORMED = 10000


def test_the_corpus_has_every_kind_of_garbage():
    cases = {case for _, case, _ in malformed(2000)}
    for needed in ("not msgpack", "truncated", "bad v", "unknown kind", "missing field", "mistyped number",
                   "odd pcm", "wrong rate", "nan/inf", "pcm too large", "oversized header", "topic too long",
                   "nesting bomb", "one frame", "topic not utf-8"):
        assert needed in cases
    kinds = {case for _, case, _ in hostile(flood=10)}
    assert {"stream flood", "speech flood", "time jumps", "forged eos"} <= kinds


def test_the_broker_cuts_off_a_sender_of_huge_frames(tmp_path):
    with Pipeline(tmp_path) as p:
        sub = p.subscribe("transcript.", timeout=2.0)
        ctx = zmq.Context()
        big = ctx.socket(zmq.PUB)
        big.setsockopt(zmq.LINGER, 0)
        big.connect(p.bus.xsub)
        try:
            with BusPublisher(p.bus) as pub:
                pub.wait_subscribed("transcript.")
                # a raw PUB learns the subscription only once connected: keep offering the frame a while
                for _ in range(20):
                    big.send_multipart([b"transcript.asr.s1", b"\x80", b"\x00" * (4 << 20)])
                    time.sleep(0.05)
                pub.send("transcript.asr.s1", m.EndOfStream(stream="s1", seq=0, worker="asr"))
                got = [t for t, _ in sub.items()]
        finally:
            big.close()
            ctx.term()
        assert got == ["transcript.asr.s1"] and sub.rejected == 0  # the 4 MiB frames never got through
        assert p.procs["broker"].alive()


# -- the real thing ----------------------------------------------------------------------------------------
def heard(sub, stream: str, on_commit=None) -> tuple[str, float]:
    """Commit text of ``transcript.asr.<stream>`` until its eos, and when the eos came."""
    texts = []
    for topic, msg in sub.items():
        if topic != f"transcript.asr.{stream}":
            continue
        if isinstance(msg, m.Commit):
            texts.append(msg.text)
            if on_commit is not None:
                on_commit()
        elif isinstance(msg, m.EndOfStream):
            return " ".join(texts), time.monotonic()
    raise AssertionError(f"no eos for {stream}")


class Fuzzer(threading.Thread):
    """Sends the corpus through the broker like any publisher, paced so no queue overflows."""

    def __init__(self, pub: BusPublisher, messages, rate: float = 1500.0, batch: int = 50):
        super().__init__(daemon=True)
        self.pub, self.messages, self.rate, self.batch = pub, messages, rate, batch
        self.sent = 0
        self.began = self.ended = 0.0
        self.done = threading.Event()

    def start_once(self) -> None:
        if self.ident is None:
            self.start()

    def run(self):
        self.began = t0 = time.monotonic()
        for i, (_, _, frames) in enumerate(self.messages):
            self.pub.send_raw(frames)
            self.sent += 1
            if i % self.batch == self.batch - 1:
                wait = t0 + self.sent / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        self.ended = time.monotonic()
        self.done.set()


@pytest.mark.model
def test_fuzz_while_a_clip_is_transcribed(tmp_path):
    from apps.bench.evaluation import reference_text, wer

    bad = malformed(N_MALFORMED, streams=("real", "base", "x"))
    evil = hostile(protect=("real", "base"))
    expected = expected_rejections(bad)
    # hostile messages spread among the malformed ones, in a fixed order
    corpus = bad + evil
    corpus = [corpus[i] for i in sorted(range(len(corpus)), key=lambda i: (i * 7919) % len(corpus))]
    with Pipeline(tmp_path) as p:
        cfg = p.write_config(f"""
vad:
  max_streams: 8
sources:  # in real time: the worker's chunking, hence its WER, varies less from run to run than faster
  - name: base
    input: file:{CLIP}
  - name: real
    input: file:{CLIP}
workers:
  - name: asr
    max_streams: 4
sinks:
  - name: out
    output: jsonl:{tmp_path}/t.jsonl
""")
        for name, role in (("vad", "vad"), ("asr", "worker"), ("out", "sink")):
            p.start(name, [role, "--config", str(cfg), "--name", name])
        p.wait_ready("vad", "asr", "out", timeout=120)
        sub = p.subscribe("transcript.asr.", timeout=60)

        p.start("cap-base", ["capture", "--config", str(cfg), "--name", "base"])
        base_text, _ = heard(sub, "base")

        fuzz_pub = BusPublisher(p.bus)
        for prefix in ("audio.", "speech.", "transcript."):
            fuzz_pub.wait_subscribed(prefix)
        fuzzer = Fuzzer(fuzz_pub, corpus)
        p.start("cap-real", ["capture", "--config", str(cfg), "--name", "real"])
        real_text, real_eos = heard(sub, "real", on_commit=fuzzer.start_once)  # the fuzz starts at its first commit
        fuzzer.join(60)
        assert fuzzer.done.is_set() and fuzzer.sent == len(corpus)
        assert fuzzer.ended < real_eos, "the fuzz outlasted the clip"

        # every actor counted exactly the garbage sent to the topics it subscribes to
        want = {"vad": expected["audio"], "asr": expected["speech"], "out": expected["transcript"]}
        got = {}
        for name, n in want.items():
            hb = p.wait_heartbeat(name, lambda h, n=n: h.counters["rejected"] >= n, timeout=30)
            got[name] = hb
        for name in ("broker", "vad", "asr", "out"):
            assert p.procs[name].alive(), p.logs()
        fuzz_pub.close()
        logs = {name: p.procs[name].log() for name in ("vad", "asr", "out")}

    ref = reference_text(CLIP)
    w_base, w_real = wer(ref, base_text), wer(ref, real_text)
    print(f"\nfuzz: sent {len(bad)} malformed + {len(evil)} hostile messages in "
          f"{fuzzer.ended - fuzzer.began:.1f}s; rejected "
          + ", ".join(f"{k} {got[k].counters['rejected']}/{want[k]}" for k in want)
          + f"; WER without fuzz {w_base:.3f}, with {w_real:.3f}"
          + f"; vad streams refused {got['vad'].counters.get('streams_refused', 0)}, "
            f"worker streams refused {got['asr'].counters.get('streams_refused', 0)}")
    assert {k: hb.counters["rejected"] for k, hb in got.items()} == want
    assert got["vad"].counters["streams_active"] <= 8 and got["vad"].counters.get("streams_refused", 0) > 0
    assert got["asr"].counters["streams_active"] <= 4 and got["asr"].counters.get("streams_refused", 0) > 0
    assert abs(w_real - w_base) <= 0.02, (base_text, real_text)
    for name, log in logs.items():  # logged without flooding: a few lines per kind of problem
        lines = len(re.findall(r"rejected a message", log))
        assert 0 < lines <= 200, f"{name}: {lines} lines about rejected messages"
