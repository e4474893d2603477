"""LocalAgreement: commit the words that consecutive hypotheses agree on.

Words are ``(beg, end, text)`` tuples in absolute stream seconds. Each new
hypothesis is compared with the previous one; their longest common prefix is
committed. Three deliberate departures from the textbook rule:

* words are compared by a *key* that ignores case and punctuation, so that
  "word" and "word," agree (the newer spelling is the one committed), and only
  where both hypotheses place them about the same time (:data:`AGREE_SHIFT_S`);
* a phrase repeated in a loop ("and the and the and the"), or a hypothesis
  that ends by replaying an earlier stretch of itself, is cut before
  comparison, so a stable loop can never commit;
* a word at the head of a hypothesis that repeats the tail of the committed
  text is dropped only when it also overlaps it in time, so that words that
  are really said twice survive.
"""

from __future__ import annotations

import re
import unicodedata

Word = tuple  # (beg, end, text)

# how far back (s) a new word may start before the last commit and still count
COMMIT_TOLERANCE = 0.1
# two hypotheses agree on a word only where they place it within this many seconds of each other: a
# hypothesis cut short ("moving in" for 4.7 s of speech) can put one of its words seconds away, and its
# text alone would agree with a word of the previous hypothesis there and commit it at the wrong time
# (every word between the two places was then lost behind the commit)
AGREE_SHIFT_S = 1.0
MAX_NGRAM = 5
# A decode cut short: the same buffer (same start), with more audio than at the last decode, came back
# with fewer than half the words of the last hypothesis (which had at least CUT_SHORT_MIN_WORDS).
# Seen in rolling restarts: a buffer that begins with speech already committed came back as "moving in"
# for 5 and 6 s of audio, twice in a row, where the decode before had heard 13 words; its "in" was
# stretched to the end of the audio, the two agreed, and the commit there left "turn to the west and
# the sky should" behind it. Such a hypothesis is set aside (at most CUT_SHORT_MAX_SKIPS in a row:
# after that the shorter text is believed).
CUT_SHORT_MIN_WORDS = 4
CUT_SHORT_MAX_SKIPS = 2
REPLAY_MIN = 3  # words in a copy of an earlier stretch, at the end of a hypothesis, that mark a replay

_PUNCT = re.compile(r"[^\w']+", re.UNICODE)


