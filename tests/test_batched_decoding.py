"""Batched decoding with the real tiny.en model on real speech (tests/data).

* the same buffers decode to the same words, with the same times, batched as alone;
* a batch of buffers of different lengths (2 to 12 s) and prompts, from different clips,
  decodes each one to its own words (the words of its clip, as alone, in order);
* a buffer the engine fails on fails only its own item, also when the whole batched call
  fails; the other streams of the batch get their words;
* streams replayed together through batched steps commit what each commits alone (up to
  the padding of a second window to the other stream's).
"""

from __future__ import annotations

import numpy as np
import pytest

from apps.bench.metrics import ratio, word_errors
from asr_core.audio import load_audio
from tests.conftest import CLEAN_CLIPS, clip_path, reference

pytestmark = pytest.mark.model
SR = 16000


def cut(name: str, beg: float, end: float) -> np.ndarray:
    return load_audio(clip_path(name))[int(beg * SR):int(end * SR)]


def texts(asr, results) -> list[str]:
    return ["".join(w[2] for w in asr.ts_words(r)).strip() for r in results]


def test_the_same_buffers_give_the_same_words_batched_and_alone(tiny_en):
    # four clips, the same length (so the same window) and the same prompt
    buffers = [cut(name, 3.0, 7.5) for name in CLEAN_CLIPS]
    prompt = "Here is what was said before."
    alone = [tiny_en.transcribe(b, init_prompt=prompt) for b in buffers]
    batched = tiny_en.transcribe_batch(buffers, [prompt] * len(buffers))
    assert texts(tiny_en, batched) == texts(tiny_en, alone)
    for a, b in zip(alone, batched, strict=True):
        assert [w[:2] for w in tiny_en.ts_words(a)] == pytest.approx([w[:2] for w in tiny_en.ts_words(b)], abs=0.021)
    assert all(len(t.split()) >= 6 for t in texts(tiny_en, batched))


def test_a_batch_of_different_lengths_and_prompts_decodes_each_buffer(tiny_en):
    spans = [("history", 0.0, 2.5), ("kitchen", 4.0, 12.0), ("meeting", 1.0, 13.0), ("weather", 6.0, 10.5),
             ("history", 10.0, 14.0), ("kitchen", 0.0, 6.0)]
    buffers = [cut(*s) for s in spans]
    prompts = ["", "Welcome to the kitchen.", "", "Good morning and welcome to the weather report.",
               "The first public railway opened in the early nineteenth century.", "Bread."]
    batched = tiny_en.transcribe_batch(buffers, prompts)
    alone = [tiny_en.transcribe(b, init_prompt=p) for b, p in zip(buffers, prompts, strict=True)]
    for (name, beg, end), b, a in zip(spans, texts(tiny_en, batched), texts(tiny_en, alone), strict=True):
        err, n = word_errors(a, b)
        assert ratio(err, n) <= 0.25, (name, beg, a, b)  # padded to the group's window, words may differ a little
        ref = set(word.strip(".,").lower() for word in reference(name).split())
        heard = [word.strip(".,").lower() for word in b.split()]
        assert len(heard) >= 3 * (end - beg) / 2.5 * 0.5, (name, b)
        assert sum(w in ref for w in heard) >= 0.8 * len(heard), (name, b)  # its own clip's words
    for r, (_, beg, end) in zip(batched, spans, strict=True):
        ws = tiny_en.ts_words(r)
        assert all(0.0 <= w[0] <= w[1] <= end - beg + 1e-3 for w in ws)
        assert [w[0] for w in ws] == sorted(w[0] for w in ws)


def test_a_failing_buffer_fails_only_its_own_item(tiny_en):
    good = [cut("weather", 0.0, 4.0), cut("history", 0.0, 4.0)]
    bad = cut("kitchen", 0.0, 4.0).copy()
    bad[100] = np.nan  # the engine refuses it
    out = tiny_en.transcribe_batch([good[0], bad, good[1]], ["", "", ""])
    assert isinstance(out[1], ValueError)
    assert texts(tiny_en, [out[0], out[2]]) == texts(tiny_en, [tiny_en.transcribe(g) for g in good])


