#!/usr/bin/env bash
# The test command: sets up .venv, checks that PostgreSQL and Redis answer, lints (ruff, mypy, deploy files),
# runs pytest: every tier (fast, slow, service, browser: -m ""), on NNCOMPRESS_TEST_WORKERS xdist workers
# (default 2; 0 runs in this process). Extra arguments go to pytest after ours, so they win (-m slow, -n 0).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# The dashboard's browser test needs Debian's Chromium (no browser download from a test tool).
if [ -x scripts/install_browser.sh ]; then scripts/install_browser.sh; fi
.venv/bin/python scripts/check_services.py
.venv/bin/ruff check .
.venv/bin/python -m mypy nncompress core app workers
.venv/bin/lint-imports import-contracts.toml
scripts/lint_deploy.sh
exec .venv/bin/python -m pytest -m "" -n "${NNCOMPRESS_TEST_WORKERS:-2}" --dist loadgroup "$@"
