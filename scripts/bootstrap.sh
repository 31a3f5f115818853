#!/usr/bin/env bash
# Creates .venv (once) and installs the project with its service and dev extras.
# Idempotent: a second run only re-checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
# torch and torchvision first, pinned (see constraints/ci.txt) to the pair that lie on this disk.
.venv/bin/python -m pip install --quiet -c constraints/ci.txt torch torchvision
.venv/bin/python -m pip install --quiet -c constraints/ci.txt -e '.[service,dev,models,mlflow]'
