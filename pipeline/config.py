"""Pipeline configuration: YAML (and command-line overrides) loaded once into typed, frozen structures.

The one path every program takes (``voxpipe up``, each actor, ``transcribe``, the bench):

1. read the YAML and substitute ``${VAR}`` / ``${VAR:-default}`` from the environment;
2. apply command-line overrides (:class:`Override`) to that raw mapping;
3. build the typed sections (:mod:`pipeline.config_schema`): unknown keys and wrong types
   are errors;
4. validate once: each section's own checks, then the rules across sections (names,
   endpoints, ports, files, security).

Any problem is one :class:`ConfigError` line naming the file and the key, raised before any
process starts. Relative file paths are resolved against the current directory at load time.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config_schema import (  # noqa: F401 - the sections are part of this module's API
    LIST_ITEMS,
    WORKER_TASKS,
    BrokerConfig,
    BusConfig,
    Config,
    DispatcherConfig,
    GatewayConfig,
    HealthConfig,
    MetricsConfig,
    RestartConfig,
    SectionError,
    SecurityConfig,
    SinkConfig,
    SourceConfig,
    VADConfig,
    WebConfig,
    WorkerConfig,
)
from .errors import ConfigError
from .yaml_typed import build, expand_env, expand_tree  # noqa: F401 (expand_env: part of this module's API)

__all__ = ["ConfigError", "Config", "Override", "load_config", "BusConfig", "WorkerConfig", "SourceConfig",
           "SinkConfig", "VADConfig", "WebConfig", "GatewayConfig", "BrokerConfig", "SecurityConfig", "HealthConfig",
           "MetricsConfig", "DispatcherConfig", "RestartConfig"]

# the mapping sections; LIST_ITEMS has the list ones
SECTIONS = ("bus", "broker", "vad", "web", "gateway", "health", "metrics", "dispatcher", "restart")


@dataclass(frozen=True)
class Override:
    """Command-line values for one section, applied to the raw YAML before validation.

    ``values`` with ``None`` are not given. For a list section (sources, workers, sinks),
    ``name`` picks the item (None: the only one, or the first with ``first=True``); when no
    item has that name, a new one is added if ``new`` (e.g. a sink given its own output on
    the command line, or any actor started without a config), else it is an error.
    """

    section: str
    values: dict = field(default_factory=dict)
    name: str | None = None
    default_name: str = ""
    new: bool = False
    first: bool = False

    def given(self) -> dict:
        return {k: v for k, v in self.values.items() if v is not None}


def apply_overrides(data: dict, overrides: Sequence[Override], file: str) -> dict:
    """``data`` (raw YAML) with ``overrides`` applied; list items are found (or added) by name."""
    data = dict(data)
    for ov in overrides:
        values = ov.given()
        if ov.section in SECTIONS:
            section = data.get(ov.section) or {}
            if not isinstance(section, dict):
                raise ConfigError(f"{file}: {ov.section}: expected a mapping")
            merged = dict(section)
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    value = {**merged[key], **value}
                merged[key] = value
            data[ov.section] = merged
            continue
        if ov.section not in LIST_ITEMS:
            raise ValueError(f"unknown config section {ov.section!r}")
        items = data.get(ov.section) or []
        if not isinstance(items, list):
            raise ConfigError(f"{file}: {ov.section}: expected a list")
        items = [dict(i) if isinstance(i, dict) else i for i in items]
        index = _pick(items, ov, file)
        if index is None:
            items.append({"name": ov.name or ov.default_name, **values})
        else:
            items[index] = {**items[index], **values}
        data[ov.section] = items
    return data


def _pick(items: list, ov: Override, file: str) -> int | None:
    what = ov.section[:-1]
    named = [i for i, item in enumerate(items) if isinstance(item, dict)
             and item.get("name", LIST_ITEMS[ov.section].name) == ov.name]
    if ov.name is not None:
        if named:
            return named[0]
        if ov.new or not items:
            return None
        have = ", ".join(str(i.get("name")) for i in items if isinstance(i, dict))
        raise ConfigError(f"{file}: no {what} named {ov.name!r} (have: {have or 'none'})")
    if not items or ov.new:
        return None
    if len(items) > 1 and not ov.first:
        have = ", ".join(str(i.get("name")) for i in items if isinstance(i, dict))
        raise ConfigError(f"{file}: say which {what} with --name (have: {have})")
    return 0


# -- loading -----------------------------------------------------------------------------------
def read_yaml(path: str | os.PathLike | None) -> tuple[dict, str]:
    """The raw, ``${VAR}``-expanded mapping of a config file ({} for none) and its name for messages."""
    if path is None:
        return {}, "<defaults>"
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}: invalid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{file}: top level: expected a mapping, got {type(data).__name__}")
    return expand_tree(data or {}, "", ConfigError), file


def load_config(path: str | os.PathLike | None, check_files: bool = True,
                overrides: Sequence[Override] = (), check_backends: bool = False) -> Config:
    """Read, expand, override, type-check and validate a YAML config (None: the defaults).

    ``check_backends``: also load each worker's backend class (not its model) and check its
    ``options`` against what the backend takes (``voxpipe up``, ``transcribe`` and the worker do).
    """
    data, file = read_yaml(path)
    data = apply_overrides(data, overrides, file)
    cfg = build(Config, data, "", file, ConfigError, lists={"Config": LIST_ITEMS})
    if path is not None:
        cfg = dataclasses.replace(cfg, path=str(Path(file).resolve()))
    cfg = validate(cfg, file, check_files)
    if check_backends:
        check_backend_options(cfg, file)
    return cfg


def check_backend_options(cfg: Config, file: str) -> None:
    """Each worker's backend can be loaded and takes its ``options`` (one ConfigError line otherwise)."""
    from asr_core.base import BackendError
    from asr_core.registry import backend_class

    for i, w in enumerate(cfg.workers):
        try:
            cls = backend_class(w.backend)
        except BackendError as exc:
            raise ConfigError(f"{file}: workers[{i}].backend: {exc}") from None
        for key, problem in cls.check_options(dict(w.options)):
            raise ConfigError(f"{file}: workers[{i}].options.{key}: {problem}")


