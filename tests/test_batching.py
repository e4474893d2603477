"""Batched decoding across streams: the rules, with scripted recognisers (no model).

* a session's step driven through a batch (``begin`` + :func:`asr_core.batching.run_steps`)
  commits exactly what :meth:`StreamingSession.run` commits, step after step;
* several sessions' steps share one ``transcribe_batch`` call, each gets its own result;
* a buffer the engine fails on fails only its own stream, also when the whole batched call
  fails (every item is then decoded again on its own);
* a backend batches only if it says so and its batched path is its own (a subclass that
  overrides ``transcribe`` alone is decoded one buffer at a time);
* buffers are grouped by window length and prompt length (:func:`group_windows`);
* the worker spreads due streams over its free threads, most urgent first, similar lengths
  together (:func:`plan_batches`), and reports queue waits and batch sizes;
* a batch takes along the streams most of the way to due (``JOIN_SHARE`` of their chunk), so
  streams decoded together stay in step; without that, a due stream waits for another only
  when it is due within the gathering window.
"""

from __future__ import annotations

import numpy as np
import pytest

from asr_core.base import Capabilities
from asr_core.batching import Window, batches, batching_on, group_windows, run_steps
from asr_core.online import OnlineASRProcessor, StreamingOptions
from asr_core.streaming import Schedule, Step, StreamingSession
from tests.fakes import TimelineASR, ramp, words
from workers.decode_batches import DecodeLoad, plan_batches

TIMELINE = words("one two three four five six seven eight nine ten", start=0.1, dur=0.3, gap=0.2)  # 0.1 .. 4.9
POISON = 0.25  # a buffer holding this sample value makes the engine fail


class BatchingTimeline(TimelineASR):
    """A perfect recogniser that batches: records the size of each batched call."""

    capabilities = Capabilities(batch=True)

    def __init__(self, *args, fail_whole_batch=False, **kwargs):
        self.batch_calls: list[int] = []
        self.fail_whole_batch = fail_whole_batch
        super().__init__(*args, **kwargs)

    def transcribe(self, audio, init_prompt: str = ""):
        if np.any(np.asarray(audio) == POISON):
            raise RuntimeError("poisoned buffer")
        return super().transcribe(audio, init_prompt)

    def transcribe_batch(self, audios, prompts=None):
        self.batch_calls.append(len(audios))
        if self.fail_whole_batch and any(np.any(np.asarray(a) == POISON) for a in audios):
            raise RuntimeError("the batch failed as a whole")
        return super().transcribe_batch(audios, prompts)


def session(asr, offset=0.0):
    s = StreamingSession(OnlineASRProcessor(asr, options=StreamingOptions.la2()), Schedule(1.0))
    s.processor.init(offset)
    return s


