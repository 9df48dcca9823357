//! Every column type, inserted, updated and deleted on real MariaDB 10.11 and MySQL 9.7: each
//! emitted image must equal what SELECT returns, converted by the event-format rules.

mod common;

use base64::Engine;
use common::*;
use mysql_async::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum K {
    Num,
    DecStr,
    F32,
    F64,
    Str,
    B64,
    Json,
    DateTime,
    Ts,
    UnsignedNum,
}

const COLS: &[(&str, &str, K)] = &[
    ("ti", "TINYINT", K::Num),
    ("tiu", "TINYINT UNSIGNED", K::Num),
    ("si", "SMALLINT", K::Num),
    ("siu", "SMALLINT UNSIGNED", K::Num),
    ("mi", "MEDIUMINT", K::Num),
    ("miu", "MEDIUMINT UNSIGNED", K::Num),
    ("i", "INT", K::Num),
    ("iu", "INT UNSIGNED", K::Num),
    ("bi", "BIGINT", K::Num),
    ("biu", "BIGINT UNSIGNED", K::Num),
    ("dec65", "DECIMAL(65,30)", K::DecStr),
    ("decn", "DECIMAL(12,4)", K::DecStr),
    ("deci", "DECIMAL(10,0)", K::DecStr),
    ("f", "FLOAT", K::F32),
    ("d", "DOUBLE", K::F64),
    ("c", "CHAR(10)", K::Str),
    ("vc", "VARCHAR(300)", K::Str),
    ("txt", "TEXT", K::Str),
    ("vl", "VARCHAR(20) CHARACTER SET latin1", K::Str),
    ("tl", "TEXT CHARACTER SET latin1", K::Str),
    ("bin", "BINARY(4)", K::B64),
    ("vb", "VARBINARY(20)", K::B64),
    ("bl", "BLOB", K::B64),
    ("lb", "LONGBLOB", K::B64),
    ("dt", "DATE", K::Str),
    ("tm", "TIME(6)", K::Str),
    ("tm0", "TIME", K::Str),
    ("dt0", "DATETIME", K::DateTime),
    ("dt3", "DATETIME(3)", K::DateTime),
    ("dt6", "DATETIME(6)", K::DateTime),
    ("ts0", "TIMESTAMP NULL", K::Ts),
    ("ts3", "TIMESTAMP(3) NULL", K::Ts),
    ("ts6", "TIMESTAMP(6) NULL", K::Ts),
    ("y", "YEAR", K::UnsignedNum),
    ("b1", "BIT(1)", K::UnsignedNum),
    ("b64", "BIT(64)", K::UnsignedNum),
    ("b10", "BIT(10)", K::UnsignedNum),
    ("e", "ENUM('small','medium','large')", K::Str),
    ("s", "SET('a','b','c','d')", K::Str),
    ("j", "JSON", K::Json),
    ("g", "GEOMETRY", K::B64),
    ("gen", "BIGINT AS (i + 1) STORED", K::Num),
];

const ROW1: &str = "1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, \
    -9223372036854775808, 18446744073709551615, \
    '-12345678901234567890123456789012345.123456789012345678901234567891', -98765432.1234, 9999999999, \
    3.14159, 2.718281828459045, 'char😀', REPEAT('é', 300), 'text ✓ with \\\\ \"quotes\" and\\nnewline', \
    'café', 'naïve €uro', x'00ff1000', x'00ff10', x'deadbeef00', NULL, \
    '2024-02-29', '-838:59:59.000000', '838:59:59', '1000-01-01 00:00:00', '2024-12-31 23:59:59.123', \
    '9999-12-31 23:59:59.999999', '1970-01-01 00:00:01', '2038-01-19 03:14:07.999', '2024-06-01 12:34:56.789012', \
    2155, b'1', b'1111111111111111111111111111111111111111111111111111111111111111', b'1010101010', 'medium', 'a,c,d', \
    '{\"k\": [1, 2.5, \"x\", null, true], \"nested\": {\"e\": \"😀 ünï\"}, \"big\": 12345678901234567890, \"neg\": -9223372036854775808}', \
    ST_GeomFromText('POINT(1 2)')";

const ROW2: &str = "2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
    '', '', NULL, '', NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
    NULL, NULL, NULL, '', NULL, NULL";

