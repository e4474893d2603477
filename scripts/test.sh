#!/usr/bin/env bash
# Set up everything the test suite needs, lint and type-check, then run it (arguments go to pytest).
#
# * system packages (Debian/Ubuntu, as root): Chromium and its driver for the
#   browser test, OpenBLAS for mlx on Linux CPUs, tmux for the `voxpipe top` test,
#   iproute2 (ip netns) for the pool failover across three "hosts";
# * .venv with voxpipe and its test, web, serve, bench and bundled-model extras;
# * the torch-based backends (whisper_timestamped, mlx-whisper) with a CPU
#   torch; set VOXPIPE_SKIP_TORCH=1 to leave them out (their tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  need=()
  for pkg in chromium chromium-driver libopenblas0-pthread tmux iproute2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing system packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -e '.[test,web,serve,bench,base-model]'
if [ "${VOXPIPE_SKIP_TORCH:-0}" != 1 ]; then
  # a CPU torch first, so nothing below pulls a CUDA build; then the torch
  # backends without their CUDA-only extras (triton)
  "${PIP[@]}" torch==2.13.0
  "${PIP[@]}" numba tiktoken more-itertools tqdm dtw-python Cython scipy 'mlx[cpu]==0.32.4' huggingface_hub
  "${PIP[@]}" --no-deps openai-whisper==20250625 whisper-timestamped==1.15.9 mlx-whisper==0.4.3
fi

# lint and type check first (configured in pyproject.toml): a finding fails the run
.venv/bin/ruff check --quiet .
.venv/bin/mypy --no-error-summary
# byte-compile voxpipe once: the tests start hundreds of actor processes, and with
# PYTHONDONTWRITEBYTECODE set (as on CI) each would otherwise compile every module again
.venv/bin/python -m compileall -q -j 0 asr_core pipeline workers apps tests >/dev/null
# two lanes (tests/conftest.py): the `realtime` tests one at a time in one xdist worker, every other
# test beside them in another at the lowest CPU priority; VOXPIPE_TEST_WORKERS=0 runs them all in one
if [ "${VOXPIPE_TEST_WORKERS:-2}" = 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "${VOXPIPE_TEST_WORKERS:-2}" --dist loadgroup "$@"
