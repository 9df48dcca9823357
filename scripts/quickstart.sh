#!/usr/bin/env bash
# quickstart.sh - what binlogd is for, in one command, on Debian 12 with a Rust toolchain:
# installs what is missing (scripts/install-deps.sh --quickstart), builds, starts a private
# MariaDB (127.0.0.1:3316), Redis (:6316) and Kafka-protocol broker tansu (:19016) with their
# data in target/quickstart, caches a few rows in Redis, runs binlogd with
# config/quickstart.toml while it updates, deletes and inserts rows, and shows the events,
# the cache keys binlogd deleted (and those it left) and the messages in Kafka. Then it stops
# everything. Runs again as often as you like.
# Usage:
#   quickstart.sh [--keep]   --keep (or QUICKSTART_KEEP=1): leave binlogd and the servers
#                            running and print how to continue by hand
#   quickstart.sh stop       stop what --keep left running
# Environment (optional): QUICKSTART_PORT (MariaDB, 3316), QUICKSTART_REDIS_PORT (6316),
#   QUICKSTART_KAFKA_PORT (19016), QUICKSTART_ADMIN_PORT (binlogd's /metrics, 9316),
#   QUICKSTART_DIR (servers' data, logs, events; default target/quickstart, relative to the
#   repository);
#   BINLOGD_BIN=path: no build, run this binary (KAFKA_TAIL_BIN: the kafka_tail example,
#   default BINLOGD_BIN's directory/examples/kafka_tail, built if missing).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PATH="$HOME/.cargo/bin:$PATH"
BINLOGD_CACHE=${BINLOGD_CACHE:-$REPO/.cache}
VENV=$BINLOGD_CACHE/kafka-venv
QS=$(realpath -m -- "${QUICKSTART_DIR:-target/quickstart}")
D=${QS#"$REPO"/}    # as shown: relative to the repository when inside it
LOG=$QS/servers.log
PORT=${QUICKSTART_PORT:-3316}
RPORT=${QUICKSTART_REDIS_PORT:-6316}
KPORT=${QUICKSTART_KAFKA_PORT:-19016}
APORT=${QUICKSTART_ADMIN_PORT:-9316}
KEEP=${QUICKSTART_KEEP:-0}
TOPIC=quickstart.shop.users
CHILD=""

usage() { sed -n '/^# Usage:/,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
die() { echo "quickstart: error: $*" >&2; exit 1; }
# a helper script with its messages in the log, shown when it fails
quiet() { "$@" >>"$LOG" 2>&1 || { tail -n 15 "$LOG" >&2; die "$* failed (log: ${LOG#"$REPO"/})"; }; }
sql() { mariadb --no-defaults --default-character-set=utf8mb4 -h127.0.0.1 -P"$PORT" -uroot -N -B -e "$1"; }
rcli() { redis-cli -p "$RPORT" "$@"; }
indent() { sed 's/^/   /'; }
# GET on binlogd's admin endpoint: the whole response, or nothing
http_get() {
    (exec 3<>"/dev/tcp/127.0.0.1/$APORT" &&
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$1" >&3 &&
        cat <&3) 2>/dev/null || true
}
daemon_alive() { [ -n "${1:-}" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'binlogd run'; }

stop_daemon() {
    local pid
    [ -s "$QS/binlogd.pid" ] || return 0
    pid=$(cat "$QS/binlogd.pid")
    if daemon_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        if [ "$pid" = "$CHILD" ]; then
            wait "$pid" 2>/dev/null || true
        else
            for _ in $(seq 1 350); do daemon_alive "$pid" || break; sleep 0.1; done
            if daemon_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        fi
    fi
    rm -f "$QS/binlogd.pid"
}
stop_all() {
    stop_daemon
    bash scripts/kafka.sh stop "$QS/kafka" >>"$LOG" 2>&1 || true
    bash scripts/redis.sh stop "$QS/redis" >>"$LOG" 2>&1 || true
    bash scripts/mariadb.sh stop "$QS/maria" >>"$LOG" 2>&1 || true
}

case "${1:-}" in
    "") ;;
    --keep) KEEP=1 ;;
    stop) mkdir -p "$QS"; stop_all; echo "quickstart: binlogd and the servers are stopped"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

echo "== install: what the build and the demo need (scripts/install-deps.sh --quickstart)"
bash scripts/install-deps.sh --quickstart
if [ -n "${BINLOGD_BIN:-}" ]; then
    BIN=$BINLOGD_BIN
    TAIL=${KAFKA_TAIL_BIN:-$(dirname "$BIN")/examples/kafka_tail}
    [ -x "$BIN" ] || die "BINLOGD_BIN=$BIN is not an executable"
    if [ ! -x "$TAIL" ]; then
        echo "== build: cargo build --release --example kafka_tail"
        cargo build --release -q --example kafka_tail
        TAIL=target/release/examples/kafka_tail
    fi
