"""``voxpipe export kubernetes CONFIG DIR``: a pipeline as Kubernetes manifests.

Writes, into ``DIR`` (apply them with ``kubectl apply -k DIR``):

* ``kustomization.yaml``: the list of what follows;
* ``config.yaml``: a ConfigMap holding the container config (:func:`apps.deploy.container_config`);
* ``<app>-<actor>.yaml`` per actor: a Deployment (image from ``deploy/Dockerfile``, the config and
  the CURVE keys mounted read-only, a readiness probe on ``/readyz`` and a liveness probe on
  ``/healthz``, the grace of the process-manager exports, SIGTERM to drain);

  - the broker: one replica (``Recreate``), behind a Service with the bus's two ports, which every
    other actor connects to by name;
  - each worker entry: one Deployment with ``replicas`` from its config and a PodDisruptionBudget
    (at most one replica down at a time); in a dispatched pool each pod joins the pool under its
    own name (``--replica auto``: ``<entry>-<pod name>``), and a HorizontalPodAutoscaler scales the
    Deployment on the pool's load as the metrics actor publishes it (``voxpipe_pool_load``: live
    streams per slot, an external metric served by the Prometheus Adapter; target 0.7, up to 4
    times the configured replicas); a worker outside a pool hears every stream, so it is not scaled;
  - the metrics actor: behind a Service, annotated for Prometheus to scrape;

* ``README.txt``: the commands that make the image and the keys Secret and apply the rest.

The CURVE keys (``DIR/keys``, made unless the config has its own) go into a Secret named
``<app>-keys`` created from that folder; the manifests only reference it.
"""

from __future__ import annotations

from pathlib import Path

from .deploy import (
    CONFIG_PATH,
    IMAGE,
    KEYS_DIR,
    ContainerActor,
    container_actors,
    container_config,
    dns_name,
    dump_all,
    dump_yaml,
    write_files,
    write_keys,
)

HPA_TARGET_LOAD = "700m"  # 0.7 live streams per slot
HPA_MAX_FACTOR = 4


def _labels(app: str, a: ContainerActor) -> dict:
    labels = {"app.kubernetes.io/name": "voxpipe", "app.kubernetes.io/instance": app,
              "app.kubernetes.io/component": dns_name(a.name), "voxpipe.io/role": a.role}
    if a.pool:
        labels["voxpipe.io/pool"] = dns_name(a.pool)
    return labels


def _selector(app: str, a: ContainerActor) -> dict:
    return {"app.kubernetes.io/instance": app, "app.kubernetes.io/component": dns_name(a.name)}


