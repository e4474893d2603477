"""Capture and VAD as real processes on loopback (plus the speech gate in-process)."""

from __future__ import annotations

import json
import signal
import time
import wave

import numpy as np
import pytest

from pipeline import messages as m
from pipeline.bus import Publisher, Subscriber, handshake
from tests.procs import DATA, Pipeline

SR = 16000
CLIP = "history_gaps"  # 4 sentences, 3 silences of ~1.9 s


def read_wav(path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def silences(x: np.ndarray, min_s: float = 0.5) -> list[tuple[float, float]]:
    """Digital-silence runs (|x| <= 30) longer than ``min_s``, in seconds: the ground truth."""
    quiet = np.concatenate([[0], (np.abs(x.astype(np.int32)) <= 30).astype(np.int8), [0]])
    d = np.diff(quiet)
    return [(s / SR, e / SR) for s, e in zip(np.where(d == 1)[0], np.where(d == -1)[0], strict=False)
            if e - s > min_s * SR]


def sentences(name: str) -> int:
    return json.loads((DATA / f"{name}.json").read_text())["text"].count(".")


def write_wav(path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(samples.astype("<i2").tobytes())


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    with Pipeline(tmp_path_factory.mktemp("capvad")) as p:
        p.start("vad", ["vad", "--idle-timeout", "3"])
        p.wait_ready("vad")
        yield p


@pytest.fixture(scope="module")
def clip4(tmp_path_factory):
    """The first 4 s of the clip as a WAV file, and its samples."""
    x = read_wav(DATA / f"{CLIP}.wav")[: 4 * SR]
    path = tmp_path_factory.mktemp("clip") / "clip4.wav"
    write_wav(path, x)
    return path, x


def collect(sub, until=None):
    """(topic, msg, monotonic arrival) until the subscription stops."""
    out = []
    for topic, msg in sub.items():
        out.append((topic, msg, time.monotonic()))
        if until is not None and until(topic, msg):
            break
    return out


def check_contiguous(frames: list[m.Audio]) -> float:
    """Frames follow each other sample-exactly; returns the total duration."""
    pos = frames[0].t
    for f in frames:
        assert f.t == pytest.approx(pos, abs=1e-6)
        pos += f.duration
    return pos - frames[0].t


# -- the full path: file -> capture -> audio.* -> vad -> speech.* ---------------------------------
def test_file_through_vad(pipe):
    x = read_wav(DATA / f"{CLIP}.wav")
    file_s = len(x) / SR
    quiet = silences(x)
    assert len(quiet) == sentences(CLIP) - 1  # the clip is what we think it is

    sub = pipe.subscribe("audio.gaps1", "speech.gaps1", stop_after_eos=2, timeout=30)
    pipe.start("cap", ["capture", f"file:{DATA / CLIP}.wav", "--stream", "gaps1", "--speed", "0", "--wait-for", "vad"])
    got = collect(sub)
    assert pipe.wait_exit("cap", 20) == 0, pipe.logs()
    assert sub.rejected == 0 and sub.gaps == 0

    audio = [msg for t, msg, _ in got if t == "audio.gaps1"]
    speech = [msg for t, msg, _ in got if t == "speech.gaps1"]
    # capture: every sample of the file, contiguous from 0, then eos at the end
    frames = [f for f in audio if isinstance(f, m.Audio)]
    assert isinstance(audio[-1], m.EndOfStream) and audio[-1].t == pytest.approx(file_s, abs=1e-3)
    assert frames[0].t == 0 and check_contiguous(frames) == pytest.approx(file_s, abs=1e-6)
    assert b"".join(f.pcm for f in frames) == x.tobytes()
    assert [f.seq for f in audio] == list(range(len(audio)))
    assert all(len(f.pcm) == 3200 for f in frames[:-1])

    # vad: start, audio..., end per sentence; boundaries inside the silences
    assert isinstance(speech[-1], m.EndOfStream)
    kinds = "".join({"speech_start": "S", "speech_end": "E", "audio": "a", "eos": "Z"}[s.kind] for s in speech)
    segments = kinds[:-1].split("E")[:-1]
    assert len(segments) == sentences(CLIP), kinds
    assert all(seg[0] == "S" and set(seg[1:]) == {"a"} for seg in segments), kinds
    starts = [s.t for s in speech if isinstance(s, m.SpeechStart)]
    ends = [s.t for s in speech if isinstance(s, m.SpeechEnd)]
    assert starts[0] < 0.3
    assert ends[-1] > file_s - 1.0
    for (q0, q1), end, start in zip(quiet, ends, starts[1:], strict=False):
        assert q0 < end < start < q1, (quiet, starts, ends)

    # forwarded audio: exactly [start, end) of each segment, the file's own samples
    total = 0.0
    i = 0
    for start, end in zip(starts, ends, strict=False):
        while not isinstance(speech[i], m.SpeechStart):
            i += 1
        seg = []
        i += 1
        while isinstance(speech[i], m.Audio):
            seg.append(speech[i])
            i += 1
        assert seg[0].t == pytest.approx(start, abs=1e-6)
        assert check_contiguous(seg) == pytest.approx(end - start, abs=1e-6)
        n = round(start * SR)
        assert b"".join(f.pcm for f in seg) == x[n : n + round((end - start) * SR)].tobytes()
        total += end - start
    speech_s = file_s - sum(q1 - q0 for q0, q1 in quiet)
    assert speech_s - 0.3 < total < speech_s + 0.5 * len(starts)
    assert total < 0.9 * file_s
    # wall0 is copied from the capture's frames
    assert {s.wall0 for s in speech if isinstance(s, m.Audio)} <= {f.wall0 for f in frames}

    hb = pipe.wait_heartbeat("vad", lambda h: h.counters.get("streams_active") == 0, timeout=5)
    assert hb.counters["speech_segments"] >= len(starts)
    assert 0 < hb.info["cpu_per_audio_s"] < 0.1  # Silero must stay cheap


def test_speed_4_is_four_times_faster(pipe, clip4):
    path, _ = clip4
    sub = pipe.subscribe("audio.fast", stop_after_eos=1, timeout=20)
    pipe.start("cap4", ["capture", f"file:{path}", "--stream", "fast", "--speed", "4", "--wait-for", ""])
    got = collect(sub)
    assert pipe.wait_exit("cap4", 20) == 0, pipe.logs()
    frames = [(msg, at) for _, msg, at in got if isinstance(msg, m.Audio)]
    assert check_contiguous([f for f, _ in frames]) == pytest.approx(4.0, abs=1e-6)
    # first frame is due at 0.1/4 s, the last at 4.0/4 s: 0.975 s apart (not 3.9)
    span = frames[-1][1] - frames[0][1]
    assert 0.85 < span < 1.5, span
    # wall0 + end of frame = when the frame was sent (so latencies stay meaningful)
    wall_now = time.time() - time.monotonic()  # monotonic -> Unix offset
    for f, at in frames:
        assert abs(f.wall0 + f.t + f.duration - (at + wall_now)) < 0.25
    assert frames[-1][0].wall0 - frames[0][0].wall0 == pytest.approx(-(3.9 * 0.75), abs=0.01)


@pytest.mark.parametrize("rate", [16000, 8000])
def test_stdin_raw_pcm(pipe, clip4, tmp_path, rate):
    _, x = clip4
    raw = tmp_path / "in.raw"
    raw.write_bytes((x if rate == 16000 else x[::2]).tobytes())
    stream = f"stdin{rate}"
    sub = pipe.subscribe(f"audio.{stream}", stop_after_eos=1, timeout=20)
    with open(raw, "rb") as stdin:
        pipe.start(f"cap-{rate}", ["capture", "stdin", "--stream", stream, "--speed", "0", "--sample-rate", str(rate),
                                   "--wait-for", ""], stdin=stdin)
        got = collect(sub)
    assert pipe.wait_exit(f"cap-{rate}", 20) == 0, pipe.logs()
    frames = [msg for _, msg, _ in got if isinstance(msg, m.Audio)]
    eos = got[-1][1]
    assert isinstance(eos, m.EndOfStream)
    assert check_contiguous(frames) == pytest.approx(4.0, abs=2 / rate)
    assert eos.t == pytest.approx(4.0, abs=2 / rate)
    if rate == 16000:
        assert b"".join(f.pcm for f in frames) == x.tobytes()
    else:  # resampled: same signal, close to the original
        y = np.frombuffer(b"".join(f.pcm for f in frames), dtype="<i2").astype(float)
        n = min(len(y), len(x))
        assert np.corrcoef(y[:n], x[:n].astype(float))[0, 1] > 0.9


def test_sigterm_sends_eos(pipe, clip4):
    path, _ = clip4
    sub = pipe.subscribe("audio.looped", stop_after_eos=1, timeout=20)
    proc = pipe.start("caploop", ["capture", f"file:{path}", "--stream", "looped", "--loop", "--wait-for", ""])
    got = collect(sub, until=lambda t, msg: msg.seq == 2)
    proc.signal(signal.SIGTERM)
    got += collect(sub)
    assert pipe.wait_exit("caploop", 10) == 0, pipe.logs()
    frames = [msg for _, msg, _ in got if isinstance(msg, m.Audio)]
    assert isinstance(got[-1][1], m.EndOfStream)
    assert got[-1][1].t == pytest.approx(check_contiguous(frames), abs=1e-6)
    assert frames[0].wall0 == frames[-1].wall0  # real time: one wall0 for the stream


def test_config_waits_for_vad_and_workers(pipe, clip4):
    path, _ = clip4
    cfg = pipe.write_config(f"""
sources:
  - name: cfgcap
    input: file:{path}
    speed: 8
    wait_timeout: 3
workers:
  - name: absent-worker
""", name="wait.yaml")
    sub = pipe.subscribe("audio.cfgcap", stop_after_eos=1, timeout=20)
    pipe.start("cfgcap", ["capture", "--config", str(cfg), "--name", "cfgcap"], bus=False)
    # the default wait_for is the vad and every worker: the vad is seen ready, the worker never
    hb = pipe.wait_heartbeat("cfgcap", lambda h: h.info.get("state") == "waiting", timeout=10)
    assert set(hb.info["waiting_for"]) <= {"vad", "absent-worker"} and "absent-worker" in hb.info["waiting_for"]
    pipe.wait_heartbeat("cfgcap", lambda h: h.info.get("waiting_for") == ["absent-worker"], timeout=5)
    got = collect(sub)
    assert pipe.wait_exit("cfgcap", 20) == 0, pipe.logs()
    assert isinstance(got[-1][1], m.EndOfStream) and got[-1][1].t == pytest.approx(4.0)
    log = pipe.procs["cfgcap"].log()
    assert "vad is ready" in log and "gave up waiting for absent-worker after" in log


def test_vad_sets_aside_backwards_frames_rejects_garbage_and_forgets_quiet_streams(pipe):
    import zmq

    before = pipe.wait_heartbeat("vad", lambda h: True)
    ctx = zmq.Context()
    try:
        pub, sub = Publisher(ctx, pipe.bus.config()), Subscriber(ctx, pipe.bus.config(), ["speech.rob"])
        assert handshake(pub, sub, "test-rob", timeout=10)
        tone = (np.sin(np.arange(1600) / 5) * 8000).astype("<i2").tobytes()
        for seq, t in enumerate([0.0, 0.1, 0.05, 0.2]):  # 0.05 goes backwards
            pub.send("audio.rob", m.Audio(stream="rob", seq=seq, t=t, wall0=1.0, pcm=tone))
        pub.sock.send_multipart([b"audio.rob", b"\xc1", tone])
        listed = pipe.wait_heartbeat("vad", lambda h: "rob" in h.info["streams"])
        # no eos, and it never carried speech: the vad forgets it after 2 s without a frame, saying nothing
        gone = pipe.wait_heartbeat("vad", lambda h: "rob" not in h.info["streams"], timeout=6)
        said = sub.recv(timeout_ms=500)
    finally:
        ctx.destroy(linger=0)
    assert listed and gone and said is None
    after = pipe.wait_heartbeat("vad", lambda h: h.counters["out_of_step"] > before.counters["out_of_step"])
    assert after.counters["out_of_step"] == before.counters["out_of_step"] + 1
    assert after.counters["rejected"] == before.counters["rejected"] + 1


# -- the speech gate alone ----------------------------------------------------------------------------
def gate_events(samples: np.ndarray, frame: int):
    from asr_core.speech_gate import SpeechGate
    from asr_core.vad import SileroVAD, SpeechSegmenter, VADOptions

    gate = SpeechGate(lambda t0: SpeechSegmenter(VADOptions(), SileroVAD(), t0=t0), 100)
    events = []
    for i in range(0, len(samples), frame):
        events += gate.push(i, samples[i : i + frame])
    return gate, events + gate.close()


def test_gate_is_independent_of_frame_size():
    x = read_wav(DATA / f"{CLIP}.wav")[: 10 * SR]
    _, a = gate_events(x, 1600)
    _, b = gate_events(x, 7777)

    def marks(evs):
        return [e for e in evs if e[0] != "audio"]

    assert marks(a) == marks(b) and len(marks(a)) >= 4

    def pcm(evs):
        return b"".join(e[2].tobytes() for e in evs if e[0] == "audio")

    assert pcm(a) == pcm(b)


def test_gate_sets_aside_backwards_frames_and_fills_small_gaps():
    x = read_wav(DATA / f"{CLIP}.wav")[: 3 * SR]
    gate, _ = gate_events(x[:SR], 1600)
    assert gate.push(SR - 3200, x[:1600]) == []  # backwards: set aside, nothing happens
    assert gate.received == SR and gate.clock.counts.out_of_step == 1
    gate.push(SR + 8000, x[SR : SR + 1600])  # half a second missing: filled with silence
    assert gate.received == SR + 8000 + 1600
    gate.push(10 * SR, x[:1600])  # a long gap (9 s: lost frames): the segmenter starts over there
    assert gate.received == 10 * SR + 1600 and gate.buf0 >= 10 * SR - 1600


# -- sources without a bus: resampling and a fake microphone -------------------------------------------
def test_stream_resampler_has_no_seams():
    from workers.capture_sources import StreamResampler

    x = np.sin(np.arange(44100) * 2 * np.pi * 440 / 44100).astype(np.float32)
    r = StreamResampler(44100)
    pieces = [r.push(x[i : i + 1234]) for i in range(0, len(x), 1234)] + [r.push(np.zeros(0), final=True)]
    y = np.concatenate(pieces)
    assert len(y) == 16000
    whole = np.interp(np.arange(16000) * 44100 / 16000, np.arange(len(x)), x)
    assert np.max(np.abs(y - whole)) < 1e-5


class FakeSoundDevice:
    """Just enough of the sounddevice API: one 48 kHz input device named 'Fake'."""

    def __init__(self):
        self.streams = []

    def query_devices(self, device=None, kind=None):
        if device not in (None, "Fake", 0):
            raise ValueError(f"No input device matching {device!r}")
        return {"name": "Fake", "default_samplerate": 48000.0, "max_input_channels": 1}

    def check_input_settings(self, samplerate=None, **_):
        if samplerate != 48000:
            raise ValueError("Invalid sample rate")

    def InputStream(self, **kw):  # noqa: N802 - the real name
        test = self

        class Stream:
            def __init__(self):
                self.kw = kw
                test.streams.append(self)

            def start(self):
                pass

            def stop(self):
                pass

            def close(self):
                pass

        return Stream()


def test_mic_source_resamples_the_device_rate(monkeypatch):
    import sys

    from workers import capture_sources as cs

    fake = FakeSoundDevice()
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with pytest.raises(cs.CaptureError, match="no input device 'USB'"):
        cs.MicSource("USB")
    mic = cs.MicSource("Fake", frame_ms=100)
    assert mic.rate == 48000 and mic.blocksize == 4800
    mic.start()
    callback = fake.streams[0].kw["callback"]
    tone = (np.sin(np.arange(48000) * 2 * np.pi * 300 / 48000) * 0.5).astype(np.float32)
    for i in range(0, 48000, 4800):
        callback(tone[i : i + 4800, None], 4800, None, None)
    got = []
    while True:
        out, eof = mic.read(1600)
        if not len(out):
            break
        got.append(out)
    y = np.concatenate(got)
    assert not eof and 15990 <= len(y) <= 16000
    ref = (np.sin(np.arange(len(y)) * 2 * np.pi * 300 / 16000) * 0.5 * 32767).astype(int)
    assert np.max(np.abs(y.astype(int) - ref)) < 100
    assert mic.first_wall is not None and abs(mic.first_wall - (time.time() - 0.1)) < 1.0
