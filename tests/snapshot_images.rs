//! Snapshot read images against the binlog (issue 15), on real MariaDB 10.11 and MySQL 9.7:
//! rows of every column type are inserted while the daemon streams them (their binlog insert
//! images, rendered by the daemon), then read back in chunks by the snapshot reader and
//! encoder and rendered by the same renderer: each read image's `after` must equal the insert
//! image's `after` byte for byte. Also: composite and unique-only keys, 0 and 1 rows, chunking
//! (every row once, in key order), the keyless error, and the two watermark facts the design
//! rests on (MariaDB's Binlog_snapshot_position, MySQL's gtid_executed ordering).

mod common;

use binlogd::decode::event::{Change, SourceInfo, TxnChunks};
use binlogd::snapshot::catalog::{load_collations, load_table, KeyKind, SnapshotTable};
use binlogd::snapshot::chunk::{prepare_session, read_chunk, ChunkRead};
use binlogd::snapshot::progress::{KeyValue, SnapshotProgress};
use binlogd::snapshot::SnapshotError;
use common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// (name, type, values of rows 1..=5); row 3 is all NULL.
type Col = (&'static str, &'static str, [&'static str; 5]);

const COMMON: &[Col] = &[
    ("ti", "TINYINT", ["127", "-128", "NULL", "0", "5"]),
    ("tiu", "TINYINT UNSIGNED", ["255", "0", "NULL", "0", "7"]),
    ("si", "SMALLINT", ["32767", "-32768", "NULL", "0", "-2"]),
    ("siu", "SMALLINT UNSIGNED", ["65535", "0", "NULL", "0", "9"]),
    ("mi", "MEDIUMINT", ["8388607", "-8388608", "NULL", "0", "-3"]),
    ("miu", "MEDIUMINT UNSIGNED", ["16777215", "0", "NULL", "0", "3"]),
    ("i", "INT", ["2147483647", "-2147483648", "NULL", "0", "41"]),
    ("iu", "INT UNSIGNED", ["4294967295", "0", "NULL", "0", "4"]),
    ("bi", "BIGINT", ["9223372036854775807", "-9223372036854775808", "NULL", "0", "-1"]),
    ("biu", "BIGINT UNSIGNED", ["18446744073709551615", "0", "NULL", "0", "1"]),
    (
        "dec65",
        "DECIMAL(65,30)",
        [
            "99999999999999999999999999999999999.999999999999999999999999999999",
            "-12345678901234567890123456789012345.123456789012345678901234567891",
            "NULL",
            "0",
            "-0.000000000000000000000000000001",
        ],
    ),
    ("decn", "DECIMAL(12,4)", ["99999999.9999", "-98765432.1234", "NULL", "0", "-0.5"]),
    ("deci", "DECIMAL(10,0)", ["9999999999", "-1", "NULL", "0", "42"]),
    ("dec5", "DECIMAL(5,5)", ["0.99999", "-0.00001", "NULL", "0", "0.5"]),
    ("dec18", "DECIMAL(18,9)", ["123456789.123456789", "-0.000000001", "NULL", "0", "1"]),
    ("f", "FLOAT", ["3.40282e38", "-1.17549e-38", "NULL", "0", "0.1"]),
    (
        "d",
        "DOUBLE",
        ["1.7976931348623157e308", "-2.2250738585072014e-308", "NULL", "0", "0.1"],
    ),
    ("c", "CHAR(10)", ["'char😀'", "'  lead'", "NULL", "''", "'a'"]),
    (
        "vc",
        "VARCHAR(300)",
        [
            "REPEAT('é', 300)",
            "'text ✓ with \\\\ \"quotes\" and\\nnewline'",
            "NULL",
            "''",
            "'x'",
        ],
    ),
    ("txt", "TEXT", ["'ünï 😀'", "CONCAT('ctl', CHAR(1), CHAR(31))", "NULL", "''", "'y'"]),
    ("tt", "TINYTEXT", ["'tiny'", "'t'", "NULL", "''", "'u'"]),
    ("mt", "MEDIUMTEXT", ["REPEAT('m', 70000)", "'m'", "NULL", "''", "'v'"]),
    ("vl", "VARCHAR(20) CHARACTER SET latin1", ["'café'", "'Ærø'", "NULL", "''", "'z'"]),
    ("tl", "TEXT CHARACTER SET latin1", ["'naïve €uro'", "'x'", "NULL", "''", "'q'"]),
    ("bin", "BINARY(4)", ["x'00ff1000'", "x'ff'", "NULL", "''", "x'00000000'"]),
    ("vb", "VARBINARY(20)", ["x'00ff10'", "x'c328'", "NULL", "''", "x'80'"]),
    ("tb", "TINYBLOB", ["x'01'", "x'fe'", "NULL", "''", "x'00'"]),
    ("bl", "BLOB", ["x'deadbeef00'", "x'fffe'", "NULL", "''", "x'00'"]),
    ("lb", "LONGBLOB", ["x'00'", "REPEAT(x'ab', 1000)", "NULL", "''", "x'01'"]),
    ("dt", "DATE", ["'9999-12-31'", "'1000-01-01'", "NULL", "'0000-00-00'", "'2024-02-29'"]),
    ("y", "YEAR", ["2155", "1901", "NULL", "0", "2024"]),
    ("b1", "BIT(1)", ["b'1'", "b'0'", "NULL", "b'0'", "b'1'"]),
    ("b10", "BIT(10)", ["b'1111111111'", "b'1010101010'", "NULL", "0", "1"]),
    (
        "b64",
        "BIT(64)",
        [
            "b'1111111111111111111111111111111111111111111111111111111111111111'",
            "0",
            "NULL",
            "0",
            "12345",
        ],
    ),
    (
        "e",
        "ENUM('small','medium','large')",
        ["'large'", "'small'", "NULL", "''", "'medium'"],
    ),
    ("s", "SET('a','b','c','d')", ["'a,b,c,d'", "''", "NULL", "''", "'b,d'"]),
    (
        "j",
        "JSON",
        [
            "'{\"k\": [1, 2.5, \"x\", null, true], \"nested\": {\"e\": \"😀 ünï\", \"deeper\": {\"a\": []}}, \"big\": 12345678901234567890, \"neg\": -9223372036854775808, \"dbl\": 1e300, \"small\": 1.5e-7, \"tenth\": 0.1, \"three\": 3.0, \"huge\": 123456789012345678901234567890}'",
            "JSON_OBJECT('dec', CAST(1.50 AS DECIMAL(5,2)), 'arr', JSON_ARRAY(CAST(-0.001 AS DECIMAL(4,3)), CAST(12345678901234567890.123 AS DECIMAL(30,3)), -5, 70000, 'long', REPEAT('L', 300)))",
            "NULL",
            "'null'",
            "'[\"str\", {}, [], false, -1.25]'",
        ],
    ),
    (
        "g",
        "GEOMETRY",
        [
            "ST_GeomFromText('POINT(1 2)')",
            "ST_GeomFromText('LINESTRING(0 0,1 1)')",
            "NULL",
            "ST_GeomFromText('POINT(0 0)')",
            "ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))')",
        ],
    ),
];

const MARIADB_ONLY: &[Col] = &[
    (
        "uu",
        "UUID",
        [
            "'123e4567-e89b-12d3-a456-426655440000'",
            "'00000000-0000-0000-0000-000000000001'",
            "NULL",
            "'00000000-0000-0000-0000-000000000000'",
            "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
        ],
    ),
    (
        "i4",
        "INET4",
        [
            "'192.168.0.1'",
            "'0.0.0.0'",
            "NULL",
            "'10.0.0.0'",
            "'255.255.255.255'",
        ],
    ),
    (
        "i6",
        "INET6",
        [
            "'2001:db8::1'",
            "'::ffff:1.2.3.4'",
            "NULL",
            "'::'",
            "'fe80::1:2'",
        ],
    ),
];

const MYSQL_ONLY: &[Col] = &[(
    "vec",
    "VECTOR(3)",
    [
        "STRING_TO_VECTOR('[1,2.5,-3]')",
        "STRING_TO_VECTOR('[0.1,-0,3.4e38]')",
        "NULL",
        "STRING_TO_VECTOR('[0,0,0]')",
        "STRING_TO_VECTOR('[1e-7,7,8]')",
    ],
)];

/// TIME/DATETIME/TIMESTAMP at every fsp: generated columns (name, type, values).
fn temporal_cols() -> Vec<(String, String, [String; 5])> {
    let mut v = Vec::new();
    for fsp in 0..=6 {
        let t = |s: &str| format!("'{s}'");
        v.push((
            format!("tm{fsp}"),
            format!("TIME({fsp})"),
            [
                t("838:59:59"),
                t("-838:59:59"),
                "NULL".into(),
                t("00:00:00"),
                t("-12:34:56.654321"),
            ],
        ));
        v.push((
            format!("dt{fsp}"),
            format!("DATETIME({fsp})"),
            [
                t("9999-12-31 23:59:59"),
                t("1000-01-01 00:00:00"),
                "NULL".into(),
                t("0000-00-00 00:00:00"),
                t("2024-06-01 12:34:56.789012"),
            ],
        ));
        v.push((
            format!("ts{fsp}"),
            format!("TIMESTAMP({fsp}) NULL"),
            [
                t("2038-01-19 03:14:07"),
                t("1970-01-01 00:00:01"),
                "NULL".into(),
                t("0000-00-00 00:00:00"),
                t("2024-06-01 12:34:56.789012"),
            ],
        ));
    }
    v
}

fn all_cols(f: Flavor) -> Vec<(String, String, [String; 5])> {
    let extra = match f {
        Flavor::MariaDb => MARIADB_ONLY,
        Flavor::MySql => MYSQL_ONLY,
    };
    let mut v: Vec<(String, String, [String; 5])> = COMMON
        .iter()
        .chain(extra)
        .map(|(n, t, vals)| (n.to_string(), t.to_string(), vals.map(|x| x.to_string())))
        .collect();
    v.extend(temporal_cols());
    v
}

async fn cdc(f: Flavor) -> Conn {
    let opts = mysql_async::OptsBuilder::from_opts(Opts::from_url(&f.cdc_url()).unwrap())
        .prefer_socket(false);
    Conn::new(opts).await.expect("connect as cdc")
}

/// Reads the whole table in chunks of `limit` (the last read is the empty chunk that ends it);
/// returns every chunk and checks the progress JSON round trip at each step.
async fn read_all(
    c: &mut Conn,
    t: &SnapshotTable,
    limit: usize,
) -> Result<Vec<ChunkRead>, SnapshotError> {
    let mut chunks = Vec::new();
    let mut progress = SnapshotProgress::default();
    loop {
        // resume from the stored progress (serialised and read back), as after a restart
        let stored = SnapshotProgress::from_json(&progress.to_json())?;
        let after: Option<Vec<KeyValue>> = stored.tables.first().and_then(|p| p.last_key.clone());
        let r = read_chunk(c, t, after.as_deref(), None, limit).await?;
        let n = r.chunk.rows as u64;
        progress
            .table_mut(t.db(), t.table())
            .chunk_emitted(r.last_key.clone(), n);
        let done = r.last_key.is_none();
        chunks.push(r);
        if done {
            assert!(progress.tables[0].done);
            return Ok(chunks);
        }
        assert!(chunks.len() < 10_000, "no end");
    }
}

/// The `after` JSON (raw bytes) of every row of `chunks`, rendered by the event renderer.
fn render_afters(chunks: &[ChunkRead]) -> Vec<String> {
    let mut out = Vec::new();
    for r in chunks {
        let txn = TxnChunks {
            snapshot: None,
            file: Arc::from("snapshot"),
            gtid: None,
            chunks: Vec::new(),
        };
        for row in 0..r.chunk.rows as usize {
            let ch = Change {
                txn: &txn,
                chunk: &r.chunk,
                row,
            };
            let mut b = Vec::new();
            ch.write_json(&mut b, &SourceInfo::default(), 0)
                .unwrap_or_else(|e| panic!("render snapshot row: {e}"));
            let doc: BTreeMap<String, &RawValue> = serde_json::from_slice(&b).unwrap();
            assert_eq!(doc["op"].get(), "\"r\"");
            assert_eq!(doc["before"].get(), "null");
            let src: Value = serde_json::from_str(doc["source"].get()).unwrap();
            let mark = match r.chunk.op {
                binlogd::decode::event::Op::Read { last: true } => "last",
                _ => "true",
            };
            assert_eq!(src["snapshot"], mark, "{}", doc["source"].get());
            out.push(doc["after"].get().to_string());
        }
    }
    out
}

/// The binlog insert images in the daemon's output, per table: (after JSON as written).
fn binlog_afters(path: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let s = std::fs::read_to_string(path).unwrap();
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in s.lines().filter(|l| !l.is_empty()) {
        let doc: BTreeMap<String, &RawValue> = serde_json::from_str(line).unwrap();
        if doc["op"].get() != "\"c\"" {
            continue;
        }
        let src: Value = serde_json::from_str(doc["source"].get()).unwrap();
        let table = src["table"].as_str().unwrap().to_string();
        m.entry(table)
            .or_default()
            .push(doc["after"].get().to_string());
    }
    m
}

/// The values of `cols` in an after image, as a JSON text (a map key).
fn key_of(after: &str, cols: &[&str]) -> String {
    let v: Value = serde_json::from_str(after).unwrap();
    let k: Vec<&Value> = cols.iter().map(|c| &v[*c]).collect();
    serde_json::to_string(&k).unwrap()
}

/// Asserts each snapshot image equals the binlog image of the same key, naming the columns
/// that differ.
fn assert_same_images(what: &str, snap: &[String], binlog: &[String], key: &[&str]) {
    let by_key: BTreeMap<String, &String> = binlog.iter().map(|a| (key_of(a, key), a)).collect();
    assert_eq!(snap.len(), binlog.len(), "{what}: row count");
    for s in snap {
        let k = key_of(s, key);
        let b = by_key
            .get(&k)
            .unwrap_or_else(|| panic!("{what}: no binlog image for key {k}"));
        if s.as_str() != b.as_str() {
            let sv: BTreeMap<String, Box<RawValue>> = serde_json::from_str(s).unwrap();
            let bv: BTreeMap<String, Box<RawValue>> = serde_json::from_str(b).unwrap();
            let diffs: Vec<String> = bv
                .iter()
                .filter(|(c, v)| sv.get(*c).map(|x| x.get()) != Some(v.get()))
                .map(|(c, v)| {
                    let a = v.get();
                    let b = sv.get(c).map(|x| x.get()).unwrap_or("(absent)");
                    // from a little before the first difference
                    let at = a
                        .bytes()
                        .zip(b.bytes())
                        .position(|(x, y)| x != y)
                        .unwrap_or(a.len().min(b.len()));
                    let cut = |x: &str| {
                        let mut from = at.saturating_sub(40);
                        while !x.is_char_boundary(from.min(x.len())) {
                            from -= 1;
                        }
                        let from = from.min(x.len());
                        let mut to = (from + 150).min(x.len());
                        while !x.is_char_boundary(to) {
                            to -= 1;
                        }
                        format!("…{}…", &x[from..to])
                    };
                    format!("{c}: binlog {} snapshot {}", cut(a), cut(b))
                })
                .collect();
            panic!(
                "{what}: key {k}: snapshot image differs from the binlog image:\n  {}\n(column order/sets: snapshot {:?} binlog {:?})",
                diffs.join("\n  "),
                sv.keys().collect::<Vec<_>>(),
                bv.keys().collect::<Vec<_>>()
            );
        }
    }
}

fn images(f: Flavor) {
    let rt = rt();
    let db = format!("snap_img_{}", f.tag());
    let dir = workdir(&db);
    let mut c = rt.block_on(root(f));
    let cols = all_cols(f);
    rt.block_on(async {
        fresh_db(&mut c, &db).await;
        let defs: Vec<String> = cols.iter().map(|(n, t, _)| format!("`{n}` {t}")).collect();
        c.query_drop(format!(
            "CREATE TABLE `{db}`.alltypes (id INT PRIMARY KEY, {}, gen BIGINT AS (i + 1) STORED, genv BIGINT AS (i + 2) VIRTUAL)",
            defs.join(", ")
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "CREATE TABLE `{db}`.ck (a INT NOT NULL, b VARCHAR(20) CHARACTER SET latin1 NOT NULL, \
             c VARBINARY(8) NOT NULL, v INT, PRIMARY KEY (a, b, c))"
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "CREATE TABLE `{db}`.uq (x INT NULL, code VARCHAR(10) NOT NULL, v TEXT, \
             UNIQUE KEY nullable_u (x), UNIQUE KEY code_u (code), KEY plain (v(5)))"
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "CREATE TABLE `{db}`.empty (id INT PRIMARY KEY, v INT)"
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "CREATE TABLE `{db}`.one (id BIGINT UNSIGNED PRIMARY KEY, v VARCHAR(5))"
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "CREATE TABLE `{db}`.nokey (a INT, b INT, UNIQUE KEY (a))"
        ))
        .await
        .unwrap();
    });
    let start = rt.block_on(binlog_end(&mut c, f));
    let mut d = Daemon::start(&dir, &config(f, &db, &db, &start, &dir, ""));
    let nrows = rt.block_on(async {
        c.query_drop("SET SESSION sql_mode = ''").await.unwrap();
        let names: Vec<&str> = cols.iter().map(|(n, _, _)| n.as_str()).collect();
        for r in 0..5 {
            let vals: Vec<&str> = cols.iter().map(|(_, _, v)| v[r].as_str()).collect();
            c.query_drop(format!(
                "INSERT INTO `{db}`.alltypes (id, {}) VALUES ({}, {})",
                names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                r + 1,
                vals.join(", ")
            ))
            .await
            .unwrap_or_else(|e| panic!("insert row {}: {e}", r + 1));
        }
        // composite key: latin1 accents and binary bytes that sort around each other
        let mut ck = Vec::new();
        for a in 0..5 {
            for (b, cc) in [
                ("'é'", "x'00'"),
                ("'e'", "x'ff'"),
                ("'E '", "x'0000'"),
                ("'zz'", "x''"),
                ("'Æ'", "x'80'"),
            ] {
                ck.push(format!("({a}, {b}, {cc}, {})", ck.len()));
            }
        }
        c.query_drop(format!("INSERT INTO `{db}`.ck VALUES {}", ck.join(", ")))
            .await
            .unwrap();
        c.query_drop(format!(
            "INSERT INTO `{db}`.uq VALUES (NULL, 'b', 'x'), (NULL, 'a', NULL), (1, 'c', 'long text'), (2, 'A0', '')"
        ))
        .await
        .unwrap();
        c.query_drop(format!("INSERT INTO `{db}`.one VALUES (18446744073709551615, 'only')"))
            .await
            .unwrap();
        5 + ck.len() + 4 + 1
    });
    d.wait_events(nrows, Duration::from_secs(60));
    assert_eq!(d.stop(), Some(0), "log:\n{}", d.log_text());
    let binlog = binlog_afters(&d.out);

    rt.block_on(async {
        let mut s = cdc(f).await;
        prepare_session(&mut s).await.unwrap();
        let coll = load_collations(&mut s).await.unwrap();

        // every type, in chunks of 2 (3 chunks with rows, then the empty one)
        let t = load_table(&mut s, &db, "alltypes", &coll).await.unwrap();
        assert_eq!(t.key_kind, KeyKind::Primary);
        let chunks = read_all(&mut s, &t, 2).await.unwrap();
        assert_eq!(
            chunks.iter().map(|c| c.chunk.rows).collect::<Vec<_>>(),
            [2, 2, 1, 0]
        );
        let snap = render_afters(&chunks);
        let ids: Vec<String> = snap.iter().map(|a| key_of(a, &["id"])).collect();
        assert_eq!(ids, ["[1]", "[2]", "[3]", "[4]", "[5]"], "key order");
        assert_same_images("alltypes", &snap, &binlog["alltypes"], &["id"]);

        // composite key (int, latin1 text, binary) read 3 rows at a time
        let t = load_table(&mut s, &db, "ck", &coll).await.unwrap();
        assert_eq!(t.key_names(), ["a", "b", "c"]);
        let chunks = read_all(&mut s, &t, 3).await.unwrap();
        assert_eq!(chunks.len(), 25 / 3 + 1 + 1, "9 chunks with rows, then the empty one");
        let snap = render_afters(&chunks);
        assert_same_images("ck", &snap, &binlog["ck"], &["a", "b", "c"]);
        // every row once, in the server's key order
        let order: Vec<(i64, String, String)> = s
            .query(format!(
                "SELECT a, HEX(CONVERT(b USING utf8mb4)), TO_BASE64(c) FROM `{db}`.ck ORDER BY a, b, c"
            ))
            .await
            .unwrap();
        let got: Vec<String> = snap.iter().map(|a| key_of(a, &["a", "b", "c"])).collect();
        let want: Vec<String> = order
            .iter()
            .map(|(a, bh, c64)| {
                let b = String::from_utf8(
                    (0..bh.len() / 2)
                        .map(|i| u8::from_str_radix(&bh[2 * i..2 * i + 2], 16).unwrap())
                        .collect(),
                )
                .unwrap();
                serde_json::to_string(&(a, b, c64)).unwrap()
            })
            .collect();
        assert_eq!(got, want, "composite key order");

        // unique NOT NULL key only (the nullable unique key is skipped)
        let t = load_table(&mut s, &db, "uq", &coll).await.unwrap();
        assert_eq!(t.key_kind, KeyKind::Unique("code_u".into()));
        assert!(t.schema.primary_key.is_empty());
        let chunks = read_all(&mut s, &t, 1).await.unwrap();
        let snap = render_afters(&chunks);
        assert_same_images("uq", &snap, &binlog["uq"], &["code"]);
        let codes: Vec<String> = snap.iter().map(|a| key_of(a, &["code"])).collect();
        // utf8mb4 collation order: a < A0 < b < c (case-insensitive)
        assert_eq!(codes, ["[\"a\"]", "[\"A0\"]", "[\"b\"]", "[\"c\"]"]);

        // 0 rows: one empty chunk, done
        let t = load_table(&mut s, &db, "empty", &coll).await.unwrap();
        let chunks = read_all(&mut s, &t, 100).await.unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].chunk.rows, 0);

        // 1 row (the largest BIGINT UNSIGNED as the key)
        let t = load_table(&mut s, &db, "one", &coll).await.unwrap();
        let chunks = read_all(&mut s, &t, 100).await.unwrap();
        assert_eq!(
            chunks.iter().map(|c| c.chunk.rows).collect::<Vec<_>>(),
            [1, 0]
        );
        assert_eq!(chunks[0].last_key, Some(vec![KeyValue::UInt(u64::MAX)]));
        assert_same_images("one", &render_afters(&chunks), &binlog["one"], &["id"]);
        // the table's last read event carries source.snapshot = "last" (checked in render_afters)
        let mut chunks = chunks;
        chunks[0].chunk.op = binlogd::decode::event::Op::Read { last: true };
        assert_same_images("one (last)", &render_afters(&chunks[..1]), &binlog["one"], &["id"]);

        // no usable key: a clear error naming the table and the fix
        let e = load_table(&mut s, &db, "nokey", &coll).await.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, SnapshotError::NoKey { .. }), "{msg}");
        assert!(
            msg.contains(&format!("{db}.nokey")) && msg.contains("add a primary key"),
            "{msg}"
        );
        let e = load_table(&mut s, &db, "missing", &coll).await.unwrap_err();
        assert!(matches!(e, SnapshotError::NoTable { .. }), "{e}");

        // an ALTER between loading the schema and reading a chunk is refused, not encoded
        // into a wrong image (wider integer; another character set); a fresh load reads fine
        let mut r = root(f).await;
        for alter in [
            "MODIFY v BIGINT",
            "MODIFY b VARCHAR(20) CHARACTER SET utf8mb4 NOT NULL",
        ] {
            let t = load_table(&mut s, &db, "ck", &coll).await.unwrap();
            r.query_drop(format!("ALTER TABLE `{db}`.ck {alter}"))
                .await
                .unwrap();
            let e = read_chunk(&mut s, &t, None, None, 10).await.unwrap_err();
            assert!(matches!(e, SnapshotError::SchemaChanged { .. }), "{alter}: {e}");
            eprintln!("{}: {alter}: {e}", f.tag());
            let t = load_table(&mut s, &db, "ck", &coll).await.unwrap();
            assert_eq!(read_chunk(&mut s, &t, None, None, 10).await.unwrap().chunk.rows, 10);
        }
    });
}

