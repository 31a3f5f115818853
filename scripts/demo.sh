#!/usr/bin/env bash
# The demo a newcomer runs: installs the project into .venv (first run only does real work), then
# compresses the shipped MNIST model through an embedded server and prints a before/after table.
# Extra arguments go to the demo, e.g. `scripts/demo.sh --out demo-output` keeps the artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m nncompress.demo "$@"
