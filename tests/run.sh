#!/usr/bin/env bash
# Installs everything the test suite needs on a Debian machine, then runs it (ruff, pytest).
# Works as root or as a developer: missing system packages are installed with sudo when not root;
# without sudo the script names what to install and stops. Nothing is installed when all is present.
# Under CI=true a skipped integration or interop test fails the run (see tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."

# Real parts the tests talk to: node-opcua (interop), socat (a serial line as a pty pair for Modbus RTU),
# mbpoll (an independent Modbus master reading the simulators), Mosquitto and its clients (the MQTT driver's
# broker and an independent publisher); python3-venv for the virtualenv; the time-series servers below
# for the series writer.
# Debian puts the broker in /usr/sbin, which a developer's PATH may lack (the MQTT tests look there too).
PATH="$PATH:/usr/sbin"
missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v socat >/dev/null || missing+=(socat)
command -v mbpoll >/dev/null || missing+=(mbpoll)
# Time-series servers the series writer is tested against: VictoriaMetrics (v2 writes) and InfluxDB 1.x.
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
command -v influxd >/dev/null || missing+=(influxdb)
command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
[ -x .venv/bin/python ] || python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  install="apt-get update && apt-get install -y ${missing[*]}"
  if ! command -v apt-get >/dev/null; then
    echo "tests/run.sh: missing: ${missing[*]} (Debian package names); install them, then run this again" >&2
    exit 1
  elif [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null; then
    echo "tests/run.sh: installing ${missing[*]} with sudo" >&2
    as_root=(sudo)
  else
    echo "tests/run.sh: missing system packages: ${missing[*]}; as root run: $install" >&2
    echo "then run tests/run.sh again" >&2
    exit 1
  fi
  ${as_root[@]+"${as_root[@]}"} apt-get update -qq
  ${as_root[@]+"${as_root[@]}"} apt-get install -y -qq "${missing[@]}"
fi

python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)

.venv/bin/ruff check .
.venv/bin/pytest -q "$@"
