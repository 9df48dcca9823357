#!/usr/bin/env bash
# install-deps.sh - installs what building and testing binlogd needs on Debian 12 (idempotent):
# Debian packages (MariaDB 10.11, Redis 7, cmake and curl headers for librdkafka, python venv),
# MySQL 9.7 extracted privately from Debian sid (scripts/mysql.sh), and the tansu broker venv.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BINLOGD_CACHE=${BINLOGD_CACHE:-$REPO/.cache}
PKGS=(mariadb-server mariadb-client redis-server cmake libcurl4-openssl-dev libssl-dev pkg-config
      python3-venv build-essential zlib1g-dev time socat openssl)
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
command -v cargo >/dev/null || [ -x "$HOME/.cargo/bin/cargo" ] || { echo "install-deps: no Rust toolchain (cargo) found" >&2; exit 1; }
mkdir -p "$BINLOGD_CACHE"
bash "$REPO/scripts/mysql.sh" install "$BINLOGD_CACHE/mysql-sid"
bash "$REPO/scripts/kafka.sh" install "$BINLOGD_CACHE/kafka-venv"
