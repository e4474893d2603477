"""docs/protocol.md is enough: subscribers written only from it read what real actors publish.

Two subscribers, each a separate process with no voxpipe import:

* ``tests/doc_subscriber.py``: every rule of the document (validation,
  seq gaps, latency), printing JSON lines;
* the minimal example of section 9, extracted from the document and run as is.

The actors are real: broker, capture (file), VAD and a tiny.en ASR worker.
To cover a new topic, add its prefix to ``TOPICS`` and its checks to
:func:`check_topic` (the helpers :func:`start_doc_subscriber` and
:func:`finish_doc_subscriber` work for any prefixes).
"""

from __future__ import annotations

import ast
import json
import queue
import re
import subprocess
import sys
import threading
import time
import wave

import numpy as np
import pytest

from tests.procs import DATA, ROOT, Pipeline, child_env

SR = 16000
STREAM = "docs1"
CLIP_SECONDS = 10.0  # weather_gaps: two sentences, one silence
TOPICS = {  # prefix -> must it carry messages?
    f"audio.{STREAM}": True,
    f"speech.{STREAM}": True,
    f"transcript.asr.{STREAM}": True,
    f"partial.asr.{STREAM}": False,
}
EOS_TOPICS = [f"audio.{STREAM}", f"speech.{STREAM}", f"transcript.asr.{STREAM}"]


def no_voxpipe_env() -> dict:
    """An environment in which voxpipe cannot be imported from the source tree."""
    env = child_env()
    env.pop("PYTHONPATH", None)
    return env


class LineReader:
    """A process's stdout lines, read by a thread so waits can have deadlines."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: queue.Queue = queue.Queue()
        self.all: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, predicate, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("process ended; output so far:\n" + "\n".join(self.all[-20:]))
            self.all.append(line)
            if predicate(line):
                return line
        raise TimeoutError("no matching line in {:.0f}s; output so far:\n{}".format(timeout, "\n".join(self.all[-20:])))


def start_doc_subscriber(pipe: Pipeline, prefixes, until_eos, timeout: float = 90.0) -> LineReader:
    """tests/doc_subscriber.py on the pipeline's bus, returned once its subscriptions are in place."""
    argv = [sys.executable, str(ROOT / "tests" / "doc_subscriber.py"), "--xpub", pipe.bus.xpub, "--xsub", pipe.bus.xsub,
            "--timeout", str(timeout)]
    for p in prefixes:
        argv += ["--prefix", p]
    for t in until_eos:
        argv += ["--until-eos", t]
    proc = pipe.spawn("doc-subscriber", argv, env=no_voxpipe_env(), stdout=subprocess.PIPE, text=True, cwd="/")
    reader = LineReader(proc.popen)
    reader.until(lambda line: json.loads(line).get("event") == "ready", 20)
    return reader


def finish_doc_subscriber(reader: LineReader, timeout: float) -> tuple[list[dict], dict]:
    """(messages, done record) once the subscriber has seen all its eos."""
    reader.until(lambda line: json.loads(line).get("event") == "done", timeout)
    records = [json.loads(line) for line in reader.all]
    done = records[-1]
    return [r for r in records if r["event"] == "message"], done


def doc_example_source() -> str:
    text = (ROOT / "docs" / "protocol.md").read_text()
    mt = re.search(r"<!-- example: subscriber.py -->\s*```python\n(.*?)```\s*<!-- end example -->", text, re.DOTALL)
    assert mt, "docs/protocol.md lost its example subscriber"
    return mt.group(1)


