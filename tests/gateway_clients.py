"""Clients of the gateway's endpoints, as a user of each API writes them, for tests/test_gateway_clients.py.

* :func:`deepgram_stream`: the official ``deepgram-sdk`` (``DeepgramClient`` with a
  ``DeepgramClientEnvironment`` pointing at the gateway), audio sent in 100 ms chunks
  at real time, ``CloseStream`` at the end;
* :func:`realtime_session`: the official ``openai`` client's Realtime API
  (``client.realtime.connect``, ``intent=transcription``), PCM16 at 24 kHz;
* :func:`tcp_session`: a plain socket speaking whisper_streaming's protocol;
* :func:`sentences`: spoken sentences cut out of a ``_gaps`` clip (at its silences),
  each with its own reference text, and :func:`encode`: a clip as MP3 or Ogg Opus (PyAV).
"""

from __future__ import annotations

import base64
import io
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np

SR = 16000


# -- audio ------------------------------------------------------------------------------------------------
def sentences(clip: str, which: list[int], pad: float = 0.3) -> tuple[np.ndarray, str]:
    """The audio (int16, 16 kHz) and reference text of sentences ``which`` of a ``_gaps`` clip."""
    from asr_core.audio import load_audio
    from tests.conftest import clip_path, reference, silences

    audio = (load_audio(clip_path(clip)) * 32767).astype("<i2")
    texts = re.split(r"(?<=[.?!])\s+", reference(clip).strip())
    edges = [0.0] + [x for gap in silences(clip) for x in gap] + [len(audio) / SR]
    spans = [(edges[2 * i], edges[2 * i + 1]) for i in range(len(texts))]
    beg, end = spans[which[0]][0], spans[which[-1]][1]
    beg, end = max(0.0, beg - pad if which[0] else 0.0), min(len(audio) / SR, end + pad)
    return audio[int(beg * SR): int(end * SR)], " ".join(texts[i] for i in which)