fn expr(col: &str, k: K) -> String {
    match k {
        K::Str | K::Num | K::DecStr | K::F32 | K::F64 | K::Json => format!("CAST(`{col}` AS CHAR)"),
        K::B64 => format!("`{col}`"),
        K::DateTime => format!("REPLACE(CAST(`{col}` AS CHAR), ' ', 'T')"),
        K::Ts => format!("CONCAT(REPLACE(CAST(`{col}` AS CHAR), ' ', 'T'), 'Z')"),
        K::UnsignedNum => format!("CAST(CAST(`{col}` AS UNSIGNED) AS CHAR)"),
    }
}

type Snapshot = BTreeMap<i64, BTreeMap<String, Option<Vec<u8>>>>;

async fn snapshot(c: &mut mysql_async::Conn, db: &str) -> Snapshot {
    let sel: Vec<String> = COLS.iter().map(|(n, _, k)| expr(n, *k)).collect();
    let q = format!(
        "SELECT id, {} FROM `{db}`.alltypes ORDER BY id",
        sel.join(", ")
    );
    let rows: Vec<mysql_async::Row> = c.query(q).await.unwrap();
    let mut out = Snapshot::new();
    for r in rows {
        let id: i64 = r.get(0).unwrap();
        let mut m = BTreeMap::new();
        for (i, (n, _, _)) in COLS.iter().enumerate() {
            let v: Option<Vec<u8>> = r.get(i + 1).unwrap();
            m.insert(n.to_string(), v);
        }
        out.insert(id, m);
    }
    out
}

fn check_image(what: &str, img: &Value, want: &BTreeMap<String, Option<Vec<u8>>>) {
    let obj = img
        .as_object()
        .unwrap_or_else(|| panic!("{what}: image is not an object"));
    assert_eq!(
        obj.len(),
        COLS.len() + 1,
        "{what}: every column is in a FULL image"
    );
    for (n, _, k) in COLS {
        let got = &obj[*n];
        let exp = &want[*n];
        let ok = match exp {
            None => got.is_null(),
            Some(b) => {
                let text = String::from_utf8_lossy(b).to_string();
                match k {
                    K::Num | K::UnsignedNum => {
                        got.as_number().map(|n| n.to_string()) == Some(text.clone())
                    }
                    K::DecStr | K::Str | K::DateTime | K::Ts => got.as_str() == Some(text.as_str()),
                    K::F32 => {
                        got.as_f64().map(|x| x as f32) == text.parse::<f32>().ok()
                            && got.to_string().len() <= 12
                    }
                    K::F64 => got.as_f64() == text.parse::<f64>().ok(),
                    K::B64 => {
                        got.as_str()
                            == Some(base64::engine::general_purpose::STANDARD.encode(b).as_str())
                    }
                    K::Json => {
                        let e: Value = serde_json::from_str(&text).unwrap();
                        // compare numerically-normalised documents
                        normalise(&e) == normalise(got)
                    }
                }
            }
        };
        let show = |v: &Value| {
            let s = v.to_string();
            s[..s.len().min(200)].to_string()
        };
        assert!(
            ok,
            "{what}: column {n}: event has {} but SELECT gives {:?}",
            show(got),
            exp.as_ref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).to_string())
        );
    }
}