# -- per-topic checks -------------------------------------------------------------------------------------
def check_topic(topic: str, msgs: list[dict], clip: np.ndarray) -> None:
    headers = [r["header"] for r in msgs]
    assert [h["seq"] for h in headers] == list(range(len(headers))), topic  # doc section 5
    assert all(h["stream"] == STREAM and h["v"] == 1 for h in headers)
    if topic.startswith(("audio.", "speech.", "transcript.")):
        assert headers[-1]["kind"] == "eos", topic
    if topic.startswith("audio."):
        frames = [r for r in msgs if r["header"]["kind"] == "audio"]
        pos = 0.0
        for r in frames:
            assert r["header"]["t"] == pytest.approx(pos, abs=1e-6) and r["header"]["sr"] == SR
            pos += r["pcm_bytes"] / 2 / SR
        assert pos == pytest.approx(len(clip) / SR, abs=1e-6)
    elif topic.startswith("speech."):
        kinds = [h["kind"] for h in headers]
        assert kinds.count("speech_start") == kinds.count("speech_end") == 2, kinds
        assert kinds[0] == "speech_start"
        for h, nxt in zip(headers, headers[1:], strict=False):
            if h["kind"] == "speech_start":  # the first frame after a start begins at its t
                assert nxt["kind"] == "audio" and nxt["t"] == pytest.approx(h["t"], abs=1e-6)
    elif topic.startswith("transcript."):
        commits = [r for r in msgs if r["header"]["kind"] == "commit"]
        assert commits, "no commit"
        ends = [c["header"]["end"] for c in commits]
        assert ends == sorted(ends) and 0 < ends[-1] <= len(clip) / SR + 0.5
        for c in commits:
            assert c["header"]["worker"] == "asr" and c["header"]["model"] == "tiny.en"
            assert -1.0 < c["latency"] < 60.0  # doc section 6, computed from the wire
        text = " ".join(c["header"]["text"] for c in commits).lower()
        ref = json.loads((DATA / "weather_gaps.json").read_text())["text"].lower().split(". ")[:2]
        ref_words = set(re.findall(r"[a-z]+", " ".join(ref)))
        heard = set(re.findall(r"[a-z]+", text))
        assert len(ref_words & heard) >= 0.6 * len(ref_words), text
    elif topic.startswith("partial."):
        assert all(h["kind"] == "partial" for h in headers)


def imported_modules(source: str) -> set[str]:
    tree = ast.parse(source)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_doc_subscribers_use_only_pyzmq_and_msgpack():
    ours = {"pipeline", "workers", "asr_core", "voxpipe", "tests"}
    for source in (doc_example_source(), (ROOT / "tests" / "doc_subscriber.py").read_text()):
        mods = imported_modules(source)
        assert {"zmq", "msgpack"} <= mods and not mods & ours, mods


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    with wave.open(str(DATA / "weather_gaps.wav"), "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")[: int(CLIP_SECONDS * SR)]
    path = tmp_path_factory.mktemp("docs") / "clip.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(x.tobytes())
    return path, x


@pytest.mark.model
@pytest.mark.realtime
def test_doc_subscribers_read_real_actors(tmp_path, clip):
    path, x = clip
    with Pipeline(tmp_path, ready_timeout=60) as pipe:
        example = tmp_path / "subscriber.py"
        example.write_text(doc_example_source())
        ex = pipe.spawn("doc-example", [sys.executable, str(example), pipe.bus.xpub, "transcript.", "status.vad"],
                        env=no_voxpipe_env(), stdout=subprocess.PIPE, text=True, cwd="/")
        ex_reader = LineReader(ex.popen)
        pipe.start("vad", ["vad"])
        pipe.start("asr", ["worker", "--name", "asr", "--model", "tiny.en", "--input", "speech"])
        pipe.wait_ready("vad", "asr")
        ex_reader.until(lambda line: line.startswith("status.vad heartbeat"), 10)  # the example is subscribed

        reader = start_doc_subscriber(pipe, list(TOPICS), EOS_TOPICS)
        pipe.start("cap", ["capture", f"file:{path}", "--stream", STREAM, "--speed", "0", "--wait-for", "vad,asr"])
        messages, done = finish_doc_subscriber(reader, timeout=90)
        assert done == {"event": "done", "rejected": 0, "lost": 0, "timed_out": False}, pipe.logs()
        for topic, required in TOPICS.items():
            msgs = [r for r in messages if r["topic"] == topic]
            if required or msgs:
                assert msgs, f"nothing on {topic}"
                check_topic(topic, msgs, x)

        # the document's own minimal example printed the same commits, then the eos
        ex_reader.until(lambda line: line.startswith(f"transcript.asr.{STREAM} eos"), 20)
        commits = [r["header"]["text"].strip() for r in messages if r["header"]["kind"] == "commit"]
        printed = [line for line in ex_reader.all if line.startswith(f"transcript.asr.{STREAM} [")]
        assert [p.split("] ", 1)[1].rsplit("  (latency", 1)[0] for p in printed] == commits
        assert pipe.wait_exit("cap", 10) == 0
