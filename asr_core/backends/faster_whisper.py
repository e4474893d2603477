"""faster-whisper backend (CTranslate2, CPU or CUDA).

Options (all optional, given as keyword arguments or in the worker's
``options:`` mapping):

``device``        ``auto`` (CUDA when a GPU is present, else CPU), ``cpu``, ``cuda``
``compute_type``  ``auto`` (float16 on CUDA, int8 on CPU) or any CTranslate2 type
``beam_size``     beam width (3)
``cpu_threads``   threads per decode call (1: the cheapest in CPU seconds)
``num_workers``   CTranslate2 workers for concurrent calls (1)
``window``        ``short`` (default: encode only the audio there is) or
                  ``full`` (faster-whisper's own loop, padded to 30 s windows)
``batch_pad``     seconds by which the windows of one batch may differ (1.0): in a
                  batched call (``transcribe_batch``, the worker's ``batch: true``)
                  buffers whose short windows are this close run as one batch, padded
                  to the longest; others run in batches of their own
``max_initial_timestamp``  the latest start (s) of a short window's first timestamp (1.0)
"""

from __future__ import annotations

import time

import numpy as np

from ..base import ASRBase, BackendUnavailable, Capabilities, ModelNotFound, batch_items, check_audio
from ..models import bundled_hint, resolve_ct2_model
from ..result import Segment, SegmentResults

try:  # the dependency check is cheap; the model loads in load_model()
    import faster_whisper  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the package
    raise BackendUnavailable(
        "the faster-whisper backend needs the faster-whisper package: pip install voxpipe "
        f"(or pip install faster-whisper) [{exc}]"
    ) from exc


