"""Who may connect: loopback unless the config says CURVE; with CURVE, only authorized keys get in."""

from __future__ import annotations

import stat
import threading
import time

import pytest
import zmq

from pipeline import messages as m
from pipeline.bus import Publisher
from pipeline.config import ConfigError, SecurityConfig, load_config
from pipeline.security import create_keys, is_loopback
from tests.procs import DATA, Pipeline

WALL0 = 1_700_000_000.0


# -- the rules ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint,local", [
    ("tcp://127.0.0.1:7701", True), ("tcp://127.0.0.2:7701", True), ("tcp://localhost:7701", True),
    ("tcp://[::1]:7701", True), ("tcp://lo:7701", True), ("ipc:///tmp/voxpipe.sock", True),
    ("inproc://bus", True), ("tcp://0.0.0.0:7701", False), ("tcp://*:7701", False),
    ("tcp://192.168.1.20:7701", False), ("tcp://eth0:7701", False), ("tcp://[::]:7701", False),
    ("tcp://127.0.0.1;10.0.0.5:7701", False), ("tcp://example.org:7701", False), ("pgm://eth0;239.1.1.1:5555", False),
])
def test_loopback_or_not(endpoint, local):
    assert is_loopback(endpoint) is local


BODY = """
bus:
  xsub: {xsub}
  xpub: tcp://127.0.0.1:7742
{security}
sinks:
  - name: out
    output: jsonl:{dir}/t.jsonl
{snapshot}
"""


