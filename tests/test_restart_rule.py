"""One crashed actor is restarted and the rest go on; one that keeps failing stops the pipeline with one line.

Under ``voxpipe up`` (no model here: a sink, and a worker whose model never loads), and the rule itself
(``apps.restart``): back-off doubling from ``restart.backoff``, the ``max_failures``-th failure within
``window`` seconds gives up; the supervisord listener applies the same count.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

from apps.restart import RestartTracker, guard_events
from pipeline.config import RestartConfig
from tests.procs import ROOT, Bus, child_env, heartbeats


def test_back_off_doubles_and_the_last_straw_gives_up():
    t = RestartTracker(RestartConfig(backoff=0.5, backoff_max=3.0, max_failures=4, window=60.0))
    assert [t.failed("asr", s) for s in (0.0, 1.0, 2.0)] == [0.5, 1.0, 2.0]
    assert t.failed("vad", 2.5) == 0.5  # per actor
    assert t.failed("asr", 3.0) is None  # the 4th within 60 s
    quiet = RestartTracker(RestartConfig(max_failures=2, window=10.0))
    assert quiet.failed("asr", 0.0) == 0.5 and quiet.failed("asr", 20.0) == 0.5  # the window moved on


def test_the_supervisord_listener_stops_the_group_on_the_last_straw():
    def event(name, state="PROCESS_STATE_EXITED", expected="0", group="vp"):
        payload = f"processname:{name} groupname:{group} from_state:RUNNING expected:{expected} pid:1"
        header = f"ver:3.0 server:supervisor serial:1 pool:x poolserial:1 eventname:{state} len:{len(payload)}\n"
        return header + payload

    stdin = io.StringIO("".join([event("vp-asr"), event("vp-out", group="other"), event("vp-cap", expected="1"),
                                 event("vp-asr"), event("vp-asr")]))
    stopped, lines = [], []
    guard_events(stdin, io.StringIO(), "vp", RestartTracker(RestartConfig(max_failures=3, window=60.0)),
                 stopped.append, lines.append, clock=lambda: 0.0)
    assert stopped == ["vp"]
    assert lines[-1] == "voxpipe: vp-asr failed 3 times within 60s: stopping the pipeline (group vp)"


def up(cfg_path):
    return subprocess.Popen([sys.executable, "-m", "apps.cli", "up", str(cfg_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(ROOT), env=child_env(),
                            start_new_session=True)


def test_an_actor_that_keeps_failing_stops_the_pipeline_with_one_line(tmp_path):
    bus = Bus.free()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(bus.yaml() + """
vad:
  enabled: false
workers:
  - name: asr
    backend: tests.faulty_backend:NoModel
    input: audio
restart:
  backoff: 0.1
  backoff_max: 0.4
  max_failures: 3
""")
    proc = up(cfg)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, err
    assert err.strip().splitlines()[-1] == \
        "voxpipe up: asr failed 3 times within 60s (last exit rc=4): stopping the pipeline"
    assert out.count("asr exited (rc=4): restarting it in") == 2


def test_a_killed_actor_is_restarted_and_the_rest_go_on(tmp_path):
    bus = Bus.free()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(bus.yaml() + f"""
vad:
  enabled: false
sinks:
  - name: out
    output: jsonl:{tmp_path}/t.jsonl
""")
    proc = up(cfg)
    try:
        pids: dict[str, list[int]] = {}
        killed = back = None
        for _, hb in heartbeats(bus.xpub, 60):
            assert proc.poll() is None, proc.communicate()
            if hb is None:
                continue
            seen = pids.setdefault(hb.name, [])
            if hb.pid not in seen:
                seen.append(hb.pid)
            if killed is None and "out" in pids and "broker" in pids:
                os.kill(pids["out"][0], signal.SIGKILL)
                killed = time.monotonic()
            elif killed is not None and len(pids["out"]) == 2 and hb.ready and hb.name == "out":
                back = time.monotonic() - killed
                break
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"\nup: sink killed with -9, back (ready, new pid) after {back:.1f}s")
    assert back is not None and back < 5.0
    assert len(pids["broker"]) == 1  # the rest went on
    assert "out exited (rc=-9): restarting it in 0.5s" in out
    assert proc.returncode == 143
