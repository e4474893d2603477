"""What a worker keeps, counts and says of its streams beyond their transcripts (a part of :mod:`workers.asr_worker`).

* :class:`StreamState`: the bus side of a stream, beside its session;
* the decode counters (``decodes``, ``decode_seconds``, ``rtf``) and the keep-up verdict: one warning when
  decoding stays slower than the audio, one line when it keeps up again (:mod:`asr_core.keepup`);

* the counts of each stream's rules (:class:`asr_core.streaming.StreamingSession` and its clock:
  ``marks_ignored``, ``pauses_cancelled``, ``out_of_step``, ``timeline_switches``, ``wall0_ignored``),
  summed over live streams and those that have left, in the heartbeat counters;
* what was lost, said on the stream's transcript topic with an ``error``: messages lost on the way
  (``seq`` gaps) and a VAD that started over under a live stream (``upstream_restarts``), at most one
  report per stream every ``LOSS_REPORT_S`` seconds. A report goes out just before the stream's next
  commit or end, or ``REPORT_HOLD_S`` after the loss, whichever is first: a loss is mostly noticed on
  the first message after an outage of the bus (a broker restarted), when the transcript's subscribers
  are still reconnecting and would miss it: they back off up to ``RECONNECT_MAX_MS`` between attempts,
  so the hold lasts two of those and a second more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from asr_core.keepup import BEHIND, KEEPING_UP
from asr_core.streaming import StepResult, StreamingSession
from pipeline import messages as m
from pipeline.bus import RECONNECT_MAX_MS

LOSS_REPORT_S = 5.0  # at most one "lost" error per stream this often
REPORT_HOLD_S = 2 * RECONNECT_MAX_MS / 1000 + 1.0  # a loss report waits at most this long for the next commit or end
CLOCK_COUNTERS = {"out_of_step": "out_of_step", "switches": "timeline_switches", "wall0_ignored": "wall0_ignored"}


@dataclass
class StreamState:
    """What the worker keeps per stream beside its session: the bus side."""

    stream: str
    session: StreamingSession
    last_seen: float = 0.0
    last_partial: str = ""
    commits: int = 0
    failures: int = 0
    epoch: int | None = None  # a dispatched pool's assignment epoch
    handoff: bool = False  # the stream moves to another worker when its session ends (no transcript eos)
    frames: int = 0  # messages received
    lost: int = 0  # messages lost on the way, not yet reported
    lost_reported: float = 0.0
    held_report: str | None = None  # a loss report waiting for the stream's next commit or end
    language: dict = field(default_factory=dict)  # the last commit's language fields
    hints: tuple = (None, None)  # (language, task) the source asks for, from its latest audio frame
    followed: tuple | None = None  # the hints the processor follows (None: not applied yet)

    @property
    def processor(self):
        return self.session.processor

    @property
    def wall0(self) -> float:
        return self.session.wall0


class StreamAccounting:
    """Mixin for the ASR worker (it has ``streams``, ``counters``, ``pub``, ``name``, ``limited``, ``keepup``,
    ``asr``, ``log``, ``_ended_audio``)."""

    _gone_counts: dict[str, int]

    def _note_losses(self, msg: m.Message) -> None:
        """Messages of a live stream lost on the way, or its VAD restarted under it: say so on its transcript."""
        st = self.streams.get(msg.stream)
        if st is None:
            return
        restarted = self.sender_restarted and msg.seq == 0  # a VAD that starts over numbers from 0 again
        if not (restarted or self.missing):
            return
        self.counters["upstream_restarts"] += int(restarted)
        self.counters["stream_gaps"] += self.missing  # of live streams (``gaps`` counts every topic, heartbeats too)
        st.lost += self.missing
        if time.monotonic() - st.lost_reported < LOSS_REPORT_S:
            return
        at = getattr(msg, "t", 0.0)
        if restarted:
            st.held_report = (f"the stream's speech started over at {at:.2f}s without an end (its VAD restarted?): "
                              "speech around then may be lost")
        else:
            st.held_report = f"{st.lost} message(s) of this stream were lost on the way (last before {at:.2f}s)"
        st.lost, st.lost_reported = 0, time.monotonic()

    def _release_report(self, st, now: float | None = None) -> None:
        """Publish the stream's held loss report: before its next commit or end (``now`` None), or once it is
        ``REPORT_HOLD_S`` old."""
        if st.held_report is None or (now is not None and now - st.lost_reported < REPORT_HOLD_S):
            return
        message, st.held_report = st.held_report, None
        self._report(st, message)

    def _report(self, st, message: str) -> None:
        topic = m.transcript_topic(self.pool, st.stream)
        self.publish(topic, m.Error(stream=st.stream, seq=self.pub.seq(topic), message=message, worker=self.name))
        self.limited.warning(f"report:{message[:20]}", "stream %s: %s", st.stream, message)

    @staticmethod
    def _session_counts(session: StreamingSession) -> dict[str, int]:
        counts = dict(session.counts)
        counts.update({c: getattr(session.clock.counts, k) for k, c in CLOCK_COUNTERS.items()})
        return counts

    def _gone(self, st) -> None:
        """A stream leaves: keep what its session counted."""
        for key, n in self._session_counts(st.session).items():
            self._gone_counts[key] = self._gone_counts.get(key, 0) + n

    def _refresh_counts(self) -> None:
        totals = dict(self._gone_counts)
        for st in self.streams.values():
            for key, n in self._session_counts(st.session).items():
                totals[key] = totals.get(key, 0) + n
        self.counters.update(totals)

    def _watch_speed(self, result: StepResult) -> None:
        """Warn once when decoding stays slower than the audio (RTF > 1), and say when it keeps up again."""
        verdict = self.keepup.add(time.monotonic(), result.decode_seconds, result.decoded_audio_seconds)
        rtf = self.keepup.rtf
        if verdict == BEHIND:
            self.counters["fell_behind"] = self.counters.get("fell_behind", 0) + 1
            self.log.warning(
                "backend %s cannot keep up with live audio: real-time factor %.1f over the last %.0fs (decoding "
                "1 s of audio takes %.1f s), so transcripts fall further and further behind the speaker; use a "
                "smaller model, a faster device or more workers", self.asr.describe().get("backend", "?"), rtf,
                max(self.keepup.window_seconds, result.decode_seconds), rtf)
        elif verdict == KEEPING_UP:
            self.log.info("backend keeps up with live audio again: real-time factor %.2f", rtf)

    def _update_rtf(self) -> None:
        """Decode seconds per second of audio received, over all streams so far."""
        audio = self._ended_audio + sum(st.processor.stats.audio_seconds for st in self.streams.values())
        self.counters["audio_seconds"] = round(audio, 3)
        self.counters["rtf"] = round(self.counters["decode_seconds"] / audio, 3) if audio else 0.0
