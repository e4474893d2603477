"""Operations on a real pipeline (broker, VAD, the tiny.en worker, the metrics actor) transcribing a clip.

One run, observed from outside the way an operator would, then checked point by point:

* ``/metrics`` scraped and parsed with the Prometheus text parser (``prometheus_client.parser``):
  the worker's live-streams gauge is 1 during the clip and 0 after; the commit counter equals the
  commits a separate subscriber saw; the latency histogram counts exactly the committed words;
* ``voxpipe top`` in tmux, read with ``capture-pane``: every actor of the config with a heartbeat
  age under 3 s, the worker's stream count 1 during the clip and 0 after; ``q`` quits;
* ``voxpipe status`` exits 0 against the ready pipeline and non-zero within 5 s of the worker
  being killed (SIGKILL);
* the worker's ``/readyz`` answers 503 while the model loads and 200 after;
* the worker's ``--log-format json`` log parses line by line, and its lines about the stream say so.

The clip is the first 9 s of ``weather.wav``, played in real time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import wave

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import messages as m
from tests.procs import DATA, ROOT, VOXPIPE, Pipeline, child_env, free_port
from tests.test_operations_fast import http_get, sample, tmux, top_command

pytestmark = [pytest.mark.model, pytest.mark.realtime,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt: tmux)")]

CLIP_SECONDS = 9.0
STREAM = "ops1"


def short_clip(path, seconds: float = CLIP_SECONDS):
    with wave.open(str(DATA / "weather.wav")) as src:
        frames = src.readframes(int(src.getframerate() * seconds))
        params = src.getparams()
    with wave.open(str(path), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(frames)
    return path


def scrape(port: int) -> dict:
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, status
    return {f.name: f for f in text_string_to_metric_families(text)}


def worker_streams(fams: dict) -> float | None:
    return sample(fams, "voxpipe_actor_streams", actor="asr") if "voxpipe_actor_streams" in fams else None


def screen_rows(screen: str) -> dict[str, list[str]]:
    """``voxpipe top``'s table: actor name -> the row's cells (ACTOR ROLE POOL STATE AGE PID CPU% RSS STREAMS ...)."""
    rows = {}
    for line in screen.splitlines():
        cells = line.split()
        if len(cells) >= 9 and cells[0] != "ACTOR" and cells[4].endswith("s"):
            rows[cells[0]] = cells
    return rows


def age(cells: list[str]) -> float:
    return float(cells[4].rstrip("s"))


def wait_for(predicate, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = predicate()
    return value


class Collector(threading.Thread):
    """A subscriber of its own: every commit on the worker's transcript topic, until eos."""

    def __init__(self, sub):
        super().__init__(daemon=True)
        self.sub = sub
        self.commits: list[m.Commit] = []
        self.eos = threading.Event()

    def run(self):
        for msg in self.sub:
            if isinstance(msg, m.Commit):
                self.commits.append(msg)
            elif isinstance(msg, m.EndOfStream):
                self.eos.set()
                return


@pytest.fixture(scope="module")
def ops_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ops")
    clip = short_clip(d / "clip.wav")
    health, metrics = free_port(), free_port()
    sock = f"voxpipe-ops-{time.monotonic_ns()}"
    run: dict = {}
    with Pipeline(d, env={"HF_HUB_OFFLINE": "1"}) as p:
        cfg = p.write_config(f"metrics:\n  enabled: true\n  port: {metrics}\n"
                             "workers:\n  - name: asr\n    model: tiny.en\n    language: en\n"
                             "    options: {device: cpu}\n")
        run["cfg"] = cfg
        p.start("vad", ["vad", "--config", str(cfg)])
        worker = p.start("asr", ["worker", "--config", str(cfg), "--name", "asr", "--health-port", str(health),
                                 "--log-format", "json"])
        codes = []  # /readyz answers from the worker's start, until the first 200
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and worker.alive():
            code = http_get(f"http://127.0.0.1:{health}/readyz", timeout=1.0)[0]
            if code is not None:
                codes.append(code)
            if code == 200:
                break
            time.sleep(0.02)
        run["readyz"] = codes
        run["healthz"] = http_get(f"http://127.0.0.1:{health}/healthz")
        p.start("metrics", ["metrics", "--config", str(cfg)])
        p.wait_ready("vad", "asr", "metrics", timeout=60)
        run["status_ready"] = status(cfg)
        try:
            tmux("new-session", "-d", "-s", "top", "-x", "200", "-y", "30", top_command(cfg), socket=sock)

            def screen():
                return tmux("capture-pane", "-p", "-t", "top", socket=sock).stdout

            def worker_row_shows(n):
                def check():
                    rows = screen_rows(s := screen())
                    return s if rows.get("asr", [""] * 9)[8] == f"{n}/16" else None
                return check

            run["screen_idle"] = wait_for(worker_row_shows(0), 20) or screen()
            collector = Collector(p.subscribe("transcript.asr."))
            collector.start()
            p.start("cap", ["capture", f"file:{clip}", "--stream", STREAM, "--speed", "1",
                            "--wait-for", "vad,asr,metrics"])
            # during the clip
            run["streams_during"] = wait_for(lambda: worker_streams(scrape(metrics)) == 1, 8) and 1
            run["screen_during"] = wait_for(worker_row_shows(1), 8) or screen()
            assert collector.eos.wait(CLIP_SECONDS + 40), p.logs()
            # after: the worker's next heartbeats say the stream is gone
            p.wait_heartbeat("asr", lambda hb: hb.counters.get("streams_active") == 0, timeout=10)
            time.sleep(1.2)
            run["metrics_after"] = scrape(metrics)
            run["commits"] = list(collector.commits)
            run["screen_after"] = wait_for(worker_row_shows(0), 8) or screen()
            tmux("send-keys", "-t", "top", "q", socket=sock)
            run["top_quit"] = wait_for(lambda: tmux("has-session", "-t", "top", socket=sock).returncode != 0, 5)
        finally:
            tmux("kill-server", socket=sock)
        # the worker dies
        worker.popen.kill()
        killed = time.monotonic()
        rc, out, _ = status(cfg)
        run["status_killed"] = (rc, out, time.monotonic() - killed)
        run["worker_log"] = worker.log()
    return run


