"""``voxpipe keys DIR``: the CURVE keys of a bus (:mod:`pipeline.security` makes them).

``--config C`` also makes one keypair per actor of that pipeline, named after it, so that
the broker lets each actor publish only its own topics (:mod:`pipeline.permissions`).
"""

from __future__ import annotations

import sys

from pipeline.errors import ConfigError, RuntimeFailure, UsageError
from pipeline.security import create_keys, is_key_name


def register(sub) -> None:
    p = sub.add_parser("keys", help="make CURVE keys for the bus (server keypair, client keypairs)")
    p.add_argument("dir", help="folder for the keys (bus.security.keys_dir)")
    p.add_argument("--client", action="append", default=None, metavar="NAME",
                   help="client keypair to make and authorize (repeatable; default: client)")
    p.add_argument("--config", "-c", default=None,
                   help="also make one keypair per actor of this pipeline config (each may publish only its "
                        "own topics)")
    p.add_argument("--no-authorize", action="store_true", help="do not add the client keys to authorized/")
    p.add_argument("--force", action="store_true",
                   help="replace existing keypairs (every client must get the new server.key)")
    p.set_defaults(func=run)


def run(args) -> int:
    clients = list(args.client or ["client"])
    if args.config:
        from pipeline.config import load_config

        cfg = load_config(args.config, check_files=False)
        for name in cfg.actor_names():
            if name == cfg.broker.name or name in clients:
                continue
            if is_key_name(name):
                clients.append(name)
            else:
                print(f"voxpipe keys: actor {name!r} cannot have a key of its own (a key name is letters, digits, "
                      f"'_' and '-'); it will use the client key", file=sys.stderr)
    try:
        files = create_keys(args.dir, clients, force=args.force, authorize=not args.no_authorize)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise RuntimeFailure(f"cannot write keys into {args.dir}: {exc}") from None
    for f in files:
        print(f)
    if not files:
        print(f"voxpipe keys: the keys in {args.dir} exist already (--force replaces them)", file=sys.stderr)
    return 0
