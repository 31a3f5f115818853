#!/usr/bin/env bash
# The test command: sets up .venv, checks that PostgreSQL and Redis answer, lints, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/python scripts/check_services.py
.venv/bin/ruff check .
scripts/lint_deploy.sh
exec .venv/bin/python -m pytest "$@"
