"""Garbage and lies on the bus: every actor drops, counts and survives them, and the transcript does not change.

One real-time run of the real pipeline (VAD, tiny.en worker, JSONL sink serving snapshots) on a clip
played as two streams at once, ``base`` (left alone) and ``real``, while, at once,

* 10,000 malformed messages are sent (every actor rejects exactly those on its topics);
* valid hostile ones: a flood of 10,000 stream ids from ten publishers that starts before the stream
  does (it is admitted within a second all the same), absurd times on other streams;
* valid lies about the stream itself: a frame at t = 1e6 with a wall0 from another century, a
  speech_end/speech_start at its very end every 100 ms for 10 s, forged ends of it on every topic,
  ends of 2,000 streams that never existed, 300 commits of 62 KB, 1,000 commits for streams nobody
  serves, a forged seq.

``real``'s WER stays within nine words (0.11) of ``base``'s, which ran beside it on the same loaded
machine; each attack shows in a counter, and the JSONL holds the two streams' commits and one end
each, nothing else.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import zmq

from pipeline import messages as m
from tests.fuzz_corpus import MarkForger, expected_rejections, hostile, lying, malformed
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
    lies = {case for _, case, _ in lying(ghosts=3, oversized=2, strangers=2)}
    assert {"time jump", "time back", "forged eos", "ghost eos", "oversized commit", "unserved commit"} <= lies
    for _, _, frames in lying(ghosts=3, oversized=2, strangers=2):
        m.decode(frames)  # every lie is well-formed


def test_the_broker_cuts_off_a_sender_of_huge_frames(tmp_path):
    with Pipeline(tmp_path) as p:
        sub = p.subscribe("transcript.", timeout=2.0, verify=False)  # the broker, not who vouches, is tested here
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


class Flood(threading.Thread):
    """``ids`` stream ids on ``audio.*``, one 0.1 s frame each, over ``seconds``, from ``publishers`` connections
    taking turns in blocks (a fresh connection every ``ids / publishers`` ids: each new one gets its quota's worth
    through the broker, so the VAD sees new ids all along)."""

    def __init__(self, bus, ids: int = 10000, publishers: int = 50, seconds: float = 4.0):
        super().__init__(daemon=True)
        self.pubs = [BusPublisher(bus) for _ in range(publishers)]
        self.ids, self.seconds = ids, seconds
        self.sent = 0
        self.started = threading.Event()

    def run(self):
        pcm = b"\x10\x00\xf0\xff" * 800
        block = max(1, self.ids // len(self.pubs))
        t0 = time.monotonic()
        self.started.set()
        for i in range(self.ids):
            s = f"flood{i}"
            pub = self.pubs[min(i // block, len(self.pubs) - 1)]
            pub.send(f"audio.{s}", m.Audio(stream=s, seq=0, t=0.0, wall0=1.7e9, pcm=pcm))
            self.sent += 1
            time.sleep(max(0.0, t0 + (i + 1) * self.seconds / self.ids - time.monotonic()))

    def close(self):
        for pub in self.pubs:
            pub.close()


def admitted(p, stream: str, timeout: float = 30.0) -> float:
    """Seconds from the stream's first audio frame on the bus to the VAD listing it as served."""
    first = None
    sub = p.subscribe(f"audio.{stream}", "status.vad", timeout=timeout)
    for topic, msg in sub.items():
        if first is None and topic == f"audio.{stream}":
            first = time.monotonic()
        if first is not None and isinstance(msg, m.Heartbeat) and stream in msg.info.get("streams", []):
            sub.close()
            return time.monotonic() - first
    raise AssertionError(f"the VAD never listed {stream}")


@pytest.mark.model
@pytest.mark.realtime
@pytest.mark.alone  # floods and a WER compared with an undisturbed run
def test_fuzz_while_a_clip_is_transcribed(tmp_path):
    from apps.bench.evaluation import reference_text, wer

    bad = malformed(N_MALFORMED, streams=("real", "base", "x"))
    lies = lying("real", "asr")
    # the lies about the stream itself from a connection of their own (its quota holds that one stream id);
    # floods, ends of streams that never existed and strangers' commits from another
    aimed = [x for x in lies if m.decode(x[2])[1].stream == "real"]
    evil = hostile(protect=("real", "base"), flood=500) + [x for x in lies if m.decode(x[2])[1].stream != "real"]
    expected = expected_rejections(bad)
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
    max_streams: 8
