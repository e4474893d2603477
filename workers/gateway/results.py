"""One client connection's bus messages, turned into protocol-neutral results in connection time.

A connection's audio goes to the bus in *segments* (:mod:`.bus_stream`): one
bus stream each, ended by ``eos`` when the client asks for a flush (Deepgram's
``Finalize``, a Realtime ``commit``) or at the end. :class:`Results` takes
every message of those streams, in arrival order (:meth:`Results.feed`), plus
the passing of time (:meth:`Results.tick`), and returns what the protocols
render:

* :class:`Interim`: the worker's partial (the unconfirmed tail);
* :class:`Final`: a commit; ``speech_final`` when it is the last commit before a
  pause the VAD heard (an endpoint), ``from_finalize`` when it came from a
  segment's flush;
* :class:`SpeechStarted` / :class:`SpeechStopped`: the VAD's marks;
* :class:`TurnEnd`: an endpoint resolved (every commit before the pause is out);
* :class:`SegmentDone`: a flushed segment's transcript ``eos`` (everything is out);
* :class:`WorkerError`: the worker failed on the stream.

When is a pause's last commit out? The worker commits everything heard before a
pause at once (a flush); after a commit it publishes a partial only if some
unconfirmed text is left (the commit cleared the old one). So after a
``speech_end`` a commit is held back until the worker's next message: none
within :data:`HOLD_S` (or an empty partial) makes it ``speech_final``; a
non-empty partial means more is coming. A pause after which nothing at all is published (everything was already
committed) ends the turn :data:`ENDPOINT_WAIT_S` after it, with an empty final.
Only these held commits wait; the others go out as they arrive.

:class:`Progress` keeps how far the VAD and the worker have got, so that a
sender faster than real time is held back before the worker's backlog
overflows.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

from pipeline import messages as m
from pipeline.formats import Word, commit_words

HOLD_S = 0.06  # a commit after a pause waits this long for the worker's next message (sent right after it)
ENDPOINT_WAIT_S = 1.0  # a pause with nothing unconfirmed ends its turn this long after it, if nothing comes
ENDPOINT_GIVE_UP_S = 10.0  # ... and with something unconfirmed, at the latest this long after it


@dataclass(frozen=True)
class Interim:
    start: float
    end: float
    text: str
    words: tuple = ()


@dataclass(frozen=True)
class Final:
    start: float
    end: float
    text: str
    words: tuple = ()  # Word, connection seconds
    speech_final: bool = False
    from_finalize: bool = False
    model: str = ""
    backend: str = ""
    stream: str = ""


@dataclass(frozen=True)
class SpeechStarted:
    t: float


@dataclass(frozen=True)
class SpeechStopped:
    t: float


@dataclass(frozen=True)
class TurnEnd:
    t: float  # where the pause began (the VAD's speech_end)
    last_word_end: float | None
    stream: str = ""


@dataclass(frozen=True)
class SegmentDone:
    stream: str
    finalized: bool


@dataclass(frozen=True)
class WorkerError:
    message: str


def spread_words(text: str, beg: float, end: float) -> tuple:
    """Words evenly over ``beg..end`` (a partial has no word timings)."""
    tokens = text.split()
    if not tokens:
        return ()
    step = max(end - beg, 0.0) / len(tokens)
    return tuple(Word(beg + i * step, beg + (i + 1) * step, t) for i, t in enumerate(tokens))


@dataclass
class _Segment:
    stream: str
    offset: float  # connection seconds at the segment's stream time 0
    finalizing: bool = False  # its eos was sent: what comes until the worker's eos is its flush
    discarded: bool = False  # the client dropped it (Realtime clear): nothing of it is shown
    partial: str = ""  # the worker's latest partial (it publishes changes only)
    endpoint: float | None = None  # a pause heard at this connection time, its turn not yet over
    endpoint_since: float = 0.0
    held: Final | None = None
    held_since: float = 0.0
    last_word_end: float | None = None


@dataclass
class Progress:
    """How far the VAD and the worker have got on a connection's audio (connection seconds)."""

    vad_pos: float = 0.0  # latest position the VAD published something for
    vad_seen: float = 0.0  # monotonic time of that
    worker_pos: float = 0.0  # end of the latest commit or partial
    worker_seen: float = 0.0  # monotonic time of the worker's latest message
    speech_ends: list = field(default_factory=list)  # end of each speech frame the VAD forwarded
    speech_total: list = field(default_factory=list)  # speech seconds forwarded up to that end

    def vad(self, pos: float, now: float, speech: float = 0.0) -> None:
        self.vad_pos = max(self.vad_pos, pos)
        self.vad_seen = now
        if speech > 0:
            self.speech_ends.append(pos)
            self.speech_total.append((self.speech_total[-1] if self.speech_total else 0.0) + speech)

    def undecoded(self) -> float:
        """Speech seconds the VAD forwarded that lie after the worker's latest output."""
        if not self.speech_total:
            return 0.0
        i = bisect.bisect_right(self.speech_ends, self.worker_pos)
        if i > 1000:  # what the worker is past is not needed again (totals are absolute)
            del self.speech_ends[: i - 1], self.speech_total[: i - 1]
            i = 1
        return self.speech_total[-1] - (self.speech_total[i - 1] if i else 0.0)

    def worker(self, pos: float | None, now: float) -> None:
        if pos is not None:
            self.worker_pos = max(self.worker_pos, pos)
        self.worker_seen = now

    def may_send(self, sent: float, now: float, max_undecoded: float = 20.0, max_vad_lag: float = 60.0,
                 idle_s: float = 0.3, stall_s: float = 5.0) -> bool:
        """May audio beyond connection second ``sent`` go out now?"""
        if self.undecoded() >= max_undecoded:
            if now - max(self.worker_seen, self.vad_seen) < stall_s:
                return False
            self.worker_pos = self.vad_pos  # speech without words: the worker says nothing about it
        if sent - self.vad_pos < max_vad_lag:
            return True
        if now - self.vad_seen >= idle_s:  # the VAD went quiet: caught up, or in a long silence
            self.vad_pos, self.vad_seen = sent, now
            return True
        return False


