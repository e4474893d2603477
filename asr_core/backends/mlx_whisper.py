"""mlx-whisper backend (Apple MLX: the GPU of Apple silicon Macs; also Linux CPUs, slowly).

Install on macOS arm64: ``pip install 'voxpipe[mlx]'``. On Linux, MLX's CPU
build runs it too, but far slower than faster-whisper (see docs/backends.md
for the commands, and for preloading OpenBLAS, which its wheel lacks).

Model resolution:

* ``model_dir``: a local mlx-whisper folder (``config.json`` plus
  ``weights.safetensors`` or ``weights.npz``), e.g. one written by
  ``voxpipe convert-model --from-ct2 DIR --to mlx OUT``;
* a bundled name (``tiny.en``; ``base`` with ``voxpipe[base-model]``): the
  CTranslate2 weights from the pip package, converted once into the voxpipe cache;
* another name ``N``: the hub repo ``mlx-community/whisper-N-mlx``
  (``large-v3-turbo``/``turbo``: ``mlx-community/whisper-large-v3-turbo``);
  a name with a ``/`` is taken as a hub repo as is. Downloads go to
  ``cache_dir`` when given, else the Hugging Face cache.

Options:

``fp16``         half precision; default True with a Metal GPU, False elsewhere
                 (MLX's CPU half-precision matmul is very slow, so weights are
                 widened to float32)
``device``       ``auto`` (default), ``gpu`` or ``cpu``
``temperature``  decoding temperature (0.0; mlx-whisper has no beam search)
"""

from __future__ import annotations

import time
from pathlib import Path

from ..base import SAMPLING_RATE, ASRBase, BackendUnavailable, Capabilities, ModelNotFound, check_audio
from ..models import model_label
from ..result import Segment, SegmentResults, segment_from_dict

INSTALL_HINT = (
    "mlx-whisper runs on Apple silicon (pip install 'voxpipe[mlx]' on macOS arm64); "
    "on Linux its CPU build also works, slowly: pip install torch==<a CPU build> 'mlx[cpu]' mlx-whisper "
    "(see docs/backends.md)"
)

try:  # cheap dependency check, plus one tiny op to prove MLX has a working device
    import mlx.core as mx
    import mlx_whisper
    from mlx_whisper.transcribe import ModelHolder

    mx.eval(mx.ones(2) + 1)
except ImportError as exc:  # e.g. Linux with plain `mlx` (no backend library) or nothing installed
    raise BackendUnavailable(f"{INSTALL_HINT} [{exc}]") from exc
except Exception as exc:  # noqa: BLE001 - mlx imported but cannot compute here
    raise BackendUnavailable(f"{INSTALL_HINT} [MLX does not work here: {type(exc).__name__}: {exc}]") from exc

WEIGHT_FILES = ("weights.safetensors", "weights.npz")
UNSUFFIXED_REPOS = {"large-v3-turbo": "large-v3-turbo", "turbo": "large-v3-turbo"}


def hub_repo(name: str) -> str:
    """The mlx-community repository that holds model ``name``."""
    if "/" in name:
        return name
    if name in UNSUFFIXED_REPOS:
        return f"mlx-community/whisper-{UNSUFFIXED_REPOS[name]}"
    return f"mlx-community/whisper-{name}-mlx"


def check_model_folder(path: Path) -> Path:
    """``path`` if it is an mlx-whisper model folder, else a one-line ModelNotFound."""
    if not path.is_dir():
        raise ModelNotFound(f"mlx-whisper model folder {str(path)!r} does not exist")
    if (path / "config.json").is_file() and any((path / f).is_file() for f in WEIGHT_FILES):
        return path
    if (path / "model.bin").is_file():
        raise ModelNotFound(
            f"{str(path)!r} is a CTranslate2 (faster-whisper) model; convert it first: "
            f"voxpipe convert-model --from-ct2 {path} --to mlx OUT"
        )
    raise ModelNotFound(
        f"{str(path)!r} is not an mlx-whisper model folder (needs config.json and weights.safetensors or weights.npz)"
    )


