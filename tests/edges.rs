//! The edges of the binlog that applications reach and a simple test suite does not: XA
//! transactions (and a restart between PREPARE and COMMIT), savepoints rolled back inside a
//! logged transaction, statements that change table contents without row events (TRUNCATE,
//! DROP, partition operations, RENAME) in every sink, foreign-key cascades, a value that
//! cannot be rendered, and a mix of the write statements applications run (REPLACE, upserts,
//! multi-table UPDATE/DELETE, CREATE … SELECT, temporary tables, RENAME COLUMN, sequences).

mod common;

use common::*;
use mysql_async::prelude::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// `(table, op, id)` of each event (`id` from the after image, else the before image).
fn summary(ev: &[Value]) -> Vec<(String, String, i64)> {
    ev.iter()
        .map(|e| {
            let img = if e["after"].is_null() {
                &e["before"]
            } else {
                &e["after"]
            };
            (
                e["source"]["table"].as_str().unwrap().to_string(),
                e["op"].as_str().unwrap().to_string(),
                img["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn s(t: &str, op: &str, id: i64) -> (String, String, i64) {
    (t.to_string(), op.to_string(), id)
}

/// At least `n` events, then whatever else arrives within half a second (nothing should).
fn settled_events(d: &mut Daemon, n: usize) -> Vec<Value> {
    d.settled_events(n, Duration::from_millis(500))
}

/// Rolls back what an earlier, interrupted run of a test may have left prepared.
async fn rollback_leftover_xa(c: &mut mysql_async::Conn, xids: &[&str]) {
    for x in xids {
        let _ = c.query_drop(format!("XA ROLLBACK {x}")).await;
    }
}

/// XA START … XA PREPARE on its own session, which then disconnects (the transaction stays
/// prepared on the server).
async fn xa_prepare(f: Flavor, xid: &str, inserts: &[String]) {
    let mut c = root(f).await;
    let mut qs = vec![format!("XA START {xid}")];
    qs.extend(inserts.iter().cloned());
    qs.push(format!("XA END {xid}"));
    qs.push(format!("XA PREPARE {xid}"));
    exec_all(&mut c, &qs).await;
    c.disconnect().await.unwrap();
    // the server detaches the prepared transaction from the closed session asynchronously:
    // wait until another session can see it (XA RECOVER), or XA COMMIT may say XAER_NOTA
    let data: String = xid
        .split(',')
        .take(2)
        .map(|p| p.trim().trim_matches('\''))
        .collect();
    let mut r = root(f).await;
    let t0 = std::time::Instant::now();
    loop {
        let rows: Vec<mysql_async::Row> = r.query("XA RECOVER").await.unwrap();
        if rows.iter().any(|row| {
            row.get::<Vec<u8>, _>(3)
                .is_some_and(|d| d == data.as_bytes())
        }) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "XA {xid} not visible to other sessions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rows of a two-phase XA transaction are handed on at its XA COMMIT (with the commit's GTID,
/// after the transactions committed in between), never after XA ROLLBACK; ONE PHASE at once.
fn xa_transactions(f: Flavor) {
    let rt = rt();
    let name = format!("xa_{}", f.tag());
    let dir = workdir(&name);
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(async {
        rollback_leftover_xa(&mut c, &["'a'", "'b','q',7"]).await;
        fresh_table(
            &mut c,
            f,
            &name,
            &[
                "t (id INT PRIMARY KEY, v VARCHAR(20))",
                "o (id INT PRIMARY KEY)",
            ],
        )
        .await
    });
    let mut d = Daemon::start(&dir, &config(f, &name, &name, &start, &dir, ""));
    rt.block_on(async {
        xa_prepare(
            f,
            "'a'",
            &[format!("INSERT INTO `{name}`.t VALUES (1, 'x'), (2, 'y')")],
        )
        .await;
        exec_all(&mut c, &[format!("INSERT INTO `{name}`.o VALUES (1)")]).await;
        xa_prepare(
            f,
            "'b','q',7",
            &[format!("INSERT INTO `{name}`.t VALUES (3, 'rolled back')")],
        )
        .await;
        exec_all(
            &mut c,
            &[
                "XA ROLLBACK 'b','q',7".to_string(),
                "XA START 'c'".to_string(),
                format!("INSERT INTO `{name}`.t VALUES (4, 'one phase')"),
                "XA END 'c'".to_string(),
                "XA COMMIT 'c' ONE PHASE".to_string(),
                "XA COMMIT 'a'".to_string(),
                format!("INSERT INTO `{name}`.o VALUES (2)"),
            ],
        )
        .await;
    });
    let ev = settled_events(&mut d, 5);
    assert_eq!(
        summary(&ev),
        vec![
            s("o", "c", 1),
            s("t", "c", 4),
            s("t", "c", 1),
            s("t", "c", 2),
            s("o", "c", 2)
        ],
        "XA rows at XA COMMIT, none after XA ROLLBACK; log:\n{}",
        d.log_text()
    );
    assert_increasing(&ev);
    let gtid = |i: usize| ev[i]["source"]["gtid"].as_str().unwrap().to_string();
    assert_eq!(gtid(2), gtid(3), "one XA transaction, one GTID");
    assert_ne!(gtid(2), gtid(0));
    assert_ne!(gtid(2), gtid(1));
    assert_eq!(ev[2]["after"]["v"], "x");
    assert!(
        d.log_all().contains("XA PREPARE: row changes held"),
        "{}",
        d.log_text()
    );
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(xa_transactions: xa_transactions_mariadb(), xa_transactions_mysql());

async fn stored_row(
    c: &mut mysql_async::Conn,
    pipeline: &str,
) -> Option<(String, u64, Option<String>, Option<u64>)> {
    c.exec_first(
        "SELECT c.binlog_file, c.binlog_pos, r.binlog_file, r.binlog_pos FROM binlogd.checkpoint c \
         LEFT JOIN binlogd.checkpoint_restart r ON r.pipeline = c.pipeline WHERE c.pipeline = ?",
        (pipeline,),
    )
    .await
    .unwrap()
}

/// kill -9 while an XA transaction is prepared and the stored position is already past its
/// PREPARE: the restart reads the PREPARE again (the checkpoint names a restart point), hands
/// on its rows at XA COMMIT, and repeats nothing that was acknowledged. A graceful stop with a
/// prepared transaction held likewise loses and repeats nothing.
fn xa_restart(f: Flavor) {
    let rt = rt();
    let name = format!("xarestart_{}", f.tag());
    let pipeline = format!("{name}_{}", f.tag());
    let dir = workdir(&name);
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(async {
        rollback_leftover_xa(&mut c, &["'k'", "'g'"]).await;
        fresh_table(
            &mut c,
            f,
            &name,
            &["t (id INT PRIMARY KEY)", "o (id INT PRIMARY KEY)"],
        )
        .await
    });
    let mut d = Daemon::start(&dir, &config(f, &name, &name, &start, &dir, ""));
    // wait until the position is stored past everything written so far
    let settle = |c: &mut mysql_async::Conn, d: &mut Daemon| {
        let end = rt.block_on(binlog_end(c, f));
        let t0 = Instant::now();
        loop {
            let st = rt.block_on(stored_row(c, &pipeline));
            if let Some((file, pos, ..)) = &st {
                // another test may have rotated the binlog meanwhile
                let seq = |f: &str| f.rsplit('.').next().and_then(|n| n.parse::<u64>().ok());
                if (seq(file), *pos) >= (seq(&end.0), end.1) {
                    return st.unwrap();
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "position not stored at {end:?}: {st:?}; log:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    rt.block_on(async {
        xa_prepare(
            f,
            "'k'",
            &[format!("INSERT INTO `{name}`.t VALUES (10), (11)")],
        )
        .await;
        for i in 1..=5 {
            exec_all(&mut c, &[format!("INSERT INTO `{name}`.o VALUES ({i})")]).await;
        }
    });
    d.wait_events(5, Duration::from_secs(30));
    let st = settle(&mut c, &mut d);
    assert!(
        st.2.is_some() && st.3.is_some(),
        "a restart point is stored while XA 'k' is prepared: {st:?}"
    );
    let (code, out) = run_binlogd(&["position", "show", "-c", d.config.to_str().unwrap()]);
    assert!(
        out.contains("restart:") && out.contains("prepared XA"),
        "{code} {out}"
    );
    // crash, restart, then the outcome arrives
    d.kill();
    d.restart();
    rt.block_on(async {
        exec_all(
            &mut c,
            &[
                "XA COMMIT 'k'".to_string(),
                format!("INSERT INTO `{name}`.o VALUES (6)"),
            ],
        )
        .await;
    });
    let ev = d.wait_events(8, Duration::from_secs(30));
    let st = settle(&mut c, &mut d);
    assert_eq!(st.2, None, "no restart point once XA 'k' is committed");
    // a second prepared transaction over a graceful stop
    rt.block_on(async {
        xa_prepare(f, "'g'", &[format!("INSERT INTO `{name}`.t VALUES (20)")]).await;
        exec_all(&mut c, &[format!("INSERT INTO `{name}`.o VALUES (7)")]).await;
    });
    d.wait_events(9, Duration::from_secs(30));
    settle(&mut c, &mut d);
    assert_eq!(d.stop(), Some(0));
    d.restart();
    rt.block_on(async {
        exec_all(
            &mut c,
            &[
                "XA COMMIT 'g'".to_string(),
                format!("INSERT INTO `{name}`.o VALUES (8)"),
            ],
        )
        .await;
    });
    d.wait_events(11, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let ev2 = d.events();
    assert_eq!(&ev2[..ev.len()], &ev[..]);
    assert_eq!(
        summary(&ev2),
        vec![
            s("o", "c", 1),
            s("o", "c", 2),
            s("o", "c", 3),
            s("o", "c", 4),
            s("o", "c", 5),
            s("t", "c", 10),
            s("t", "c", 11),
            s("o", "c", 6),
            s("o", "c", 7),
            s("t", "c", 20),
            s("o", "c", 8),
        ],
        "nothing lost, nothing repeated; log:\n{}",
        d.log_text()
    );
    assert_increasing(&ev2);
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(xa_restart: xa_restart_between_prepare_and_commit_mariadb(), xa_restart_between_prepare_and_commit_mysql());

/// MariaDB logs `SAVEPOINT` and `ROLLBACK TO` inside a transaction that also changed a
/// non-transactional table: the rolled-back InnoDB rows are withdrawn (the MyISAM rows stay),
/// the transaction stays one transaction with its GTID, also when its rolled-back part is
/// larger than the decoder's early hand-on threshold (4 MiB).
#[test]
fn savepoints_mariadb() {
    let name = "savepoint_maria";
    let mut sc = Scenario::new(
        Flavor::MariaDb,
        name,
        &[
            "t (id INT PRIMARY KEY, pad VARCHAR(400)) ENGINE=InnoDB",
            "m (id INT PRIMARY KEY) ENGINE=MyISAM",
            "seed (n INT PRIMARY KEY)",
        ],
    );
    sc.sql(&[format!(
        "INSERT INTO `{name}`.seed SELECT seq FROM `{name}`.seq_1000_to_21000"
    )]);
    sc.start = sc.binlog_end();
    let mut d = sc.daemon("exclude = [\"*.seed\"]");
    let Scenario { rt, mut c, .. } = sc;
    rt.block_on(async {
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        for q in [
            format!("INSERT INTO `{name}`.t VALUES (10, 'kept')"),
            "SAVEPOINT s".to_string(),
            format!("INSERT INTO `{name}`.t VALUES (11, 'rolled back')"),
            format!("INSERT INTO `{name}`.m VALUES (11)"),
            "ROLLBACK TO SAVEPOINT s".to_string(),
            format!("INSERT INTO `{name}`.t VALUES (12, 'kept')"),
            // a second savepoint whose rolled-back part (20,000 rows × ~400 bytes) is far
            // larger than the 4 MiB after which a transaction is handed on in parts
            "SAVEPOINT big".to_string(),
            format!("INSERT INTO `{name}`.t SELECT n, REPEAT('x', 400) FROM `{name}`.seed"),
            format!("INSERT INTO `{name}`.m VALUES (12)"),
            "ROLLBACK TO big".to_string(),
            format!("INSERT INTO `{name}`.t VALUES (13, 'kept')"),
        ] {
            tx.query_drop(q).await.unwrap();
        }
        tx.commit().await.unwrap();
        exec_all(
            &mut c,
            &[format!("INSERT INTO `{name}`.t VALUES (14, 'after')")],
        )
        .await;
    });
    d.wait_events(6, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1000));
    let ev = d.events();
    assert_eq!(
        summary(&ev),
        vec![
            s("m", "c", 11),
            s("m", "c", 12),
            s("t", "c", 10),
            s("t", "c", 12),
            s("t", "c", 13),
            s("t", "c", 14)
        ],
        "rolled-back InnoDB rows withdrawn, MyISAM rows kept; log:\n{}",
        d.log_text()
    );
    let gtid = |i: usize| ev[i]["source"]["gtid"].as_str().map(str::to_string);
    assert!(gtid(2).is_some());
    assert_eq!(gtid(2), gtid(3), "one transaction, one GTID");
    assert_eq!(gtid(2), gtid(4), "one transaction, one GTID");
    assert_ne!(gtid(4), gtid(5));
    let m = d.metric("binlogd_rows_rolled_back_total");
    assert!(m >= 20_001.0, "rows_rolled_back = {m}");
    assert_eq!(d.stop(), Some(0));
}

/// Statements that change a table's contents without row events give one truncate event per
/// affected streamed table — in the file sink, in Kafka (null key, every partition), and in
/// Redis (key templates without columns and the rules' on_truncate patterns deleted).
fn truncates(f: Flavor) {
    let rt = rt();
    let name = format!("trunc_{}", f.tag());
    let dir = workdir(&name);
    let p = format!("{name}_{}", std::process::id());
    let topic = format!("{p}.t1");
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(async {
        fresh_tables(
            &mut c,
            &name,
            &[
                "t1 (id INT PRIMARY KEY)",
                "t2 (id INT PRIMARY KEY)",
                "t3 (id INT PRIMARY KEY)",
                "p (id INT PRIMARY KEY) PARTITION BY RANGE (id) \
                 (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN (20), \
                  PARTITION p2 VALUES LESS THAN MAXVALUE)",
                "x (id INT PRIMARY KEY)",
            ],
        )
        .await;
        exec_all(
            &mut c,
            &[format!("INSERT INTO `{name}`.p VALUES (1), (11), (21)")],
        )
        .await;
        binlog_end(&mut c, f).await
    });
    let mut r = redis_conn(&redis_url());
    for k in [
        format!("{p}:t1:1"),
        format!("{p}:t1:99"),
        format!("{p}:t1:list:a"),
        format!("{p}:t1:count"),
        format!("{p}:p:all"),
        format!("{p}:p:5"),
        format!("{p}:other:1"),
    ] {
        redis::cmd("SET")
            .arg(&k)
            .arg("v")
            .query::<()>(&mut r)
            .unwrap();
    }
    let mut cfg = config(f, &name, &name, &start, &dir, "");
    cfg.push_str(&format!(
        r#"
[[sinks.redis]]
name = "cache"
url = "{redis}"
[[sinks.redis.rules]]
table = "{name}.t1"
keys = ["{p}:t1:{{id}}", "{p}:t1:count"]
on_truncate = ["{p}:t1:*"]
[[sinks.redis.rules]]
table = "{name}.p"
keys = ["{p}:p:{{id}}", "{p}:p:all"]

[[sinks.kafka]]
name = "events"
brokers = "{brokers}"
topic = "{p}.{{table}}"
create_topics = true
partitions = 3
"#,
        redis = redis_url(),
        brokers = kafka_brokers(),
    ));
    let mut d = Daemon::start(&dir, &cfg);
    rt.block_on(async {
        exec_all(
            &mut c,
            &[
                format!("INSERT INTO `{name}`.t1 VALUES (1), (2)"),
                format!("TRUNCATE TABLE `{name}`.t1"),
                format!("ALTER TABLE `{name}`.p TRUNCATE PARTITION p0"),
                format!("ALTER TABLE `{name}`.p DROP PARTITION p1"),
                format!("ALTER TABLE `{name}`.p EXCHANGE PARTITION p2 WITH TABLE `{name}`.x"),
                format!("RENAME TABLE `{name}`.t2 TO `{name}`.t2_old, `{name}`.t3 TO `{name}`.t2"),
                format!("ALTER TABLE `{name}`.t2 ADD COLUMN c INT"),
                format!("DROP TABLE `{name}`.t1, `{name}`.t2_old"),
                format!("INSERT INTO `{name}`.x VALUES (5)"),
            ],
        )
        .await;
    });
    let ev = settled_events(&mut d, 13);
    assert_eq!(
        summary(&ev),
        vec![
            s("t1", "c", 1),
            s("t1", "c", 2),
            s("t1", "t", -1),
            s("p", "t", -1),
            s("p", "t", -1),
            s("p", "t", -1),
            s("x", "t", -1),
            s("t2", "t", -1),
            s("t2_old", "t", -1),
            s("t3", "t", -1),
            s("t1", "t", -1),
            s("t2_old", "t", -1),
            s("x", "c", 5),
        ],
        "one truncate per affected table, none for ADD COLUMN; log:\n{}",
        d.log_text()
    );
    let t = &ev[2];
    assert!(t["before"].is_null() && t["after"].is_null(), "{t}");
    assert!(t["source"]["gtid"].is_string(), "{t}");
    assert_eq!(t["source"]["db"], name.as_str());
    assert_increasing(&ev);
    // Redis: the t1 truncate deleted every key matching on_truncate; p's truncates deleted
    // only its key without columns
    let t0 = Instant::now();
    let exists = redis_exists;
    while exists(&mut r, &format!("{p}:t1:99")) || exists(&mut r, &format!("{p}:p:all")) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "truncate keys not deleted; log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for k in ["t1:1", "t1:list:a", "t1:count"] {
        assert!(!exists(&mut r, &format!("{p}:{k}")), "{k} still cached");
    }
    assert!(
        exists(&mut r, &format!("{p}:p:5")),
        "p:5 is not a truncate key"
    );
    assert!(exists(&mut r, &format!("{p}:other:1")));
    // Kafka: the t1 topic holds its 2 inserts, then the 2 truncates on each of 3 partitions
    let t0 = Instant::now();
    let msgs = loop {
        let m = consume_all(&kafka_brokers(), &topic);
        if m.len() >= 8 || t0.elapsed() > Duration::from_secs(30) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let truncs: Vec<&KMsg> = msgs
        .iter()
        .filter(|m| m.json().is_some_and(|j| j["op"] == "t"))
        .collect();
    assert_eq!(msgs.len(), 8, "{msgs:?}");
    assert_eq!(truncs.len(), 6);
    let mut parts: Vec<i32> = truncs.iter().map(|m| m.partition).collect();
    parts.sort();
    assert_eq!(parts, vec![0, 0, 1, 1, 2, 2], "every partition");
    assert!(truncs.iter().all(|m| m.key.is_none()), "null key");
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(truncates: truncate_events_mariadb(), truncate_events_mysql());

/// MariaDB does not log foreign-key cascade changes: `check` and startup name the child table.
/// MySQL 9 logs them as row events, which binlogd emits.
fn fk_cascades(f: Flavor) {
    let rt = rt();
    let name = format!("fk_{}", f.tag());
    let dir = workdir(&name);
    let mut c = rt.block_on(root(f));
    rt.block_on(async {
        fresh_tables(&mut c, &name, &["parent (id INT PRIMARY KEY)"]).await;
        exec_all(
            &mut c,
            &[
                format!(
                    "CREATE TABLE `{name}`.child (id INT PRIMARY KEY, pid INT, \
                     CONSTRAINT child_parent FOREIGN KEY (pid) REFERENCES `{name}`.parent (id) ON DELETE CASCADE)"
                ),
                format!("INSERT INTO `{name}`.parent VALUES (1)"),
                format!("INSERT INTO `{name}`.child VALUES (7, 1)"),
            ],
        )
        .await;
    });
    let start = rt.block_on(binlog_end(&mut c, f));
    let cfg = config(f, &name, &name, &start, &dir, "");
    let cfg_path = dir.join("check.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let (code, out) = run_binlogd(&["check", "-c", cfg_path.to_str().unwrap()]);
    let warned = out.contains(&format!(
        "streamed table {name}.child has foreign key child_parent (ON DELETE CASCADE)"
    )) && out.contains("will not appear as events");
    match f {
        Flavor::MariaDb => assert!(warned && code == 0, "{code}: {out}"),
        Flavor::MySql => assert!(!warned && code == 0, "{code}: {out}"),
    }
    let mut d = Daemon::start(&dir, &cfg);
    rt.block_on(exec_all(
        &mut c,
        &[format!("DELETE FROM `{name}`.parent WHERE id = 1")],
    ));
    let want = match f {
        // the cascade's delete of child 7 is not in MariaDB's binlog
        Flavor::MariaDb => vec![s("parent", "d", 1)],
        Flavor::MySql => vec![s("child", "d", 7), s("parent", "d", 1)],
    };
    let ev = d.wait_events(want.len(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let mut got = summary(&d.events());
    got.sort();
    assert_eq!(got, want, "{ev:?}");
    if f == Flavor::MariaDb {
        assert!(
            d.log_all().contains("child_parent"),
            "startup warns: {}",
            d.log_text()
        );
    }
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(fk_cascades: fk_cascades_mariadb(), fk_cascades_mysql());

/// A value that cannot be rendered (here: invalid UTF-8 written into a binlog file) stops
/// binlogd before its row change, naming table, column and position, and every complete
/// transaction ahead of it in the same batch still reaches the sink.
#[test]
fn unrenderable_value_keeps_earlier_transactions() {
    let f = Flavor::MySql;
    let rt = rt();
    let name = "unrenderable_mysql";
    let dir = workdir(name);
    let mut c = rt.block_on(root(f));
    let marker = "MARKER-\u{e9}\u{e9}";
    let file = rt.block_on(async {
        fresh_tables(
            &mut c,
            name,
            &["t (id INT PRIMARY KEY, s VARCHAR(40)) CHARACTER SET utf8mb4"],
        )
        .await;
        exec_all(&mut c, &["FLUSH BINARY LOGS".to_string()]).await;
        let (file, _) = binlog_end(&mut c, f).await;
        for q in [
            format!("INSERT INTO `{name}`.t VALUES (1, 'a')"),
            format!("INSERT INTO `{name}`.t VALUES (2, 'b')"),
            format!("INSERT INTO `{name}`.t VALUES (3, '{marker}')"),
            format!("INSERT INTO `{name}`.t VALUES (4, 'd')"),
        ] {
            c.query_drop(q).await.unwrap();
        }
        c.query_drop("FLUSH BINARY LOGS").await.unwrap();
        file
    });
    let src = std::path::Path::new(&std::env::var("BINLOGD_TEST_DIR").unwrap())
        .join("mysql")
        .join(&file);
    let mut bytes = std::fs::read(&src).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("marker in the binlog file");
    // é (C3 A9) → FF FF: same length, invalid UTF-8
    let e = at + "MARKER-".len();
    bytes[e..e + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let copy = dir.join(&file);
    std::fs::write(&copy, &bytes).unwrap();
    let start = (file.clone(), 4u64);
    let cfg = config(f, name, name, &start, &dir, "verify_checksums = false");
    let cfg_path = dir.join("binlogd.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let (code, out) = run_binlogd(&[
        "replay",
        "-c",
        cfg_path.to_str().unwrap(),
        "--from",
        &format!("{file}:4"),
        "--binlog-file",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{name}.t column s row 0: invalid UTF-8")) && out.contains(&file),
        "{out}"
    );
    let ev = read_events(&dir.join("out.jsonl"));
    assert_eq!(
        summary(&ev),
        vec![s("t", "c", 1), s("t", "c", 2)],
        "the transactions before it: {out}"
    );
}

/// Statements applications run that write rows in ways a plain INSERT/UPDATE/DELETE suite never
/// exercises: REPLACE (over a row and over a new key), INSERT … ON DUPLICATE KEY UPDATE,
/// multi-table UPDATE and DELETE, CREATE TABLE … SELECT, INSERT … SELECT from a TEMPORARY table,
/// a column renamed mid-stream, and (MariaDB) a SEQUENCE advanced in the same database. The
/// events, applied in order by `id`, give every table's rows exactly as the server has them.
fn application_statements(f: Flavor) {
    let rt = rt();
    let name = format!("appstmt_{}", f.tag());
    let dir = workdir(&name);
    let mut c = rt.block_on(root(f));
    rt.block_on(fresh_tables(
        &mut c,
        &name,
        &[
            "a (id INT PRIMARY KEY, v VARCHAR(20), n INT NOT NULL DEFAULT 0)",
            "b (id INT PRIMARY KEY, aid INT, w VARCHAR(20))",
        ],
    ));
    let start = rt.block_on(binlog_end(&mut c, f));
    let cfg = config(f, &name, &name, &start, &dir, "");
    let mut d = Daemon::start(&dir, &cfg);
    let n = &name;
    let mut qs = vec![
        // multi-table DELETE names its tables without a database
        format!("USE `{n}`"),
        format!("INSERT INTO `{n}`.a (id, v) VALUES (1,'a1'),(2,'a2'),(3,'a3')"),
        format!("INSERT INTO `{n}`.b VALUES (10,1,'b10'),(20,2,'b20'),(30,3,'b30')"),
        format!("REPLACE INTO `{n}`.a (id, v, n) VALUES (1,'a1r',5)"),
        format!("REPLACE INTO `{n}`.a (id, v) VALUES (4,'a4')"),
        format!(
            "INSERT INTO `{n}`.a (id, v) VALUES (2,'dup'),(5,'a5') ON DUPLICATE KEY UPDATE n = n + 1, v = CONCAT(v, '+')"
        ),
        format!(
            "UPDATE `{n}`.a JOIN `{n}`.b ON b.aid = a.id SET a.n = a.n + 10, b.w = CONCAT(b.w, '!') WHERE a.id <= 2"
        ),
        format!(
            "DELETE x, y FROM `{n}`.a AS x JOIN `{n}`.b AS y ON y.aid = x.id WHERE x.id = 3"
        ),
        format!("CREATE TABLE `{n}`.c (PRIMARY KEY (id)) AS SELECT id, v FROM `{n}`.a WHERE id <= 2"),
        format!("CREATE TEMPORARY TABLE `{n}`.tmp (id INT PRIMARY KEY, v VARCHAR(20))"),
        format!("INSERT INTO `{n}`.tmp VALUES (6,'t6'),(7,'t7')"),
        format!("INSERT INTO `{n}`.a (id, v) SELECT id, v FROM `{n}`.tmp"),
        format!("DROP TEMPORARY TABLE `{n}`.tmp"),
        format!("ALTER TABLE `{n}`.b RENAME COLUMN w TO label"),
        format!("UPDATE `{n}`.b SET label = 'renamed' WHERE id = 10"),
        format!("INSERT INTO `{n}`.b (id, aid, label) VALUES (40, 4, 'b40')"),
    ];
    if f == Flavor::MariaDb {
        qs.push(format!("CREATE SEQUENCE `{n}`.s"));
        qs.push(format!("SELECT NEXTVAL(`{n}`.s)"));
        qs.push(format!(
            "INSERT INTO `{n}`.a (id, v) VALUES (8, 'after the sequence')"
        ));
    }
    rt.block_on(exec_all(&mut c, &qs));
    // the server's rows of each table, `id` → row
    let tables = ["a", "b", "c"];
    let truth: std::collections::BTreeMap<String, std::collections::BTreeMap<i64, Value>> = rt
        .block_on(async {
            let mut out = std::collections::BTreeMap::new();
            for t in tables {
                let rows: Vec<mysql_async::Row> =
                    c.query(format!("SELECT * FROM `{n}`.{t}")).await.unwrap();
                let mut m = std::collections::BTreeMap::new();
                for r in rows {
                    let mut o = serde_json::Map::new();
                    for (i, col) in r.columns_ref().iter().enumerate() {
                        let v: Value = match r.as_ref(i).unwrap() {
                            mysql_async::Value::NULL => Value::Null,
                            mysql_async::Value::Int(x) => serde_json::json!(x),
                            mysql_async::Value::UInt(x) => serde_json::json!(x),
                            mysql_async::Value::Bytes(b) => {
                                let s = String::from_utf8_lossy(b).into_owned();
                                s.parse::<i64>()
                                    .map(|x| serde_json::json!(x))
                                    .unwrap_or(Value::String(s))
                            }
                            other => panic!("{other:?}"),
                        };
                        o.insert(col.name_str().into_owned(), v);
                    }
                    m.insert(o["id"].as_i64().unwrap(), Value::Object(o));
                }
                out.insert(t.to_string(), m);
            }
            out
        });
    let want: usize = truth.values().map(|m| m.len()).sum();
    // wait until the model holds every row (or 30 s), then compare
    let t0 = Instant::now();
    let model = loop {
        let mut model: std::collections::BTreeMap<String, std::collections::BTreeMap<i64, Value>> =
            std::collections::BTreeMap::new();
        for e in d.events() {
            let t = e["source"]["table"].as_str().unwrap().to_string();
            if !tables.contains(&t.as_str()) {
                continue; // MariaDB logs the SEQUENCE's own row as row events of `s`
            }
            let m = model.entry(t).or_default();
            match e["op"].as_str().unwrap() {
                "c" | "r" => {
                    m.insert(e["after"]["id"].as_i64().unwrap(), e["after"].clone());
                }
                "u" => {
                    m.remove(&e["before"]["id"].as_i64().unwrap());
                    m.insert(e["after"]["id"].as_i64().unwrap(), e["after"].clone());
                }
                "d" => {
                    m.remove(&e["before"]["id"].as_i64().unwrap());
                }
                "t" => m.clear(),
                o => panic!("op {o}"),
            }
        }
        let have: usize = tables
            .iter()
            .map(|t| model.get(*t).map_or(0, |m| m.len()))
            .sum();
        let marker = f != Flavor::MariaDb || model.get("a").is_some_and(|m| m.contains_key(&8));
        if (have == want && marker) || t0.elapsed() > Duration::from_secs(30) {
            break model;
        }
        assert!(d.running(), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    // values compared, not names: a row last changed before the RENAME COLUMN has the old
    // name in its image (the rename writes no row events)
    let values = |m: &std::collections::BTreeMap<i64, Value>| -> Vec<(i64, Vec<String>)> {
        m.iter()
            .map(|(id, row)| {
                let mut v: Vec<String> = row
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|x| x.to_string())
                    .collect();
                v.sort();
                (*id, v)
            })
            .collect()
    };
    for t in tables {
        assert_eq!(
            values(&model.get(t).cloned().unwrap_or_default()),
            values(&truth[t]),
            "{f:?} table {t}: events applied in order differ from the table: {}",
            d.log_text()
        );
    }
    assert!(d.running(), "{}", d.log_text());
    assert_eq!(d.stop(), Some(0), "{}", d.log_text());
}

both_flavors!(application_statements: application_statements_mariadb(), application_statements_mysql());
