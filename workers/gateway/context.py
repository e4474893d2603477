"""What every endpoint needs: the hub, the settings, and the rules shared by all protocols.

* :meth:`Gateway.pool_for`: which pool serves a request: the ``model`` a client
  names if it is one of the gateway's pools, else the pool configured for its
  ``language`` (``gateway.language_pools``), else ``gateway.pool``; for
  translations, ``gateway.translate_pool``.
* :meth:`Gateway.admission`: the one order of checks before a client is
  served: its key, then a worker of its pool being up, then room
  (``max_connections``). Each refusal is counted (``reject_<reason>`` in the
  heartbeat) and told to the client in its own API's shape by the caller.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from pipeline.config import GatewayConfig

from .access import key_ok, presented_key
from .hub import GatewayHub, WorkerSeen

# why a client is turned away -> HTTP status (the same for every protocol; bodies differ)
REFUSALS = {"auth": 401, "options": 400, "no_pool": 400, "no_worker": 503, "busy": 429, "closing": 503}


@dataclass(frozen=True)
class Admitted:
    pool: str
    worker: WorkerSeen
    subprotocol: str | None
    request_id: str
    started: float  # monotonic


class Refused(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.status = REFUSALS[reason]
        self.message = message


class Gateway:
    def __init__(self, hub: GatewayHub, cfg: GatewayConfig):
        self.hub = hub
        self.cfg = cfg

    def pool_for(self, model: str | None = None, language: str | None = None, translate: bool = False) -> str | None:
        if translate:
            return self.cfg.translate_pool
        if model and model in self.cfg.pools():
            return model
        if language and language in self.cfg.language_pools:
            return self.cfg.language_pools[language]
        return self.cfg.pool

    def check_key(self, headers, subprotocols=()) -> str | None:
        """The subprotocol to accept; raises :class:`Refused` (counted) for a missing or wrong key."""
        key, proto = presented_key(headers, subprotocols)
        if not key_ok(self.cfg.keys, key):
            self.hub.reject("auth")
            raise Refused("auth", "Invalid credentials." if key else "No API key given.")
        return proto

    def admit(self, model: str | None = None, language: str | None = None, translate: bool = False,
              subprotocol: str | None = None) -> Admitted:
        """Admit a client whose key was checked (then :meth:`GatewayHub.release` it) or raise :class:`Refused`."""
        try:
            pool = self.pool_for(model, language, translate)
            if pool is None:
                raise Refused("no_pool", "no translation pool is configured (gateway.translate_pool, or a worker "
                                         "with task: translate)")
            worker = self.hub.pool_state(pool)
            if worker is None:
                raise Refused("no_worker", f"no worker of pool {pool!r} is up")
            why = self.hub.admit()
            if why == "busy":
                raise Refused("busy", f"too many connections (max_connections {self.cfg.max_connections})")
            if why == "closing":
                raise Refused("closing", "the server is shutting down")
        except Refused as exc:
            self.hub.reject(exc.reason)
            raise
        return Admitted(pool, worker, subprotocol, str(uuid.uuid4()), time.monotonic())

    def admission(self, headers, subprotocols=(), model: str | None = None, language: str | None = None,
                  translate: bool = False) -> Admitted:
        """:meth:`check_key`, then :meth:`admit`."""
        proto = self.check_key(headers, subprotocols)
        return self.admit(model, language, translate, proto)
