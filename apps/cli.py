"""The ``voxpipe`` command line: one console script, one subcommand per module.

Each module listed in :data:`COMMANDS` exposes ``register(subparsers)``,
which adds its subcommand and sets ``func`` (called with the parsed args,
returning the exit code). Modules are imported only to build the parser, and
heavy imports (models, numpy-heavy code) stay inside each ``func``.
"""

from __future__ import annotations

from asr_core.blas import one_blas_thread

one_blas_thread()  # before numpy is imported: less CPU, and the same numerics in every process (asr_core/blas.py)

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

# subcommand modules, in the order they appear in --help
COMMANDS = [
    "apps.simulate",
    "asr_core.convert_ct2",
    "workers.broker",
    "workers.asr_worker",
    "workers.capture",
    "workers.vad_actor",
    "workers.dispatcher",
    "apps.listen",
    "workers.sink",
    "apps.web",  # workers.web's actor, and the whole pipeline behind it when no config is given
    "workers.gateway.actor",
    "apps.launch",
    "apps.transcribe",
    "apps.export",
    "workers.metrics",
    "apps.status",
    "apps.top",
    "apps.restart",
    "apps.keys",
    "apps.bench.cli",
]


def setup_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Log to stderr at ``level`` in ``fmt``: ``text`` (for people) or ``json`` (one object per line).

    Defaults: ``VOXPIPE_LOG_LEVEL`` / ``VOXPIPE_LOG_FORMAT``, else INFO and text.
    """
    from pipeline.logformat import FORMATS, formatter

    level = (level or os.environ.get("VOXPIPE_LOG_LEVEL") or "INFO").upper()
    fmt = (fmt or os.environ.get("VOXPIPE_LOG_FORMAT") or "text").lower()
    fmt = fmt if fmt in FORMATS else "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[handler])
    if fmt == "json":
        logging.captureWarnings(True)  # library warnings become JSON lines too


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxpipe",
        description="Real-time speech-to-text: a multiprocess actor pipeline over ZeroMQ.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import run_command

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_level", None), getattr(args, "log_format", None))
    return run_command(lambda: args.func(args), prog=f"voxpipe {args.command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
