"""Who may connect to the bus: loopback only, or ZeroMQ CURVE keys.

Without CURVE every endpoint (``bus.xsub``, ``bus.xpub``, a sink's
``snapshot``) must be a loopback address (127.0.0.1, ::1, localhost) or
``ipc://``; config validation refuses anything else with one line. With
``bus.security: {curve: true, keys_dir: DIR}``:

* the broker (and a sink that serves snapshots) binds as a CURVE server with
  the bus's keypair and runs a ZAP authenticator that lets in only the client
  public keys found in ``DIR/authorized/`` (read at start: restart the broker
  after adding a key);
* every actor and client program connects with its own client keypair
  (``bus.security.client``, default ``client``) and the bus's public key.

A program without an authorized key cannot complete the handshake: it can
neither publish (inject audio) nor subscribe (read transcripts). Traffic is
encrypted.

``voxpipe keys DIR [--client NAME ...]`` makes the files (pyzmq's
``zmq.auth.create_certificates``)::

    DIR/server.key              the bus's public key (every client needs it)
    DIR/server.key_secret       the bus's secret key (broker, snapshot sinks)
    DIR/<name>.key, .key_secret a client keypair (default name: client)
    DIR/authorized/<name>.key   the client public keys the bus lets in

Copy ``server.key`` and one client keypair to another machine to let it in.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import sys
from functools import cache
from pathlib import Path

from .errors import ConfigError, RuntimeFailure, UsageError

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


def start_authenticator(ctx, sec):
    """A ZAP handler on ``ctx`` admitting only the keys in ``KEYS_DIR/authorized`` (stop it before ctx.term())."""
    from zmq.auth.thread import ThreadAuthenticator

    folder = key_paths(sec)["authorized"]
    if not folder.is_dir():
        raise ConfigError(f"bus.security: no folder {folder} of authorized client keys (voxpipe keys {sec.keys_dir})")
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("voxpipe.auth"))
    auth.start()
    auth.configure_curve(domain="*", location=str(folder))
    n = len(list(folder.glob("*.key")))
    log.info("CURVE on: %d authorized client key(s) in %s", n, folder)
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


# -- command line ---------------------------------------------------------------------------------
def register(sub) -> None:
    p = sub.add_parser("keys", help="make CURVE keys for the bus (server keypair, client keypairs)")
    p.add_argument("dir", help="folder for the keys (bus.security.keys_dir)")
    p.add_argument("--client", action="append", default=None, metavar="NAME",
                   help="client keypair to make and authorize (repeatable; default: client)")
    p.add_argument("--no-authorize", action="store_true", help="do not add the client keys to authorized/")
    p.add_argument("--force", action="store_true",
                   help="replace existing keypairs (every client must get the new server.key)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        files = create_keys(args.dir, args.client or ["client"], force=args.force, authorize=not args.no_authorize)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise RuntimeFailure(f"cannot write keys into {args.dir}: {exc}") from None
    for f in files:
        print(f)
    if not files:
        print(f"voxpipe keys: the keys in {args.dir} exist already (--force replaces them)", file=sys.stderr)
    return 0
