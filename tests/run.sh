#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs it.
# Under CI=true a skipped integration or interop test fails the run (see tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."

# Real parts the tests talk to: node-opcua (interop), socat (a serial line as a pty pair for Modbus RTU),
# mbpoll (an independent Modbus master reading the simulators).
missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v socat >/dev/null || missing+=(socat)
command -v mbpoll >/dev/null || missing+=(mbpoll)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)

.venv/bin/ruff check .
.venv/bin/pytest -q "$@"
