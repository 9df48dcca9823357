//! Streaming behaviour against real servers: schema changes, transactions, reconnects,
//! compressed binlogs.

mod common;

use common::*;
use mysql_async::prelude::*;
use serde_json::Value;
use std::time::Duration;

/// Tables without a primary key, with a composite key, and a table renamed and altered between
/// changes: events after each DDL carry the new columns.
fn schema_changes(f: Flavor) {
    let mut s = Scenario::new(f, &format!("schema_{}", f.tag()), &[]);
    let name = s.name.clone();
    let mut d = s.daemon("");
    s.sql(&[
            format!("CREATE TABLE `{name}`.nopk (a INT, b VARCHAR(10))"),
            format!("INSERT INTO `{name}`.nopk VALUES (1, 'x'), (1, 'x')"),
            format!("CREATE TABLE `{name}`.comp (a INT, b VARCHAR(20), v INT, PRIMARY KEY (b, a))"),
            format!("INSERT INTO `{name}`.comp VALUES (1, 'k', 10)"),
            format!("UPDATE `{name}`.comp SET a = 2 WHERE a = 1"),
            format!("CREATE TABLE `{name}`.t1 (id INT PRIMARY KEY, old_col INT, gone VARCHAR(5))"),
            format!("INSERT INTO `{name}`.t1 VALUES (1, 10, 'g')"),
            format!("RENAME TABLE `{name}`.t1 TO `{name}`.t2"),
            format!("ALTER TABLE `{name}`.t2 ADD COLUMN added VARCHAR(10) DEFAULT 'new', DROP COLUMN gone, MODIFY COLUMN old_col BIGINT"),
            format!("INSERT INTO `{name}`.t2 (id, old_col) VALUES (2, 9000000000)"),
            format!("UPDATE `{name}`.t2 SET added = 'upd' WHERE id = 1"),
    ]);
    let ev = d.wait_events(9, Duration::from_secs(30));
    assert_eq!(ev.len(), 9);
    assert_eq!(ev[0]["after"], serde_json::json!({"a": 1, "b": "x"}));
    assert_eq!(
        ev[1]["after"], ev[0]["after"],
        "identical rows of a table without PK are both emitted"
    );
    assert_eq!(
        ev[2]["after"],
        serde_json::json!({"a": 1, "b": "k", "v": 10})
    );
    assert_eq!(ev[3]["before"]["a"], 1);
    assert_eq!(ev[3]["after"]["a"], 2);
    assert_eq!(ev[4]["source"]["table"], "t1");
    assert_eq!(
        ev[4]["after"],
        serde_json::json!({"id": 1, "old_col": 10, "gone": "g"})
    );
    // the rename: a truncate event for the old and the new name (rows moved without row events)
    for (i, t) in [(5, "t1"), (6, "t2")] {
        assert_eq!(ev[i]["op"], "t", "{}", ev[i]);
        assert_eq!(ev[i]["source"]["table"], t);
    }
    assert_eq!(ev[7]["source"]["table"], "t2");
    assert_eq!(
        ev[7]["after"],
        serde_json::json!({"id": 2, "old_col": 9000000000i64, "added": "new"})
    );
    assert_eq!(
        ev[8]["before"],
        serde_json::json!({"id": 1, "old_col": 10, "added": "new"})
    );
    assert_eq!(ev[8]["after"]["added"], "upd");
    assert_eq!(d.stop(), Some(0));
}