fn normalise(v: &Value) -> Value {
    match v {
        Value::Number(n) => {
            let s = n.to_string();
            match (s.parse::<i128>(), s.parse::<f64>()) {
                (Ok(i), _) => Value::String(i.to_string()),
                (_, Ok(f)) => Value::String(format!("{f:e}")),
                _ => Value::String(s),
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        o => o.clone(),
    }
}

fn all_types(f: Flavor) {
    let rt = rt();
    let name = format!("alltypes_{}", f.tag());
    let dir = workdir(&name);
    let mut c = rt.block_on(root(f));
    let cols: Vec<String> = COLS.iter().map(|(n, t, _)| format!("`{n}` {t}")).collect();
    let table = format!("alltypes (id INT PRIMARY KEY, {})", cols.join(", "));
    let start = rt.block_on(fresh_table(&mut c, f, &name, &[&table]));
    let mut d = Daemon::start(&dir, &config(f, &name, &name, &start, &dir, ""));
    let big: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (s1, s2) = rt.block_on(async {
        let col_names: Vec<&str> = COLS.iter().filter(|c| c.0 != "gen").map(|c| c.0).collect();
        let list = format!("id, {}", col_names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "));
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        tx.query_drop(format!("INSERT INTO `{name}`.alltypes ({list}) VALUES ({ROW1}), ({ROW2})")).await.unwrap();
        tx.exec_drop(format!("UPDATE `{name}`.alltypes SET lb = ? WHERE id = 1"), (big.clone(),)).await.unwrap();
        tx.commit().await.unwrap();
        let s1 = snapshot(&mut c, &name).await;
        exec_all(
            &mut c,
            &[
                format!(
            "UPDATE `{name}`.alltypes SET vc = 'changed', vl = 'Ærø', i = 41, e = 'large', s = '', \
             j = '{{\"a\": \"b\"}}', ts3 = '2001-02-03 04:05:06.007', b64 = b'0', tm = '-00:00:00.500000', \
             dt6 = '2024-01-01 00:00:00.000001', dec65 = 0.5, decn = -0.0001, c = NULL, bin = x'01' WHERE id = 1"
        ),
                format!("UPDATE `{name}`.alltypes SET vc = NULL, vb = x'00', e = 'small', s = 'b', y = 1901 WHERE id = 2"),
            ],
        )
        .await;
        let s2 = snapshot(&mut c, &name).await;
        c.query_drop(format!("DELETE FROM `{name}`.alltypes")).await.unwrap();
        (s1, s2)
    });
    // insert 2 + update(lb) 1 + updates 2 + deletes 2
    let ev = d.wait_events(7, Duration::from_secs(60));
    assert_eq!(ev.len(), 7, "exactly the 7 row changes");
    let ops: Vec<&str> = ev.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "c", "u", "u", "u", "d", "d"]);
    // the insert's after image precedes the LONGBLOB update inside the same transaction
    let mut row1_after_insert = s1[&1].clone();
    row1_after_insert.insert("lb".into(), None);
    check_image("insert row 1", &ev[0]["after"], &row1_after_insert);
    check_image("insert row 2", &ev[1]["after"], &s1[&2]);
    check_image("lb update before", &ev[2]["before"], &row1_after_insert);
    check_image("lb update after", &ev[2]["after"], &s1[&1]);
    check_image("update row 1 before", &ev[3]["before"], &s1[&1]);
    check_image("update row 1 after", &ev[3]["after"], &s2[&1]);
    check_image("update row 2 before", &ev[4]["before"], &s1[&2]);
    check_image("update row 2 after", &ev[4]["after"], &s2[&2]);
    check_image("delete row 1", &ev[5]["before"], &s2[&1]);
    check_image("delete row 2", &ev[6]["before"], &s2[&2]);
    for e in &ev {
        let s = &e["source"];
        assert_eq!(s["db"], name.as_str());
        assert_eq!(s["table"], "alltypes");
        assert_eq!(s["connector"], "binlogd");
        assert!(
            s["pos"].as_u64().unwrap() > 4
                && s["gtid"].is_string()
                && s["ts_ms"].as_u64().unwrap() > 0
        );
        assert!(e["before"].is_null() == (e["op"] == "c"));
        assert!(e["after"].is_null() == (e["op"] == "d"));
    }
    // the two inserts share one rows event: same pos, rows 0 and 1
    assert_eq!(ev[0]["source"]["pos"], ev[1]["source"]["pos"]);
    assert_eq!(
        (
            ev[0]["source"]["row"].as_u64(),
            ev[1]["source"]["row"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(
        d.stop(),
        Some(0),
        "graceful stop exits 0; log:\n{}",
        d.log_text()
    );
}

both_flavors!(all_types: all_types_mariadb(), all_types_mysql());

/// SELECT's text of `expr` for every row of `db.t`, by id.
async fn select_text(c: &mut mysql_async::Conn, db: &str, exprs: &[&str]) -> Snapshot {
    let q = format!(
        "SELECT id, {} FROM `{db}`.t ORDER BY id",
        exprs
            .iter()
            .map(|e| format!("CAST({e} AS CHAR)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rows: Vec<mysql_async::Row> = c.query(q).await.unwrap();
    let mut out = Snapshot::new();
    for r in rows {
        let id: i64 = r.get(0).unwrap();
        let mut m = BTreeMap::new();
        for (i, e) in exprs.iter().enumerate() {
            let v: Option<Vec<u8>> = r.get(i + 1).unwrap();
            m.insert(e.to_string(), v);
        }
        out.insert(id, m);
    }
    out
}

fn text_of(v: &Option<Vec<u8>>) -> Value {
    match v {
        None => Value::Null,
        Some(b) => Value::String(String::from_utf8(b.clone()).unwrap()),
    }
}

/// Item 5 of issue 11 (MariaDB): information_schema tells today's schema. Rows written while
/// `j` was a plain LONGTEXT holding text that is not JSON are replayed after
/// `ALTER … MODIFY j JSON`: each such value comes out as the string SELECT showed then, with
/// one (rate-limited) warning naming the column and a metric; the stream goes on, and JSON
/// values (before and after the ALTER) stay nested JSON — also pretty JSON with line breaks,
/// which must not split an event's line.
#[test]
fn json_column_not_json_at_the_time_mariadb() {
    let f = Flavor::MariaDb;
    let name = "jsonhist_maria";
    let Scenario {
        rt,
        dir,
        mut c,
        start,
        ..
    } = Scenario::new(
        f,
        name,
        &["t (id INT PRIMARY KEY, j LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)"],
    );
    let not_json = [
        "not json {",
        "{\"a\": 1,}",
        "tab\there, \"quotes\", back\\slash ✓ 😀",
    ];
    let (old, new, last) = rt.block_on(async {
        for (i, t) in not_json.iter().enumerate() {
            c.exec_drop(
                format!("INSERT INTO `{name}`.t VALUES (?, ?)"),
                (i as i64 + 1, t.to_string()),
            )
            .await
            .unwrap();
        }
        let old = select_text(&mut c, name, &["j"]).await;
        for (id, j) in [
            (1, "{\"a\": [1, 2.50, \"x\"]}"),
            // pretty JSON: the line breaks between tokens must not split the event's line
            (2, "[1,\n  2]\r\n"),
            (3, "\"s\""),
        ] {
            c.exec_drop(format!("UPDATE `{name}`.t SET j = ? WHERE id = ?"), (j, id))
                .await
                .unwrap();
        }
        let new = select_text(&mut c, name, &["j"]).await;
        exec_all(
            &mut c,
            &[
                format!("ALTER TABLE `{name}`.t MODIFY j JSON"),
                format!(
                    "INSERT INTO `{name}`.t VALUES (4, '{{\"after\": \"alter\", \"n\": 1.50}}')"
                ),
            ],
        )
        .await;
        let last = select_text(&mut c, name, &["j"]).await;
        (old, new, last)
    });
    // the daemon starts after the ALTER, from a position before it
    let mut d = Daemon::start(&dir, &config(f, name, name, &start, &dir, ""));
    let ev = d.wait_events(7, Duration::from_secs(60));
    assert_eq!(ev.len(), 7);
    let ops: Vec<&str> = ev.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "c", "c", "u", "u", "u", "c"]);
    for i in 0..3 {
        let id = i as i64 + 1;
        let was = text_of(&old[&id]["j"]);
        assert_eq!(was, Value::String(not_json[i].into()), "SELECT then");
        assert_eq!(
            ev[i]["after"]["j"], was,
            "insert {id}: the text as a string"
        );
        assert_eq!(
            ev[3 + i]["before"]["j"],
            was,
            "update {id} before: a string"
        );
        let now: Value = serde_json::from_str(text_of(&new[&id]["j"]).as_str().unwrap()).unwrap();
        assert_eq!(
            ev[3 + i]["after"]["j"],
            now,
            "update {id} after: nested JSON"
        );
    }
    let j4: Value = serde_json::from_str(text_of(&last[&4]["j"]).as_str().unwrap()).unwrap();
    assert_eq!(ev[6]["after"]["j"], j4);
    assert_eq!(ev[6]["after"]["j"]["n"].to_string(), "1.50");
    // the metric, per column
    let addr = d.admin_addr();
    let (_, metrics) = http_get(&addr, "/metrics");
    let n = metric(
        &metrics,
        &format!("binlogd_json_fallback_total{{db=\"{name}\",table=\"t\",column=\"j\"}}"),
    );
    assert!(
        n.is_some_and(|n| n >= 6.0),
        "6 values (3 inserts, 3 before images) counted: {n:?}\n{metrics}"
    );
    // one warning for the six values (at most one per column per minute), naming the column
    let log = d.log_all();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("is not JSON"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", d.log_text());
    assert!(
        warnings[0].contains(&format!("\"db\":\"{name}\""))
            && warnings[0].contains("\"table\":\"t\"")
            && warnings[0].contains("\"column\":\"j\""),
        "{}",
        warnings[0]
    );
    assert_eq!(d.stop(), Some(0), "still running; log:\n{}", d.log_text());
}

const UUIDS: &[&str] = &[
    "123e4567-e89b-12d3-a456-426655440000", // v1, RFC variant (MariaDB swaps it in the record)
    "6ccd780c-baba-1026-9564-5b8c656024db", // v1
    "f47ac10b-58cc-4372-a567-0e02b2c3d479", // v4
    "01890a5d-ac96-774b-bcce-b302099a8057", // v7
    "00000000-0000-0000-0000-000000000000", // all zero (an empty value in the binlog)
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "123e4567-e89b-12d3-2456-426655440000", // v1, variant 0 (NCS)
    "123e4567-e89b-02d3-a456-426655440000", // version 0
    "123e4567-e89b-62d3-a456-426655440000", // v6
    "123e4567-e89b-00d3-a456-426655440000",
    "123e4567-e89b-5fd3-c456-426655440000", // v5, variant 110
    "123e4567-e89b-f2d3-0056-426655440000", // version 15, variant 0
    "123e4567-e89b-82d3-8156-426655440000", // v8
    "123e4567-e89b-02d3-0056-426655440000",
    "123e4567-e89b-0fd3-8056-426655440000",
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", // v4
];

const INET6S: &[&str] = &[
    "2001:db8::1",
    "::ffff:1.2.3.4",
    "::",
    "::1",
    "::1.2.3.4",
    "::0.0.1.0",
    "2001:db8:0:1:1:1:1:1",
    "2001:0:0:1:0:0:0:1",
    "2001:db8:0:0:1:0:0:1",
    "1:0:0:0:0:0:0:0",
    "fe80::1:2",
    "::ffff:0:1.2.3.4",
    "::ffff:0.0.0.0",
    "0:0:0:0:0:1:0:0",
    "1:2:3:4:5:6:7:8",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "0:0:0:0:0:ffff:ffff:ffff",
    "1:0:1:0:0:0:1:0",
    "0:0:0:1:0:0:0:0",
    "2001:db8::",
    "::fffe:1.2.3.4",
    "::0.1.0.0",
];

const INET4S: &[&str] = &[
    "192.168.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "10.0.0.0",
    "1.2.3.4",
    "127.0.0.1",
    "0.0.0.1",
    "100.64.0.0",
];

/// Item 7 of issue 11 (MariaDB): UUID, INET4 and INET6 render as SELECT prints them (the
/// binlog shows BINARY(16)/BINARY(4) with trailing zero bytes stripped; only
/// information_schema names the types), live and in `replay --binlog-file` with the server
/// reachable. A plain BINARY(16) stays base64.
#[test]
fn uuid_inet_mariadb() {
    let f = Flavor::MariaDb;
    let rt = rt();
    let name = "uuidinet_maria";
    let dir = workdir(name);
    let mut c = rt.block_on(root(f));
    rt.block_on(fresh_tables(
        &mut c,
        name,
        &["t (id INT PRIMARY KEY, u UUID, i4 INET4, i6 INET6, b16 BINARY(16))"],
    ));
    let n = UUIDS.len().max(INET6S.len());
    let start = rt.block_on(binlog_end(&mut c, f));
    let mut d = Daemon::start(&dir, &config(f, name, name, &start, &dir, ""));
    let cols = ["u", "i4", "i6", "b16"];
    let (s1, s2, end) = rt.block_on(async {
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        for i in 0..n {
            // every 5th row has NULLs
            let null = i % 5 == 4;
            tx.exec_drop(
                format!("INSERT INTO `{name}`.t VALUES (?, ?, ?, ?, ?)"),
                (
                    i as i64 + 1,
                    (!null).then(|| UUIDS[i % UUIDS.len()]),
                    (!null).then(|| INET4S[i % INET4S.len()]),
                    INET6S[i % INET6S.len()],
                    (!null).then(|| {
                        UUIDS[i % UUIDS.len()].replace('-', "").into_bytes()[..16].to_vec()
                    }),
                ),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let s1 = select_text(&mut c, name, &cols).await;
        for i in 0..n {
            let j = n - 1 - i;
            c.exec_drop(
                format!("UPDATE `{name}`.t SET u = ?, i4 = ?, i6 = ? WHERE id = ?"),
                (
                    UUIDS[j % UUIDS.len()],
                    INET4S[j % INET4S.len()],
                    (j % 7 != 3).then(|| INET6S[j % INET6S.len()]),
                    i as i64 + 1,
                ),
            )
            .await
            .unwrap();
        }
        let s2 = select_text(&mut c, name, &cols).await;
        c.query_drop(format!("DELETE FROM `{name}`.t"))
            .await
            .unwrap();
        let end = binlog_end(&mut c, f).await;
        (s1, s2, end)
    });
    let check = |what: &str, img: &Value, want: &BTreeMap<String, Option<Vec<u8>>>| {
        for col in cols {
            let exp = match (&want[col], col) {
                (Some(b), "b16") => {
                    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
                }
                (v, _) => text_of(v),
            };
            assert_eq!(img[col], exp, "{what}: column {col} (SELECT shows {exp})");
        }
    };
    let check_all = |ev: &[Value]| {
        assert_eq!(ev.len(), 3 * n);
        for i in 0..n {
            let id = i as i64 + 1;
            let (ins, upd, del) = (&ev[i], &ev[n + i], &ev[2 * n + i]);
            assert_eq!(
                (ins["op"].as_str(), upd["op"].as_str(), del["op"].as_str()),
                (Some("c"), Some("u"), Some("d"))
            );
            check(&format!("insert {id}"), &ins["after"], &s1[&id]);
            check(&format!("update {id} before"), &upd["before"], &s1[&id]);
            check(&format!("update {id} after"), &upd["after"], &s2[&id]);
            check(&format!("delete {id}"), &del["before"], &s2[&id]);
        }
    };
    let live = d.wait_events(3 * n, Duration::from_secs(60));
    check_all(&live);
    assert_eq!(live[0]["after"]["u"], UUIDS[0]);
    assert_eq!(live[0]["after"]["i4"], "192.168.0.1");
    assert_eq!(live[0]["after"]["i6"], "2001:db8::1");
    assert_eq!(live[1]["after"]["i6"], "::ffff:1.2.3.4");
    assert_eq!(d.stop(), Some(0));

    // replay from copies of the binlog files: hints come from the server
    let basename: String = rt.block_on(async {
        c.query_first("SELECT @@log_bin_basename")
            .await
            .unwrap()
            .unwrap()
    });
    let base = std::path::Path::new(&basename);
    let copies = dir.join("copies");
    std::fs::create_dir_all(&copies).unwrap();
    let mut files: Vec<String> = Vec::new();
    let (first, last) = (
        start.0.rsplit('.').next().unwrap().parse::<u32>().unwrap(),
        end.0.rsplit('.').next().unwrap().parse::<u32>().unwrap(),
    );
    let stem = start.0.rsplit_once('.').unwrap().0;
    for k in first..=last {
        let fl = format!("{stem}.{k:06}");
        let src = base.parent().unwrap().join(&fl);
        let dst = copies.join(&fl);
        std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        files.push(dst.to_str().unwrap().to_string());
    }
    std::fs::remove_file(&d.out).unwrap();
    let mut args: Vec<String> = vec![
        "replay".into(),
        "-c".into(),
        d.config.to_str().unwrap().into(),
        "--from".into(),
        format!("{}:{}", start.0, start.1),
        "--to".into(),
        format!("{}:{}", end.0, end.1),
        "--binlog-file".into(),
    ];
    args.extend(files);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = run_binlogd(&argv);
    assert_eq!(code, 0, "{out}");
    let replayed = read_events(&d.out);
    check_all(&replayed);
}

/// Item 8 of issue 11 (MySQL): DECIMAL values inside binary JSON are JSON numbers with the
/// digits SELECT prints (`1.50`, `-0.001`, `0.000…`), in full images and in partial-JSON
/// updates (binlog_row_value_options=PARTIAL_JSON), nested in arrays and objects.
#[test]
fn json_decimals_mysql() {
    let f = Flavor::MySql;
    let name = "jsondec_mysql";
    let Scenario {
        rt,
        dir,
        mut c,
        start,
        ..
    } = Scenario::new(f, name, &["t (id INT PRIMARY KEY, j JSON)"]);
    let mut d = Daemon::start(&dir, &config(f, name, name, &start, &dir, ""));
    let inserts = [
        "JSON_OBJECT('d', 1.5)",
        "JSON_ARRAY(2.75, -0.001, 12345678901234567890.123, 1.50, 0, 0.0, -0.00, CAST(5 AS DECIMAL(10,3)), CAST(0 AS DECIMAL(65,30)), 'text', 7)",
        "JSON_OBJECT('n', JSON_OBJECT('x', 1.50, 'arr', JSON_ARRAY(0.1, JSON_ARRAY(-2.500, 99999999999999999999999999999999999.999999999999999999999999999999))), 's', 's')",
        "JSON_OBJECT('a', 1, 'b', 'a long string value that makes the document big enough', 'c', JSON_ARRAY(1, 2, 3))",
    ];
    // (row, update, partial JSON on)
    let updates = [
        (1, "JSON_SET(j, '$.a', 2.75)", false),
        (4, "JSON_SET(j, '$.a', 2.75)", true),
        (4, "JSON_REPLACE(j, '$.c[1]', 1.50)", true),
        (4, "JSON_SET(j, '$.d', -0.001)", true),
        (2, "JSON_REPLACE(j, '$[0]', 12345678901234567890.123)", true),
        (3, "JSON_REPLACE(j, '$.n.arr[1][0]', 0.000)", true),
    ];
    let (s_ins, s_upd) = rt.block_on(async {
        for (i, e) in inserts.iter().enumerate() {
            c.query_drop(format!("INSERT INTO `{name}`.t VALUES ({}, {e})", i + 1))
                .await
                .unwrap();
        }
        let s_ins = select_text(&mut c, name, &["j"]).await;
        let mut s_upd = Vec::new();
        for (id, e, partial) in updates {
            let opt = if partial { "PARTIAL_JSON" } else { "" };
            exec_all(
                &mut c,
                &[
                    format!("SET SESSION binlog_row_value_options = '{opt}'"),
                    format!("UPDATE `{name}`.t SET j = {e} WHERE id = {id}"),
                ],
            )
            .await;
            s_upd.push(select_text(&mut c, name, &["j"]).await);
        }
        (s_ins, s_upd)
    });
    let parse = |v: &Option<Vec<u8>>| -> Value {
        // arbitrary_precision: numbers keep SELECT's digits, and compare by them
        serde_json::from_slice(v.as_ref().unwrap()).unwrap()
    };
    let ev = d.wait_events(inserts.len() + updates.len(), Duration::from_secs(60));
    for (i, e) in ev.iter().take(inserts.len()).enumerate() {
        let id = i as i64 + 1;
        let want = parse(&s_ins[&id]["j"]);
        assert_eq!(
            e["after"]["j"].to_string(),
            want.to_string(),
            "insert {id}: SELECT shows {}",
            String::from_utf8_lossy(s_ins[&id]["j"].as_ref().unwrap())
        );
    }
    assert_eq!(ev[0]["after"]["j"]["d"].to_string(), "1.5");
    assert_eq!(
        ev[1]["after"]["j"].to_string(),
        format!(
            "[2.75,-0.001,12345678901234567890.123,1.50,0,0.0,0.00,5.000,0.{},\"text\",7]",
            "0".repeat(30)
        )
    );
    let mut prev = s_ins.clone();
    for (k, (id, e, _)) in updates.iter().enumerate() {
        let id = *id as i64;
        let e_ = &ev[inserts.len() + k];
        assert_eq!(e_["op"], "u");
        assert_eq!(
            e_["before"]["j"].to_string(),
            parse(&prev[&id]["j"]).to_string(),
            "update {k} ({e}) before"
        );
        assert_eq!(
            e_["after"]["j"].to_string(),
            parse(&s_upd[k][&id]["j"]).to_string(),
            "update {k} ({e}) after: SELECT shows {}",
            String::from_utf8_lossy(s_upd[k][&id]["j"].as_ref().unwrap())
        );
        prev = s_upd[k].clone();
    }
    assert_eq!(ev[inserts.len()]["after"]["j"]["a"].to_string(), "2.75");
    assert_eq!(ev[inserts.len() + 1]["after"]["j"]["a"].to_string(), "2.75");
    assert_eq!(d.stop(), Some(0));
}
