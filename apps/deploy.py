"""What the container exports share (``voxpipe export compose|kubernetes``): one image, one config.

Every actor runs in a container of its own from one image (``deploy/Dockerfile``: the repository
installed with pip, ``voxpipe`` as the entry point, the bundled tiny.en inside). The containers
meet at the broker over the container network, so the bus leaves loopback and the project's rule
applies: CURVE is on (``bus.security``), with the keys mounted at :data:`KEYS_DIR`. The pipeline
config the containers read (:func:`container_config`) is the given YAML (``${VAR}`` expanded at
export time, relative paths kept: the image's working directory is the repository) with:

* ``bus``: clients connect to the broker's host name; the broker binds every interface
  (:func:`broker_bind_args`);
* ``health``: on, every actor on :data:`HEALTH_PORT` of its own container (probes hit it);
* ``metrics``: on, listening on every interface (the autoscaler and Prometheus read it);
* ``web`` (when on and it has a ``token``): listening on every interface;
* ``gateway`` (when on and it has ``api_keys``): listening on every interface, without the
  whisper_streaming TCP listener (that protocol has no key, so it stays on loopback).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config, load_config, read_yaml
from pipeline.config_schema import REPLICA_FROM_HOST

from .plan import ActorProcess, actor_processes

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "deploy/Dockerfile"
IMAGE = "voxpipe:latest"
CONFIG_PATH = "/etc/voxpipe/pipeline.yaml"
KEYS_DIR = "/etc/voxpipe/keys"
HEALTH_PORT = 8080
ANY = "0.0.0.0"
STOP_TIMEOUT = {"worker": 60, "sink": 20}  # seconds a stop may take (as the process-manager exports)
DEFAULT_STOP_TIMEOUT = 15


@dataclass(frozen=True)
class ContainerActor:
    """One actor as a container: its name, role, command-line arguments and probe port."""

    name: str
    role: str
    args: list
    probe_port: int
    replicas: int = 1
    pool: str = ""
    ports: tuple = ()  # (name, port) served to others: the broker's bus, metrics, the web page

    @property
    def stop_timeout(self) -> int:
        return STOP_TIMEOUT.get(self.role, DEFAULT_STOP_TIMEOUT)


def dns_name(name: str) -> str:
    """``name`` as a DNS label (Kubernetes object names, Compose service names)."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return out[:63] or "actor"


def _port(endpoint: str, default: int) -> int:
    mt = re.match(r"^tcp://.*:(\d+)$", endpoint)
    return int(mt.group(1)) if mt else default


def bus_ports(cfg: Config) -> tuple[int, int]:
    return _port(cfg.bus.xsub, 7701), _port(cfg.bus.xpub, 7702)


def broker_bind_args(cfg: Config) -> list[str]:
    xsub, xpub = bus_ports(cfg)
    return ["--xsub", f"tcp://{ANY}:{xsub}", "--xpub", f"tcp://{ANY}:{xpub}"]


def container_config(config: str, broker_host: str) -> tuple[Config, dict]:
    """The validated config and the YAML mapping the containers read (see the module's docstring)."""
    cfg = load_config(config)
    data, _ = read_yaml(config)
    xsub, xpub = bus_ports(cfg)
    bus = dict(data.get("bus") or {})
    bus.update(xsub=f"tcp://{broker_host}:{xsub}", xpub=f"tcp://{broker_host}:{xpub}")
    security = dict(bus.get("security") or {})
    security.update(curve=True, keys_dir=KEYS_DIR)
    security.setdefault("client", cfg.bus.security.client)
    bus["security"] = security
    data["bus"] = bus
    data["health"] = {"enabled": True, "host": ANY, "port": HEALTH_PORT, "consecutive": False}
    data["metrics"] = {**(data.get("metrics") or {}), "enabled": True, "host": ANY}
    if cfg.web.enabled and cfg.web.token:  # beyond loopback only with its token (web.token)
        data["web"] = {**data["web"], "host": ANY}
    if cfg.gateway.enabled and cfg.gateway.keys:  # beyond loopback only with keys (gateway.api_keys)
        data["gateway"] = {**data["gateway"], "host": ANY, "tcp_port": None}
    return cfg, data


def container_actors(cfg: Config, data: dict) -> list[ContainerActor]:
    """The pipeline's actors (in ``voxpipe procfile`` order, the metrics actor included) as containers."""
    import dataclasses

    from pipeline.config_schema import MetricsConfig

    metrics = MetricsConfig(**{k: v for k, v in data["metrics"].items() if k in {"name", "port", "host"}},
                            enabled=True)
    with_metrics = dataclasses.replace(cfg, metrics=metrics, path=cfg.path or CONFIG_PATH)
    entries = {n: w for w in cfg.workers for n in w.actor_names()}
    out = []
    seen_entries = set()
    for p in actor_processes(with_metrics):
        w = entries.get(p.name) if p.role == "worker" else None
        if w is not None:
            # one container (Deployment, Compose service) per worker entry, its replicas the scheduler's;
            # in a pool each copy joins under its host's name, so copies the autoscaler adds are named too
            if w.name in seen_entries:
                continue
            seen_entries.add(w.name)
            args = ["worker", "--config", CONFIG_PATH, "--name", w.name]
            if cfg.dispatched:
                args += ["--replica", REPLICA_FROM_HOST]
            out.append(ContainerActor(w.name, "worker", args, HEALTH_PORT, w.replicas,
                                      w.pool_name if cfg.dispatched else ""))
            continue
        args = _args(p)
        ports: tuple = ()
        probe = HEALTH_PORT
        if p.role == "broker":
            args += broker_bind_args(cfg)
            ports = (("xsub", bus_ports(cfg)[0]), ("xpub", bus_ports(cfg)[1]))
        elif p.role == "metrics":
            probe = metrics.port
            ports = (("metrics", metrics.port),)
        elif p.role == "web":
            ports = (("web", cfg.web.port),)
        elif p.role == "serve":
            ports = (("gateway", cfg.gateway.port),)
        out.append(ContainerActor(p.name, p.role, args, probe, ports=ports))
    return out


def _args(p: ActorProcess) -> list[str]:
    """The actor's command line inside its container: ``voxpipe`` is the entry point; the config is mounted."""
    argv = list(p.argv)
    i = argv.index(p.role)
    args = argv[i:]
    args[args.index("--config") + 1] = CONFIG_PATH
    return args


def dump_yaml(data) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


def dump_all(docs: list) -> str:
    import yaml

    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=120)


def write_keys(out: Path, cfg: Config) -> Path:
    """The CURVE keys the containers mount: the config's own when it has CURVE on, else new ones in ``out/keys``."""
    from pipeline.security import create_keys

    if cfg.bus.security.curve:
        return Path(cfg.bus.security.keys_dir)
    keys = out / "keys"
    create_keys(keys, clients=(cfg.bus.security.client,))
    return keys


def write_files(out, files: dict[str, str]) -> list:
    """Write each ``name: text`` of ``files`` into folder ``out``; the paths written, in order."""
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
