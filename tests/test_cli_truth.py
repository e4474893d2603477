"""The command line tells the truth: a bad value or an output that cannot be written is one line and a
non-zero exit, before anything starts; a port the config names that is taken too.

(An output on a read-only mount needs a read-only mount: a tmpfs mounted read-only, which needs root.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

import pytest

from tests.procs import DATA, ROOT, Bus, free_port

CLIP = DATA / "weather.wav"


def voxpipe(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], capture_output=True, text=True, cwd=str(ROOT),
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def config(tmp_path, body: str) -> str:
    bus = Bus.free()
    path = tmp_path / "c.yaml"
    path.write_text(bus.yaml() + body)
    return str(path)


def test_a_bad_backend_option_is_one_line_with_its_key(tmp_path):
    cfg = config(tmp_path, f"""
sources:
  - name: cap
    input: file:{CLIP}
workers:
  - name: asr
    options: {{beam_size: wide}}
sinks:
  - name: out
    output: jsonl:{tmp_path}/t.jsonl
""")
    for res in (voxpipe("up", cfg), voxpipe("transcribe", str(CLIP), "--config", cfg),
                voxpipe("worker", "--config", cfg)):
        line = one_line(res)
        assert res.returncode == 3 and "workers[0].options.beam_size: 'wide' is not a positive integer" in line
    assert not (tmp_path / "t.jsonl").exists()


@contextlib.contextmanager
def read_only_mount(path):
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_an_output_that_cannot_be_written_is_one_line_before_anything_starts(tmp_path):
    with read_only_mount(tmp_path / "ro") as ro:
        for spec in (f"srt:{ro}/x/t.srt", f"jsonl:{ro}/t.jsonl", f"txt:{ro}/t.txt"):
            res = voxpipe("transcribe", str(CLIP), "-o", spec)
            line = one_line(res)
            assert res.returncode == 2 and f"--output {spec}" in line and "read-only" in line, line
        cfg = config(tmp_path, f"""
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{ro}/t.jsonl
""")
        for res in (voxpipe("up", cfg), voxpipe("sink", "--config", cfg)):
            line = one_line(res)
            assert res.returncode == 3 and "sinks[0].output: cannot write into" in line, line


def test_every_port_the_config_names_is_checked_before_anything_starts(tmp_path):
    snapshot, web = free_port(), free_port()
    cfg = config(tmp_path, f"""
sources:
  - name: cap
    input: file:{CLIP}
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{tmp_path}/t.jsonl
    snapshot: tcp://127.0.0.1:{snapshot}
web:
  enabled: true
  port: {web}
""")
    for key, port in (("sinks[0].snapshot", snapshot), ("web.port", web)):
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen()
            res = voxpipe("up", cfg)
        line = one_line(res)
        assert res.returncode == 1 and res.stdout == "" and f"{key} tcp://127.0.0.1:{port} already in use" in line
    assert not (tmp_path / "t.jsonl").exists()  # nothing started


def test_a_sink_that_could_not_write_does_not_exit_0(tmp_path):
    """A disk that fills up mid-run: the sink goes on (counting), and exits 1 with one line when it stops."""
    import signal
    import time

    from pipeline import messages as m
    from tests.procs import BusPublisher, Pipeline

    full = tmp_path / "full"
    full.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        with Pipeline(tmp_path / "p") as p:
            cfg = p.write_config(f"""
workers:
  - name: asr
sinks:
  - name: out
    output: jsonl:{full}/t.jsonl
""")
            sink = p.start("out", ["sink", "--config", str(cfg), "--name", "out"])
            p.wait_ready("out")
            with BusPublisher(p.bus, vouch=True) as pub:
                pub.wait_subscribed("transcript.")
                for i in range(100):
                    pub.send("transcript.asr.s1", m.Commit(stream="s1", seq=i, beg=i, end=i + 5.0, text=" word" * 60,
                                                           words=[], worker="asr", emitted=1.0, wall0=0.0))
                hb = p.wait_heartbeat("out", lambda h: h.counters["write_failures"] > 0, timeout=20)
            time.sleep(0.2)
            sink.signal(signal.SIGTERM)
            code = sink.wait(20)
            lines = [x for x in sink.log().splitlines() if x.startswith("voxpipe sink:")]
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)
    assert code == 1 and hb.counters["write_failures"] > 0
    assert len(lines) == 1 and "write(s) to jsonl:" in lines[0] and "No space left on device" in lines[0], lines
