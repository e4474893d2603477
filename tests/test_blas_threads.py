"""Every voxpipe process and measuring script runs numpy with one BLAS thread unless the user says otherwise:
less CPU, and the same numerics in a pass and the pipeline it is compared with (asr_core/blas.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.procs import ROOT

PROBE = "import {module}, os, numpy; print(os.environ.get('OPENBLAS_NUM_THREADS'), os.environ.get('MKL_NUM_THREADS'))"


@pytest.mark.parametrize("module", ["apps.cli"])
@pytest.mark.parametrize("preset,expected", [(None, "1 1"), ("3", "3 1")])
def test_one_blas_thread_unless_the_user_set_one(module, preset, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert " ".join(out) == expected


@pytest.mark.parametrize("script", ["scripts/commit_policy_sweep.py", "scripts/multilingual_bench.py"])
def test_the_measuring_scripts_set_it_before_numpy(script):
    text = (ROOT / script).read_text()
    assert text.index("one_blas_thread()") < text.index("import numpy" if "import numpy" in text else "apps.bench")
