//! Snapshots end to end (issue 15), `binlogd run` against real MariaDB 10.11 and MySQL 9.7:
//! the initial snapshot under a concurrent write load converges (every event applied in order
//! to a model = the tables' final state: 0 lost, 0 stale), kill -9 at random moments and a
//! failover to a standby daemon continue it with at most one chunk per table read again, on
//! demand (`binlogd snapshot start|status|cancel`) while streaming, an ALTER during the
//! snapshot, and the Redis sink ignoring read events.

mod common;

use common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The tables every test here uses: a plain primary key, a composite primary key, a table
/// with only a UNIQUE NOT NULL key.
const TABLES: &[(&str, &str, &[&str])] = &[
    ("t1", "id INT PRIMARY KEY, v INT, s VARCHAR(32)", &["id"]),
    (
        "t2",
        "a INT NOT NULL, b VARCHAR(8) NOT NULL, v INT, PRIMARY KEY (a, b)",
        &["a", "b"],
    ),
    ("t3", "u INT NOT NULL, v INT, UNIQUE KEY (u)", &["u"]),
];

fn key_cols(table: &str) -> &'static [&'static str] {
    TABLES
        .iter()
        .find(|t| t.0 == table)
        .map(|t| t.2)
        .unwrap_or(&["id"])
}