def pick_device(device: str = "auto", compute_type: str = "auto") -> tuple[str, str]:
    """``auto`` means CUDA float16 when a GPU is visible, else CPU int8."""
    if device == "auto":
        try:
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except Exception:  # noqa: BLE001 - no CUDA runtime at all
            device = "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class FasterWhisperASR(SegmentResults, ASRBase):
    backend_name = "faster-whisper"
    sep = ""  # words carry their own leading space
    capabilities = Capabilities(quality_signals=True, concurrent=True, per_call_settings=True, batch=True)
    option_types = {"device": ("auto", "cpu", "cuda"), "compute_type": str, "beam_size": int, "cpu_threads": int,
                    "num_workers": int, "window": ("short", "full"), "max_initial_timestamp": float,
                    "batch_pad": float}

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        from faster_whisper import WhisperModel

        from .ct2_window import WindowDecoder, WindowOptions

        opts = self.options
        device, compute_type = pick_device(opts.get("device", "auto"), opts.get("compute_type", "auto"))
        self.device, self.compute_type = device, compute_type
        self.beam_size = int(opts.get("beam_size", WindowOptions.beam_size))
        self.window = str(opts.get("window", "short"))
        self.batch_pad = float(opts.get("batch_pad", 1.0))
        if self.batch_pad < 0:
            raise ValueError("faster-whisper option batch_pad must be >= 0 seconds")
        if self.window not in ("short", "full"):
            raise ValueError(f"faster-whisper option window must be 'short' or 'full', not {self.window!r}")
        resolved = resolve_ct2_model(modelsize, model_dir, cache_dir)
        self.resolved = resolved
        t0 = time.monotonic()
        try:
            model = WhisperModel(
                resolved.location,
                device=device,
                compute_type=compute_type,
                cpu_threads=int(opts.get("cpu_threads", 1)),
                num_workers=int(opts.get("num_workers", 1)),
                download_root=cache_dir,
            )
        except Exception as exc:  # noqa: BLE001 - turn any load failure into one line
            where = resolved.location if resolved.is_local else f"the Hugging Face hub ({resolved.name})"
            raise ModelNotFound(
                f"cannot load faster-whisper model {resolved.name!r} from {where}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                f"{bundled_hint(resolved.name)}"
            ) from exc
        self.log.info(
            "loaded %s (%s) on %s/%s in %.1fs",
            resolved.name, resolved.source, device, compute_type, time.monotonic() - t0,
        )
        self.decoder = WindowDecoder(
            model,
            WindowOptions(
                beam_size=self.beam_size,
                max_initial_timestamp=float(opts.get("max_initial_timestamp", 1.0)),
            ),
        )
        self.multilingual = bool(model.model.is_multilingual)  # other languages, and translation
        if not model.model.is_multilingual and self.original_language not in (None, "en"):
            raise ModelNotFound(
                f"model {resolved.name!r} is English-only but language {self.original_language!r} was asked for"
            )
        return model

    @property
    def model_name(self) -> str:
        return str(self.resolved.name)

    def runs_on_gpu(self) -> bool:
        return self.device == "cuda"

    def transcribe(self, audio, init_prompt: str = "", language: str | None = None,
                   task: str | None = None) -> list[Segment]:
        """``language`` and ``task``: for this call only (the constructor's language wins).

        Where the language was not given to the constructor, a multilingual model
        detects it in every window, also when ``language`` says what to decode in,
        and each segment reports the detection (``language_probs``).
        """
        audio = check_audio(audio)
        task = task or self.transcribe_kargs.get("task", "transcribe")
        lang = self.original_language or language or None
        if self._short(audio):
            return self.decoder.decode(audio, init_prompt, lang, task, detect=self.original_language is None)
        return self._transcribe_full(audio, init_prompt, task, lang)

    def _short(self, audio: np.ndarray) -> bool:
        """Is ``audio`` decoded in one short window (``window: short``), not by faster-whisper's own loop?"""
        return self.window == "short" and len(audio) <= 29 * 16000 and not self.transcribe_kargs.get("vad_filter")

    def transcribe_batch(self, audios, prompts=None, languages=None, tasks=None) -> list:
        """Several streams' buffers at once, each in its own language and task (as :meth:`transcribe`).

        Short windows run as batches (see ``batch_pad``), one per task and language.
        """
        prompts, languages, tasks = batch_items(audios, prompts, languages, tasks)
        default_task = self.transcribe_kargs.get("task", "transcribe")
        out: list = [None] * len(audios)
        short: list[tuple[int, np.ndarray, str | None, str]] = []
        for i, raw in enumerate(audios):
            try:
                audio = check_audio(raw)
                task = tasks[i] or default_task
                lang = self.original_language or languages[i] or None
                if self._short(audio):
                    short.append((i, audio, lang, task))
                else:
                    out[i] = self._transcribe_full(audio, prompts[i], task, lang)
            except Exception as exc:  # noqa: BLE001 - this buffer fails, the others go on
                out[i] = exc
        if short:
            decoded = self.decoder.decode_batch([a for _, a, _, _ in short], [prompts[i] for i, *_ in short],
                                                [lang for *_, lang, _ in short], [task for *_, task in short],
                                                max_pad_seconds=self.batch_pad, max_batch=max(1, len(short)),
                                                detect=self.original_language is None)
            for (i, *_), result in zip(short, decoded, strict=True):
                out[i] = result
        return out

    def _transcribe_full(self, audio: np.ndarray, init_prompt: str, task: str, language: str | None) -> list[Segment]:
        segments, info = self.model.transcribe(
            audio,
            language=language,
            task=task,
            initial_prompt=init_prompt or None,
            beam_size=self.beam_size,
            word_timestamps=True,
            condition_on_previous_text=True,
            vad_filter=bool(self.transcribe_kargs.get("vad_filter", False)),
        )
        detected: tuple = ()
        if language is None and self.model.model.is_multilingual and info.all_language_probs:
            detected = tuple((code, float(p)) for code, p in info.all_language_probs[:5])
        out = []
        for s in segments:  # materialise: decoding happens here, not in the caller
            out.append(
                Segment(
                    start=s.start,
                    end=s.end,
                    text=s.text.strip(),
                    words=[(w.start, w.end, w.word) for w in (s.words or [])],
                    word_probs=[w.probability for w in (s.words or [])],
                    no_speech_prob=s.no_speech_prob,
                    avg_logprob=s.avg_logprob,
                    compression_ratio=s.compression_ratio,
                    language=info.language,
                    language_prob=detected[0][1] if detected else None,
                    language_probs=detected,
                )
            )
        return out

    def describe(self) -> dict:
        return {
            "backend": self.backend_name,
            "model": self.model_name,
            "device": self.device,
            "compute_type": self.compute_type,
            "window": self.window,
        }
