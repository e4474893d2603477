"""Bring-your-own engine: the example package, backend resolution, and the registry's errors.

The example package in ``examples/custom_backend`` is installed with pip into
a temporary folder (not into the shared virtualenv), which is put on
``sys.path`` for this module and on ``PYTHONPATH`` for the CLI subprocess, so
its entry point is discovered exactly as an installed plugin's would be.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asr_core.base import ASRBase
from asr_core.registry import UnknownBackend, available_backends, backend_class, create_backend, is_known_backend

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_backend"
DATA = Path(__file__).parent / "data"
CLASS_PATH = "voxpipe_example_backend.energy:EnergyBurstASR"
MADE_UP_WORD = re.compile(r"^(?:[mnbdts][aoeiu]){1,4}$", re.IGNORECASE)  # a sentence start gets a capital
LINE = re.compile(r"^(\d+) (\d+) (\d+) (.+)$")


def voxpipe_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("voxpipe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "apps.cli"]


@pytest.fixture(scope="module")
def example_target(tmp_path_factory):
    """The example package pip-installed into a fresh folder that is on sys.path."""
    tmp = tmp_path_factory.mktemp("example-backend")
    src = tmp / "src"  # build from a copy so no build/ or egg-info lands in the repo
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(target))
        yield target
    for name in [m for m in sys.modules if m.split(".")[0] == "voxpipe_example_backend"]:
        del sys.modules[name]


# -- resolution -------------------------------------------------------------------
def test_entry_point_name_resolves_to_the_example_class(example_target):
    cls = backend_class("example-energy")
    assert cls.__name__ == "EnergyBurstASR" and issubclass(cls, ASRBase)
    assert Path(sys.modules[cls.__module__].__file__).is_relative_to(example_target)
    assert is_known_backend("example-energy")


def test_available_backends_lists_the_plugin_beside_the_builtins(example_target):
    names = available_backends()
    assert {"example-energy", "faster-whisper", "openai-api"} <= set(names)
    assert names == sorted(names)


def test_module_colon_class_form_resolves_to_the_same_class(example_target):
    assert is_known_backend(CLASS_PATH)
    assert backend_class(CLASS_PATH) is backend_class("example-energy")


# -- the example engine ------------------------------------------------------------
def _bursts(spec, rate=16000, total=2.0, freq=300.0):
    """Silence with tone bursts at the given (start, end) seconds."""
    audio = np.zeros(int(total * rate), dtype=np.float32)
    for beg, end in spec:
        t = np.arange(int(beg * rate), int(end * rate)) / rate
        audio[int(beg * rate): int(beg * rate) + len(t)] = 0.3 * np.sin(2 * np.pi * freq * t)
    return audio


def test_engine_finds_bursts_at_their_real_times(example_target):
    asr = create_backend("example-energy", "auto")
    spec = [(0.20, 0.45), (0.70, 0.85), (1.40, 1.75)]
    result = asr.transcribe(_bursts(spec))
    words = asr.ts_words(result)
    assert len(words) == 3
    for (beg, end, text), (b, e) in zip(words, spec, strict=False):
        assert abs(beg - b) <= 0.02 and abs(end - e) <= 0.03
        assert MADE_UP_WORD.match(text)
    # 0.55 s of silence between the 2nd and 3rd bursts is longer than `pause`
    assert asr.segments_end_ts(result) == [words[1][1], words[2][1]]
    assert asr.transcribe(np.zeros(16000, dtype=np.float32)) == []


def test_engine_times_are_relative_to_the_audio_it_is_given(example_target):
    asr = create_backend("example-energy", "en", pause=0.3)
    audio = _bursts([(0.30, 0.60), (0.90, 1.30)], freq=2500.0)
    shifted = np.concatenate([np.zeros(8000, dtype=np.float32), audio])
    plain, late = asr.ts_words(asr.transcribe(audio)), asr.ts_words(asr.transcribe(shifted))
    assert [w[2] for w in plain] == [w[2] for w in late]
    assert all(abs(b2 - b1 - 0.5) < 0.011 for (b1, _, _), (b2, _, _) in zip(plain, late, strict=False))


def test_engine_rejects_bad_options_in_one_line(example_target):
    with pytest.raises(ValueError, match="min_word < max_word"):
        create_backend("example-energy", "en", min_word=1.0, max_word=0.5)


def _silent_gaps(audio, rate=16000, min_len=1.0):
    """(start, end) seconds of stretches of digital silence at least ``min_len`` long."""
    quiet = np.abs(audio) < 1e-3
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    return [(s / rate, e / rate) for s, e in zip(edges[::2], edges[1::2], strict=False) if (e - s) / rate >= min_len]


def test_simulate_cli_streams_the_example_engine(example_target):
    from asr_core.audio import load_audio

    clip = DATA / "weather_gaps.wav"
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join(filter(None, [str(example_target), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(
        voxpipe_cmd() + ["simulate", str(clip), "--backend", "example-energy", "--comp-unaware"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    audio = load_audio(clip)
    duration_ms = len(audio) / 16
    spans, words = [], []
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        assert m, f"malformed line {line!r}"
        emit, beg, end = (int(m.group(i)) for i in (1, 2, 3))
        assert beg < end <= emit <= duration_ms + 1
        spans.append((beg / 1000, end / 1000))
        words += m.group(4).split(" ")
    assert all(MADE_UP_WORD.match(w) for w in words), words
    assert all(b1 >= e0 - 0.05 for (_, e0), (b1, _) in zip(spans, spans[1:], strict=False))
    # Streaming commits about the same words the engine finds in one pass.
    offline = create_backend("example-energy", "en")
    expected = [w[2] for w in offline.ts_words(offline.transcribe(audio))]
    assert len(expected) > 30 and abs(len(words) - len(expected)) <= 0.15 * len(expected)
    # Times are real: no commit starts or ends inside the clip's silent gaps.
    gaps = _silent_gaps(audio)
    assert len(gaps) >= 4
    for beg, end in spans:
        for g0, g1 in gaps:
            assert not (g0 + 0.05 < beg < g1 - 0.05) and not (g0 + 0.05 < end < g1 - 0.05), (beg, end, g0, g1)


# -- registry errors ---------------------------------------------------------------
def test_unknown_name_lists_the_known_backends():
    with pytest.raises(UnknownBackend) as info:
        backend_class("no-such-engine")
    msg = str(info.value)
    assert "'no-such-engine'" in msg
    assert "faster-whisper" in msg and "openai-api" in msg and "package.module:ClassName" in msg


@pytest.mark.parametrize(
    "path, expected",
    [
        ("no_such_pkg_xyz.engine:Engine", r"cannot import backend 'no_such_pkg_xyz\.engine:Engine'.*no_such_pkg_xyz"),
        ("asr_core.result:NoSuchEngine", r"cannot import backend .*NoSuchEngine"),
        ("asr_core.result:Segment", r"not an ASR backend class"),
    ],
)
def test_bad_module_class_paths_give_a_clear_error(path, expected):
    with pytest.raises(UnknownBackend, match=expected):
        backend_class(path)


def test_broken_entry_point_gives_a_clear_error(tmp_path, monkeypatch):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[voxpipe.asr_backends]\nbroken-engine = no_such_module_xyz:Engine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "broken-engine" in available_backends()
    with pytest.raises(UnknownBackend, match=r"'broken-engine'.*no_such_module_xyz:Engine.*cannot be loaded"):
        backend_class("broken-engine")


# -- an engine written for whisper_online.py ------------------------------------------------
PORT = "tests.whisper_online_port:PortedFasterWhisperASR"


def importable_env() -> dict[str, str]:
    """The console script's ``sys.path`` starts at ``.venv/bin``: the repository goes on ``PYTHONPATH``, no hub."""
    return dict(os.environ, HF_HUB_OFFLINE="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """The first sentence of meeting_gaps.wav ("Thank you all for joining the meeting."), 3 s."""
    import wave

    from asr_core.audio import float_to_pcm16, load_audio

    path = tmp_path_factory.mktemp("clips") / "first_sentence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(float_to_pcm16(load_audio(DATA / "meeting_gaps.wav")[: 3 * 16000]))
    return path


@pytest.fixture(scope="module")
def renamed_tiny(tmp_path_factory):
    """The bundled tiny.en files in a folder of another name (links, no copy)."""
    from asr_core.models import bundled_location

    folder = tmp_path_factory.mktemp("models") / "my-tiny-ct2"
    folder.mkdir()
    for f in Path(bundled_location("tiny.en")).iterdir():
        (folder / f.name).symlink_to(f)
    return folder


def test_a_bundled_name_is_resolved_for_custom_backends_only():
    """create_backend hands a custom engine the bundled folder as model_dir; built-ins resolve names themselves."""
    from asr_core import registry
    from asr_core.models import bundled_location

    seen = {}

    class Probe(ASRBase):
        def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
            seen.update(modelsize=modelsize, model_dir=model_dir)

    class OwnNames(Probe):
        resolve_bundled_models = False

    def make(cls, model, model_dir=None):
        seen.clear()
        orig = registry.backend_class
        registry.backend_class = lambda name: cls
        try:
            return registry.create_backend("probe", "en", model, model_dir=model_dir)
        finally:
            registry.backend_class = orig

    asr = make(Probe, "tiny.en")
    assert seen == {"modelsize": "tiny.en", "model_dir": bundled_location("tiny.en")}
    assert asr.describe()["model"] == "tiny.en"  # the bundled model, by its name
    make(Probe, "small")  # not bundled: left to the engine
    assert seen == {"modelsize": "small", "model_dir": None}
    make(OwnNames, "tiny.en")
    assert seen == {"modelsize": "tiny.en", "model_dir": None}
    asr = make(Probe, "tiny.en", model_dir="/models/whisper-small-ct2")  # a folder wins, and names the model
    assert seen["model_dir"] == "/models/whisper-small-ct2" and asr.describe()["model"] == "whisper-small-ct2"


def test_an_engine_that_fails_to_load_is_one_line_not_a_traceback():
    from asr_core import registry
    from asr_core.base import BackendError

    class Broken(ASRBase):
        def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
            raise OSError("Repository Not Found for url: https://huggingface.co/Systran/faster-whisper-nope\n"
                          "and forty more lines")

    orig = registry.backend_class
    registry.backend_class = lambda name: Broken
    try:
        with pytest.raises(BackendError) as info:
            registry.create_backend("mine:Broken", "en", "nope")
    finally:
        registry.backend_class = orig
    msg = str(info.value)
    assert msg == ("backend 'mine:Broken' failed to load model 'nope': OSError: Repository Not Found for url: "
                   "https://huggingface.co/Systran/faster-whisper-nope")
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.model
def test_a_whisper_online_engine_given_a_bundled_name_runs_offline(short_clip):
    """The ported engine with ``--model tiny.en`` and no network: the bundled folder, not the hub."""
    proc = subprocess.run(
        voxpipe_cmd() + ["simulate", str(short_clip), "--backend", PORT, "--model", "tiny.en", "--lan", "en",
                         "--comp_unaware"],
        capture_output=True, text=True, timeout=180, cwd=ROOT, env=importable_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from apps.bench.evaluation import wer

    text = " ".join(line.split(" ", 3)[3] for line in proc.stdout.splitlines())
    assert wer("Thank you all for joining the meeting.", text) <= 0.25, proc.stdout
    assert "'model': 'tiny.en'" in proc.stderr and "passed to PortedFasterWhisperASR as model_dir" in proc.stderr


@pytest.mark.model
def test_a_whisper_online_engine_with_a_name_nobody_has_fails_in_one_line(short_clip):
    proc = subprocess.run(
        voxpipe_cmd() + ["simulate", str(short_clip), "--backend", PORT, "--model", "large-v2", "--comp_unaware"],
        capture_output=True, text=True, timeout=180, cwd=ROOT, env=importable_env(),
    )
    assert proc.returncode == 4 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"voxpipe simulate: backend '{PORT}' failed to load model 'large-v2': "), proc.stderr


@pytest.mark.model
@pytest.mark.parametrize("backend", ["faster-whisper", PORT])
def test_commits_and_heartbeats_name_the_model_that_really_loaded(tmp_path, renamed_tiny, short_clip, backend):
    """Only ``model_dir`` given (``model`` keeps its default, tiny.en): the folder is what loads, and is named."""
    from pipeline import messages as m
    from tests.procs import Pipeline

    with Pipeline(tmp_path, ready_timeout=90) as p:
        p.start("asr", ["worker", "--name", "asr", "--backend", backend, "--model-dir", str(renamed_tiny),
                        "--language", "en", "--input", "audio"], env={"HF_HUB_OFFLINE": "1"})
        ready = p.wait_ready("asr")["asr"]
        sub = p.subscribe("transcript.asr.")
        p.start("cap", ["capture", f"file:{short_clip}", "--stream", "named", "--speed", "0"])
        commits = []
        for msg in sub:
            if isinstance(msg, m.Commit):
                commits.append(msg)
            elif isinstance(msg, m.EndOfStream):
                break
    assert ready.info["model"] == "my-tiny-ct2", ready.info
    assert commits and {c.model for c in commits} == {"my-tiny-ct2"}, commits
