"""One language per utterance (asr_core/language.py), and what the streaming processor does with it.

* a language the user gave always wins: nothing is detected, commits carry it;
* with ``auto`` each decode's detection is averaged over the utterance, weighted by the
  audio it heard (a decode of less than a second counts for nothing); the next decode is
  made in the likeliest language so far;
* once that average reaches 0.5 the model is sure and the utterance keeps its language;
  before that the language is reported as uncertain, with its probability;
* a fresh buffer (a new utterance) detects again;
* while the language is uncertain only agreement commits (no settling, no early commits).

Logic only (a fake backend): the real model's behaviour is in tests/test_multilingual.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from asr_core.base import ASRBase, Capabilities
from asr_core.language import Language, LanguageTracker
from asr_core.online import OnlineASRProcessor, StreamingOptions


def test_a_given_language_wins_and_is_not_detected():
    t = LanguageTracker("de")
    t.update("fr", (("fr", 0.99),), 5.0)
    assert t.current == Language("de") and t.choice() == "de" and t.sure
    assert t.current.record() == {"language": "de"}


def test_detections_are_averaged_over_the_utterance_by_audio_seconds():
    t = LanguageTracker()
    assert t.choice() is None  # the first decode: the model detects on its own
    t.update("de", (("de", 0.30), ("he", 0.12)), 1.0)
    t.update("ka", (("ka", 0.36), ("hy", 0.18)), 2.0)  # one short window's mistake
    t.update("yi", (("yi", 0.22), ("de", 0.21), ("he", 0.18)), 3.0)
    # de: 0.30*1 + 0.21*3 = 0.93 over 6 s; ka: 0.72; yi: 0.66; he: 0.12 + 0.54 = 0.66
    cur = t.current
    assert cur.code == "de" and cur.prob == pytest.approx(0.93 / 6) and not cur.sure
    assert t.choice() == "de"
    assert cur.record() == {"language": "de", "language_prob": 0.155, "language_uncertain": True}


def test_once_sure_the_utterance_keeps_its_language_until_the_next_one():
    t = LanguageTracker()
    t.update("de", (("de", 0.68),), 4.0)
    assert t.current.sure and t.current.code == "de"
    t.update("la", (("la", 0.80),), 4.0)  # later windows no longer change it
    assert t.current.code == "de" and t.current.prob == pytest.approx(0.68)
    t.reset()  # a new utterance
    assert t.current == Language(None) and t.choice() is None


def test_a_decode_of_less_than_a_second_says_nothing_about_the_language():
    """A stream's first chunks are a fraction of a second: there the model is sure of anything (Spanish as Thai)."""
    t = LanguageTracker()
    t.update("th", (("th", 0.91),), 0.2)
    t.update("th", (("th", 0.85),), 0.4)
    assert t.current == Language("th", 0.85, sure=False) and t.choice() is None  # reported, never decoded in
    t.update("es", (("es", 0.72),), 1.2)
    assert t.current.code == "es" and t.current.sure and t.current.prob == pytest.approx(0.72)


def test_an_english_only_model_reports_english_without_a_probability():
    t = LanguageTracker()
    t.update("en", (), 2.0)
    assert t.current == Language("en") and t.current.record() == {"language": "en"}


class FakeMultilingual(ASRBase):
    """Says "hallo welt" in whatever language it is asked; detects 'de' at ``probs``."""

    backend_name = "fake-multilingual"
    sep = ""
    capabilities = Capabilities(per_call_settings=True)

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        self.calls: list[dict] = []
        self.detect = (("de", 0.4), ("nl", 0.3))
        return None

    def transcribe(self, audio, init_prompt="", language=None, task=None):
        self.calls.append({"language": language, "task": task})
        n = len(audio) / 16000
        words = [(0.1, 0.5, " hallo"), (0.6, 1.0, " welt")] + [(1.1 + i, 1.5 + i, f" w{i}") for i in range(int(n) - 2)]
        return {"words": words, "language": language or self.detect[0][0], "detect": self.detect}

    def ts_words(self, result):
        return result["words"]

    def segments_end_ts(self, result):
        return [result["words"][-1][1]] if result["words"] else []

    def word_probabilities(self, result):
        return [0.99] * len(result["words"])

    def language_of(self, result):
        return result["language"], result["detect"]


def feed(proc, seconds: float) -> None:
    proc.insert_audio_chunk(np.zeros(int(seconds * 16000), dtype=np.float32))


