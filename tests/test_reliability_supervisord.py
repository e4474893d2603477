"""In production: ``voxpipe export supervisord``, run by a real supervisord; a worker killed with -9 comes back.

supervisord (``pip install supervisor``, in the ``test`` extra) runs in the test's folder with its own
log, pid file and socket, not as a daemon, in a session of its own that is torn down at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import messages as m
from tests.procs import DATA, ROOT, Bus, Session, child_env

pytestmark = [pytest.mark.model, pytest.mark.realtime,
              pytest.mark.skipif(shutil.which("supervisord", path=os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")])) is None, reason="supervisor is not installed")]

CLIP = DATA / "kitchen.wav"


def supervisord_exe() -> str:
    return shutil.which("supervisord", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))


def main_conf(d: Path, include: Path) -> Path:
    conf = d / "supervisord.conf"
    conf.write_text(f"""[supervisord]
nodaemon=true
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={include.parent}/logs
loglevel=info

[unix_http_server]
file={d}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{d}/supervisor.sock

[include]
files = {include}
""")
    return conf


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def messages(bus: Bus, prefixes, sv: Session, timeout: float):
    """(topic, message) from the bus until ``timeout``; fails at once if supervisord is gone."""
    import zmq

    from pipeline.bus import Subscriber

    ctx = zmq.Context()
    sub = Subscriber(ctx, bus.config(), prefixes)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert sv.alive(), sv.log()
            got = sub.recv(timeout_ms=200)
            if got is not None:
                yield got
    finally:
        sub.close()
        ctx.term()


def test_a_worker_killed_with_9_is_restarted_and_commits_resume(tmp_path):
    bus = Bus.free()
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(bus.yaml() + f"""
sources:
  - name: capture
    input: file:{CLIP}
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{tmp_path}/t.jsonl
""")
    res = subprocess.run([sys.executable, "-m", "apps.cli", "export", "supervisord", str(cfg), str(tmp_path / "sv")],
                         capture_output=True, text=True, cwd=str(ROOT), env=child_env(), timeout=60)
    assert res.returncode == 0, res.stderr
    sv = Session([supervisord_exe(), "-c", str(main_conf(tmp_path, tmp_path / "sv" / "voxpipe.conf"))],
                 tmp_path / "supervisord.out", env=child_env({"HF_HUB_OFFLINE": "1"}), cwd=str(ROOT))
    try:
        commits, pids = [], []
        killed = resumed = None
        for _topic, msg in messages(bus, ["transcript.", "status.asr"], sv, timeout=180):
            if isinstance(msg, m.Heartbeat):
                if msg.role == "worker" and msg.pid not in pids:
                    pids.append(msg.pid)
                continue
            if not isinstance(msg, m.Commit):
                continue
            commits.append((time.monotonic(), msg))
            if killed is None and len(commits) == 2:
                victim = pids[-1]
                os.kill(victim, signal.SIGKILL)
                killed = time.monotonic()
            elif killed is not None:
                resumed = time.monotonic() - killed
                break
        assert resumed is not None, sv.log()
        restarted = [msg for t, msg in commits if t > killed]
        new_pids = [p for p in pids if p != victim]
        deadline = time.monotonic() + 10
        while not any(r["seq"] == restarted[0].seq and r["text"] == restarted[0].text
                      for r in jsonl(tmp_path / "t.jsonl")):
            assert time.monotonic() < deadline, "the restarted worker's commit is not in the JSONL"
            time.sleep(0.1)
    finally:
        sv.cleanup()
    logs = (tmp_path / "sv" / "logs" / "asr.log").read_text(errors="replace")
    print(f"\nsupervisord: worker pid {victim} killed with -9 after {commits[1][1].end:.1f}s of audio; "
          f"restarted as pid {new_pids}; next commit {resumed:.2f}s after the kill "
          f"(seq {restarted[0].seq}, audio {restarted[0].beg:.1f}-{restarted[0].end:.1f}s)")
    assert new_pids, logs[-3000:]
    assert resumed < 10.0
    # a new worker: its seq starts over (not a gap); first it says it started on the live stream (an error, seq 0)
    assert restarted[0].seq == 1