def _resolve_path(p: str) -> str:
    return str(Path(p).expanduser().resolve())


def _check_section(obj, where: str, file: str) -> None:
    try:
        obj.check()
    except SectionError as exc:
        key = f"{where}.{exc.key}" if exc.key else where
        raise ConfigError(f"{file}: {key}: {exc.message}") from None


def validate(cfg: Config, file: str, check_files: bool = True) -> Config:
    """Every section's checks, then the rules across sections; returns the config with file paths made absolute."""

    def fail(msg: str):
        raise ConfigError(f"{file}: {msg}")

    for key in ("bus", "broker", "vad", "dispatcher", "restart"):
        _check_section(getattr(cfg, key), key, file)
    if cfg.web.enabled:
        _check_section(cfg.web, "web", file)
    for key in ("health", "metrics"):
        if getattr(cfg, key).enabled:
            _check_section(getattr(cfg, key), key, file)
    for section in LIST_ITEMS:
        for i, item in enumerate(getattr(cfg, section)):
            _check_section(item, f"{section}[{i}]", file)
    names = cfg.actor_names()
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        fail(f"actor name {sorted(dup)[0]!r} is used twice")
    ports = {_port(cfg.bus.xsub): "bus.xsub", _port(cfg.bus.xpub): "bus.xpub"}
    if cfg.web.enabled and cfg.web.port in ports:
        fail(f"web.port {cfg.web.port} clashes with {ports[cfg.web.port]}")
    _check_http_ports(cfg, ports, fail)
    if cfg.gateway.enabled:
        _check_section(cfg.gateway, "gateway", file)
        taken = dict(ports)
        for on, key, port in ((cfg.web.enabled, "web.port", cfg.web.port),
                              (cfg.metrics.enabled, "metrics.port", cfg.metrics.port)):
            if on:
                taken.setdefault(port, key)
        for name in cfg.actor_names():
            health = cfg.health.port_for(name, cfg.actor_names())
            if health is not None:
                taken.setdefault(health, f"the health port of {name!r}")
        for key, gport in (("port", cfg.gateway.port), ("tcp_port", cfg.gateway.tcp_port)):
            if gport and gport in taken:
                fail(f"gateway.{key} {gport} clashes with {taken[gport]}")
            if gport:
                taken[gport] = f"gateway.{key}"
        cfg = dataclasses.replace(cfg, gateway=cfg.gateway.resolved(cfg.workers))
    sources = []
    streams: set[str] = set()
    for i, s in enumerate(cfg.sources):
        if s.stream_id in streams:
            fail(f"sources[{i}]: stream id {s.stream_id!r} is used by two sources")
        streams.add(s.stream_id)
        sources.append(_resolve_input(s, f"sources[{i}]", check_files, fail))
    workers = []
    for i, w in enumerate(cfg.workers):
        if w.input == "speech" and not cfg.vad.enabled:
            fail(f"workers[{i}].input is 'speech' but the VAD is disabled (use input: audio)")
        if w.model_dir:
            if check_files and not Path(w.model_dir).expanduser().exists():
                fail(f"workers[{i}].model_dir: {w.model_dir!r} does not exist")
            w = dataclasses.replace(w, model_dir=_resolve_path(w.model_dir))
        workers.append(w)
    _check_pools(cfg, fail)
    worker_names = {w.name for w in workers} | set(cfg.pools())
    sinks = []
    outputs: set[str] = set()
    for i, s in enumerate(cfg.sinks):
        kind, _, arg = s.output.partition(":")
        if kind != "console":
            problem = output_problem(arg) if check_files else None
            if problem:
                fail(f"sinks[{i}].output: {problem}")
            s = dataclasses.replace(s, output=f"{kind}:{_resolve_path(arg)}")
            if s.output in outputs:
                fail(f"sinks[{i}].output: {arg!r} is written by two sinks")
            outputs.add(s.output)
        unknown = [w for w in s.workers if worker_names and w not in worker_names]
        if unknown:
            fail(f"sinks[{i}].workers: no worker named {unknown[0]!r}")
        if s.snapshot is not None:
            sp = _port(s.snapshot)
            clash = "a bus endpoint" if s.snapshot in (cfg.bus.xsub, cfg.bus.xpub) else None
            if sp is not None:
                clash = clash or ports.get(sp) or ("web.port" if cfg.web.enabled and sp == cfg.web.port else None)
                ports[sp] = f"sinks[{i}].snapshot"
            if clash:
                fail(f"sinks[{i}].snapshot: {s.snapshot!r} clashes with {clash}")
        sinks.append(s)
    from .security import secure_config

    try:  # endpoints beyond loopback need CURVE; with CURVE on, the keys must be there
        cfg = secure_config(dataclasses.replace(cfg, sinks=tuple(sinks)), check_files)
    except ValueError as exc:
        fail(str(exc))
    return dataclasses.replace(cfg, sources=tuple(sources), workers=tuple(workers))