else
    echo "== build: cargo build --release (a first build takes several minutes)"
    cargo build --release -q --bin binlogd --example kafka_tail
    BIN=target/release/binlogd
    TAIL=target/release/examples/kafka_tail
fi
T0=$SECONDS

mkdir -p "$QS"
: >"$LOG"
CFG=config/quickstart.toml
if [ "$PORT:$RPORT:$KPORT:$APORT:$D" != 3316:6316:19016:9316:target/quickstart ]; then
    # other ports or directory: a copy of the config with them
    CFG=$D/quickstart.toml
    sed -e "s#\"target/quickstart/events.jsonl\"#\"$QS/events.jsonl\"#" \
        -e "s/127\.0\.0\.1:3316\b/127.0.0.1:$PORT/" -e "s/127\.0\.0\.1:6316\b/127.0.0.1:$RPORT/" \
        -e "s/127\.0\.0\.1:19016\b/127.0.0.1:$KPORT/" -e "s/127\.0\.0\.1:9316\b/127.0.0.1:$APORT/" \
        config/quickstart.toml >"$CFG"
fi

cleanup() {
    local rc=$?
    if [ -n "${MONITOR:-}" ]; then kill "$MONITOR" 2>/dev/null || true; fi
    if [ "$KEEP" = 1 ] && [ "$rc" = 0 ]; then return; fi
    [ "$rc" = 0 ] || echo "quickstart: failed; stopping binlogd and the servers (logs in $D)" >&2
    stop_all
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== servers: MariaDB 127.0.0.1:$PORT, Redis :$RPORT, Kafka (tansu) :$KPORT (data: $D)"
# an earlier --keep run's daemon; Kafka (memory storage) and Redis start empty every run
stop_daemon
quiet bash scripts/kafka.sh stop "$QS/kafka"
quiet bash scripts/redis.sh stop "$QS/redis"
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
maria_pid=$(cat "$QS/maria/mysqld.pid" 2>/dev/null || true)
maria_ours=0
if [ -n "$maria_pid" ] && kill -0 "$maria_pid" 2>/dev/null; then maria_ours=1; fi
for s in "MariaDB:$PORT:QUICKSTART_PORT:$maria_ours" "Redis:$RPORT:QUICKSTART_REDIS_PORT:0" \
         "Kafka:$KPORT:QUICKSTART_KAFKA_PORT:0" "binlogd admin:$APORT:QUICKSTART_ADMIN_PORT:0"; do
    IFS=: read -r name port var ours <<<"$s"
    if [ "$ours" = 0 ] && port_open "$port"; then
        die "port $port (for $name) is used by another program; choose another port, e.g. $var=$((port + 1000))"
    fi
done
quiet bash scripts/mariadb.sh start "$QS/maria" "$PORT"
quiet bash scripts/redis.sh start "$QS/redis" "$RPORT"
quiet bash scripts/kafka.sh start "$VENV" "$QS/kafka" "$KPORT"

# the application's data, and its read-through cache: each user under user:ID (the row as
# JSON) and user:email:EMAIL (the id)
sql "DROP DATABASE IF EXISTS shop; CREATE DATABASE shop;
     CREATE TABLE shop.users (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, name VARCHAR(50) NOT NULL);
     INSERT INTO shop.users VALUES (1, 'ada@example.com', 'Ada'), (2, 'bob@example.com', 'Bob'),
                                   (3, 'cy@example.com', 'Cy');"
CACHED=()
while IFS=$'\t' read -r id email json; do
    rcli SET "user:$id" "$json" >/dev/null
    rcli SET "user:email:$email" "$id" >/dev/null
    CACHED+=("user:$id" "user:email:$email")
done < <(sql "SELECT id, email, JSON_OBJECT('id', id, 'email', email, 'name', name) FROM shop.users ORDER BY id")
echo "== table shop.users has users 1, 2, 3; the application cached them in Redis under:"
echo "   ${CACHED[*]}"

echo "== $BIN check -c $CFG"
out=$("$BIN" check -c "$CFG" 2>&1) || { indent <<<"$out"; die "binlogd check found problems"; }
indent <<<"$out"

# start = "latest" applies again: forget where an earlier run stopped
quiet "$BIN" position reset -c "$CFG"
rm -f "$QS/events.jsonl"
: >"$QS/binlogd.log"
setsid "$BIN" run -c "$CFG" </dev/null >>"$QS/binlogd.log" 2>&1 &
CHILD=$!
echo "$CHILD" >"$QS/binlogd.pid"
deadline=$((SECONDS + 60))
until http_get /readyz | head -n 1 | grep -q ' 200 '; do
    daemon_alive "$CHILD" || { tail -n 20 "$QS/binlogd.log" >&2; die "binlogd exited (log: $D/binlogd.log)"; }
    [ $SECONDS -lt $deadline ] || die "binlogd not ready within 60s (log: $D/binlogd.log)"
    sleep 0.2
done

# every command Redis receives from now on (binlogd's deletes)
redis-cli -p "$RPORT" MONITOR >"$QS/redis-monitor.log" 2>&1 &
MONITOR=$!
for _ in $(seq 1 50); do grep -q '^OK' "$QS/redis-monitor.log" && break; sleep 0.1; done
echo "== binlogd runs (pid $CHILD); the application changes rows:"
for s in "UPDATE shop.users SET email = 'ada@example.org' WHERE id = 1" \
         "DELETE FROM shop.users WHERE id = 2" \
         "INSERT INTO shop.users VALUES (4, 'dan@example.com', 'Dan')"; do
    echo "   $s"
    sql "$s"
done
# every sink has acknowledged the changes once binlogd's acknowledged position (/metrics)
# reaches the server's end of binlog
read -r END_FILE END_POS _ < <(sql "SHOW MASTER STATUS")
deadline=$((SECONDS + 60))
while :; do
    m=$(http_get /metrics)
    f=$(sed -n 's/^binlogd_acked_position{.*file="\([^"]*\)".*/\1/p' <<<"$m")
    p=$(sed -n 's/^binlogd_acked_binlog_pos \([0-9]*\).*/\1/p' <<<"$m")
    [ "$f" = "$END_FILE" ] && [ "${p:-0}" -ge "$END_POS" ] && break
    daemon_alive "$CHILD" || { tail -n 20 "$QS/binlogd.log" >&2; die "binlogd exited (log: $D/binlogd.log)"; }
    [ $SECONDS -lt $deadline ] || die "binlogd did not acknowledge $END_FILE:$END_POS within 60s (at ${f:-?}:${p:-?}; log: $D/binlogd.log)"
    sleep 0.2
done

# MONITOR has seen everything before this marker
rcli ECHO quickstart-monitor-end >/dev/null
for _ in $(seq 1 50); do grep -q quickstart-monitor-end "$QS/redis-monitor.log" && break; sleep 0.1; done
kill "$MONITOR" 2>/dev/null || true
wait "$MONITOR" 2>/dev/null || true

echo "== events binlogd read from the binlog (file sink \"file\": $D/events.jsonl)"
"$VENV/bin/python" - "$QS/events.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    e = json.loads(line)
    s, b, a = e["source"], e["before"], e["after"]
    row = a or b
    key = next(iter(row))  # the demo table's first column is its primary key
    what = {"c": "insert", "u": "update", "d": "delete"}[e["op"]]
    if a and b:
        detail = ", ".join(f"{c}: {b.get(c)} -> {v}" for c, v in a.items() if b.get(c) != v)
    else:
        detail = ", ".join(f"{c}={v}" for c, v in row.items() if c != key)
    print(f"   {what} {s['db']}.{s['table']} {key}={row[key]}  {detail:<41}  (op \"{e['op']}\", gtid {s['gtid']})")
PY

DELETED=()
KEPT=()
for k in "${CACHED[@]}"; do
    if [ "$(rcli EXISTS "$k")" = 1 ]; then KEPT+=("$k"); else DELETED+=("$k"); fi
done
# the keys binlogd's UNLINK commands named (MONITOR lines: TIME [DB ADDR] "UNLINK" "key" …)
UNLINKED=$(grep -E '"(UNLINK|DEL)"' "$QS/redis-monitor.log" | sed -E 's/^[^"]*"(UNLINK|DEL)" //' \
    | tr ' ' '\n' | tr -d '"' | sort -uV | tr '\n' ' ')
echo "== Redis (sink \"cache\"): binlogd deleted the keys of each changed row's old and new values"
echo "   UNLINKed by binlogd: ${UNLINKED% }"
echo "   cached, now deleted: ${DELETED[*]:-none}"
echo "   cached, still there: ${KEPT[*]:-none}   (rows not changed)"

echo "== Kafka (sink \"kafka\"): topic/partition@offset, key, value of the messages read back (examples/kafka_tail.rs)"
"$TAIL" "127.0.0.1:$KPORT" "$TOPIC" --expect 3 --timeout 30 | indent

if [ "$KEEP" = 1 ]; then
    STOP="bash scripts/quickstart.sh stop"
    [ "$CFG" = config/quickstart.toml ] || STOP="QUICKSTART_DIR=$D $STOP"
    cat <<EOF
== kept running (took $((SECONDS - T0))s after the build). Continue by hand:
   config:   $CFG    (binlogd log: $D/binlogd.log)
   change:   mariadb --no-defaults -h127.0.0.1 -P$PORT -uroot shop -e "UPDATE users SET name = 'Cyd' WHERE id = 3"
   events:   tail $D/events.jsonl
   cache:    redis-cli -p $RPORT EXISTS user:3
   kafka:    $TAIL 127.0.0.1:$KPORT $TOPIC
   binlogd:  $BIN position show -c $CFG;  metrics: http://127.0.0.1:$APORT/metrics
   stop:     $STOP
EOF
else
    stop_all
    echo "== stopped binlogd and the servers; took $((SECONDS - T0))s after the build (--keep leaves them running)"
fi