def _container(a: ContainerActor, image: str) -> dict:
    probe_port = "metrics" if a.role == "metrics" else "health"
    ports = [{"name": name, "containerPort": port} for name, port in a.ports]
    if a.role != "metrics":
        ports.append({"name": "health", "containerPort": a.probe_port})
    c = {
        "name": dns_name(a.role),
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(a.args),
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "VOXPIPE_LOG_FORMAT", "value": "json"},
                {"name": "HF_HUB_OFFLINE", "value": "1"}],
        "ports": ports,
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": probe_port}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": probe_port}, "periodSeconds": 10,
                          "timeoutSeconds": 3, "failureThreshold": 3},
        "volumeMounts": [{"name": "config", "mountPath": str(Path(CONFIG_PATH).parent / "pipeline.yaml"),
                          "subPath": "pipeline.yaml", "readOnly": True},
                         {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False},
    }
    if a.role == "worker":
        c["resources"] = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
        # /healthz answers from the start; a model may take a while to load before /readyz does
        c["startupProbe"] = {"httpGet": {"path": "/healthz", "port": probe_port}, "periodSeconds": 5,
                             "failureThreshold": 24}
    else:
        c["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    if a.role == "sink":
        c["volumeMounts"].append({"name": "out", "mountPath": "/app/out"})
    return c


def _key_items(keys: Path, client: str) -> list[dict]:
    """Secret keys (flat) -> file paths under KEYS_DIR (authorized/ is a folder)."""
    items = [{"key": f, "path": f} for f in ("server.key", "server.key_secret", f"{client}.key",
                                              f"{client}.key_secret")]
    for p in sorted((keys / "authorized").glob("*.key")):
        items.append({"key": f"authorized-{p.name}", "path": f"authorized/{p.name}"})
    return items


def deployment(app: str, a: ContainerActor, image: str, key_items: list[dict]) -> dict:
    volumes = [{"name": "config", "configMap": {"name": f"{app}-config"}},
               {"name": "keys", "secret": {"secretName": f"{app}-keys", "items": key_items,
                                           "defaultMode": 0o440}}]
    if a.role == "sink":
        volumes.append({"name": "out", "emptyDir": {}})
    spec: dict = {
        "replicas": a.replicas,
        "selector": {"matchLabels": _selector(app, a)},
        "template": {
            "metadata": {"labels": _labels(app, a)},
            "spec": {"terminationGracePeriodSeconds": a.stop_timeout, "containers": [_container(a, image)],
                     "volumes": volumes, "securityContext": {"fsGroup": 10001}},
        },
    }
    if a.role == "broker":
        spec["strategy"] = {"type": "Recreate"}  # one broker: the bus endpoints are its
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{app}-{dns_name(a.name)}", "labels": _labels(app, a)}, "spec": spec}


def service(app: str, a: ContainerActor, name: str) -> dict:
    meta: dict = {"name": name, "labels": _labels(app, a)}
    if a.role == "metrics":
        port = dict(a.ports)["metrics"]
        meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                               "prometheus.io/path": "/metrics"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": _selector(app, a),
                     "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in a.ports]}}


def disruption_budget(app: str, a: ContainerActor) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": f"{app}-{dns_name(a.name)}", "labels": _labels(app, a)},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(app, a)}}}


def autoscaler(app: str, a: ContainerActor) -> dict:
    target = f"{app}-{dns_name(a.name)}"
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": target, "labels": _labels(app, a)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": a.replicas,
            "maxReplicas": max(a.replicas * HPA_MAX_FACTOR, a.replicas + 1),
            "metrics": [{"type": "External", "external": {
                "metric": {"name": "voxpipe_pool_load", "selector": {"matchLabels": {"pool": a.pool}}},
                "target": {"type": "Value", "value": HPA_TARGET_LOAD}}}],
            # a worker that leaves takes its streams' state with it: scale down slowly
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}},
        },
    }


def render_kubernetes(actors: list[ContainerActor], app: str, data: dict, keys: Path, client: str,
                      image: str = IMAGE) -> dict[str, str]:
    """File name -> content."""
    items = _key_items(keys, client)
    files = {"config.yaml": dump_yaml({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{app}-config", "labels": {"app.kubernetes.io/name": "voxpipe",
                                                          "app.kubernetes.io/instance": app}},
        "data": {"pipeline.yaml": dump_yaml(data)}})}
    for a in actors:
        docs = [deployment(app, a, image, items)]
        if a.role == "broker":
            docs.append(service(app, a, f"{app}-broker"))
        elif a.role in ("metrics", "web", "serve"):
            docs.append(service(app, a, f"{app}-{dns_name(a.name)}"))
        elif a.role == "worker":
            docs.append(disruption_budget(app, a))
            if a.pool:  # a dispatched pool shares its streams; copies of an undispatched worker would each
                docs.append(autoscaler(app, a))  # transcribe every stream, so only a pool is scaled
        files[f"{app}-{dns_name(a.name)}.yaml"] = dump_all(docs)
    files["kustomization.yaml"] = dump_yaml({"apiVersion": "kustomize.config.k8s.io/v1beta1",
                                             "kind": "Kustomization", "resources": list(files)})
    return files


def readme(app: str, keys: Path, items: list[dict], image: str) -> str:
    from_files = " ".join(f"--from-file={i['key']}={keys / i['path']}" for i in items)
    return (f"# voxpipe on Kubernetes ({app})\n\n"
            f"docker build -f deploy/Dockerfile -t {image} .      # from the repository root; push it where the "
            "cluster pulls from\n"
            f"kubectl create secret generic {app}-keys {from_files}\n"
            "kubectl apply -k .\n\n"
            "The autoscalers read the external metric voxpipe_pool_load{pool=...} (the metrics actor's, via the\n"
            "Prometheus Adapter); see docs/running.md.\n")


def export_kubernetes(config: str, out: Path, app: str = "voxpipe", image: str = IMAGE) -> list[Path]:
    app = dns_name(app)
    cfg, data = container_config(config, f"{app}-broker")
    actors = container_actors(cfg, data)
    out.mkdir(parents=True, exist_ok=True)
    keys = write_keys(out, cfg)
    client = data["bus"]["security"]["client"]
    files = render_kubernetes(actors, app, data, keys, client, image)
    files["README.txt"] = readme(app, keys, _key_items(keys, client), image)
    return write_files(out, files)