def test_when_a_whole_batched_call_fails_the_streams_are_decoded_one_by_one(tiny_en, monkeypatch):
    from asr_core.online import OnlineASRProcessor, StreamingOptions
    from asr_core.streaming import Schedule, Step, StreamingSession
    from tests.faulty_backend import RAISE

    def session(audio):
        s = StreamingSession(OnlineASRProcessor(tiny_en, options=StreamingOptions()), Schedule(1.0))
        s.push_audio(0.0, audio)
        return s

    marked = cut("kitchen", 0.0, 3.0).copy()
    marked[1000:1016] = RAISE / 32768.0
    sessions = [session(cut("weather", 0.0, 3.0)), session(marked), session(cut("history", 0.0, 3.0))]

    real_batch, real_one = type(tiny_en).transcribe_batch, type(tiny_en).transcribe

    def batch_fails(self, audios, prompts=None):  # as a batched engine call failing on one bad item would
        if any(np.any(np.isclose(a, RAISE / 32768.0)) for a in audios):
            raise RuntimeError("the batch failed")
        return real_batch(self, audios, prompts)

    def one_fails(self, audio, init_prompt=""):
        if np.any(np.isclose(audio, RAISE / 32768.0)):
            raise RuntimeError("this buffer fails")
        return real_one(self, audio, init_prompt)

    monkeypatch.setattr(type(tiny_en), "transcribe_batch", batch_fails)
    monkeypatch.setattr(type(tiny_en), "transcribe", one_fails)
    from asr_core.batching import run_steps

    runs = []
    for s in sessions:
        s.start(Step.DECODE)
        runs.append(s.begin(Step.DECODE))
    stats = run_steps(tiny_en, runs)
    results = [r.result() for r in runs]
    assert stats.fallbacks == 1
    assert "this buffer fails" in str(results[1].error)
    assert results[0].error is None and results[2].error is None
    heard = [s.processor.partial().text.lower() for s in (sessions[0], sessions[2])]
    assert "good morning" in heard[0] and "railway" in heard[1]


def test_streams_replayed_together_in_batches_commit_what_each_commits_alone(tiny_en):
    from apps.bench.evaluation import reference_text
    from asr_core.batching import run_steps
    from asr_core.online import OnlineASRProcessor, StreamingOptions
    from asr_core.replay import Feed, push_events, speech_events
    from asr_core.streaming import Schedule, StreamingSession
    from pipeline.formats import join_commit_texts
    from tests.fakes import ScriptedSegmenter

    clips = ("weather", "history")
    seconds = 12.0

    def new():
        return StreamingSession(OnlineASRProcessor(tiny_en, options=StreamingOptions()), Schedule(1.0))

    events = {}
    for name in clips:  # speech as the VAD forwards it (scripted: one utterance), 0.1 s frames
        audio = load_audio(clip_path(name))[: int(seconds * SR)]
        events[name] = list(speech_events(audio, Feed(), lambda t0: ScriptedSegmenter([(0.0, seconds)])))
    alone, together = {n: new() for n in clips}, {n: new() for n in clips}
    out_alone = {n: [] for n in clips}
    out_together = {n: [] for n in clips}
    for i in range(max(len(e) for e in events.values())):
        for name in clips:
            if i < len(events[name]):
                push_events(alone[name], events[name][i][1])
                push_events(together[name], events[name][i][1])
            out_alone[name] += alone[name].run_due()
        while True:  # every due step of both streams in one batch, as the worker runs them
            jobs = [(n, s, step) for n, s in together.items() if (step := s.due()) is not None]
            if not jobs:
                break
            runs = []
            for _, s, step in jobs:
                s.start(step)
                runs.append(s.begin(step))
            run_steps(tiny_en, runs)
            for (name, s, _), run in zip(jobs, runs, strict=True):
                if c := s.complete(run.result()):
                    out_together[name].append(c)
    for name in clips:
        a = join_commit_texts(c.text for c in out_alone[name])
        b = join_commit_texts(c.text for c in out_together[name])
        # the first windows are the same alone and together (same lengths at the same moments); a
        # second window over the rest of a buffer may be padded to the other stream's rest
        err, n = word_errors(a, b)
        assert ratio(err, n) <= 0.1, (a, b)
        ref = " ".join(reference_text(clip_path(name)).split()[: len(b.split())])
        err, n = word_errors(ref, b)
        assert ratio(err, n) < 0.3, (name, b)