def config_error(tmp_path, **kw) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(BODY.format(**{"xsub": "tcp://127.0.0.1:7741", "security": "", "snapshot": "",
                                   "dir": tmp_path, **kw}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


@pytest.mark.parametrize("xsub", ["tcp://0.0.0.0:7741", "tcp://*:7741", "tcp://10.1.2.3:7741"])
def test_an_exposed_endpoint_needs_curve(tmp_path, xsub):
    msg = config_error(tmp_path, xsub=xsub)
    assert f"bus.xsub: '{xsub}' is reachable from other machines" in msg and "curve: true" in msg


def test_an_exposed_snapshot_endpoint_needs_curve(tmp_path):
    msg = config_error(tmp_path, snapshot="    snapshot: tcp://0.0.0.0:7743")
    assert "sinks[0].snapshot" in msg and "curve: true" in msg


def test_curve_needs_its_keys(tmp_path):
    sec = f"  security:\n    curve: true\n    keys_dir: {tmp_path}/nokeys"
    msg = config_error(tmp_path, xsub="tcp://0.0.0.0:7741", security=sec)
    assert "bus.security" in msg and f"voxpipe keys {tmp_path}/nokeys" in msg


def test_a_snapshot_endpoint_must_not_clash(tmp_path):
    msg = config_error(tmp_path, snapshot="    snapshot: tcp://127.0.0.1:7742")
    assert "sinks[0].snapshot" in msg and "clashes with" in msg
    msg = config_error(tmp_path, snapshot="    snapshot: 7743")
    assert "is not a ZeroMQ endpoint" in msg


def test_curve_config_with_keys_loads(tmp_path):
    create_keys(tmp_path / "keys")
    path = tmp_path / "c.yaml"
    path.write_text(BODY.format(xsub="tcp://0.0.0.0:7741", dir=tmp_path, snapshot="    snapshot: tcp://*:7743",
                                security=f"  security:\n    curve: true\n    keys_dir: {tmp_path}/keys"))
    cfg = load_config(path)
    assert cfg.bus.security.curve and cfg.bus.security.keys_dir == str(tmp_path / "keys")


def test_keys_command(tmp_path, voxpipe_cli):
    keys = tmp_path / "keys"
    res = voxpipe_cli("keys", str(keys))
    assert res.returncode == 0, res.stderr
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret", "authorized/client.key"):
        assert (keys / name).is_file(), name
    for secret in keys.glob("*.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    server = (keys / "server.key").read_text()
    res = voxpipe_cli("keys", str(keys), "--client", "alice")
    assert res.returncode == 0, res.stderr
    assert (keys / "server.key").read_text() == server  # existing keys are kept
    assert (keys / "authorized" / "alice.key").is_file() and (keys / "alice.key_secret").is_file()
    res = voxpipe_cli("keys", str(keys), "--client", "bad/name")
    assert res.returncode == 2 and "bad/name" in res.stderr


# -- on a real broker ---------------------------------------------------------------------------------------
def commit(seq: int, text: str, worker: str = "asr", stream: str = "s1") -> m.Commit:
    return m.Commit(stream=stream, seq=seq, beg=float(seq), end=seq + 1.0, text=text, words=[], worker=worker,
                    backend="test", model="none", emitted=WALL0 + seq + 1.5, wall0=WALL0)


class Listener(threading.Thread):
    """A SUB on everything (keys or none), counting what it receives."""

    def __init__(self, xpub: str, security: SecurityConfig | None = None):
        super().__init__(daemon=True)
        self.xpub, self.security = xpub, security
        self.got: list[bytes] = []
        self.stop = threading.Event()

    def run(self):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        if self.security is not None:
            from pipeline.security import apply_client_keys

            apply_client_keys(sock, self.security)
        sock.connect(self.xpub)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        while not self.stop.is_set():
            if sock.poll(100):
                self.got.append(sock.recv_multipart()[0])
        sock.close()
        ctx.term()


def plain_pub(ctx: zmq.Context, xsub: str, security: SecurityConfig | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    if security is not None:
        from pipeline.security import apply_client_keys

        apply_client_keys(sock, security)
    sock.connect(xsub)
    return sock


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    create_keys(d, ["client", "asr", "out", "friend"])  # the client key, and one per actor
    create_keys(d, ["mallory"], authorize=False)  # a well-formed key the bus does not know
    return d


ACTORS = """
sources:
  - name: friend
    input: file:{clip}
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{out}
"""


def actors(tmp_path) -> str:
    return ACTORS.format(clip=DATA / "weather.wav", out=tmp_path / "unused.jsonl")


def test_curve_bus_admits_only_authorized_keys(tmp_path, keys):
    mallory = SecurityConfig(curve=True, keys_dir=str(keys), client="mallory")
    asr = SecurityConfig(curve=True, keys_dir=str(keys), client="asr")
    with Pipeline(tmp_path / "p", curve_keys=keys, actors=actors(tmp_path)) as p:
        sub = p.subscribe("transcript.", timeout=1.0, verify=False)  # the client key: synced through the broker
        outsiders = [Listener(p.bus.xpub), Listener(p.bus.xpub, mallory)]
        for o in outsiders:
            o.start()
        ctx = zmq.Context()
        pub = Publisher(ctx, p.bus.config(asr))  # the worker's key
        intruders = [plain_pub(ctx, p.bus.xsub), plain_pub(ctx, p.bus.xsub, mallory)]
        try:
            deadline = time.monotonic() + 3.0
            seq = 0
            while time.monotonic() < deadline:  # long enough for every reconnect attempt to have failed
                pub.send("transcript.asr.s1", commit(seq, f" word{seq}"))
                for _i, sock in enumerate(intruders):
                    sock.send_multipart(m.encode("transcript.evil.s1", commit(seq, " injected", worker="evil")))
                seq += 1
                time.sleep(0.05)
            got = [(t, msg.text) for t, msg in sub.items()]
        finally:
            for o in outsiders:
                o.stop.set()
                o.join(5)
            for sock in intruders:
                sock.close()
            pub.close()
            ctx.term()
        assert got and all(t == "transcript.asr.s1" for t, _ in got), got  # nothing injected got through
        assert len(got) >= seq - 5  # the key holder gets (nearly) everything
        assert [o.got for o in outsiders] == [[], []]  # without the key: not even heartbeats
        assert p.procs["broker"].alive()


@pytest.mark.model
@pytest.mark.realtime
def test_curve_pipeline_transcribes_key_holders_only(tmp_path, keys):
    from apps.bench.evaluation import reference_text, wer

    clip = DATA / "weather.wav"
    body = f"""
vad:
  enabled: false
sources:
  - name: friend
    input: file:{clip}
    speed: 4
    wait_for: [asr]
workers:
  - name: asr
    input: audio
    partials: false
"""
    with Pipeline(tmp_path / "p", curve_keys=keys, actors=body) as p:
        cfg = p.write_config(body)
        p.start("asr", ["worker", "--config", str(cfg), "--name", "asr"])
        p.wait_ready("asr", timeout=120)
        outsider = Listener(p.bus.xpub)
        outsider.start()
        sub = p.subscribe("transcript.", "status.asr", timeout=60)
        # an outsider's capture (no keys): its audio must go nowhere
        p.start("intruder", ["capture", f"file:{clip}", "--stream", "intruder", "--speed", "0", "--wait-for", "",
                             *p.bus.args()], bus=False)
        p.start("friend", ["capture", "--config", str(cfg), "--name", "friend"])
        texts, streams = [], set()
        for _topic, msg in sub.items():
            if isinstance(msg, m.Heartbeat):
                streams.update(msg.info.get("streams", []))
            elif isinstance(msg, m.Commit):
                texts.append(msg.text)
                streams.add(msg.stream)
            elif isinstance(msg, m.EndOfStream):
                streams.add(msg.stream)
                break
        outsider.stop.set()
        outsider.join(5)
        hb = p.wait_heartbeat("asr", lambda h: True)
        assert p.wait_exit("intruder", 30) == 0
    score = wer(reference_text(clip), " ".join(texts))
    print(f"\nCURVE: key holder's clip WER {score:.3f}; outsider received {len(outsider.got)} message(s); "
          f"worker streams_total {hb.counters['streams_total']}")
    assert score <= 0.25, texts
    assert streams == {"friend"} and hb.counters["streams_total"] == 1
    assert outsider.got == []


def test_curve_guards_the_snapshot_endpoint_too(tmp_path, keys):
    from pipeline.snapshot import SnapshotError, fetch
    from tests.procs import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    body = f"""
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{tmp_path}/t.jsonl
    snapshot: {endpoint}
"""
    with Pipeline(tmp_path / "p", curve_keys=keys, actors=body) as p:
        cfg = p.write_config(body)
        p.start("out", ["sink", "--config", str(cfg), "--name", "out"])
        p.wait_ready("out")
        ctx = zmq.Context()
        asr = SecurityConfig(curve=True, keys_dir=str(keys), client="asr")
        pub = Publisher(ctx, p.bus.config(asr))  # as the worker, with its key
        from pipeline.bus import Subscriber, handshake
        from tests.procs import Vouching

        sub = Subscriber(ctx, p.bus.config(asr), [])
        assert handshake(pub, sub, "asr", timeout=10)
        vouching = Vouching(pub.send)
        vouching.before("transcript.asr.s1", commit(0, " secret"))
        pub.send("transcript.asr.s1", commit(0, " secret"))
        p.wait_heartbeat("out", lambda h: h.counters["written"] >= 1)
        try:
            mine = fetch(ctx, endpoint, ["transcript."], p.bus.config(p.security), timeout=5)
            assert [msg.text for _, msg in mine] == [" secret"]
            mallory = SecurityConfig(curve=True, keys_dir=str(keys), client="mallory")
            for outsider in (p.bus.config(), p.bus.config(mallory)):
                with pytest.raises(SnapshotError):
                    fetch(ctx, endpoint, ["transcript."], outsider, timeout=2)
        finally:
            sub.close()
            pub.close()
            ctx.term()


@pytest.mark.model  # no timing in it (the upload goes at the worker's speed): it runs in the offline lane
def test_curve_lets_the_gateway_publish_its_clients_audio(tmp_path):
    """With CURVE (as the container exports run it) a client of the gateway is transcribed: the broker lets the
    gateway's key publish ``audio.<gateway>-*``, its clients' streams (and nothing else, tests/test_roster.py)."""
    import openai

    from apps.bench.evaluation import wer
    from tests import gateway_clients as gc
    from tests.procs import free_port

    keys = tmp_path / "keys"
    create_keys(keys, ["client", "vad", "asr", "gw"])
    port = free_port()
    body = f"""
workers:
  - name: asr
    partials: false
gateway:
  enabled: true
  name: gw
  port: {port}
"""
    with Pipeline(tmp_path / "p", curve_keys=keys, actors=body) as p:
        cfg = p.write_config(body)
        for name, args in (("vad", ["vad"]), ("asr", ["worker", "--name", "asr"]), ("gw", ["serve"])):
            p.start(name, [*args, "--config", str(cfg)], env={"HF_HUB_OFFLINE": "1"})
        p.wait_ready("vad", "asr", "gw", timeout=120)
        pcm, ref = gc.sentences("weather_gaps", [0, 1])
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=90)
        text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", gc.wav_bytes(pcm))).text
        hb = p.wait_heartbeat("asr", lambda h: h.counters.get("streams_total", 0) >= 1)
    print(f"\nCURVE gateway: {text!r}")
    assert wer(ref, text) <= 0.3, text
    assert hb.counters["streams_total"] == 1
