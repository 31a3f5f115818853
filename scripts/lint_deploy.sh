#!/usr/bin/env bash
# Lints the Dockerfile (hadolint) and validates docker-compose.yml; no Docker engine is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f Dockerfile ]; then .venv/bin/hadolint Dockerfile; fi
if [ -f docker-compose.yml ]; then .venv/bin/python scripts/validate_compose.py docker-compose.yml; fi
