#!/usr/bin/env bash
# The benchmark (release build): ceilings, natshook, 50 endpoints, latency, RSS and
# the hand-written Python bridge, side by side in one run. BENCH_MESSAGES=N to change
# the per-phase message count (default 50000). Results also in target/bench-results.json.
# natshook is the shipped binary (scripts/build-release.sh) unless BENCH_NATSHOOK_BIN
# names another build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-tools.sh
export PATH="$PWD/.venv/bin:$PATH"
if [ -z "${BENCH_NATSHOOK_BIN:-}" ]; then
    BENCH_NATSHOOK_BIN="$PWD/$(./scripts/build-release.sh)"
    export BENCH_NATSHOOK_BIN
fi
cargo bench --bench bridge "$@"
