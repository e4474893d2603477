"""Streaming Silero VAD (asr_core.vad) on onnxruntime.

* the speech probabilities do not depend on how the stream is cut into chunks;
* on a ``_gaps`` clip the segmenter finds one speech segment per sentence,
  each boundary inside the 1.5 s silence between two sentences;
* silence gives no segment; an open segment is ended by ``flush()``; event
  times are absolute stream times (``reset(t0)``).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from asr_core.audio import load_audio
from asr_core.vad import WINDOW, SileroVAD, SpeechSegmenter, VADOptions
from tests.conftest import GAPS_CLIPS, clip_path, reference, silences

SR = 16000


@pytest.fixture(scope="module")
def vad_model():
    return SileroVAD()


def segments(events) -> list[tuple[float, float]]:
    out, start = [], None
    for ev in events:
        if ev.kind == "start":
            assert start is None, "two starts in a row"
            start = ev.t
        else:
            assert start is not None, "an end without a start"
            assert ev.t > start
            out.append((start, ev.t))
            start = None
    assert start is None
    return out


def run_segmenter(seg: SpeechSegmenter, audio: np.ndarray, chunk: int = 640) -> list:
    events = []
    for i in range(0, len(audio), chunk):
        events += seg.process(audio[i : i + chunk])
    return events + seg.flush()


def test_speech_probabilities_do_not_depend_on_the_chunking(vad_model):
    audio = load_audio(clip_path("weather_gaps"))[: 8 * SR]
    vad_model.reset()
    whole = vad_model(audio)
    for chunk in (333, 640, 16000):
        vad_model.reset()
        parts = np.concatenate([vad_model(audio[i : i + chunk]) for i in range(0, len(audio), chunk)])
        assert len(parts) == len(whole) == len(audio) // WINDOW
        np.testing.assert_allclose(parts, whole, atol=1e-5)
    assert whole.max() > 0.9 and whole.min() < 0.1


@pytest.mark.parametrize("name", GAPS_CLIPS)
def test_segmenter_finds_one_segment_per_sentence_with_boundaries_in_the_silences(vad_model, name):
    audio = load_audio(clip_path(name))
    n_sentences = len([s for s in re.split(r"(?<=[.?!])\s+", reference(name)) if s])
    gaps = silences(name)
    assert len(gaps) == n_sentences - 1

    segs = segments(run_segmenter(SpeechSegmenter(model=vad_model), audio))
    assert len(segs) == n_sentences, segs
    for (_, end), (start, _), (quiet_beg, quiet_end) in zip(segs, segs[1:], gaps, strict=False):
        # the speech ends and restarts inside the silence, with the padding around speech
        assert quiet_beg < end < start < quiet_end, (end, start, quiet_beg, quiet_end)
        assert end - quiet_beg <= 0.3 and quiet_end - start <= 0.3
    assert segs[0][0] <= 0.2
    assert segs[-1][1] >= len(audio) / SR - 0.5


def test_silence_gives_no_segment(vad_model):
    seg = SpeechSegmenter(model=vad_model)
    assert run_segmenter(seg, np.zeros(3 * SR, dtype=np.float32)) == []
    assert not seg.in_speech


def test_flush_ends_speech_still_open_at_the_end_of_the_stream(vad_model):
    audio = load_audio(clip_path("meeting_gaps"))[: int(1.5 * SR)]  # cut in the middle of a sentence
    seg = SpeechSegmenter(model=vad_model)
    events = []
    for i in range(0, len(audio), 640):
        events += seg.process(audio[i : i + 640])
    assert [e.kind for e in events] == ["start"] and seg.in_speech
    (end,) = seg.flush()
    assert end.kind == "end" and end.t == pytest.approx(len(audio) // WINDOW * WINDOW / SR)
    assert not seg.in_speech and seg.flush() == []


def test_event_times_are_stream_times_after_reset(vad_model):
    audio = load_audio(clip_path("kitchen_gaps"))[: 9 * SR]
    seg = SpeechSegmenter(model=vad_model)
    at_zero = segments(run_segmenter(seg, audio))
    seg.reset(100.0)
    at_100 = segments(run_segmenter(seg, audio))
    assert len(at_100) == len(at_zero) == 2
    assert [t - 100.0 for s in at_100 for t in s] == pytest.approx([t for s in at_zero for t in s])


def test_segmenter_events_do_not_depend_on_the_chunking(vad_model):
    audio = load_audio(clip_path("history_gaps"))
    by_chunk = {c: segments(run_segmenter(SpeechSegmenter(model=vad_model), audio, c)) for c in (512, 640, 16000)}
    assert by_chunk[512] == by_chunk[640] == by_chunk[16000]


def test_speech_start_is_padded_but_not_before_the_stream_start(vad_model):
    audio = load_audio(clip_path("meeting_gaps"))
    quiet_beg, quiet_end = silences("meeting_gaps")[0]
    start = int(quiet_beg * SR) + SR // 2  # begin in the silence, 0.5 s after its start
    seg = SpeechSegmenter(VADOptions(speech_pad_ms=200), model=vad_model)
    (first, _), *_ = segments(run_segmenter(seg, audio[start : int(9 * SR)]))
    onset = quiet_end - start / SR
    assert onset - 0.2 - 0.1 <= first <= onset - 0.2 + 0.1
    assert first >= 0.0


class ScriptedProbabilities:
    """Stands in for SileroVAD: one scripted speech probability per 512-sample window."""

    def __init__(self, probs):
        self.probs = list(probs)
        self.reset()

    def reset(self):
        self.i = 0
        self.pending = 0

    def __call__(self, audio):
        n = (self.pending + len(audio)) // WINDOW
        self.pending = (self.pending + len(audio)) % WINDOW
        out = np.array(self.probs[self.i : self.i + n] + [0.0] * max(0, self.i + n - len(self.probs)), dtype=np.float32)
        self.i += n
        return out


def scripted_events(probs, **options):
    seg = SpeechSegmenter(VADOptions(**options), model=ScriptedProbabilities(probs))
    return run_segmenter(seg, np.zeros(len(probs) * WINDOW, dtype=np.float32), chunk=WINDOW)


W = WINDOW / SR  # 32 ms


def test_speech_starts_at_its_onset_and_ends_at_its_silence_with_padding():
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 40
    events = scripted_events(probs, speech_pad_ms=100, min_silence_ms=500)
    assert [e.kind for e in events] == ["start", "end"]
    assert events[0].t == pytest.approx(10 * W - 0.1)
    assert events[1].t == pytest.approx(30 * W + 0.1)


def test_a_dip_between_the_thresholds_neither_ends_nor_restarts_speech():
    probs = [0.9] * 10 + [0.4] * 30 + [0.9] * 10 + [0.0] * 40
    events = scripted_events(probs, threshold=0.5, neg_threshold=0.35, min_silence_ms=500)
    assert [e.kind for e in events] == ["start", "end"]
