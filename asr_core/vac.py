"""VAC: a voice activity controller in front of the OnlineASRProcessor (whisper_streaming's API).

Silence is never decoded. Each detected speech segment is one utterance: a
:class:`~asr_core.speech_gate.SpeechGate` forwards its audio (with padding) to a
:class:`~asr_core.streaming.StreamingSession` whose pauses *finish* the utterance
(``at_pause="finish"``): the tail that arrived after the last decode is decoded, everything
is committed, and the next utterance starts a fresh buffer. The scheduling rule itself is the
session's; this class only adapts it to ``insert_audio_chunk`` / ``process_iter`` /
``finish`` calls.
"""

from __future__ import annotations

import numpy as np

from .base import SAMPLING_RATE, check_audio
from .online import Commit, OnlineASRProcessor, StreamingOptions
from .replay import gate_events, push_events, silero_segmenter
from .speech_gate import SpeechGate
from .streaming import Schedule, StreamingSession
from .vad import VADOptions

#: whisper_streaming's VAC ends an utterance after this much silence
VAC_MIN_SILENCE_MS = 500


def merge_commits(commits: list[Commit]) -> Commit:
    """One commit spanning several (each commit's text is already spaced)."""
    words = [w for c in commits for w in c.words]
    if not words:
        return Commit()
    text = " ".join(c.text for c in commits if c.text).strip()
    language = next((c.language for c in reversed(commits) if c.language is not None), None)
    return Commit(words[0][0], words[-1][1], text, tuple(words), language)


class VACOnlineASRProcessor:
    SAMPLING_RATE = SAMPLING_RATE

    def __init__(
        self,
        online_chunk_size: float,
        asr,
        buffer_trimming=("segment", 15),
        options: StreamingOptions | None = None,
        vad_options: VADOptions | None = None,
        segmenter=None,
        **kwargs,
    ):
        self.online_chunk_size = float(online_chunk_size)
        self.online = OnlineASRProcessor(asr, buffer_trimming=buffer_trimming, options=options, **kwargs)
        self.vad_options = vad_options or VADOptions(min_silence_ms=VAC_MIN_SILENCE_MS)
        if segmenter is not None:
            self._make_segmenter = lambda t0: (segmenter.reset(t0), segmenter)[1]
        else:
            self._make_segmenter = silero_segmenter(self.vad_options)
        self.init()

    def init(self, offset: float = 0.0) -> None:
        self.online.init(offset)
        self.session = StreamingSession(self.online, Schedule(self.online_chunk_size, at_pause="finish"))
        self.gate = SpeechGate(self._make_segmenter, self.vad_options.speech_pad_ms,
                               first_sample=int(round(offset * SAMPLING_RATE)), dtype=np.float32)

    @property
    def stats(self):
        return self.online.stats

    @property
    def t(self) -> float:
        """Stream time just after the last inserted sample."""
        return self.gate.received / SAMPLING_RATE

    @property
    def in_speech(self) -> bool:
        return self.gate.in_speech

    def insert_audio_chunk(self, audio, t: float | None = None) -> None:
        audio = check_audio(audio)
        n = self.gate.received if t is None else int(round(t * SAMPLING_RATE))
        if n < self.gate.received:  # overlaps what was already inserted: dropped, so the clock holds
            audio = audio[self.gate.received - n:]
            n = self.gate.received
        if len(audio):
            push_events(self.session, gate_events(self.gate.push(n, audio) or []))

    def process_iter(self) -> Commit:
        return merge_commits(self.session.run_due())

    def finish(self) -> Commit:
        push_events(self.session, gate_events(self.gate.close()))
        self.session.push_end()
        commit = merge_commits(self.session.run_due())
        self.init(self.gate.received / SAMPLING_RATE)
        return commit

    def partial(self) -> Commit:
        return self.online.partial()
