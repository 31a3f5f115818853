#!/usr/bin/env bash
# Installs the browser the dashboard test drives (tests/test_dashboard.py): Debian's chromium.
# Idempotent and quiet: does nothing when /usr/bin/chromium is there. Playwright's own browser
# download is never used (the CI machines cannot reach it); the test launches this binary instead.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_browser.sh: /usr/bin/chromium is missing; run as root (or: sudo apt-get install chromium)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
echo "install_browser.sh: installed $(/usr/bin/chromium --version)"
