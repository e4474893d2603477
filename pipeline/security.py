"""Who may connect to the bus: loopback only, or ZeroMQ CURVE keys.

Without CURVE every endpoint (``bus.xsub``, ``bus.xpub``, a sink's
``snapshot``) must be a loopback address (127.0.0.1, ::1, localhost) or
``ipc://``; config validation refuses anything else with one line. With
``bus.security: {curve: true, keys_dir: DIR}``:

* the broker (and a sink that serves snapshots) binds as a CURVE server with
  the bus's keypair and runs a ZAP authenticator that lets in only the client
  public keys found in ``DIR/authorized/`` (read at start: restart the broker
  after adding a key);
* every actor connects with the keypair named after it (``DIR/<actor>.key_secret``, made by
  ``voxpipe keys DIR --config C``) when there is one, and every other program with the
  client keypair ``bus.security.client`` (default ``client``), plus the bus's public key.

A program without an authorized key cannot complete the handshake: it can
neither publish (inject audio) nor subscribe (read transcripts). Traffic is
encrypted. The key's name (its file name in ``authorized/``) is the connection's
identity: the broker lets each identity publish only its own topics
(:mod:`pipeline.permissions`): a capture's key cannot publish a transcript.

Without CURVE, the bus is loopback (or ``ipc://``) only and **every local user is
trusted**: any program on the machine may publish anything. The broker still tells its
connections apart (:class:`BusAuthenticator` gives each one an identity ``conn:<n>``), so
per-publisher quotas hold, and receivers believe ends of streams and transcripts only when
heartbeats vouch for them (:mod:`pipeline.roster`); but a local program can forge any
actor's messages. Use CURVE where local users are not to be trusted, or an ``ipc://`` bus
in a directory only the pipeline's user can enter (``chmod 700``; not on Windows).

``voxpipe keys DIR [--client NAME ...] [--config C]`` makes the files (pyzmq's
``zmq.auth.create_certificates``)::

    DIR/server.key              the bus's public key (every client needs it)
    DIR/server.key_secret       the bus's secret key (broker, snapshot sinks)
    DIR/<name>.key, .key_secret a client keypair (default name: client; with --config one per actor too)
    DIR/authorized/<name>.key   the client public keys the bus lets in

Copy ``server.key`` and one client keypair to another machine to let it in.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import shutil
from functools import cache
from pathlib import Path

from .errors import ConfigError

SERVER = "server"
AUTHORIZED = "authorized"
LOOPBACK_HOSTS = {"localhost", "::1", "lo"}
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

log = logging.getLogger("voxpipe.security")


# -- endpoints --------------------------------------------------------------------------------
def is_loopback(endpoint: str) -> bool:
    """An endpoint that only this machine can reach: ``ipc``/``inproc``, or TCP on a loopback host."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp" or ":" not in rest:
        return False
    host = rest.rsplit(":", 1)[0]
    # ZeroMQ's "tcp://source;destination:port": both sides must be local
    return all(is_loopback_host(h) for h in host.split(";"))


