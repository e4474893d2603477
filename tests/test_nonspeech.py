"""No text from silence, room noise or music: 30 s of each through the full pipeline commits no word.

Whisper writes text for audio without speech ("Thank you.", "I don't know what I'm going to
do.", ". . .", "Do do do"). The clips (tests/nonspeech.py, made with numpy): a quiet
microphone, room noise (a fan, mains hum, knocks) and music-like tones (a melody over chords).

One pipeline on loopback: broker, VAD, and two real tiny.en workers side by side:

* ``asr`` behind the VAD, as every shipped config runs it;
* ``raw`` on the raw capture (``input: audio``): every second of the clips is decoded, so
  only the decoder's own signals (no-speech probability, log-probability, compression,
  text without letters) keep the hallucinations out (asr_core/result.py: ``is_speech``).

The three clips are three streams, replayed at real time at once. Each worker must end every
stream (``eos``) with no committed word, and ``raw`` must have decoded them.
"""

from __future__ import annotations

import time

import pytest

from pipeline import messages as m
from tests.nonspeech import KINDS, write_clip
from tests.procs import Pipeline

pytestmark = [pytest.mark.model, pytest.mark.realtime]

SECONDS = 30.0
WORKERS = ("asr", "raw")


def test_silence_room_noise_and_tones_commit_no_word(tmp_path):
    clips = {kind: write_clip(tmp_path / f"{kind}.wav", kind, SECONDS) for kind in KINDS}
    with Pipeline(tmp_path) as p:
        cfg = p.write_config("sources:\n" + "".join(
            f"  - name: {kind}\n    input: file:{path}\n    speed: 1.0\n    wait_for: [vad, asr, raw]\n"
            for kind, path in clips.items()) + """
workers:
  - name: asr
    model: tiny.en
    language: en
  - name: raw
    model: tiny.en
    language: en
    input: audio
""")
        for name, role in (("vad", "vad"), ("asr", "worker"), ("raw", "worker")):
            p.start(name, [role, "--config", str(cfg), "--name", name])
        p.wait_ready("vad", *WORKERS, timeout=120)
        sub = p.subscribe("transcript.", "status.raw", timeout=30)
        for kind in KINDS:
            p.start(f"cap-{kind}", ["capture", "--config", str(cfg), "--name", kind])
        words: dict[tuple[str, str], list[str]] = {(w, k): [] for w in WORKERS for k in KINDS}
        ended: set[tuple[str, str]] = set()
        decodes = 0
        deadline = time.monotonic() + SECONDS + 120
        for topic, msg in sub.items():
            if time.monotonic() > deadline:
                break
            if isinstance(msg, m.Heartbeat):
                decodes = max(decodes, int(msg.counters.get("decodes", 0)))
                continue
            key = (m.parse_topic(topic).worker, msg.stream)
            if isinstance(msg, m.Commit):
                words[key] += [w[2] for w in msg.words]
            elif isinstance(msg, m.EndOfStream):
                ended.add(key)
                if ended >= set(words):
                    break
        assert ended >= set(words), f"no eos for {sorted(set(words) - ended)}\n{p.logs()}"
        assert {k: w for k, w in words.items() if w} == {}
        assert decodes >= 3 * SECONDS / 5, f"the raw worker decoded only {decodes} times"
