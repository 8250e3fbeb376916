#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs it.
# Under CI=true a skipped integration or interop test fails the run (see tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi

python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)

.venv/bin/ruff check .
.venv/bin/pytest -q "$@"