def _check_http_ports(cfg: Config, ports: dict, fail) -> None:
    """The web page, the metrics endpoint and the health endpoints each need a port of their own."""
    http: dict[int, str] = {}
    if cfg.web.enabled:
        http[cfg.web.port] = "web.port"
    if cfg.metrics.enabled:
        http.setdefault(cfg.metrics.port, "metrics.port")
        if http[cfg.metrics.port] != "metrics.port":
            fail(f"metrics.port {cfg.metrics.port} clashes with {http[cfg.metrics.port]}")
    if cfg.health.enabled and cfg.health.consecutive:
        names = cfg.actor_names()
        for name in names:
            if name == cfg.metrics.name and cfg.metrics.enabled:
                continue  # the metrics actor answers /healthz and /readyz on its metrics port
            port = cfg.health.port_for(name, names)
            if port is None:
                continue
            if port in http or port in ports:
                fail(f"health: port {port} of actor {name!r} clashes with {http.get(port) or ports.get(port)}")
            http[port] = f"the health port of {name!r}"
    for port, what in http.items():
        if port in ports:
            fail(f"{what} ({port}) clashes with {ports[port]}")


def _check_pools(cfg: Config, fail) -> None:
    """Workers of one pool take the same input; several workers share a pool only through the dispatcher."""
    first: dict[str, tuple[int, str]] = {}
    for i, w in enumerate(cfg.workers):
        pool = w.pool_name
        if pool in first and first[pool][1] != w.input:
            fail(f"workers[{i}].input: pool {pool!r} mixes input {first[pool][1]!r} and {w.input!r}")
        first.setdefault(pool, (i, w.input))
    crowded = [p for p, names in cfg.pools().items() if len(names) > 1]
    if crowded and not cfg.dispatched:
        fail(f"dispatcher.enabled is false but pool {crowded[0]!r} has {len(cfg.pools()[crowded[0]])} workers "
             "(each would transcribe every stream on one topic): enable the dispatcher")