#[test]
fn images_equal_binlog_images_mariadb() {
    images(Flavor::MariaDb);
}

#[test]
fn images_equal_binlog_images_mysql() {
    images(Flavor::MySql);
}

/// The generated chunk query is an index range scan on both servers (the row-value form
/// `(a, b) > (?, ?)` is not: a full index scan from the start).
fn chunk_query_uses_a_range(f: Flavor) {
    let rt = rt();
    let db = format!("snap_explain_{}", f.tag());
    rt.block_on(async {
        let mut c = root(f).await;
        fresh_db(&mut c, &db).await;
        c.query_drop(format!(
            "CREATE TABLE `{db}`.t (a INT NOT NULL, b VARCHAR(20) NOT NULL, c INT NOT NULL, v INT, PRIMARY KEY (a, b, c))"
        ))
        .await
        .unwrap();
        let mut vals = Vec::new();
        for n in 0..3000 {
            vals.push(format!("({}, 'x{}', {}, {n})", n % 100, n % 7, n));
        }
        c.query_drop(format!("INSERT INTO `{db}`.t VALUES {}", vals.join(",")))
            .await
            .unwrap();
        c.query_drop(format!("ANALYZE TABLE `{db}`.t")).await.unwrap();
        let mut s = cdc(f).await;
        prepare_session(&mut s).await.unwrap();
        let coll = load_collations(&mut s).await.unwrap();
        let t = load_table(&mut s, &db, "t", &coll).await.unwrap();
        let after = [
            KeyValue::Int(50),
            KeyValue::Bytes(b"x3".to_vec()),
            KeyValue::Int(1500),
        ];
        let sql = binlogd::snapshot::chunk::chunk_sql(&t, true, None, 100);
        let params = binlogd::snapshot::chunk::chunk_params(&t, &after).unwrap();
        let rows: Vec<mysql_async::Row> = s.exec(format!("EXPLAIN {sql}"), params).await.unwrap();
        let col = |r: &mysql_async::Row, n: &str| -> Option<String> {
            let i = r
                .columns_ref()
                .iter()
                .position(|c| c.name_str().eq_ignore_ascii_case(n))?;
            r.get::<Option<String>, _>(i).flatten()
        };
        // MariaDB: the traditional table; MySQL 9.7: one TREE text (explain_format default)
        let plan = |r: &mysql_async::Row| match col(r, "EXPLAIN") {
            Some(tree) => tree,
            None => format!(
                "type={} key={}",
                col(r, "type").unwrap_or_default(),
                col(r, "key").unwrap_or_default()
            ),
        };
        let p = plan(&rows[0]);
        eprintln!("{}: EXPLAIN {sql}:\n{p}", f.tag());
        assert!(
            p.contains("type=range key=PRIMARY") || p.contains("Index range scan on t using PRIMARY"),
            "{p}"
        );
        // the row-value form, for the record
        let rows: Vec<mysql_async::Row> = s
            .query(format!(
                "EXPLAIN SELECT * FROM `{db}`.t WHERE (a, b, c) > (50, 'x3', 1500) ORDER BY a, b, c LIMIT 100"
            ))
            .await
            .unwrap();
        eprintln!("{}: row-value form: {}", f.tag(), plan(&rows[0]));
        // and the chunk returns what the row-value comparison means
        let r = read_chunk(&mut s, &t, Some(&after), None, 100).await.unwrap();
        let want: Vec<(i64, String, i64)> = s
            .query(format!(
                "SELECT a, b, c FROM `{db}`.t WHERE (a, b, c) > (50, 'x3', 1500) ORDER BY a, b, c LIMIT 100"
            ))
            .await
            .unwrap();
        let got: Vec<String> = render_afters(&[r])
            .iter()
            .map(|a| key_of(a, &["a", "b", "c"]))
            .collect();
        let want: Vec<String> = want
            .iter()
            .map(|k| serde_json::to_string(k).unwrap())
            .collect();
        assert_eq!(got, want);
    });
}

