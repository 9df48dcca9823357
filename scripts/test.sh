#!/usr/bin/env bash
# test.sh - THE test command: installs what is missing, starts the test servers, runs
# fmt, clippy and the whole test suite against them, and stops the servers.
#   bash scripts/test.sh [extra cargo test args]      (BINLOGD_KEEP_SERVERS=1 keeps them running)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PATH="$HOME/.cargo/bin:$PATH"
phase() { local t0=$SECONDS; echo "== $1" >&2; shift; "$@"; echo "== done in $((SECONDS - t0))s" >&2; }

phase "install dependencies" bash scripts/install-deps.sh
stop_servers() { [ "${BINLOGD_KEEP_SERVERS:-0}" = 1 ] || bash scripts/test-servers.sh stop >/dev/null 2>&1 || true; }
trap stop_servers EXIT
phase "start test servers" bash scripts/test-servers.sh start
# shellcheck disable=SC1091
. "${BINLOGD_TEST_DIR:-$REPO/target/ts}/env"
phase "cargo fmt --check" cargo fmt --check
phase "cargo clippy" cargo clippy --release --all-targets -j 2 -- -D warnings
# the decoders' property tests run with a fixed seed here, so a CI run is reproducible;
# `cargo test --release --lib fuzz_tests` on its own explores new random cases every run
[ "${BINLOGD_FUZZ_RANDOM:-0}" = 1 ] || export PROPTEST_RNG_SEED=${PROPTEST_RNG_SEED:-1123}
phase "cargo test" cargo test --release -j 2 "$@"
