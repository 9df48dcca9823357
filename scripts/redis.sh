#!/usr/bin/env bash
# redis.sh - binlogd's test/dev helper: a private Redis (Debian redis-server) on loopback.
# Usage:
#   redis.sh start DIR PORT     start redis-server on 127.0.0.1:PORT (no persistence), wait for PING
#   redis.sh stop DIR           stop it (SIGTERM to the pid in DIR/redis.pid)
set -euo pipefail
PROG_NAME=$(basename "$0")
die() { echo "$PROG_NAME: error: $*" >&2; exit 1; }
log() { echo "$PROG_NAME: $*" >&2; }
pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

cmd_start() {
    [ $# -eq 2 ] || die "usage: $PROG_NAME start DIR PORT"
    local DIR PORT=$2; DIR=$(realpath -m -- "$1")
    command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
    mkdir -p "$DIR"
    if [ -s "$DIR/redis.pid" ] && pid_alive "$(cat "$DIR/redis.pid")"; then
        log "already running (pid $(cat "$DIR/redis.pid"))"; return 0
    fi
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" --dir "$DIR" --enable-debug-command yes \
        || die "redis-server failed to start (see $DIR/redis.log)"
    local deadline=$((SECONDS + 30))
    until redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; do
        [ $SECONDS -lt $deadline ] || die "redis did not answer PING within 30s (see $DIR/redis.log)"
        sleep 0.1
    done
    log "ready on 127.0.0.1:$PORT (pid $(cat "$DIR/redis.pid"))"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: $PROG_NAME stop DIR"
    local DIR; DIR=$(realpath -m -- "$1")
    [ -s "$DIR/redis.pid" ] || { log "not running"; return 0; }
    local pid; pid=$(cat "$DIR/redis.pid")
    pid_alive "$pid" || { log "not running"; return 0; }
    kill -TERM "$pid"
    local deadline=$((SECONDS + 30))
    while pid_alive "$pid"; do [ $SECONDS -lt $deadline ] || die "redis pid $pid still running"; sleep 0.1; done
    log "stopped"
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) sed -n '2,5p' "$0" >&2; exit 2 ;;
esac