def feed(s, beg, end, step=0.1, poison=False):
    t = beg
    while t < end - 1e-9:
        chunk = ramp(t, min(end, t + step))
        if poison:
            chunk[len(chunk) // 2] = POISON
        s.push_audio(round(t, 3), chunk)
        t = round(t + step, 3)


def run_batched(asr, sessions):
    """One batch over every session with a due step, as the worker runs it; returns the results."""
    jobs = []
    for s in sessions:
        step = s.due()
        if step is not None:
            s.start(step)
            jobs.append((s, s.begin(step)))
    stats = run_steps(asr, [run for _, run in jobs])
    return [(s, run.result()) for s, run in jobs], stats


def test_a_step_commits_the_same_through_a_batch_as_alone():
    alone, batched = session(TimelineASR(TIMELINE)), session(BatchingTimeline(TIMELINE))
    got_alone, got_batched = [], []
    for end in np.arange(0.5, 5.01, 0.5):
        for s in (alone, batched):
            feed(s, round(end - 0.5, 3), round(end, 3))
        got_alone += alone.run_due()
        results, _ = run_batched(batched.processor.asr, [batched])
        got_batched += [c for s, r in results if (c := s.complete(r))]
    for s in (alone, batched):
        s.push_end()
    got_alone += alone.run_due()
    results, _ = run_batched(batched.processor.asr, [batched])
    got_batched += [c for s, r in results if (c := s.complete(r))]
    assert got_batched == got_alone
    assert [w[2].strip() for c in got_batched for w in c.words] == [w[2].strip() for w in TIMELINE]
    assert batched.processor.stats.decodes == alone.processor.stats.decodes > 0


def test_the_streams_of_a_batch_share_one_call_and_each_gets_its_own_words():
    asr = BatchingTimeline(TIMELINE)
    # three streams at different points of the same timeline, each with its own clock
    sessions = [session(asr) for _ in range(3)]
    for k, s in enumerate(sessions):
        feed(s, 0.0, 1.0 + k)
    results, stats = run_batched(asr, sessions)
    assert asr.batch_calls == [3] and stats.sizes == [3]
    heard = [[w[2] for w in s.processor.partial().words] for s, _ in results]
    assert heard == [["one", "two"], ["one", "two", "three", "four"], ["one", "two", "three", "four", "five", "six"]]
    assert all(r.error is None and r.decodes == 1 for _, r in results)
    # the call's wall time is shared out by audio: the stream with the most audio got the most
    shares = [r.decode_seconds for _, r in results]
    assert shares == sorted(shares) and sum(shares) == pytest.approx(stats.seconds)


@pytest.mark.parametrize("whole", [False, True], ids=["one item fails", "the whole call fails"])
def test_a_failing_stream_in_a_batch_fails_only_that_stream(whole):
    asr = BatchingTimeline(TIMELINE, fail_whole_batch=whole)
    good, bad, other = session(asr), session(asr), session(asr)
    feed(good, 0.0, 2.0)
    feed(bad, 0.0, 2.0, poison=True)
    feed(other, 0.0, 3.0)
    results, stats = run_batched(asr, [good, bad, other])
    by = {id(s): r for s, r in results}
    assert isinstance(by[id(bad)].error, RuntimeError) and "poisoned" in str(by[id(bad)].error)
    assert by[id(good)].error is None and by[id(other)].error is None
    assert [w[2] for w in good.processor.partial().words] == ["one", "two", "three", "four"]
    assert [w[2] for w in other.processor.partial().words] == ["one", "two", "three", "four", "five", "six"]
    assert stats.fallbacks == (1 if whole else 0)


def test_only_a_backend_whose_batched_path_is_its_own_batches():
    class Wrapped(BatchingTimeline):  # overrides transcribe only: its batched path would skip it
        def transcribe(self, audio, init_prompt: str = ""):
            return super().transcribe(audio, init_prompt)

    assert batches(BatchingTimeline(TIMELINE))
    assert not batches(TimelineASR(TIMELINE))  # Capabilities(batch=False): the default
    assert not batches(Wrapped(TIMELINE))


def test_batch_auto_batches_only_a_batching_backend_on_a_gpu():
    class OnGPU(BatchingTimeline):
        def runs_on_gpu(self) -> bool:
            return True

    cpu, gpu, plain = BatchingTimeline(TIMELINE), OnGPU(TIMELINE), TimelineASR(TIMELINE)
    assert [batching_on(s, cpu) for s in ("auto", True, False)] == [False, True, False]
    assert [batching_on(s, gpu) for s in ("auto", True, False)] == [True, True, False]
    assert [batching_on(s, plain) for s in ("auto", True)] == [False, False]
    with pytest.raises(ValueError, match="true, false or auto"):
        batching_on("always", gpu)


def test_the_default_transcribe_batch_decodes_each_buffer_and_keeps_failures_apart():
    asr = TimelineASR(TIMELINE)
    bad = ramp(0.0, 1.0)
    bad[0] = np.nan  # check_audio refuses it
    out = asr.transcribe_batch([ramp(0.0, 1.0), bad, ramp(0.0, 2.0)], ["", "", "prompt"])
    assert isinstance(out[1], ValueError)
    assert [w[2].strip() for w in asr.ts_words(out[0])] == ["one", "two"]
    assert [c.prompt for c in asr.calls] == ["", "prompt"]


def test_windows_of_similar_length_and_prompt_share_a_group():
    windows = [Window(0, 500, 40), Window(1, 600, 36), Window(2, 700, 44), Window(3, 1200, 40),
               Window(4, 500, 0), Window(5, 550, 10), Window(6, 1250, 42)]
    groups = [[w.index for w in g] for g in group_windows(windows, max_pad_frames=100)]
    # 4 has no prompt (its own group); 5's prompt is far shorter than the others'; 2 is 200 frames
    # longer than 0 (more than the padding allowed); 3 and 6 are close to each other
    assert groups == [[4], [0, 1], [5], [2], [3, 6]]
    assert [len(g) for g in group_windows([Window(i, 500, 30) for i in range(5)], 0, max_batch=2)] == [2, 2, 1]


def test_due_streams_are_spread_over_the_free_threads_most_urgent_first():
    due = [("a", 3.0), ("b", 9.0), ("c", 3.5), ("d", 8.0), ("e", 1.0)]  # most urgent first
    batches_ = plan_batches(due, free=2, max_batch=2, length=lambda x: x[1])
    assert batches_ == [[("c", 3.5), ("a", 3.0)][::-1], [("d", 8.0), ("b", 9.0)]]  # "e" waits for the next turn
    assert plan_batches(due[:1], free=2, max_batch=16, length=lambda x: x[1]) == [[("a", 3.0)]]
    assert plan_batches(due, free=0, max_batch=4, length=lambda x: x[1]) == []


def test_the_decode_load_reports_queue_waits_and_batch_sizes():
    load = DecodeLoad()
    for w in (0.0, 0.01, 0.02, 0.5):
        load.started(w)
    for size in (1, 4, 4):
        load.batch(size)
    load.backend_calls([4, 4, 1])
    s = load.summary()
    assert s["queue_wait_ms"]["max"] == 500.0 and 10.0 <= s["queue_wait_ms"]["p50"] <= 20.0
    assert s["batch_size"] == {"mean": 3.0, "max": 4, "counts": {"1": 1, "4": 2}}
    assert s["backend_call_size"]["max"] == 4
    assert DecodeLoad().summary() == {"recent_steps": 0}


def test_steps_of_a_batch_are_the_same_kinds_as_alone():
    asr = BatchingTimeline(TIMELINE)
    s = session(asr)
    feed(s, 0.0, 1.5)
    s.push_pause()
    results, _ = run_batched(asr, [s])
    assert [r.step for _, r in results] == [Step.FLUSH]
    assert [w[2].strip() for w in s.complete(results[0][1]).words] == ["one", "two", "three"]


def test_a_batching_worker_decodes_due_streams_together_and_reports_the_load():
    from pipeline import messages as m
    from pipeline.config import BusConfig, WorkerConfig
    from tests.test_asr_worker import RecordingPublisher
    from workers.asr_worker import ASRWorker
    from workers.decode_jobs import DecodeRunner

    worker = ASRWorker("asr", BusConfig(), WorkerConfig(name="asr", batch_window_ms=0.0, min_chunk_size=1.0,
                                                        first_chunk_size=0.0,
                                                        utterance_chunk_size=0.0))
    levels = {"a": 100, "b": 200, "c": 300}  # each stream's audio has its own sample value

    def start_of(audio):
        stream = next(s for s, v in levels.items() if np.isclose(audio[0], v / 32768.0))
        return worker.streams[stream].processor.buffer_time_offset

    worker.asr = BatchingTimeline(TIMELINE, start_of=start_of)
    worker.runner, worker.batching, worker.pub = DecodeRunner(1), True, RecordingPublisher()
    seq = dict.fromkeys(levels, 0)
    for k in range(30):  # 3 s of audio on every stream, frame by frame, all streams at once
        for stream, level in levels.items():
            pcm = np.full(1600, level, dtype="<i2").tobytes()
            worker.receive(m.encode(f"speech.{stream}", m.Audio(stream=stream, seq=seq[stream], t=k / 10,
                                                                  wall0=1000.0, pcm=pcm)))
            seq[stream] += 1
        worker.tick(k / 10)
    for stream in levels:
        worker.receive(m.encode(f"speech.{stream}", m.EndOfStream(stream=stream, seq=seq[stream], t=3.0)))
    for _ in range(3):
        worker.tick(4.0)

    per_stream = {s: [w[2].strip() for t, msg in worker.pub.sent if isinstance(msg, m.Commit)
                      and msg.stream == s for w in msg.words] for s in levels}
    # (the worker's policy writes a sentence's first word with a capital: sentence_case)
    assert per_stream == {s: ["One", "two", "three", "four", "five", "six"] for s in levels}
    # every decode of the three streams ran in one call
    assert worker.asr.batch_calls and all(n == 3 for n in worker.asr.batch_calls)
    info = worker.info()
    assert info["batch"] is True and info["decode_queue"]["batch_size"]["max"] == 3
    assert "queue_wait_ms" in info["decode_queue"]
    # one more batch than backend calls: the three finishes had no audio left to decode
    assert worker.counters["batches"] == len(worker.asr.batch_calls) + 1


def test_the_worker_batch_options_are_checked_with_the_config():
    from pipeline.config_schema import SectionError, WorkerConfig

    w = WorkerConfig()
    assert w.batch == "auto" and w.max_batch == 16 and w.batch_window_ms == 50.0
    WorkerConfig(batch=False, batch_window_ms=0.0, max_batch=1).check()
    with pytest.raises(SectionError, match="max_batch"):
        WorkerConfig(max_batch=0).check()
    with pytest.raises(SectionError, match="batch_window_ms"):
        WorkerConfig(batch_window_ms=-1.0).check()


def test_dtw_finds_the_monotonic_path_through_a_cost_matrix():
    pytest.importorskip("torch")
    from asr_core.backends.torch_decode import dtw

    cost = np.ones((3, 6))
    for i, j in [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5)]:
        cost[i, j] = 0.0  # token 0 on frames 0-1, token 1 on 2-3, token 2 on 4-5
    tokens, frames = dtw(cost)
    assert frames.tolist() == [0, 1, 2, 3, 4, 5] and tokens.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "one at a time"])
