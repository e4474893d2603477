"""The backend interface every ASR engine implements.

The shape of :class:`ASRBase` follows the interface that custom streaming
engines are commonly written against (constructor arguments, ``load_model``,
``transcribe``, ``ts_words``, ``segments_end_ts``, ``use_vad``,
``set_translate_task`` and the ``sep`` attribute), so an existing engine
class ports to voxpipe by changing its base class.

Contract:

* ``transcribe(audio, init_prompt="")`` takes float32 mono 16 kHz audio and
  returns a *finished* result (a list, never a lazy generator); it may be any
  object the backend's own ``ts_words`` and ``segments_end_ts`` understand.
* ``ts_words(result)`` returns ``[(beg, end, word), ...]`` in seconds relative
  to the start of the audio passed to ``transcribe``.
* ``segments_end_ts(result)`` returns the end times of the engine's segments,
  also relative to the start of that audio.
* ``lan="auto"`` means: detect the language.
* Optionally (``Capabilities.per_call_settings``), ``transcribe`` also takes
  ``language=`` and ``task=`` for one call: the streaming processor then keeps
  one detected language per utterance, and each stream may ask for its own
  language and task. A language given to the constructor always wins.
* Heavy loading happens once, in the constructor via ``load_model``.
* Optional: ``transcribe_batch(audios, prompts, languages, tasks)`` decodes several
  independent buffers (of different streams, each with its own prompt and, with
  ``per_call_settings``, its own language and task) at once and returns one result per
  buffer, in order, where an item the engine failed on is that item's exception. The default calls ``transcribe``
  once per item. A backend whose own implementation really batches says so with
  ``Capabilities(batch=True)``; the worker then decodes streams that are due together in
  one call (engines written for the interface above need not know about it).
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLING_RATE = 16000

Word = tuple  # (beg: float, end: float, text: str)


class BackendError(RuntimeError):
    """A backend failed in a way the caller should report in one line."""


class BackendUnavailable(BackendError):
    """A backend's dependency is not installed (the message names the extra)."""


class ModelNotFound(BackendError):
    """A model name or folder could not be resolved to loadable weights."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so callers need not probe it."""

    word_timestamps: bool = True
    translate: bool = True
    language_detection: bool = True
    internal_vad: bool = False
    # True when transcribe() reports per-segment quality signals that the
    # streaming processor can use to reject hallucinations.
    quality_signals: bool = False
    # True when transcribe() may be called from several threads at once (the
    # worker then decodes several streams in parallel, passing the backend
    # option num_workers=<threads>).
    concurrent: bool = False
    # True when transcribe() also takes language=<code> and task=<transcribe|translate> for
    # one call (the backend's own language, when it was given one, still wins).
    per_call_settings: bool = False
    # True when transcribe_batch() decodes several streams' buffers in one call (cheaper
    # than one transcribe() each); the worker then batches decodes that are due together.
    batch: bool = False


def batch_items(audios: list, prompts=None, languages=None, tasks=None) -> tuple[list, list, list]:
    """The per-item prompts, languages and tasks of a ``transcribe_batch`` call (defaults filled in, checked)."""
    n = len(audios)
    prompts = list(prompts) if prompts is not None else [""] * n
    languages = list(languages) if languages is not None else [None] * n
    tasks = list(tasks) if tasks is not None else [None] * n
    for name, items in (("prompts", prompts), ("languages", languages), ("tasks", tasks)):
        if len(items) != n:
            raise ValueError(f"{n} buffers but {len(items)} {name}")
    return prompts, languages, tasks


def takes_per_call_settings(asr) -> bool:
    """Does ``asr.transcribe`` take ``language=`` and ``task=`` for one call?

    Its class must say so (``Capabilities.per_call_settings``) and its ``transcribe`` must
    still have the parameters: a subclass that overrides ``transcribe(audio, init_prompt)``
    (a whisper_online.py engine built on ours) inherits the capability but not the
    parameters, and is then called as it expects.
    """
    if not getattr(getattr(asr, "capabilities", None), "per_call_settings", False):
        return False
    return _signature_takes(type(asr).transcribe, ("language", "task"))


@functools.lru_cache(maxsize=256)
def _signature_takes(func, names: tuple) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return all(n in params for n in names)


