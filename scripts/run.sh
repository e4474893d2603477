#!/usr/bin/env bash
# Set up voxpipe in .venv (first run only) and start the default pipeline:
# microphone (or the bundled sample clip) -> VAD -> tiny.en on CPU -> console.
# Extra arguments go to `voxpipe up` (e.g. another config: scripts/run.sh configs/file.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/voxpipe ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[mic]'
fi
exec .venv/bin/voxpipe up "${@:-configs/default.yaml}"
