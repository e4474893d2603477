"""Config validation: every rule fails with one clear line; ``voxpipe up`` refuses a bad config before starting
anything."""

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline import config as config_mod
from pipeline.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "tests" / "data" / "weather.wav"

GOOD = f"""
bus:
  xsub: tcp://127.0.0.1:7791
  xpub: tcp://127.0.0.1:7792
sources:
  - name: capture
    input: file:{CLIP}
workers:
  - name: asr
    model: tiny.en
sinks:
  - name: out
    output: jsonl:OUTDIR/t.jsonl
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("OUTDIR", str(tmp_path)))
    return path


def error_of(tmp_path, text) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert str(path) in msg, f"does not name the file: {msg!r}"
    return msg


def test_good_config_loads_typed_and_absolute(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.sources[0].input == f"file:{CLIP}"
    assert cfg.sinks[0].output == f"jsonl:{tmp_path}/t.jsonl"
    assert cfg.workers[0].min_chunk_size == 0.75 and isinstance(cfg.workers[0].min_chunk_size, float)
    assert cfg.actor_names() == ["broker", "capture", "vad", "asr", "out"]


def test_unknown_key(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("    model: tiny.en", "    modle: tiny.en"))
    assert "unknown key 'workers[0].modle'" in msg and "model" in msg


def test_unknown_top_level_key(tmp_path):
    assert "unknown key 'sink'" in error_of(tmp_path, GOOD + "sink: {}\n")


def test_wrong_type(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("    model: tiny.en", "    model: tiny.en\n    min_chunk_size: fast"))
    assert "workers[0].min_chunk_size: expected a number, got 'fast'" in msg


def test_wrong_type_bool(tmp_path):
    assert "vad.enabled: expected true/false" in error_of(tmp_path, GOOD + "vad:\n  enabled: maybe\n")


def test_batch_is_true_false_or_auto_and_auto_by_default(tmp_path):
    assert load_config(write(tmp_path, GOOD)).workers[0].batch == "auto"
    assert load_config(write(tmp_path, GOOD.replace("    model: tiny.en", "    model: tiny.en\n    batch: false"))
                       ).workers[0].batch is False
    msg = error_of(tmp_path, GOOD.replace("    model: tiny.en", "    model: tiny.en\n    batch: sometimes"))
    assert "workers[0].batch" in msg and "true, false or auto" in msg


def test_unknown_backend(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("    model: tiny.en", "    backend: whisperx9\n    model: tiny.en"))
    assert "unknown backend 'whisperx9'" in msg and "faster-whisper" in msg


def test_unreadable_audio_file(tmp_path):
    msg = error_of(tmp_path, GOOD.replace(str(CLIP), str(tmp_path / "missing.wav")))
    assert "sources[0].input: cannot read audio file" in msg and "missing.wav" in msg


def test_unwritable_sink_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if locked.stat().st_uid == 0 and __import__("os").geteuid() == 0:
            pytest.skip("root can write anywhere")
        msg = error_of(tmp_path, GOOD.replace("OUTDIR/t.jsonl", f"{locked}/t.jsonl"))
        assert "cannot write into" in msg
    finally:
        locked.chmod(0o700)


def test_endpoint_clash(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("7792", "7791"))
    assert "bus.xsub and bus.xpub are the same endpoint" in msg


def test_web_port_clashes_with_the_bus(tmp_path):
    msg = error_of(tmp_path, GOOD + "web:\n  enabled: true\n  port: 7792\n")
    assert "web.port 7792 clashes with bus.xpub" in msg


def test_not_an_endpoint(tmp_path):
    assert "is not a ZeroMQ endpoint" in error_of(tmp_path, GOOD.replace("tcp://127.0.0.1:7791", "localhost:7791"))


def test_duplicate_names(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("  - name: out", "  - name: asr"))
    assert "actor name 'asr' is used twice" in msg


def test_two_sinks_one_file(tmp_path):
    text = GOOD + "  - name: out2\n    output: jsonl:OUTDIR/t.jsonl\n"
    assert "is written by two sinks" in error_of(tmp_path, text)


def test_sink_names_an_unknown_worker(tmp_path):
    text = GOOD.replace("    output: jsonl:OUTDIR/t.jsonl", "    output: jsonl:OUTDIR/t.jsonl\n    workers: [nobody]")
    assert "sinks[0].workers: no worker named 'nobody'" in error_of(tmp_path, text)


def test_bad_sink_output(tmp_path):
    msg = error_of(tmp_path, GOOD.replace("jsonl:OUTDIR/t.jsonl", "mp3:OUTDIR/t.mp3"))
    assert "is not console, jsonl:PATH, srt:PATH, vtt:PATH or txt:PATH" in msg


def test_invalid_yaml(tmp_path):
    assert "invalid YAML at line" in error_of(tmp_path, GOOD + "  - [unclosed\n")


def test_env_expansion(tmp_path, monkeypatch):
    text = GOOD.replace("tcp://127.0.0.1:7791", "${VP_TEST_XSUB}")
    text = text.replace("OUTDIR/t.jsonl", "${VP_TEST_OUT:-OUTDIR/d.jsonl}")
    monkeypatch.setenv("VP_TEST_XSUB", "tcp://127.0.0.1:7793")
    monkeypatch.delenv("VP_TEST_OUT", raising=False)
    cfg = load_config(write(tmp_path, text))
    assert cfg.bus.xsub == "tcp://127.0.0.1:7793"
    assert cfg.sinks[0].output == f"jsonl:{tmp_path}/d.jsonl"  # the default
    monkeypatch.setenv("VP_TEST_OUT", str(tmp_path / "e.jsonl"))
    assert load_config(write(tmp_path, text)).sinks[0].output == f"jsonl:{tmp_path}/e.jsonl"


def test_env_unset_without_default(tmp_path, monkeypatch):
    monkeypatch.delenv("VP_TEST_NOPE", raising=False)
    path = write(tmp_path, GOOD.replace("tcp://127.0.0.1:7791", "${VP_TEST_NOPE}"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "\n" not in msg and "bus.xsub: ${VP_TEST_NOPE} is not set" in msg


def test_auto_input_is_the_file_without_a_microphone(tmp_path, monkeypatch):
    monkeypatch.setattr(config_mod, "_has_microphone", lambda: False)
    cfg = load_config(write(tmp_path, GOOD.replace(f"file:{CLIP}", f"auto:{CLIP}")))
    assert cfg.sources[0].input == f"file:{CLIP}"
    monkeypatch.setattr(config_mod, "_has_microphone", lambda: True)
    assert load_config(write(tmp_path, GOOD.replace(f"file:{CLIP}", f"auto:{CLIP}"))).sources[0].input == "mic"
    assert "'auto:' needs the path" in error_of(tmp_path, GOOD.replace(f"file:{CLIP}", "auto"))


@pytest.mark.parametrize("name", ["default.yaml", "file.yaml", "side-by-side.yaml", "file-unbatched.yaml",
                                  "file-batched.yaml"])
def test_shipped_configs_are_valid(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.workers and cfg.sinks and cfg.sources


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_up_refuses_a_bad_config_before_starting_anything(tmp_path):
    path = write(tmp_path, GOOD.replace("    model: tiny.en", "    backend: nope\n    model: tiny.en"))
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "apps.cli", "up", str(path)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 3
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown backend 'nope'" in lines[0], res.stderr
    assert "started" not in res.stdout and res.stdout == ""
    assert _port_free(7791) and _port_free(7792)
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "t.jsonl").exists()


# -- pools ---------------------------------------------------------------------------------------------
def test_a_worker_is_a_pool_of_its_own_and_replicas_share_one(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.pools() == {"asr": ["asr"]} and not cfg.dispatched  # today's configs: unchanged
    text = GOOD.replace("    model: tiny.en", "    model: tiny.en\n    replicas: 2\n  - name: gpu\n    pool: asr")
    cfg = load_config(write(tmp_path, text))
    assert cfg.pools() == {"asr": ["asr-1", "asr-2", "gpu"]} and cfg.dispatched
    assert cfg.actor_names() == ["broker", "capture", "vad", "dispatcher", "asr-1", "asr-2", "gpu", "out"]


def test_a_crowded_pool_needs_the_dispatcher(tmp_path):
    text = GOOD.replace("    model: tiny.en", "    model: tiny.en\n    replicas: 2") + "dispatcher:\n  enabled: false\n"
    assert "dispatcher.enabled is false but pool 'asr' has 2 workers" in error_of(tmp_path, text)


def test_a_pool_takes_one_input(tmp_path):
    text = GOOD.replace("    model: tiny.en", "    model: tiny.en\n  - name: raw\n    pool: asr\n    input: audio")
    assert "workers[1].input: pool 'asr' mixes input 'speech' and 'audio'" in error_of(tmp_path, text)


@pytest.mark.parametrize("line,message", [
    ("    replicas: 0", "workers[0].replicas: must be between 1 and 64"),
    ("    slots: -1", "workers[0].slots: must be >= 0"),
    ("    pool: a.b", "workers[0].pool: 'a.b' must be"),
])
def test_bad_pool_settings(tmp_path, line, message):
    assert message in error_of(tmp_path, GOOD.replace("    model: tiny.en", f"    model: tiny.en\n{line}"))


def test_the_dispatcher_section_is_checked(tmp_path):
    assert "dispatcher.dead_after: must be positive" in error_of(tmp_path, GOOD + "dispatcher:\n  dead_after: 0\n")


def test_an_english_only_model_is_refused_another_language_or_translation(tmp_path):
    """tiny.en cannot transcribe German or translate: said before anything starts, not by a worker that fails."""
    def worker(model, extra):
        return GOOD.replace("    model: tiny.en\n", f"    model: {model}\n{extra}")

    assert "English-only" in error_of(tmp_path, worker("tiny.en", "    language: de\n"))
    assert "cannot translate" in error_of(tmp_path, worker("tiny.en", "    task: translate\n"))
    for ok in ("    language: auto\n", "    language: en\n"):
        assert load_config(write(tmp_path, worker("tiny.en", ok))).workers[0].model == "tiny.en"
    base = load_config(write(tmp_path, worker("base", "    language: de\n    task: translate\n")))
    assert (base.workers[0].language, base.workers[0].task) == ("de", "translate")


def test_the_multilingual_web_config_is_valid(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / "configs" / "web-multilingual.yaml")
    assert cfg.web.enabled and (cfg.workers[0].model, cfg.workers[0].language) == ("base", "auto")
