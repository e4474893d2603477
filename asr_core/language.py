"""The language of an utterance: given by the user, or detected, and how sure the model is of it.

With ``language: auto`` Whisper detects the language from each window it decodes. Taken
decode by decode, that is noisy on short windows: on the synthetic German clip the multilingual
``base`` model said Georgian, Yiddish, German and Latin within one sentence, and every switch
of language changes the script of the hypothesis, so consecutive hypotheses cannot agree (or,
worse, a word in the wrong script is committed). A :class:`LanguageTracker` keeps one language
per utterance instead (the streaming processor makes a new utterance at each fresh buffer):

* a language the user gave always wins: nothing is detected;
* otherwise each decode's detection (the model's probabilities of its likeliest languages)
  is averaged over the utterance, weighted by the seconds of audio it heard, and the next
  decode is made in the likeliest language so far; a decode of less than
  :data:`MIN_DETECT_SECONDS` of audio does not count (the short first chunks of a stream: on
  0.2 s of the Spanish clip ``base`` was sure it heard Thai): until one that does, its
  detection is reported as uncertain and the model detects afresh in the next decode;
* once that average reaches :data:`SURE_PROB` for one language, the model is sure: the
  utterance keeps that language. Until then the language is reported as *uncertain*, and the
  streaming processor commits only what two hypotheses agree on.

The reported probability is that average (or the single detection of an English-only model's
fixed ``en``: none).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

# faster-whisper's language_detection_threshold: below it the model is not sure
SURE_PROB = 0.5
# seconds of audio a decode must have heard for its detection to count
MIN_DETECT_SECONDS = 1.0


@dataclass(frozen=True)
class Language:
    """The language a text was decoded in."""

    code: str | None = None  # None: not known yet
    prob: float | None = None  # the model's probability of it, when detected (None: given)
    sure: bool = True  # given, or detected with a probability of at least SURE_PROB

    @property
    def detected(self) -> bool:
        return self.prob is not None

    def record(self) -> dict:
        """The wire fields (``language``, ``language_prob``, ``language_uncertain``) for a commit."""
        if self.code is None:
            return {}
        out: dict = {"language": self.code}
        if self.prob is not None:
            out["language_prob"] = round(float(self.prob), 3)
            out["language_uncertain"] = not self.sure
        return out


class LanguageTracker:
    """One utterance's language: given, or averaged from the detections of its decodes."""

    def __init__(self, given: str | None = None, sure_prob: float = SURE_PROB):
        self.given = given or None
        self.sure_prob = sure_prob
        self.reset()

    def set_given(self, given: str | None) -> None:
        """From the next utterance on, this language (None: detect); a change starts afresh."""
        if (given or None) != self.given:
            self.given = given or None
            self.reset()

    def reset(self) -> None:
        """A new utterance: detect again."""
        self._weights: dict[str, float] = defaultdict(float)
        self._seconds = 0.0
        self._fixed: str | None = None  # a language the backend decoded in without detecting it
        self._locked: Language | None = None
        self._glimpse: Language | None = None  # the last detection on too little audio to count

    @property
    def current(self) -> Language:
        if self.given:
            return Language(self.given)
        if self._locked is not None:
            return self._locked
        if self._seconds > 0 and self._weights:
            code, weight = max(self._weights.items(), key=lambda kv: kv[1])
            prob = weight / self._seconds
            return Language(code, prob, prob >= self.sure_prob)
        if self._glimpse is not None:
            return self._glimpse  # reported, uncertain, but never decoded in
        return Language(self._fixed)

    @property
    def sure(self) -> bool:
        return self.current.sure

    def choice(self) -> str | None:
        """The language to decode the next hypothesis in (None: the backend's own: detected)."""
        if self.given:
            return self.given
        cur = self.current
        return cur.code if cur.detected and cur is not self._glimpse else None

    def update(self, language: str | None, probs, seconds: float) -> None:
        """After a decode of ``seconds`` of audio in ``language``: ``probs`` is what the model
        detected, ``((code, probability), ...)`` likeliest first (empty: it did not detect)."""
        if self.given or self._locked is not None:
            return
        probs = tuple(probs or ())
        if not probs:
            if language and not self._weights:
                self._fixed = language  # e.g. an English-only model: always "en", nothing detected
            return
        if seconds < MIN_DETECT_SECONDS:  # too little audio to tell a language by
            code, p = probs[0]
            self._glimpse = Language(str(code), float(p), False)
            return
        w = max(float(seconds), 1e-3)
        for code, p in probs:
            self._weights[str(code)] += w * float(p)
        self._seconds += w
        cur = self.current
        if cur.sure:
            self._locked = cur
