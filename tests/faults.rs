//! Fault matrix (issue 7), each case under a steady write load against a private server, with
//! a final check that nothing was lost: the file sink's events, de-duplicated by
//! `(file, pos, row)` (repeats after a restart are allowed: at-least-once), must form an
//! unbroken history of every row — each insert of a new id, each update's and delete's before
//! image equal to the row as the previous event left it — and end in the table's final state.
//! A lost or reordered row change breaks the chain.

mod common;

use common::*;
use mysql_async::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A read-through cache filled by the writer: before each transaction the writer reads the
/// rows it is about to change and caches them (`SET prefix{id} v`, or `none` for a row that
/// does not exist), as an application would. The fill happens before the change commits, so
/// binlogd must delete every such key; a key that survives with a value the table no longer
/// has is a stale cache entry. Fills are best effort: while Redis is down they are skipped.
struct CacheFill {
    url: String,
    prefix: String,
    conn: Option<redis::Connection>,
}

impl CacheFill {
    fn fill(&mut self, rows: &[(i64, Option<i64>)]) {
        if self.conn.is_none() {
            let c = redis::Client::open(self.url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)));
            if let Ok(c) = c {
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = c.set_write_timeout(Some(Duration::from_secs(1)));
                self.conn = Some(c);
            }
        }
        let Some(c) = self.conn.as_mut() else { return };
        let mut p = redis::pipe();
        for (id, v) in rows {
            let v = v.map_or("none".to_string(), |v| v.to_string());
            p.set(format!("{}{id}", self.prefix), v).ignore();
        }
        if p.query::<()>(c).is_err() {
            self.conn = None;
        }
    }
}

/// Cached keys (`prefix{id}`) whose value differs from the table's row (`none` = no row):
/// returns (stale keys, keys left that are still right).
fn stale_keys(redis_url: &str, prefix: &str, table: &BTreeMap<i64, i64>) -> (Vec<String>, usize) {
    let mut r = redis_conn(redis_url);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut r)
        .unwrap();
    let mut stale = Vec::new();
    let mut fresh = 0;
    for k in keys {
        let v: Option<String> = redis::cmd("GET").arg(&k).query(&mut r).unwrap();
        let Some(v) = v else { continue };
        let id: i64 = k[prefix.len()..].parse().unwrap();
        let want = table.get(&id).map_or("none".to_string(), |v| v.to_string());
        if v == want {
            fresh += 1;
        } else {
            stale.push(format!("{k}={v} (table: {want})"));
        }
    }
    (stale, fresh)
}