def test_live_streams_in_one_process_commit_every_word_and_measure_latency(batch):
    from apps.bench.inprocess import round_figures, run_round

    asr = BatchingTimeline(words("one two three", start=0.1, dur=0.3, gap=0.2))  # 0.1 .. 1.4
    events = [(round((k + 1) / 10, 1), [("audio", k / 10, ramp(k / 10, (k + 1) / 10))]) for k in range(15)]
    events.append((1.5, [("end", 1.5)]))
    rr = run_round(asr, events, 3, batch, schedule=Schedule(0.5))
    fig = round_figures(rr, "one two three", max_p90=2.0, max_tail_lag=2.0,
                        wer=lambda ref, hyp: 0.0 if ref.lower() == hyp.lower() else 1.0)
    assert rr["transcripts"] == ["One two three"] * 3 and fig["wer"] == 0.0  # (sentence case: the first capital)
    assert fig["held"] and fig["words"] == 9 and 0.0 <= fig["p50"] <= fig["p90"] < 1.5
    assert (max(asr.batch_calls) == 3) if batch else not asr.batch_calls


def test_the_in_process_capacity_search_bisects_after_the_first_failure():
    from apps.bench.inprocess import search

    tried = []

    def measure(n):
        tried.append(n)
        return {"held": n <= 21}

    res = search(measure, [1, 8, 16, 32, 64], budget_s=60, refine=3)
    assert tried == [1, 8, 16, 32, 24, 20, 22] and res["capacity"] == 20 and res["bound"] == "lower"
    res = search(lambda n: {"held": n <= 21}, [1, 8, 16, 32, 64], budget_s=60, refine=9)
    assert res["capacity"] == 21 and res["bound"] == "exact"


