"""The errors a voxpipe command can end with, and the one rule that turns them into exit codes.

Every command (actors, ``up``, ``transcribe``, ``bench``, ...) raises these instead of
printing and returning a code itself; :func:`run_command` (called once, by the command
line's ``main``) prints one line and returns the code:

=====  ============  ===========================================================
code   name          when
=====  ============  ===========================================================
0      OK            done
1      RUNTIME       a failure while running (bus error, an actor died, a write failed)
2      USAGE         bad arguments or input (an unreadable audio file, a bad name)
3      CONFIG        the config is invalid (:class:`ConfigError`); nothing was started
4      MODEL         the backend or its model could not be loaded
130    INTERRUPTED   stopped by SIGINT (Ctrl-C)
143    TERMINATED    stopped by SIGTERM
=====  ============  ===========================================================
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    RUNTIME = 1
    USAGE = 2
    CONFIG = 3
    MODEL = 4
    INTERRUPTED = 130
    TERMINATED = 143

    @classmethod
    def for_signal(cls, signum: int | None) -> ExitCode:
        return cls.INTERRUPTED if signum == signal.SIGINT else cls.TERMINATED


class VoxpipeError(Exception):
    """An error with one line for the user and an exit code."""

    code = ExitCode.RUNTIME
    prefix = ""

    def line(self) -> str:
        return f"{self.prefix}{self}"


class ConfigError(VoxpipeError, ValueError):
    """One line saying what is wrong in a config and where (file and key)."""

    code = ExitCode.CONFIG
    prefix = "config error: "


class UsageError(VoxpipeError, ValueError):
    """Bad arguments or input given on the command line."""

    code = ExitCode.USAGE


class RuntimeFailure(VoxpipeError, RuntimeError):
    """Something failed while running (an output could not be written, an actor died)."""

    code = ExitCode.RUNTIME


def classify(exc: BaseException) -> tuple[ExitCode, str] | None:
    """The exit code and the line for an exception a command may end with; None for a bug (a traceback)."""
    from asr_core.audio import AudioFileError
    from asr_core.base import BackendError

    if isinstance(exc, VoxpipeError):
        return exc.code, exc.line()
    if isinstance(exc, BackendError):
        return ExitCode.MODEL, str(exc)
    if isinstance(exc, AudioFileError):
        return ExitCode.USAGE, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, ""
    try:
        import zmq
    except ImportError:  # pragma: no cover - pyzmq is a core dependency
        return None
    if isinstance(exc, zmq.ZMQError):
        return ExitCode.RUNTIME, f"bus error: {exc}"
    return None


def run_command(func: Callable[[], int | None], prog: str = "voxpipe") -> int:
    """Run one command; its known errors become one line on stderr and their exit code."""
    try:
        return int(func() or 0)
    except BaseException as exc:  # noqa: BLE001 - SystemExit passes through below
        if isinstance(exc, SystemExit):
            raise
        known = classify(exc)
        if known is None:
            raise
        code, line = known
        if line:
            print(f"{prog}: {line}", file=sys.stderr)
        return int(code)
