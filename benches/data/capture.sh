#!/usr/bin/env bash
# Regenerates benches/data/mariadb_mixed.bin, the binlog file benches/decode_render.rs decodes
# and renders (no servers needed once it exists).
#
# Writes a fixed workload into the database `bench_decode` of the MariaDB test server — a
# 10-column table (inserts, updates, deletes in 1,000-row transactions) and a wide table with
# DECIMAL, DATETIME(6), TIMESTAMP(3), DATE, DOUBLE, ENUM, JSON, TEXT and VARCHAR columns — then
# copies from the server's binlog file on disk its FORMAT_DESCRIPTION event and the
# transactions of that database between the binlog positions before and after the workload
# (other clients' transactions in between are left out), each event's end position rewritten
# for the new file and its CRC32 recomputed. It never rotates, flushes or purges binary logs.
#
# Run: . /work/main/target/ts/env && bash benches/data/capture.sh   (or: scripts/test-servers.sh
# started, BINLOGD_TEST_MARIADB_URL set). Needs the `mariadb` client and python3, and read
# access to the server's datadir.
set -euo pipefail

: "${BINLOGD_TEST_MARIADB_URL:?source target/ts/env (the URLs of the test servers)}"
here=$(cd "$(dirname "$0")" && pwd)
out="${1:-$here/mariadb_mixed.bin}"
db=bench_decode

