"""Where captured audio comes from: a file, raw PCM on stdin, or a microphone.

Every source hands out 16 kHz mono int16 samples through :meth:`Source.read`,
which never blocks: it returns what is available now (possibly nothing) and
``eof=True`` once the source is exhausted. Sources are opened (and checked:
file readable, microphone present) before the actor connects to the bus, and
started only when the capture begins sending, so nothing is read while the
capture waits for its consumers.

``sounddevice`` is imported lazily, only for ``mic``.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import RuntimeFailure

SR = 16000
log = logging.getLogger("voxpipe.capture")


class CaptureError(RuntimeFailure):
    """A source that cannot be opened: one line for the user."""


@dataclass(frozen=True)
class InputSpec:
    kind: str  # "mic" | "file" | "stdin"
    path: str = ""

    def __str__(self) -> str:
        return f"file:{self.path}" if self.kind == "file" else self.kind


def parse_input(text: str) -> InputSpec:
    """``mic``, ``stdin`` (or ``-``), ``file:PATH``, ``auto:PATH`` (the mic if there is one,
    else the file), or the path of an existing file."""
    kind, sep, arg = text.partition(":")
    if text in ("mic", "stdin"):
        return InputSpec(text)
    if text == "-":
        return InputSpec("stdin")
    if kind in ("file", "auto") and sep:
        if not arg:
            raise CaptureError(f"input '{kind}:' needs a path")
        return InputSpec("mic") if kind == "auto" and has_microphone() else InputSpec("file", arg)
    if Path(text).is_file():
        return InputSpec("file", text)
    raise CaptureError(f"input {text!r} is not mic, stdin, file:PATH, auto:PATH or an existing file")


def has_microphone() -> bool:
    """sounddevice is installed and sees an input device."""
    try:
        sd = _import_sounddevice()
        sd.query_devices(None, "input")
        return True
    except Exception:  # noqa: BLE001 - not installed, no PortAudio, no default input
        return False


class StreamResampler:
    """Linear-interpolation resampling of an unbounded stream, chunk by chunk.

    Output sample ``j`` is the input interpolated at position ``j * sr_in / sr_out``;
    positions are computed from absolute indices, so chunk boundaries leave no
    seams and no drift.
    """

    def __init__(self, sr_in: int, sr_out: int = SR):
        if sr_in <= 0:
            raise CaptureError(f"sample rate {sr_in} must be positive")
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._buf = np.zeros(0, dtype=np.float32)
        self._base = 0  # absolute input index of _buf[0]
        self._next = 0  # absolute index of the next output sample

    def push(self, x: np.ndarray, final: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.sr_in == self.sr_out:
            return x
        self._buf = np.concatenate([self._buf, x])
        last = self._base + len(self._buf) - 1  # last available input index
        if last < 0:
            return np.zeros(0, dtype=np.float32)
        # interpolation needs the sample after the position, except at the very end
        limit = last if final else last - 1
        j_end = (limit * self.sr_out) // self.sr_in + 1 if limit >= 0 else self._next
        if j_end <= self._next:
            return np.zeros(0, dtype=np.float32)
        js = np.arange(self._next, j_end, dtype=np.int64)
        pos = js * self.sr_in / self.sr_out - self._base
        out = np.interp(pos, np.arange(len(self._buf), dtype=np.float64), self._buf).astype(np.float32)
        self._next = j_end
        keep = (self._next * self.sr_in) // self.sr_out  # first input index still needed
        drop = max(0, min(len(self._buf), keep - self._base))
        self._buf = self._buf[drop:]
        self._base += drop
        return out


def _to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")


class Source:
    kind = "?"
    paced = True  # replayed on a clock (file, stdin); False: live (mic)

    def start(self) -> None:
        """Begin producing samples."""

    def read(self, max_samples: int) -> tuple[np.ndarray, bool]:
        """Up to ``max_samples`` int16 samples available now, and whether the source ended."""
        raise NotImplementedError

    def close(self) -> None:
        """Release devices and threads."""


class FileSource(Source):
    """A whole audio file in memory; ``loop`` starts it over at its end."""

    kind = "file"

    def __init__(self, path: str, loop: bool = False):
        self.path = path
        self.loop = loop
        self.samples = _read_file(path)
        if len(self.samples) == 0:
            raise CaptureError(f"audio file {path} holds no samples")
        self.pos = 0
        self.loops = 0

    def read(self, max_samples: int) -> tuple[np.ndarray, bool]:
        if self.pos >= len(self.samples):
            if not self.loop:
                return np.zeros(0, dtype="<i2"), True
            self.pos = 0
            self.loops += 1
        out = self.samples[self.pos : self.pos + max_samples]
        self.pos += len(out)
        return out, False


def _read_file(path: str) -> np.ndarray:
    """int16 samples at 16 kHz; plain 16 kHz mono 16-bit WAV is read bit-exact."""
    from asr_core.audio import AudioFileError, load_audio, wav_truncation

    p = Path(path)
    cut = wav_truncation(p)
    if cut is not None:
        log.warning("%s: its header says %.1fs of audio but it holds %.1fs (cut off?): sending what there is",
                    p, *cut)
    try:
        with wave.open(str(p), "rb") as w:
            if (w.getsampwidth(), w.getframerate(), w.getnchannels()) == (2, SR, 1):
                return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
    except (wave.Error, EOFError, OSError):
        pass
    try:
        return _to_int16(load_audio(p))
    except AudioFileError as exc:
        raise CaptureError(str(exc)) from None


class StdinSource(Source):
    """Raw int16 mono little-endian PCM on stdin, at ``sample_rate``."""

    kind = "stdin"

    def __init__(self, sample_rate: int = SR, fd: int | None = None):
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.resampler = StreamResampler(sample_rate)
        self._q: queue.Queue = queue.Queue()
        self._pending = np.zeros(0, dtype="<i2")
        self._eof = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._reader, name="stdin-reader", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        odd = b""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                data = b""
            if not data:
                self._q.put(None)
                return
            data = odd + data
            cut = len(data) - (len(data) % 2)
            odd = data[cut:]
            self._q.put(data[:cut])

    def read(self, max_samples: int) -> tuple[np.ndarray, bool]:
        while len(self._pending) < max_samples and not self._eof:
            try:
                data = self._q.get_nowait()
            except queue.Empty:
                break
            final = data is None
            self._eof = final
            raw = np.frombuffer(data or b"", dtype="<i2")
            if self.resampler.sr_in != SR:
                raw = _to_int16(self.resampler.push(raw.astype(np.float32) / 32768.0, final=final))
            self._pending = np.concatenate([self._pending, raw])
        out, self._pending = self._pending[:max_samples], self._pending[max_samples:]
        return out, self._eof and len(self._pending) == 0


class MicSource(Source):
    """A sounddevice input stream; the device rate is resampled to 16 kHz."""

    kind = "mic"
    paced = False

    def __init__(self, device: str | None = None, frame_ms: int = 100):
        self.sd = _import_sounddevice()
        dev = int(device) if device is not None and str(device).isdigit() else device
        try:
            info = self.sd.query_devices(dev, "input")
        except Exception as exc:  # noqa: BLE001 - ValueError or PortAudioError
            what = f"input device {device!r}" if device is not None else "default input device"
            raise CaptureError(f"no {what} ({exc}); list them with: python -m sounddevice") from None
        self.device = dev
        self.device_name = str(info.get("name", device))
        try:
            self.sd.check_input_settings(device=dev, channels=1, samplerate=SR, dtype="float32")
            self.rate = SR
        except Exception:  # noqa: BLE001 - the device cannot do 16 kHz: resample
            self.rate = int(info.get("default_samplerate") or 48000)
        self.resampler = StreamResampler(self.rate)
        self.blocksize = max(1, self.rate * frame_ms // 1000)
        self._q: queue.Queue = queue.Queue()
        self._pending = np.zeros(0, dtype="<i2")
        self.first_wall: float | None = None  # Unix time of the first captured sample
        self.overflows = 0
        self.stream = None

    def _callback(self, indata, frames, _time_info, status) -> None:
        if self.first_wall is None:
            self.first_wall = time.time() - frames / self.rate
        if status and status.input_overflow:
            self.overflows += 1
        self._q.put(indata[:, 0].copy())

    def start(self) -> None:
        try:
            self.stream = self.sd.InputStream(
                device=self.device, channels=1, samplerate=self.rate, dtype="float32",
                blocksize=self.blocksize, callback=self._callback,
            )
            self.stream.start()
        except Exception as exc:  # noqa: BLE001
            raise CaptureError(f"cannot open microphone {self.device_name!r}: {exc}") from None

    def read(self, max_samples: int) -> tuple[np.ndarray, bool]:
        while len(self._pending) < max_samples:
            try:
                block = self._q.get_nowait()
            except queue.Empty:
                break
            self._pending = np.concatenate([self._pending, _to_int16(self.resampler.push(block))])
        out, self._pending = self._pending[:max_samples], self._pending[max_samples:]
        return out, False

    def close(self) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()
            self.stream = None


def _import_sounddevice():
    try:
        import sounddevice
    except ImportError:
        raise CaptureError("microphone capture needs sounddevice: pip install 'voxpipe[mic]'") from None
    except OSError as exc:  # the package is there but PortAudio is not
        raise CaptureError(f"microphone capture needs the PortAudio library ({exc})") from None
    return sounddevice


def open_source(spec: InputSpec, *, loop: bool = False, sample_rate: int = SR,
                device: str | None = None, frame_ms: int = 100) -> Source:
    if spec.kind == "file":
        return FileSource(spec.path, loop=loop)
    if spec.kind == "stdin":
        return StdinSource(sample_rate)
    return MicSource(device, frame_ms)