def batching_worker(seconds: dict, window_ms: float = 50.0):
    """A batching worker (one decode thread) holding ``seconds`` of speech per stream, nothing decoded yet."""
    from pipeline import messages as m
    from pipeline.config import BusConfig, WorkerConfig
    from tests.test_asr_worker import RecordingPublisher
    from workers.asr_worker import ASRWorker
    from workers.decode_jobs import DecodeRunner

    worker = ASRWorker("asr", BusConfig(), WorkerConfig(name="asr", batch_window_ms=window_ms, min_chunk_size=1.0,
                                                        first_chunk_size=0.0, utterance_chunk_size=0.0))
    worker.asr = BatchingTimeline(TIMELINE, start_of=lambda audio: 0.0)
    worker.runner, worker.batching, worker.pub = DecodeRunner(1), True, RecordingPublisher()
    for stream, secs in seconds.items():
        samples, k = int(round(secs * 16000)), 0
        while k * 1600 < samples:  # 0.1 s frames, the last one shorter
            pcm = np.full(min(1600, samples - k * 1600), 100, dtype="<i2").tobytes()
            worker.receive(m.encode(f"speech.{stream}", m.Audio(stream=stream, seq=k, t=k / 10, pcm=pcm)))
            k += 1
    return worker


def test_a_batch_takes_along_the_streams_most_of_the_way_to_due():
    """So that streams decoded together are due together the next time, instead of drifting into batches of one."""
    from workers.decode_batches import JOIN_SHARE

    assert JOIN_SHARE == 0.6
    along = batching_worker({"a": 1.0, "b": 0.9, "c": 0.6})  # b and c have 90% and 60% of their 1 s chunk
    along.tick(10.0)
    assert along.asr.batch_calls == [3] and along.counters["batched_steps"] == 3
    behind = batching_worker({"a": 1.0, "b": 0.5})  # b has half its chunk: it waits for its own
    behind.tick(10.0)
    assert behind.asr.batch_calls == [1]
    alone = batching_worker({"a": 1.0, "b": 0.9})
    alone.scheduler.join_share = 0.0  # only due streams: b (0.1 s from due, beyond the 50 ms window) waits
    alone.tick(10.0)
    assert alone.asr.batch_calls == [1]


