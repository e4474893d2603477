"""One stream's streaming schedule: when to decode, flush, start afresh and finish.

A :class:`StreamingSession` wraps one :class:`~asr_core.online.OnlineASRProcessor` and is
the only implementation of the rule every driver follows (the ASR worker, ``voxpipe
simulate``, the VAC processor, the bench's decode replay, the commit-policy sweep):

* audio and *marks* (a :data:`Mark.PAUSE` where the VAD heard a pause, :data:`Mark.END`
  at the end of the stream) go into an inbox, in stream order;
* a **decode** (:data:`Step.DECODE`: the next hypothesis) is due once the processor holds
  a *chunk* of audio it has not decoded: ``min_chunk_size`` seconds while there is spare
  capacity, more when the stream's decodes would keep its share of the decode threads
  busier than ``max_load`` (the driver says what share it has: :meth:`StreamingSession.due`'s
  ``share``; the chunk is then the stream's mean decode time over ``max_load x share``, at
  most ``max_chunk_size``), so a busy worker decodes each stream less often instead of
  falling behind; until the stream has committed its first word the chunk is
  ``first_chunk_size`` instead (``utterance_chunk_size`` for a stream translated on the
  processor's ``task``), and until a later fresh buffer (an utterance after a long
  pause) has committed its first word it is ``utterance_chunk_size``, when these are
  shorter, so the first word comes sooner;
* at a pause, ``at_pause`` says what happens: ``flush`` (the worker's rule: the tail is
  decoded and every word before the pause committed at once, the audio stays as context),
  ``finish`` (whisper_streaming's VAC: commit everything and start a fresh buffer), or
  ``ignore``;
* speech that resumes more than ``utterance_gap`` seconds after the end of the buffer
  starts a fresh buffer (finishing the old one first if something is unconfirmed);
* at the end of the stream, a **finish**: decode the tail, commit everything; the session
  has then *ended*.

The stream's time is its :class:`~asr_core.stream_clock.StreamClock`'s (``session.clock``):
audio that does not continue the stream (back in time, far ahead) is set aside, not taken,
and a timeline of set-aside audio that the stream switches to (a restarted source) starts
a fresh buffer. Marks are checked against it too, so that a flood of them changes nothing:

* a pause whose ``t`` is not where the stream's audio ends, or that follows another pause
  with no audio in between, is ignored; so is a segment start before the end of the audio;
* only the first audio of a segment (at its ``speech_start``'s ``t``) may jump any distance
  ahead over the silence the VAD left out;
* a pause is *held* until the stream shows it was one: audio that goes on exactly where it
  paused cancels it (speech did not stop there), audio after a gap or the end of the stream
  confirms it, and so does ``schedule.pause_hold`` seconds of nothing (with a ``now`` clock;
  without one a pause is taken at once), counted on the driver's ``heard_until`` clock: time in
  which it had read everything it was sent.

``counts``: marks ignored (``marks_ignored``), pauses cancelled by the audio after them
(``pauses_cancelled``) and pauses taken (``pauses_taken``).

The session has no threads and no sockets. A driver asks :meth:`StreamingSession.due`
which step to run, marks it started, runs it (:meth:`run`, which touches only the
processor, so it may run on another thread) and hands the result back
(:meth:`complete`); :meth:`run_due` does all three in a loop for single-threaded drivers.
A driver that decodes several sessions' steps in one batched call uses :meth:`begin`
instead of :meth:`run`: the :class:`StepRun` it returns holds the decode the step needs
(``request``), takes the backend's result back (``resume``) and gives the same
:class:`StepResult` as :meth:`run` (:mod:`asr_core.batching` drives such steps).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from .decode_step import DecodeRequest, ProcessorStep
from .online import Commit, OnlineASRProcessor
from .stream_clock import TOLERANCE, StreamClock, Verdict

LATE_TOLERANCE = TOLERANCE  # seconds a frame may start before the end of the last one and still be taken
PAUSE_TOLERANCE = 0.05  # seconds a pause mark's t may be off the end of the stream's audio


class Mark(Enum):
    """A point in a stream's inbox between two pieces of audio."""

    PAUSE = "pause"  # the speaker paused (the VAD's speech_end); queued as a :class:`Pause`
    END = "end"  # the stream ended (eos, idle timeout, shutdown)


