"""Client audio to the bus's format, 16 kHz mono int16, on the fly.

* :class:`RawAudio`: headerless PCM, ``linear16`` (s16le) or G.711 ``mulaw`` /
  ``alaw``, at any sample rate and channel count (channels are averaged);
  resampled with FFmpeg's resampler (PyAV's ``AudioResampler``: filtered, and
  continuous across chunks).
* :class:`ContainerAudio`: a container stream (Ogg/WebM Opus, FLAC, MP3,
  WAV, ... whatever PyAV's FFmpeg opens) decoded as its bytes arrive, by a
  thread of its own that reads them from a queue.
* :func:`decode_file`: a whole uploaded file (faster-whisper's PyAV decoder).

PyAV comes with faster-whisper, so nothing here adds a dependency. Both
streaming decoders hand their samples to ``on_pcm`` in the event loop's
thread; a stream that cannot be decoded raises (raw) or reports
(``on_error``, container) :class:`AudioError`.
"""

from __future__ import annotations

import asyncio
import io
import queue
import threading
from collections.abc import Callable

import numpy as np

SR = 16000
RAW_ENCODINGS = {"linear16": ("pcm_s16le", 2), "mulaw": ("pcm_mulaw", 1), "alaw": ("pcm_alaw", 1)}
CONTAINER_ENCODINGS = ("opus", "ogg-opus", "flac")  # and no encoding at all: the container says
PROBE_BYTES = 128 * 1024


class AudioError(ValueError):
    """Audio that cannot be decoded."""


def _resampler():
    import av

    return av.AudioResampler(format="s16", layout="mono", rate=SR)


def _frames_to_pcm(frames) -> np.ndarray:
    parts = [f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(parts).astype("<i2", copy=False) if parts else np.zeros(0, dtype="<i2")


class RawAudio:
    """Headerless PCM of one encoding, rate and channel count."""

    def __init__(self, encoding: str, rate: int, channels: int, on_pcm: Callable[[np.ndarray], None]):
        if encoding not in RAW_ENCODINGS:
            raise AudioError(f"unsupported raw encoding {encoding!r}")
        if not 1000 <= rate <= 384000:
            raise AudioError(f"sample_rate {rate} is out of range")
        if not 1 <= channels <= (8 if encoding == "linear16" else 2):
            raise AudioError(f"{channels} channels of {encoding} (1 to {8 if encoding == 'linear16' else 2} "
                             "are accepted)")
        self.encoding, self.rate, self.channels, self.on_pcm = encoding, rate, channels, on_pcm
        codec, width = RAW_ENCODINGS[encoding]
        self.block = width * channels
        self._rest = b""
        self._direct = encoding == "linear16" and rate == SR and channels == 1
        self._codec = None
        self._resample = None
        if not self._direct:
            import av

            if encoding != "linear16":
                self._codec = av.CodecContext.create(codec, "r")
                self._codec.sample_rate = rate
                self._codec.layout = "mono" if channels == 1 else "stereo"
            self._resample = _resampler()

    def feed(self, data: bytes) -> None:
        data = self._rest + data
        usable = len(data) - len(data) % self.block
        self._rest = data[usable:]
        if usable:
            self.on_pcm(self._decode(data[:usable]))

    async def finish(self) -> None:
        if self._resample is not None:
            self.on_pcm(_frames_to_pcm(self._resample.resample(None)))
            self._resample = _resampler()

    def _decode(self, data: bytes) -> np.ndarray:
        if self._direct:
            return np.frombuffer(data, dtype="<i2").copy()
        import av

        try:
            if self._codec is not None:
                frames = self._codec.decode(av.Packet(data))
            else:
                samples = np.frombuffer(data, dtype="<i2").reshape(-1, self.channels)
                if self.channels > 2:  # no FFmpeg layout needed: average here
                    samples = samples.mean(axis=1, keepdims=True).astype("<i2")
                layout = "stereo" if samples.shape[1] == 2 else "mono"
                frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
                frame.sample_rate = self.rate
                frames = [frame]
            out = []
            for f in frames:
                out += self._resample.resample(f)
            return _frames_to_pcm(out)
        except (av.FFmpegError, ValueError) as exc:
            raise AudioError(f"cannot decode {self.encoding} audio: {exc}") from None


class _QueueReader:
    """A blocking, non-seekable file for PyAV, fed from another thread."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self.buf = b""
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        while not self.buf and not self.eof:
            item = self.q.get()
            if item is None:
                self.eof = True
            else:
                self.buf += item
        if n is None or n < 0:
            n = len(self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class ContainerAudio:
    """A container stream decoded by a thread as it arrives."""

    def __init__(self, on_pcm: Callable[[np.ndarray], None], on_error: Callable[[AudioError], None]):
        self.loop = asyncio.get_running_loop()
        self.on_pcm, self.on_error = on_pcm, on_error
        self._reader = _QueueReader()
        self._done = asyncio.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="voxpipe-gateway-decode", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        if not self._closed and data:
            self._reader.q.put(bytes(data))

    async def finish(self) -> None:
        """No more bytes: wait until everything decoded has been handed over."""
        self.abort()
        await self._done.wait()

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._reader.q.put(None)

    def _deliver(self, pcm: np.ndarray) -> None:
        if len(pcm):
            self.loop.call_soon_threadsafe(self.on_pcm, pcm)

    def _run(self) -> None:
        import av

        try:
            # a small probe: garbage is told apart after 128 KiB, not after FFmpeg's default of 1 MB
            probe = {"probesize": str(PROBE_BYTES), "formatprobesize": str(PROBE_BYTES)}
            with av.open(self._reader, mode="r", options=probe) as container:
                if not container.streams.audio:
                    raise AudioError("the stream has no audio track")
                resample = _resampler()
                for frame in container.decode(audio=0):
                    self._deliver(_frames_to_pcm(resample.resample(frame)))
                self._deliver(_frames_to_pcm(resample.resample(None)))
        except AudioError as exc:
            self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - FFmpeg's errors, and anything a broken stream makes it raise
            if not (self._reader.eof and not self._reader.buf and isinstance(exc, EOFError)):
                self._fail(AudioError(f"cannot decode the audio stream: {type(exc).__name__}: {exc}"))
        finally:
            try:
                self.loop.call_soon_threadsafe(self._done.set)
            except RuntimeError:  # the loop is gone
                pass

    def _fail(self, exc: AudioError) -> None:
        try:
            self.loop.call_soon_threadsafe(self.on_error, exc)
        except RuntimeError:
            pass


def decode_file(data: bytes) -> np.ndarray:
    """A whole audio file (any format FFmpeg reads) as 16 kHz mono int16; raises AudioError."""
    from faster_whisper.audio import decode_audio

    try:
        audio = decode_audio(io.BytesIO(data), sampling_rate=SR)
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types
        raise AudioError(f"cannot decode the file: {type(exc).__name__}: {exc}") from None
    return (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
