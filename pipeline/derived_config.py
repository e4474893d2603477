"""Configs derived from a loaded one and written back to YAML.

Used wherever a pipeline must run on its own private bus or with a changed
source or outputs (``voxpipe transcribe``, tests): take a validated
:class:`~pipeline.config.Config`, change it with :func:`dataclasses.replace`
and the helpers here, write it with :func:`write_config` and start the actors
on that file. The written file is fully expanded (no ``${VAR}`` left) and
its paths are absolute, so it means the same from any directory.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import yaml

from .config import BusConfig, Config


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Config) -> dict:
    """The YAML mapping that loads back into ``cfg`` (without its ``path``)."""
    data = _plain(dataclasses.asdict(cfg))
    data.pop("path", None)
    return data


def write_config(cfg: Config, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# written by voxpipe from %s\n" % (cfg.path or "a config in memory")
    text += yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def private_bus(bus: BusConfig, host: str = "127.0.0.1") -> BusConfig:
    """``bus`` with its XSUB/XPUB moved to two free local ports."""
    xsub = free_tcp_port(host)
    xpub = free_tcp_port(host)
    while xpub == xsub:
        xpub = free_tcp_port(host)
    return dataclasses.replace(bus, xsub=f"tcp://{host}:{xsub}", xpub=f"tcp://{host}:{xpub}")


def with_private_bus(cfg: Config) -> Config:
    return dataclasses.replace(cfg, bus=private_bus(cfg.bus))
