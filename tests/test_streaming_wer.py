"""Streaming accuracy with the real tiny.en model on the speech clips in tests/data.

* ``voxpipe simulate --comp-unaware`` on the clean clips: mean WER <= 0.15,
  no clip above 0.25 (Whisper English normalisation, apps.bench.evaluation.wer);
* the same with ``--vac`` on the ``_gaps`` clips (1.5 s silences between
  sentences);
* with VAC, every sentence's last word is emitted when its speech ends
  (bug (b)), and ``finish()`` transcribes the audio after the last decode
  (bug (a)).

The command's own ``simulate()`` runs in-process with one model per session
(fixture ``simulate_clip`` in conftest.py), so each clip is decoded once.
"""

from __future__ import annotations

import re
from statistics import mean

import pytest

from apps.bench.evaluation import normalize, wer
from asr_core.audio import load_audio
from tests.conftest import CLEAN_CLIPS, GAPS_CLIPS, WER_RESULTS, clip_path, reference, silences

pytestmark = pytest.mark.model

COMP_UNAWARE = ("--comp-unaware",)
VAC = ("--vac", "--comp-unaware")
MEAN_MAX = 0.15
CLIP_MAX = 0.25


def transcript(lines) -> str:
    return " ".join(text for _, _, _, text in lines)


def clip_wer(simulate_clip, name: str, flags: tuple, mode: str) -> float:
    lines = simulate_clip(name, *flags)
    assert lines, f"{name}: no output at all"
    value = wer(reference(name), transcript(lines))
    WER_RESULTS[(name, mode)] = value
    return value


@pytest.mark.parametrize("name", CLEAN_CLIPS)
def test_clean_clip_comp_unaware_wer_at_most_0_25(simulate_clip, name):
    value = clip_wer(simulate_clip, name, COMP_UNAWARE, "clean --comp-unaware")
    assert value <= CLIP_MAX, f"{name}: WER {value:.3f}: {transcript(simulate_clip(name, *COMP_UNAWARE))}"


def test_clean_clips_comp_unaware_mean_wer_at_most_0_15(simulate_clip):
    values = {n: clip_wer(simulate_clip, n, COMP_UNAWARE, "clean --comp-unaware") for n in CLEAN_CLIPS}
    assert mean(values.values()) <= MEAN_MAX, f"mean WER {mean(values.values()):.3f}: {values}"


@pytest.mark.parametrize("name", GAPS_CLIPS)
def test_gaps_clip_vac_wer_at_most_0_25(simulate_clip, name):
    value = clip_wer(simulate_clip, name, VAC, "gaps --vac")
    assert value <= CLIP_MAX, f"{name}: WER {value:.3f}: {transcript(simulate_clip(name, *VAC))}"


def test_gaps_clips_vac_mean_wer_at_most_0_15(simulate_clip):
    values = {n: clip_wer(simulate_clip, n, VAC, "gaps --vac") for n in GAPS_CLIPS}
    assert mean(values.values()) <= MEAN_MAX, f"mean WER {mean(values.values()):.3f}: {values}"


@pytest.mark.parametrize("name", CLEAN_CLIPS)
def test_the_last_word_of_a_stream_is_transcribed(simulate_clip, name):
    said = normalize(reference(name)).split()
    heard = normalize(transcript(simulate_clip(name, *COMP_UNAWARE))).split()
    assert heard[-1] == said[-1], f"{name}: ends with {heard[-3:]}, expected {said[-1]!r}"


@pytest.mark.parametrize("name", GAPS_CLIPS)
def test_b_vac_emits_each_sentence_end_when_its_speech_ends(simulate_clip, name):
    """The last word of each sentence is out before the next sentence starts."""
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", reference(name)) if s]
    gaps = silences(name)
    assert len(gaps) == len(sentences) - 1
    lines = simulate_clip(name, *VAC)
    window_ends = [g[1] * 1000 for g in gaps] + [float("inf")]
    window_begs = [0.0] + window_ends[:-1]
    for sentence, beg, end in zip(sentences, window_begs, window_ends, strict=False):
        last = normalize(sentence).split()[-1]
        emitted = normalize(" ".join(t for emit, _, _, t in lines if beg < emit <= end)).split()
        assert last in emitted, (
            f"{name}: {last!r} (end of {sentence!r}) not emitted before the next sentence; "
            f"emitted then: {' '.join(emitted)!r}"
        )


def test_a_finish_transcribes_the_speech_after_the_last_decode(tiny_en):
    """Decode once after 1 s, then give 2 s more and finish(): the sentence end is heard."""
    from asr_core.online import OnlineASRProcessor

    audio = load_audio(clip_path("meeting_gaps"))[: 3 * 16000]  # "Thank you all for joining the meeting." + silence
    proc = OnlineASRProcessor(tiny_en)
    proc.insert_audio_chunk(audio[:16000])
    first = proc.process_iter()
    proc.insert_audio_chunk(audio[16000:])
    final = proc.finish()
    text = " ".join(c.text for c in (first, final) if c)
    assert "meeting" in normalize(proc.partial().text + " " + text).split()
    assert "meeting" in normalize(final.text).split()
    assert wer("Thank you all for joining the meeting.", text) <= 0.15
