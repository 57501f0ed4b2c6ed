#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a real nats-server
# and real HTTP receivers (started and stopped by the tests themselves). Then the
# end-to-end tests once more against the binary natshook ships
# (scripts/build-release.sh: release, statically linked glibc), since that build
# differs in linking and name resolution. Extra arguments go to both cargo test runs;
# NATSHOOK_SKIP_SHIPPED=1 skips the second (it needs a release build, ~5 min).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-tools.sh
export PATH="$PWD/.venv/bin:$PATH"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "${NATSHOOK_SKIP_SHIPPED:-0}" != 1 ]; then
    echo "==> end-to-end tests against the shipped (static release) binary"
    if shipped=$(./scripts/build-release.sh --locked); then
        NATSHOOK_BIN="$PWD/$shipped" cargo test --no-fail-fast \
            --test bridge --test cli --test ingress --test operations --test rate_limit --test reliability --test security --test tracing \
            --test proxy --test tenants --test cluster --test registry --test operator_events --test filters --test endpoints --test fan_out \
            "$@" 2>&1 | tee -a "$log"
        [ "${PIPESTATUS[0]}" = 0 ] || status=1
    else
        echo "cannot build the shipped binary" | tee -a "$log"
        status=1
    fi
fi
set -e
# One closing line over all test binaries (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
