#!/usr/bin/env bash
# bench.sh - starts the test servers and runs the benchmarks, which print figures.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/install-deps.sh --bench
trap '[ "${BINLOGD_KEEP_SERVERS:-0}" = 1 ] || bash scripts/test-servers.sh stop >/dev/null 2>&1 || true' EXIT
bash scripts/test-servers.sh start
# shellcheck disable=SC1091
. "${BINLOGD_TEST_DIR:-$REPO/target/ts}/env"
cargo bench --bench throughput --bench redis_latency --bench kafka_latency
# production-shaped workloads on a private MariaDB (:3461, data kept in target/bench-wl)
cargo bench --bench workloads
# snapshot (issue 15): initial_only against mariadb-dump/mysqldump, to a file and to Kafka, on
# private MariaDB :3471, MySQL :3472 and tansu :19172 (data kept in target/bench-snap)
cargo bench --bench snapshot
