"""Shared fixtures.

Streaming ASR core (asr_core):

* ``clip_path(name)``, ``reference(name)``, ``silences(name)``: the speech
  clips in tests/data, their reference text and their digital silences;
* ``tiny_en`` (session): the real tiny.en faster-whisper backend, loaded once;
* ``simulate_clip`` (session): runs ``voxpipe simulate`` in-process on a clip
  with the real model and caches the printed lines, so several tests can
  assert on one transcript without decoding it twice;
* ``voxpipe_cli``: runs the ``voxpipe`` command in a subprocess.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CLEAN_CLIPS = ("history", "kitchen", "meeting", "weather")
GAPS_CLIPS = tuple(f"{c}_gaps" for c in CLEAN_CLIPS)


def clip_path(name: str) -> Path:
    return DATA / f"{name}.wav"


def reference(name: str) -> str:
    from apps.bench.evaluation import reference_text

    return reference_text(clip_path(name))


def silences(name: str, min_seconds: float = 1.0) -> list[tuple[float, float]]:
    """The digital silences (runs of |x| < 1e-3) of a clip, e.g. between the sentences of a ``_gaps`` clip."""
    import numpy as np

    from asr_core.audio import load_audio

    audio = load_audio(clip_path(name))
    quiet = (np.abs(audio[: len(audio) // 160 * 160]) < 1e-3).reshape(-1, 160).all(axis=1)
    runs, start = [], None
    for i, q in enumerate(np.append(quiet, False)):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if (i - start) / 100 >= min_seconds:
                runs.append((start / 100, i / 100))
            start = None
    return runs


def parse_simulate_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``voxpipe simulate`` arguments with the command's own parser."""
    from apps import simulate

    parser = argparse.ArgumentParser(prog="voxpipe")
    simulate.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["simulate", *argv])


@pytest.fixture(scope="session")
def tiny_en():
    """The real tiny.en model (CTranslate2, CPU int8), loaded once per session."""
    from asr_core.registry import create_backend

    return create_backend("faster-whisper", "en", "tiny.en", cpu_threads=1)


@pytest.fixture(scope="session")
def simulate_clip(tiny_en):
    """``simulate_clip(name, *flags)`` -> parsed lines of ``voxpipe simulate`` (cached).

    Runs the command's own ``simulate()`` in-process with the session model,
    so each clip is decoded once however many tests look at it.
    """
    from apps.simulate import Printer, simulate
    from asr_core.audio import load_audio

    cache: dict = {}

    def run(name: str, *flags: str):
        key = (name, flags)
        if key not in cache:
            args = parse_simulate_args([str(clip_path(name)), "--lan", "en", *flags])
            out = io.StringIO()
            simulate(tiny_en, load_audio(args.audio), args, Printer(out))
            cache[key] = parse_lines(out.getvalue())
        return cache[key]

    return run


def parse_lines(stdout: str) -> list[tuple[int, int, int, str]]:
    """``EMIT_MS BEG_MS END_MS TEXT`` lines; fails on any other line."""
    rows = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split(" ", 3)
        assert len(parts) == 4 and all(p.lstrip("-").isdigit() for p in parts[:3]), f"bad output line {line!r}"
        rows.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3]))
    return rows


def voxpipe_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("voxpipe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "apps.cli"]


@pytest.fixture
def voxpipe_cli():
    """``voxpipe_cli(*args, env=None, timeout=120)`` -> CompletedProcess (text)."""

    def run(*args: str, env: dict | None = None, timeout: float = 120):
        full_env = dict(os.environ)
        full_env.setdefault("HF_HUB_OFFLINE", "1")
        full_env.update(env or {})
        return subprocess.run(
            [*voxpipe_cmd(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            stdin=subprocess.DEVNULL,
        )

    return run


# -- WER report --------------------------------------------------------------

#: (clip, mode) -> WER, filled by the real-model tests and printed at the end
WER_RESULTS: dict[tuple[str, str], float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The WER figures travel with the test's report, so the summary has them also when the
    tests ran in xdist workers (scripts/test.sh runs two)."""
    outcome = yield
    if call.when == "call" and WER_RESULTS:
        outcome.get_result().user_properties.append(
            ("wer_results", [[clip, mode, value] for (clip, mode), value in WER_RESULTS.items()]))


def pytest_runtest_logreport(report):
    for key, value in getattr(report, "user_properties", ()):
        if key == "wer_results":
            WER_RESULTS.update({(clip, mode): wer for clip, mode, wer in value})


def pytest_terminal_summary(terminalreporter):
    if not WER_RESULTS:
        return
    terminalreporter.section("streaming WER (tiny.en)")
    for mode in sorted({m for _, m in WER_RESULTS}):
        rows = {c: w for (c, m), w in WER_RESULTS.items() if m == mode}
        line = "  ".join(f"{c}={w:.3f}" for c, w in sorted(rows.items()))
        terminalreporter.write_line(f"{mode}: {line}  mean={sum(rows.values()) / len(rows):.3f}")


# -- two lanes: real-time tests one at a time, everything else beside them ----

@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its own hook of the same name)
def pytest_collection_modifyitems(config, items):
    """Under xdist (``scripts/test.sh`` runs ``-n 2 --dist loadgroup``) the tests marked ``realtime``
    form one group, run one at a time in one worker, and every other test forms the other group in
    the other worker, at nice 19 (``pytest_runtest_protocol`` below): the real-time pipelines get the
    CPU first, and the CPU-bound tests use what they leave. A test marked ``alone`` as well (it runs
    the machine at its capacity, or measures) has the machine to itself: the offline lane waits."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_lane(item)))


def _lane(item) -> str:
    return "realtime" if item.get_closest_marker("realtime") else "offline"


_LANE: dict = {"lane": None, "mixed": False}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Around each test in an xdist worker (its fixtures' setup included): the offline lane's worker
    lowers its priority for good at its first test (inherited by the processes its tests start) and
    holds a shared lock during each test; an ``alone`` test holds it exclusively, so the offline lane
    waits between two of its tests. Should one worker get both lanes (xdist not grouping them, as with
    pytest 9.2: pytest-xdist#1386), it goes back to normal priority, and says so."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not os.environ.get("PYTEST_XDIST_WORKER") or not run or _LANE["mixed"]:
        yield
        return
    import fcntl

    lane = _lane(item)
    if _LANE["lane"] is None:
        _LANE["lane"] = lane
        if lane == "offline":
            _priority(19)
    elif lane != _LANE["lane"]:
        _LANE["mixed"] = True
        _priority(0)
        import warnings

        warnings.warn("this xdist worker got tests of both lanes (realtime and offline): --dist loadgroup is "
                      "not grouping them; its tests run at normal priority from now on", stacklevel=1)
        yield
        return
    mode = fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH if lane == "offline" else None
    if mode is None:
        yield
        return
    with open(_lanes_lock_path(run), "a") as lock:
        fcntl.flock(lock, mode)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _lanes_lock_path(run: str) -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"voxpipe-test-lanes-{run}.lock")


def pytest_sessionfinish(session):
    """A worker that has run all its tests removes the lanes' lock file (the other worker, if still
    running, has the machine to itself from now on, so a lock of its own changes nothing)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if os.environ.get("PYTEST_XDIST_WORKER") and run:
        try:
            os.unlink(_lanes_lock_path(run))
        except OSError:
            pass


def _priority(nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:  # going back to 0 takes privileges
        pass
