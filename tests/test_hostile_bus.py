"""Who may say what on a real broker (no model): per-publisher quotas, and forging with CURVE on.

* every publishing connection has an identity at the broker, so one publisher flooding stream ids
  reaches the subscribers with ``bus.max_streams_per_publisher`` of them, and another publisher's
  stream still gets through;
* with CURVE and per-actor keys (``voxpipe keys DIR --config C``), a process holding a capture's
  key cannot publish a commit or an eos that a sink or a subscriber accepts: the broker drops
  what that key may not publish (the real ZAP authenticator decides who is who), and its own
  stream's audio still goes through.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import zmq

from pipeline import messages as m
from pipeline.bus import Publisher, Subscriber, handshake
from pipeline.config import SecurityConfig
from tests.procs import DATA, ROOT, BusPublisher, Pipeline, Vouching

WALL0 = 1_700_000_000.0
PCM = b"\x00\x01" * 800


def test_one_publisher_flooding_stream_ids_gets_a_handful_through(tmp_path):
    with Pipeline(tmp_path) as p:
        sub = p.subscribe("audio.", timeout=2.0)
        # every flood message reaches the broker (none dropped by the sender), so its count is exact
        with BusPublisher(p.bus, queue_all=True) as flood, BusPublisher(p.bus) as real:
            flood.wait_subscribed("audio.")
            real.wait_subscribed("audio.")
            for i in range(2000):
                flood.send(f"audio.f{i}", m.Audio(stream=f"f{i}", seq=0, t=0.0, wall0=WALL0, pcm=PCM))
            for k in range(5):
                real.send("audio.real", m.Audio(stream="real", seq=k, t=k * 0.05, wall0=WALL0, pcm=PCM))
            streams = [msg.stream for _, msg in sub.items()]
        hb = p.wait_heartbeat("broker", lambda h: h.counters["over_quota"] >= 2000 - 16)
    flooded = {s for s in streams if s.startswith("f")}
    print(f"\nquota: {len(flooded)} of 2000 flooded stream ids got through; broker over_quota "
          f"{hb.counters['over_quota']}")
    assert len(flooded) == 16 and streams.count("real") == 5
    assert hb.counters["over_quota"] == 2000 - 16


PIPELINE = """
sources:
  - name: cap
    input: file:{clip}
    stream: mic
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{out}
"""

FORGER = """
import sys, time
import zmq
from pipeline import messages as m
from pipeline.bus import Publisher
from pipeline.config import BusConfig, SecurityConfig
keys, xsub = sys.argv[1], sys.argv[2]
bus = BusConfig(xsub=xsub, security=SecurityConfig(curve=True, keys_dir=keys, client="cap"))
ctx = zmq.Context()
pub = Publisher(ctx, bus)
time.sleep(1.0)  # connected, with the capture's key
for k in range(20):
    pub.send("transcript.asr.mic", m.Commit(stream="mic", seq=100 + k, beg=0.0, end=1.0, text=" FORGED", words=[],
                                            worker="asr", emitted=1.0, wall0=0.0))
    pub.send("transcript.asr.mic", m.EndOfStream(stream="mic", seq=200 + k, t=1.0, worker="asr"))
    pub.send("status.asr", m.Heartbeat(stream="", seq=300 + k, name="asr", role="worker", ready=True, pid=1,
                                       info={"streams": [], "ended": ["mic"]}))
    pub.send("partial.asr.mic", m.Partial(stream="mic", seq=k, text=" FORGED", worker="asr"))
    pub.send("speech.mic", m.EndOfStream(stream="mic", seq=k))
    pub.send("audio.mic", m.Audio(stream="mic", seq=k, t=k * 0.1, wall0=1.0, pcm=b"\\x00\\x00" * 1600))
    time.sleep(0.05)
