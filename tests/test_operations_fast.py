"""Operations without a model: the metrics mapping, JSON logs, health endpoints, ``voxpipe status`` and ``top``.

Real processes on loopback where it matters (a broker with its health listener and JSON logs,
``voxpipe status`` against it, ``voxpipe top`` in tmux); the Prometheus mapping is fed made-up
heartbeats and commits in-process and read back with the official text parser.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import messages as m
from pipeline.config import ConfigError, load_config
from tests.procs import ROOT, VOXPIPE, Pipeline, child_env, free_port


def http_get(url: str, timeout: float = 2.0) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, ""


def wait_http(url: str, want: int, timeout: float = 20.0) -> tuple[int | None, str]:
    deadline = time.monotonic() + timeout
    got: tuple[int | None, str] = (None, "")
    while time.monotonic() < deadline:
        got = http_get(url)
        if got[0] == want:
            return got
        time.sleep(0.05)
    return got


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict, metric: str, name: str | None = None, **labels) -> float | None:
    for s in fams[metric].samples:
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


# -- the Prometheus mapping ----------------------------------------------------------------------
def heartbeat(name, role, seq, counters=None, info=None, ready=True, pid=100):
    return m.Heartbeat(stream="", seq=seq, name=name, role=role, ready=ready, pid=pid, time=time.time(),
                       counters=counters or {}, info=info or {})


def test_heartbeats_and_commits_become_prometheus_metrics():
    from prometheus_client import generate_latest

    from workers.metrics_registry import BusMetrics

    bm = BusMetrics(interval=1.0)
    t0 = time.monotonic()
    bm.observe("status.asr", heartbeat("asr", "worker", 0, {"streams_active": 1, "decodes": 7, "rtf": 0.3,
                                                            "streams_refused": 2, "queue_wait_s_p90": 0.12,
                                                            "queue_wait_s": 4.5, "batches": 3, "batched_steps": 8},
                                       {"host": "box", "pool": "en", "max_streams": 4, "decode_queue": {
                                           "recent_steps": 9, "queue_wait_ms": {"p50": 10.0, "p90": 250.0,
                                                                                "max": 400.0},
                                           "batch_size": {"mean": 2.67, "max": 3, "counts": {"2": 1, "3": 2}}}}),
               now=t0)
    bm.observe("status.broker", heartbeat("broker", "broker", 0, {"messages": 50}), now=t0)
    wall0 = time.time() - 10
    commit = m.Commit(stream="s", seq=0, beg=1.0, end=2.0, text="hello world", worker="asr",
                      words=[[1.0, 1.4, "hello"], [1.5, 2.0, "world"]], emitted=wall0 + 3.0, wall0=wall0)
    bm.observe("transcript.en.s", commit, now=t0)
    bm.observe("transcript.en.s", m.EndOfStream(stream="s", seq=2, worker="asr"), now=t0)  # seq 1 was lost
    fams = families(generate_latest(bm.registry).decode())
    lab = {"actor": "asr", "role": "worker", "pool": "en", "host": "box"}
    assert sample(fams, "voxpipe_actor_up", **lab) == 1
    assert sample(fams, "voxpipe_actor_streams", **lab) == 1
    assert sample(fams, "voxpipe_worker_decodes", "voxpipe_worker_decodes_total", **lab) == 7
    assert sample(fams, "voxpipe_actor_streams_refused", **lab) == 2
    assert sample(fams, "voxpipe_worker_real_time_factor", **lab) == pytest.approx(0.3)
    assert sample(fams, "voxpipe_worker_stream_slots", **lab) == 4
    assert sample(fams, "voxpipe_actor_counter", counter="queue_wait_s_p90", **lab) == pytest.approx(0.12)
    # the decode queue: waits and batches in all (counters), and over the recent steps (the heartbeat's summary)
    assert sample(fams, "voxpipe_worker_queue_wait_seconds", "voxpipe_worker_queue_wait_seconds_total",
                  **lab) == pytest.approx(4.5)
    assert sample(fams, "voxpipe_worker_batched_steps", "voxpipe_worker_batched_steps_total", **lab) == 8
    assert sample(fams, "voxpipe_worker_batches", "voxpipe_worker_batches_total", **lab) == 3
    assert sample(fams, "voxpipe_worker_queue_wait_p90_seconds", **lab) == pytest.approx(0.25)
    assert sample(fams, "voxpipe_worker_batch_size_mean", **lab) == pytest.approx(2.67)
    assert sample(fams, "voxpipe_pool_load", pool="en") == pytest.approx(0.25)
    assert sample(fams, "voxpipe_broker_messages", "voxpipe_broker_messages_total", actor="broker") == 50
    assert sample(fams, "voxpipe_commits", "voxpipe_commits_total", **lab) == 1
    assert sample(fams, "voxpipe_commit_latency_seconds", "voxpipe_commit_latency_seconds_count", **lab) == 2
    # per word: emitted - wall0 - word end = 3.0 - 1.4 and 3.0 - 2.0
    assert sample(fams, "voxpipe_commit_latency_seconds", "voxpipe_commit_latency_seconds_sum",
                  **lab) == pytest.approx(1.6 + 1.0)
    assert sample(fams, "voxpipe_bus_messages_lost", "voxpipe_bus_messages_lost_total", family="transcript") == 1
    # conventions: every family has help; counters are exposed as *_total; no *_created series
    for f in fams.values():
        assert f.name.startswith("voxpipe_") and f.documentation, f.name
        if f.type == "counter":
            assert all(s.name.endswith("_total") for s in f.samples), f.name
        assert not any(s.name.endswith("_created") for s in f.samples), f.name
    # three missed heartbeats: down (the one liveness rule), and out of the pool's capacity
    bm.liveness.peers["asr"].last_seen -= 3.5
    fams = families(generate_latest(bm.registry).decode())
    assert sample(fams, "voxpipe_actor_up", **lab) == 0
    assert sample(fams, "voxpipe_pool_workers_up", pool="en") == 0


# -- JSON logs -------------------------------------------------------------------------------------
def test_json_log_lines_carry_time_level_actor_stream_and_message():
    import io

    from pipeline.logformat import JsonFormatter, stream_context

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("voxpipe.worker.asr-test")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("plain %s", "line")
        with stream_context("mic1"):
            log.info("about a stream")
        log.info("given a stream", extra={"stream": "s2"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["message"] for r in lines] == ["plain line", "about a stream", "given a stream", "failed"]
    assert {r["actor"] for r in lines} == {"asr-test"}
    assert [r.get("stream") for r in lines] == [None, "mic1", "s2", None]
    assert lines[0]["level"] == "WARNING" and lines[0]["time"].endswith("Z")
    assert "ValueError: boom" in lines[3]["exc"]


# -- config ------------------------------------------------------------------------------------------
def test_health_ports_follow_the_plan_and_clashes_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("health: {enabled: true, port: 9400}\nmetrics: {enabled: true, port: 9403}\n"
                    "workers: [{name: asr}]\n")
    cfg = load_config(path)
    names = cfg.actor_names()
    assert names == ["broker", "vad", "asr", "metrics"]
    assert [cfg.health.port_for(n, names) for n in names[:3]] == [9400, 9401, 9402]
    path.write_text("health: {enabled: true, port: 9400}\nmetrics: {enabled: true, port: 9402}\n"
                    "workers: [{name: asr}]\n")
    with pytest.raises(ConfigError, match="health: port 9402 of actor 'asr' clashes with metrics.port"):
        load_config(path)


# -- a broker with health endpoints and JSON logs; status; top -----------------------------------------
@pytest.fixture
def broker_pipeline(tmp_path):
    hp = free_port()
    p = Pipeline(tmp_path, broker=False)
    cfg = p.write_config("vad: {enabled: false}\n")
    p.start("broker", ["broker", "--config", str(cfg), "--health-port", str(hp), "--log-format", "json"])
    try:
        p.wait_ready("broker")
        yield p, cfg, hp
    finally:
        p.stop_all()


def status(cfg) -> tuple[int, str, float]:
    t0 = time.monotonic()
    res = subprocess.run(VOXPIPE + ["status", "--config", str(cfg)], capture_output=True, text=True,
                         env=child_env(), cwd=str(ROOT), timeout=30)
    return res.returncode, res.stdout + res.stderr, time.monotonic() - t0


def test_broker_health_endpoints_json_logs_and_status(broker_pipeline):
    p, cfg, hp = broker_pipeline
    assert http_get(f"http://127.0.0.1:{hp}/healthz") == (200, "ok\n")
    assert wait_http(f"http://127.0.0.1:{hp}/readyz", 200)[0] == 200
    assert http_get(f"http://127.0.0.1:{hp}/nope")[0] == 404
    rc, out, _ = status(cfg)
    assert rc == 0, out
    assert out.split()[:3] == ["broker", "broker", "ready"]
    p.procs["broker"].popen.kill()
    p.procs["broker"].popen.wait(5)
    rc, out, took = status(cfg)
    assert rc == 1 and "missing" in out and took < 5, (rc, out, took)
    records = [json.loads(line) for line in p.procs["broker"].log().splitlines()]
    assert any(r["message"].startswith("forwarding tcp://") and r["actor"] == "broker" for r in records)
    assert all(set(r) >= {"time", "level", "actor", "message"} for r in records)


def top_command(cfg) -> str:
    """``voxpipe top`` for a tmux pane (COLUMNS/LINES, which pytest sets, would override the pane's size)."""
    return f"env -u COLUMNS -u LINES PYTHONPATH={ROOT} {sys.executable} -m apps.cli top --config {cfg}"


def tmux(*args: str, socket: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10)


def wait_screen(sock: str, predicate, timeout: float = 20.0) -> str:
    """The pane's text once ``predicate(text)`` holds (or the last one after ``timeout``)."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline and not predicate(screen):
        time.sleep(0.3)
        screen = tmux("capture-pane", "-p", "-t", "top", socket=sock).stdout
    return screen


def broker_ready(screen: str) -> bool:
    """top's table has the broker's row: name, role, pool, state ready."""
    return any(line.split()[:4] == ["broker", "broker", "broker", "ready"] for line in screen.splitlines())


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt: tmux)")
def test_top_quits_on_ctrl_c(broker_pipeline):
    p, cfg, _ = broker_pipeline
    sock = f"voxpipe-test-{time.monotonic_ns()}"
    cmd = top_command(cfg)
    try:
        assert tmux("new-session", "-d", "-s", "top", "-x", "160", "-y", "20", cmd, socket=sock).returncode == 0
        screen = wait_screen(sock, broker_ready)
        assert broker_ready(screen), screen
        tmux("send-keys", "-t", "top", "C-c", socket=sock)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and tmux("has-session", "-t", "top", socket=sock).returncode == 0:
            time.sleep(0.1)
        assert tmux("has-session", "-t", "top", socket=sock).returncode != 0, "top still running after Ctrl-C"
    finally:
        tmux("kill-server", socket=sock)


def test_the_grafana_dashboard_reads_only_metrics_the_metrics_actor_exports():
    import re

    from prometheus_client import generate_latest

    from workers.metrics_registry import ACTOR_COUNTERS, ROLE_COUNTERS, BusMetrics

    bm = BusMetrics()
    now = time.monotonic()
    every = {k: 1 for k in ACTOR_COUNTERS} | {k: 1 for k in ROLE_COUNTERS["worker"]}
    bm.observe("status.asr", heartbeat("asr", "worker", 0, every, {"max_streams": 4, "concurrency": 2,
                                                                   "rss_bytes": 10}), now=now)
    bm.observe("status.broker", heartbeat("broker", "broker", 0, {k: 1 for k in ROLE_COUNTERS["broker"]}), now=now)
    w0 = time.time() - 5
    bm.observe("transcript.asr.s", m.Commit(stream="s", seq=0, end=1.0, words=[[0.5, 1.0, "a"]], worker="asr",
                                            emitted=w0 + 2, wall0=w0), now=now)
    bm.observe("partial.asr.s", m.Partial(stream="s", seq=0, text="a", worker="asr"), now=now)
    bm.observe("transcript.asr.s", m.Error(stream="s", seq=1, message="x", worker="asr"), now=now)
    bm.observe("transcript.asr.s", m.EndOfStream(stream="s", seq=3, worker="asr"), now=now)
    exported = {s.name for f in families(generate_latest(bm.registry).decode()).values() for s in f.samples}
    dash = json.loads((ROOT / "deploy" / "grafana" / "voxpipe-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bvoxpipe_[a-z_]+", e)}
    assert len(used) >= 15 and used <= exported, sorted(used - exported)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt: tmux)")
def test_status_and_top_read_a_curve_bus_with_the_configs_keys(tmp_path):
    """With CURVE on, status and top see the actors through the config's client keys (and quit on q)."""
    from pipeline.security import create_keys

    keys = tmp_path / "keys"
    create_keys(keys)
    sock = f"voxpipe-test-{time.monotonic_ns()}"
    with Pipeline(tmp_path / "p", curve_keys=keys) as p:
        cfg = p.write_config("vad: {enabled: false}\n")
        rc, out, _ = status(cfg)
        assert rc == 0 and out.split()[:3] == ["broker", "broker", "ready"], out
        try:
            tmux("new-session", "-d", "-s", "top", "-x", "160", "-y", "20", top_command(cfg), socket=sock)
            screen = wait_screen(sock, broker_ready)
            assert "(CURVE)" in screen and broker_ready(screen), screen
            tmux("send-keys", "-t", "top", "q", socket=sock)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and tmux("has-session", "-t", "top", socket=sock).returncode == 0:
                time.sleep(0.1)
            assert tmux("has-session", "-t", "top", socket=sock).returncode != 0, "top still running after q"
        finally:
            tmux("kill-server", socket=sock)


def test_voxpipe_up_starts_the_metrics_actor_and_the_health_listeners(tmp_path):
    """The plan (and so ``voxpipe up`` and the process-manager exports) runs the metrics actor last."""
    import signal

    from apps.plan import actor_processes
    from tests.procs import Bus, Session

    bus, health, metrics = Bus.free(), free_port(), free_port()
    path = tmp_path / "ops.yaml"
    path.write_text(bus.yaml() + f"vad: {{enabled: false}}\nhealth: {{enabled: true, port: {health}}}\n"
                    f"metrics: {{enabled: true, port: {metrics}}}\n")
    procs = actor_processes(load_config(path))
    assert [(p.name, p.role) for p in procs] == [("broker", "broker"), ("metrics", "metrics")]
    assert procs[-1].argv[-5:] == ("metrics", "--config", str(path), "--name", "metrics")
    up = Session(VOXPIPE + ["up", str(path)], tmp_path / "up.log")
    try:
        assert wait_http(f"http://127.0.0.1:{metrics}/readyz", 200)[0] == 200, up.log()
        assert wait_http(f"http://127.0.0.1:{health}/readyz", 200)[0] == 200, up.log()  # the broker, first actor
        rc, out, _ = status(path)
        assert rc == 0, out
        fams = families(http_get(f"http://127.0.0.1:{metrics}/metrics")[1])
        assert sample(fams, "voxpipe_actor_up", actor="broker", role="broker") == 1
        up.popen.send_signal(signal.SIGINT)
        assert up.popen.wait(20) == 130
    finally:
        up.cleanup()