#[test]
fn chunk_query_uses_a_range_mariadb() {
    chunk_query_uses_a_range(Flavor::MariaDb);
}

#[test]
fn chunk_query_uses_a_range_mysql() {
    chunk_query_uses_a_range(Flavor::MySql);
}

/// SHOW BINLOG EVENTS from `start`: for each rows event on `db.table`, (end_log_pos, GTID of
/// its transaction). One row per rows event (the writers insert single rows).
async fn rows_events(
    c: &mut Conn,
    start: &(String, u64),
    db: &str,
    table: &str,
) -> Vec<(u64, String)> {
    let rows: Vec<mysql_async::Row> = c
        .query(format!(
            "SHOW BINLOG EVENTS IN '{}' FROM {}",
            start.0, start.1
        ))
        .await
        .unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut gtid = String::new();
    let mut out = Vec::new();
    let name = format!("({db}.{table})");
    for r in rows {
        let ty: String = r.get(2).unwrap();
        let end: u64 = r.get(4).unwrap();
        let info: String = r.get::<Option<String>, _>(5).unwrap().unwrap_or_default();
        let table_id = || {
            info.strip_prefix("table_id: ")
                .and_then(|x| x.split_whitespace().next())
                .map(str::to_string)
        };
        if ty == "Gtid" {
            // MySQL: SET @@SESSION.GTID_NEXT= 'uuid:n'
            gtid = info.split('\'').nth(1).unwrap_or_default().to_string();
        } else if ty == "Table_map" && info.ends_with(&name) {
            ids.extend(table_id());
        } else if ty.starts_with("Write_rows") && table_id().is_some_and(|i| ids.contains(&i)) {
            out.push((end, gtid.clone()));
        }
    }
    out
}