class Step(str, Enum):
    """What a session needs done next by its processor."""

    DECODE = "decode"  # the next hypothesis of the buffer (LocalAgreement commits)
    FLUSH = "flush"  # a pause: decode the tail, commit everything, keep the audio as context
    FINISH = "finish"  # the end of an utterance or of the stream: commit everything, fresh buffer


PAUSE_ACTIONS = ("flush", "finish", "ignore")


@dataclass(frozen=True)
class Schedule:
    """When a session decodes. The defaults are ``voxpipe simulate``'s (whisper_online's); the worker's are
    :class:`pipeline.config_schema.WorkerConfig`'s."""

    min_chunk_size: float = 1.0  # seconds of new audio that make the next decode due (with spare capacity)
    at_pause: str = "flush"  # flush | finish | ignore (see the module's docstring)
    utterance_gap: float = 1.0  # a pause longer than this starts a fresh audio buffer
    pause_hold: float = 0.0  # seconds a pause waits for audio that would show it was none (needs a clock)
    # with a share of the decode threads given (due(share=...)): the chunk grows so that the
    # stream's decodes keep that share at most this busy, up to max_chunk_size (never below
    # min_chunk_size)
    max_load: float = 0.8
    max_chunk_size: float = 2.0
    # until the stream has committed a word, a decode is due after this much new audio instead
    # (if it is shorter): the first word sooner. 0: off
    first_chunk_size: float = 0.0
    # the same for a fresh buffer that has committed no word yet (an utterance after a long pause)
    utterance_chunk_size: float = 0.0

    def __post_init__(self):
        if self.min_chunk_size <= 0:
            raise ValueError("min_chunk_size must be positive")
        if not 0 < self.max_load <= 1:
            raise ValueError("max_load must be in (0, 1]")
        if self.max_chunk_size <= 0:
            raise ValueError("max_chunk_size must be positive")
        for key in ("first_chunk_size", "utterance_chunk_size"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0 (0: off)")
        if self.at_pause not in PAUSE_ACTIONS:
            raise ValueError(f"at_pause must be one of {', '.join(PAUSE_ACTIONS)}, not {self.at_pause!r}")
        if self.utterance_gap <= 0:
            raise ValueError("utterance_gap must be positive")
        if self.pause_hold < 0:
            raise ValueError("pause_hold must be >= 0")


@dataclass(frozen=True)
class StepResult:
    """What one step did: its commit (maybe empty), or the exception it raised, and its cost."""

    step: Step
    commit: Commit = Commit()
    error: BaseException | None = None
    decode_seconds: float = 0.0  # wall seconds spent in the backend during the step
    decoded_audio_seconds: float = 0.0  # seconds of audio handed to the backend
    decodes: int = 0
    set_aside: int = 0  # hypotheses set aside as cut short (asr_core.hypothesis.CUT_SHORT_MIN_WORDS)


@dataclass(frozen=True)
class Pause:
    """A pause mark in the inbox (:data:`Mark.PAUSE` taken): where the stream's audio ended, and when it came."""

    at: float
    since: float


#: the processor's step for each session step
PROCESSOR_STEP = {Step.DECODE: "iter", Step.FLUSH: "flush", Step.FINISH: "finish"}


class StepRun:
    """One session's step in progress: the decode it waits for, then its :class:`StepResult`.

    Only the processor is touched, so a step may run on another thread than the session's
    owner. An exception (from the processor, or one the driver hands over with :meth:`fail`
    because the backend failed on this step's audio) ends the step: its result carries it.
    """

    def __init__(self, session: StreamingSession, step: Step):
        self.step = step
        self.error: BaseException | None = None
        stats = session.processor.stats
        self._stats = stats
        self._before = (stats.decode_seconds, stats.decoded_audio_seconds, stats.decodes, stats.cut_short)
        self._step: ProcessorStep | None = None
        try:
            self._step = session.processor.begin(PROCESSOR_STEP[step])
        except BaseException as exc:  # noqa: BLE001 - MemoryError too: it belongs to this stream
            self.error = exc

    @property
    def request(self) -> DecodeRequest | None:
        """The decode this step waits for; None once it is done (or failed)."""
        if self.error is not None or self._step is None:
            return None
        return self._step.request

    def resume(self, result, seconds: float) -> None:
        """The backend's result for :attr:`request` (``seconds``: its share of the call's wall time)."""
        if self._step is None:
            raise RuntimeError("the step failed before it asked for a decode")
        try:
            self._step.resume(result, seconds)
        except BaseException as exc:  # noqa: BLE001 - the result could not be applied: this stream fails
            self.error = exc

    def fail(self, exc: BaseException) -> None:
        """The backend failed on :attr:`request`."""
        self.error = exc

    def result(self) -> StepResult:
        if self.error is not None:
            return StepResult(self.step, error=self.error)
        if self._step is None or not self._step.done:
            raise RuntimeError("the step still waits for a decode")
        stats, before = self._stats, self._before
        return StepResult(self.step, self._step.commit or Commit(), None, stats.decode_seconds - before[0],
                          stats.decoded_audio_seconds - before[1], stats.decodes - before[2],
                          stats.cut_short - before[3])


class StreamingSession:
    def __init__(self, processor: OnlineASRProcessor, schedule: Schedule | None = None, now=None,
                 heard_until=None):
        """``now``: a clock (e.g. ``time.monotonic``) for ``schedule.pause_hold`` and the wall0 rule.

        ``heard_until``: on the same clock, the time up to which the driver has pushed in everything
        that was sent to it (default: ``now``). A held pause is confirmed when that is ``pause_hold``
        past its arrival, so a driver that stalls (and reads its queue late) takes no pause for silence.
        """
        self.processor = processor
        self.schedule = schedule or Schedule()
        self.now = now
        self.heard_until = heard_until or now
        self.clock = StreamClock()
        self.counts: dict[str, int] = {"marks_ignored": 0, "pauses_cancelled": 0, "pauses_taken": 0}
        self.inbox: deque = deque()  # (t, samples), Pause and Mark items not yet given to the processor
        self.pending: Step | None = None  # a FLUSH or FINISH that must run before the inbox goes on
        self.running: Step | None = None  # the step handed out by due() and not completed yet
        self.ending = False  # the pending FINISH is the stream's last step
        self.ended = False
        self.started = False  # some audio was accepted
        self._audio_since_pause = False
        self.decode_seconds = 0.0  # moving mean of the wall seconds a DECODE step took (0: none yet)
        self._start_at: float | None = None  # t of the latest speech_start, until the audio after it

    @property
    def received_until(self) -> float:
        """Stream time just after the last accepted sample."""
        return self.clock.end or 0.0

    @property
    def wall0(self) -> float:
        """The stream's wall0 (Unix time of stream time 0) by its clock's rule; 0 when unknown."""
        return self.clock.wall0 or 0.0

    def _time(self) -> float:
        return self.now() if self.now is not None else 0.0

    # -- input (the owner's thread) ------------------------------------------------------
    def accepts(self, t: float) -> bool:
        """Would audio starting at stream time ``t`` be taken now (it continues the stream's time)?"""
        return not self.ended and self.clock.continues(t)

    def push_audio(self, t: float, samples: np.ndarray, wall0: float | None = None) -> bool:
        """Audio whose first sample is at stream time ``t``; False when it is not taken (set aside, or ended)."""
        if self.ended:
            return False
        if self._start_at is not None and abs(t - self._start_at) <= LATE_TOLERANCE:
            self.clock.allow_jump()  # the first frame of a segment the VAD announced: the silence before is left out
        self._start_at = None
        offer = self.clock.offer(float(t), len(samples) / self.processor.SAMPLING_RATE, (float(t), samples),
                                 wall0, self._time())
        if offer.verdict is Verdict.HOLD:
            return False
        self.inbox.extend(offer.items if offer.verdict is Verdict.SWITCH else [(float(t), samples)])
        self.started = True
        self._audio_since_pause = True
        self._feed()
        return True

    def push_pause(self, t: float | None = None) -> bool:
        """A pause at stream time ``t`` (None: wherever the audio ends); False when it is ignored.

        Without ``t`` (a driver that makes its own marks: replay, VAC) the next audio may also start
        any time later; from the bus, only audio at a :meth:`push_start`'s ``t`` may.
        """
        if self.ended:
            return False
        if not self._audio_since_pause or (t is not None and abs(t - self.received_until) > PAUSE_TOLERANCE):
            self.counts["marks_ignored"] += 1
            return False
        self._audio_since_pause = False
        if t is None:
            self.clock.allow_jump()
        self.inbox.append(Pause(self.received_until, self._time()))
        self._feed()
        return True

    def push_start(self, t: float) -> bool:
        """The VAD's ``speech_start`` at stream time ``t``: audio starting there may jump over the silence before.

        A start before the end of the stream's audio is no segment start: ignored (counted).
        """
        if self.ended or (self.started and t < self.received_until - LATE_TOLERANCE):
            self.counts["marks_ignored"] += 1
            return False
        self._start_at = float(t)
        return True

    def push_end(self) -> None:
        if not self.ended and Mark.END not in self.inbox and not self.ending:
            self.inbox.append(Mark.END)
            self._feed()

    @property
    def end_requested(self) -> bool:
        return self.ended or self.ending or Mark.END in self.inbox

    # -- scheduling ----------------------------------------------------------------------
    def due(self, share: float | None = None) -> Step | None:
        """The step to run now, or None (one is running, nothing is due, or the session ended).

        ``share``: the share of the driver's decode threads this stream may use (threads
        over active streams, 1.0 for a stream with a thread to itself); None (the default,
        and the deterministic replay's) decodes every ``min_chunk_size`` whatever decodes cost.
        """
        if self.running is not None or self.ended:
            return None
        self._feed()
        if self.pending is not None:
            return self.pending
        if self.processor.undecoded_seconds >= self.chunk(share):
            return Step.DECODE
        return None

    def chunk(self, share: float | None = None) -> float:
        """Seconds of new audio the next decode waits for (see the module's docstring)."""
        sch = self.schedule
        base = sch.min_chunk_size
        proc = self.processor
        # a translation needs more than a fraction of a second to say anything: a translated
        # stream starts as an utterance after a pause does (tests/test_multilingual.py)
        first = sch.utterance_chunk_size if proc.task == "translate" else sch.first_chunk_size
        if first and not proc.history:
            base = min(base, first)
        if sch.utterance_chunk_size and not proc.buffer_words:
            base = min(base, sch.utterance_chunk_size)
        if share is None or self.decode_seconds <= 0:
            return base
        wanted = self.decode_seconds / (sch.max_load * min(1.0, max(share, 1e-3)))
        return min(sch.max_chunk_size, max(base, wanted))

    def due_in(self, share: float | None = None) -> float | None:
        """Seconds of audio still to come before the next decode is due (0: due now; None: nothing will be).

        ``share`` as in :meth:`due` (the chunk it waits for).
        """
        if self.ended or self.running is not None:
            return None
        if self.pending is not None:
            return 0.0
        return max(0.0, self.chunk(share) - self.processor.undecoded_seconds)

    def priority(self) -> tuple:
        """Sort key among sessions with a due step: pending flushes/finishes first, then the oldest undecoded audio."""
        return (0 if self.pending is not None else 1, -self.processor.undecoded_seconds)

    def start(self, step: Step) -> None:
        """The driver hands ``step`` (from :meth:`due`) to :meth:`run` now."""
        self.running = step
        self.pending = None

    def run(self, step: Step) -> StepResult:
        """Run one step on the processor (any thread), one ``transcribe`` per decode; an exception is returned."""
        run = self.begin(step)
        asr = self.processor.asr
        while (req := run.request) is not None:
            t0 = time.perf_counter()
            try:
                result = req.decode(asr)
            except BaseException as exc:  # noqa: BLE001 - MemoryError too: it belongs to this stream
                run.fail(exc)
                break
            run.resume(result, time.perf_counter() - t0)
        return run.result()

    def begin(self, step: Step) -> StepRun:
        """Start ``step`` (from :meth:`due`, after :meth:`start`) for a driver that decodes it itself."""
        return StepRun(self, step)

    def complete(self, result: StepResult) -> Commit:
        """Take a finished step's result back (the owner's thread); returns its commit."""
        self.running = None
        if result.error is None and result.step is Step.DECODE and result.decodes:
            took = result.decode_seconds / result.decodes
            self.decode_seconds = took if self.decode_seconds <= 0 else 0.7 * self.decode_seconds + 0.3 * took
        if result.error is None and result.step is Step.FINISH and self.ending:
            self.ended = True
        self._feed()
        return result.commit if result.error is None else Commit()

    def restart(self, processor: OnlineASRProcessor) -> None:
        """After a failed step: go on with a fresh ``processor`` from the next audio (the failed buffer is lost)."""
        self.processor = processor
        queued = [item[0] for item in self.inbox if isinstance(item, tuple)]
        processor.init(queued[0] if queued else self.received_until)
        self.pending = None
        self.running = None
        if self.ending:
            self.ended = True
        self._feed()

    def resume(self, committed_until: float | None, words=()) -> None:
        """Take over a stream that was committed up to ``committed_until`` elsewhere (a pool's failover or handoff).

        Call it before the first audio; the audio replayed from a little before that point is
        then context, and the schedule goes on as for any stream (see
        :meth:`~asr_core.online.OnlineASRProcessor.continue_after`).
        """
        self.processor.continue_after(committed_until, words)

    def run_due(self, on_commit=None, share: float | None = None) -> list[Commit]:
        """Run every step that is due, one after the other (single-threaded drivers); returns the commits."""
        commits = []
        while (step := self.due(share)) is not None:
            self.start(step)
            result = self.run(step)
            if result.error is not None:
                raise result.error
            commit = self.complete(result)
            if commit:
                commits.append(commit)
                if on_commit is not None:
                    on_commit(commit)
        return commits

    # -- internals -----------------------------------------------------------------------
    def _feed(self) -> None:
        """Hand the inbox to the processor up to the next step that must run first (never while one runs)."""
        proc = self.processor
        while self.inbox and self.running is None and self.pending is None and not self.ended:
            item = self.inbox[0]
            if isinstance(item, Pause):
                after = self.inbox[1] if len(self.inbox) > 1 else None
                if isinstance(after, tuple) and abs(after[0] - item.at) <= LATE_TOLERANCE:
                    self.inbox.popleft()  # the speech went on right where it "paused": it did not
                    self.counts["pauses_cancelled"] += 1
                    continue
                if (after is None and self.heard_until is not None
                        and self.heard_until() - item.since < self.schedule.pause_hold):
                    break  # held: audio may still come that shows it was no pause
                self.inbox.popleft()
                self.counts["pauses_taken"] += 1
                if proc.buffer_duration and self.schedule.at_pause != "ignore":
                    self.pending = Step.FLUSH if self.schedule.at_pause == "flush" else Step.FINISH
                continue
            if item is Mark.END:
                self.inbox.popleft()
                self.pending, self.ending = Step.FINISH, True
                continue
            t, samples = item
            if proc.buffer_duration and (t - proc.buffer_end > self.schedule.utterance_gap
                                         or t < proc.buffer_end - LATE_TOLERANCE):
                # speech resumes after a long pause (or the stream switched to another timeline):
                # a fresh buffer; when something is still unconfirmed, finish the old one first
                if proc.hyp.pending() or proc.undecoded_seconds > 0.05:
                    self.pending = Step.FINISH
                    continue
                proc.init(t)
            self.inbox.popleft()
            proc.insert_audio_chunk(samples, t=t)