def status(cfg) -> tuple[int, str, float]:
    t0 = time.monotonic()
    res = subprocess.run(VOXPIPE + ["status", "--config", str(cfg)], capture_output=True, text=True,
                         env=child_env(), cwd=str(ROOT), timeout=30)
    return res.returncode, res.stdout + res.stderr, time.monotonic() - t0


def test_the_live_streams_gauge_is_1_during_the_clip_and_0_after(ops_run):
    assert ops_run["streams_during"] == 1
    assert worker_streams(ops_run["metrics_after"]) == 0
    fams = ops_run["metrics_after"]
    assert sample(fams, "voxpipe_actor_up", actor="asr", role="worker", pool="asr") == 1
    assert sample(fams, "voxpipe_pool_streams", pool="asr") == 0


def test_the_commit_counter_equals_the_commits_a_subscriber_saw(ops_run):
    commits = ops_run["commits"]
    assert len(commits) >= 3 and "weather" in " ".join(c.text for c in commits).lower()
    fams = ops_run["metrics_after"]
    assert sample(fams, "voxpipe_commits", "voxpipe_commits_total", actor="asr") == len(commits)
    # the worker's own count, from its heartbeat, agrees
    assert sample(fams, "voxpipe_worker_commits", "voxpipe_worker_commits_total", actor="asr") == len(commits)
    assert sample(fams, "voxpipe_streams_ended", "voxpipe_streams_ended_total", actor="asr") == 1


def test_the_latency_histogram_counts_every_committed_word(ops_run):
    words = sum(len(c.words) for c in ops_run["commits"])
    fams = ops_run["metrics_after"]
    count = sample(fams, "voxpipe_commit_latency_seconds", "voxpipe_commit_latency_seconds_count", actor="asr")
    total = sample(fams, "voxpipe_commit_latency_seconds", "voxpipe_commit_latency_seconds_sum", actor="asr")
    assert words > 10 and count == words
    expected = sum(lat for c in ops_run["commits"] for lat in c.word_latencies())
    assert total == pytest.approx(expected, rel=1e-6)
    assert 0 < total / count < 5  # seconds per word: a real-time pipeline
    assert sample(fams, "voxpipe_commit_latency_seconds", "voxpipe_commit_latency_seconds_bucket", actor="asr",
                  le="+Inf") == words


def test_top_lists_every_actor_with_a_fresh_heartbeat_and_the_worker_stream_count(ops_run):
    for key, streams in (("screen_idle", "0/16"), ("screen_during", "1/16"), ("screen_after", "0/16")):
        rows = screen_rows(ops_run[key])
        for name in ("broker", "vad", "asr", "metrics"):
            assert name in rows, f"{key}: {name} missing\n{ops_run[key]}"
            assert rows[name][3] == "ready" and age(rows[name]) < 3.0, f"{key}: {rows[name]}"
        assert rows["asr"][1:3] == ["worker", "asr"] and rows["asr"][8] == streams, f"{key}\n{ops_run[key]}"
    assert ops_run["top_quit"], "voxpipe top did not quit on q"


def test_status_exits_0_when_ready_and_nonzero_within_5s_of_the_worker_being_killed(ops_run):
    rc, out, _ = ops_run["status_ready"]
    assert rc == 0, out
    lines = {line.split()[0]: line.split() for line in out.splitlines()}
    assert {"broker", "vad", "asr", "metrics"} <= set(lines) and lines["asr"][2] == "ready"
    rc, out, took = ops_run["status_killed"]
    assert rc != 0 and took < 5.0, (rc, took, out)
    assert [line for line in out.splitlines() if line.startswith("asr ")][0].split()[2] in ("missing", "down")


def test_readyz_is_503_while_the_model_loads_and_200_after(ops_run):
    codes = ops_run["readyz"]
    assert codes[0] == 503 and codes[-1] == 200, codes
    assert set(codes) == {503, 200}
    assert ops_run["healthz"] == (200, "ok\n")


def test_the_worker_json_log_parses_line_by_line(ops_run):
    lines = [line for line in ops_run["worker_log"].splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "actor", "message"} <= set(r) for r in records)
    assert {r["actor"] for r in records} == {"asr"}
    about_stream = [r for r in records if STREAM in r["message"]]
    assert about_stream and all(r.get("stream") == STREAM for r in about_stream), about_stream