class ASRBase:
    """Base class of every ASR backend.

    Subclasses override :meth:`load_model`, :meth:`transcribe`,
    :meth:`ts_words` and :meth:`segments_end_ts`; :meth:`use_vad` and
    :meth:`set_translate_task` have working defaults.
    """

    #: separator used to join the words returned by :meth:`ts_words`
    sep = " "
    #: registry name; set by each backend
    backend_name = "custom"
    capabilities = Capabilities()
    #: for engines voxpipe does not ship: give load_model() the local folder of a bundled
    #: model name (tiny.en, base: CTranslate2 folders) as ``model_dir``, so a faster-whisper
    #: based engine loads it offline. An engine that loads its own model names sets False.
    resolve_bundled_models = True
    #: the model that really loaded, when the registry knows it better than ``modelsize``
    #: (a ``model_dir`` was given); shown by :attr:`model_name`
    model_label: str | None = None
    #: the options the backend takes, for config validation: option -> ``int``, ``float``, ``str``, ``bool``
    #: or a tuple of the allowed values. Options not listed are passed on unchecked.
    option_types: dict[str, Any] = {}

    @classmethod
    def check_options(cls, options: dict) -> list[tuple[str, str]]:
        """(option, what is wrong) for each value of ``options`` that does not fit :attr:`option_types`."""
        problems = []
        for key, value in options.items():
            want = cls.option_types.get(key)
            if want is None:
                continue
            if isinstance(want, tuple):
                if value not in want:
                    problems.append((key, f"{value!r} is not one of {', '.join(map(str, want))}"))
            elif want is bool:
                if not isinstance(value, bool):
                    problems.append((key, f"{value!r} is not true or false"))
            elif want in (int, float):
                ok = isinstance(value, (int, float) if want is float else int) and not isinstance(value, bool)
                if not ok or value <= 0:
                    problems.append((key, f"{value!r} is not a positive {'number' if want is float else 'integer'}"))
            elif not isinstance(value, want):
                problems.append((key, f"{value!r} is not a {want.__name__}"))
        return problems

    def __init__(
        self,
        lan: str,
        modelsize: str | None = None,
        cache_dir: str | None = None,
        model_dir: str | None = None,
        logfile: Any = sys.stderr,
        **kwargs: Any,
    ) -> None:
        self.logfile = logfile
        self.log = logging.getLogger(f"voxpipe.asr.{self.backend_name}")
        self.transcribe_kargs: dict[str, Any] = {}
        self.original_language = None if lan in (None, "", "auto") else lan
        self.modelsize = modelsize
        self.model_dir = model_dir
        self.options = dict(kwargs)
        self.model = self.load_model(modelsize, cache_dir, model_dir)

    # -- to implement ------------------------------------------------------
    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        raise NotImplementedError("a backend must implement load_model()")

    def transcribe(self, audio: np.ndarray, init_prompt: str = ""):
        raise NotImplementedError("a backend must implement transcribe()")

    def ts_words(self, result) -> list[Word]:
        raise NotImplementedError("a backend must implement ts_words()")

    def segments_end_ts(self, result) -> list[float]:
        raise NotImplementedError("a backend must implement segments_end_ts()")

    # -- defaults ----------------------------------------------------------
    def runs_on_gpu(self) -> bool:
        """Does the model run on a GPU? (``batch: auto`` batches only there: :func:`asr_core.batching.batching_on`)."""
        return False

    def transcribe_batch(self, audios: list, prompts: list[str] | None = None,
                         languages: list[str | None] | None = None, tasks: list[str | None] | None = None) -> list:
        """One result per buffer of ``audios`` (each with its own prompt, language and task), in order.

        Each item is what ``transcribe(audios[i], init_prompt=prompts[i], language=languages[i],
        task=tasks[i])`` returns (``language``/``task`` passed only where set: None is the
        backend's own), or the exception it raised: one item failing fails only that item.
        This default decodes the items one after the other; backends with
        ``Capabilities(batch=True)`` override it with one batched call.
        """
        prompts, languages, tasks = batch_items(audios, prompts, languages, tasks)
        out: list = []
        for audio, prompt, language, task in zip(audios, prompts, languages, tasks, strict=True):
            settings = {k: v for k, v in (("language", language), ("task", task)) if v}
            try:
                out.append(self.transcribe(audio, init_prompt=prompt, **settings))
            except Exception as exc:  # noqa: BLE001 - MemoryError too: it belongs to this item
                out.append(exc)
        return out

    def word_probabilities(self, result) -> list[float | None] | None:
        """The model's probability of each word of :meth:`ts_words`, if it knows them.

        Optional: ``None`` (the default) or ``None`` for a word means unknown.
        The streaming processor's early commit (``early_commit_sec``) only
        takes words whose probability is known and high enough.
        """
        return None

    def language_of(self, result) -> tuple[str | None, tuple]:
        """The language ``result`` was decoded in, and what the model detected.

        ``(code, ((code, probability), ...))``: the second item lists the
        likeliest languages when the model detected the language (empty when
        it was given, or unknown). Default: the constructor's language, nothing
        detected.
        """
        return self.original_language, ()

    def use_vad(self) -> None:
        """Ask the engine to skip non-speech internally, where it can."""
        self.transcribe_kargs["vad_filter"] = True

    def set_translate_task(self) -> None:
        """Translate into English instead of transcribing."""
        self.transcribe_kargs["task"] = "translate"

    @property
    def model_name(self) -> str:
        return str(self.model_label or self.modelsize or "custom")

    def describe(self) -> dict:
        """A short record for heartbeats and logs."""
        return {"backend": self.backend_name, "model": self.model_name}


def check_audio(audio: Any) -> np.ndarray:
    """Return ``audio`` as contiguous float32 mono in [-1, 1] (integer PCM is scaled) or raise ValueError."""
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        # integer PCM: scale to [-1, 1) by its full range (int16 -> / 32768)
        arr = arr.astype(np.float32) / float(-np.iinfo(arr.dtype).min)
    elif arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(arr)


def words_text(words: Iterable[Word], sep: str = " ") -> str:
    """Join word texts with the backend separator, trimming outer spaces."""
    return sep.join(w[2] for w in words).strip()
