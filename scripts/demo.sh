#!/usr/bin/env bash
# The demo a newcomer runs: installs the project into .venv (only the first run does real work), then
# compresses the shipped MNIST model through an embedded server and prints a before/after table.
# Extra arguments go to the demo, e.g. `scripts/demo.sh --out demo-output` keeps the artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: installing the project into .venv (the first run downloads packages and takes a few minutes)"
log=$(mktemp)
# The installer's output only matters when it fails; then it is shown whole.
if ! scripts/bootstrap.sh >"$log" 2>&1; then
    cat "$log" >&2
    echo "demo: installing failed (output above)" >&2
    exit 1
fi
rm -f "$log"
exec .venv/bin/python examples/demo.py "$@"
