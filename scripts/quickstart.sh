#!/usr/bin/env bash
# quickstart.sh - binlogd end to end on this machine in one command: installs MariaDB if missing,
# starts a private instance on 127.0.0.1:3316, creates a table, starts binlogd with a JSON-lines
# sink on stdout, writes a few rows (insert, update, delete) and stops everything again.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PATH="$HOME/.cargo/bin:$PATH"
QS=$REPO/target/quickstart
PORT=${QUICKSTART_PORT:-3316}
if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q mariadb-server mariadb-client >/dev/null
fi
echo "== building binlogd" >&2
cargo build --release -q
mkdir -p "$QS"
bash scripts/mariadb.sh start "$QS/maria" "$PORT" 2>/dev/null
sql() { mariadb --no-defaults --default-character-set=utf8mb4 -h127.0.0.1 -P"$PORT" -uroot -e "$1"; }
# a fresh demo every run (the private instance keeps its data between runs)
sql "DROP DATABASE IF EXISTS shop; CREATE DATABASE shop; CREATE TABLE shop.users (id INT PRIMARY KEY, email VARCHAR(100), balance DECIMAL(10,2), seen TIMESTAMP(3) NULL)"
cat > "$QS/binlogd.toml" <<TOML
[source]
url = "mysql://cdc:cdc@127.0.0.1:$PORT"
server_id = 4242
name = "quickstart"
start = "latest"
include = ["shop.*"]

[[sinks.file]]
name = "stdout"
path = "-"

[log]
format = "human"
level = "warn"
TOML
echo "== binlogd check" >&2
./target/release/binlogd check -c "$QS/binlogd.toml" >&2
# forget where an earlier quickstart stopped: start = "latest" applies
./target/release/binlogd position reset -c "$QS/binlogd.toml" >/dev/null
echo "== streaming (events below are binlogd's output)" >&2
./target/release/binlogd run -c "$QS/binlogd.toml" &
PID=$!
cleanup() { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; bash scripts/mariadb.sh stop "$QS/maria" 2>/dev/null; }
trap cleanup EXIT
sleep 1
sql "INSERT INTO shop.users VALUES (1, 'ada@example.com', 10.50, NOW(3)), (2, 'bob@example.com', 0, NULL);
     UPDATE shop.users SET email = 'ada@example.org', balance = balance + 1 WHERE id = 1;
     DELETE FROM shop.users WHERE id = 2;"
sleep 1
