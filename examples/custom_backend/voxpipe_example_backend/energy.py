"""``example-energy``: a model-free ASR engine, as a template for your own.

It does not recognise speech. It finds bursts of energy in the audio (roughly
syllables or words), and names each burst with a made-up word built from the
burst itself: one syllable per ~150 ms, the consonant picked by how "noisy"
that stretch is (zero-crossing rate) and the vowel by how loud it is. The same
audio therefore always gives the same words at the same times, which is what
voxpipe's streaming processor needs to commit them, and silence gives none.

Everything a real engine needs is here, in the places voxpipe looks for it:
options read in ``load_model``, a finished list returned by ``transcribe``,
word times in seconds relative to the audio passed in, segment ends for
buffer trimming, and one-line errors.

Options (``-o key=value`` on the command line, or the worker's ``options:``):

``threshold_db``  quietest level (dBFS) that can count as a burst (-45)
``range_db``      bursts must also be within this many dB of the loudest
                  frames of the audio passed in (30)
``min_word``      shortest burst kept, seconds (0.06)
``max_word``      longer bursts are split at their quietest frame, seconds (0.6)
``min_gap``       shorter dips do not end a burst, seconds (0.05)
``pause``         a silence at least this long ends a segment, seconds (0.5)
"""

from __future__ import annotations

from asr_core.base import SAMPLING_RATE, ASRBase, BackendUnavailable, Capabilities, check_audio
from asr_core.result import Segment

try:  # check dependencies at import: the registry turns this into one clear line
    import numpy as np
except ImportError as exc:  # pragma: no cover - numpy comes with voxpipe
    raise BackendUnavailable(f"example-energy needs numpy: pip install numpy [{exc}]") from exc

WINDOW = 0.025  # seconds per analysis frame
HOP = 0.010  # seconds between frames
SYLLABLE = 0.15  # seconds of burst per made-up syllable
CONSONANTS = "mnbdts"  # from smooth (low zero-crossing rate) to hissy
ZCR_EDGES = (0.07, 0.10, 0.14, 0.20, 0.30)
VOWELS = "aoeiu"  # from loud to quiet
LEVEL_EDGES = (3.0, 6.0, 10.0, 15.0)  # dB below the loud reference level