def word_key(text: str) -> str:
    """Comparison key: case-folded, accents kept, punctuation dropped."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = _PUNCT.sub("", t).strip("'")
    return t


def ends_with_mark(text: str) -> bool:
    """Does a word end with a punctuation mark (``day.``, ``well,``, ``"stop"``)?"""
    t = text.strip()
    return bool(t) and not (t[-1].isalnum() or t[-1] == "'")


def find_loop(words: list[Word], min_repeats: int = 3, max_n: int = 8) -> int | None:
    """Index where a looping repetition starts to repeat, or None.

    A loop is an n-gram (1 <= n <= max_n) repeated at least ``min_repeats``
    times in a row (single words: one more). The returned index is the start
    of the *second* copy, so one copy of the phrase survives. A replay is a
    hypothesis that ends with a copy (``REPLAY_MIN`` words or more) of an
    earlier stretch of itself; the index is where the copy starts.
    """
    keys = [word_key(w[2]) for w in words]
    n_words = len(keys)
    best: int | None = None
    for n in range(1, max_n + 1):
        need = min_repeats + (1 if n == 1 else 0)
        if n * need > n_words:
            break
        for i in range(0, n_words - n * need + 1):
            phrase = keys[i : i + n]
            if not all(phrase):
                continue
            reps = 1
            j = i + n
            while j + n <= n_words and keys[j : j + n] == phrase:
                reps += 1
                j += n
            if reps >= need:
                cut = i + n
                if best is None or cut < best:
                    best = cut
                break
    # Whisper replaying itself: the hypothesis ends with a copy of an earlier
    # stretch of it ("thank you all for today. thank you all", "... in a tin.
    # leave it in a covered bowl ... in a tin"). Only a copy that runs to the end
    # counts: a phrase really said twice is followed by new words.
    for i in range(1, n_words - REPLAY_MIN + 1):
        if best is not None and i >= best:
            break
        tail = keys[i:]
        if sum(1 for k in tail if k) < REPLAY_MIN:
            break
        if tail[0] and any(keys[j : j + len(tail)] == tail for j in range(i) if keys[j] == tail[0]):
            best = i
            break
    return best


class HypothesisBuffer:
    def __init__(self) -> None:
        self.committed_in_buffer: list[Word] = []  # committed words whose audio is still buffered
        self.previous: list[Word] = []  # last hypothesis, not yet committed
        self.new: list[Word] = []
        self.last_committed_time = 0.0
        self.looping = False
        self.sure: set[Word] = set()  # words of the new hypothesis the model is sure of
        self.heard: tuple[float, int] = (-1.0, 0)  # the last hypothesis believed: (buffer start, words)
        self.skipped_short = 0  # hypotheses set aside in a row as cut short (CUT_SHORT_MIN_WORDS)
        self.set_aside = False
        self.aside: tuple[list, set] = ([], set())  # the hypothesis set aside, and its sure words

    def insert(self, words: list[Word], offset: float, probs=None, sure_prob: float = 1.0) -> None:
        """Take a new hypothesis (times relative to ``offset``).

        ``probs`` (optional, one per word, None = unknown): the model's
        probability of each word; those at ``sure_prob`` or above may commit
        early (:meth:`flush`).
        """
        probs = list(probs) if probs is not None and len(probs) == len(words) else [None] * len(words)
        shifted, sure = [], set()
        for (b, e, t), p in zip(words, probs, strict=False):
            if t.strip():
                w = (round(b + offset, 3), round(e + offset, 3), t)
                shifted.append(w)
                if p is not None and p >= sure_prob:
                    sure.add(w)
        self.sure = sure
        loop_at = find_loop(shifted)
        self.looping = loop_at is not None
        if loop_at is not None:
            shifted = shifted[:loop_at]
        heard = (offset, len(shifted))  # the whole hypothesis (a loop once): what this decode of the buffer heard
        new = [w for w in shifted if w[0] > self.last_committed_time - COMMIT_TOLERANCE]
        self.new = self._drop_recommitted(new)
        if self.cut_short(heard) and self.skipped_short < CUT_SHORT_MAX_SKIPS:
            self.skipped_short += 1
            self.aside = (self.new, self.sure)
            self.new, self.sure = list(self.previous), set()  # as if this decode had not happened
            self.set_aside = True
        else:
            self.skipped_short = 0
            self.set_aside = False
            self.heard = heard

    def believe_latest(self) -> None:
        """Take the latest hypothesis as it is, set aside or not (a decode of the whole buffer at a pause or
        the end: what it heard supersedes the guesses before it, asr_core.online)."""
        if self.set_aside:
            self.new, self.sure = self.aside
            self.set_aside = False

    def cut_short(self, heard: tuple[float, int]) -> bool:
        """Did this decode of the same buffer hear far fewer words than the last one (it stopped early)?"""
        (offset, words), (last_offset, last_words) = heard, self.heard
        return (abs(offset - last_offset) < 1e-6 and last_words >= CUT_SHORT_MIN_WORDS
                and 2 * words < last_words)

    def _drop_recommitted(self, new: list[Word]) -> list[Word]:
        if not new or not self.committed_in_buffer:
            return new
        if abs(new[0][0] - self.last_committed_time) >= 1.0:
            return new
        tail = self.committed_in_buffer
        for n in range(min(MAX_NGRAM, len(tail), len(new)), 0, -1):
            old = tail[-n:]
            head = new[:n]
            if [word_key(w[2]) for w in old] == [word_key(w[2]) for w in head]:
                # same words: drop them only if they are the same sounds (overlap in time)
                if head[0][0] < old[-1][1]:
                    return new[n:]
        return new

    def flush(self, settled_before: float | None = None, sure_before: float | None = None,
              hold_marked_end: bool = False) -> list[Word]:
        """Commit the agreed prefix of the new and previous hypotheses.

        With ``hold_marked_end``, the last word of the new hypothesis is not committed
        (by any rule) when it ends with a punctuation mark: Whisper ends what it heard
        with a mark ("changed.") because the audio ends there, and the next hypothesis,
        which hears what follows, often writes it otherwise ("changed, because");
        the word waits for that hypothesis, or for :meth:`commit_all` at a pause.

        With ``settled_before``, leading words of the new hypothesis that end
        before that time are committed too, agreed or not (but never on the
        first hypothesis of a buffer, nor from a looping one): a word that
        keeps changing ("God's net" / "Goods that") would otherwise hold back
        every word after it until the next pause.

        With ``sure_before``, leading words that end before that time and
        that the model is sure of (``insert``'s ``sure_prob``) are committed
        from this hypothesis alone, without waiting for the next one to agree
        (again never from a looping hypothesis).
        """
        commit: list[Word] = []
        if self.set_aside:  # a cut-short decode: nothing agrees, nothing settles, the previous one stays
            self.set_aside = False
            self.new = []
            return commit
        had_previous = bool(self.previous)
        held = self.new[-1:] if hold_marked_end and self.new and ends_with_mark(self.new[-1][2]) else []
        if held:
            self.new = self.new[:-1]
        while self.new and self.previous:
            cand, before = self.new[0], self.previous[0]
            if abs(cand[0] - before[0]) > AGREE_SHIFT_S:
                break  # the same word, or another said elsewhere: not an agreement on this one
            if word_key(cand[2]) != word_key(before[2]) or not word_key(cand[2]):
                # punctuation-only words agree on their text
                if not (cand[2].strip() == before[2].strip() and cand[2].strip()):
                    break
            commit.append(cand)
            self.last_committed_time = cand[1]
            self.previous.pop(0)
            self.new.pop(0)
        if settled_before is not None and had_previous and not self.looping:
            while self.new and self.new[0][1] <= settled_before:
                cand = self.new.pop(0)
                commit.append(cand)
                self.last_committed_time = cand[1]
        if sure_before is not None and not self.looping:
            while self.new and self.new[0][1] <= sure_before and self.new[0] in self.sure:
                cand = self.new.pop(0)
                commit.append(cand)
                self.last_committed_time = cand[1]
        self.previous = self.new + held
        self.new = []
        self.committed_in_buffer.extend(commit)
        return commit

    def commit_all(self) -> list[Word]:
        """Commit everything still pending (end of an utterance or stream)."""
        source = self.new if self.new else self.previous
        words = [w for w in source if w[0] > self.last_committed_time - COMMIT_TOLERANCE]
        if words:
            self.last_committed_time = words[-1][1]
        self.committed_in_buffer.extend(words)
        self.new = []
        self.previous = []
        return words

    def commit_until(self, t: float) -> list[Word]:
        """Force-commit pending words ending before ``t`` (buffer bound reached)."""
        source = self.new if self.new else self.previous
        words = [w for w in source if w[1] <= t and w[0] > self.last_committed_time - COMMIT_TOLERANCE]
        if words:
            self.last_committed_time = words[-1][1]
            self.committed_in_buffer.extend(words)
            self.previous = [w for w in source if w[1] > t]
            self.new = []
        return words

    def pop_committed(self, time: float) -> None:
        """Forget committed words that end before ``time`` (the buffer was cut there)."""
        while self.committed_in_buffer and self.committed_in_buffer[0][1] <= time:
            self.committed_in_buffer.pop(0)

    def pending(self) -> list[Word]:
        """The unconfirmed tail: the latest hypothesis beyond what was committed."""
        return list(self.previous)