async fn setup(c: &mut Conn, db: &str, rows: u64) {
    fresh_db(c, db).await;
    for (t, cols, _) in TABLES {
        c.query_drop(format!("CREATE TABLE `{db}`.{t} ({cols})"))
            .await
            .unwrap();
    }
    c.query_drop(format!("CREATE TABLE `{db}`.marker (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    // rows in batches of 1000
    let mut n = 1;
    while n <= rows {
        let end = (n + 999).min(rows);
        let v1: Vec<String> = (n..=end).map(|i| format!("({i},{i},'s{i}')")).collect();
        let v2: Vec<String> = (n..=end)
            .map(|i| format!("({},'b{}',{i})", i % 97, i))
            .collect();
        let v3: Vec<String> = (n..=end).map(|i| format!("({},{i})", i * 3)).collect();
        c.query_drop(format!("INSERT INTO `{db}`.t1 VALUES {}", v1.join(",")))
            .await
            .unwrap();
        c.query_drop(format!("INSERT INTO `{db}`.t2 VALUES {}", v2.join(",")))
            .await
            .unwrap();
        c.query_drop(format!("INSERT INTO `{db}`.t3 VALUES {}", v3.join(",")))
            .await
            .unwrap();
        n = end + 1;
    }
}

/// Random small transactions on the three tables: inserts, updates, deletes and key changes.
fn write_load(f: Flavor, db: &str, rows: u64) -> Load {
    let url = f.root_url();
    let db = db.to_string();
    Load::spawn(move |stop, commits| async move {
        let mut c = root_at(&url).await;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ nonce();
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let span = rows * 2;
        while !stop.load(Ordering::Relaxed) {
            let mut qs = vec!["BEGIN".to_string()];
            for _ in 0..1 + rnd(3) {
                let k = 1 + rnd(span);
                let v = rnd(1_000_000);
                let q = match rnd(10) {
                    0 => format!("INSERT IGNORE INTO `{db}`.t1 VALUES ({k},{v},'n{v}')"),
                    1 => format!("DELETE FROM `{db}`.t1 WHERE id = {k}"),
                    2 => format!(
                        "UPDATE IGNORE `{db}`.t1 SET id = {} WHERE id = {k}",
                        1 + rnd(span)
                    ),
                    3 => format!(
                        "UPDATE `{db}`.t2 SET v = {v} WHERE a = {} AND b = 'b{k}'",
                        k % 97
                    ),
                    4 => format!("DELETE FROM `{db}`.t2 WHERE a = {} AND b = 'b{k}'", k % 97),
                    5 => format!(
                        "INSERT IGNORE INTO `{db}`.t2 VALUES ({},'b{k}',{v})",
                        k % 97
                    ),
                    6 => format!(
                        "UPDATE IGNORE `{db}`.t3 SET u = {} WHERE u = {}",
                        rnd(span * 3),
                        k * 3
                    ),
                    7 => format!("DELETE FROM `{db}`.t3 WHERE u = {}", k * 3),
                    8 => format!(
                        "INSERT IGNORE INTO `{db}`.t3 VALUES ({}, {v})",
                        rnd(span * 3)
                    ),
                    _ => format!("UPDATE `{db}`.t1 SET v = {v}, s = 'u{v}' WHERE id = {k}"),
                };
                qs.push(q);
            }
            qs.push("COMMIT".into());
            let mut ok = true;
            for q in &qs {
                if c.query_drop(q).await.is_err() {
                    ok = false;
                    let _ = c.query_drop("ROLLBACK").await;
                    break;
                }
            }
            if ok {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            // a steady load, not a flood: every daemon on the shared server decodes it (other
            // tests run beside this one)
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    })
}

/// A fresh database `<name>_<flavor tag>` with the three tables (`rows` rows each, plus the
/// marker table), a work directory of the same name, and the config streaming it from the
/// server's current end (`start = "latest"`, as a first start would) to `dir/out.jsonl`, with
/// `snapshot` as the `[snapshot]` lines (`tables` defaults to t1–t3: not the marker table,
/// the tests wait for "table done" of these).
fn prepare(f: Flavor, name: &str, rows: u64, snapshot: &str) -> (String, PathBuf, String) {
    let db = format!("{name}_{}", f.tag());
    let start = rt().block_on(async {
        let mut c = root(f).await;
        setup(&mut c, &db, rows).await;
        binlog_end(&mut c, f).await
    });
    let dir = workdir(&db);
    let mut c = config(f, name, &db, &start, &dir, "").replace(
        &format!("start = {{ file = \"{}\", pos = {} }}", start.0, start.1),
        "start = \"latest\"",
    );
    c.push_str(&format!("\n[snapshot]\n{snapshot}\n"));
    if !snapshot.lines().any(|l| l.starts_with("tables")) {
        c.push_str("tables = [\"*.t1\", \"*.t2\", \"*.t3\"]\n");
    }
    (db, dir, c)
}

/// Creates `<db>.<def>` (`def`: name and columns) holding `rows` rows, row `i` (1-based) given
/// by `row(i)` as a VALUES tuple.
fn create_table(f: Flavor, db: &str, def: &str, rows: u64, row: impl Fn(u64) -> String) {
    let table = def.split([' ', '(']).next().unwrap_or(def);
    rt().block_on(async {
        let mut c = root(f).await;
        c.query_drop(format!("CREATE TABLE `{db}`.{def}"))
            .await
            .unwrap();
        let values: Vec<String> = (1..=rows).map(row).collect();
        c.query_drop(format!(
            "INSERT INTO `{db}`.{table} VALUES {}",
            values.join(",")
        ))
        .await
        .unwrap();
    });
}

/// Waits (≤ 60 s, the daemon running) until the log says a table's snapshot is done.
fn wait_table_done(d: &mut Daemon) {
    let t0 = Instant::now();
    while d.log_count("snapshot: table done") < 1 {
        assert!(d.running(), "daemon exited: {}", d.log_text());
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Once 800 rows of `table` were read (the daemon running), runs `ddl` (the DDL-during-snapshot
/// tests: their tables hold 4,000 rows read at 1,000 rows/s).
fn ddl_after_reads(f: Flavor, d: &mut Daemon, table: &str, ddl: &str) {
    while reads(&d.events(), table) < 800 {
        assert!(d.running(), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    rt().block_on(async {
        let mut c = root(f).await;
        c.query_drop(ddl).await.unwrap();
    });
}

/// Applies events in order: table → key → after image.
fn apply(events: &[Value]) -> HashMap<String, BTreeMap<String, Value>> {
    let mut m: HashMap<String, BTreeMap<String, Value>> = HashMap::new();
    let key = |t: &str, img: &Value| -> String {
        let k: Vec<Value> = key_cols(t).iter().map(|c| img[*c].clone()).collect();
        serde_json::to_string(&k).unwrap()
    };
    for e in events {
        let t = e["source"]["table"].as_str().unwrap().to_string();
        let tm = m.entry(t.clone()).or_default();
        match e["op"].as_str().unwrap() {
            "r" | "c" => {
                tm.insert(key(&t, &e["after"]), e["after"].clone());
            }
            "u" => {
                tm.remove(&key(&t, &e["before"]));
                tm.insert(key(&t, &e["after"]), e["after"].clone());
            }
            "d" => {
                tm.remove(&key(&t, &e["before"]));
            }
            "t" => tm.clear(),
            o => panic!("op {o}"),
        }
    }
    m
}

/// The table as key → row JSON (INT and VARCHAR columns only).
async fn table_rows(c: &mut Conn, db: &str, table: &str) -> BTreeMap<String, Value> {
    let rows: Vec<mysql_async::Row> = c
        .query(format!("SELECT * FROM `{db}`.{table}"))
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for r in rows {
        let cols = r.columns();
        let mut o = serde_json::Map::new();
        for (i, col) in cols.iter().enumerate() {
            let v = match r.as_ref(i).unwrap() {
                mysql_async::Value::NULL => Value::Null,
                mysql_async::Value::Int(i) => json!(i),
                mysql_async::Value::UInt(u) => json!(u),
                mysql_async::Value::Bytes(b) => {
                    let s = String::from_utf8(b.clone()).unwrap();
                    match s.parse::<i64>() {
                        Ok(n) if col.column_type().is_numeric_type() => json!(n),
                        _ => json!(s),
                    }
                }
                v => panic!("unexpected value {v:?}"),
            };
            o.insert(col.name_str().to_string(), v);
        }
        let img = Value::Object(o);
        let k: Vec<Value> = key_cols(table).iter().map(|c| img[*c].clone()).collect();
        out.insert(serde_json::to_string(&k).unwrap(), img);
    }
    out
}

/// Every table's model equals its final state.
async fn assert_converged(f: Flavor, db: &str, events: &[Value]) {
    let model = apply(events);
    let mut c = root(f).await;
    for (t, _, _) in TABLES {
        let want = table_rows(&mut c, db, t).await;
        let got = model.get(*t).cloned().unwrap_or_default();
        let lost: Vec<_> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(5)
            .collect();
        let stale: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .take(5)
            .map(|(k, v)| format!("{k}: table {v} model {}", got[k]))
            .collect();
        assert!(
            lost.is_empty() && extra.is_empty() && stale.is_empty(),
            "{f:?} {db}.{t}: {} rows in the table, {} in the model; lost {lost:?}, invented {extra:?}, stale {stale:?}",
            want.len(),
            got.len()
        );
    }
}

/// Writes a marker row and waits for its event: everything before it has been handed on.
fn settle(f: Flavor, db: &str, d: &mut Daemon, id: i64) -> Vec<Value> {
    let rt = rt();
    rt.block_on(async {
        let mut c = root(f).await;
        c.query_drop(format!("INSERT INTO `{db}`.marker VALUES ({id})"))
            .await
            .unwrap();
    });
    let t0 = Instant::now();
    loop {
        // kill -9 tests may leave a partial line per crash
        let (ev, _torn) = read_events_after_crashes(&d.out);
        if ev
            .iter()
            .any(|e| e["source"]["table"] == "marker" && e["after"]["id"] == id)
        {
            return ev
                .into_iter()
                .filter(|e| e["source"]["table"] != "marker")
                .collect();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "marker {id} not seen: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reads(events: &[Value], table: &str) -> usize {
    events
        .iter()
        .filter(|e| e["op"] == "r" && e["source"]["table"] == table)
        .count()
}

#[test]
fn initial_snapshot_converges_under_load() {
    for f in BOTH {
        let rt = rt();
        let rows = 12_000;
        let (db, dir, cfg) = prepare(
            f,
            "snapload",
            rows,
            "mode = \"initial\"\nchunk_rows = 400\nmax_tables = 2\nrows_per_second = 12000",
        );
        let mut load = write_load(f, &db, rows);
        load.wait_commits(50, Duration::from_secs(20), "before the snapshot");
        let mut d = Daemon::start(&dir, &cfg);
        let t0 = Instant::now();
        while d.log_count("snapshot: table done") < 3 {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "snapshot not done: {}",
                d.log_text()
            );
            assert!(d.running(), "daemon exited: {}", d.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        load.wait_commits(50, Duration::from_secs(20), "after the snapshot");
        let commits = load.finish();
        let ev = settle(f, &db, &mut d, 1);
        for (t, _, _) in TABLES {
            assert!(reads(&ev, t) > 0, "{f:?}: no read events of {t}");
        }
        let dropped = d.metric("binlogd_snapshot_rows_dropped_total");
        eprintln!(
            "{f:?}: {commits} load commits, {} events ({} reads), {dropped} read rows dropped by the windows",
            ev.len(),
            ev.iter().filter(|e| e["op"] == "r").count()
        );
        assert_converged(f, &db, &ev).await_in(&rt);
        // read events carry the snapshot marker, "last" once per table
        for (t, _, _) in TABLES {
            let last = ev
                .iter()
                .filter(|e| e["source"]["table"] == *t && e["source"]["snapshot"] == "last")
                .count();
            assert!(last <= 1, "{t}: {last} events marked last");
        }
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// Lets a future run on a runtime in a `#[test]` without async.
trait AwaitIn {
    fn await_in(self, rt: &tokio::runtime::Runtime);
}
impl<F: std::future::Future<Output = ()>> AwaitIn for F {
    fn await_in(self, rt: &tokio::runtime::Runtime) {
        rt.block_on(self)
    }
}

/// Runs a daemon with `snapshot.mode = "initial_only"` to its end (exit 0); its events.
fn run_initial_only(dir: &std::path::Path, cfg: &str) -> Vec<Value> {
    let mut d = Daemon::start(dir, cfg);
    assert_eq!(
        d.wait_exit(Duration::from_secs(120), "initial_only snapshot"),
        Some(0),
        "{}",
        d.log_text()
    );
    read_events_after_crashes(&d.out).0
}

/// The stored snapshot progress of `pipeline` (None: nothing stored).
fn stored_progress_text(f: Flavor, pipeline: &str) -> Option<String> {
    rt().block_on(async {
        let mut c = root(f).await;
        c.exec_first(
            "SELECT progress FROM binlogd.snapshot_progress WHERE pipeline = ?",
            (pipeline,),
        )
        .await
        .unwrap()
    })
}

/// The stored snapshot progress of `pipeline`, as text and as JSON (it must be there).
fn stored_progress(f: Flavor, pipeline: &str) -> (String, Value) {
    let p = stored_progress_text(f, pipeline).expect("stored progress");
    let v = serde_json::from_str(&p).unwrap();
    (p, v)
}

/// Tables of the stored snapshot progress not done yet (None: nothing stored).
fn stored_pending(f: Flavor, pipeline: &str) -> Option<usize> {
    stored_progress_text(f, pipeline).map(|p| p.matches("\"done\":false").count())
}

/// Waits until `pipeline`'s stored progress has every table done (the daemon must keep
/// running), at most `secs` seconds.
fn wait_snapshot_stored(f: Flavor, pipeline: &str, d: &mut Daemon, secs: u64) {
    let t0 = Instant::now();
    while stored_pending(f, pipeline) != Some(0) {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "snapshot not done: {}",
            d.log_text()
        );
        assert!(d.running(), "daemon exited: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Read events of a table whose key was read more than once.
fn reread(events: &[Value], table: &str) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut again = 0;
    for e in events
        .iter()
        .filter(|e| e["op"] == "r" && e["source"]["table"] == table)
    {
        let k: Vec<Value> = key_cols(table)
            .iter()
            .map(|c| e["after"][*c].clone())
            .collect();
        if !seen.insert(serde_json::to_string(&k).unwrap()) {
            again += 1;
        }
    }
    again
}

/// kill -9 at random moments during the snapshot (×10), under a write load: every restart
/// continues with the next chunk (rows read again ≤ one chunk per table per crash) and the
/// output converges.
#[test]
fn kill9_during_snapshot_resumes_with_the_next_chunk() {
    for f in BOTH {
        let rt = rt();
        let rows = 6_000;
        let chunk = 300;
        // 3 tables × 6,000 rows at 4,000 rows/s: ~4.5 s of snapshot, ten kills inside it
        let (db, dir, cfg) = prepare(
            f,
            "snapkill",
            rows,
            &format!("mode = \"initial\"\nchunk_rows = {chunk}\nrows_per_second = 4000"),
        );
        let mut load = write_load(f, &db, rows);
        let mut d = Daemon::start(&dir, &cfg);
        let pipeline = format!("snapkill_{}", f.tag());
        let mut x = nonce();
        let mut crashes = 0;
        for _ in 0..10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            std::thread::sleep(Duration::from_millis(150 + x % 350));
            if stored_pending(f, &pipeline) == Some(0) {
                break;
            }
            d.kill();
            crashes += 1;
            d.restart();
        }
        // the last run finishes the tables still open
        wait_snapshot_stored(f, &pipeline, &mut d, 120);
        load.wait_commits(20, Duration::from_secs(20), "after the snapshot");
        load.finish();
        let ev = settle(f, &db, &mut d, 1);
        assert_converged(f, &db, &ev).await_in(&rt);
        for (t, _, _) in TABLES {
            let again = reread(&ev, t);
            eprintln!(
                "{f:?} {t}: {crashes} kill -9, {} read events, {again} rows read again",
                reads(&ev, t)
            );
            assert!(
                again <= crashes * chunk,
                "{f:?} {t}: {again} rows read again after {crashes} crashes (chunk {chunk})"
            );
        }
        assert!(
            crashes >= 5,
            "only {crashes} kills landed during the snapshot"
        );
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

fn verb(args: &[&str], config: &std::path::Path) -> (i32, String) {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["-c", config.to_str().unwrap()]);
    run_binlogd(&a)
}

/// On demand while streaming: start (with --where), status, cancel; requests for a table that
/// is not streamed or has no key are refused with the fix.
#[test]
fn on_demand_snapshot_status_and_cancel() {
    for f in BOTH {
        let rt = rt();
        let rows = 5_000;
        let (db, dir, cfg) = prepare(
            f,
            "snapod",
            rows,
            "chunk_rows = 500\nrows_per_second = 2000",
        );
        rt.block_on(async {
            let mut c = root(f).await;
            c.query_drop(format!("CREATE TABLE `{db}`.nokey (a INT, b INT)"))
                .await
                .unwrap();
        });
        let mut d = Daemon::start(&dir, &cfg);
        // start = latest: the marker must come after the position the daemon starts from
        d.wait_log("requesting binlog", Duration::from_secs(20));
        let _ = settle(f, &db, &mut d, 1);
        let c = d.config.clone();
        let (code, out) = verb(
            &[
                "snapshot",
                "start",
                "--table",
                &format!("{db}.t1"),
                "--where",
                "id <= 1000",
            ],
            &c,
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("accepted"), "{out}");
        let t0 = Instant::now();
        while reads(&d.events(), "t1") < 1000 {
            assert!(t0.elapsed() < Duration::from_secs(30), "{}", d.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        let ev = d.events();
        assert_eq!(reads(&ev, "t1"), 1000, "--where id <= 1000");
        let (code, out) = verb(&["snapshot", "status"], &c);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("{db}.t1")) && out.contains("done"),
            "{out}"
        );
        // a slow one, cancelled half way
        let (code, out) = verb(&["snapshot", "start", "--table", &format!("{db}.t2")], &c);
        assert_eq!(code, 0, "{out}");
        let t0 = Instant::now();
        while reads(&d.events(), "t2") < 1000 {
            assert!(t0.elapsed() < Duration::from_secs(30), "{}", d.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        let (code, out) = verb(&["snapshot", "cancel"], &c);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("1 table(s) cancelled"), "{out}");
        std::thread::sleep(Duration::from_millis(300));
        let n = reads(&d.events(), "t2");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(reads(&d.events(), "t2"), n, "reads went on after cancel");
        assert!(n < rows as usize, "t2 finished before the cancel");
        let (_, out) = verb(&["snapshot", "status"], &c);
        assert!(out.contains("cancelled"), "{out}");
        // refusals, with the fix
        let (code, out) = verb(
            &["snapshot", "start", "--table", &format!("{db}.nokey")],
            &c,
        );
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains("no primary key") && out.contains("add a primary key"),
            "{out}"
        );
        let (code, out) = verb(&["snapshot", "start", "--table", "mysql.user"], &c);
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains("not streamed") && out.contains("source.include"),
            "{out}"
        );
        let (code, out) = verb(
            &[
                "snapshot",
                "start",
                "--table",
                &format!("{db}.t1"),
                "--where",
                "nosuchcolumn = 1",
            ],
            &c,
        );
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("nosuchcolumn"), "{out}");
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// A standby daemon takes over mid-snapshot (the active one killed) and continues it from the
/// stored progress: together their outputs converge, at most one chunk per table read again.
#[test]
fn standby_continues_the_snapshot_after_failover() {
    let f = Flavor::MariaDb;
    let rt = rt();
    let rows = 6_000;
    let chunk = 300;
    let (db, da, ca) = prepare(
        f,
        "snapha",
        rows,
        &format!("mode = \"initial\"\nchunk_rows = {chunk}\nrows_per_second = 3000"),
    );
    let db = db.as_str();
    let db_dir = workdir("snapha_standby");
    let cb = ca.replace(&da.display().to_string(), &db_dir.display().to_string());
    let mut load = write_load(f, db, rows);
    let mut a = Daemon::start(&da, &ca);
    a.wait_log(
        "snapshot: reading the existing rows",
        Duration::from_secs(20),
    );
    let mut b = Daemon::builder(&db_dir).config(&cb).spawn();
    b.wait_log("standing by", Duration::from_secs(20));
    while reads(&a.events(), "t1") < 1500 {
        assert!(a.running(), "{}", a.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    a.kill();
    let t0 = Instant::now();
    while b.log_count("snapshot: table done") < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "standby did not finish: {}",
            b.log_text()
        );
        assert!(b.running(), "{}", b.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    load.wait_commits(20, Duration::from_secs(20), "after the snapshot");
    load.finish();
    let evb = settle(f, db, &mut b, 1);
    let mut ev = a.events();
    ev.extend(evb);
    assert_converged(f, db, &ev).await_in(&rt);
    for (t, _, _) in TABLES {
        let again = reread(&ev, t);
        assert!(
            again <= chunk,
            "{t}: {again} rows read again after one failover"
        );
    }
    assert!(
        b.log_all().contains("resuming from stored position"),
        "{}",
        b.log_text()
    );
    assert_eq!(b.stop(), Some(0));
}

/// A DROP COLUMN while the table's snapshot runs: the next chunk's query names a column that
/// is gone; the chunk is read again with the schema loaded anew, every row is read, the
/// snapshot finishes.
#[test]
fn drop_column_during_snapshot_rereads_without_it() {
    for f in BOTH {
        let rows = 4_000u64;
        let (db, dir, cfg) = prepare(
            f,
            "snapdrop",
            10,
            "mode = \"initial\"\nchunk_rows = 200\nrows_per_second = 1000\ntables = [\"*.td\"]",
        );
        create_table(
            f,
            &db,
            "td (id INT PRIMARY KEY, v INT NOT NULL, x INT)",
            rows,
            |i| format!("({i},{i},{i})"),
        );
        let mut d = Daemon::start(&dir, &cfg);
        ddl_after_reads(
            f,
            &mut d,
            "td",
            &format!("ALTER TABLE `{db}`.td DROP COLUMN x"),
        );
        wait_table_done(&mut d);
        let ev = settle(f, &db, &mut d, 1);
        let mut seen = std::collections::HashSet::new();
        let mut without_x = 0;
        for e in ev
            .iter()
            .filter(|e| e["op"] == "r" && e["source"]["table"] == "td")
        {
            let id = e["after"]["id"].as_u64().unwrap();
            assert_eq!(e["after"]["v"], json!(id), "{f:?}: {e}");
            match e["after"].get("x") {
                Some(x) => assert_eq!(x, &json!(id), "{f:?}: {e}"),
                None => without_x += 1,
            }
            seen.insert(id);
        }
        assert_eq!(seen.len() as u64, rows, "{f:?}: every row read");
        assert!(without_x > 0, "{f:?}: no row read after the DROP COLUMN");
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// The chunk key's column dropped while the table's snapshot runs (another unique key is then
/// chosen): the daemon stops with an error naming the fix, instead of continuing the stored
/// last key's values in another key (rows skipped or read twice).
#[test]
fn a_changed_chunk_key_stops_with_the_fix() {
    let f = Flavor::MariaDb;
    let rows = 4_000u64;
    let (db, dir, cfg) = prepare(
        f,
        "snapkey",
        10,
        "mode = \"initial\"\nchunk_rows = 200\nrows_per_second = 1000\ntables = [\"*.tk\"]",
    );
    create_table(
        f,
        &db,
        "tk (id INT PRIMARY KEY, code INT NOT NULL UNIQUE, v INT)",
        rows,
        |i| format!("({i},{},{i})", rows + 1 - i),
    );
    reset_pipeline(&dir, &cfg);
    let mut d = Daemon::builder(&dir).config(&cfg).spawn();
    ddl_after_reads(
        f,
        &mut d,
        "tk",
        &format!("ALTER TABLE `{db}`.tk DROP COLUMN id"),
    );
    let code = d.wait_exit(Duration::from_secs(60), "the stop on a changed key");
    let log = d.log_all();
    assert!(code.is_some_and(|c| c != 0), "{log}");
    assert!(
        log.contains("the chunk key changed") && log.contains("snapshot cancel"),
        "{log}"
    );
}

/// A DROP TABLE while the table's snapshot runs: the daemon keeps streaming, the table's
/// snapshot ends (nothing is left to read), the other table's snapshot finishes. Also with
/// the daemon stopped when the table is dropped (`while_stopped`): the restart, which has the
/// table pending in its stored progress, ends that table's snapshot the same way.
#[test]
fn drop_table_during_snapshot_ends_its_snapshot() {
    for (f, while_stopped) in [
        (Flavor::MariaDb, false),
        (Flavor::MySql, false),
        (Flavor::MariaDb, true),
    ] {
        let rt = rt();
        let rows = 4_000u64;
        let (db, dir, cfg) = prepare(
            f,
            if while_stopped { "snapdrops" } else { "snapdropt" },
            1_000,
            "mode = \"initial\"\nchunk_rows = 200\nrows_per_second = 1000\ntables = [\"*.tx\", \"*.t1\"]",
        );
        create_table(
            f,
            &db,
            "tx (id INT PRIMARY KEY, v INT NOT NULL)",
            rows,
            |i| format!("({i},{i})"),
        );
        let mut d = Daemon::start(&dir, &cfg);
        let drop = format!("DROP TABLE `{db}`.tx");
        if while_stopped {
            ddl_after_reads(f, &mut d, "tx", "DO 0");
            assert_eq!(d.stop(), Some(0), "{}", d.log_text());
            rt.block_on(async { root(f).await.query_drop(&drop).await.unwrap() });
        } else {
            ddl_after_reads(f, &mut d, "tx", &drop);
        }
        if while_stopped {
            d.restart();
        }
        let t0 = Instant::now();
        while d.log_count("snapshot: table done") < 1 || d.log_count("no longer exists") < 1 {
            assert!(d.running(), "{f:?}: daemon exited: {}", d.log_text());
            assert!(t0.elapsed() < Duration::from_secs(60), "{}", d.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        let ev = settle(f, &db, &mut d, 1);
        assert_eq!(reads(&ev, "t1"), 1_000, "{f:?}: t1 read");
        // stored: t1 done, tx cancelled; a restart reads nothing more and keeps running
        let pipeline = db.clone();
        wait_until(
            "t1 done and tx cancelled, stored",
            Duration::from_secs(30),
            || {
                let (_, v) = stored_progress(f, &pipeline);
                v["tables"].as_array().unwrap().iter().all(|t| {
                    (t["t"] == "t1" && t["done"] == json!(true))
                        || (t["t"] == "tx" && t["cancelled"] == json!(true))
                })
            },
        );
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
        d.restart();
        std::thread::sleep(Duration::from_secs(2));
        assert!(d.running(), "{f:?}: the restart failed: {}", d.log_text());
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// Generated columns (VIRTUAL and STORED): a read event has the same columns and values as
/// the stream's insert of an equal row.
#[test]
fn generated_columns_read_as_the_stream_has_them() {
    for f in BOTH {
        let rt = rt();
        let (db, dir, cfg) = prepare(
            f,
            "snapgen",
            10,
            "mode = \"initial\"\nchunk_rows = 100\ntables = [\"*.tg\"]",
        );
        rt.block_on(async {
            let mut c = root(f).await;
            c.query_drop(format!(
                "CREATE TABLE `{db}`.tg (id INT PRIMARY KEY, v INT NOT NULL, \
                 g INT AS (v * 2) VIRTUAL, s INT AS (v + 1) STORED)"
            ))
            .await
            .unwrap();
            c.query_drop(format!(
                "INSERT INTO `{db}`.tg (id, v) VALUES (1, 10), (2, 20)"
            ))
            .await
            .unwrap();
        });
        let mut d = Daemon::start(&dir, &cfg);
        wait_table_done(&mut d);
        rt.block_on(async {
            let mut c = root(f).await;
            c.query_drop(format!("INSERT INTO `{db}`.tg (id, v) VALUES (3, 10)"))
                .await
                .unwrap();
        });
        let ev = settle(f, &db, &mut d, 1);
        let read = ev
            .iter()
            .find(|e| e["op"] == "r" && e["after"]["id"] == 1)
            .expect("row 1 read");
        let insert = ev
            .iter()
            .find(|e| e["op"] == "c" && e["after"]["id"] == 3)
            .expect("row 3 streamed");
        let mut a = read["after"].clone();
        let mut b = insert["after"].clone();
        a["id"] = json!(0);
        b["id"] = json!(0);
        assert_eq!(
            a, b,
            "{f:?}: read {} vs stream {}",
            read["after"], insert["after"]
        );
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// A user with SELECT only on single tables is warned at start (information_schema hides every
/// other table, so an initial snapshot leaves out those it may not read): the warning names
/// the fix; the tables it may read are read.
#[test]
fn select_on_single_tables_only_is_warned() {
    for f in BOTH {
        let rt = rt();
        let (db, dir, cfg) = prepare(
            f,
            "snapgrant",
            10,
            "mode = \"initial\"\ntables = [\"*.t1\", \"*.t2\"]",
        );
        let user = format!("snapnp_{}", f.tag());
        rt.block_on(async {
            let mut c = root(f).await;
            for q in [
                format!("DROP USER IF EXISTS '{user}'@'%'"),
                format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"),
                format!("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'"),
                format!(
                    "GRANT CREATE, SELECT, INSERT, UPDATE, DELETE ON binlogd.* TO '{user}'@'%'"
                ),
                format!("GRANT SELECT ON `{db}`.t1 TO '{user}'@'%'"),
            ] {
                c.query_drop(q).await.unwrap();
            }
        });
        let cfg = cfg.replace(
            &format!("url = \"{}\"", f.cdc_url()),
            &format!("url = \"mysql://{user}:pw@127.0.0.1:{}\"", f.port()),
        );
        assert!(cfg.contains(&user), "the config names the user");
        reset_pipeline(&dir, &cfg);
        let mut d = Daemon::builder(&dir).config(&cfg).spawn();
        wait_until("t1 read", Duration::from_secs(30), || {
            reads(&d.events(), "t1") == 10 || !d.running()
        });
        let log = d.log_all();
        assert!(d.running(), "{f:?}: {log}");
        assert!(
            log.contains("SELECT only on single tables") && log.contains("GRANT SELECT ON *.*"),
            "{f:?}: no warning naming the grant: {log}"
        );
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// A table with an INVISIBLE column (left out of `SELECT *`, but in the binlog's row images):
/// its snapshot reads every column, as the stream renders them, and finishes.
#[test]
fn invisible_column_is_read_like_the_stream_has_it() {
    for f in BOTH {
        let rt = rt();
        let (db, dir, cfg) = prepare(
            f,
            "snapinv",
            10,
            "mode = \"initial_only\"\nchunk_rows = 100\ntables = [\"*.ti\"]",
        );
        rt.block_on(async {
            let mut c = root(f).await;
            c.query_drop(format!(
                "CREATE TABLE `{db}`.ti (id INT PRIMARY KEY, v INT, h INT INVISIBLE DEFAULT 5)"
            ))
            .await
            .unwrap();
            let values: Vec<String> = (1..=300).map(|i| format!("({i},{i})")).collect();
            c.query_drop(format!(
                "INSERT INTO `{db}`.ti (id, v) VALUES {}",
                values.join(",")
            ))
            .await
            .unwrap();
        });
        let ev = run_initial_only(&dir, &cfg);
        let reads: Vec<&Value> = ev
            .iter()
            .filter(|e| e["op"] == "r" && e["source"]["table"] == "ti")
            .collect();
        assert_eq!(reads.len(), 300, "{f:?}: every row read once");
        for e in reads {
            assert_eq!(e["after"]["h"], json!(5), "{f:?}: {e}");
        }
    }
}

/// An ALTER that reorders an ENUM's labels while its snapshot runs (the rows keep their
/// labels, their indexes change; the result set's columns look the same): the chunk is read
/// again with the new labels, every read event carries the row's label.
#[test]
fn enum_labels_reordered_during_snapshot_keep_every_label() {
    for f in BOTH {
        let rows = 4_000u64;
        let (db, dir, cfg) = prepare(
            f,
            "snapenum",
            10,
            "mode = \"initial\"\nchunk_rows = 200\nrows_per_second = 1000\ntables = [\"*.te\"]",
        );
        let labels = ["a", "b", "c"];
        create_table(
            f,
            &db,
            "te (id INT PRIMARY KEY, e ENUM('a','b','c') NOT NULL)",
            rows,
            |i| format!("({i},'{}')", labels[(i % 3) as usize]),
        );
        let mut d = Daemon::start(&dir, &cfg);
        ddl_after_reads(
            f,
            &mut d,
            "te",
            &format!("ALTER TABLE `{db}`.te MODIFY e ENUM('c','b','a') NOT NULL"),
        );
        wait_table_done(&mut d);
        let ev = settle(f, &db, &mut d, 1);
        let mut seen = std::collections::HashSet::new();
        for e in ev
            .iter()
            .filter(|e| e["op"] == "r" && e["source"]["table"] == "te")
        {
            let id = e["after"]["id"].as_u64().unwrap();
            assert_eq!(
                e["after"]["e"],
                json!(labels[(id % 3) as usize]),
                "{f:?}: te row {id} read with another label"
            );
            seen.insert(id);
        }
        assert_eq!(seen.len() as u64, rows, "{f:?}: every row read");
        assert!(
            d.log_all().contains("schema changed"),
            "{f:?}: the ALTER was not noticed (it came after the last read?): {}",
            d.log_text()
        );
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// An ALTER of a table while its snapshot runs: the chunk is read again with the new schema
/// (said in the log), and the output converges with the new column.
#[test]
fn alter_during_snapshot_rereads_with_the_new_schema() {
    for f in BOTH {
        let rt = rt();
        let (db, dir, cfg) = prepare(
            f,
            "snapalter",
            4_000,
            "mode = \"initial\"\nchunk_rows = 200\nrows_per_second = 4000\ntables = [\"*.t1\"]",
        );
        let mut d = Daemon::start(&dir, &cfg);
        while reads(&d.events(), "t1") < 800 {
            assert!(d.running(), "{}", d.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        rt.block_on(async {
            let mut c = root(f).await;
            c.query_drop(format!(
                "ALTER TABLE `{db}`.t1 ADD COLUMN extra INT NOT NULL DEFAULT 7"
            ))
            .await
            .unwrap();
            c.query_drop(format!("UPDATE `{db}`.t1 SET extra = id WHERE id % 10 = 0"))
                .await
                .unwrap();
        });
        wait_table_done(&mut d);
        let ev = settle(f, &db, &mut d, 1);
        assert!(
            d.log_all().contains("schema changed"),
            "{f:?}: the log does not say the chunk was read again: {}",
            d.log_text()
        );
        let model = apply(&ev);
        let want = rt.block_on(async {
            let mut c = root(f).await;
            table_rows(&mut c, &db, "t1").await
        });
        assert_eq!(model.get("t1").map(|m| m.len()), Some(want.len()));
        // An ADD COLUMN writes no row events: rows read before it carry no `extra` (as in any
        // binlog consumer); every row read after it, or changed after it, carries it.
        let mut with_extra = 0;
        for (k, v) in &want {
            let got = model["t1"]
                .get(k)
                .unwrap_or_else(|| panic!("{f:?} t1 {k} lost"));
            for (col, x) in got.as_object().unwrap() {
                assert_eq!(&v[col], x, "{f:?} t1 {k} column {col}");
            }
            let id = v["id"].as_i64().unwrap();
            if id % 10 == 0 {
                assert_eq!(
                    got["extra"],
                    json!(id),
                    "{f:?} t1 {k}: the update after the ALTER"
                );
            } else if got.get("extra").is_some() {
                with_extra += 1;
            }
        }
        assert!(
            with_extra > 1000,
            "{f:?}: only {with_extra} rows read with the new column"
        );
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// Reads change nothing: the Redis sink deletes no key for them (the file sink beside it
/// writes them).
#[test]
fn redis_ignores_read_events() {
    let f = Flavor::MariaDb;
    let rt = rt();
    let (db, dir, mut cfg) = prepare(f, "snapredis", 100, "mode = \"initial\"");
    let db = db.as_str();
    let mut r = redis_conn(&redis_url());
    let _: () = redis::cmd("SET")
        .arg("snaptest:t1:5")
        .arg("x")
        .query(&mut r)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("snaptest:t1:6")
        .arg("x")
        .query(&mut r)
        .unwrap();
    cfg.push_str(&format!(
        "\n[[sinks.redis]]\nname = \"cache\"\nurl = \"{}\"\n[[sinks.redis.rules]]\ntable = \"{db}.t1\"\nkeys = [\"snaptest:t1:{{id}}\"]\n",
        redis_url()
    ));
    let mut d = Daemon::start(&dir, &cfg);
    d.wait_log("snapshot: table done", Duration::from_secs(30));
    let _ = settle(f, db, &mut d, 1);
    assert_eq!(reads(&d.events(), "t1"), 100);
    assert!(
        redis_exists(&mut r, "snaptest:t1:5"),
        "a read event deleted a cache key"
    );
    // a real change still deletes
    rt.block_on(async {
        let mut c = root(f).await;
        c.query_drop(format!("UPDATE `{db}`.t1 SET v = 0 WHERE id = 6"))
            .await
            .unwrap();
    });
    wait_until("key deleted by the update", Duration::from_secs(10), || {
        !redis_exists(&mut r, "snaptest:t1:6")
    });
    assert_eq!(d.stop(), Some(0), "{}", d.log_text());
}

/// Writes `cfg` to the workdir and resets its pipeline (a fresh start; for a daemon then
/// started without a reset).
fn reset_pipeline(dir: &std::path::Path, cfg: &str) {
    let config = dir.join("binlogd.toml");
    std::fs::write(&config, cfg).unwrap();
    let (code, out) = run_binlogd(&["position", "reset", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "position reset: {out}");
}

/// Holds back a pipeline's first checkpoint store: an uncommitted insert of its snapshot
/// progress row (a lock on that key alone, which the daemon's INSERT … ON DUPLICATE KEY UPDATE
/// waits for; its plain reads do not). ROLLBACK on the returned connection releases it.
async fn hold_progress_row(f: Flavor, pipeline: &str) -> Conn {
    let mut c = root(f).await;
    c.query_drop("CREATE DATABASE IF NOT EXISTS binlogd")
        .await
        .unwrap();
    c.query_drop(
        include_str!("../migrations/0003_snapshot.sql")
            .split(';')
            .find(|s| s.contains("snapshot_progress"))
            .unwrap()
            .replace("{schema}", "binlogd"),
    )
    .await
    .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.exec_drop(
        "INSERT INTO binlogd.snapshot_progress (pipeline, progress) VALUES (?, '{}')",
        (pipeline,),
    )
    .await
    .unwrap();
    c
}

/// A stop signal while a first start waits for its start position to be stored ends the
/// daemon cleanly (exit 0, once the store in flight had its `store_timeout`), nothing read.
#[test]
fn stop_during_the_first_start_wait_is_clean() {
    let f = Flavor::MariaDb;
    let rt = rt();
    let (db, dir, cfg) = prepare(f, "snapstop", 300, "mode = \"initial\"\nchunk_rows = 100");
    reset_pipeline(&dir, &cfg);
    let mut blocker = rt.block_on(hold_progress_row(f, &db));
    let mut d = Daemon::builder(&dir).config(&cfg).spawn();
    wait_until("the start position logged", Duration::from_secs(20), || {
        d.log_text().contains("\"start position\"")
    });
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let code = d.stop();
    let took = t0.elapsed();
    rt.block_on(async {
        blocker.query_drop("ROLLBACK").await.unwrap();
    });
    assert_eq!(code, Some(0), "{}", d.log_text());
    // (the store in flight is given `checkpoint.store_timeout`, 10 s, to finish)
    assert!(
        took < Duration::from_secs(25),
        "stopped after {took:?}: {}",
        d.log_text()
    );
    let out = std::fs::read(&d.out).unwrap_or_default();
    assert!(
        !out.windows(8).any(|w| w == b"\"op\":\"r\""),
        "nothing read"
    );
}

/// A first start with an initial snapshot reads no chunk before its start position and table
/// list are stored: a crash in between would restart with nothing stored (a new snapshot, and
/// with Kafka exactly_once no position to read back from, so the first chunk's reads would be
/// published again). The store is held back by an uncommitted insert of the pipeline's
/// progress row.
#[test]
fn first_start_reads_no_chunk_before_its_start_is_stored() {
    for f in BOTH {
        let rt = rt();
        let rows = 600;
        let (db, dir, cfg) = prepare(f, "snapfirst", rows, "mode = \"initial\"\nchunk_rows = 100");
        let pipeline = db.clone();
        // the reset deletes the progress row, so it goes before the lock
        reset_pipeline(&dir, &cfg);
        let mut blocker = rt.block_on(hold_progress_row(f, &pipeline));
        let mut load = write_load(f, &db, rows);
        let mut d = Daemon::builder(&dir).config(&cfg).spawn();
        // the daemon reached the store of its start (logged just before), then had time to
        // read a chunk had it not waited
        wait_until("the start position logged", Duration::from_secs(20), || {
            d.log_text().contains("\"start position\"")
        });
        std::thread::sleep(Duration::from_secs(3));
        let out = std::fs::read(&d.out).unwrap_or_default();
        assert!(d.running(), "daemon exited: {}", d.log_text());
        assert!(
            !out.windows(8).any(|w| w == b"\"op\":\"r\""),
            "{}: a chunk was read before the snapshot's start was stored",
            f.tag()
        );
        assert_eq!(stored_pending(f, &pipeline), None, "nothing stored yet");
        rt.block_on(async {
            blocker.query_drop("ROLLBACK").await.unwrap();
        });
        wait_snapshot_stored(f, &pipeline, &mut d, 60);
        load.finish();
        let ev = settle(f, &db, &mut d, 1);
        assert_converged(f, &db, &ev).await_in(&rt);
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// kill -9 right after a chunk reached the sinks (before its progress is stored, the moment
/// a crash reads a chunk again), ×10, with the file sink and Kafka exactly_once: the chunk is
/// read again (file sink: at-least-once), Kafka holds every read row of a snapshot run once.
#[test]
fn kill9_after_a_chunk_kafka_holds_each_read_once() {
    for f in BOTH {
        kill9_after_a_chunk_kafka(f, false);
    }
}

/// The same with `key = "none"` (every message without a key, MariaDB): each read names its
/// row in a `binlogd.snapshot_key` header, which the restart's read-back finds.
#[test]
fn kill9_after_a_chunk_kafka_null_keys_hold_each_read_once() {
    kill9_after_a_chunk_kafka(Flavor::MariaDb, true);
}

/// kill -9 right after a chunk reached the sinks, ×10, file sink + Kafka exactly_once; with
/// `null_keys` the Kafka messages have no key.
fn kill9_after_a_chunk_kafka(f: Flavor, null_keys: bool) {
    {
        let rt = rt();
        let rows = 3_000;
        let chunk = 200;
        let topic = format!("kx{}.{{db}}.{{table}}", nonce());
        let name = if null_keys { "snapkn" } else { "snapkx" };
        let (db, dir, mut cfg) = prepare(
            f,
            name,
            rows,
            &format!("mode = \"initial\"\nchunk_rows = {chunk}\nrows_per_second = 3000"),
        );
        cfg.push_str(&kafka_sink(
            &kafka_brokers(),
            &topic,
            if null_keys {
                "exactly_once = true\npartitions = 3\nkey = \"none\""
            } else {
                "exactly_once = true\npartitions = 3"
            },
        ));
        if !null_keys {
            // t3 has no primary key: its messages are keyed by a column that is not unique,
            // so its reads are told apart by the key they were read by (a header)
            cfg.push_str("\n[sinks.kafka.key_columns]\n\"*.t3\" = [\"v\"]\n");
        }
        let mut load = write_load(f, &db, rows);
        let mut d = Daemon::start(&dir, &cfg);
        let pipeline = format!("{name}_{}", f.tag());
        let mut crashes = 0;
        for i in 0..10 {
            // the moment a chunk has been written: kill before its progress is stored
            let mut at = std::fs::metadata(&d.out).map(|m| m.len()).unwrap_or(0);
            let t0 = Instant::now();
            loop {
                assert!(t0.elapsed() < Duration::from_secs(30), "{}", d.log_text());
                let data = std::fs::read(&d.out).unwrap_or_default();
                let new = &data[(at as usize).min(data.len())..];
                if new.windows(8).any(|w| w == b"\"op\":\"r\"") {
                    break;
                }
                at = data.len() as u64;
                std::thread::sleep(Duration::from_micros(300));
            }
            if stored_pending(f, &pipeline) == Some(0) {
                break;
            }
            if i == 1 {
                // once for certain (a slow machine's kills may all land before Kafka has
                // the chunk): the progress row held, so no store completes
                let mut hold = rt.block_on(async {
                    let mut c = root(f).await;
                    c.query_drop("BEGIN").await.unwrap();
                    let _: Option<String> = c
                        .exec_first(
                            "SELECT progress FROM binlogd.snapshot_progress WHERE pipeline = ? FOR UPDATE",
                            (&pipeline,),
                        )
                        .await
                        .unwrap();
                    c
                });
                // the chunk just written is not stored before the hold (then its store
                // waits) or it was, and the next chunk is emitted and its store waits: in
                // 3 s Kafka has that chunk (milliseconds), well within `store_timeout`
                std::thread::sleep(Duration::from_secs(3));
                d.kill();
                rt.block_on(async { hold.query_drop("ROLLBACK").await.unwrap() });
            } else {
                d.kill();
            }
            crashes += 1;
            let found = d.log_count("are not published again");
            d.restart();
            if i == 1 {
                // the restart after the held store finds that chunk's reads in Kafka
                wait_until(
                    "the restart found the held chunk's reads in Kafka",
                    Duration::from_secs(30),
                    || d.log_count("are not published again") > found,
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        wait_snapshot_stored(f, &pipeline, &mut d, 120);
        load.finish();
        let ev = settle(f, &db, &mut d, 1);
        assert_converged(f, &db, &ev).await_in(&rt);
        let mut file_again = 0;
        let mut kafka_again = 0;
        for (t, _, _) in TABLES {
            file_again += reread(&ev, t);
            let msgs = consume_all(
                &kafka_brokers(),
                &topic.replace("{db}", &db).replace("{table}", t),
            );
            let mut seen = std::collections::HashSet::new();
            let mut dup = 0;
            let mut n = 0;
            for m in msgs
                .iter()
                .filter(|m| m.headers.contains_key("binlogd.snapshot"))
            {
                n += 1;
                // the row: the message key, or for a message without one its header
                // (the header whenever the message key is not the key the row was read by:
                // no key, or t3's non-unique `key_columns`)
                let header = m.headers.get("binlogd.snapshot_key");
                if null_keys || *t == "t3" {
                    assert!(
                        header.is_some(),
                        "{f:?} {t}: a read without binlogd.snapshot_key"
                    );
                } else {
                    assert!(m.key.is_some(), "{f:?} {t}: a read without a key");
                }
                let id = match header {
                    Some(h) => h.clone().into_bytes(),
                    None => m.key.clone().unwrap_or_default(),
                };
                if !seen.insert((m.headers["binlogd.snapshot"].clone(), Some(id))) {
                    dup += 1;
                }
            }
            let file_keys: std::collections::HashSet<String> = ev
                .iter()
                .filter(|e| e["op"] == "r" && e["source"]["table"] == *t)
                .map(|e| {
                    let k: Vec<Value> =
                        key_cols(t).iter().map(|c| e["after"][*c].clone()).collect();
                    serde_json::to_string(&k).unwrap()
                })
                .collect();
            eprintln!(
                "{f:?} {t}: {crashes} kill -9, file: {} distinct reads, {} read again; kafka: {n} reads, {dup} duplicates",
                file_keys.len(),
                reread(&ev, t)
            );
            kafka_again += dup;
            // Kafka may lack rows the file sink got from a chunk's first emission (killed
            // before Kafka acknowledged them, then dropped by the re-read's window because the
            // stream changed them: the stream carries them); it never has a row the file lacks
            for (_, k) in &seen {
                let k: Value = serde_json::from_slice(k.as_deref().unwrap()).unwrap();
                let k: Vec<Value> = key_cols(t).iter().map(|c| k[*c].clone()).collect();
                assert!(
                    file_keys.contains(&serde_json::to_string(&k).unwrap()),
                    "{f:?} {t}: read {k:?} in Kafka, not in the file"
                );
            }
        }
        assert_eq!(
            kafka_again, 0,
            "{f:?}: read events published twice to Kafka"
        );
        // the read-back did find reads to leave out (else the test proved nothing about it;
        // the held store makes that happen at least once)
        assert!(
            d.log_count("are not published again") > 0,
            "{f:?}: no restart found reads already in Kafka"
        );
        assert!(
            crashes >= 5,
            "only {crashes} kills landed during the snapshot"
        );
        eprintln!("{f:?}: {file_again} rows read again after {crashes} crashes (file sink, at-least-once)");
        assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    }
}

/// Chunks sized by bytes (no `chunk_rows`): a table's first chunk is 1,024 rows and the next
/// ones grow to about `chunk_bytes` (counted: more chunks than at the cap's size, far fewer
/// than at 1,024 rows), every row read once.
#[test]
fn chunks_grow_to_the_byte_cap() {
    for f in BOTH {
        let rows = 30_000u64;
        let (_db, dir, cfg) = prepare(
            f,
            "snapsize",
            rows,
            "mode = \"initial_only\"\nchunk_bytes = \"128KiB\"\ntables = [\"*.t1\"]",
        );
        let ev = run_initial_only(&dir, &cfg);
        assert_eq!(reads(&ev, "t1"), rows as usize, "{f:?}: every row read");
        assert_eq!(reread(&ev, "t1"), 0, "{f:?}: no row read twice");
        let (p, v) = stored_progress(f, &format!("snapsize_{}", f.tag()));
        let t = &v["tables"][0];
        let chunks = t["c"].as_u64().unwrap();
        assert_eq!(t["r"].as_u64(), Some(rows), "{p}");
        // t1 rows take ≥ 24 bytes (3 cells) + 8 (two INTs): at most ~4,100 fit in 128 KiB,
        // so ≥ 8 chunks; 1,024-row chunks throughout would be 30
        assert!(
            (8..=16).contains(&chunks),
            "{f:?}: {chunks} chunks for {rows} rows (1,024, 2,048, then ~3,500 each expected): {p}"
        );
        eprintln!("{f:?}: {rows} rows in {chunks} chunks");
    }
}

/// A table whose rows grow (3,000 small rows, then 60 of ~100 KB): chunks are sized from the
/// previous ones' bytes per row, so without a byte cap inside the read the chunk reaching the
/// large rows would hold all of them; with it (twice `chunk_bytes`) no chunk passes ~256 KiB.
#[test]
fn a_table_whose_rows_grow_stays_within_the_byte_cap() {
    for f in BOTH {
        let (db, dir, cfg) = prepare(
            f,
            "snapgrow",
            0,
            "mode = \"initial_only\"\nchunk_bytes = \"128KiB\"\ntables = [\"*.big\"]",
        );
        rt().block_on(async {
            let mut c = root(f).await;
            c.query_drop(format!(
                "CREATE TABLE `{db}`.big (id INT PRIMARY KEY, b LONGBLOB)"
            ))
            .await
            .unwrap();
            for start in (1..=3000).step_by(1000) {
                let v: Vec<String> = (start..start + 1000)
                    .map(|i| format!("({i},NULL)"))
                    .collect();
                c.query_drop(format!("INSERT INTO `{db}`.big VALUES {}", v.join(",")))
                    .await
                    .unwrap();
            }
            for i in 3001..=3060 {
                c.query_drop(format!(
                    "INSERT INTO `{db}`.big VALUES ({i}, REPEAT('x', 100000))"
                ))
                .await
                .unwrap();
            }
        });
        let ev = run_initial_only(&dir, &cfg);
        let read: Vec<&Value> = ev.iter().filter(|e| e["op"] == "r").collect();
        assert_eq!(read.len(), 3060, "{f:?}: every row read once");
        let mut ids: Vec<i64> = read
            .iter()
            .map(|e| e["after"]["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3060, "{f:?}: no row read twice");
        let (p, v) = stored_progress(f, &format!("snapgrow_{}", f.tag()));
        let chunks = v["tables"][0]["c"].as_u64().unwrap();
        // 6 MB of large rows in chunks of ≤ ~256 KiB: ≥ 20 chunks for them; without the cap
        // the second chunk (2,048 rows) held all 60
        assert!(chunks >= 20, "{f:?}: {chunks} chunks: {p}");
        eprintln!("{f:?}: 3,060 rows in {chunks} chunks");
    }
}
