"""The console output of a sink: transcripts on a terminal, or plain lines.

On a terminal (``tty``), committed text runs on along the current line and
the current partial hypothesis is shown, dimmed, after it; the line is
redrawn in place (``\\r`` + erase) as partials change and wrapped at the
terminal width. When several (worker, stream) pairs are shown, every commit
is its own line labelled ``[worker/stream]``, and the latest partial, with
its label, stays on the live bottom line.

Anywhere else (a pipe, a file, honcho's output), each commit is printed as
one plain line (labelled when there are several pairs), flushed at once;
partials are not shown. Errors go to stderr.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

from pipeline import messages as m

DIM = "\x1b[2m"
RESET = "\x1b[0m"
CLEAR_LINE = "\r\x1b[K"


class ConsoleOutput:
    kind = "console"

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, tty: bool | None = None,
                 width: int | None = None, partials: bool = True, several: bool = False):
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        if tty is None:
            try:
                tty = self.out.isatty()
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self._width = width
        self.show_partials = partials and tty
        self.several = several
        self.written = 0
        self.pairs: set[tuple[str, str]] = set()
        self.line = ""  # committed text on the live line (single-pair tty mode)
        self.partial_text = ""
        self.partial_label = ""

    def files(self) -> list[str]:
        return []

    @property
    def width(self) -> int:
        w = self._width or shutil.get_terminal_size((80, 24)).columns
        return max(20, w - 1)

    def _labelled(self, worker: str, stream: str) -> bool:
        self.pairs.add((worker, stream))
        return self.several or len(self.pairs) > 1

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    # -- live line (tty only) ------------------------------------------------------------------
    def _live(self) -> str:
        """What the bottom line shows now: committed text, then the partial, cut to the width."""
        if self.several or len(self.pairs) > 1:
            head = f"[{self.partial_label}] " if self.partial_text else ""
            committed = ""
        else:
            head, committed = "", self.line
        room = self.width - len(head) - len(committed) - (1 if committed else 0)
        tail = self.partial_text
        if len(tail) > room:
            tail = "…" + tail[-(room - 1):] if room > 1 else ""
        text = head + committed
        if tail:
            text += (" " if committed else "") + DIM + tail + RESET
        return text

    def _redraw(self) -> None:
        self._write(CLEAR_LINE + self._live())

    # -- output calls -----------------------------------------------------------------------
    def commit(self, worker: str, stream: str, topic: str, msg: m.Commit) -> None:
        text = msg.text.strip()
        if not text:
            return
        labelled = self._labelled(worker, stream)
        self.written += 1
        if not self.tty:
            self._write((f"[{worker}/{stream}] " if labelled else "") + text + "\n")
            return
        if labelled:
            if self.line:  # switching from single-pair mode: finish that line first
                self._write(CLEAR_LINE + self.line + "\n")
                self.line = ""
            self.partial_text = ""
            self._write(CLEAR_LINE + f"[{worker}/{stream}] {text}\n")
            self._redraw()
            return
        self.partial_text = ""
        self.line = f"{self.line} {text}" if self.line else text
        while len(self.line) > self.width:
            cut = self.line.rfind(" ", 0, self.width + 1)
            if cut <= 0:
                cut = self.width
            self._write(CLEAR_LINE + self.line[:cut] + "\n")
            self.line = self.line[cut:].lstrip()
        self._redraw()

    def partial(self, worker: str, stream: str, topic: str, msg: m.Partial) -> None:
        if not self.show_partials:
            return
        self._labelled(worker, stream)
        self.partial_text = msg.text.strip()
        self.partial_label = f"{worker}/{stream}"
        self._redraw()

    def eos(self, worker: str, stream: str, topic: str, msg: m.EndOfStream) -> None:
        if self.tty:
            self.partial_text = ""
            if self.line:
                self._write(CLEAR_LINE + self.line + "\n")
                self.line = ""
            else:
                self._write(CLEAR_LINE)

    def error(self, worker: str, stream: str, topic: str, msg: m.Error) -> None:
        if self.tty:
            self._write(CLEAR_LINE)
        self.err.write(f"[{worker}/{stream}] error: {msg.message}\n")
        self.err.flush()
        if self.tty:
            self._redraw()

    def close(self) -> None:
        if self.tty and (self.line or self.partial_text):
            self._write(CLEAR_LINE + self.line + ("\n" if self.line else ""))
            self.line = self.partial_text = ""