# mysql://user[:pass]@host:port
rest=${BINLOGD_TEST_MARIADB_URL#mysql://}
creds=${rest%@*}
hostport=${rest#*@}
hostport=${hostport%%/*}
user=${creds%%:*}
pass=""
[[ $creds == *:* ]] && pass=${creds#*:}
host=${hostport%:*}
port=${hostport##*:}
sql() { MYSQL_PWD="$pass" mariadb -h "$host" -P "$port" -u "$user" -N -B "$@"; }

sql -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db DEFAULT CHARACTER SET utf8mb4;
CREATE TABLE $db.narrow (id BIGINT PRIMARY KEY, a INT, b BIGINT, c VARCHAR(64), d DECIMAL(12,2),
  e DATETIME(6), f DOUBLE, g TINYINT, h VARCHAR(32), i INT UNSIGNED);
CREATE TABLE $db.wide (id BIGINT PRIMARY KEY, amount DECIMAL(18,4), price DECIMAL(10,2),
  created DATETIME(6), updated DATETIME(6), seen TIMESTAMP(3) NULL, day DATE, ratio DOUBLE,
  qty INT UNSIGNED, state ENUM('new','paid','shipped','void'), title VARCHAR(200),
  note TEXT, doc JSON, tags VARCHAR(255))"

read -r file start < <(sql -e "SHOW MASTER STATUS" | cut -f1,2)
datadir=$(sql -e "SELECT @@datadir")

{
  # narrow: 10 transactions of 1,000 inserts, 5 of 1,000 updates, 2 of 500 deletes
  for k in $(seq 0 9); do
    a=$((k * 1000 + 1)); b=$((k * 1000 + 1000))
    echo "INSERT INTO $db.narrow SELECT seq, seq % 1000, seq * 7919, CONCAT('name-', seq, '-', MD5(seq)),
      seq / 7, '2026-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL (seq % 999999) MICROSECOND,
      seq / 3.0, seq % 100, LEFT(SHA1(seq), 20), seq * 13 FROM $db.seq_${a}_to_${b};"
  done
  for k in $(seq 0 4); do
    a=$((k * 2000 + 1)); b=$((k * 2000 + 1000))
    echo "UPDATE $db.narrow SET a = a + 1, c = CONCAT(c, '+'), d = d * 2, e = e + INTERVAL 1 DAY
      WHERE id BETWEEN $a AND $b;"
  done
  echo "DELETE FROM $db.narrow WHERE id BETWEEN 9001 AND 9500;"
  echo "DELETE FROM $db.narrow WHERE id BETWEEN 9501 AND 10000;"
  # wide: 4 transactions of 500 inserts, 2 of 500 updates
  for k in $(seq 0 3); do
    a=$((k * 500 + 1)); b=$((k * 500 + 500))
    echo "INSERT INTO $db.wide SELECT seq, seq * 1234.5678, (seq % 10000) / 100,
      '2025-06-01 12:00:00.123456' + INTERVAL seq MINUTE, '2025-06-02 08:30:00' + INTERVAL seq * 7 SECOND,
      '2025-06-03 00:00:00.5' + INTERVAL seq SECOND, '2025-01-01' + INTERVAL seq % 365 DAY, seq / 17.0,
      seq * 3, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'void'),
      CONCAT('Order ', seq, ' for customer ', seq % 97, ' \"quoted\" ünïcödé'),
      REPEAT(CONCAT('line ', seq, ' of a longer note; '), 1 + seq % 8),
      JSON_OBJECT('id', seq, 'sku', CONCAT('SKU-', seq % 500), 'items', JSON_ARRAY(seq % 5, seq % 7, 'x'),
                  'ship', JSON_OBJECT('city', ELT(1 + seq % 3, 'Berlin', 'Zürich', 'Lyon'), 'express', seq % 2 = 0)),
      CONCAT_WS(',', 'a', seq % 10, 'tag-b', seq % 3) FROM $db.seq_${a}_to_${b};"
  done
  echo "UPDATE $db.wide SET state = 'paid', price = price + 1, updated = updated + INTERVAL 1 HOUR,
    doc = JSON_SET(doc, '\$.paid', TRUE) WHERE id BETWEEN 1 AND 500;"
  echo "UPDATE $db.wide SET note = CONCAT(note, ' (amended)'), seen = NULL WHERE id BETWEEN 501 AND 1000;"
} | sql

read -r file2 end < <(sql -e "SHOW MASTER STATUS" | cut -f1,2)
if [[ $file2 != "$file" ]]; then
  echo "the binlog rotated during the capture ($file → $file2): run again" >&2
  exit 1
fi

python3 - "$datadir/$file" "$start" "$end" "$db" "$out" <<'PY'
import struct, sys, zlib

path, start, end, db, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
FDE, QUERY, XID, TABLE_MAP, GTID = 15, 2, 16, 19, 162
with open(path, "rb") as f:
    data = f.read(end)
assert data[:4] == b"\xfebin", "not a binlog file"

def events(lo, hi):
    at = lo
    while at < hi:
        size = struct.unpack_from("<I", data, at + 9)[0]
        yield at, data[at:at + size]
        at += size
    assert at == hi, f"events do not end at {hi} (at {at})"

fde = next(events(4, 4 + struct.unpack_from("<I", data, 4 + 9)[0]))[1]
assert fde[4] == FDE
crc = fde[-5] == 1  # the FDE's checksum algorithm byte (1 = CRC32)

def table_db(ev):
    # table id (6 bytes), flags (2), db name length (1), db name
    n = ev[19 + 8]
    return ev[19 + 9:19 + 9 + n].decode()

groups, cur = [], None
for at, ev in events(start, end):
    t = ev[4]
    if t == GTID:
        cur = [ev]
        groups.append(cur)
    elif cur is not None:
        cur.append(ev)
        if t == XID:  # the transaction's end; what follows until the next GTID is not its own
            cur = None
keep = [g for g in groups if any(e[4] == TABLE_MAP and table_db(e) == db for e in g)]

buf = bytearray(b"\xfebin")
def put(ev):
    ev = bytearray(ev)
    struct.pack_into("<I", ev, 13, len(buf) + len(ev))
    if ev[4] == FDE:
        ev[17] &= ~0x01  # LOG_EVENT_BINLOG_IN_USE_F: this copy is a closed file
    if crc:
        struct.pack_into("<I", ev, len(ev) - 4, zlib.crc32(bytes(ev[:-4])) & 0xFFFFFFFF)
    buf.extend(ev)
put(fde)
for g in keep:
    for e in g:
        put(e)
with open(out, "wb") as f:
    f.write(buf)
print(f"{out}: {len(buf)} bytes, {len(keep)} transactions of {db} "
      f"(binlog {path} {start}..{end}, {len(groups) - len(keep)} other transactions left out)")
PY
