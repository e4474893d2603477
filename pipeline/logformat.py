"""Log lines for people or for log collectors: ``--log-format text|json``.

``json`` writes one JSON object per line with ``time`` (UTC, ISO 8601 with milliseconds),
``level``, ``actor``, ``logger``, ``message``, and ``stream`` where the line is about one stream
(and ``exc`` with the traceback when there is one). The stream comes from, in order: an
``extra={"stream": ...}`` on the call, or the stream of the message the actor is handling
(:func:`stream_context`, set by the actor base around every message and by a worker around each
decode result). The actor is this process's actor (:func:`set_actor`), else the last part of a
``voxpipe.<role>.<name>`` logger name.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"

_stream: contextvars.ContextVar[str] = contextvars.ContextVar("voxpipe_log_stream", default="")
_actor = {"name": ""}


def set_actor(name: str) -> None:
    _actor["name"] = name


@contextlib.contextmanager
def stream_context(stream: str):
    """Log lines written inside are about ``stream``."""
    token = _stream.set(stream or "")
    try:
        yield
    finally:
        _stream.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        parts = record.name.split(".")
        actor = _actor["name"] or (parts[2] if len(parts) >= 3 and parts[0] == "voxpipe" else "")
        out = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "actor": actor,
            "logger": record.name,
            "message": record.getMessage(),
        }
        stream = getattr(record, "stream", None) or _stream.get()
        if stream:
            out["stream"] = stream
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def formatter(fmt: str = "text") -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT, datefmt="%H:%M:%S")
    raise ValueError(f"unknown log format {fmt!r} (use {' or '.join(FORMATS)})")