def wav_bytes(pcm: np.ndarray, rate: int = SR) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def encode(pcm: np.ndarray, fmt: str, codec: str, rate: int) -> bytes:
    """16 kHz int16 audio encoded as ``fmt``/``codec`` at ``rate`` (e.g. mp3/libmp3lame/44100, ogg/libopus/48000)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        st = out.add_stream(codec, rate=rate)
        st.layout = "mono"
        rs = av.AudioResampler(format=st.codec_context.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(pcm.astype("<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SR
        for f in rs.resample(frame) + rs.resample(None):
            for pkt in st.encode(f):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return buf.getvalue()


def resample(pcm: np.ndarray, rate: int) -> np.ndarray:
    if rate == SR:
        return pcm
    n = int(round(len(pcm) * rate / SR))
    return np.interp(np.arange(n) * SR / rate, np.arange(len(pcm)), pcm.astype(np.float64)).astype("<i2")


# -- Deepgram ---------------------------------------------------------------------------------------------
@dataclass
class DeepgramRun:
    messages: list = field(default_factory=list)  # (seconds since the start, message as a dict)
    sent_until: float = 0.0  # when the last audio chunk went out
    close_sent: float = 0.0  # when CloseStream went out
    error: BaseException | None = None  # what ended the receiving loop, if not a clean close

    def of(self, kind: str) -> list:
        return [m for _, m in self.messages if m.get("type") == kind]

    def finals(self) -> list:
        return [m for m in self.of("Results") if m["is_final"]]

    def text(self) -> str:
        return " ".join(t for m in self.finals() if (t := m["channel"]["alternatives"][0]["transcript"].strip()))


def deepgram_client(port: int, key: str = "test-key"):
    from deepgram import DeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    env = DeepgramClientEnvironment(base=f"http://127.0.0.1:{port}", production=f"ws://127.0.0.1:{port}",
                                    agent=f"ws://127.0.0.1:{port}", agent_rest=f"http://127.0.0.1:{port}")
    return DeepgramClient(api_key=key, environment=env)


def deepgram_stream(port: int, data: bytes, key: str = "test-key", chunk_s: float = 0.1, speed: float = 1.0,
                    seconds: float | None = None, on_chunk=None, **options) -> DeepgramRun:
    """Stream ``data`` at real time and CloseStream: linear16 at ``sample_rate`` (default 16 kHz), or with
    ``encoding=None`` a container file lasting ``seconds``."""
    options.setdefault("encoding", "linear16")
    if options["encoding"] == "linear16":
        options.setdefault("sample_rate", 16000)
        step = int(int(options["sample_rate"]) * chunk_s) * 2
    else:
        step = max(1, int(len(data) * chunk_s / seconds)) if seconds else 3200
    options = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in options.items() if v is not None}
    run = DeepgramRun()
    t0 = time.monotonic()
    with deepgram_client(port, key).listen.v1.connect(model="nova-3", **options) as conn:
        def receive():
            try:
                for msg in conn:
                    run.messages.append((time.monotonic() - t0, msg.dict() if hasattr(msg, "dict") else msg))
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                run.error = exc

        rx = threading.Thread(target=receive, daemon=True)
        rx.start()
        for i, start in enumerate(range(0, len(data), step)):
            conn.send_media(data[start: start + step])
            if on_chunk is not None:
                on_chunk(i)
            if speed > 0:
                time.sleep(max(0.0, t0 + (i + 1) * chunk_s / speed - time.monotonic()))
        run.sent_until = time.monotonic() - t0
        conn.send_close_stream()
        run.close_sent = time.monotonic() - t0
        rx.join(60)
    return run


# -- OpenAI Realtime ----------------------------------------------------------------------------------------
def realtime_session(port: int, pcm16k: np.ndarray, key: str = "test-key", rate: int = 24000,
                     linger_s: float = 6.0) -> list:
    """Stream audio at real time into a transcription session; the server's events (type, event)."""
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
    audio = resample(pcm16k, rate)
    events: list = []
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        conn.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": rate}, "transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})

        def receive():
            try:
                for ev in conn:
                    events.append((time.monotonic(), ev))
            except Exception as exc:  # noqa: BLE001
                events.append((time.monotonic(), exc))

        threading.Thread(target=receive, daemon=True).start()
        step, t0 = rate // 10, time.monotonic()
        for i, start in enumerate(range(0, len(audio), step)):
            conn.input_audio_buffer.append(audio=base64.b64encode(audio[start: start + step].tobytes()).decode())
            time.sleep(max(0.0, t0 + (i + 1) * 0.1 - time.monotonic()))
        deadline = time.monotonic() + linger_s
        while time.monotonic() < deadline:
            started = sum(1 for _, e in events if getattr(e, "type", "") == "input_audio_buffer.speech_started")
            completed = sum(1 for _, e in events
                            if getattr(e, "type", "") == "conversation.item.input_audio_transcription.completed")
            if started and completed >= started:
                break
            time.sleep(0.1)
    return events


# -- whisper_streaming TCP ------------------------------------------------------------------------------------
def tcp_session(port: int, pcm: np.ndarray, speed: float = 1.0, chunk_s: float = 0.1, timeout: float = 60) -> str:
    """Send raw s16le 16 kHz like ``arecord | nc``, shut the sending side, read every line until the server closes."""
    data = pcm.astype("<i2").tobytes()
    step = int(SR * chunk_s) * 2
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        received: list[bytes] = []

        def receive():
            while chunk := sock.recv(65536):
                received.append(chunk)

        rx = threading.Thread(target=receive, daemon=True)
        rx.start()
        t0 = time.monotonic()
        for i, start in enumerate(range(0, len(data), step)):
            sock.sendall(data[start: start + step])
            if speed > 0:
                time.sleep(max(0.0, t0 + (i + 1) * chunk_s / speed - time.monotonic()))
        sock.shutdown(socket.SHUT_WR)
        rx.join(timeout)
    return b"".join(received).decode("utf-8")
