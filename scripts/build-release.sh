#!/usr/bin/env bash
# The binary natshook ships: release profile (LTO, codegen-units = 1), jemalloc, and
# glibc linked statically. Static linking drops the shared libc, libm, libgcc_s and
# loader mappings, about 1.4 MiB of idle RSS (docs/performance.md, "Idle memory"),
# and the binary runs on any glibc-based or distroless image. glibc 2.34+ has the
# `files` and `dns` name-service backends built in, so host names resolve as usual.
#
# `--target` is explicit because crt-static must not reach proc-macros and build
# scripts, which RUSTFLAGS would otherwise also apply to. Prints the binary's path.
# Extra arguments go to cargo build (e.g. --locked, --no-default-features).
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
*-linux-gnu*) ;;
*)
    echo "build-release.sh: static glibc linking needs a *-linux-gnu host, not $host;" >&2
    echo "use cargo build --release there" >&2
    exit 2
    ;;
esac
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --bin natshook --target "$host" "$@" >&2
echo "target/$host/release/natshook"
