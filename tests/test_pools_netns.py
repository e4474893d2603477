"""Failover across hosts: three network namespaces on a bridge, CURVE on, the real tiny.en workers.

The test makes its own "hosts" (``ip netns``, veth pairs, a bridge; all deleted in a
``finally``): host A (10.x.0.1) runs the broker, the VAD, the dispatcher, the capture, the
JSONL sink and a one-worker pool ``ref`` (the uninterrupted run, on the same audio at the
same time); hosts B and C each run one worker of the pool ``main``. The worker holding the
stream is killed with SIGKILL in the middle of an utterance. The stream's commits must come
from the other worker within 5 s, its final transcript must be as good as ``ref``'s (WER
within 0.03), no word may be committed twice, and every word spoken before the kill must be
in it (checked by time against ``ref``'s words).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import pytest

from apps.bench.evaluation import reference_text, wer
from pipeline import messages as m
from pipeline.config import SecurityConfig
from pipeline.security import create_keys
from tests.pool_checks import commits, jsonl, repeated, text, uncovered, words
from tests.procs import DATA, Bus, Pipeline, child_env, free_port

pytestmark = [pytest.mark.model, pytest.mark.realtime,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and ip(8)")]

CLIP = DATA / "kitchen.wav"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Hosts:
    """Namespaces ``a``, ``b``, ``c`` on one bridge; this (root) namespace reaches them through it."""

    def __init__(self):
        tag = secrets.token_hex(3)
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, timeout=10).stdout
        self.net = ""
        while not self.net or f"{self.net}." in routes:  # a /24 nobody on this machine uses
            self.net = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
        self.bridge = f"vpbr{tag}"
        self.ns = {h: f"vp{h}{tag}" for h in "abc"}
        self.addr = {h: f"{self.net}.{i}" for i, h in enumerate("abc", 1)}
        self.links: list[str] = []

    def __enter__(self) -> Hosts:
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            self.links.append(self.bridge)
            ip("addr", "add", f"{self.net}.254/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for h, ns in self.ns.items():
                ip("netns", "add", ns)
                outer, inner = f"{ns}o", f"{ns}i"
                ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                self.links.append(outer)
                ip("link", "set", inner, "netns", ns)
                ip("link", "set", outer, "master", self.bridge)
                ip("link", "set", outer, "up")
                ip("-n", ns, "addr", "add", f"{self.addr[h]}/24", "dev", inner)
                ip("-n", ns, "link", "set", inner, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)

    def argv(self, host: str, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[host], sys.executable, "-m", "apps.cli", *args]


def test_a_killed_worker_s_stream_goes_on_on_another_host_without_losing_a_word(tmp_path):
    keys = tmp_path / "keys"
    create_keys(keys, ["client", "cap", "vad", "dispatcher", "ref", "main-1", "main-2", "out"])  # one per actor
    with Hosts() as hosts:
        a = hosts.addr["a"]
        p = Pipeline(tmp_path, broker=False)
        p.bus = Bus(f"tcp://{a}:{free_port()}", f"tcp://{a}:{free_port()}")
        p.security = SecurityConfig(curve=True, keys_dir=str(keys))
        out = tmp_path / "t.jsonl"
        cfg = p.write_config(f"""
sources:
  - name: cap
    input: file:{CLIP}
    stream: talk
    speed: 1.0
workers:
  - name: ref
    model: tiny.en
    language: en
    partials: false
  - name: main
    model: tiny.en
    language: en
    partials: false
    replicas: 2
sinks:
  - name: out
    output: jsonl:{out}
""")
        with p:
            run = lambda name, host, args: p.spawn(name, hosts.argv(host, [*args, "--config", str(cfg)]),  # noqa: E731
                                                   env=child_env())
            run("broker", "a", ["broker"])
            p.wait_ready("broker", timeout=30)
            run("vad", "a", ["vad"])
            run("dispatcher", "a", ["dispatcher"])
            run("ref", "a", ["worker", "--name", "ref"])
            run("main-1", "b", ["worker", "--name", "main", "--replica", "1"])
            run("main-2", "c", ["worker", "--name", "main", "--replica", "2"])
            run("out", "a", ["sink", "--name", "out"])
            p.wait_ready("vad", "dispatcher", "ref", "main-1", "main-2", "out", timeout=180)
            sub = p.subscribe("transcript.main.talk", "speech.talk", timeout=60)
            run("cap", "a", ["capture", "--name", "cap"])
            killed_at = victim = wall0 = None
            in_speech = False
            resumed = None
            for msg in sub:
                now = time.monotonic()
                if isinstance(msg, m.SpeechStart):
                    in_speech = True
                elif isinstance(msg, m.SpeechEnd):
                    in_speech = False
                elif isinstance(msg, m.Audio) and victim is None and in_speech and msg.t > 9.0:
                    # mid-utterance, some seconds after its last commit: kill the stream's worker
                    done = commits(jsonl(out), "main", "talk")
                    if len(done) >= 3 and msg.t + msg.duration - done[-1]["end"] > 1.0:
                        victim, wall0 = done[-1]["worker"], done[-1]["wall0"]
                        os.kill(p.procs[victim].pid, signal.SIGKILL)
                        killed_at = now
                elif isinstance(msg, m.Commit) and victim is not None and resumed is None and msg.worker != victim:
                    resumed = now
                elif isinstance(msg, m.EndOfStream):
                    break
            kill_t = time.time() - (time.monotonic() - killed_at) - wall0  # stream time at the kill
            deadline = time.monotonic() + 60
            while not any(r["kind"] == "eos" and r["topic"] == "transcript.ref.talk" for r in jsonl(out)):
                assert time.monotonic() < deadline, p.logs()
                time.sleep(0.2)
            disp = p.wait_heartbeat("dispatcher", lambda h: True)
    assert victim is not None and resumed is not None, p.logs()
    recs = jsonl(out)
    failover = [r for r in recs if r["kind"] == "error" and r["topic"] == "transcript.main.talk"]
    assert [r["code"] for r in failover] == [m.FAILOVER] and victim in failover[0]["message"]
    assert disp.counters["failovers"] == 1
    ws, ref_ws = words(recs, "main", "talk"), words(recs, "ref", "talk")
    survivor = {w[3] for w in ws} - {victim}
    assert len(survivor) == 1
    one, failed = wer(reference_text(CLIP), text(recs, "ref", "talk")), wer(reference_text(CLIP),
                                                                             text(recs, "main", "talk"))
    lost = uncovered(ref_ws, ws, before=kill_t)
    print(f"\nkilled {victim} at {kill_t:.1f}s of the stream; {sorted(survivor)[0]} committed "
          f"{resumed - killed_at:.2f}s later; WER {failed:.3f} against {one:.3f} uninterrupted")
    assert resumed - killed_at < 5.0
    assert not repeated(ws), f"committed twice: {repeated(ws)}"
    assert not lost, f"spoken before the kill but missing: {lost}"
    assert failed <= one + 0.03