def is_loopback_host(host: str) -> bool:
    """A host name or address that only this machine reaches (127.x.y.z, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    return host in LOOPBACK_HOSTS or bool(re.fullmatch(r"127(\.\d{1,3}){3}", host))


def secure_config(cfg, check_files: bool = True):
    """Config validation: exposure needs CURVE; CURVE needs its keys. Raises ValueError (one line)."""
    sec = cfg.bus.security
    endpoints = [("bus.xsub", cfg.bus.xsub), ("bus.xpub", cfg.bus.xpub)]
    endpoints += [(f"sinks[{i}].snapshot", s.snapshot) for i, s in enumerate(cfg.sinks) if s.snapshot]
    if not sec.curve:
        for key, ep in endpoints:
            if not is_loopback(ep):
                raise ValueError(f"{key}: {ep!r} is reachable from other machines: set bus.security.curve: true "
                                 "(make keys with: voxpipe keys DIR)")
        return cfg
    sec = dataclasses.replace(sec, keys_dir=str(Path(sec.keys_dir).expanduser().resolve()))
    problem = check_keys(sec, check_files)
    if problem:
        raise ValueError(f"bus.security: {problem}")
    return dataclasses.replace(cfg, bus=dataclasses.replace(cfg.bus, security=sec))


def is_key_name(name: str) -> bool:
    """Can ``name`` name a client keypair (letters, digits, '_', '-'; not the server's)?"""
    return bool(_NAME.match(name)) and name != SERVER


# -- key files ----------------------------------------------------------------------------------
def key_paths(sec) -> dict[str, Path]:
    d = Path(sec.keys_dir).expanduser()
    return {
        "server_public": d / f"{SERVER}.key",
        "server_secret": d / f"{SERVER}.key_secret",
        "client_public": d / f"{sec.client}.key",
        "client_secret": d / f"{sec.client}.key_secret",
        "authorized": d / AUTHORIZED,
    }


def check_keys(sec, check_files: bool = True) -> str | None:
    """What is wrong with the client side of ``sec`` (None: usable)."""
    if not _NAME.match(sec.client) or sec.client == SERVER:
        return f"client {sec.client!r} must be 1-64 letters, digits, '_' or '-' (and not {SERVER!r})"
    if not check_files:
        return None
    p = key_paths(sec)
    for what in ("server_public", "client_secret"):
        if not p[what].is_file():
            return f"no {p[what]} (make the keys with: voxpipe keys {sec.keys_dir})"
    return None


@cache
def _load(path: str) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE key {path}: {exc}") from None


def _require(path: Path, what: str, secret: bool) -> bytes:
    public, secret_key = _load(str(path))
    key = secret_key if secret else public
    if not key:
        raise ConfigError(f"{path} holds no {what}")
    return key


def for_actor(sec, name: str):
    """``sec`` with the keypair named after actor ``name`` when ``KEYS_DIR/<name>.key_secret`` exists."""
    if not sec.enabled or sec.client == name or not _NAME.match(name) or name == SERVER:
        return sec
    if (Path(sec.keys_dir).expanduser() / f"{name}.key_secret").is_file():
        return dataclasses.replace(sec, client=name)
    return sec


def apply_client_keys(sock, sec) -> None:
    """Make ``sock`` a CURVE client with this program's keypair, trusting the bus's public key."""
    p = key_paths(sec)
    sock.curve_publickey = _require(p["client_secret"], "public key", secret=False)
    sock.curve_secretkey = _require(p["client_secret"], "secret key", secret=True)
    sock.curve_serverkey = _require(p["server_public"], "public key", secret=False)


def apply_server_keys(sock, sec) -> None:
    """Make ``sock`` (to be bound) a CURVE server with the bus's keypair."""
    p = key_paths(sec)
    if not p["server_secret"].is_file():
        raise ConfigError(f"bus.security: no {p['server_secret']} (this process serves the bus and needs it)")
    sock.curve_publickey = _require(p["server_secret"], "public key", secret=False)
    sock.curve_secretkey = _require(p["server_secret"], "secret key", secret=True)
    sock.curve_server = True


ZAP_DOMAIN = b"voxpipe"  # set on a socket without CURVE so that its connections get an identity


def _bus_authenticator_class():
    from zmq.auth.thread import ThreadAuthenticator
    from zmq.utils import z85

    class BusAuthenticator(ThreadAuthenticator):
        """ZAP for the bus: CURVE keys are known by their file names; plain connections get ``conn:<n>``.

        Every message a socket receives carries its connection's identity as the ZeroMQ
        ``User-Id`` property (``frame.get("User-Id")``).
        """

        def __init__(self, ctx, names: dict[bytes, str] | None = None):
            super().__init__(ctx, log=logging.getLogger("voxpipe.auth"))
            self.names = dict(names or {})
            self._connections = itertools.count(1)

        def curve_user_id(self, client_public_key: bytes) -> str:
            key = z85.encode(client_public_key)
            return self.names.get(key, key.decode("ascii"))

        def _send_zap_reply(self, request_id, status_code, status_text, user_id="anonymous") -> None:
            if status_code == b"200" and user_id == "anonymous":
                user_id = f"conn:{next(self._connections)}"
            super()._send_zap_reply(request_id, status_code, status_text, user_id)

    return BusAuthenticator


def key_names(folder: Path) -> dict[bytes, str]:
    """z85 public key -> the key's name (its file name), for every key in ``folder``."""
    import zmq.auth

    names = {}
    for path in sorted(folder.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError):
            log.warning("cannot read the key %s: skipped", path)
            continue
        names[public] = path.stem
    return names


def start_authenticator(ctx, sec=None):
    """A ZAP handler on ``ctx`` (stop it before ctx.term()).

    With CURVE (``sec`` enabled) it admits only the keys in ``KEYS_DIR/authorized`` and names
    each connection after its key; without, it admits every plain connection of a socket that
    has ``ZAP_DOMAIN`` set and names it ``conn:<n>``.
    """
    auth_class = _bus_authenticator_class()
    if sec is None or not sec.enabled:
        auth = auth_class(ctx)
        auth.start()
        return auth
    folder = key_paths(sec)["authorized"]
    if not folder.is_dir():
        raise ConfigError(f"bus.security: no folder {folder} of authorized client keys (voxpipe keys {sec.keys_dir})")
    auth = auth_class(ctx, key_names(folder))
    auth.start()
    auth.configure_curve(domain="*", location=str(folder))
    log.info("CURVE on: %d authorized client key(s) in %s", len(auth.names), folder)
    return auth


def create_keys(keys_dir: str | os.PathLike, clients=("client",), force: bool = False,
                authorize: bool = True) -> list[Path]:
    """Write the bus's keypair (unless there is one, or ``force``) and the named client keypairs."""
    import zmq.auth

    for name in clients:
        if not _NAME.match(name) or name == SERVER:
            raise ConfigError(f"client name {name!r} must be 1-64 letters, digits, '_' or '-' (and not {SERVER!r})")
    d = Path(keys_dir).expanduser().resolve()
    (d / AUTHORIZED).mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    written = []
    for name in [SERVER, *clients]:
        public, secret = d / f"{name}.key", d / f"{name}.key_secret"
        if force or not secret.exists():
            zmq.auth.create_certificates(str(d), name)
            os.chmod(secret, 0o600)
            written += [public, secret]
        if name != SERVER and authorize:
            target = d / AUTHORIZED / f"{name}.key"
            shutil.copyfile(public, target)
            written.append(target)
    return written