sinks:
  - name: out
    output: jsonl:{tmp_path}/t.jsonl
""")
        for name, role in (("vad", "vad"), ("asr", "worker"), ("out", "sink")):
            p.start(name, [role, "--config", str(cfg), "--name", name])
        p.wait_ready("vad", "asr", "out", timeout=120)
        sub = p.subscribe("transcript.asr.", timeout=60)

        # one connection each: quotas are per publisher, and the garbage's few stream ids must all get through
        pubs = [BusPublisher(p.bus) for _ in range(3)]
        for pub in pubs:
            for prefix in ("audio.", "speech.", "transcript.", "status."):
                pub.wait_subscribed(prefix)
        fuzzers = [Fuzzer(pubs[0], bad), Fuzzer(pubs[1], aimed, rate=100.0), Fuzzer(pubs[2], evil, rate=600.0)]
        marks = MarkForger(p.bus.config(), "real", period=0.1, seconds=10.0, wall0_every=5.0)
        flood = Flood(p.bus)
        for pub in flood.pubs:
            pub.wait_subscribed("audio.")
        # the undisturbed stream plays beside the attacked one, through the same loaded machine (one clip's time,
        # not two); the lies and the flood spare it (its id is protected)
        p.start("cap-base", ["capture", "--config", str(cfg), "--name", "base"])
        admitted(p, "base")  # served before the flood begins, as a stream already running would be
        flood.start()
        assert flood.started.wait(5)
        time.sleep(1.0)  # the stream starts one second into the flood
        p.start("cap-real", ["capture", "--config", str(cfg), "--name", "real"])
        admitted_after = admitted(p, "real")

        def attack():  # everything else starts at the stream's first commit
            for fuzzer in fuzzers:
                fuzzer.start_once()
            if not hasattr(marks, "thread"):
                marks.thread = threading.Thread(target=marks.run, daemon=True)
                marks.thread.start()

        real_text, real_eos = heard(sub, "real", on_commit=attack)
        for fuzzer in fuzzers:
            fuzzer.join(60)
            assert fuzzer.done.is_set() and fuzzer.sent == len(fuzzer.messages)
            assert fuzzer.ended < real_eos, "the fuzz outlasted the clip"
        marks.thread.join(30)
        flood.join(30)
        jsonl = tmp_path / "t.jsonl"
        deadline = time.monotonic() + 30
        while not any(r.get("kind") == "eos" and r.get("stream") == "base"
                      for r in map(json.loads, jsonl.read_text().splitlines())):
            assert time.monotonic() < deadline, "no eos for base"
            time.sleep(0.2)
        base_commits = sub_commits(jsonl, "base")
        base_text = " ".join(c.text for c in base_commits)
        base_latency = max(c.latency for c in base_commits)

        # every actor counted exactly the garbage sent to the topics it subscribes to (all of them: status.)
        want = {"vad": expected["audio"] + expected["status"], "asr": expected["speech"] + expected["status"],
                "out": expected["transcript"] + expected["status"]}
        got = {name: p.wait_heartbeat(name, lambda h, n=n: h.counters["rejected"] >= n, timeout=30)
               for name, n in want.items()}
        got["broker"] = p.wait_heartbeat("broker", lambda h: True)
        for name in ("broker", "vad", "asr", "out"):
            assert p.procs[name].alive(), p.logs()
        for pub in pubs:
            pub.close()
        flood.close()
        logs = {name: p.procs[name].log() for name in ("vad", "asr", "out")}

    ref = reference_text(CLIP)
    w_base, w_real = wer(ref, base_text), wer(ref, real_text)
    records = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    real_latency = max(c.latency for c in sub_commits(tmp_path / "t.jsonl", "real"))
    c = {name: hb.counters for name, hb in got.items()}
    print(f"\nfuzz: {len(bad)} malformed + {len(evil) + len(aimed)} hostile and lying messages + {flood.sent} "
          f"flooded stream ids + {marks.sent} forged pause marks + {marks.wall0_lies} wall0 lies; WER without "
          f"{w_base:.3f}, with {w_real:.3f}; the stream admitted "
          f"{admitted_after:.2f}s into the flood; rejected "
          + ", ".join(f"{k} {c[k]['rejected']}/{want[k]}" for k in want)
          + f"; broker over_quota {c['broker']['over_quota']}; vad out_of_step {c['vad']['out_of_step']}, "
          f"wall0_ignored {c['vad']['wall0_ignored']}, unconfirmed_eos {c['vad']['unconfirmed_eos']}, evicted "
          f"{c['vad']['streams_evicted']}, refused {c['vad'].get('streams_refused', 0)}; worker marks_ignored "
          f"{c['asr']['marks_ignored']}, pauses_cancelled {c['asr']['pauses_cancelled']}, taken "
          f"{c['asr']['pauses_taken']}, out_of_step "
          f"{c['asr']['out_of_step']}, unconfirmed_eos {c['asr']['unconfirmed_eos']}; sink unserved "
          f"{c['out']['unserved']}, unconfirmed_eos {c['out']['unconfirmed_eos']}, oversized {c['out']['oversized']}, "
          f"seq_implausible {c['out'].get('seq_implausible', 0)}; JSONL {len(records)} records, "
          f"{(tmp_path / 't.jsonl').stat().st_size} bytes; worst latency {base_latency:.1f}s / {real_latency:.1f}s")
    assert {k: hb.counters["rejected"] for k, hb in got.items() if k in want} == want
    print(f"without: {base_text}\nwith:    {real_text}")
    # not worse by more than nine words of this 83-word clip: two undisturbed real-time runs of it differ by up to
    # 0.036 on two cores (measured: 0.084, 0.096, 0.108, 0.120), and under the attack here by 0.000 to 0.037 (also
    # with two busy loops beside it); one CI run on a clean machine saw 0.108. An attack that derails the stream
    # costs 0.5 and more
    lost = [r["message"] for r in records if r["kind"] == "error" and r.get("stream") == "real"
            and "lost on the way" in r["message"]]
    assert w_real - w_base <= 0.11, f"without {w_base:.3f}: {base_text}\nwith {w_real:.3f}: {real_text}\nlost: {lost}"
    assert admitted_after < 1.0
    # each attack shows in a counter
    assert c["broker"]["over_quota"] > 9000 and c["vad"]["streams_evicted"] + c["vad"]["streams_refused"] > 0
    assert c["vad"]["out_of_step"] >= 2 and c["vad"]["unconfirmed_eos"] >= 1
    # a wall0 lie sits at the stream's next position: it is ignored (wall0_ignored), or, when the real frame there
    # came first, set aside with the other frames that do not continue the stream; either way not taken (latency)
    assert marks.wall0_lies >= 1 and (c["vad"]["wall0_ignored"] >= 1 or c["vad"]["out_of_step"] >= 3)
    assert c["asr"]["marks_ignored"] + c["asr"]["pauses_cancelled"] >= marks.sent // 2 > 0
    assert c["asr"]["out_of_step"] >= 1 and c["asr"]["unconfirmed_eos"] >= 1
    assert c["out"]["unserved"] > 0 and c["out"]["oversized"] >= 150 and c["out"]["unconfirmed_eos"] >= 1
    assert c["out"].get("seq_implausible", 0) >= 1 and c["vad"].get("seq_implausible", 0) >= 1
    # the JSONL: the two streams' commits and one end each, nothing forged; besides them only the worker's own
    # errors (refusals of flooded streams while its slots were full, what it says it lost or joined late), bounded
    errors = [r for r in records if r["kind"] == "error"]
    print("worker errors in the JSONL:", len(errors),
          sorted({(str(r.get("code")), r["message"][:60]) for r in errors})[:8])
    assert {(r["stream"], r["kind"]) for r in records if r["kind"] != "error"} == {
        ("base", "commit"), ("real", "commit"), ("base", "eos"), ("real", "eos")}
    assert all(r.get("worker") == "asr" for r in errors) and len(errors) <= 300
    assert sorted(r["stream"] for r in records if r["kind"] == "eos") == ["base", "real"]
    assert all(len(r.get("text", "")) < 1000 for r in records)
    assert real_latency < 30.0  # no wall0 from another century
    for name, log in logs.items():  # logged without flooding: a few lines per kind of problem
        lines = len(re.findall(r"rejected a message", log))
        assert 0 < lines <= 200, f"{name}: {lines} lines about rejected messages"


def sub_commits(path, stream: str) -> list[m.Commit]:
    import dataclasses

    fields = {f.name for f in dataclasses.fields(m.Commit)}
    return [m.Commit(**{k: v for k, v in r.items() if k in fields}) for r in
            (json.loads(x) for x in path.read_text().splitlines()) if r["kind"] == "commit" and r["stream"] == stream]
