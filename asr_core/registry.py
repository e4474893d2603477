"""Resolve a backend name to its class, lazily.

Three ways to name a backend:

* a built-in name (``faster-whisper``, ``mlx-whisper``, ``whisper_timestamped``,
  ``openai-api``, ``torch-whisper``): its module is imported only when asked for;
* a name registered by an installed package under the entry-point group
  ``voxpipe.asr_backends``;
* ``package.module:ClassName``, imported directly.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata
from typing import Any

from .base import ASRBase, BackendError

log = logging.getLogger("voxpipe.registry")

ENTRY_POINT_GROUP = "voxpipe.asr_backends"

# name -> "module:Class"; modules are imported on first use only.
BUILTIN_BACKENDS: dict[str, str] = {
    "faster-whisper": "asr_core.backends.faster_whisper:FasterWhisperASR",
    "mlx-whisper": "asr_core.backends.mlx_whisper:MLXWhisperASR",
    "whisper_timestamped": "asr_core.backends.whisper_timestamped:WhisperTimestampedASR",
    "openai-api": "asr_core.backends.openai_api:OpenAIAPIASR",
    "torch-whisper": "asr_core.backends.torch_whisper:TorchWhisperASR",
}

ALIASES = {
    "faster_whisper": "faster-whisper",
    "fasterwhisper": "faster-whisper",
    "mlx_whisper": "mlx-whisper",
    "mlx": "mlx-whisper",
    "whisper-timestamped": "whisper_timestamped",
    "openai": "openai-api",
    "openai_api": "openai-api",
    "torch_whisper": "torch-whisper",
}


class UnknownBackend(BackendError):
    pass


def _entry_points() -> dict[str, Any]:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python < 3.10 style
        eps = metadata.entry_points().get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep for ep in eps}


def available_backends() -> list[str]:
    """Every name that :func:`backend_class` can resolve (not counting ``module:Class``)."""
    return sorted(set(BUILTIN_BACKENDS) | set(_entry_points()))


def is_known_backend(name: str) -> bool:
    """Cheap check used by config validation: no backend module is imported."""
    name = ALIASES.get(name, name)
    return name in BUILTIN_BACKENDS or name in _entry_points() or _is_import_path(name)


def _is_import_path(name: str) -> bool:
    mod, sep, attr = name.partition(":")
    return bool(sep and mod and attr and all(p.isidentifier() for p in mod.split(".")))


def _import_path(path: str) -> type:
    mod_name, _, attr = path.partition(":")
    module = importlib.import_module(mod_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def backend_class(name: str) -> type[ASRBase]:
    """Return the backend class for ``name``; raises UnknownBackend or BackendUnavailable."""
    key = ALIASES.get(name, name)
    if key in BUILTIN_BACKENDS:
        cls = _import_path(BUILTIN_BACKENDS[key])
    else:
        eps = _entry_points()
        if key in eps:
            try:
                cls = eps[key].load()
            except (ImportError, AttributeError) as exc:
                raise UnknownBackend(f"backend {key!r} (entry point {eps[key].value}) cannot be loaded: {exc}") from exc
        elif _is_import_path(key):
            try:
                cls = _import_path(key)
            except (ImportError, AttributeError) as exc:
                raise UnknownBackend(f"cannot import backend {key!r}: {exc}") from exc
        else:
            known = ", ".join(available_backends())
            raise UnknownBackend(
                f"unknown ASR backend {name!r}; known: {known}, or give 'package.module:ClassName'"
            )
    if not (isinstance(cls, type) and hasattr(cls, "transcribe") and hasattr(cls, "ts_words")):
        raise UnknownBackend(f"backend {name!r} resolved to {cls!r}, which is not an ASR backend class")
    return cls


def _is_builtin(cls: type) -> bool:
    return any(cls.__module__ == path.partition(":")[0] for path in BUILTIN_BACKENDS.values())


def create_backend(
    name: str,
    lan: str = "en",
    model: str | None = None,
    *,
    cache_dir: str | None = None,
    model_dir: str | None = None,
    task: str = "transcribe",
    vad: bool = False,
    **options: Any,
) -> ASRBase:
    """Build and load a backend by name (the heavy model load happens here).

    For a backend voxpipe does not ship (an entry point or ``module:Class``), a bundled model
    name (``tiny.en``, ``base``) without a ``model_dir`` is resolved to its local folder and
    passed as ``model_dir`` (unless the class sets ``resolve_bundled_models = False``), and
    whatever its constructor raises becomes one :class:`BackendError` line (the traceback
    goes to the debug log). Its :attr:`~asr_core.base.ASRBase.model_name` then names the
    model that loaded: the bundled name, or the ``model_dir`` folder's.
    """
    from .models import bundled_location, model_label

    cls = backend_class(name)
    custom = not _is_builtin(cls)
    if custom and model_dir is None and getattr(cls, "resolve_bundled_models", True):
        model_dir = bundled_location(model, cache_dir)
        if model_dir is not None:
            log.info("model %r: the bundled folder %s, passed to %s as model_dir", model, model_dir, cls.__name__)
    try:
        asr = cls(lan, modelsize=model, cache_dir=cache_dir, model_dir=model_dir, **options)
    except (BackendError, ValueError):
        raise
    except Exception as exc:
        if not custom:
            raise
        log.debug("backend %s failed to load", name, exc_info=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BackendError(f"backend {name!r} failed to load model {model_label(model, model_dir, cache_dir)!r}: "
                           f"{type(exc).__name__}: {first[:300]}") from exc
    if custom and model_dir and getattr(asr, "model_label", None) is None:
        asr.model_label = model_label(model, model_dir, cache_dir)
    if task == "translate":
        asr.set_translate_task()
    if vad:
        asr.use_vad()
    return asr