class MLXWhisperASR(SegmentResults, ASRBase):
    """Wrapper around ``mlx_whisper.transcribe`` with word timestamps."""

    backend_name = "mlx-whisper"
    sep = ""  # words carry their own leading space, as in openai-whisper
    capabilities = Capabilities(quality_signals=True)

    def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
        opts = self.options
        device = str(opts.get("device", "auto"))
        if device in ("cpu", "gpu"):
            mx.set_default_device(mx.cpu if device == "cpu" else mx.gpu)
        elif device != "auto":
            raise ValueError(f"mlx-whisper option device must be auto, cpu or gpu, not {device!r}")
        if opts.get("beam_size") not in (None, 1):
            raise ValueError("mlx-whisper has no beam search; leave beam_size unset")
        self.fp16 = bool(opts.get("fp16", _has_metal() and mx.default_device() == mx.gpu))
        self.temperature = float(opts.get("temperature", 0.0))
        self.path, self.source = self._resolve(modelsize, cache_dir, model_dir)
        t0 = time.monotonic()
        dtype = mx.float16 if self.fp16 else mx.float32
        try:
            model = ModelHolder.get_model(self.path, dtype)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
            raise ModelNotFound(
                f"cannot load mlx-whisper model from {self.path!r}: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        if not self.fp16:
            _widen_to_float32(model)
        if not model.is_multilingual and self.original_language not in (None, "en"):
            raise ModelNotFound(
                f"model {self.model_name!r} is English-only but language {self.original_language!r} was asked for"
            )
        self.log.info("loaded %s (%s) on %s in %.1fs", self.model_name, self.source, mx.default_device(),
                      time.monotonic() - t0)
        return model

    def _resolve(self, modelsize, cache_dir, model_dir) -> tuple[str, str]:
        if model_dir:
            return str(check_model_folder(Path(model_dir).expanduser())), "model_dir"
        if not modelsize:
            raise ModelNotFound("no model given: set model (e.g. tiny.en) or model_dir")
        local = Path(modelsize).expanduser()
        if local.is_dir():
            return str(check_model_folder(local)), "model_dir"
        from ..convert_ct2 import bundled_converted

        converted = bundled_converted(modelsize, "mlx", cache_dir)
        if converted is not None:
            return str(converted), "converted from the bundled CTranslate2 model"
        repo = hub_repo(modelsize)
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(repo_id=repo, cache_dir=cache_dir), f"hub:{repo}"
        except Exception as exc:  # noqa: BLE001 - offline, unknown repo, ...
            raise ModelNotFound(
                f"cannot get mlx-whisper model {modelsize!r} from the Hugging Face hub ({repo}): "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from exc

    @property
    def model_name(self) -> str:
        if self.model_dir:  # the folder is what loaded, whatever the model name says
            return model_label(self.modelsize, self.model_dir)
        return str(self.modelsize or Path(getattr(self, "path", "custom")).name)

    def transcribe(self, audio, init_prompt: str = "") -> list[Segment]:
        audio = check_audio(audio)
        result = mlx_whisper.transcribe(
            audio,
            path_or_hf_repo=self.path,
            word_timestamps=True,
            language=self.original_language,
            task=self.transcribe_kargs.get("task", "transcribe"),
            initial_prompt=init_prompt or None,
            condition_on_previous_text=True,
            temperature=self.temperature,
            fp16=self.fp16,
            verbose=None,
        )
        duration = len(audio) / SAMPLING_RATE
        return [to_segment(s, duration) for s in result.get("segments", [])]

    def use_vad(self) -> None:
        """mlx-whisper has no voice activity filter; use voxpipe's VAC (--vac) instead."""
        self.log.warning("mlx-whisper has no internal VAD; ignoring --vad (use --vac for voxpipe's own)")

    def describe(self) -> dict:
        return {
            "backend": self.backend_name,
            "model": self.model_name,
            "device": str(mx.default_device()),
            "fp16": self.fp16,
        }


def to_segment(seg: dict, duration: float) -> Segment:
    """One mlx-whisper segment dict as a :class:`Segment`, times clipped to ``duration``."""
    return segment_from_dict(seg, duration, word_key="word", prob_key="probability")


def _has_metal() -> bool:
    try:
        return bool(mx.metal.is_available())
    except Exception:  # noqa: BLE001 - no metal module on Linux builds
        return False


def _widen_to_float32(model) -> None:
    """Store half-precision weights as float32 (MLX's CPU float16 matmul is very slow)."""
    from mlx.utils import tree_map

    model.update(tree_map(lambda a: a.astype(mx.float32) if a.dtype == mx.float16 else a, model.parameters()))
    mx.eval(model.parameters())


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""
