#!/usr/bin/env bash
# Lints the Dockerfile (hadolint) and validates docker-compose.yml against the current Compose Specification
# schema (check-jsonschema's vendor.compose-spec); no Docker engine is needed. The project's own deployment
# rules (commands, volumes, GPU workers) are tests: tests/test_deploy.py with tests/deploy_contract.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f Dockerfile ]; then .venv/bin/hadolint Dockerfile; fi
if [ -f docker-compose.yml ]; then
  .venv/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
  echo "docker-compose.yml: valid (Compose Specification schema)"
fi