pub.close()
ctx.term()
print("sent")
"""


def test_a_capture_key_cannot_forge_a_commit_or_an_eos(tmp_path):
    keys = tmp_path / "keys"
    body = PIPELINE.format(clip=DATA / "weather.wav", out=tmp_path / "t.jsonl")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(body)
    res = subprocess.run([sys.executable, "-m", "apps.cli", "keys", str(keys), "--config", str(cfg_path)],
                         capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert res.returncode == 0, res.stderr
    assert all((keys / f"{n}.key_secret").is_file() for n in ("client", "cap", "vad", "asr", "out"))
    with Pipeline(tmp_path / "p", curve_keys=keys, actors=body) as p:
        cfg = p.write_config(body)
        p.start("out", ["sink", "--config", str(cfg), "--name", "out"])
        p.wait_ready("out")
        sub = p.subscribe("transcript.", "partial.", timeout=3.0)  # the client key
        audio = p.subscribe("audio.", timeout=1.0)
        ctx = zmq.Context()
        asr = SecurityConfig(curve=True, keys_dir=str(keys), client="asr")
        worker = Publisher(ctx, p.bus.config(asr))  # the real worker, with its key
        probe = Subscriber(ctx, p.bus.config(asr), [])
        try:
            assert handshake(worker, probe, "asr", timeout=10)
            vouching = Vouching(worker.send)
            forger = subprocess.Popen([sys.executable, "-c", FORGER, str(keys), p.bus.xsub], cwd=str(ROOT),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for k in range(3):
                msg = m.Commit(stream="mic", seq=k, beg=float(k), end=k + 1.0, text=f" real{k}", words=[],
                               worker="asr", emitted=WALL0, wall0=WALL0)
                vouching.before("transcript.asr.mic", msg)
                worker.send("transcript.asr.mic", msg)
                time.sleep(0.5)
            out, err = forger.communicate(timeout=30)
            assert forger.returncode == 0 and "sent" in out, err
            end = m.EndOfStream(stream="mic", seq=3, t=3.0, worker="asr")
            worker.send("transcript.asr.mic", end)
            vouching.after("transcript.asr.mic", end)
            got = [(type(msg).__name__, getattr(msg, "text", "")) for _, msg in sub.items()]
            own = [msg.seq for _, msg in audio.items()]
        finally:
            probe.close()
            worker.close()
            ctx.term()
        hb = p.wait_heartbeat("broker", lambda h: h.counters["forbidden"] >= 80)
        written = p.wait_heartbeat("out", lambda h: h.counters["eos"] >= 1)
    records = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    print(f"\nCURVE: broker dropped {hb.counters['forbidden']} message(s) from the capture's key; "
          f"the sink wrote {[r['kind'] for r in records]}")
    assert got == [("Commit", " real0"), ("Commit", " real1"), ("Commit", " real2"), ("EndOfStream", "")]
    assert [(r["kind"], r.get("text")) for r in records] == \
        [("commit", " real0"), ("commit", " real1"), ("commit", " real2"), ("eos", None)]
    # commit, eos, heartbeat, partial x 20 (nobody subscribes to speech.: its PUB never sent those)
    assert hb.counters["forbidden"] == 80
    assert own == list(range(20))  # what the capture's key may publish went through
    assert written.counters["unconfirmed_eos"] == 0 and written.counters["unserved"] == 0


def test_an_ipc_bus_lives_in_a_private_folder(tmp_path):
    """The safe single-host bus: ipc:// endpoints in a folder only the pipeline's user can enter."""
    import stat

    from pipeline.config import BusConfig
    from tests.procs import start_actor, wait_ready

    folder = tmp_path / "run" / "voxpipe"  # missing: the broker makes it, 0700
    bus = BusConfig(xsub=f"ipc://{folder}/xsub", xpub=f"ipc://{folder}/xpub")
    broker = start_actor(["broker", "--xsub", bus.xsub, "--xpub", bus.xpub], log_dir=tmp_path)
    try:
        wait_ready(bus.xpub, ["broker"], procs=[broker])
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        ctx = zmq.Context()
        pub, sub = Publisher(ctx, bus), Subscriber(ctx, bus, [])
        try:
            assert handshake(pub, sub, "ipc-probe", timeout=10)
        finally:
            pub.close()
            sub.close()
            ctx.term()
    finally:
        broker.kill()
