"""torch-whisper backend: Whisper in PyTorch, batched across streams (GPU or CPU).

Options (all optional, given as keyword arguments or in the worker's ``options:`` mapping):

``device``        ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda``, ``cuda:N``
``dtype``         ``auto`` (float16 on CUDA, float32 on CPU), ``float16``, ``bfloat16``, ``float32``
``beam_size``     beam width (3, as the faster-whisper backend)
``batch_pad``     seconds by which the windows of one batch may differ (2.0; a GPU pads cheaply)

Weights: ``model_dir`` is a *prepared folder* (int8 matrices with per-row scales, made by
``voxpipe convert-model --to torch-int8`` or ``scripts/gpu_capacity.py prepare``) or a
CTranslate2 Whisper folder; a model name (``tiny.en``, ``base``) is resolved to the bundled
CTranslate2 folder. Nothing is downloaded. The decoder is the short window of the
faster-whisper backend (:mod:`.ct2_window`) with the engine part in PyTorch
(:mod:`.torch_decode`), so both follow the same window, prompt and second-window rules.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..base import ASRBase, BackendUnavailable, Capabilities, ModelNotFound, batch_items, check_audio
from ..result import Segment, SegmentResults

try:
    import torch
    from tokenizers import Tokenizer
except ImportError as exc:  # pragma: no cover - exercised only without the packages
    raise BackendUnavailable(
        f"the torch-whisper backend needs torch and tokenizers: pip install 'voxpipe[timestamped]' [{exc}]"
    ) from exc

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def pick_device(device: str = "auto", dtype: str = "auto") -> tuple[str, torch.dtype]:
    """``auto``: CUDA (float16) when torch sees a GPU, else the CPU (float32)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        return device, torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"torch-whisper option dtype must be auto or one of {', '.join(DTYPES)}, not {dtype!r}")
    return device, DTYPES[dtype]


class TorchWhisperASR(SegmentResults, ASRBase):
    backend_name = "torch-whisper"
    sep = ""  # words carry their own leading space
    capabilities = Capabilities(quality_signals=True, concurrent=False, batch=True)

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        from ..models import bundled_hint, resolve_ct2_model
        from .ct2_window import WindowOptions
        from .torch_decode import TorchWindowDecoder
        from .torch_model import load_model

        opts = self.options
        self.device, self.dtype = pick_device(str(opts.get("device", "auto")), str(opts.get("dtype", "auto")))
        self.batch_pad = float(opts.get("batch_pad", 2.0))
        if self.batch_pad < 0:
            raise ValueError("torch-whisper option batch_pad must be >= 0 seconds")
        folder = Path(model_dir).expanduser() if model_dir else None
        if folder is None:
            resolved = resolve_ct2_model(modelsize, None, cache_dir)
            if not resolved.is_local:
                raise ModelNotFound(f"torch-whisper needs a local model: {modelsize!r} is not bundled here"
                                    f"{bundled_hint(str(modelsize))}; give model_dir (a prepared or CTranslate2 "
                                    "folder)")
            folder = Path(resolved.location)
        if not ((folder / "weights.npz").is_file() or (folder / "model.bin").is_file()):
            raise ModelNotFound(f"{folder} holds neither a prepared model (weights.npz) nor a CTranslate2 one "
                                "(model.bin)")
        self.folder = folder
        t0 = time.monotonic()
        model, config, filters = load_model(folder, self.device, self.dtype)
        hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.decoder = TorchWindowDecoder(model, config, filters, hf, WindowOptions(
            beam_size=int(opts.get("beam_size", WindowOptions.beam_size)),
            max_initial_timestamp=float(opts.get("max_initial_timestamp", 1.0)),
        ), self.device, self.dtype)
        if not self.decoder.multilingual and self.original_language not in (None, "en"):
            raise ModelNotFound(f"this model is English-only but language {self.original_language!r} was asked for")
        self.log.info("loaded %s on %s/%s in %.1fs", folder, self.device, str(self.dtype).replace("torch.", ""),
                      time.monotonic() - t0)
        return model

    @property
    def model_name(self) -> str:
        return str(self.modelsize or self.folder.name)

    def runs_on_gpu(self) -> bool:
        return str(self.device).startswith("cuda")

    def transcribe(self, audio, init_prompt: str = "") -> list[Segment]:
        task = self.transcribe_kargs.get("task", "transcribe")
        return self.decoder.decode(check_audio(audio), init_prompt, self.original_language, task)

    def transcribe_batch(self, audios, prompts=None, languages=None, tasks=None) -> list:
        # no per-call settings: each buffer in the constructor's language and the backend's task
        prompts, _, _ = batch_items(audios, prompts, languages, tasks)
        out: list = [None] * len(audios)
        good = []
        for i, raw in enumerate(audios):
            try:
                good.append((i, check_audio(raw)))
            except Exception as exc:  # noqa: BLE001 - this buffer fails, the others go on
                out[i] = exc
        if good:
            task = self.transcribe_kargs.get("task", "transcribe")
            decoded = self.decoder.decode_batch([a for _, a in good], [prompts[i] for i, _ in good],
                                                [self.original_language] * len(good), [task] * len(good),
                                                max_pad_seconds=self.batch_pad,
                                                max_batch=len(good))
            for (i, _), result in zip(good, decoded, strict=True):
                out[i] = result
        return out

    def use_vad(self) -> None:
        """No internal VAD: voxpipe's own VAD (the pipeline's, or VAC) gates the audio instead."""

    def describe(self) -> dict:
        return {"backend": self.backend_name, "model": self.model_name, "device": self.device,
                "dtype": str(self.dtype).replace("torch.", "")}