class Results:
    def __init__(self, pool: str, hold_s: float = HOLD_S, endpoint_wait_s: float = ENDPOINT_WAIT_S,
                 give_up_s: float = ENDPOINT_GIVE_UP_S):
        self.pool = pool
        self.hold_s, self.endpoint_wait_s, self.give_up_s = hold_s, endpoint_wait_s, give_up_s
        self.segments: dict[str, _Segment] = {}
        self.progress = Progress()

    # -- segments --------------------------------------------------------------------------------
    def add_segment(self, stream: str, offset: float) -> None:
        self.segments[stream] = _Segment(stream, offset)

    def finalizing(self, stream: str, discard: bool = False) -> None:
        seg = self.segments.get(stream)
        if seg is not None:
            seg.finalizing = True
            seg.discarded = seg.discarded or discard

    def waiting(self) -> list[str]:
        """Segments whose eos was sent and whose transcript eos has not come yet."""
        return [s.stream for s in self.segments.values() if s.finalizing]

    # -- messages ------------------------------------------------------------------------------------
    def feed(self, topic: str, msg: m.Message, now: float) -> list:
        seg = self.segments.get(msg.stream)
        if seg is None:
            return []
        parts = m.parse_topic(topic)
        if parts.family in ("transcript", "partial") and parts.worker != self.pool:
            return []  # another worker transcribing the same stream
        if parts.family == "speech":
            return self._speech(seg, msg, now)
        return self._shown(seg, self._worker(seg, msg, now))

    def tick(self, now: float) -> list:
        out: list = []
        for seg in list(self.segments.values()):
            due: list = []
            if seg.held is not None and now - seg.held_since >= self.hold_s:
                due = self._release(seg, speech_final=seg.endpoint is not None and not seg.partial
                                    and not seg.finalizing)
            elif seg.endpoint is not None and seg.held is None and not seg.finalizing:
                waited = now - seg.endpoint_since
                if (not seg.partial and waited >= self.endpoint_wait_s) or waited >= self.give_up_s:
                    due = self._empty_final(seg, speech_final=True)
            out += self._shown(seg, due)
        return out

    # -- inside ------------------------------------------------------------------------------------------
    @staticmethod
    def _shown(seg: _Segment, results: list) -> list:
        """A discarded segment still says when it is done, and nothing else."""
        return [r for r in results if isinstance(r, SegmentDone)] if seg.discarded else results

    def _speech(self, seg: _Segment, msg: m.Message, now: float) -> list:
        off = seg.offset
        if isinstance(msg, m.Audio):
            self.progress.vad(off + msg.t + msg.duration, now, msg.duration)
            return []
        if isinstance(msg, m.SpeechStart):
            self.progress.vad(off + msg.t, now)
            return [] if seg.discarded else [SpeechStarted(off + msg.t)]
        if isinstance(msg, m.SpeechEnd):
            self.progress.vad(off + msg.t, now)
            seg.endpoint, seg.endpoint_since = off + msg.t, now
            return [] if seg.discarded else [SpeechStopped(off + msg.t)]
        return []

    def _worker(self, seg: _Segment, msg: m.Message, now: float) -> list:
        off = seg.offset
        out: list = []
        if isinstance(msg, m.Commit):
            if seg.held is not None:
                out += self._release(seg)
            words = tuple(Word(off + w.beg, off + w.end, w.text) for w in commit_words(msg))
            final = Final(off + msg.beg, off + msg.end, msg.text, words, model=msg.model, backend=msg.backend,
                          stream=seg.stream)
            seg.last_word_end = final.end
            seg.partial = ""  # the worker's too: it publishes a partial after a commit only if one is left
            self.progress.worker(final.end, now)
            if seg.endpoint is not None or seg.finalizing:
                seg.held, seg.held_since = final, now
            else:
                out.append(final)
        elif isinstance(msg, m.Partial):
            self.progress.worker(None, now)
            if seg.held is not None:
                out += self._release(seg, speech_final=not msg.text and seg.endpoint is not None)
            elif not msg.text and seg.endpoint is not None and seg.partial and not seg.finalizing:
                out += self._empty_final(seg, speech_final=True)  # the tail vanished without a commit
            seg.partial = msg.text
            if msg.text:
                beg = off + msg.beg if msg.beg is not None else (seg.last_word_end or off)
                end = off + msg.end if msg.end is not None else beg
                self.progress.worker(end, now)
                out.append(Interim(beg, end, msg.text, spread_words(msg.text, beg, end)))
        elif isinstance(msg, m.EndOfStream):
            if seg.held is not None:
                out += self._release(seg, speech_final=True, from_finalize=seg.finalizing)
            elif seg.finalizing:
                out += self._empty_final(seg, speech_final=True, from_finalize=True)
            elif seg.endpoint is not None:
                out.append(self._turn_end(seg))
            seg.partial = ""
            self.progress.worker(self.progress.vad_pos, now)
            if seg.finalizing:
                del self.segments[seg.stream]
                out.append(SegmentDone(seg.stream, True))
        elif isinstance(msg, m.Error):
            out.append(WorkerError(msg.message))
        return out

    def _release(self, seg: _Segment, speech_final: bool = False, from_finalize: bool = False) -> list:
        final = replace(seg.held, speech_final=speech_final, from_finalize=from_finalize)
        seg.held = None
        out: list = [final]
        if speech_final and seg.endpoint is not None:
            out.append(self._turn_end(seg))
        return out

    def _empty_final(self, seg: _Segment, speech_final: bool, from_finalize: bool = False) -> list:
        t = seg.endpoint if seg.endpoint is not None else (seg.last_word_end or seg.offset)
        out: list = [Final(t, t, "", (), speech_final=speech_final, from_finalize=from_finalize, stream=seg.stream)]
        if seg.endpoint is not None:
            out.append(self._turn_end(seg))
        return out

    def _turn_end(self, seg: _Segment) -> TurnEnd:
        end = TurnEnd(seg.endpoint if seg.endpoint is not None else 0.0, seg.last_word_end, seg.stream)
        seg.endpoint = None
        return end
