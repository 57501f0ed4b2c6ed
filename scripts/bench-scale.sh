#!/usr/bin/env bash
# The scale benchmark (release build): 10,000 endpoints in one natshook, a one-endpoint
# baseline, and 1, 2 and 3 replicas sharing one stream, on one nats-server and on a
# 3-node cluster with R3 streams (BENCH_SCALE_PHASES picks), for each delivery design in
# BENCH_SCALE_DESIGNS (default `direct,fanout`). Sizes: BENCH_SCALE_ENDPOINTS,
# BENCH_SCALE_ACTIVE, BENCH_SCALE_MESSAGES (benches/scale.rs). Results also in
# target/scale-results.json. natshook is the shipped binary (scripts/build-release.sh)
# unless BENCH_NATSHOOK_BIN names another build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-tools.sh
export PATH="$PWD/.venv/bin:$PATH"
if [ -z "${BENCH_NATSHOOK_BIN:-}" ]; then
    BENCH_NATSHOOK_BIN="$PWD/$(./scripts/build-release.sh)"
    export BENCH_NATSHOOK_BIN
fi
cargo bench --bench scale "$@"
