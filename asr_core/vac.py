"""VAC: a voice activity controller in front of the OnlineASRProcessor.

Silence is never decoded. Each detected speech segment is one utterance: it
starts a fresh buffer at the speech start (with padding) and, at the speech
end, the utterance is flushed with :meth:`OnlineASRProcessor.finish`, which
decodes the audio that arrived after the last decode, so the end of every
utterance is transcribed.
"""

from __future__ import annotations

import numpy as np

from .base import SAMPLING_RATE, check_audio
from .online import Commit, OnlineASRProcessor, StreamingOptions
from .vad import SpeechSegmenter, VADOptions

RECENT_SECONDS = 2.0


def merge_commits(commits: list[Commit]) -> Commit:
    """One commit spanning several (each commit's text is already spaced)."""
    words = [w for c in commits for w in c.words]
    if not words:
        return Commit()
    text = " ".join(c.text for c in commits if c.text).strip()
    return Commit(words[0][0], words[-1][1], text, tuple(words))


class VACOnlineASRProcessor:
    SAMPLING_RATE = SAMPLING_RATE

    def __init__(
        self,
        online_chunk_size: float,
        asr,
        buffer_trimming=("segment", 15),
        options: StreamingOptions | None = None,
        vad_options: VADOptions | None = None,
        segmenter: SpeechSegmenter | None = None,
        **kwargs,
    ):
        self.online_chunk_size = float(online_chunk_size)
        self.online = OnlineASRProcessor(asr, buffer_trimming=buffer_trimming, options=options, **kwargs)
        self.segmenter = segmenter or SpeechSegmenter(vad_options)
        self.init()

    def init(self, offset: float = 0.0) -> None:
        self.online.init(offset)
        self.segmenter.reset(offset)
        self.t = offset  # stream time just after the last inserted sample
        self._recent = np.zeros(0, dtype=np.float32)
        self._recent_t0 = offset
        self._fed_until = offset
        self._ready: list[Commit] = []

    @property
    def stats(self):
        return self.online.stats

    @property
    def in_speech(self) -> bool:
        return self.segmenter.in_speech

    def _slice(self, beg: float, end: float) -> np.ndarray:
        i = max(0, int(round((beg - self._recent_t0) * SAMPLING_RATE)))
        j = max(0, int(round((end - self._recent_t0) * SAMPLING_RATE)))
        return self._recent[i:j]

    def _feed(self, until: float) -> None:
        beg = max(self._fed_until, self._recent_t0)
        if until > beg:
            chunk = self._slice(beg, until)
            if len(chunk):
                self.online.insert_audio_chunk(chunk, t=beg)
        self._fed_until = max(self._fed_until, until)

    def insert_audio_chunk(self, audio, t: float | None = None) -> None:
        audio = check_audio(audio)
        if t is not None and t - self.t > 1.0 / SAMPLING_RATE:
            # a gap in the input is silence for the VAD as well
            self.insert_audio_chunk(np.zeros(int(round((t - self.t) * SAMPLING_RATE)), dtype=np.float32))
        elif t is not None and self.t - t > 1.0 / SAMPLING_RATE:
            # audio that overlaps what was already inserted is dropped, so the clock holds
            audio = audio[int(round((self.t - t) * SAMPLING_RATE)) :]
        self._recent = np.concatenate([self._recent, audio])
        self.t += len(audio) / SAMPLING_RATE
        for ev in self.segmenter.process(audio):
            if ev.kind == "start":
                self._fed_until = max(ev.t, self._recent_t0)
            else:
                self._feed(ev.t)
                self._ready.append(self.online.finish())
        if self.segmenter.in_speech:
            self._feed(self.t)
        else:
            self._fed_until = max(self._fed_until, self.t - self.segmenter.options.speech_pad_ms / 1000.0)
        excess = len(self._recent) - int(RECENT_SECONDS * SAMPLING_RATE)
        if excess > 0:
            self._recent = self._recent[excess:]
            self._recent_t0 += excess / SAMPLING_RATE

    def process_iter(self) -> Commit:
        commits, self._ready = self._ready, []
        if self.segmenter.in_speech and self.online.undecoded_seconds >= self.online_chunk_size:
            commits.append(self.online.process_iter())
        return merge_commits([c for c in commits if c])

    def finish(self) -> Commit:
        commits, self._ready = self._ready, []
        for ev in self.segmenter.flush():
            self._feed(ev.t)
        commits.append(self.online.finish())
        return merge_commits([c for c in commits if c])

    def partial(self) -> Commit:
        return self.online.partial()
