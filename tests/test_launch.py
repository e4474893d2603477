"""Launcher: Procfile rendering, the repository's Procfile, stop order, derived configs, export files."""

import subprocess
import sys
from pathlib import Path

import pytest

from apps import plan
from apps.export import export
from apps.transcribe import derive
from pipeline import derived_config
from pipeline.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "tests" / "data" / "kitchen.wav"


def voxpipe(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.fixture
def cfg(monkeypatch):
    monkeypatch.chdir(ROOT)
    return load_config(ROOT / "configs" / "side-by-side.yaml")


def test_procfile_lines_one_per_actor(cfg):
    procs = plan.actor_processes(cfg)
    exe = " ".join(plan.voxpipe_command())
    conf = str(ROOT / "configs" / "side-by-side.yaml")
    assert plan.render_procfile(procs).splitlines() == [
        f"broker: {exe} broker --config {conf} --name broker",
        f"capture: {exe} capture --config {conf} --name capture",
        f"vad: {exe} vad --config {conf} --name vad",
        f"tiny: {exe} worker --config {conf} --name tiny",
        f"base: {exe} worker --config {conf} --name base",
        f"jsonl: {exe} sink --config {conf} --name jsonl",
    ]
    # the same Python's entry point, usable without activating the venv
    assert Path(plan.voxpipe_command()[0]).parent == Path(sys.executable).parent


def test_procfile_web_and_no_vad(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = (ROOT / "configs" / "file.yaml").read_text()
    text = text.replace("vad:\n  enabled: true", "vad:\n  enabled: false")
    text = text.replace("wait_for: [vad, asr, jsonl]", "wait_for: [asr]")
    text = text.replace("    language: en\n", "    language: en\n    input: audio\n")
    text += "\nweb:\n  enabled: true\n  name: page\n"
    path = tmp_path / "w.yaml"
    path.write_text(text)
    procs = plan.actor_processes(load_config(path))
    assert [(p.name, p.role) for p in procs] == [("broker", "broker"), ("capture", "capture"), ("asr", "worker"),
                                                  ("jsonl", "sink"), ("page", "web")]
    assert procs[-1].argv[-5:] == ("web", "--config", str(path), "--name", "page")
    # the web page sends eos for its browser streams: it stops with the sources
    assert plan.stop_stages(procs)[0] == ["capture", "page"]


def test_cli_procfile_matches_root_procfile():
    res = voxpipe("procfile", "configs/default.yaml")
    assert res.returncode == 0, res.stderr
    exe = " ".join(plan.voxpipe_command())
    portable = res.stdout.replace(exe + " ", "voxpipe ").replace(str(ROOT) + "/", "")
    assert (ROOT / "Procfile").read_text() == portable
    assert voxpipe("procfile", "--portable", "configs/default.yaml").stdout == (ROOT / "Procfile").read_text()
    names = [line.split(":")[0] for line in portable.splitlines()]
    assert names == ["broker", "capture", "vad", "asr", "console"]


def test_cli_procfile_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers:\n  - name: a\n    backend: nope\n")
    res = voxpipe("procfile", str(bad))
    assert res.returncode == 3 and res.stdout == "" and "unknown backend 'nope'" in res.stderr


def test_stop_stages_follow_the_pipeline(cfg):
    stages = plan.stop_stages(plan.actor_processes(cfg))
    assert stages == [["capture"], ["vad"], ["tiny", "base"], ["jsonl"], ["broker"]]


def test_derived_config_round_trips_with_a_private_bus(cfg, tmp_path):
    derived = derived_config.with_private_bus(cfg)
    assert derived.bus.xsub != cfg.bus.xsub and derived.bus.xsub != derived.bus.xpub
    path = derived_config.write_config(derived, tmp_path / "d.yaml")
    again = load_config(path)
    assert again.bus == derived.bus
    assert again.workers == cfg.workers and again.sinks == cfg.sinks and again.sources == cfg.sources


def test_transcribe_derives_a_one_file_config(cfg, tmp_path):
    d = derive(cfg, CLIP, speed=3.0, outputs=[f"srt:{tmp_path}/a.srt", f"jsonl:{tmp_path}/a.jsonl"], source=None)
    (src,) = d.sources
    assert src.input == f"file:{CLIP}" and src.speed == 3.0 and not src.loop
    assert [s.output for s in d.sinks] == [f"srt:{tmp_path}/a.srt", f"jsonl:{tmp_path}/a.jsonl"]
    assert set(src.wait_for) == {"vad", "tiny", "base", "out-srt", "out-jsonl"}
    assert d.bus.xsub != cfg.bus.xsub and d.bus.xpub != cfg.bus.xpub
    load_config(derived_config.write_config(d, tmp_path / "t.yaml"))  # valid as written


def test_transcribe_sets_every_workers_model_language_and_task_and_refuses_what_a_model_cannot(cfg, tmp_path):
    from pipeline.config import ConfigError

    d = derive(cfg, CLIP, speed=None, outputs=None, source=None,
               speech={"model": "base", "language": "de", "task": "translate"})
    assert {(w.model, w.language, w.task) for w in d.workers} == {("base", "de", "translate")}
    assert load_config(derived_config.write_config(d, tmp_path / "t.yaml")).workers == d.workers
    kept = derive(cfg, CLIP, speed=None, outputs=None, source=None, speech={"model": None, "language": None})
    assert kept.workers == cfg.workers
    with pytest.raises(ConfigError, match="--language de: worker tiny: .*English-only"):
        derive(cfg, CLIP, speed=None, outputs=None, source=None, speech={"language": "de"})


def test_export_supervisord(cfg, tmp_path):
    files = export("supervisord", str(ROOT / "configs" / "side-by-side.yaml"), str(tmp_path / "sv"))
    (conf,) = files
    text = conf.read_text()
    procs = plan.actor_processes(cfg)
    for p in procs:
        block = text.split(f"[program:voxpipe-{p.name}]\n", 1)[1].split("\n\n", 1)[0]
        assert f"command={p.cmd}" in block
        # a source whose file is done (exit 0) stays down; everything else comes back
        restart = "autorestart=unexpected\nexitcodes=0" if p.role == "capture" else "autorestart=true"
        assert restart in block and "stopsignal=TERM" in block and "startretries=5" in block
    assert ("[group:voxpipe]\n"
            "programs=voxpipe-broker,voxpipe-capture,voxpipe-vad,voxpipe-tiny,voxpipe-base,voxpipe-jsonl") in text
    # the broker starts first and stops last, the capture the other way round
    prio = {p.name: int(text.split(f"[program:voxpipe-{p.name}]", 1)[1].split("priority=", 1)[1].split("\n")[0])
            for p in procs}
    assert prio["broker"] < prio["jsonl"] < prio["tiny"] < prio["vad"] < prio["capture"]
    assert (tmp_path / "sv" / "logs").is_dir()
    # the restart rule: a listener stops the group when one program fails 5 times within 60 s
    listener = text.split("[eventlistener:voxpipe-restart-rule]\n", 1)[1]
    assert "restart-guard --group voxpipe --max-failures 5 --window 60" in listener
    assert "events=PROCESS_STATE_EXITED,PROCESS_STATE_FATAL" in listener


def test_export_systemd_cli(cfg, tmp_path):
    res = voxpipe("export", "systemd", "configs/side-by-side.yaml", str(tmp_path / "sd"), "--app", "vp")
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (tmp_path / "sd").iterdir())
    assert names == sorted(["vp.target", "vp-give-up@.service"]
                           + [f"vp-{n}.service" for n in ("broker", "capture", "vad", "tiny", "base", "jsonl")])
    for p in plan.actor_processes(cfg):
        unit = (tmp_path / "sd" / f"vp-{p.name}.service").read_text()
        restart = "Restart=on-failure" if p.role == "capture" else "Restart=always"
        assert restart in unit and "KillSignal=SIGTERM" in unit
        # the restart rule: back-off from 0.5 s up to 8 s; 5 failures within 60 s stop the target
        for line in ("RestartSec=0.5", "RestartMaxDelaySec=8", "StartLimitIntervalSec=60", "StartLimitBurst=5",
                     "OnFailure=vp-give-up@%n.service"):
            assert line in unit, line
        assert f"ExecStart={' '.join(p.argv)}" in unit
        assert "WantedBy=vp.target" in unit
    worker = (tmp_path / "sd" / "vp-tiny.service").read_text()
    assert "After=vp-jsonl.service" in worker
    assert "After=" not in (tmp_path / "sd" / "vp-broker.service").read_text()
    give_up = (tmp_path / "sd" / "vp-give-up@.service").read_text()
    assert "systemctl is-failed --quiet %i" in give_up and "systemctl --no-block stop vp.target" in give_up
    target = (tmp_path / "sd" / "vp.target").read_text()
    assert "Wants=vp-broker.service vp-capture.service" in target


def test_export_bad_config_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus: 1\n")
    res = voxpipe("export", "systemd", str(bad), str(tmp_path / "out"))
    assert res.returncode == 3 and "unknown key 'bogus'" in res.stderr
    assert not (tmp_path / "out").exists()


def test_up_refuses_a_bus_port_in_use(tmp_path):
    import socket

    from tests.procs import Bus

    bus = Bus.free()
    text = (ROOT / "configs" / "file.yaml").read_text()
    text = text.replace("${VOXPIPE_XSUB:-tcp://127.0.0.1:7711}", bus.xsub)
    text = text.replace("${VOXPIPE_XPUB:-tcp://127.0.0.1:7712}", bus.xpub)
    path = tmp_path / "f.yaml"
    path.write_text(text)
    port = int(bus.xpub.rsplit(":", 1)[1])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        res = voxpipe("up", str(path))
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip() == \
        f"voxpipe up: cannot start: bus.xpub {bus.xpub} already in use (another pipeline on this bus?)"


POOLED = """
bus:
  xsub: tcp://127.0.0.1:7961
  xpub: tcp://127.0.0.1:7962
sources:
  - name: capture
    input: file:{clip}
    wait_for: [vad, asr, out]
workers:
  - name: asr
    replicas: 3
  - name: big
    model: base
sinks:
  - name: out
    output: jsonl:{dir}/t.jsonl
"""


@pytest.fixture
def pooled(tmp_path):
    path = tmp_path / "pooled.yaml"
    path.write_text(POOLED.format(clip=CLIP, dir=tmp_path))
    return load_config(path)


def test_replicas_are_processes_of_their_own_behind_one_dispatcher(pooled):
    procs = plan.actor_processes(pooled)
    assert [(p.name, p.role) for p in procs] == [
        ("broker", "broker"), ("capture", "capture"), ("vad", "vad"), ("dispatcher", "dispatcher"),
        ("asr-1", "worker"), ("asr-2", "worker"), ("asr-3", "worker"), ("big", "worker"), ("out", "sink")]
    assert procs[5].argv[-7:] == ("worker", "--config", pooled.path, "--name", "asr", "--replica", "2")
    assert procs[7].argv[-2:] == ("--name", "big")  # a worker without replicas runs as it always did
    assert plan.stop_stages(procs) == [["capture"], ["vad"], ["dispatcher"], ["asr-1", "asr-2", "asr-3", "big"],
                                       ["out"], ["broker"]]
    assert pooled.pools() == {"asr": ["asr-1", "asr-2", "asr-3"], "big": ["big"]} and pooled.dispatched


def test_exports_start_each_replica_and_the_dispatcher_between_the_workers_and_the_vad(pooled, tmp_path):
    (conf,) = export("supervisord", pooled.path, str(tmp_path / "sv"))
    text = conf.read_text()
    prio = {n: int(text.split(f"[program:voxpipe-{n}]", 1)[1].split("priority=", 1)[1].split("\n")[0])
            for n in ("asr-1", "asr-2", "asr-3", "dispatcher", "vad")}
    assert prio["asr-1"] == prio["asr-3"] < prio["dispatcher"] < prio["vad"]
    assert "command=" in text and "--replica 3" in text
    files = {p.name: p for p in map(Path, export("systemd", pooled.path, str(tmp_path / "sd")))}
    assert {"voxpipe-asr-1.service", "voxpipe-asr-2.service", "voxpipe-dispatcher.service"} <= set(files)
    dispatcher = files["voxpipe-dispatcher.service"].read_text()
    assert "After=voxpipe-asr-1.service voxpipe-asr-2.service voxpipe-asr-3.service voxpipe-big.service" in dispatcher


def test_the_capture_waits_for_the_dispatcher_and_every_replica_of_a_pool_it_names(pooled):
    assert pooled.expand_names(pooled.sources[0].wait_for) == ["vad", "dispatcher", "asr-1", "asr-2", "asr-3", "out"]
    from workers.capture import default_wait_for

    assert default_wait_for(pooled) == ("vad", "dispatcher", "asr-1", "asr-2", "asr-3", "big")