def frame_features(audio: np.ndarray, rate: int = SAMPLING_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame level (dBFS) and zero-crossing rate (crossings per sample)."""
    win, hop = int(WINDOW * rate), int(HOP * rate)
    if len(audio) < win:
        return np.zeros(0), np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(audio, win)[::hop]
    level = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
    signs = np.signbit(frames)
    zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
    return level, zcr


def find_bursts(level: np.ndarray, threshold: float, hysteresis: float = 6.0) -> list[list[int]]:
    """Frame spans ``[start, end)`` that rise above ``threshold``.

    A burst starts at ``threshold`` and lasts while the level stays above
    ``threshold - hysteresis``, so a burst does not flicker on and off.
    """
    bursts: list[list[int]] = []
    start = None
    for i, db in enumerate(level):
        if start is None and db >= threshold:
            start = i
        elif start is not None and db < threshold - hysteresis:
            bursts.append([start, i])
            start = None
    if start is not None:
        bursts.append([start, len(level)])
    return bursts


def merge_close(bursts: list[list[int]], min_gap: int) -> list[list[int]]:
    """Join bursts separated by fewer than ``min_gap`` frames."""
    out: list[list[int]] = []
    for b in bursts:
        if out and b[0] - out[-1][1] < min_gap:
            out[-1][1] = b[1]
        else:
            out.append(list(b))
    return out


def split_long(burst: list[int], level: np.ndarray, max_len: int) -> list[list[int]]:
    """Split a burst longer than ``max_len`` frames at its quietest inner frame."""
    start, end = burst
    if end - start <= max_len:
        return [burst]
    lo, hi = start + (end - start) // 5, end - (end - start) // 5  # not at the very edges
    cut = lo + int(np.argmin(level[lo:hi]))
    return split_long([start, cut], level, max_len) + split_long([cut, end], level, max_len)


def made_up_word(level: np.ndarray, zcr: np.ndarray, loud: float) -> str:
    """A pronounceable placeholder for one burst, determined by its frames."""
    n_syl = int(np.clip(round(len(level) * HOP / SYLLABLE), 1, 4))
    parts = []
    for lv, zc in zip(np.array_split(level, n_syl), np.array_split(zcr, n_syl), strict=False):
        consonant = CONSONANTS[int(np.searchsorted(ZCR_EDGES, float(np.mean(zc))))]
        vowel = VOWELS[int(np.searchsorted(LEVEL_EDGES, loud - float(np.mean(lv))))]
        parts.append(consonant + vowel)
    return "".join(parts)


class EnergyBurstASR(ASRBase):
    """Bursts of energy become placeholder words with real timestamps."""

    backend_name = "example-energy"
    sep = " "  # words have no leading space, so join them with one
    capabilities = Capabilities(word_timestamps=True, translate=False, language_detection=False, internal_vad=True)

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        """Read and check the options; a real engine loads its weights here, once."""
        opts = self.options
        try:
            self.threshold_db = float(opts.get("threshold_db", -45.0))
            self.range_db = float(opts.get("range_db", 30.0))
            self.min_word = float(opts.get("min_word", 0.06))
            self.max_word = float(opts.get("max_word", 0.6))
            self.min_gap = float(opts.get("min_gap", 0.05))
            self.pause = float(opts.get("pause", 0.5))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"example-energy: bad option value ({exc})") from exc
        if not (0 < self.min_word < self.max_word):
            raise ValueError("example-energy: need 0 < min_word < max_word")
        self.log.info("example-energy ready (threshold %.0f dBFS, no model to load)", self.threshold_db)
        return None  # stored as self.model; there is no model here

    @property
    def model_name(self) -> str:
        return "energy-bursts"

    def transcribe(self, audio, init_prompt: str = "") -> list[Segment]:
        """Finished segments for ``audio``; times in seconds from its first sample.

        ``init_prompt`` (the text committed before this audio) is ignored: this
        engine has no language model to condition.
        """
        audio = check_audio(audio)
        level, zcr = frame_features(audio)
        if not len(level):
            return []
        loud = float(np.percentile(level, 95))  # the audio's loud reference level
        threshold = max(self.threshold_db, loud - self.range_db)
        bursts = merge_close(find_bursts(level, threshold), round(self.min_gap / HOP))
        max_len = max(1, round(self.max_word / HOP))
        bursts = [piece for b in bursts for piece in split_long(b, level, max_len)]
        duration = len(audio) / SAMPLING_RATE
        words = []
        for start, end in bursts:
            if (end - start) * HOP < self.min_word:
                continue
            # each frame stands for the HOP-long stretch around its centre
            beg_s = round(start * HOP + (WINDOW - HOP) / 2, 3)
            end_s = round(min(end * HOP + (WINDOW - HOP) / 2, duration), 3)
            words.append((beg_s, end_s, made_up_word(level[start:end], zcr[start:end], loud)))
        return self._group(words)

    def _group(self, words: list[tuple]) -> list[Segment]:
        """Words separated by at least ``pause`` seconds go to separate segments."""
        segments: list[Segment] = []
        for w in words:
            if segments and w[0] - segments[-1].end < self.pause:
                seg = segments[-1]
                seg.words.append(w)
                seg.end = w[1]
                seg.text += self.sep + w[2]
            else:
                segments.append(Segment(start=w[0], end=w[1], text=w[2], words=[w]))
        return segments

    def ts_words(self, result: list[Segment]) -> list[tuple]:
        return [w for seg in result for w in seg.words]

    def segments_end_ts(self, result: list[Segment]) -> list[float]:
        return [seg.end for seg in result]

    def use_vad(self) -> None:
        self.log.info("example-energy skips silence by design; use_vad() changes nothing")

    def set_translate_task(self) -> None:
        raise ValueError("example-energy cannot translate")
