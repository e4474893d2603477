"""What a bench ran on: the machine, the software, the commit."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("voxpipe", "faster-whisper", "ctranslate2", "onnxruntime", "pyzmq", "msgpack", "numpy", "psutil",
            "matplotlib", "honcho")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import psutil

    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    try:
        import zmq

        versions["libzmq"] = zmq.zmq_version()
    except ImportError:
        pass
    return {
        "cpu": cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def git_info(root: Path) -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD").strip()
    if not commit:
        return {"commit": None, "missing": "not a git checkout"}
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    # HEAD and the uncommitted changes to tracked files: a different value at the end of a run means the
    # code changed under it (actors started at different times may have run different code)
    fingerprint = hashlib.sha1((commit + git("diff", "HEAD")).encode()).hexdigest()[:12]
    return {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD").strip(), "dirty": bool(changed),
            "changed_files": changed, "fingerprint": fingerprint}