def output_problem(path: str) -> str | None:
    """Why an output file could not be written at ``path`` (None: it can, as far as can be told now)."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        return f"{str(p)!r} is a folder"
    if p.exists():
        return None if os.access(p, os.W_OK) else f"cannot write {str(p)!r} (read-only?)"
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{str(parent)!r} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write into {str(parent)!r} (read-only?)"
    return None


def bound_endpoints(cfg: Config) -> list[tuple[str, str]]:
    """(config key, endpoint) of everything an actor of ``cfg`` binds on this host: the bus, snapshots,
    the web page, the gateway, the metrics endpoint and the health listeners.

    ``voxpipe up`` and ``voxpipe transcribe`` check these are free before starting anything.
    """
    out = [("bus.xsub", cfg.bus.xsub), ("bus.xpub", cfg.bus.xpub)]
    out += [(f"sinks[{i}].snapshot", s.snapshot) for i, s in enumerate(cfg.sinks) if s.snapshot]
    if cfg.web.enabled and cfg.web.port:
        out.append(("web.port", _endpoint(f"{cfg.web.host}:{cfg.web.port}")))
    if cfg.gateway.enabled:
        out.append(("gateway.port", _endpoint(f"{cfg.gateway.host}:{cfg.gateway.port}")))
        if cfg.gateway.tcp_port:
            out.append(("gateway.tcp_port", _endpoint(f"{cfg.gateway.host}:{cfg.gateway.tcp_port}")))
    if cfg.metrics.enabled:
        out.append(("metrics.port", _endpoint(f"{cfg.metrics.host}:{cfg.metrics.port}")))
    if cfg.health.enabled:  # one listener per actor of the plan (all on one port only across hosts)
        names = cfg.actor_names()
        for name in names:
            if name == cfg.metrics.name and cfg.metrics.enabled:
                continue  # it answers on its metrics port
            port = cfg.health.port_for(name, names)
            if port and (cfg.health.consecutive or name in cfg.health.ports):
                out.append((f"health ({name})", _endpoint(f"{cfg.health.host}:{port}")))
    return out


def _endpoint(value) -> str:
    """A port number or ``host:port`` as a TCP endpoint (an endpoint as it is)."""
    if isinstance(value, int):
        return f"tcp://127.0.0.1:{value}"
    text = str(value)
    return text if "://" in text else f"tcp://{text}"


def _resolve_input(s: SourceConfig, where: str, check_files: bool, fail) -> SourceConfig:
    """``auto:PATH`` decided here (so every actor sees the same mic or file), file paths made absolute."""
    kind, _, arg = s.input.partition(":")
    if kind == "auto":
        kind, arg = ("mic", "") if _has_microphone() else ("file", arg)
        s = dataclasses.replace(s, input=f"{kind}:{arg}" if arg else kind)
    if kind == "file":
        p = Path(arg).expanduser()
        if check_files and not (p.is_file() and os.access(p, os.R_OK)):
            fail(f"{where}.input: cannot read audio file {arg!r}")
        s = dataclasses.replace(s, input=f"file:{_resolve_path(arg)}")
    return s


def _has_microphone() -> bool:
    """sounddevice is installed and sees an input device (for ``input: auto:PATH``)."""
    try:
        import sounddevice

        return any(d.get("max_input_channels", 0) > 0 for d in sounddevice.query_devices())
    except Exception:  # noqa: BLE001 - not installed, no PortAudio, no devices
        return False


def _port(endpoint: str) -> int | None:
    mt = re.match(r"^tcp://.*:(\d+)$", endpoint)
    return int(mt.group(1)) if mt else None

