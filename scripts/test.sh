#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a real nats-server
# and real HTTP receivers (started and stopped by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-tools.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo test --all-targets "$@"