/// Waits (up to 30 s after the sinks caught up) until no cached key is stale; panics naming
/// the stale keys. Returns the keys left that are right.
fn no_stale_keys(redis_url: &str, prefix: &str, table: &BTreeMap<i64, i64>, d: &Daemon) -> usize {
    let t0 = Instant::now();
    loop {
        let (stale, fresh) = stale_keys(redis_url, prefix, table);
        if stale.is_empty() {
            return fresh;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} stale cache entries after catch-up, e.g. {:?}; log:\n{}",
            stale.len(),
            &stale[..stale.len().min(10)],
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A writer on its own thread: transactions of 4 inserts, 3 updates and 1 delete on `db.t`,
/// about 50 per second; reconnects after any error (the server may be down).
fn start_load(url: String, db: String) -> Load {
    load(url, db, None)
}

/// [`start_load`] filling the cache with the rows each transaction is about to change.
fn start_load_with_cache(url: String, db: String, redis_url: String, prefix: String) -> Load {
    let cache = CacheFill {
        url: redis_url,
        prefix,
        conn: None,
    };
    load(url, db, Some(cache))
}

fn load(url: String, db: String, mut cache: Option<CacheFill>) -> Load {
    Load::spawn(move |s, n| async move {
        let mut next_id: i64 = 0;
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |m: i64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % m.max(1) as u64) as i64
        };
        while !s.load(Ordering::Relaxed) {
            let opts =
                mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url).unwrap())
                    .prefer_socket(false);
            let mut c =
                match tokio::time::timeout(Duration::from_secs(5), mysql_async::Conn::new(opts))
                    .await
                {
                    Ok(Ok(c)) => c,
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
            // ids already used survive a reconnect: continue after the largest
            if let Ok(Some(Some(m))) = c
                .query_first::<Option<i64>, _>(format!("SELECT MAX(id) FROM `{db}`.t"))
                .await
            {
                next_id = next_id.max(m + 1);
            }
            while !s.load(Ordering::Relaxed) {
                let upd: Vec<i64> = (0..3).map(|_| rand(next_id.max(1))).collect();
                let del = rand(next_id.max(1));
                if let Some(cache) = cache.as_mut() {
                    // read-through fill of every row this transaction touches
                    let ids: Vec<String> =
                        upd.iter().chain([&del]).map(|i| i.to_string()).collect();
                    let found: Result<Vec<(i64, i64)>, _> = c
                        .query(format!(
                            "SELECT id, v FROM `{db}`.t WHERE id IN ({})",
                            ids.join(",")
                        ))
                        .await;
                    let Ok(found) = found else { break };
                    let found: BTreeMap<i64, i64> = found.into_iter().collect();
                    let rows: Vec<(i64, Option<i64>)> = upd
                        .iter()
                        .chain([&del])
                        .map(|id| (*id, found.get(id).copied()))
                        .chain((next_id..next_id + 4).map(|id| (id, None)))
                        .collect();
                    cache.fill(&rows);
                }
                let mut q = format!("START TRANSACTION; INSERT INTO `{db}`.t (id, v, s) VALUES ");
                for k in 0..4 {
                    if k > 0 {
                        q.push(',');
                    }
                    q.push_str(&format!("({}, 0, 'row {}')", next_id + k, next_id + k));
                }
                q.push(';');
                for id in &upd {
                    q.push_str(&format!("UPDATE `{db}`.t SET v = v + 1 WHERE id = {id};"));
                }
                q.push_str(&format!(
                    "DELETE FROM `{db}`.t WHERE id = {del} AND id % 7 = 3; COMMIT"
                ));
                let r = tokio::time::timeout(Duration::from_secs(60), c.query_drop(q)).await;
                match r {
                    Ok(Ok(())) => {
                        next_id += 4;
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break, // reconnect; a failed commit may or may not have happened
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Waits until the daemon has caught up: the events' history ends in the table's final state.
/// Returns (distinct row changes, repeats).
fn settle(d: &mut Daemon, url: &str, db: &str, rt: &tokio::runtime::Runtime) -> (usize, usize) {
    let want = rt.block_on(table_state(url, db));
    let t0 = Instant::now();
    loop {
        let (state, distinct, repeats) = check_history(d.events());
        if state == want {
            return (distinct, repeats);
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("binlogd exited ({st}); log:\n{}", d.log_text());
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let diff: Vec<String> = want
                .keys()
                .chain(state.keys())
                .filter(|id| state.get(id) != want.get(id))
                .take(10)
                .map(|id| {
                    format!(
                        "id {id}: events {:?}, table {:?}",
                        state.get(id),
                        want.get(id)
                    )
                })
                .collect();
            panic!(
                "the events' final state differs from the table's ({} vs {} rows), e.g. {:?}; log:\n{}",
                state.len(),
                want.len(),
                diff,
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

struct Setup {
    rt: tokio::runtime::Runtime,
    srv: PrivateServer,
    db: String,
    dir: std::path::PathBuf,
    cfg: String,
}

fn setup(f: Flavor, name: &str, port: u16, extra_source: &str) -> Setup {
    let rt = rt();
    let dir = workdir(name);
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let srv = PrivateServer::start(f, &dir, port, &[]);
    let db = name.to_string();
    let start = rt.block_on(async {
        let mut c = root_at(&srv.root_url()).await;
        fresh_table(
            &mut c,
            f,
            &db,
            &["t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, s VARCHAR(40))"],
        )
        .await
    });
    let cfg = config_for(&srv.cdc_url(), f, name, &db, &start, &dir, extra_source);
    Setup {
        rt,
        srv,
        db,
        dir,
        cfg,
    }
}

fn wait_commits(load: &Load, n: u64, what: &str) {
    load.wait_commits(n, Duration::from_secs(120), what);
}

/// MySQL/MariaDB restarted cleanly and with `kill -9` under load: binlogd reconnects with
/// backoff and resumes from its last handed-on position; nothing lost, nothing repeated
/// (repeats are only allowed after a daemon restart, and the daemon keeps running here).
fn server_restart(f: Flavor, port: u16) {
    let s = setup(f, &format!("fault_restart_{}", f.tag()), port, "");
    let mut d = Daemon::start(&s.dir, &s.cfg);
    let mut load = start_load(s.srv.root_url(), s.db.clone());
    wait_commits(&load, 50, "before the first restart");
    s.srv.stop();
    std::thread::sleep(Duration::from_secs(2));
    s.srv.start_again(&[]);
    wait_commits(&load, 50, "after the clean restart");
    s.srv.kill9();
    std::thread::sleep(Duration::from_secs(2));
    s.srv.start_again(&[]);
    wait_commits(&load, 50, "after kill -9");
    let n = load.finish();
    let (distinct, repeats) = settle(&mut d, &s.srv.root_url(), &s.db, &s.rt);
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon kept running"
    );
    assert!(
        d.log_count("reconnecting") >= 2,
        "it reconnected: {}",
        d.log_text()
    );
    assert_eq!(repeats, 0, "no repeats without a daemon restart");
    eprintln!("server restart {f:?}: {n} transactions, {distinct} row changes, 0 lost, {repeats} repeated");
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(server_restart: server_restart_mariadb(3370), server_restart_mysql(3371));

/// The server stops answering without closing the connection (SIGSTOP for 30 s): the read
/// timeout notices, binlogd reconnects (retrying while the server hangs) and loses nothing.
#[test]
fn server_stall_sigstop() {
    let f = Flavor::MariaDb;
    let s = setup(f, "fault_stall", 3372, "");
    let mut d = Daemon::start(&s.dir, &s.cfg);
    let mut load = start_load(s.srv.root_url(), s.db.clone());
    wait_commits(&load, 50, "before the stall");
    s.srv.signal("STOP");
    std::thread::sleep(Duration::from_secs(30));
    s.srv.signal("CONT");
    wait_commits(&load, 50, "after the stall");
    let n = load.finish();
    let (distinct, repeats) = settle(&mut d, &s.srv.root_url(), &s.db, &s.rt);
    assert!(
        d.log_all().contains("reconnecting"),
        "the stall was detected and the stream re-established: {}",
        d.log_text()
    );
    assert_eq!(repeats, 0);
    eprintln!("server stall 30 s: {n} transactions, {distinct} row changes, 0 lost");
    assert_eq!(d.stop(), Some(0));
}

/// Binlogs rotated and purged behind the daemon while it keeps up: no effect.
#[test]
fn rotate_and_purge_while_keeping_up() {
    let f = Flavor::MariaDb;
    let s = setup(f, "fault_rotate", 3373, "");
    let mut d = Daemon::start(&s.dir, &s.cfg);
    let mut load = start_load(s.srv.root_url(), s.db.clone());
    let files_before = s.rt.block_on(async {
        let mut c = root_at(&s.srv.root_url()).await;
        for _ in 0..5 {
            wait_commits(&load, 20, "between rotations");
            c.query_drop("FLUSH BINARY LOGS").await.unwrap();
            std::thread::sleep(Duration::from_millis(300));
            // purge everything but the file being written (the server keeps files in use)
            let (cur, _) = binlog_end(&mut c, f).await;
            c.query_drop(format!("PURGE BINARY LOGS TO '{cur}'"))
                .await
                .unwrap();
        }
        let files: Vec<(String, u64)> = c.query("SHOW BINARY LOGS").await.unwrap();
        files
    });
    assert!(files_before.len() <= 2, "purged: {files_before:?}");
    wait_commits(&load, 20, "after purging");
    let n = load.finish();
    let (distinct, repeats) = settle(&mut d, &s.srv.root_url(), &s.db, &s.rt);
    assert_eq!(repeats, 0);
    let files: HashSet<String> = d.events().iter().map(|e| coord(e).0).collect();
    assert!(
        files.len() >= 5,
        "events came from the rotated files: {files:?}"
    );
    eprintln!("rotate+purge ×5: {n} transactions, {distinct} row changes, 0 lost");
    assert_eq!(d.stop(), Some(0));
}

/// The checkpoint server (here a separate one) stops answering: binlogd keeps streaming to the
/// sinks for `checkpoint.max_unstored`, then pauses reading; when the server answers again it
/// stores and resumes. The stored position never moves backwards.
#[test]
fn checkpoint_server_unreachable() {
    let f = Flavor::MariaDb;
    let name = "fault_cpdown";
    let s = setup(f, name, 3375, "");
    let cp = PrivateServer::start(f, &workdir("fault_cpdown_store"), 3374, &[]);
    let cfg = s.cfg.replace(
        "[checkpoint]\ninterval = \"200ms\"",
        &format!(
            "[checkpoint]\ninterval = \"200ms\"\nurl = \"{}\"\nmax_unstored = \"5s\"\nstore_timeout = \"2s\"",
            cp.cdc_url()
        ),
    );
    assert!(cfg.contains("max_unstored"));
    let pipeline = format!("{name}_{}", f.tag());
    let mut d = Daemon::start(&s.dir, &cfg);
    let mut load = start_load(s.srv.root_url(), s.db.clone());
    wait_commits(&load, 50, "before the checkpoint server hangs");
    std::thread::sleep(Duration::from_millis(500));
    let before = s.rt.block_on(stored_position_at(&cp.root_url(), &pipeline));
    assert!(before.is_some(), "a position was stored");
    cp.signal("STOP");
    let t_stop = Instant::now();
    // streaming goes on for a while …
    let n0 = d.events().len();
    std::thread::sleep(Duration::from_secs(3));
    let n1 = d.events().len();
    assert!(
        n1 > n0,
        "still streaming 3 s after the checkpoint server hung ({n0} → {n1})"
    );
    // … then pauses (max_unstored 5 s after the first failed store, which takes up to 2 s)
    d.wait_log("pausing reading from the binlog", Duration::from_secs(30));
    let paused_after = t_stop.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let p0 = d.events().len();
    std::thread::sleep(Duration::from_secs(4));
    let p1 = d.events().len();
    assert_eq!(p0, p1, "no row changes handed on while paused");
    assert!(
        load.commits() > 0 && d.child.try_wait().unwrap().is_none(),
        "the daemon waits"
    );
    cp.signal("CONT");
    d.wait_log("reading from the binlog resumes", Duration::from_secs(30));
    wait_commits(&load, 30, "after the checkpoint server is back");
    let n = load.finish();
    let (distinct, repeats) = settle(&mut d, &s.srv.root_url(), &s.db, &s.rt);
    assert_eq!(repeats, 0);
    assert_eq!(d.stop(), Some(0));
    let after = s.rt.block_on(stored_position_at(&cp.root_url(), &pipeline));
    let (b, a) = (before.unwrap(), after.unwrap());
    assert!(
        a >= b,
        "the stored position never moves backwards: {b:?} → {a:?}"
    );
    let (end_file, end_pos) = s.rt.block_on(async {
        let mut c = root_at(&s.srv.root_url()).await;
        binlog_end(&mut c, f).await
    });
    assert!(
        a <= (end_file.clone(), end_pos),
        "stored position {a:?} not past the server's end {end_file}:{end_pos}"
    );
    eprintln!(
        "checkpoint server hung: streaming continued, paused {:.1} s after the hang; {n} transactions, {distinct} row changes, 0 lost; stored {b:?} → {a:?}",
        paused_after.as_secs_f64()
    );
}

/// Disk full for the file sink (`/dev/full` answers every write with ENOSPC): binlogd stops
/// with an error naming the sink and the cause, and the stored position does not move past
/// what was never written.
#[test]
fn file_sink_disk_full() {
    let f = Flavor::MariaDb;
    let name = "fault_diskfull";
    let su = setup(f, name, 3377, "");
    let (rt, dir) = (&su.rt, su.dir.clone());
    let mut c = rt.block_on(root_at(&su.srv.root_url()));
    let cfg = su.cfg.replace(
        &format!("path = \"{}\"", dir.join("out.jsonl").display()),
        "path = \"/dev/full\"",
    );
    assert!(cfg.contains("/dev/full"));
    let mut d = Daemon::start(&dir, &cfg);
    rt.block_on(async {
        for i in 0..20 {
            c.query_drop(format!("INSERT INTO `{name}`.t VALUES ({i}, 0, 'x')"))
                .await
                .unwrap();
        }
    });
    let code = d.wait_exit(Duration::from_secs(90), "binlogd stops on a full disk");
    assert_eq!(code, Some(1), "exit code 1");
    let log = d.log_all();
    assert!(
        log.contains("No space left on device") && log.contains("out"),
        "the error names the sink and the cause: {}",
        d.log_text()
    );
    let (code, show) = run_binlogd(&["position", "show", "-c", d.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{show}");
    assert!(
        show.contains("stored position: none"),
        "the position did not advance past the unwritten rows: {show}"
    );
}

/// DDL while writing: columns are added and dropped under a concurrent insert load; every event
/// carries the columns the table had when the row was written (names from the table map).
fn ddl_storm(f: Flavor) {
    let s = Scenario::new(
        f,
        &format!("fault_ddl_{}", f.tag()),
        &["t (id BIGINT AUTO_INCREMENT PRIMARY KEY, s VARCHAR(200))"],
    );
    let mut d = s.daemon("");
    let Scenario {
        rt, name, mut c, ..
    } = s;
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, inserted, name) = (stop.clone(), inserted.clone(), name.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = root(f).await;
                while !stop.load(Ordering::Relaxed) {
                    c.query_drop(format!("INSERT INTO `{name}`.t (s) VALUES ('load')"))
                        .await
                        .unwrap();
                    inserted.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
    };
    let mut markers = 0u64;
    rt.block_on(async {
        for k in 1..=24u32 {
            let ddl = if k % 4 == 0 {
                format!("ALTER TABLE `{name}`.t DROP COLUMN c{}", k - 2)
            } else {
                format!("ALTER TABLE `{name}`.t ADD COLUMN c{k} INT NOT NULL DEFAULT {k}")
            };
            c.query_drop(ddl).await.unwrap();
            let cols: Vec<String> = c
                .exec(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 't' ORDER BY ORDINAL_POSITION",
                    (&name,),
                )
                .await
                .unwrap();
            c.query_drop(format!(
                "INSERT INTO `{name}`.t (s) VALUES ('cols:{}')",
                cols.join(",")
            ))
            .await
            .unwrap();
            markers += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let total = inserted.load(Ordering::Relaxed) + markers;
    let ev = d.wait_events(total as usize, Duration::from_secs(60));
    assert_eq!(ev.len() as u64, total, "one event per insert");
    let mut checked_markers = 0;
    for e in &ev {
        let after = e["after"].as_object().expect("after image");
        for (k, v) in after {
            if let Some(n) = k.strip_prefix('c').and_then(|n| n.parse::<i64>().ok()) {
                assert_eq!(
                    v.as_i64(),
                    Some(n),
                    "column {k} carries its own default: {e}"
                );
            }
        }
        if let Some(cols) = after["s"].as_str().and_then(|s| s.strip_prefix("cols:")) {
            let mut want: Vec<&str> = cols.split(',').collect();
            let mut got: Vec<&str> = after.keys().map(|k| k.as_str()).collect();
            want.sort();
            got.sort();
            assert_eq!(
                got, want,
                "the event has the table's columns at that time: {e}"
            );
            checked_markers += 1;
        }
    }
    assert_eq!(checked_markers, markers);
    eprintln!(
        "DDL storm {f:?}: 24 ALTERs under load, {} events, all with the right columns",
        ev.len()
    );
    assert_eq!(d.stop(), Some(0));
}

both_flavors!(ddl_storm: ddl_storm_mariadb(), ddl_storm_mysql());

/// A 1,000,000-row transaction and a 64 MiB row are streamed with bounded memory (peak RSS
/// printed and checked against the bound the README states).
#[test]
fn large_transaction_and_row() {
    let f = Flavor::MariaDb;
    let name = "fault_large";
    let s = setup(f, name, 3376, "");
    // the server must accept (and send) a 64 MiB row
    s.srv.stop();
    s.srv.start_again(&["--max-allowed-packet=256M"]);
    let rt = &s.rt;
    let cfg = s.cfg.clone();
    let mut d = Daemon::start(&s.dir, &cfg);
    rt.block_on(async {
        let mut c = root_at(&s.srv.root_url()).await;
        exec_all(
            &mut c,
            &[
                format!(
            "CREATE TABLE `{name}`.big (id BIGINT PRIMARY KEY, b LONGBLOB)"
        ),
                format!(
            "INSERT INTO `{name}`.t (id, v, s) SELECT seq, seq, CONCAT('row ', seq) FROM seq.seq_1_to_1000000"
        ),
            ],
        )
        .await;
    });
    let wait_lines = |d: &mut Daemon, want: usize| {
        let t0 = Instant::now();
        loop {
            // count lines without parsing 150 MB of JSON each time
            let n = std::fs::read(&d.out)
                .map(|b| b.iter().filter(|&&c| c == b'\n').count())
                .unwrap_or(0);
            if n >= want {
                return t0.elapsed().as_secs_f64();
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("binlogd exited ({st}) at {n} events: {}", d.log_text());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(240),
                "{n} of {want} events: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let t_txn = wait_lines(&mut d, 1_000_000);
    let peak_txn = vm_hwm_mib(d.child.id());
    let t0 = Instant::now();
    rt.block_on(async {
        let mut c = root_at(&s.srv.root_url()).await;
        c.query_drop(format!(
            "INSERT INTO `{name}`.big VALUES (1, REPEAT('ab', 32 * 1024 * 1024))"
        ))
        .await
        .unwrap();
    });
    let want = 1_000_001;
    wait_lines(&mut d, want);
    let secs = t0.elapsed().as_secs_f64();
    let peak = vm_hwm_mib(d.child.id());
    let ev = d.events();
    assert_eq!(ev.len(), want);
    let last = &ev[want - 1];
    assert_eq!(last["source"]["table"], "big");
    let b64 = last["after"]["b"].as_str().expect("blob as base64");
    assert_eq!(b64.len(), (64 << 20) / 3 * 4 + 4, "the whole 64 MiB value");
    assert_eq!(ev[want - 2]["after"]["id"], 1_000_000);
    assert_eq!(d.stop(), Some(0));
    eprintln!(
        "large transaction: 1,000,000 rows in one transaction streamed in {t_txn:.1} s after COMMIT, binlogd peak RSS {peak_txn:.0} MiB; \
         then one 64 MiB row in {secs:.1} s, peak RSS {peak:.0} MiB"
    );
    assert!(
        peak_txn < 160.0,
        "1M-row transaction: peak RSS {peak_txn:.0} MiB within the stated bound"
    );
    // the bound the README states: pipeline.max_in_flight (64 MiB) + the largest event
    // (decoded and rendered: ~3× its size) + ~60 MiB baseline
    assert!(
        peak < 512.0,
        "peak RSS {peak:.0} MiB within the stated bound"
    );
}

fn redis_sink(url: &str, db: &str, prefix: &str) -> String {
    format!(
        "\n[[sinks.redis]]\nname = \"cache\"\nurl = \"{url}\"\ntimeout = \"500ms\"\nretry_backoff_max = \"500ms\"\n[[sinks.redis.rules]]\ntable = \"{db}.t\"\nkeys = [\"{prefix}{{id}}\"]\n"
    )
}

/// binlogd `kill -9`ed 20 times at random moments under load, with three sinks at once: the
/// file sink (at-least-once: its history must be unbroken, repeats allowed), Kafka in
/// exactly-once mode (every row change exactly once) and Redis invalidating the writer's
/// read-through cache (no stale entry after catch-up).
fn crash_20_kills(f: Flavor, port: u16) {
    let name = format!("fault_crash_{}", f.tag());
    let s = setup(f, &name, port, "");
    let n = nonce();
    let prefix = format!("{name}:{n}:");
    let topic = format!("{name}.{n}");
    let brokers = kafka_brokers();
    let cfg = s.cfg.clone()
        + &redis_sink(&redis_url(), &s.db, &prefix)
        + &format!(
            "\n[[sinks.kafka]]\nname = \"events\"\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ncreate_topics = true\nexactly_once = true\n"
        );
    let mut d = Daemon::start(&s.dir, &cfg);
    let mut load =
        start_load_with_cache(s.srv.root_url(), s.db.clone(), redis_url(), prefix.clone());
    wait_commits(&load, 20, "before the first kill");
    let mut seed = n | 1;
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(200 + seed % 1300));
        d.kill(); // SIGKILL
        d.restart();
    }
    wait_commits(&load, 50, "after the last restart");
    let txns = load.finish();
    let (distinct, repeats) = settle(&mut d, &s.srv.root_url(), &s.db, &s.rt);
    // Kafka: the same row changes as the file sink, each exactly once
    let want: HashSet<(String, u64, u64, bool)> = d
        .events()
        .iter()
        .map(|e| {
            let (file, pos, row) = coord(e);
            (file, pos, row, false)
        })
        .collect();
    assert_eq!(want.len(), distinct);
    let t0 = Instant::now();
    let msgs = loop {
        let msgs = consume_all(&brokers, &topic);
        let got: HashSet<_> = msgs.iter().map(|m| m.coord()).collect();
        let missing = want.difference(&got).count();
        if missing == 0 {
            break msgs;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{missing} of {distinct} row changes missing from Kafka; log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut count: std::collections::HashMap<_, usize> = Default::default();
    for m in &msgs {
        *count.entry(m.coord()).or_default() += 1;
    }
    let dups: usize = count.values().map(|c| c - 1).sum();
    assert_eq!(dups, 0, "Kafka exactly-once: no duplicates");
    // Redis: no cached entry outlives the change that made it stale
    let table = s.rt.block_on(table_state(&s.srv.root_url(), &s.db));
    let fresh = no_stale_keys(&redis_url(), &prefix, &table, &d);
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon kept running"
    );
    assert_eq!(d.stop(), Some(0));
    eprintln!(
        "crash {f:?}: 20 × kill -9; {txns} transactions, {distinct} row changes, 0 lost; file sink \
         repeated {repeats}; Kafka {} messages, 0 duplicates; Redis 0 stale keys ({fresh} fresh left)",
        msgs.len()
    );
}

both_flavors!(crash_20_kills: crash_20_kills_mariadb(3390), crash_20_kills_mysql(3391));

/// Redis down for 30 s under load: the sink retries, nothing is acknowledged meanwhile (the
/// stored position does not move), memory stays bounded, and after Redis is back no cached
/// entry is stale — including those filled before the outage whose rows changed during it.
#[test]
fn redis_down_30s() {
    let f = Flavor::MariaDb;
    let name = "fault_redis_down";
    let s = setup(f, name, 3392, "");
    let mut redis = PrivateRedis::start(&s.dir, 6430);
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    let prefix = format!("{name}:");
    let cfg = s.cfg.clone() + &redis_sink(&redis.url(), &s.db, &prefix);
    let pipeline = format!("{name}_{}", f.tag());
    let mut d = Daemon::start(&s.dir, &cfg);
    let mut load =
        start_load_with_cache(s.srv.root_url(), s.db.clone(), redis.url(), prefix.clone());
    wait_commits(&load, 100, "before Redis goes down");
    redis.kill();
    let c0 = load.commits();
    std::thread::sleep(Duration::from_secs(1)); // acks from before the kill get stored
    let p1 =
        s.rt.block_on(stored_position_at(&s.srv.root_url(), &pipeline));
    assert!(p1.is_some(), "a position was stored before the outage");
    let pid = d.child.id();
    let mut peak_rss: f64 = 0.0;
    for _ in 0..29 {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss = peak_rss.max(vm_rss_mib(pid));
        assert!(d.child.try_wait().unwrap().is_none(), "binlogd stays up");
        // the position may move past binlogd's own checkpoint writes (no row change for the
        // sinks: acknowledged without contacting Redis), never past a change of the table
        let now =
            s.rt.block_on(stored_position_at(&s.srv.root_url(), &pipeline));
        if now != p1 {
            let (from, to) = (p1.clone().unwrap(), now.clone().unwrap());
            let tables = s.rt.block_on(tables_between(&s.srv.root_url(), &from, &to));
            assert!(
                tables.iter().all(|t| t.contains("binlogd.checkpoint")),
                "the stored position moved while Redis was down from {from:?} to {to:?}, past changes of {tables:?}"
            );
        }
    }
    let during = load.commits() - c0;
    assert!(
        during > 200,
        "the writer kept writing ({during} transactions)"
    );
    redis.restart();
    let t_back = Instant::now();
    wait_commits(&load, 50, "after Redis is back");
    let txns = load.finish();
    let (distinct, repeats) = settle(&mut d, &s.srv.root_url(), &s.db, &s.rt);
    let table = s.rt.block_on(table_state(&s.srv.root_url(), &s.db));
    let fresh = no_stale_keys(&redis.url(), &prefix, &table, &d);
    let caught_up = t_back.elapsed();
    let t0 = Instant::now();
    while s
        .rt
        .block_on(stored_position_at(&s.srv.root_url(), &pipeline))
        == p1
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the position moves again after Redis is back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.log_count("retrying") > 0, "retries are logged");
    assert_eq!(repeats, 0, "no repeats without a daemon restart");
    assert_eq!(d.stop(), Some(0));
    eprintln!(
        "Redis down 30 s: {txns} transactions ({during} during the outage), {distinct} row changes, \
         0 lost; position held during the outage; peak RSS during it {peak_rss:.0} MiB; caught up \
         {:.1} s after Redis returned; 0 stale keys ({fresh} fresh left)",
        caught_up.as_secs_f64()
    );
}

/// The tables of the rows events between two positions of one binlog file (Table_map infos).
async fn tables_between(url: &str, from: &(String, u64), to: &(String, u64)) -> Vec<String> {
    use mysql_async::prelude::Queryable;
    assert_eq!(from.0, to.0, "positions in one file");
    let mut c = root_at(url).await;
    let rows: Vec<mysql_async::Row> = c
        .query(format!(
            "SHOW BINLOG EVENTS IN '{}' FROM {}",
            from.0, from.1
        ))
        .await
        .unwrap();
    let mut out = Vec::new();
    for r in rows {
        let pos: u64 = r.get(1).unwrap();
        if pos >= to.1 {
            break;
        }
        let kind: String = r.get(2).unwrap();
        let info: String = r.get(5).unwrap_or_default();
        if kind == "Table_map" {
            out.push(info);
        }
    }
    out
}