def test_the_processor_decodes_in_the_utterances_language_and_commits_say_it():
    asr = FakeMultilingual("auto")
    proc = OnlineASRProcessor(asr, options=StreamingOptions())
    proc.task = "translate"
    feed(proc, 3.0)
    proc.process_iter()
    assert asr.calls[0] == {"language": None, "task": "translate"}  # first decode: the model detects
    feed(proc, 1.0)
    proc.process_iter()
    assert asr.calls[1] == {"language": "de", "task": "translate"}  # then the utterance's language
    commit = proc.finish()
    assert commit.language == Language("de", pytest.approx(0.4), False)


def test_while_the_language_is_uncertain_only_agreement_commits():
    """Settling and early commits would commit a single hypothesis in what may be the wrong language."""
    asr = FakeMultilingual("auto")
    unsure = OnlineASRProcessor(asr, options=StreamingOptions())
    feed(unsure, 4.0)
    assert not unsure.process_iter()  # sure words, ended long ago: still nothing from one hypothesis
    asr.detect = (("de", 0.9),)
    sure = OnlineASRProcessor(asr, options=StreamingOptions())
    feed(sure, 4.0)
    first = sure.process_iter()
    assert first.text.startswith("Hallo welt") and first.language == Language("de", 0.9, True)


def test_a_fresh_buffer_detects_again():
    asr = FakeMultilingual("auto")
    proc = OnlineASRProcessor(asr, options=StreamingOptions())
    feed(proc, 3.0)
    proc.process_iter()
    feed(proc, 1.0)
    proc.process_iter()
    proc.finish()  # end of the utterance (nothing left to decode)
    feed(proc, 3.0)
    proc.process_iter()
    assert [c["language"] for c in asr.calls] == [None, "de", None]


def test_a_backend_without_per_call_settings_is_called_as_before():
    class Plain(FakeMultilingual):
        capabilities = Capabilities()

        def transcribe(self, audio, init_prompt=""):
            return super().transcribe(audio, init_prompt)

    proc = OnlineASRProcessor(Plain("auto"), options=StreamingOptions())
    feed(proc, 3.0)
    proc.process_iter()  # no TypeError: no language= or task= passed


# -- the worker: the stream's language and task, and what commits say on the wire -------------------------
def run_worker(asr, hints: dict, seconds: float = 4.0):
    from pipeline import messages as m
    from pipeline.config import BusConfig, WorkerConfig
    from tests.test_asr_worker import RecordingPublisher
    from workers.asr_worker import ASRWorker
    from workers.decode_jobs import DecodeRunner

    worker = ASRWorker("asr", BusConfig(), WorkerConfig(name="asr"))
    worker.asr, worker.runner, worker.pub = asr, DecodeRunner(1), RecordingPublisher()
    pcm = np.full(1600, 100, dtype="<i2").tobytes()
    for i in range(int(seconds * 10)):
        worker.receive(m.encode("speech.s", m.Audio(stream="s", seq=i, t=i / 10, wall0=1000.0, pcm=pcm, **hints)))
        worker.tick(float(i))
    worker.receive(m.encode("speech.s", m.EndOfStream(stream="s", seq=int(seconds * 10), t=seconds)))
    for _ in range(5):
        worker.tick(100.0)
    return worker, [msg for _, msg in worker.pub.sent if isinstance(msg, m.Commit)]


def test_a_worker_follows_the_streams_language_and_task_and_commits_say_the_language():
    asr = FakeMultilingual("auto")
    worker, commits = run_worker(asr, {"language": "fr", "task": "translate"})
    assert {(c["language"], c["task"]) for c in asr.calls} == {("fr", "translate")}
    assert commits and all(c.language == "fr" and c.language_prob is None for c in commits)
    assert worker.counters["hints_ignored"] == 0


def test_with_auto_commits_carry_the_detected_language_and_whether_the_model_is_sure():
    asr = FakeMultilingual("auto")
    _, commits = run_worker(asr, {"language": "auto"})
    assert commits and all(c.language == "de" for c in commits)
    assert commits[-1].language_prob == pytest.approx(0.4) and commits[-1].language_uncertain is True


def test_a_worker_with_a_language_of_its_own_or_an_english_only_model_keeps_its_own():
    asr = FakeMultilingual("en")
    asr.multilingual = False
    worker, commits = run_worker(asr, {"language": "de", "task": "translate"})
    assert {(c["language"], c["task"]) for c in asr.calls} == {("en", None)}  # ignored, and counted
    assert commits and all(c.language == "en" for c in commits)
    assert worker.counters["hints_ignored"] == 1
