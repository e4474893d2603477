"""A backend that cannot keep up with live audio says so.

* :class:`asr_core.keepup.KeepUpMonitor`: the real-time factor over the last decodes, judged
  once they hold 2 s of decoding; "behind" once when it stays above 1, "keeping up" once when
  it is back under 0.9.
* A real worker running the real tiny.en slowed down to real-time factor 2 (what mlx-whisper
  did on a Linux CPU, at 7) warns once in its log, and its heartbeats say ``behind`` with the
  factor, while a plain tiny.en worker on the same live stream does not; both still
  transcribe it.
* The web page shows a worker's ``behind`` in its status line.
"""

from __future__ import annotations

import re
import time
import wave

import numpy as np
import pytest

from asr_core.keepup import BEHIND, KEEPING_UP, KeepUpMonitor
from pipeline import messages as m
from tests.conftest import clip_path
from tests.procs import Pipeline


# -- the rule --------------------------------------------------------------------------------
def test_a_backend_twice_slower_than_the_audio_is_behind_once():
    k = KeepUpMonitor()
    verdicts = [k.add(t, 2.0, 1.0) for t in range(5)]  # every decode: 2 s for 1 s of audio
    assert verdicts == [BEHIND, None, None, None, None]
    assert k.behind and k.rtf == pytest.approx(2.0)


def test_one_slow_decode_among_fast_ones_is_no_verdict():
    k = KeepUpMonitor()
    assert k.add(0.0, 1.5, 1.0) is None  # slower than the audio, but only 1.5 s of decoding to judge by
    assert [k.add(1.0 + i, 0.1, 1.0) for i in range(8)] == [None] * 8
    assert not k.behind and k.rtf < 1


def test_keeping_up_again_is_said_once_after_the_window_has_moved_on():
    k = KeepUpMonitor(window_s=10.0)
    assert k.add(0.0, 7.0, 1.0) == BEHIND  # one decode of 7 s for 1 s of audio: enough to judge
    got = [k.add(t, 0.5, 5.0) for t in np.arange(11.0, 30.0, 1.0)]
    assert got.count(KEEPING_UP) == 1 and BEHIND not in got
    assert not k.behind and k.rtf == pytest.approx(0.1)


def test_a_backend_at_the_edge_is_not_flapping():
    k = KeepUpMonitor()
    rtfs = [1.2, 0.95, 1.1, 0.92, 1.05, 0.97]  # above 1, then not under 0.9: still behind
    got = [k.add(float(i), 2.0 * r, 2.0) for i, r in enumerate(rtfs)]
    assert got == [BEHIND, None, None, None, None, None]


# -- the page --------------------------------------------------------------------------------
def test_the_page_shows_a_worker_that_falls_behind():
    from workers.web_page import render_status
    from workers.web_streams import WebHub

    hub = WebHub(("asr",))

    def beat(behind, rtf):
        hub.on_message("status.asr", m.Heartbeat(
            stream="", seq=0, name="asr", role="worker", ready=True,
            info={"backend": "mlx-whisper", "model": "small", "language": "en", "behind": behind, "rtf_recent": rtf}))
        return render_status(hub.view(None), token_required=False)

    html = beat(False, 0.2)
    assert 'data-worker-behind="0"' in html and "worker asr ready" in html
    html = beat(True, 7.04)
    assert 'data-worker-behind="1"' in html
    assert "cannot keep up with live audio (real-time factor 7.0)" in html and "vp-behind" in html


# -- a real worker ---------------------------------------------------------------------------
def excerpt(folder, name: str, seconds: float):
    with wave.open(str(clip_path(name))) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")[: int(seconds * 16000)]
    path = folder / f"{name}-{seconds:g}s.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(x.tobytes())
    return path


@pytest.mark.model
@pytest.mark.realtime
def test_a_slow_worker_warns_once_and_its_heartbeat_says_so(tmp_path):
    from apps.bench.evaluation import wer

    clip = excerpt(tmp_path, "meeting", 6.0)  # "Thank you all for joining the meeting. The first item ..."
    with Pipeline(tmp_path, ready_timeout=90) as p:
        cfg = p.write_config(
            "workers:\n"
            "  - name: fast\n    model: tiny.en\n    language: en\n    input: audio\n    options: {device: cpu}\n"
            "  - name: slow\n    backend: tests.slow_backend:SlowWhisper\n    model: tiny.en\n    language: en\n"
            "    input: audio\n    options: {device: cpu, rtf: 2.0}\n")
        p.start("fast", ["worker", "--config", str(cfg), "--name", "fast"], env={"HF_HUB_OFFLINE": "1"})
        p.start("slow", ["worker", "--config", str(cfg), "--name", "slow"], env={"HF_HUB_OFFLINE": "1"})
        p.wait_ready("fast", "slow")
        sub = p.subscribe("transcript.", "status.fast", "status.slow")
        p.start("cap", ["capture", f"file:{clip}", "--stream", "live", "--speed", "1"])
        texts: dict[str, list[str]] = {"fast": [], "slow": []}
        ended: set[str] = set()
        last: dict[str, m.Heartbeat] = {}
        behind_seen: dict[str, dict] = {}
        deadline = time.monotonic() + 120
        for topic, msg in sub.items():
            if time.monotonic() > deadline:
                break
            if isinstance(msg, m.Heartbeat):
                last[msg.name] = msg
                if (msg.info or {}).get("behind"):
                    behind_seen.setdefault(msg.name, dict(msg.info))
            elif isinstance(msg, m.Commit):
                texts[msg.worker].append(msg.text)
            elif isinstance(msg, m.EndOfStream) and topic.startswith("transcript."):
                ended.add(msg.worker)
                if ended == {"fast", "slow"}:
                    break
        assert ended == {"fast", "slow"}, p.logs()
        slow_log, fast_log = p.procs["slow"].log(), p.procs["fast"].log()

    warnings = re.findall(r"cannot keep up with live audio: real-time factor ([\d.]+)", slow_log)
    assert len(warnings) == 1, slow_log[-3000:]
    assert 1.5 < float(warnings[0]) < 3.0
    assert "slow" in behind_seen and 1.5 < behind_seen["slow"]["rtf_recent"] < 3.0, behind_seen
    assert "fast" not in behind_seen and "cannot keep up" not in fast_log
    assert last["fast"].info["behind"] is False and last["fast"].info["rtf_recent"] < 1.0
    ref = "Thank you all for joining the meeting."
    for worker in ("fast", "slow"):  # slow or not, the words are right
        hyp = " ".join(texts[worker])
        assert wer(ref, " ".join(hyp.split()[: len(ref.split())])) <= 0.25, (worker, hyp)
