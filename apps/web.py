"""``voxpipe web``: the browser page, and with no config the whole pipeline behind it.

* ``voxpipe web --config C`` (or ``--xsub``/``--xpub``): the page as one actor on that bus
  (:mod:`workers.web`), as ``voxpipe up`` starts it.
* ``voxpipe web [--model M --lan L --min-chunk-size S --backend B --host H --port P ...]``
  with neither: one command for the whole pipeline, as the fork's ``fastrtc_server.py`` and
  WhisperLiveKit's ``wlk`` are: a broker on a private bus (two free local ports), the Silero
  VAD, one worker named ``asr`` with those settings, and the page. The flags are
  whisper_online.py's (``add_shared_args``, in either spelling); ``--vac`` is what the
  pipeline always does (its VAD), ``--vac-chunk-size``, ``--vad`` and ``--warmup-file`` are
  accepted and have nothing to change (the worker always warms up). The config is built
  through the one config path (overrides, validated once: a bad value is one line and exit
  3, nothing started), written to a temporary file, and run like ``voxpipe up``
  (:func:`apps.launch.run_processes`): Ctrl-C stops it in order.

Binding beyond loopback (``--host 0.0.0.0``) needs ``--token`` or ``VOXPIPE_WEB_TOKEN``,
with or without a config.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.errors import UsageError

log = logging.getLogger("voxpipe.web.launch")

WORKER = "asr"
#: flags that describe the pipeline's worker: (dest, the worker config key)
WORKER_FLAGS = (("backend", "backend"), ("model", "model"), ("model_dir", "model_dir"),
                ("model_cache_dir", "cache_dir"), ("lan", "language"), ("task", "task"),
                ("min_chunk_size", "min_chunk_size"), ("buffer_trimming", "buffer_trimming"),
                ("buffer_trimming_sec", "buffer_trimming_sec"))


def register(sub) -> None:
    from workers import web as actor

    from .simulate import add_model_arguments

    p = actor.register(sub)
    g = p.add_argument_group(
        "the whole pipeline (without --config/--xsub/--xpub: broker, VAD, one worker and the page)")
    add_model_arguments(g, defaults=False)
    g.add_argument("--vac", action="store_true", help="accepted: the pipeline always runs its VAD before the worker")
    g.add_argument("--vac-chunk-size", type=float, default=None, help=argparse.SUPPRESS)
    g.add_argument("--vad", action="store_true", help="accepted: speech is gated by the pipeline's VAD")
    g.add_argument("--warmup-file", default=None, metavar="WAV",
                   help="accepted: the worker always warms up before it reports ready")
    g.add_argument("--stop-timeout", type=float, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def pipeline_flags(args) -> list[str]:
    """The whole-pipeline flags given on this command line (as typed, for messages)."""
    given = [f"--{dest.replace('_', '-')}" for dest, _ in WORKER_FLAGS if getattr(args, dest, None) is not None]
    if args.option:
        given.append("--option")
    return given


def run(args) -> int:
    from workers import web as actor

    if args.config or args.xsub or args.xpub:
        given = pipeline_flags(args)
        if given:
            raise UsageError(f"{', '.join(given)}: these start a whole pipeline and apply only without "
                             "--config/--xsub/--xpub; with a config, set them in its workers[]")
        return actor.run(args)
    return run_pipeline(args)


def pipeline_config(args):
    """The validated config of the whole pipeline these flags describe, on a private bus."""
    from asr_core.registry import backend_class
    from pipeline.config import ConfigError, Override, load_config
    from pipeline.derived_config import private_bus
    from pipeline.security import is_loopback_host

    from .simulate import parse_options

    worker = {key: getattr(args, dest) for dest, key in WORKER_FLAGS}
    try:
        worker["options"] = parse_options(args.option) or None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    token = args.token if args.token is not None else (os.environ.get("VOXPIPE_WEB_TOKEN") or None)
    web = {"enabled": True, "name": args.name, "host": args.host, "port": args.port, "token": token,
           "max_sessions": args.max_sessions}
    if args.host and not is_loopback_host(args.host) and not token:
        raise ConfigError(f"--host {args.host} serves the page beyond this machine: give --token SECRET "
                          "(or set VOXPIPE_WEB_TOKEN); the page asks for it before it streams")
    overrides = [Override("vad", {"enabled": True}),
                 Override("workers", worker, name=WORKER, new=True),
                 Override("web", web)]
    try:
        cfg = load_config(None, overrides=overrides)
    except ConfigError as exc:  # name the command line, not a file
        raise ConfigError(str(exc).replace("<defaults>: ", "the command line: ", 1)) from None
    backend_class(cfg.workers[0].backend)  # a backend that is not installed: one line now, not a dead worker
    return dataclasses.replace(cfg, bus=private_bus(cfg.bus))


def run_pipeline(args) -> int:
    from pipeline.config import load_config
    from pipeline.derived_config import write_config

    from .launch import STOP_TIMEOUT, run_processes
    from .plan import ActorProcess, actor_processes

    cfg = pipeline_config(args)
    try:
        import fastrtc  # noqa: F401
        import gradio  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"{exc.name} is not installed: pip install 'voxpipe[web]'") from None
    if args.vad:
        log.info("--vad: speech reaches the worker through the pipeline's own VAD")
    tmp = Path(tempfile.mkdtemp(prefix="voxpipe-web-"))
    try:
        cfg = load_config(write_config(cfg, tmp / "web.yaml"))
        extra = [a for url in args.ice_server for a in ("--ice-server", url)]
        extra += [a for addr in args.ice_address for a in ("--ice-address", addr)]
        if args.log_level:
            extra += ["--log-level", args.log_level]
        procs = [ActorProcess(p.name, p.role, p.argv + tuple(extra)) if p.role == "web" else p
                 for p in actor_processes(cfg)]
        w = cfg.workers[0]
        log.info("pipeline: broker, VAD, worker %s (%s %s, %s), page on %s:%d; bus %s / %s (voxpipe listen "
                 "--xpub %s transcript.)", w.name, w.backend, w.model_dir or w.model, w.language, cfg.web.host,
                 cfg.web.port, cfg.bus.xsub, cfg.bus.xpub, cfg.bus.xpub)
        return run_processes(procs, args.stop_timeout or STOP_TIMEOUT, cfg.restart, cfg.bus)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
