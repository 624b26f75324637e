#!/usr/bin/env bash
# Installs everything Lifeline needs on a fresh Debian 12 machine, as root, without prompts:
# the system packages of the local stack and a virtual environment with the pinned Python
# dependencies. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# victoria-metrics: a real server for the InfluxDB v2 write API in the tests (LOCAL_STACK.md).
# chromium + chromium-driver: the acknowledgement page is tested in headless Chromium;
# openssl makes the test certificates (SMTP over TLS); fonts-noto-cjk lets Chromium render
# the Chinese of pages and the acknowledgement page (the screenshot test checks it);
# postgresql: the work orders' current state and history (the stack runs its own cluster).
APT_PACKAGES=(mosquitto mosquitto-clients influxdb victoria-metrics chromium chromium-driver
              openssl fonts-noto-cjk postgresql)
# `--python-only` (make unit, make lint): the virtual environment alone, no system packages.
[ "${1:-}" = "--python-only" ] && APT_PACKAGES=()
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.lifeline-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "bootstrap: installing Python dependencies (constraints.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
  touch "$stamp"
fi
echo "bootstrap: ready (.venv/bin/lifeline)"
