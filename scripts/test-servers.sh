#!/usr/bin/env bash
# test-servers.sh - the servers the test suite runs against, on loopback with private data:
#   MariaDB 10.11 :3326, MySQL 9.7 :3327, Redis :6390, Kafka protocol (tansu) :19094.
# Usage: test-servers.sh start | stop | env
# `start` re-initialises the MariaDB/MySQL data directories when those servers are not running
# (every run starts with clean binlogs) and writes $BINLOGD_TEST_DIR/env (URLs for the tests).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BINLOGD_CACHE=${BINLOGD_CACHE:-$REPO/.cache}
T=${BINLOGD_TEST_DIR:-$REPO/target/ts}
S=$REPO/scripts
MYSQL_DIR=$BINLOGD_CACHE/mysql-sid

alive() { [ -s "$1" ] && kill -0 "$(tr -dc '0-9' < "$1")" 2>/dev/null; }

start() {
    mkdir -p "$T"
    if ! alive "$T/maria/mysqld.pid"; then rm -rf "$T/maria"; fi
    bash "$S/mariadb.sh" start "$T/maria" 3326
    if ! alive "$T/mysql/mysqld.pid"; then rm -rf "$T/mysql"; fi
    bash "$S/mysql.sh" start "$MYSQL_DIR" "$T/mysql" 3327
    bash "$S/redis.sh" start "$T/redis" 6390
    bash "$S/kafka.sh" start "$BINLOGD_CACHE/kafka-venv" "$T/kafka" 19094
    cat > "$T/env" <<ENV
export BINLOGD_TEST_MARIADB_URL=mysql://root@127.0.0.1:3326
export BINLOGD_TEST_MARIADB_CDC_URL=mysql://cdc:cdc@127.0.0.1:3326
export BINLOGD_TEST_MYSQL_URL=mysql://root@127.0.0.1:3327
export BINLOGD_TEST_MYSQL_CDC_URL=mysql://cdc:cdc@127.0.0.1:3327
export BINLOGD_TEST_REDIS_URL=redis://127.0.0.1:6390/
export BINLOGD_TEST_KAFKA_BROKERS=127.0.0.1:19094
export BINLOGD_TEST_KAFKA_VENV=$BINLOGD_CACHE/kafka-venv
export BINLOGD_TEST_SCRIPTS=$S
export BINLOGD_TEST_DIR=$T
export BINLOGD_MYSQL_DIR=$MYSQL_DIR
ENV
    echo "test-servers: up; environment in $T/env" >&2
}

stop() {
    bash "$S/kafka.sh" stop "$T/kafka" || true
    bash "$S/redis.sh" stop "$T/redis" || true
    bash "$S/mysql.sh" stop "$T/mysql" || true
    bash "$S/mariadb.sh" stop "$T/maria" || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) cat "$T/env" ;;
    *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac
