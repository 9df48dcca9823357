//! Checkpoint, resume, and the operator verbs, against real MariaDB and MySQL 9.7.

mod common;

use common::*;
use mysql_async::prelude::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Key = Coord;

fn key(e: &Value) -> Key {
    coord(e)
}

/// Tables `a` (inserted into) and `b` (five counters) of [`writer`].
const COUNTERS: &[&str] = &[
    "a (id INT PRIMARY KEY, v INT)",
    "b (id INT PRIMARY KEY, v INT)",
];

/// [`COUNTERS`] in a fresh database, the counters at 0, and the binlog end after them.
fn counters_scenario(f: Flavor, name: &str) -> Scenario {
    let mut s = Scenario::new(f, name, COUNTERS);
    s.sql(&[format!(
        "INSERT INTO `{name}`.b VALUES (0,0),(1,0),(2,0),(3,0),(4,0)"
    )]);
    s.start = s.binlog_end();
    s
}

/// Writes transactions until `stop`: each inserts two rows into `a` and bumps two counters in
/// `b`. Returns the number of committed transactions.
async fn writer(f: Flavor, db: String, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let mut c = root(f).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut tx = c.start_transaction(Default::default()).await.unwrap();
        tx.query_drop(format!(
            "INSERT INTO `{db}`.a VALUES ({}, 0), ({}, 0)",
            2 * n,
            2 * n + 1
        ))
        .await
        .unwrap();
        tx.query_drop(format!(
            "UPDATE `{db}`.b SET v = v + 1 WHERE id IN ({}, {})",
            n % 5,
            (n + 2) % 5
        ))
        .await
        .unwrap();
        tx.commit().await.unwrap();
        n += 1;
        done.store(n, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Checks the union of everything the daemon wrote: every committed change at least once,
/// in order per key. Returns the first-occurrence count.
fn check_complete(ev: &[Value], txns: u64) -> usize {
    let mut seen = HashSet::new();
    let mut a_ids = HashSet::new();
    let mut b_last: HashMap<i64, i64> = HashMap::new();
    let mut firsts = 0;
    for e in ev {
        if !seen.insert(key(e)) {
            continue;
        }
        firsts += 1;
        match e["source"]["table"].as_str().unwrap() {
            "a" => {
                assert!(
                    a_ids.insert(e["after"]["id"].as_i64().unwrap()),
                    "an insert appears twice with different coordinates"
                );
            }
            "b" => {
                let id = e["after"]["id"].as_i64().unwrap();
                let v = e["after"]["v"].as_i64().unwrap();
                let last = b_last.entry(id).or_insert(0);
                assert_eq!(
                    v,
                    *last + 1,
                    "b.id={id}: counter updates arrive complete and in order"
                );
                *last = v;
            }
            t => panic!("unexpected table {t}"),
        }
    }
    assert_eq!(a_ids.len() as u64, 2 * txns, "every inserted row");
    assert_eq!(
        b_last.values().sum::<i64>() as u64,
        2 * txns,
        "every counter update"
    );
    firsts
}

fn crash_test(f: Flavor) {
    let s = counters_scenario(f, &format!("crash_{}", f.tag()));
    let (name, pipeline) = (s.name.clone(), s.pipeline());
    let mut d = s.daemon("");
    let (rt, mut c) = (s.rt, s.c);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let w = rt.spawn(writer(f, name.clone(), stop.clone(), done.clone()));
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9;
    let mut segments: Vec<(usize, Option<(String, u64)>)> = Vec::new();
    for _ in 0..10 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(300 + (seed >> 33) % 1200));
        d.child.kill().unwrap(); // SIGKILL
        d.child.wait().unwrap();
        let lines = d.events().len();
        let at = rt.block_on(stored_position(&mut c, &pipeline));
        segments.push((lines, at));
        d.restart();
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(w).unwrap();
    let txns = done.load(Ordering::Relaxed);
    assert!(txns > 50, "the writer made progress ({txns} transactions)");
    // wait until every change arrived at least once
    let t0 = Instant::now();
    loop {
        let ev = d.events();
        let uniq: HashSet<Key> = ev.iter().map(key).collect();
        if uniq.len() as u64 >= 4 * txns {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "only {} of {} changes; log:\n{}",
            uniq.len(),
            4 * txns,
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(d.stop(), Some(0));
    let ev = d.events();
    let firsts = check_complete(&ev, txns);
    assert_eq!(firsts as u64, 4 * txns);
    // repeats lie after the stored position the restart resumed from
    let mut seen: HashSet<Key> = HashSet::new();
    let mut repeats = 0;
    let mut seg = 0usize;
    for (i, e) in ev.iter().enumerate() {
        while seg < segments.len() && i >= segments[seg].0 {
            seg += 1;
        }
        let k = key(e);
        if !seen.insert(k.clone()) {
            repeats += 1;
            let resumed_from = segments[seg - 1]
                .1
                .clone()
                .expect("a repeat implies a restart from a stored position");
            assert!(
                (k.0.as_str(), k.1) >= (resumed_from.0.as_str(), resumed_from.1),
                "repeat {k:?} lies before the stored position {resumed_from:?} it resumed from"
            );
        }
    }
    eprintln!(
        "{}: {txns} transactions, {} events written, {repeats} repeats after 10 kill -9",
        f.tag(),
        ev.len()
    );
}

both_flavors!(crash_test: crash_kill9_mariadb(), crash_kill9_mysql());

fn graceful(f: Flavor) {
    let s = counters_scenario(f, &format!("graceful_{}", f.tag()));
    let name = s.name.clone();
    let mut d = s.daemon("");
    let rt = s.rt;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let w = rt.spawn(writer(f, name.clone(), stop.clone(), done.clone()));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(
            d.stop(),
            Some(0),
            "SIGTERM under load exits 0; log:\n{}",
            d.log_text()
        );
        d.restart();
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(w).unwrap();
    let txns = done.load(Ordering::Relaxed);
    d.wait_events(4 * txns as usize, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.stop(), Some(0));
    let ev = d.events();
    let uniq: HashSet<Key> = ev.iter().map(key).collect();
    assert_eq!(uniq.len(), ev.len(), "no repeats after graceful restarts");
    check_complete(&ev, txns);
}

both_flavors!(graceful: graceful_restart_mariadb(), graceful_restart_mysql());

/// position show/set/reset; replay of a range (exact rows); migrations twice.
fn operator_verbs(f: Flavor) {
    let s = Scenario::new(
        f,
        &format!("verbs_{}", f.tag()),
        &["t (id INT PRIMARY KEY)"],
    );
    let mut d = s.daemon("");
    let Scenario {
        rt,
        name,
        dir,
        mut c,
        ..
    } = s;
    let cfg = d.config.to_str().unwrap().to_string();
    let mut marks = Vec::new();
    rt.block_on(async {
        for i in 0..5 {
            c.query_drop(format!("INSERT INTO `{name}`.t VALUES ({i})"))
                .await
                .unwrap();
            marks.push(binlog_end(&mut c, f).await);
        }
    });
    d.wait_events(5, Duration::from_secs(30));
    // while running: show works, set/reset are refused. The sink has the rows;
    // the checkpoint follows within `interval` (200 ms here), so poll for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (code, out) = loop {
        let (code, out) = run_binlogd(&["position", "show", "-c", &cfg]);
        if out.contains("behind:") || std::time::Instant::now() > deadline {
            break (code, out);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("running (lock held)") && out.contains("behind:"),
        "{out}"
    );
    let (code, out) = run_binlogd(&["position", "reset", "-c", &cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is running") && out.contains("stop it first"),
        "{out}"
    );
    let (code, _) = run_binlogd(&["position", "set", "--latest", "-c", &cfg]);
    assert_eq!(code, 1);
    assert_eq!(d.stop(), Some(0));
    let (code, out) = run_binlogd(&["position", "show", "-c", &cfg]);
    assert_eq!(code, 0);
    let shown: String = out
        .lines()
        .find_map(|l| l.strip_prefix("stored position: "))
        .unwrap()
        .to_string();
    let (sf, sp) = shown.rsplit_once(':').unwrap();
    assert!(
        (sf.to_string(), sp.parse::<u64>().unwrap()) >= marks[4],
        "stored at or after the last commit: {out}"
    );
    // set to after row 1, restart: rows 2..4 again
    let (code, out) = run_binlogd(&[
        "position",
        "set",
        "--file",
        &marks[1].0,
        "--pos",
        &marks[1].1.to_string(),
        "-c",
        &cfg,
    ]);
    assert_eq!(code, 0, "{out}");
    std::fs::remove_file(&d.out).unwrap();
    d.restart();
    let ev = d.wait_events(3, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.stop(), Some(0));
    let ids: Vec<i64> = d
        .events()
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 3, 4], "resumed from the set position; {ev:?}");
    // reset: next run starts at source.start again
    let (code, out) = run_binlogd(&["position", "reset", "-c", &cfg]);
    assert_eq!(code, 0, "{out}");
    let (_, out) = run_binlogd(&["position", "show", "-c", &cfg]);
    assert!(out.contains("stored position: none"), "{out}");
    // replay rows 1..=3 exactly (from after row 0 to after row 3) to the file sink
    let replay_out = dir.join("out.jsonl");
    std::fs::remove_file(&replay_out).unwrap();
    let from = format!("{}:{}", marks[0].0, marks[0].1);
    let to = format!("{}:{}", marks[3].0, marks[3].1);
    let (code, out) = run_binlogd(&[
        "replay", "-c", &cfg, "--from", &from, "--to", &to, "--sink", "out",
    ]);
    assert_eq!(code, 0, "{out}");
    let ids: Vec<i64> = read_events(&replay_out)
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3], "exactly the range");
    let (_, out) = run_binlogd(&["position", "show", "-c", &cfg]);
    assert!(
        out.contains("stored position: none"),
        "replay does not move the stored position: {out}"
    );
    // migrations twice: no error, no change
    for _ in 0..2 {
        let (code, out) = run_binlogd(&["migrate", "-c", &cfg]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("migrations applied: 0"), "{out}");
    }
    let n: Option<u64> = rt
        .block_on(c.query_first("SELECT COUNT(*) FROM binlogd.schema_migrations"))
        .unwrap();
    assert_eq!(
        n,
        Some(3),
        "0001 checkpoint, 0002 xa_restart, 0003 snapshot"
    );
}

both_flavors!(operator_verbs: operator_verbs_mariadb(), operator_verbs_mysql());

/// The checkpoint on another server than the source (MariaDB source, MySQL checkpoint).
#[test]
fn checkpoint_on_separate_server() {
    let f = Flavor::MariaDb;
    let name = "sepcp";
    let s = Scenario::new(f, name, &["t (id INT PRIMARY KEY)"]);
    let mut other = s.rt.block_on(root(Flavor::MySql));
    s.rt.block_on(other.query_drop("DROP DATABASE IF EXISTS binlogd_sep"))
        .unwrap();
    let cfg = s.config("").replace(
        "[checkpoint]\n",
        &format!(
            "[checkpoint]\nurl = \"{}\"\nschema = \"binlogd_sep\"\n",
            Flavor::MySql.root_url()
        ),
    );
    let mut d = s.daemon_with(&cfg);
    let Scenario { rt, mut c, .. } = s;
    rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES (1), (2)")))
        .unwrap();
    let mark = rt.block_on(binlog_end(&mut c, f));
    d.wait_events(2, Duration::from_secs(30));
    assert_eq!(d.stop(), Some(0));
    let row: Option<(String, u64, String)> = rt
        .block_on(other.query_first("SELECT binlog_file, binlog_pos, gtid_set FROM binlogd_sep.checkpoint WHERE pipeline = 'sepcp_maria'"))
        .unwrap();
    let (file, pos, gtid) = row.expect("stored on the MySQL server");
    assert!(
        (file, pos) >= mark,
        "the stored position is the source's, at or after our insert"
    );
    assert!(gtid.contains('-'), "a MariaDB GTID position: {gtid}");
    let n: Option<u64> = rt
        .block_on(c.query_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'binlogd_sep'",
        ))
        .unwrap();
    assert_eq!(n, Some(0), "nothing written on the source");
}

/// The binlog needed to resume is purged: a clear error, non-zero exit, stored position
/// untouched; the range is then replayed from copies of the binlog files.
fn purged(f: Flavor, port: u16) {
    let rt = rt();
    let name = format!("purged_{}", f.tag());
    let pipeline = format!("{name}_{}", f.tag());
    let dir = workdir(&name);
    // its own server: PURGE skips files other tests' replicas are reading
    let srv = PrivateServer::start(f, &dir, port, &[]);
    let mut c = rt.block_on(root_at(&srv.root_url()));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        &name,
        &["t (id INT PRIMARY KEY, v VARCHAR(10))"],
    ));
    let mut d = Daemon::start(
        &dir,
        &config_for(&srv.cdc_url(), f, &name, &name, &start, &dir, ""),
    );
    rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES (1, 'a')")))
        .unwrap();
    d.wait_events(1, Duration::from_secs(30));
    assert_eq!(d.stop(), Some(0));
    let before = rt
        .block_on(stored_position(&mut c, &pipeline))
        .expect("stored");
    // changes the daemon has not seen, then rotate and purge everything before them
    let datadir: String = rt
        .block_on(c.query_first("SELECT @@datadir"))
        .unwrap()
        .unwrap();
    let copies = dir.join("binlogs");
    std::fs::create_dir_all(&copies).unwrap();
    rt.block_on(async {
        exec_all(
            &mut c,
            &[
                format!("INSERT INTO `{name}`.t VALUES (2, 'b'), (3, 'c')"),
                format!("UPDATE `{name}`.t SET v = 'z' WHERE id = 1"),
                "FLUSH BINARY LOGS".to_string(),
            ],
        )
        .await;
    });
    let files: Vec<String> = rt
        .block_on(c.query::<mysql_async::Row, _>("SHOW BINARY LOGS"))
        .unwrap()
        .into_iter()
        .map(|r| r.get::<String, _>(0).unwrap())
        .collect();
    let current = files.last().unwrap().clone();
    let mut copied = Vec::new();
    for fl in &files[..files.len() - 1] {
        if *fl >= before.0 {
            let dst = copies.join(fl);
            std::fs::copy(std::path::Path::new(&datadir).join(fl), &dst).unwrap();
            copied.push(dst);
        }
    }
    rt.block_on(async {
        // the stopped daemon's dump thread may linger until the server notices; it would keep
        // its file from being purged
        let ids: Vec<u64> = c
            .query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
            )
            .await
            .unwrap();
        for id in ids {
            let _ = c.query_drop(format!("KILL {id}")).await;
        }
        let t0 = Instant::now();
        loop {
            c.query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
                .await
                .unwrap();
            let left: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.unwrap();
            if left.len() == 1 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "could not purge the old binlogs"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // `binlogd check` names it before a restart would
    let (code, out) = run_binlogd(&["check", "-c", d.config.to_str().unwrap()]);
    assert_eq!(code, 1, "check: {out}");
    assert!(
        out.contains("is no longer on the server (purged)")
            && out.contains("binlogd replay --binlog-file"),
        "check: {out}"
    );
    // restart: the clear error
    d.restart();
    let code = d.wait_exit(Duration::from_secs(30), "a purged binlog");
    assert_eq!(code, Some(1));
    let log = d.log_all();
    assert!(
        log.contains("no longer on the server") && log.contains("binlogd replay --binlog-file"),
        "{}",
        d.log_text()
    );
    assert_eq!(
        rt.block_on(stored_position(&mut c, &pipeline)),
        Some(before.clone()),
        "stored position untouched"
    );
    // replay the purged range from the copies
    std::fs::remove_file(&d.out).unwrap();
    let mut args: Vec<String> = vec![
        "replay".into(),
        "-c".into(),
        d.config.to_str().unwrap().into(),
    ];
    args.push("--from".into());
    args.push(format!("{}:{}", before.0, before.1));
    args.push("--binlog-file".into());
    args.extend(copied.iter().map(|p| p.to_str().unwrap().to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = run_binlogd(&argv);
    assert_eq!(code, 0, "{out}");
    let ev = read_events(&d.out);
    let got: Vec<(String, i64)> = ev
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap().to_string(),
                e["after"]["id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("c".into(), 2), ("c".into(), 3), ("u".into(), 1)],
        "exactly the unseen changes"
    );
    assert_eq!(ev[2]["before"]["v"], "a");
    assert_eq!(ev[2]["after"]["v"], "z");
}

both_flavors!(purged: purged_binlog_mariadb(3341), purged_binlog_mysql(3342));

/// `replay --from-time … --to-time …` re-sends exactly the transactions in that window.
fn replay_by_time(f: Flavor) {
    let rt = rt();
    let name = format!("rtime_{}", f.tag());
    let dir = workdir(&name);
    let mut c = rt.block_on(root(f));
    rt.block_on(fresh_tables(&mut c, &name, &["t (id INT PRIMARY KEY)"]));
    let cfg_text = config(f, &name, &name, &("unused".into(), 4), &dir, "");
    let cfg = dir.join("binlogd.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let now_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let rfc = |s: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
            .to_string()
    };
    let insert = |c: &mut mysql_async::Conn, id: i32| {
        rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES ({id})")))
            .unwrap()
    };
    let wait_next_second = || {
        let s = now_s();
        while now_s() == s {
            std::thread::sleep(Duration::from_millis(20));
        }
        now_s()
    };
    insert(&mut c, 1);
    let from = wait_next_second();
    insert(&mut c, 2);
    insert(&mut c, 3);
    let last = now_s();
    let next = wait_next_second();
    assert!(next > last);
    insert(&mut c, 4);
    let (code, out) = run_binlogd(&[
        "replay",
        "-c",
        cfg.to_str().unwrap(),
        "--from-time",
        &rfc(from),
        "--to-time",
        &rfc(last),
    ]);
    assert_eq!(code, 0, "{out}");
    let ids: Vec<i64> = read_events(&dir.join("out.jsonl"))
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![2, 3],
        "exactly the transactions in [{}, {}]",
        rfc(from),
        rfc(last)
    );
}

both_flavors!(replay_by_time: replay_by_time_mariadb(), replay_by_time_mysql());

/// The daemon never feeds on its own checkpoint writes, even when binlogd.* is included.
#[test]
fn own_checkpoint_writes_filtered() {
    let name = "ownwrites";
    let s = Scenario::new(Flavor::MariaDb, name, &["t (id INT PRIMARY KEY)"]);
    let cfg = s.config("").replace(
        &format!("include = [\"{name}.*\"]"),
        &format!("include = [\"{name}.*\", \"binlogd.*\"]"),
    );
    let mut d = s.daemon_with(&cfg);
    let Scenario { rt, mut c, .. } = s;
    for i in 0..20 {
        rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES ({i})")))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    d.wait_events(20, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800)); // several checkpoint intervals
    assert_eq!(d.stop(), Some(0));
    let ev = d.events();
    assert!(
        ev.iter().all(|e| e["source"]["db"] == name),
        "no event from binlogd's own tables"
    );
    assert_eq!(ev.len(), 20);
}

/// The checkpoint connection is killed: the daemon reconnects, takes the lock again and keeps
/// storing positions.
#[test]
fn checkpoint_connection_killed() {
    let f = Flavor::MySql;
    let name = "cpkill";
    let s = Scenario::new(f, name, &["t (id INT PRIMARY KEY)"]);
    let pipeline = s.pipeline();
    let mut d = s.daemon("");
    let Scenario { rt, mut c, .. } = s;
    rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES (1)")))
        .unwrap();
    d.wait_events(1, Duration::from_secs(30));
    let lock = format!("binlogd:{pipeline}");
    let holder: Option<u64> = rt
        .block_on(c.exec_first("SELECT IS_USED_LOCK(?)", (&lock,)))
        .unwrap()
        .flatten();
    let holder = holder.expect("the daemon holds the lock");
    rt.block_on(c.query_drop(format!("KILL {holder}"))).unwrap();
    rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES (2)")))
        .unwrap();
    let mark = rt.block_on(binlog_end(&mut c, f));
    d.wait_events(2, Duration::from_secs(30));
    let t0 = Instant::now();
    loop {
        let s = rt.block_on(stored_position(&mut c, &pipeline));
        if s.as_ref().is_some_and(|s| *s >= mark) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "position not stored after the reconnect ({s:?}); log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let new_holder: Option<u64> = rt
        .block_on(c.exec_first("SELECT IS_USED_LOCK(?)", (&lock,)))
        .unwrap()
        .flatten();
    assert!(
        new_holder.is_some_and(|h| h != holder),
        "the lock was taken again on a new connection"
    );
    assert_eq!(d.stop(), Some(0));
}

/// Two daemons for one pipeline: one streams, the other stands by; `kill -9` of the active one
/// and the standby takes over within seconds; together their output has no gap.
fn ha_takeover(f: Flavor) {
    let s = Scenario::new(f, &format!("ha_{}", f.tag()), &["t (id INT PRIMARY KEY)"]);
    let dir_b = workdir(&format!("{}_b", s.name));
    let cfg_a = s.config("");
    let mut a = s.daemon_with(&cfg_a);
    let Scenario {
        rt,
        name,
        dir: dir_a,
        mut c,
        ..
    } = s;
    std::thread::sleep(Duration::from_millis(500));
    // the standby: same pipeline, its own replica id and output file
    let sid_a = format!("server_id = {}", server_id_for(&name, f));
    let cfg_b = cfg_a
        .replace(
            &sid_a,
            &format!("server_id = {}", server_id_for(&name, f) + 1),
        )
        .replace(
            dir_a.join("out.jsonl").to_str().unwrap(),
            dir_b.join("out.jsonl").to_str().unwrap(),
        );
    // no position reset for the standby: it must not disturb the active one
    let mut b = Daemon::builder(&dir_b)
        .config(&cfg_b)
        .inherit_log_level()
        .spawn();
    for i in 0..50 {
        rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES ({i})")))
            .unwrap();
    }
    a.wait_events(50, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        b.events().is_empty(),
        "the standby streams nothing while the active one runs"
    );
    assert!(b.log_all().contains("standing by"));
    a.kill();
    let killed_at = Instant::now();
    for i in 50..100 {
        rt.block_on(c.query_drop(format!("INSERT INTO `{name}`.t VALUES ({i})")))
            .unwrap();
    }
    // b resumes from the stored position: it may repeat a few of a's last changes
    let t0 = Instant::now();
    loop {
        let ids: HashSet<i64> = b
            .events()
            .iter()
            .map(|e| e["after"]["id"].as_i64().unwrap())
            .collect();
        if (50..100).all(|i| ids.contains(&i)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "standby did not take over; log:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = killed_at.elapsed();
    let mut all: Vec<i64> = a
        .events()
        .iter()
        .chain(b.events().iter())
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all, (0..100).collect::<Vec<i64>>(), "the union has no gap");
    eprintln!(
        "{}: standby took over and caught up {:.1}s after kill -9",
        f.tag(),
        took.as_secs_f64()
    );
    assert_eq!(b.stop(), Some(0));
}

both_flavors!(ha_takeover: ha_takeover_mariadb(), ha_takeover_mysql());
