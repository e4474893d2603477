"""``voxpipe web``'s command line: the page alone with a config, the whole pipeline without one.

The flags of the whisper_streaming fork's ``fastrtc_server.py`` (whisper_online.py's, in
either spelling) describe the pipeline's one worker; they go through the one config path
and its checks. (tests/test_web.py runs the one-command pipeline in a browser.)
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from apps import web
from apps.plan import actor_processes
from pipeline.config import ConfigError, WorkerConfig
from pipeline.errors import UsageError

FORK = ["--model", "tiny.en", "--lan", "en", "--min-chunk-size", "1.5", "--host", "127.0.0.1", "--port", "9891",
        "--backend", "faster-whisper"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="voxpipe")
    web.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["web", *argv])


def test_the_forks_flags_make_a_pipeline_of_broker_vad_worker_and_page(monkeypatch):
    monkeypatch.delenv("VOXPIPE_WEB_TOKEN", raising=False)
    args = parse(FORK + ["--buffer_trimming", "sentence", "--buffer_trimming_sec", "12", "--model_cache_dir", "/tmp/c",
                         "-o", "device=cpu", "--vac", "--warmup-file", "x.wav", "-l", "CRITICAL"])
    cfg = web.pipeline_config(args)
    w = cfg.workers[0]
    assert (w.name, w.backend, w.model, w.language, w.min_chunk_size) == ("asr", "faster-whisper", "tiny.en", "en", 1.5)
    assert (w.buffer_trimming, w.buffer_trimming_sec, w.cache_dir, w.options) == ("sentence", 12.0, "/tmp/c",
                                                                                  {"device": "cpu"})
    assert cfg.vad.enabled and cfg.web.enabled and (cfg.web.host, cfg.web.port) == ("127.0.0.1", 9891)
    # a private bus: never the default endpoints another pipeline may be using
    assert cfg.bus.xsub != "tcp://127.0.0.1:7701" and cfg.bus.xsub.startswith("tcp://127.0.0.1:")
    cfg = dataclasses.replace(cfg, path="/tmp/web.yaml")
    assert [p.role for p in actor_processes(cfg)] == ["broker", "vad", "worker", "web"]


def test_defaults_are_the_worker_configs():
    cfg = web.pipeline_config(parse([]))
    w = cfg.workers[0]
    assert (w.backend, w.model, w.language) == ("faster-whisper", "tiny.en", "auto")
    assert (w.min_chunk_size, w.first_chunk_size) == (WorkerConfig().min_chunk_size, WorkerConfig().first_chunk_size)
    assert (cfg.web.host, cfg.web.port) == ("127.0.0.1", 9880)


def test_beyond_loopback_the_pipeline_needs_a_token(monkeypatch):
    monkeypatch.delenv("VOXPIPE_WEB_TOKEN", raising=False)
    args = parse(FORK[:-6] + ["--host", "0.0.0.0", "--port", "9880", "--backend", "faster-whisper"])
    with pytest.raises(ConfigError, match=r"--host 0\.0\.0\.0 .*give --token"):
        web.pipeline_config(args)
    assert web.pipeline_config(parse(["--host", "0.0.0.0", "--token", "s3cret"])).web.token == "s3cret"
    monkeypatch.setenv("VOXPIPE_WEB_TOKEN", "from-env")
    assert web.pipeline_config(parse(["--host", "0.0.0.0"])).web.token == "from-env"


@pytest.mark.parametrize("argv, message", [
    (["--min-chunk-size", "0"], r"the command line: workers\[0\]\.min_chunk_size"),
    (["--backend", "no-such-engine"], r"the command line: workers\[0\]\.backend: unknown backend 'no-such-engine'"),
])
def test_a_bad_value_is_one_config_line(argv, message):
    with pytest.raises(ConfigError, match=message):
        web.pipeline_config(parse(argv))


def test_with_a_config_the_worker_flags_are_refused(voxpipe_cli, tmp_path):
    cfg = tmp_path / "page.yaml"
    cfg.write_text("web:\n  enabled: true\n")
    proc = voxpipe_cli("web", "--config", str(cfg), "--model", "small", "--lan", "en")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("voxpipe web: --model, --lan: these start a whole pipeline and apply only "
                                   "without --config/--xsub/--xpub; with a config, set them in its workers[]")
    with pytest.raises(UsageError):
        web.run(parse(["--xsub", "tcp://127.0.0.1:1", "--xpub", "tcp://127.0.0.1:2", "--model", "small"]))


def test_the_cli_refuses_an_open_page_without_a_token_before_starting_anything(voxpipe_cli):
    proc = voxpipe_cli("web", "--host", "0.0.0.0", "--port", "9880", env={"VOXPIPE_WEB_TOKEN": ""})
    assert proc.returncode == 3 and proc.stdout == ""
    assert "give --token" in proc.stderr and "started" not in proc.stderr
