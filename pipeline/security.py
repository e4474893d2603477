"""ZeroMQ CURVE keys for the bus (placeholder until CURVE support lands)."""

from __future__ import annotations

from .config import ConfigError


def apply_client_keys(sock, security) -> None:
    raise ConfigError("bus.security.curve is not supported yet")


def apply_server_keys(sock, security) -> None:
    raise ConfigError("bus.security.curve is not supported yet")
