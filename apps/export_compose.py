"""``voxpipe export compose CONFIG DIR``: a pipeline as a Docker Compose project.

Writes ``DIR/compose.yaml``, ``DIR/pipeline.yaml`` (the container config, :func:`apps.deploy.container_config`)
and, unless the config has CURVE keys of its own, ``DIR/keys`` (new ones). One service per actor,
all from one image built from ``deploy/Dockerfile``; each service:

* runs ``voxpipe <role> --config /etc/voxpipe/pipeline.yaml --name <name>`` (the broker also
  binds every interface), with the config and the keys mounted read-only;
* has a health check on its ``/readyz`` (``start_period`` covers a worker's model load), is
  restarted unless stopped, is stopped with SIGTERM (actors drain on it) and given the same grace
  as the process-manager exports (workers 60 s);
* starts after the broker is healthy; a worker pool's ``replicas`` become ``deploy.replicas``.

The metrics endpoint (and the web page and the gateway, when on) is published on the host's loopback.
``docker compose -f DIR/compose.yaml up --build`` runs it.
"""

from __future__ import annotations

from pathlib import Path

from .deploy import (
    CONFIG_PATH,
    DOCKERFILE,
    IMAGE,
    KEYS_DIR,
    ROOT,
    ContainerActor,
    container_actors,
    container_config,
    dns_name,
    dump_yaml,
    write_files,
    write_keys,
)


def _healthcheck(a: ContainerActor) -> dict:
    probe = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{a.probe_port}/readyz', "
             "timeout=2)")
    return {"test": ["CMD", "python", "-c", probe], "interval": "5s", "timeout": "3s", "retries": 3,
            "start_period": "120s" if a.role == "worker" else "20s"}


def render_compose(actors: list[ContainerActor], app: str, keys: str, image: str = IMAGE,
                   context: str | None = None) -> dict:
    services: dict = {}
    broker = next(a for a in actors if a.role == "broker")
    broker_service = dns_name(broker.name)
    for a in actors:
        name = dns_name(a.name)
        svc: dict = {"image": image}
        if a is broker:
            svc["build"] = {"context": context or str(ROOT), "dockerfile": DOCKERFILE}
        else:
            svc["pull_policy"] = "never"  # the broker's service builds the image
        svc["command"] = list(a.args)
        svc["environment"] = {"PYTHONUNBUFFERED": "1", "VOXPIPE_LOG_FORMAT": "json", "HF_HUB_OFFLINE": "1"}
        svc["volumes"] = [f"./pipeline.yaml:{CONFIG_PATH}:ro", f"{keys}:{KEYS_DIR}:ro"]
        if a.role == "sink":
            svc["volumes"].append("./out:/app/out")
        svc["healthcheck"] = _healthcheck(a)
        svc["restart"] = "unless-stopped"
        svc["stop_signal"] = "SIGTERM"
        svc["stop_grace_period"] = f"{a.stop_timeout}s"
        if a is not broker:
            svc["depends_on"] = {broker_service: {"condition": "service_healthy"}}
        published = [f"127.0.0.1:{port}:{port}" for what, port in a.ports if what in ("metrics", "web", "gateway")]
        if published:
            svc["ports"] = published
        if a.replicas > 1:
            svc["deploy"] = {"replicas": a.replicas}
        svc["labels"] = {"io.voxpipe.actor": a.name, "io.voxpipe.role": a.role,
                         **({"io.voxpipe.pool": a.pool} if a.pool else {})}
        services[name] = svc
    return {"name": app, "services": services}


def export_compose(config: str, out: Path, app: str = "voxpipe", image: str = IMAGE) -> list[Path]:
    broker_host = "broker"
    cfg, data = container_config(config, broker_host)
    actors = container_actors(cfg, data)
    broker = next(a for a in actors if a.role == "broker")
    if dns_name(broker.name) != broker_host:  # the clients reach the broker by its service name
        cfg, data = container_config(config, dns_name(broker.name))
        actors = container_actors(cfg, data)
    out.mkdir(parents=True, exist_ok=True)
    keys = write_keys(out, cfg)
    keys_ref = "./keys" if keys == out / "keys" else str(keys)
    files = {
        "pipeline.yaml": "# the pipeline config the containers read (voxpipe export compose)\n" + dump_yaml(data),
        "compose.yaml": dump_yaml(render_compose(actors, app, keys_ref, image)),
    }
    return write_files(out, files)
