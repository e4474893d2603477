"""Transcript files written by a sink: JSONL, SRT, WebVTT and plain text.

Every output takes the same calls: ``commit``, ``eos`` and ``error`` with the
topic's worker and stream and the message, then ``close`` once.

* **jsonl** appends one JSON object per commit, eos and error, then flushes
  and fsyncs, so a crash or a kill loses nothing already written. The file is
  appended to, never truncated (a sink restarted by a process manager keeps
  what it wrote before); every record carries its topic, worker, stream and
  seq.
* **srt** / **vtt** rewrite their file atomically (temp file, fsync, rename)
  each time cues complete, and once more at eos and at close with the cue in
  progress. Each (worker, stream) pair has its own cue file: when the sink
  expects a single pair, ``PATH`` itself; when it expects several (or meets
  an unexpected second one), ``STEM.<pool>.<stream>.EXT`` beside ``PATH`` (the
  "worker" of these calls is the topic's middle: the pool, whichever replica made it).
* **txt** rewrites its file atomically at each commit: one paragraph (one
  line) per (worker, stream), labelled ``[worker/stream]`` when there are
  several.
* A cue or text file that got nothing is still written, empty, when the output
  closes (for each ``expected`` pair), so an empty transcript is an empty file.

Memory is bounded (:class:`Budget`): cue and text outputs keep at most
``max_stream_bytes`` of text per (worker, stream) and ``max_streams`` pairs' worth in
all (a cue output forgets ended pairs beyond that; their files stay); what does not
fit is not taken, and counted (``refused``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipeline import messages as m

from . import formats as f

OUTPUT_KINDS = ("console", "jsonl", "srt", "vtt", "txt")


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


DEFAULT_MAX_STREAMS = 64  # (worker, stream) pairs a sink keeps in memory
DEFAULT_MAX_STREAM_BYTES = 1_000_000  # bytes of transcript a sink keeps per pair (~ 10 h of speech as text)


class Budget:
    """How much a sink may keep: ``max_streams`` pairs, ``max_stream_bytes`` per pair."""

    def __init__(self, max_streams: int = DEFAULT_MAX_STREAMS, max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES):
        self.max_streams, self.max_stream_bytes = max_streams, max_stream_bytes
        self.used: dict = {}  # pair -> bytes kept

    def take(self, pair, n: int) -> bool:
        """Room for ``n`` more bytes of ``pair``? (taken when there is)"""
        used = self.used.get(pair)
        if used is None and len(self.used) >= self.max_streams:
            return False
        if (used or 0) + n > self.max_stream_bytes:
            return False
        self.used[pair] = (used or 0) + n
        return True

    def release(self, pair) -> None:
        self.used.pop(pair, None)


def pair_path(path: Path, worker: str, stream: str) -> Path:
    """``talk.srt`` -> ``talk.<pool>.<stream>.srt`` (``worker``: the topic's middle, the pool)."""
    return path.with_name(f"{path.stem}.{worker}.{stream}{path.suffix}")


class FileOutput:
    """Common bookkeeping: where it writes and how many records it wrote."""

    kind = ""

    def __init__(self, path: str | os.PathLike, budget: Budget | None = None, expected=()):
        self.path = Path(path)
        self.written = 0  # records (jsonl) or file rewrites (others)
        self.refused = 0  # commits not taken: over the memory budget
        self.budget = budget or Budget()
        self.expected = list(expected)  # (worker, stream) pairs whose file is written even if empty

    def files(self) -> list[str]:
        return [str(self.path)]

    def commit(self, worker: str, stream: str, topic: str, msg: m.Commit) -> None:
        raise NotImplementedError

    def partial(self, worker: str, stream: str, topic: str, msg: m.Partial) -> None:
        """Files keep committed text only."""

    def eos(self, worker: str, stream: str, topic: str, msg: m.EndOfStream) -> None:
        pass

    def error(self, worker: str, stream: str, topic: str, msg: m.Error) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlOutput(FileOutput):
    kind = "jsonl"

    def __init__(self, path, budget: Budget | None = None, expected=()):
        super().__init__(path, budget, expected)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def _write(self, topic: str, msg: m.Message) -> None:
        self._fh.write(f.jsonl_line(topic, msg))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.written += 1

    def commit(self, worker, stream, topic, msg):
        self._write(topic, msg)

    def eos(self, worker, stream, topic, msg):
        self._write(topic, msg)

    def error(self, worker, stream, topic, msg):
        self._write(topic, msg)

    def close(self):
        if not self._fh.closed:
            self._fh.close()


class CueOutput(FileOutput):
    """SRT or WebVTT cues, one file per (worker, stream)."""

    def __init__(self, path, kind: str, several: bool = False, budget: Budget | None = None, expected=()):
        super().__init__(path, budget, expected)
        if kind not in ("srt", "vtt"):
            raise ValueError(f"not a cue format: {kind!r}")
        self.kind = kind
        self.several = several
        self.builders: dict[tuple[str, str], f.CueBuilder] = {}
        self.cues: dict[tuple[str, str], list[f.Cue]] = {}
        self.paths: dict[tuple[str, str], Path] = {}
        self.ended: list[tuple[str, str]] = []  # pairs that got their eos, oldest first

    def files(self):
        return [str(p) for p in self.paths.values()]

    def _path_for(self, pair: tuple[str, str]) -> Path:
        if pair not in self.paths:
            base_taken = self.path in self.paths.values()
            self.paths[pair] = pair_path(self.path, *pair) if (self.several or base_taken) else self.path
        return self.paths[pair]

    def _render(self, pair) -> str:
        cues = self.cues.get(pair, [])
        if self.kind == "srt":
            return f.render_srt(cues)
        return f.render_vtt(cues, note=f"worker {pair[0]}, stream {pair[1]}")

    def _rewrite(self, pair) -> None:
        atomic_write(self._path_for(pair), self._render(pair))
        self.written += 1

    def commit(self, worker, stream, topic, msg):
        pair = (worker, stream)
        if pair not in self.builders:
            self._forget_ended()
        if not self.budget.take(pair, len(msg.text.encode("utf-8")) + 32):
            self.refused += 1
            return
        if pair in self.ended:
            self.ended.remove(pair)
        builder = self.builders.setdefault(pair, f.CueBuilder())
        self.cues.setdefault(pair, [])
        self._path_for(pair)
        done = builder.add(f.commit_words(msg))
        if done:
            self.cues[pair].extend(done)
            self._rewrite(pair)

    def _finish(self, pair) -> None:
        builder = self.builders.get(pair)
        if builder is None:
            return
        self.cues[pair].extend(builder.flush())
        self._rewrite(pair)

    def eos(self, worker, stream, topic, msg):
        pair = (worker, stream)
        self._finish(pair)
        if pair in self.builders and pair not in self.ended:
            self.ended.append(pair)

    def _forget_ended(self) -> None:
        """Make room for a new pair: forget the oldest ended pairs beyond the budget (their files stay)."""
        while self.ended and len(self.builders) >= self.budget.max_streams:
            pair = self.ended.pop(0)
            self.builders.pop(pair, None)
            self.cues.pop(pair, None)
            self.budget.release(pair)

    def close(self):
        for pair in list(self.builders):
            self._finish(pair)
        for pair in self.expected:  # an empty transcript is an empty file
            if pair not in self.paths:
                self.cues[pair] = []
                self._rewrite(pair)


class TextOutput(FileOutput):
    """Running text, one paragraph per (worker, stream) in order of first appearance."""

    kind = "txt"

    def __init__(self, path, several: bool = False, budget: Budget | None = None, expected=()):
        super().__init__(path, budget, expected)
        self.several = several
        self.paragraphs: list[tuple[tuple[str, str], list[str]]] = []
        self._open: dict[tuple[str, str], list[str]] = {}
        self._index: dict[tuple[str, str], int] = {}  # open pair -> its paragraph's number

    def commit(self, worker, stream, topic, msg):
        pair = (worker, stream)
        texts = self._open.get(pair)
        # every paragraph stays in the file, so the budget counts them all (a stream id used again included)
        index = self._index.get(pair, len(self.paragraphs))
        if not self.budget.take(index, len(msg.text.encode("utf-8"))):
            self.refused += 1
            return
        if texts is None:
            texts = self._open[pair] = []
            self._index[pair] = index
            self.paragraphs.append((pair, texts))
        texts.append(msg.text)
        self._rewrite()

    def eos(self, worker, stream, topic, msg):
        # the next commit on this pair (a new stream with the same id) starts a new paragraph
        self._open.pop((worker, stream), None)
        self._index.pop((worker, stream), None)

    def close(self):
        if not self.written:  # an empty transcript is an empty file
            self._rewrite()

    def _rewrite(self) -> None:
        labelled = self.several or len({pair for pair, _ in self.paragraphs}) > 1
        rendered = [(f"{w}/{s}" if labelled else None, f.join_commit_texts(texts)) for (w, s), texts in self.paragraphs]
        atomic_write(self.path, f.render_txt(rendered))
        self.written += 1


def parse_output(spec: str) -> tuple[str, str]:
    """``kind:PATH`` or ``console`` -> (kind, absolute path or ""); ValueError with one line otherwise."""
    kind, sep, arg = spec.partition(":")
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"output {spec!r} is not console, jsonl:PATH, srt:PATH, vtt:PATH or txt:PATH")
    if kind == "console":
        if arg:
            raise ValueError(f"output {spec!r}: console takes no path")
        return kind, ""
    if not arg:
        raise ValueError(f"output {spec!r}: '{kind}:' needs a path")
    return kind, str(Path(arg).expanduser().resolve())


def open_file_output(kind: str, path: str, several: bool = False, budget: Budget | None = None,
                     expected=()) -> FileOutput:
    """The output for ``kind:path``; ``expected``: the (worker, stream) pairs it should end up with."""
    if kind == "jsonl":
        return JsonlOutput(path, budget, expected)
    if kind in ("srt", "vtt"):
        return CueOutput(path, kind, several, budget, expected)
    if kind == "txt":
        return TextOutput(path, several, budget, expected)
    raise ValueError(f"no file output of kind {kind!r}")