/// Inserts ids 1, 2, … one per transaction into `db.t` until `stop`; returns the count.
async fn writer(f: Flavor, db: String, stop: Arc<std::sync::atomic::AtomicBool>) -> u64 {
    let mut c = root(f).await;
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        c.exec_drop(format!("INSERT INTO `{db}`.t VALUES (?, 0)"), (n,))
            .await
            .unwrap();
    }
    n
}

/// MariaDB: the rows a consistent-snapshot read sees are exactly those whose rows events end
/// at or before its Binlog_snapshot_position, under concurrent commits.
#[test]
fn mariadb_snapshot_position_is_exact() {
    use binlogd::snapshot::chunk::read_chunk_mariadb;
    use binlogd::snapshot::Watermark;
    let f = Flavor::MariaDb;
    let rt = rt();
    let db = "snap_wm_maria".to_string();
    rt.block_on(async {
        let mut c = root(f).await;
        fresh_db(&mut c, &db).await;
        c.query_drop(format!(
            "CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, v INT)"
        ))
        .await
        .unwrap();
        let start = binlog_end(&mut c, f).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = tokio::spawn(writer(f, db.clone(), stop.clone()));
        let mut s = cdc(f).await;
        prepare_session(&mut s).await.unwrap();
        let coll = load_collations(&mut s).await.unwrap();
        let t = load_table(&mut s, &db, "t", &coll).await.unwrap();
        let mut samples = Vec::new();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..40 {
            let (r, wm) = read_chunk_mariadb(&mut s, &t, None, None, 10_000_000, usize::MAX)
                .await
                .unwrap();
            let Watermark::Coord(at) = wm else {
                panic!("MariaDB gives a coordinate")
            };
            samples.push((at, r.chunk.rows as u64));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let total = w.await.unwrap();
        let events = rows_events(&mut c, &start, &db, "t").await;
        assert_eq!(events.len() as u64, total, "one rows event per insert");
        let mut inside = 0;
        for (at, rows) in &samples {
            assert_eq!(at.file, start.0, "no rotation during the test");
            let before = events.iter().filter(|(end, _)| *end <= at.pos).count() as u64;
            assert_eq!(
                before, *rows,
                "snapshot at {at} saw {rows} rows; {before} rows events end at or before it"
            );
            if *rows > 0 && *rows < total {
                inside += 1;
            }
        }
        eprintln!(
            "mariadb: {} samples, {inside} taken while inserts ran, {total} inserts",
            samples.len()
        );
        assert!(inside >= 20, "the samples ran concurrently with the writer");
    });
}

/// MySQL: low = gtid_executed before START TRANSACTION WITH CONSISTENT SNAPSHOT, high =
/// after COMMIT; every transaction in low is visible to the read, every visible one is in high,
/// under concurrent commits.
#[test]
fn mysql_gtid_watermarks_bracket_the_snapshot() {
    use binlogd::binlog::position::MySqlGtidSet;
    use binlogd::snapshot::chunk::read_chunk_mysql;
    use binlogd::snapshot::Watermark;
    let f = Flavor::MySql;
    let rt = rt();
    let db = "snap_wm_mysql".to_string();
    rt.block_on(async {
        let mut c = root(f).await;
        fresh_db(&mut c, &db).await;
        c.query_drop(format!(
            "CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, v INT)"
        ))
        .await
        .unwrap();
        let start = binlog_end(&mut c, f).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = tokio::spawn(writer(f, db.clone(), stop.clone()));
        let mut s = cdc(f).await;
        prepare_session(&mut s).await.unwrap();
        let coll = load_collations(&mut s).await.unwrap();
        let t = load_table(&mut s, &db, "t", &coll).await.unwrap();
        let mut samples = Vec::new();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = MySqlGtidSet::default();
        for _ in 0..40 {
            let (r, wm) = read_chunk_mysql(
                &mut s,
                &t,
                None,
                None,
                10_000_000,
                usize::MAX,
                &seen,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            let Watermark::Gtids { low, high } = wm else {
                panic!("MySQL gives GTID sets")
            };
            samples.push((low, high, r.chunk.rows as u64));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let total = w.await.unwrap();
        let events = rows_events(&mut c, &start, &db, "t").await;
        assert_eq!(events.len() as u64, total, "one rows event per insert");
        let contains = |set: &MySqlGtidSet, g: &str| {
            let (sid, n) = g.rsplit_once(':').unwrap();
            set.contains(sid, n.parse().unwrap())
        };
        let (mut inside, mut gap) = (0, 0);
        for (low, high, rows) in &samples {
            // id k (1-based) is the k-th rows event; the read saw ids 1..=rows
            for (k, (_, g)) in events.iter().enumerate() {
                let visible = (k as u64) < *rows;
                if contains(low, g) {
                    assert!(visible, "id {} ({g}) is in low but not visible", k + 1);
                }
                if visible {
                    assert!(
                        contains(high, g),
                        "id {} ({g}) is visible but not in high",
                        k + 1
                    );
                }
            }
            if *rows > 0 && *rows < total {
                inside += 1;
            }
            if high.subtract(low).count() > 0 {
                gap += 1;
            }
        }
        eprintln!(
            "mysql: {} samples, {inside} while inserts ran, {gap} with high ≠ low, {total} inserts",
            samples.len()
        );
        assert!(inside >= 20, "the samples ran concurrently with the writer");
    });
}

/// One row change of the daemon's output: (op, file, pos, gtid, before, after).
struct StreamEv {
    op: String,
    file: String,
    pos: u64,
    gtid: Option<String>,
    before: Value,
    after: Value,
}

fn stream_events(path: &std::path::Path) -> Vec<StreamEv> {
    read_events(path)
        .into_iter()
        .map(|e| StreamEv {
            op: e["op"].as_str().unwrap().to_string(),
            file: e["source"]["file"].as_str().unwrap().to_string(),
            pos: e["source"]["pos"].as_u64().unwrap(),
            gtid: e["source"]["gtid"].as_str().map(str::to_string),
            before: e["before"].clone(),
            after: e["after"].clone(),
        })
        .collect()
}

/// A row's key as the window records it (`[42]`).
fn key_bytes(img: &Value) -> Vec<u8> {
    serde_json::to_vec(&[&img["id"]]).unwrap()
}

/// Under a concurrent write load (inserts, updates, deletes, key changes), chunks read with
/// their watermarks and filtered by the window, replayed in stream order with the stream's
/// changes into a model, give the table's final state: 0 lost, 0 stale. The stream is the
/// daemon's real output; the windows are driven offline from it (the wiring into the stream
/// loop is not part of this module). Each window opens at the server's current point (binlog
/// end / gtid_executed), an upper bound of where a real stream could be, and records what the
/// stream hands on after that point.
fn converges(f: Flavor) {
    use binlogd::binlog::position::{coord_le, BinlogCoord, MySqlGtidSet};
    use binlogd::snapshot::chunk::{gtid_executed, read_chunk_mariadb, read_chunk_mysql};
    use binlogd::snapshot::window::{Emission, StreamPoint, Watermark, Window};
    let rt = rt();
    let db = format!("snap_conv_{}", f.tag());
    let dir = workdir(&db);
    let mut c = rt.block_on(root(f));
    rt.block_on(async {
        fresh_db(&mut c, &db).await;
        c.query_drop(format!(
            "CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT NOT NULL)"
        ))
        .await
        .unwrap();
        let vals: Vec<String> = (1..=2000).map(|i| format!("({i}, 0)")).collect();
        c.query_drop(format!("INSERT INTO `{db}`.t VALUES {}", vals.join(",")))
            .await
            .unwrap();
    });
    // the stream starts after the existing rows: only the snapshot knows them
    let start = rt.block_on(binlog_end(&mut c, f));
    let mut d = Daemon::start(&dir, &config(f, &db, &db, &start, &dir, ""));
    std::thread::sleep(Duration::from_millis(500));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (db, stop) = (db.clone(), stop.clone());
        rt.spawn(async move {
            let mut c = root(f).await;
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut ops = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = next() % 2600 + 1;
                let q = match next() % 8 {
                    0 => format!("INSERT IGNORE INTO `{db}`.t VALUES ({id}, 1)"),
                    1 => format!("DELETE FROM `{db}`.t WHERE id = {id}"),
                    2 => format!(
                        "UPDATE IGNORE `{db}`.t SET id = {} WHERE id = {id}",
                        next() % 2600 + 1
                    ),
                    3 => format!(
                        "UPDATE `{db}`.t SET v = v + 1 WHERE id BETWEEN {id} AND {}",
                        id + 20
                    ),
                    _ => format!("UPDATE `{db}`.t SET v = v + 1 WHERE id = {id}"),
                };
                c.query_drop(q).await.unwrap();
                ops += 1;
            }
            ops
        })
    };
    // the snapshot, chunks of 100; each chunk reaches the (replayed) stream loop when the
    // stream has handed on what the server had when the read finished: a stream that keeps up
    type Pending = (ChunkRead, Watermark, StreamPoint);
    type Win = (Window, Option<Pending>);
    let (mut windows, stale): (Vec<Win>, usize) = rt.block_on(async {
        let mut s = cdc(f).await;
        prepare_session(&mut s).await.unwrap();
        let coll = load_collations(&mut s).await.unwrap();
        let t = load_table(&mut s, &db, "t", &coll).await.unwrap();
        let mut windows = Vec::new();
        let mut stale = 0;
        let mut after: Option<Vec<KeyValue>> = None;
        async fn point(s: &mut Conn, f: Flavor) -> StreamPoint {
            match f {
                Flavor::MariaDb => {
                    let (file, pos) = binlog_end(s, f).await;
                    StreamPoint::Coord(BinlogCoord { file, pos })
                }
                Flavor::MySql => StreamPoint::Gtids(gtid_executed(s).await.unwrap()),
            }
        }
        loop {
            tokio::time::sleep(Duration::from_millis(15)).await;
            let at = point(&mut s, f).await;
            let w = Window::open(&db, "t", t.key_names(), at.clone());
            let last = loop {
                let (read, wm) = match &at {
                    StreamPoint::Coord(_) => {
                        read_chunk_mariadb(&mut s, &t, after.as_deref(), None, 100, usize::MAX)
                            .await
                            .unwrap()
                    }
                    StreamPoint::Gtids(g) => read_chunk_mysql(
                        &mut s,
                        &t,
                        after.as_deref(),
                        None,
                        100,
                        usize::MAX,
                        g,
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap(),
                };
                if !wm.covers(&at) {
                    // what Window::chunk_read refuses as Stale: read again
                    stale += 1;
                    continue;
                }
                // a stream loop some 30 ms behind: changes after the watermark reach it first
                tokio::time::sleep(Duration::from_millis(30)).await;
                let arrived = point(&mut s, f).await;
                let last = read.last_key.clone();
                windows.push((w, Some((read, wm, arrived))));
                break last;
            };
            match last {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        (windows, stale)
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ops = rt.block_on(load).unwrap();
    let (final_state, all_gtids): (BTreeMap<i64, i64>, MySqlGtidSet) = rt.block_on(async {
        let rows: Vec<(i64, i64)> = c
            .query(format!("SELECT id, v FROM `{db}`.t ORDER BY id"))
            .await
            .unwrap();
        let g = match f {
            Flavor::MySql => gtid_executed(&mut c).await.unwrap(),
            Flavor::MariaDb => MySqlGtidSet::default(),
        };
        (rows.into_iter().collect(), g)
    });
    // the daemon has written everything when its output stops growing
    let t0 = std::time::Instant::now();
    let events = loop {
        let n = stream_events(&d.out).len();
        std::thread::sleep(Duration::from_millis(1500));
        let ev = stream_events(&d.out);
        if ev.len() == n && n > 0 {
            break ev;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "daemon did not settle"
        );
    };
    assert_eq!(d.stop(), Some(0), "log:\n{}", d.log_text());

    // the replay: before each event, tell every window where the stream is (emitting what
    // is due); record the event's keys in the windows it comes after; apply it to the model
    let gtid_of = |g: &str| -> (String, u64) {
        let (sid, n) = g.rsplit_once(':').unwrap();
        (sid.to_string(), n.parse().unwrap())
    };
    let ours: MySqlGtidSet = {
        let mut s = MySqlGtidSet::default();
        for e in events.iter().filter(|_| f == Flavor::MySql) {
            if let Some(g) = &e.gtid {
                let (sid, n) = gtid_of(g);
                s.add(&sid, n);
            }
        }
        s
    };
    // transactions of other databases (the stream passes them too)
    let mut seen = all_gtids.subtract(&ours);
    let mut model: BTreeMap<i64, i64> = BTreeMap::new();
    let (mut read_rows, mut dropped, mut chunks) = (0usize, 0usize, 0usize);
    let mut apply = |model: &mut BTreeMap<i64, i64>, e: &Emission| {
        chunks += 1;
        read_rows += e.rows_read;
        dropped += e.dropped;
        let txn = TxnChunks {
            snapshot: None,
            file: Arc::from("snapshot"),
            gtid: None,
            chunks: Vec::new(),
        };
        for row in 0..e.chunk.rows as usize {
            let ch = Change {
                txn: &txn,
                chunk: &e.chunk,
                row,
            };
            let mut b = Vec::new();
            ch.write_json(&mut b, &SourceInfo::default(), 0).unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            model.insert(
                v["after"]["id"].as_i64().unwrap(),
                v["after"]["v"].as_i64().unwrap(),
            );
        }
    };
    let mut cur_gtid: Option<String> = None;
    for e in &events {
        if f == Flavor::MySql && e.gtid != cur_gtid {
            if let Some(g) = cur_gtid.take() {
                let (sid, n) = gtid_of(&g);
                seen.add(&sid, n);
            }
            cur_gtid = e.gtid.clone();
        }
        let here = BinlogCoord {
            file: e.file.clone(),
            pos: e.pos,
        };
        let p = match f {
            Flavor::MariaDb => StreamPoint::Coord(here.clone()),
            Flavor::MySql => StreamPoint::Gtids(seen.clone()),
        };
        for (w, pending) in windows.iter_mut() {
            let arrived = match pending.as_ref().map(|x| &x.2) {
                Some(StreamPoint::Coord(r)) => match &p {
                    StreamPoint::Coord(h) => coord_le(&r.file, r.pos, h),
                    _ => false,
                },
                Some(StreamPoint::Gtids(r)) => match &p {
                    StreamPoint::Gtids(h) => h.contains_set(r),
                    _ => false,
                },
                None => false,
            };
            let em = if arrived {
                let (read, wm, _) = pending.take().unwrap();
                w.stream_passed(&p);
                w.chunk_read(read, wm).unwrap()
            } else {
                w.stream_passed(&p)
            };
            if let Some(em) = em {
                apply(&mut model, &em);
            }
            let after_open = match w.opened_at() {
                StreamPoint::Coord(o) => coord_le(&o.file, o.pos, &here),
                StreamPoint::Gtids(o) => {
                    let (sid, n) = gtid_of(e.gtid.as_deref().unwrap());
                    !o.contains(&sid, n)
                }
            };
            if after_open {
                for img in [&e.before, &e.after] {
                    if !img.is_null() {
                        w.record_key(key_bytes(img));
                    }
                }
            }
        }
        let id = |img: &Value| img["id"].as_i64().unwrap();
        match e.op.as_str() {
            "c" => {
                model.insert(id(&e.after), e.after["v"].as_i64().unwrap());
            }
            "u" => {
                model.remove(&id(&e.before));
                model.insert(id(&e.after), e.after["v"].as_i64().unwrap());
            }
            "d" => {
                model.remove(&id(&e.before));
            }
            o => panic!("op {o}"),
        }
    }
    // the stream's end: whatever is left is emitted
    let end = match f {
        Flavor::MariaDb => StreamPoint::Coord(BinlogCoord {
            file: "binlog.999999".into(),
            pos: u64::MAX,
        }),
        Flavor::MySql => StreamPoint::Gtids(all_gtids.clone()),
    };
    for (w, pending) in windows.iter_mut() {
        w.stream_passed(&end);
        let em = match pending.take() {
            Some((read, wm, _)) => w.chunk_read(read, wm).unwrap(),
            None => w.stream_passed(&end),
        };
        if let Some(em) = em {
            apply(&mut model, &em);
        }
    }
    eprintln!(
        "{}: {ops} write statements, {} row changes streamed, {chunks} chunks, {read_rows} rows read, {dropped} dropped by the windows, {stale} stale re-reads",
        f.tag(),
        events.len()
    );
    assert_eq!(chunks, windows.len(), "every chunk emitted once");
    let lost: Vec<_> = final_state
        .keys()
        .filter(|k| !model.contains_key(k))
        .collect();
    let extra: Vec<_> = model
        .keys()
        .filter(|k| !final_state.contains_key(k))
        .collect();
    let stale_rows: Vec<_> = final_state
        .iter()
        .filter(|(k, v)| model.get(k).is_some_and(|m| m != *v))
        .collect();
    assert!(
        lost.is_empty() && extra.is_empty() && stale_rows.is_empty(),
        "model ≠ table: lost {lost:?}, extra {extra:?}, stale {stale_rows:?}"
    );
    assert!(dropped > 0, "the load touched rows of open windows");
}

#[test]
fn converges_under_writes_mariadb() {
    converges(Flavor::MariaDb);
}

#[test]
fn converges_under_writes_mysql() {
    converges(Flavor::MySql);
}

/// Figures, not a timed test: a 200,000-row 10-column table read in chunks of 8,192 (read +
/// encode + the key of every row), then rendered as events. `cargo test --release -j 1 --test
/// snapshot_images throughput -- --ignored --nocapture`
fn throughput(f: Flavor) {
    let rt = rt();
    let db = format!("snap_perf_{}", f.tag());
    rt.block_on(async {
        let mut c = root(f).await;
        fresh_db(&mut c, &db).await;
        c.query_drop(format!(
            "CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, a INT, b BIGINT, c VARCHAR(64), \
             d DECIMAL(12,2), e DATETIME(6), f DOUBLE, g TINYINT, h VARCHAR(32), i INT UNSIGNED)"
        ))
        .await
        .unwrap();
        let depth = match f {
            Flavor::MariaDb => "max_recursive_iterations",
            Flavor::MySql => "cte_max_recursion_depth",
        };
        c.query_drop(format!("SET SESSION {depth} = 1000000"))
            .await
            .unwrap();
        c.query_drop(format!(
            "INSERT INTO `{db}`.t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 200000) \
             SELECT n, n % 1000, n * 7, CONCAT('row ', n, ' some text'), n / 100, '2024-06-01 12:34:56.123456', \
             n / 3, n % 100, 'abcdefgh', n FROM s"
        ))
        .await
        .unwrap();
        let mut s = cdc(f).await;
        prepare_session(&mut s).await.unwrap();
        let coll = load_collations(&mut s).await.unwrap();
        let t = load_table(&mut s, &db, "t", &coll).await.unwrap();
        let t0 = std::time::Instant::now();
        let mut after: Option<Vec<KeyValue>> = None;
        let mut rows = 0u64;
        let mut chunks = Vec::new();
        loop {
            let r = read_chunk(&mut s, &t, after.as_deref(), None, 8192).await.unwrap();
            rows += r.chunk.rows as u64;
            match r.last_key.clone() {
                Some(k) => after = Some(k),
                None => break,
            }
            chunks.push(r);
        }
        let read = t0.elapsed();
        let t1 = std::time::Instant::now();
        let txn = TxnChunks {
            snapshot: None,
            file: Arc::from("snapshot"),
            gtid: None,
            chunks: Vec::new(),
        };
        let mut out = Vec::with_capacity(1 << 20);
        let mut bytes = 0usize;
        for r in &chunks {
            for row in 0..r.chunk.rows as usize {
                Change {
                    txn: &txn,
                    chunk: &r.chunk,
                    row,
                }
                .write_json(&mut out, &SourceInfo::default(), 0)
                .unwrap();
                out.push(b'\n');
                if out.len() > 1 << 20 {
                    bytes += out.len();
                    out.clear();
                }
            }
        }
        bytes += out.len();
        let render = t1.elapsed();
        eprintln!(
            "{}: {rows} rows: read+encode {:.2} s = {:.0} rows/s; render {:.2} s = {:.0} rows/s ({} MB JSON)",
            f.tag(),
            read.as_secs_f64(),
            rows as f64 / read.as_secs_f64(),
            render.as_secs_f64(),
            rows as f64 / render.as_secs_f64(),
            bytes / 1_000_000
        );
        c.query_drop(format!("DROP DATABASE `{db}`")).await.unwrap();
    });
}

#[test]
#[ignore]
fn throughput_mariadb() {
    throughput(Flavor::MariaDb);
}

#[test]
#[ignore]
fn throughput_mysql() {
    throughput(Flavor::MySql);
}