def test_without_joining_a_due_stream_waits_briefly_only_for_a_stream_about_to_be_due():
    from pipeline import messages as m

    close = batching_worker({"a": 1.0, "b": 0.96})  # 40 ms from due: a waits for it
    close.scheduler.join_share = 0.0
    close.tick(10.0)
    assert close.asr.batch_calls == [] and close.poll_ms <= 51
    pcm = np.full(1600, 100, dtype="<i2").tobytes()
    close.receive(m.encode("speech.b", m.Audio(stream="b", seq=10, t=0.96, pcm=pcm[:1280])))
    close.tick(10.02)
    assert close.asr.batch_calls == [2]
    joined = batching_worker({"a": 1.0, "b": 0.96})  # with joining it need not wait: b comes along at once
    joined.tick(10.0)
    assert joined.asr.batch_calls == [2]


class BatchingMultilingual(BatchingTimeline):
    """A perfect recogniser that batches and takes a language and a task per call.

    It hears the timeline in whatever language it is asked; asked for none, it detects
    ``detect[t // 10]`` (by where the buffer starts in the stream: one stream per 10 s).
    Every decode's (language, task) is recorded, alone or batched.
    """

    capabilities = Capabilities(batch=True, per_call_settings=True)

    def __init__(self, *args, detect=None, **kwargs):
        self.detect = detect or {}
        self.settings: list[tuple] = []
        super().__init__(*args, **kwargs)
        self.original_language = None  # language: auto

    def transcribe(self, audio, init_prompt: str = "", language=None, task=None):
        self.settings.append((language, task))
        t0 = self.start_of(audio) if len(audio) else 0.0
        detected = () if language else tuple(self.detect[int(t0 // 10)])
        return {"segs": super().transcribe(audio, init_prompt), "language": language or detected[0][0],
                "detected": detected}

    def transcribe_batch(self, audios, prompts=None, languages=None, tasks=None):
        from asr_core.base import ASRBase

        self.batch_calls.append(len(audios))
        return ASRBase.transcribe_batch(self, audios, prompts, languages, tasks)

    def ts_words(self, result):
        return super().ts_words(result["segs"])

    def segments_end_ts(self, result):
        return super().segments_end_ts(result["segs"])

    def word_probabilities(self, result):
        return [0.99] * len(self.ts_words(result))  # sure words: they may commit early

    def language_of(self, result):
        return result["language"], result["detected"]


def test_each_stream_of_a_batch_decodes_in_its_own_language_and_task_and_commits_as_alone():
    """The batched path carries what each stream decodes in (its given or detected language, its
    task) and keeps the utterance's language rule: while unsure, only agreement commits."""
    from asr_core.language import Language

    timeline = [w for start in (0.1, 10.1, 20.1)
                for w in words("one two three four five six seven eight", start=start, dur=0.3, gap=0.2)]
    detect = {1: (("de", 0.9),), 2: (("fr", 0.3), ("de", 0.2))}
    offsets = (0.0, 10.0, 20.0)  # German given and translated; German detected (sure); French detected (unsure)

    def streams(asr):
        out = []
        for offset in offsets:
            s = StreamingSession(OnlineASRProcessor(asr, options=StreamingOptions()), Schedule(1.0))
            s.processor.init(offset)
            out.append(s)
        out[0].processor.language.set_given("de")
        out[0].processor.task = "translate"
        return out

    alone_asr, batched_asr = (BatchingMultilingual(timeline, detect=detect) for _ in range(2))
    alone, batched = streams(alone_asr), streams(batched_asr)
    got_alone: list = [[] for _ in offsets]
    got_batched: list = [[] for _ in offsets]
    first_step: list = []
    for end in np.arange(1.0, 4.01, 1.0):
        for s, offset in zip(alone + batched, offsets * 2, strict=True):
            feed(s, round(offset + end - 1.0, 3), round(offset + end, 3))
        for k, s in enumerate(alone):
            got_alone[k].append(s.run_due())
        results, _ = run_batched(batched_asr, batched)
        step = [s.complete(r) for s, r in results]
        first_step = first_step or step
        for k, c in enumerate(step):
            got_batched[k].append([c] if c else [])
    assert got_batched == got_alone and sorted(batched_asr.settings, key=str) == sorted(alone_asr.settings, key=str)
    assert batched_asr.batch_calls and all(n == 3 for n in batched_asr.batch_calls)
    asked = {(language, task) for language, task in batched_asr.settings}
    # given: always German, translated; detected: the model detects first, then decodes in what it detected
    assert asked == {("de", "translate"), (None, None), ("de", None), ("fr", None)}
    given, sure, unsure = ([c for step in got for c in step] for got in got_batched)
    assert given and all(c.language == Language("de") for c in given)
    assert sure and all(c.language == Language("de", pytest.approx(0.9), True) for c in sure)
    assert unsure and all(c.language == Language("fr", pytest.approx(0.3), False) for c in unsure)
    # the first hypothesis: sure words that ended 0.3 s before the audio commit early in the sure
    # streams; in the unsure one nothing commits from one hypothesis
    assert first_step[0] and first_step[1] and not first_step[2]