/// A multi-statement transaction and a 100k-row transaction: all rows, in binlog order.
fn transactions(f: Flavor) {
    let mut s = Scenario::new(
        f,
        &format!("txn_{}", f.tag()),
        &[
            "a (id INT PRIMARY KEY, v INT)",
            "b (id INT PRIMARY KEY, v VARCHAR(40))",
        ],
    );
    let mut d = s.daemon("");
    let (name, c) = (s.name.clone(), &mut s.c);
    s.rt.block_on(async {
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        tx.query_drop(format!("INSERT INTO `{name}`.a VALUES (1, 1), (2, 2)")).await.unwrap();
        tx.query_drop(format!("INSERT INTO `{name}`.b VALUES (1, 'one')")).await.unwrap();
        tx.query_drop(format!("UPDATE `{name}`.a SET v = v + 10")).await.unwrap();
        tx.query_drop(format!("DELETE FROM `{name}`.b WHERE id = 1")).await.unwrap();
        tx.commit().await.unwrap();
        c.query_drop("SET SESSION cte_max_recursion_depth = 200000").await.ok();
        c.query_drop("SET SESSION max_recursive_iterations = 200000").await.ok();
        c.query_drop(format!(
            "INSERT INTO `{name}`.b WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100000) \
             SELECT n + 1000, CONCAT('row-', n) FROM s"
        ))
        .await
        .unwrap();
    });
    let ev = d.wait_events(6 + 100_000, Duration::from_secs(120));
    assert_eq!(ev.len(), 100_006);
    let small: Vec<(String, String, i64)> = ev[..6]
        .iter()
        .map(|e| {
            let img = if e["op"] == "d" {
                &e["before"]
            } else {
                &e["after"]
            };
            (
                e["source"]["table"].as_str().unwrap().to_string(),
                e["op"].as_str().unwrap().to_string(),
                img["id"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, String, i64)> = [
        ("a", "c", 1),
        ("a", "c", 2),
        ("b", "c", 1),
        ("a", "u", 1),
        ("a", "u", 2),
        ("b", "d", 1),
    ]
    .iter()
    .map(|(t, o, i)| (t.to_string(), o.to_string(), *i))
    .collect();
    assert_eq!(small, want);
    let gtid = &ev[0]["source"]["gtid"];
    assert!(
        ev[..6].iter().all(|e| &e["source"]["gtid"] == gtid),
        "one transaction, one GTID"
    );
    let big = ids(&ev[6..], "after");
    assert_eq!(
        big,
        (1001..=101_000).collect::<Vec<i64>>(),
        "every row of the large transaction, in order"
    );
    // (file, pos, row) is unique
    let mut keys: Vec<Coord> = ev.iter().map(coord).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        ev.len(),
        "(file, pos, row) identifies each row change"
    );
    assert_eq!(d.stop(), Some(0));
}

/// The replication connection is killed from the server side mid-stream, twice: the daemon
/// reconnects and the file holds every row change exactly once.
fn reconnect(f: Flavor) {
    let mut s = Scenario::new(
        f,
        &format!("reconn_{}", f.tag()),
        &["t (id INT PRIMARY KEY, v VARCHAR(20))"],
    );
    let name = s.name.clone();
    let user = format!("cdc_{}", f.tag());
    s.sql(&[
        format!("DROP USER IF EXISTS '{user}'@'%'"),
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"),
        format!("GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '{user}'@'%'"),
        format!("GRANT CREATE, SELECT, INSERT, UPDATE, DELETE ON binlogd.* TO '{user}'@'%'"),
    ]);
    s.start = s.binlog_end();
    let cfg = s.config("").replace(
        &format!("url = \"{}\"", f.cdc_url()),
        &format!("url = \"mysql://{user}:pw@127.0.0.1:{}\"", f.port()),
    );
    let mut d = s.daemon_with(&cfg);
    let (rt, c) = (&s.rt, &mut s.c);
    let total = 3000;
    rt.block_on(async {
        let mut kills = 0;
        for i in 0..total {
            c.exec_drop(format!("INSERT INTO `{name}`.t VALUES (?, 'v')"), (i,)).await.unwrap();
            if i % 1000 == 500 {
                // kill the dump thread of our user (waiting for it to be connected)
                let t0 = std::time::Instant::now();
                let ids: Vec<u64> = loop {
                    let ids: Vec<u64> = c
                        .exec("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND LIKE 'Binlog Dump%'", (&user,))
                        .await
                        .unwrap();
                    if !ids.is_empty() || t0.elapsed() > Duration::from_secs(15) {
                        break ids;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                for id in &ids {
                    let _ = c.query_drop(format!("KILL {id}")).await;
                }
                kills += ids.len();
            }
        }
        assert!(kills >= 3, "the dump thread was found and killed 3 times ({kills})");
    });
    let ev = d.wait_events(total, Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(500));
    let ev2 = d.events();
    assert_eq!(ev2.len(), ev.len(), "no extra events after catching up");
    assert_eq!(
        ids(&ev2, "after"),
        (0..total as i64).collect::<Vec<_>>(),
        "every row exactly once, in order"
    );
    assert!(
        d.log_all().contains("reconnecting"),
        "the daemon logged its reconnects"
    );
    assert_eq!(d.stop(), Some(0));
}

/// Compressed binlog (MySQL binlog_transaction_compression, MariaDB log_bin_compress) gives the
/// same events as uncompressed.
fn compressed(f: Flavor) {
    let mut s = Scenario::new(
        f,
        &format!("compr_{}", f.tag()),
        &["t (id INT PRIMARY KEY, v TEXT, n INT)"],
    );
    let mut d = s.daemon("");
    let (name, c) = (s.name.clone(), &mut s.c);
    s.rt.block_on(async {
        workload(c, &name, 0).await;
        match f {
            Flavor::MySql => c
                .query_drop("SET SESSION binlog_transaction_compression = ON")
                .await
                .unwrap(),
            Flavor::MariaDb => {
                // log_bin_compress is global; the compressed events themselves are the point
                exec_all(
                    c,
                    &[
                        "SET GLOBAL log_bin_compress = ON".to_string(),
                        "SET GLOBAL log_bin_compress_min_len = 10".to_string(),
                    ],
                )
                .await;
            }
        }
        workload(c, &name, 100).await;
        if f == Flavor::MariaDb {
            c.query_drop("SET GLOBAL log_bin_compress = OFF")
                .await
                .unwrap();
        }
    });
    let ev = d.wait_events(14, Duration::from_secs(30));
    assert_eq!(ev.len(), 14);
    let strip = |e: &Value| {
        let mut e = e.clone();
        for img in ["before", "after"] {
            if let Some(id) = e[img].get("id").and_then(|x| x.as_i64()) {
                e[img]["id"] = Value::from(id % 100);
            }
        }
        serde_json::json!({"op": e["op"], "before": e["before"], "after": e["after"]})
    };
    for i in 0..7 {
        assert_eq!(
            strip(&ev[i]),
            strip(&ev[i + 7]),
            "event {i}: compressed equals uncompressed"
        );
    }
    if f == Flavor::MySql {
        // all rows of a compressed transaction share the payload's position, distinct rows
        assert_eq!(ev[7]["source"]["pos"], ev[9]["source"]["pos"]);
        assert_ne!(ev[7]["source"]["row"], ev[9]["source"]["row"]);
    }
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(schema_changes: schema_changes_mariadb(), schema_changes_mysql());
both_flavors!(transactions: transactions_mariadb(), transactions_mysql());
both_flavors!(reconnect: reconnect_mariadb(), reconnect_mysql());
both_flavors!(compressed: compressed_mariadb(), compressed_mysql());

async fn workload(c: &mut mysql_async::Conn, name: &str, base: i64) {
    let long = "x".repeat(400);
    exec_all(
        c,
        &[
            format!(
                "INSERT INTO `{name}`.t VALUES ({}, '{long}', 1), ({}, 'short', 2), ({}, NULL, 3)",
                base,
                base + 1,
                base + 2
            ),
            format!("UPDATE `{name}`.t SET n = n * 10 WHERE id >= {base}"),
            format!("DELETE FROM `{name}`.t WHERE id = {}", base + 1),
        ],
    )
    .await;
}

/// MySQL partial JSON updates (binlog_row_value_options=PARTIAL_JSON): the after image is
/// the full document, as SELECT shows it.
#[test]
fn partial_json_mysql() {
    let mut s = Scenario::new(
        Flavor::MySql,
        "pjson_mysql",
        &["t (id INT PRIMARY KEY, j JSON)"],
    );
    let name = "pjson_mysql";
    s.sql(&[format!(
        "INSERT INTO `{name}`.t VALUES (1, '{{\"a\": 1, \"b\": [1, 2, 3], \"c\": {{\"d\": \"long string value here\"}}, \"e\": \"x\"}}')"
    )]);
    s.start = s.binlog_end();
    let mut d = s.daemon("");
    let c = &mut s.c;
    let want: Vec<String> = s.rt.block_on(async {
        c.query_drop("SET SESSION binlog_row_value_options = 'PARTIAL_JSON'")
            .await
            .unwrap();
        let mut want = Vec::new();
        for upd in [
            "JSON_SET(j, '$.a', 2)",
            "JSON_REPLACE(j, '$.c.d', 'short')",
            "JSON_REMOVE(j, '$.b[1]')",
            "JSON_SET(j, '$.new', 'n')",
            "JSON_ARRAY_APPEND(j, '$.b', 9)",
        ] {
            c.query_drop(format!("UPDATE `{name}`.t SET j = {upd} WHERE id = 1"))
                .await
                .unwrap();
            let s: String = c
                .query_first(format!("SELECT CAST(j AS CHAR) FROM `{name}`.t"))
                .await
                .unwrap()
                .unwrap();
            want.push(s);
        }
        want
    });
    let ev = d.wait_events(5, Duration::from_secs(30));
    for (e, w) in ev.iter().zip(&want) {
        let w: Value = serde_json::from_str(w).unwrap();
        assert_eq!(
            e["after"]["j"].to_string(),
            w.to_string(),
            "after image equals SELECT"
        );
    }
    assert_eq!(d.stop(), Some(0));
}

/// MySQL 9's caching_sha2_password: over plain TCP with an empty server-side cache (RSA key
/// exchange) and over TLS.
#[test]
fn caching_sha2_auth_mysql() {
    let f = Flavor::MySql;
    let rt = rt();
    let mut c = rt.block_on(root(f));
    let dir = workdir("auth_mysql");
    for (mode, extra) in [
        ("plain", ""),
        ("tls", "\n[source.tls]\nmode = \"required\"\n"),
    ] {
        rt.block_on(c.query_drop("FLUSH PRIVILEGES")).unwrap(); // empties the auth cache
        let cfg = format!(
            "[source]\nurl = \"{}\"\nserver_id = 4545\nname = \"t\"\n{extra}\n[[sinks.file]]\nname = \"o\"\npath = \"-\"\n",
            f.cdc_url()
        );
        let p = dir.join(format!("{mode}.toml"));
        std::fs::write(&p, cfg).unwrap();
        let (code, out) = run_binlogd(&["check", "-c", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{mode}: {out}");
        assert!(out.contains("check: ok"), "{mode}: {out}");
    }
}

/// A server with binlog_row_metadata=MINIMAL: names, keys and ENUM labels come from
/// information_schema, with a loud warning.
#[test]
fn minimal_metadata_fallback_mariadb() {
    let f = Flavor::MariaDb;
    let dir = workdir("minimal_meta");
    let port = 3338u16;
    let srv = PrivateServer::start(
        f,
        &dir,
        port,
        &["--binlog-row-metadata=MINIMAL", "--server-id=8"],
    );
    let rt = rt();
    let mut c = rt.block_on(root_at(&srv.root_url()));
    let (file, pos) = rt.block_on(fresh_table(
        &mut c,
        f,
        "m",
        &["t (id INT UNSIGNED PRIMARY KEY, e ENUM('x','y'), name VARCHAR(10)) DEFAULT CHARSET=utf8mb4"],
    ));
    let cfg = format!(
        "[source]\nurl = \"mysql://cdc:cdc@127.0.0.1:{port}\"\nserver_id = 777\nname = \"t\"\nstart = {{ file = \"{file}\", pos = {pos} }}\n\
         include = [\"m.*\"]\n[[sinks.file]]\nname = \"o\"\npath = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("out.jsonl").display()
    );
    let mut d = Daemon::start(&dir, &cfg);
    rt.block_on(c.query_drop("INSERT INTO m.t VALUES (4000000000, 'y', 'n')"))
        .unwrap();
    let ev = d.wait_events(1, Duration::from_secs(30));
    assert_eq!(
        ev[0]["after"],
        serde_json::json!({"id": 4000000000u64, "e": "y", "name": "n"})
    );
    assert!(
        d.log_all().contains("binlog_row_metadata"),
        "the fallback is logged loudly"
    );
    assert_eq!(d.stop(), Some(0));
}

/// `start = { gtid }`, `"earliest"` and `"latest"` when nothing is stored.
fn start_positions(f: Flavor) {
    let rt = rt();
    let name = format!("startpos_{}", f.tag());
    let dir = workdir(&name);
    let mut c = rt.block_on(root(f));
    let gtid: String = rt.block_on(async {
        fresh_tables(&mut c, &name, &["t (id INT PRIMARY KEY)"]).await;
        c.query_drop(format!("INSERT INTO `{name}`.t VALUES (1)"))
            .await
            .unwrap();
        let q = match f {
            Flavor::MariaDb => "SELECT @@gtid_binlog_pos",
            Flavor::MySql => "SELECT @@gtid_executed",
        };
        let g: String = c.query_first(q).await.unwrap().unwrap();
        c.query_drop(format!("INSERT INTO `{name}`.t VALUES (2), (3)"))
            .await
            .unwrap();
        g.replace('\n', "")
    });
    let base = config(f, &name, &name, &("x".into(), 4), &dir, "");
    let with_start =
        |s: &str| base.replace("start = { file = \"x\", pos = 4 }", &format!("start = {s}"));
    // by GTID: exactly what came after the set
    let mut d = Daemon::start(&dir, &with_start(&format!("{{ gtid = \"{gtid}\" }}")));
    let ev = d.wait_events(2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.events().len(), 2);
    assert_eq!(ids(&ev, "after"), vec![2, 3]);
    assert_eq!(d.stop(), Some(0));
    // earliest: the whole history of the table
    std::fs::remove_file(&d.out).unwrap();
    let mut d = Daemon::start(&dir, &with_start("\"earliest\""));
    let ev = d.wait_events(3, Duration::from_secs(60));
    assert_eq!(ids(&ev, "after")[..3], [1, 2, 3]);
    assert_eq!(d.stop(), Some(0));
    // latest: only what is written after the daemon connected
    std::fs::remove_file(&d.out).unwrap();
    let mut d = Daemon::start(&dir, &with_start("\"latest\""));
    d.wait_log("requesting binlog", Duration::from_secs(20)); // connected
    std::thread::sleep(Duration::from_millis(300));
    rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES (4)")))
        .unwrap();
    let ev = d.wait_events(1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ids(&d.events(), "after"), vec![4], "{ev:?}");
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(start_positions: start_positions_mariadb(), start_positions_mysql());
