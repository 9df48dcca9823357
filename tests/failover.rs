//! Primary failover and fencing (issue 14), against real primary + GTID replica pairs of
//! private servers (MariaDB: log_slave_updates, MASTER_USE_GTID=slave_pos; MySQL: gtid_mode=ON,
//! log_replica_updates, SOURCE_AUTO_POSITION=1) under a write load:
//!
//! - a caught-up failover behind a "VIP" (a TCP proxy switched to the new primary): nothing lost,
//!   nothing repeated;
//! - a failover to a replica that was behind, with the checkpoint on the source and on a
//!   separate server: binlogd stops with the divergence error (also after a restart and in
//!   `binlogd check`) and emits nothing from the new primary until the operator accepts with
//!   `--accept-divergence`, which then streams the new primary's changes with none lost;
//! - the same with the checkpoint on the source and binlogd lost with the old primary, where only
//!   the Kafka `exactly_once` partition tails know what was delivered;
//! - the pipeline lock as a lease through a network partition (the active daemon's checkpoint
//!   connection blackholed by a proxy, sockets open): the old active stops handing on before the
//!   standby takes over, emits nothing after, loses nothing; `/readyz` never says "active" for
//!   both;
//! - `/readyz` within one heartbeat: 503 naming the cause when the source stream or a sink stops
//!   answering (sockets open), 200 again after.

mod common;

use common::*;
use mysql_async::prelude::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// These tests start private servers on fixed ports and measure timings: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// (primary, replica, checkpoint server) ports.
fn ports(f: Flavor) -> (u16, u16, u16) {
    match f {
        Flavor::MariaDb => (3354, 3355, 3356),
        Flavor::MySql => (3357, 3358, 3359),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ------------------------------------------------------------------------------------------
// a TCP proxy: a VIP that can move, and a network partition that keeps sockets open
// ------------------------------------------------------------------------------------------

struct Proxy {
    port: u16,
    upstream: Arc<AtomicU16>,
    paused: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

fn wait_while(flag: &AtomicBool) {
    while flag.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Copies `from` → `to`; while paused, holds what it read (nothing passes, nothing closes).
fn pump(mut from: TcpStream, mut to: TcpStream, paused: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let r = from.read(&mut buf);
        // not even a close passes during a partition
        wait_while(&paused);
        let n = match r {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Proxy {
            port: l.local_addr().unwrap().port(),
            upstream: Arc::new(AtomicU16::new(upstream)),
            paused: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let (up, paused, conns) = (p.upstream.clone(), p.paused.clone(), p.conns.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { return };
                let (up, paused, conns) = (up.clone(), paused.clone(), conns.clone());
                std::thread::spawn(move || {
                    // during a partition a new connection gets nowhere (the client times out)
                    wait_while(&paused);
                    let Ok(server) = TcpStream::connect(("127.0.0.1", up.load(Ordering::SeqCst)))
                    else {
                        let _ = client.shutdown(Shutdown::Both);
                        return;
                    };
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    conns
                        .lock()
                        .unwrap()
                        .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                    let p2 = paused.clone();
                    std::thread::spawn(move || pump(c2, s2, p2));
                    pump(server, client, paused);
                });
            }
        });
        p
    }

    fn url(&self, user: &str) -> String {
        format!("mysql://{user}@127.0.0.1:{}", self.port)
    }

    /// New connections go to `upstream`; open ones are cut (as when a VIP moves).
    fn switch(&self, upstream: u16) {
        self.upstream.store(upstream, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// A network partition: nothing passes either way, every socket stays open.
    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------------------------------
// a primary + GTID replica pair
// ------------------------------------------------------------------------------------------

struct Pair {
    f: Flavor,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    p: PrivateServer,
    r: PrivateServer,
}

fn pair(f: Flavor, name: &str) -> Pair {
    let rt = rt();
    let dir = workdir(name);
    let (pp, rp, _) = ports(f);
    let p = PrivateServer::start(f, &dir.join("p"), pp, &[]);
    let upd = match f {
        Flavor::MariaDb => "--log-slave-updates=ON",
        Flavor::MySql => "--log-replica-updates=ON",
    };
    let r = PrivateServer::start(f, &dir.join("r"), rp, &["--server-id=2", upd]);
    rt.block_on(async {
        exec(
            &p.root_url(),
            "CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl'",
        )
        .await;
        exec(&p.root_url(), "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'").await;
        exec(&p.root_url(), "CREATE DATABASE fo").await;
        exec(
            &p.root_url(),
            "CREATE TABLE fo.t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)",
        )
        .await;
        let change = match f {
            Flavor::MariaDb => format!(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={pp}, MASTER_USER='repl', \
                 MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos"
            ),
            Flavor::MySql => format!(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT={pp}, SOURCE_USER='repl', \
                 SOURCE_PASSWORD='repl', SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1"
            ),
        };
        exec(&r.root_url(), &change).await;
        exec(
            &r.root_url(),
            match f {
                Flavor::MariaDb => "START SLAVE",
                Flavor::MySql => "START REPLICA",
            },
        )
        .await;
    });
    let pr = Pair { f, rt, dir, p, r };
    pr.wait_caught_up();
    pr
}

impl Pair {
    /// Until the replica's table equals the primary's.
    fn wait_caught_up(&self) {
        let t0 = Instant::now();
        loop {
            let (a, b) = self.rt.block_on(async {
                let a = table_state(&self.p.root_url(), "fo").await;
                let mut c = root_at(&self.r.root_url()).await;
                let n: Option<i64> = c
                    .query_first(
                        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'fo' AND TABLE_NAME = 't'",
                    )
                    .await
                    .unwrap();
                let b = if n == Some(1) {
                    Some(table_state(&self.r.root_url(), "fo").await)
                } else {
                    None
                };
                (a, b)
            });
            if b.as_ref() == Some(&a) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the replica did not catch up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The replica stops receiving (its primary goes on without it).
    fn stop_receiving(&self) {
        self.rt.block_on(exec(
            &self.r.root_url(),
            match self.f {
                Flavor::MariaDb => "STOP SLAVE IO_THREAD",
                Flavor::MySql => "STOP REPLICA IO_THREAD",
            },
        ));
    }

    /// The primary is gone (`kill -9`); the replica becomes the primary.
    fn fail_over(&self) {
        self.p.kill9();
        let sql = match self.f {
            Flavor::MariaDb => "STOP SLAVE",
            Flavor::MySql => "STOP REPLICA",
        };
        self.rt.block_on(exec(&self.r.root_url(), sql));
        let sql = match self.f {
            Flavor::MariaDb => "RESET SLAVE ALL",
            Flavor::MySql => "RESET REPLICA ALL",
        };
        self.rt.block_on(exec(&self.r.root_url(), sql));
    }

    fn start(&self) -> (String, u64) {
        self.rt.block_on(async {
            let mut c = root_at(&self.p.root_url()).await;
            binlog_end(&mut c, self.f).await
        })
    }
}

// ------------------------------------------------------------------------------------------
// load and checks
// ------------------------------------------------------------------------------------------

/// Transactions on `db.t` (two inserts, an update, every fourth a delete) on ids from `base`,
/// about 60 per second, until stopped or the server fails.
fn writer(url: String, db: &str, base: i64) -> Load {
    let db = db.to_string();
    Load::spawn(move |s, n| async move {
        let Ok(mut c) = mysql_async::Conn::new(
            mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url).unwrap())
                .prefer_socket(false),
        )
        .await
        else {
            return;
        };
        let mut i: i64 = 0;
        while !s.load(Ordering::Relaxed) {
            let a = base + 2 * i;
            let mut sql = format!(
                "START TRANSACTION; INSERT INTO `{db}`.t VALUES ({a}, 0), ({}, 0); \
                         UPDATE `{db}`.t SET v = v + 1 WHERE id = {};",
                a + 1,
                base + 2 * (i / 2)
            );
            if i % 4 == 3 {
                sql.push_str(&format!(
                    " DELETE FROM `{db}`.t WHERE id = {};",
                    base + 2 * (i - 3) + 1
                ));
            }
            sql.push_str(" COMMIT");
            if c.query_drop(sql).await.is_err() {
                return;
            }
            n.fetch_add(1, Ordering::Relaxed);
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

fn part(m: &BTreeMap<i64, i64>, r: std::ops::Range<i64>) -> BTreeMap<i64, i64> {
    m.range(r).map(|(k, v)| (*k, *v)).collect()
}

const R_BASE: i64 = 1_000_000;

/// Waits until the daemon's events, restricted to `ids`, end in `want`.
fn settle(d: &mut Daemon, want: &BTreeMap<i64, i64>, ids: std::ops::Range<i64>) -> (usize, usize) {
    let t0 = Instant::now();
    loop {
        let (state, distinct, repeats) = check_history_across(&[d.events()]);
        if part(&state, ids.clone()) == *want {
            return (distinct, repeats);
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("binlogd exited ({st}); log:\n{}", d.log_text());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the events do not reach the table's state ({} of {} rows); log:\n{}",
            part(&state, ids.clone()).len(),
            want.len(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The number in "lacks N transaction(s)" of the last divergence error in `log`.
fn lacking_count(log: &str) -> u64 {
    let i = log.rfind("lacks ").expect("a divergence error");
    log[i + 6..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {}", &log[i..(i + 80).min(log.len())]))
}

fn daemon_cfg(
    f: Flavor,
    name: &str,
    src_url: &str,
    start: &(String, u64),
    dir: &Path,
    checkpoint_url: Option<&str>,
) -> String {
    let mut c = config_for(src_url, f, name, "fo", start, dir, "");
    if let Some(u) = checkpoint_url {
        c = c.replace("[checkpoint]\n", &format!("[checkpoint]\nurl = \"{u}\"\n"));
    }
    c
}

// ------------------------------------------------------------------------------------------
// caught-up failover
// ------------------------------------------------------------------------------------------

/// The replica had everything when the primary died; the VIP moves to it. The running daemon
/// notices the new server and stops (a supervisor starts it again); the new start finds the
/// new primary's history contains the stored position, logs the failover with both
/// identities, and streams the new primary's writes: nothing lost, nothing repeated.
fn caught_up_failover(f: Flavor) {
    let _g = serial();
    let name = format!("fo_caught_{}", f.tag());
    let pr = pair(f, &name);
    let vip = Proxy::start(pr.p.port);
    let cfg = daemon_cfg(f, &name, &vip.url("cdc:cdc"), &pr.start(), &pr.dir, None);
    let mut d = Daemon::start(&pr.dir, &cfg);
    let mut w = writer(pr.p.root_url(), "fo", 0);
    w.wait_commits(150, Duration::from_secs(60), "");
    let n_p = w.finish();
    let want_p = pr.rt.block_on(table_state(&pr.p.root_url(), "fo"));
    settle(&mut d, &want_p, 0..R_BASE);
    pr.wait_caught_up();
    std::thread::sleep(Duration::from_secs(1)); // the position after them is stored and replicated
    let t_fail = Instant::now();
    pr.fail_over();
    vip.switch(pr.r.port);
    let mut w2 = writer(pr.r.root_url(), "fo", R_BASE);
    w2.wait_commits(30, Duration::from_secs(60), "");
    let code = d.wait_exit(Duration::from_secs(60), "after the failover");
    assert_eq!(code, Some(1), "{}", d.log_text());
    let log = d.log_all();
    assert!(
        log.contains("the source server changed while streaming"),
        "the running daemon names the change: {}",
        d.log_text()
    );
    assert!(!log.contains("history diverged"), "{}", d.log_text());
    // the supervisor starts it again
    d.restart();
    w2.wait_commits(30, Duration::from_secs(60), "");
    let n_r = w2.finish();
    let want = pr.rt.block_on(table_state(&pr.r.root_url(), "fo"));
    let (distinct, repeats) = settle(&mut d, &want, 0..i64::MAX);
    let took = t_fail.elapsed();
    let log = d.log_all();
    assert!(
        log.contains("the source server is not the one the stored position was read from"),
        "the failover is logged with both identities: {}",
        d.log_text()
    );
    assert_eq!(repeats, 0, "nothing repeated");
    assert_eq!(d.stop(), Some(0));
    eprintln!(
        "{}: caught-up failover: {n_p} transactions on the old primary, {n_r} on the new one; {distinct} row changes, \
         0 lost, {repeats} repeated; new primary's writes streamed {:.1}s after the failover (incl. the restart)",
        f.tag(),
        took.as_secs_f64()
    );
}

both_flavors!(caught_up_failover: caught_up_failover_mariadb(), caught_up_failover_mysql());

// ------------------------------------------------------------------------------------------
// failover to a replica that was behind
// ------------------------------------------------------------------------------------------

/// The replica stopped receiving while the primary went on; binlogd delivered everything the
/// primary had; the primary dies and the VIP moves to the replica, which takes writes. binlogd
/// stops with the divergence error — while running, after a restart, and in `binlogd check` —
/// and emits nothing of the new primary's until the operator accepts with
/// `--accept-divergence`; then the new primary's changes all arrive, once.
fn behind_failover(f: Flavor, separate: bool) {
    let _g = serial();
    let name = format!(
        "fo_behind_{}_{}",
        if separate { "sep" } else { "src" },
        f.tag()
    );
    let pr = pair(f, &name);
    let (_, _, cport) = ports(f);
    let cp =
        separate.then(|| PrivateServer::start(f, &pr.dir.join("c"), cport, &["--server-id=3"]));
    let cp_url = cp.as_ref().map(|c| c.cdc_url());
    let vip = Proxy::start(pr.p.port);
    let cfg = daemon_cfg(
        f,
        &name,
        &vip.url("cdc:cdc"),
        &pr.start(),
        &pr.dir,
        cp_url.as_deref(),
    );
    let mut d = Daemon::start(&pr.dir, &cfg);
    let mut w = writer(pr.p.root_url(), "fo", 0);
    w.wait_commits(100, Duration::from_secs(60), "");
    pr.stop_receiving();
    let at_stop = w.commits();
    w.wait_commits(100, Duration::from_secs(60), "");
    let n_p = w.finish();
    let behind = n_p - at_stop;
    let want_p = pr.rt.block_on(table_state(&pr.p.root_url(), "fo"));
    settle(&mut d, &want_p, 0..R_BASE);
    std::thread::sleep(Duration::from_secs(1)); // stored
    pr.fail_over();
    vip.switch(pr.r.port);
    let mut w2 = writer(pr.r.root_url(), "fo", R_BASE);
    w2.wait_commits(40, Duration::from_secs(60), "");
    // the running daemon reaches the new primary through the VIP: diverged, it stops
    let code = d.wait_exit(Duration::from_secs(60), "after the failover");
    assert_eq!(code, Some(1), "{}", d.log_text());
    let log = d.log_all();
    assert!(log.contains("history diverged"), "{}", d.log_text());
    assert!(
        !log.contains("purged"),
        "not called a purge: {}",
        d.log_text()
    );
    let lacking = lacking_count(&log);
    assert!(
        lacking >= behind,
        "names at least the {behind} transactions the replica never received: {lacking}"
    );
    let delivered = d.events().len();
    // restarted (a supervisor): the stored position says the same
    d.restart();
    assert_eq!(
        d.wait_exit(Duration::from_secs(60), "restarted after the failover"),
        Some(1)
    );
    let log = d.log_all();
    assert!(
        log.rfind("history diverged") > log.rfind("connected to source"),
        "the restarted daemon stops with the divergence error too: {}",
        d.log_text()
    );
    for needle in [
        "failover to a replica that was behind",
        "--accept-divergence",
        "binlogd position set --gtid",
        "re-read the affected tables",
    ] {
        assert!(log.contains(needle), "{needle:?} in: {}", d.log_text());
    }
    let (code, out) = run_binlogd(&["check", "-c", d.config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: history diverged"), "{out}");
    if !separate {
        assert!(
            out.contains("warning: the checkpoint is stored on the source server"),
            "{out}"
        );
    } else {
        assert!(
            !out.contains("the checkpoint is stored on the source server"),
            "{out}"
        );
    }
    let ev = d.events();
    assert_eq!(ev.len(), delivered, "nothing more emitted");
    assert!(
        ev.iter()
            .all(|e| e["after"]["id"].as_i64().or(e["before"]["id"].as_i64()) < Some(R_BASE)),
        "nothing from the new primary before the operator decides"
    );
    // the operator accepts
    let mut d = Daemon::run_with(&pr.dir, &["--accept-divergence"]);
    w2.wait_commits(20, Duration::from_secs(60), "");
    let n_r = w2.finish();
    let want_r = part(
        &pr.rt.block_on(table_state(&pr.r.root_url(), "fo")),
        R_BASE..i64::MAX,
    );
    let (distinct, repeats) = settle(&mut d, &want_r, R_BASE..i64::MAX);
    let (state, _, _) = check_history_across(&[d.events()]);
    assert_eq!(
        part(&state, 0..R_BASE),
        want_p,
        "everything of the old primary delivered before"
    );
    assert_eq!(repeats, 0, "nothing repeated");
    assert!(d.log_all().contains("ACCEPTING A DIVERGED HISTORY"));
    assert_eq!(d.stop(), Some(0));
    // the accepted position was stored: the next start needs no flag
    d.restart();
    let mut w3 = writer(pr.r.root_url(), "fo", 2 * R_BASE);
    w3.wait_commits(20, Duration::from_secs(60), "");
    w3.finish();
    let want = part(
        &pr.rt.block_on(table_state(&pr.r.root_url(), "fo")),
        R_BASE..i64::MAX,
    );
    settle(&mut d, &want, R_BASE..i64::MAX);
    assert_eq!(d.stop(), Some(0));
    eprintln!(
        "{} (checkpoint {}): replica {behind} transactions behind; binlogd named {lacking} lacking transactions, \
         emitted nothing of the new primary before --accept-divergence, then its {n_r} transactions: {distinct} \
         row changes, 0 lost, {repeats} repeated",
        f.tag(),
        if separate { "on a separate server" } else { "on the source" },
    );
}

both_flavors!(behind_failover: behind_failover_checkpoint_on_source_mariadb(false), behind_failover_checkpoint_on_source_mysql(false));

both_flavors!(behind_failover: behind_failover_checkpoint_separate_mariadb(true), behind_failover_checkpoint_separate_mysql(true));

// ------------------------------------------------------------------------------------------
// Kafka exactly_once: the partition tails know what was delivered
// ------------------------------------------------------------------------------------------

/// Checkpoint on the source, binlogd lost together with the old primary (`kill -9` of both):
/// the new primary holds the replicated checkpoint, which it contains — only the Kafka
/// partition tails show that binlogd delivered transactions it never received.
fn kafka_tails(f: Flavor) {
    let _g = serial();
    let name = format!("fo_kafka_{}", f.tag());
    let pr = pair(f, &name);
    let nonce = now_ms();
    let topic_prefix = format!("fo{nonce}");
    let cfg = daemon_cfg(f, &name, &pr.p.cdc_url(), &pr.start(), &pr.dir, None)
        + &format!(
            "\n[[sinks.kafka]]\nname = \"events\"\nbrokers = \"{}\"\ntopic = \"{topic_prefix}.{{db}}.{{table}}\"\n\
             exactly_once = true\ncreate_topics = true\npartitions = 3\n",
            kafka_brokers()
        );
    let mut d = Daemon::start(&pr.dir, &cfg);
    let mut w = writer(pr.p.root_url(), "fo", 0);
    w.wait_commits(100, Duration::from_secs(60), "");
    pr.stop_receiving();
    let at_stop = w.commits();
    w.wait_commits(100, Duration::from_secs(60), "");
    let n_p = w.finish();
    let want_p = pr.rt.block_on(table_state(&pr.p.root_url(), "fo"));
    settle(&mut d, &want_p, 0..R_BASE);
    std::thread::sleep(Duration::from_secs(1));
    // lost with the primary's host
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    pr.fail_over();
    let mut w2 = writer(pr.r.root_url(), "fo", R_BASE);
    w2.wait_commits(40, Duration::from_secs(60), "");
    // binlogd is started against the new primary
    let cfg_r = cfg.replace(&pr.p.cdc_url(), &pr.r.cdc_url());
    std::fs::write(&d.config, &cfg_r).unwrap();
    let (code, out) = run_binlogd(&["check", "-c", d.config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: history diverged")
            && out.contains(&format!("Kafka {topic_prefix}.fo.t/")),
        "check names the Kafka partition tails as the evidence: {out}"
    );
    assert!(
        !out.contains("the checkpoint is stored on the source server"),
        "no warning with an exactly_once Kafka sink: {out}"
    );
    let delivered = d.events().len();
    d.restart();
    assert_eq!(
        d.wait_exit(Duration::from_secs(60), "started on the new primary"),
        Some(1)
    );
    let log = d.log_all();
    assert!(
        log.contains("history diverged") && log.contains("Kafka "),
        "{}",
        d.log_text()
    );
    let lacking = lacking_count(&log);
    assert!(lacking >= n_p - at_stop, "{lacking} < {}", n_p - at_stop);
    assert_eq!(d.events().len(), delivered, "nothing emitted");
    // accepted: the new primary's changes reach Kafka (and the file), none lost
    let mut d = Daemon::run_with(&pr.dir, &["--accept-divergence"]);
    w2.wait_commits(20, Duration::from_secs(60), "");
    let n_r = w2.finish();
    let want_r = part(
        &pr.rt.block_on(table_state(&pr.r.root_url(), "fo")),
        R_BASE..i64::MAX,
    );
    settle(&mut d, &want_r, R_BASE..i64::MAX);
    let file_r: HashSet<(String, usize)> = {
        let ev = d.events();
        gtid_keys(&ev)
            .into_iter()
            .zip(ev.iter())
            .filter(|(_, e)| {
                e["after"]["id"].as_i64().or(e["before"]["id"].as_i64()) >= Some(R_BASE)
            })
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(d.stop(), Some(0));
    let msgs: Vec<Value> = consume_all(&kafka_brokers(), &format!("{topic_prefix}.fo.t"))
        .iter()
        .filter_map(|m| m.json())
        .collect();
    // per partition order differs from the file's: key by GTID and the row's own coordinates
    let kafka_r: HashSet<(String, u64, u64)> = msgs
        .iter()
        .filter(|e| e["after"]["id"].as_i64().or(e["before"]["id"].as_i64()) >= Some(R_BASE))
        .map(|e| {
            (
                e["source"]["gtid"].as_str().unwrap_or("").to_string(),
                e["source"]["pos"].as_u64().unwrap_or(0),
                e["source"]["row"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        kafka_r.len(),
        file_r.len(),
        "every row change of the new primary is in Kafka"
    );
    eprintln!(
        "{}: Kafka exactly_once tails revealed {lacking} transactions the new primary lacks (checkpoint on the \
         source, binlogd lost with the primary); after --accept-divergence all {} row changes of its {n_r} \
         transactions reached Kafka",
        f.tag(),
        kafka_r.len()
    );
}

both_flavors!(kafka_tails: kafka_tails_reveal_divergence_mariadb(), kafka_tails_reveal_divergence_mysql());

// ------------------------------------------------------------------------------------------
// the pipeline lock as a lease through a network partition
// ------------------------------------------------------------------------------------------

/// The wall time (ms) of the first log line containing `needle` (JSON logs).
fn log_time(log: &str, needle: &str) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            let t = humantime::parse_rfc3339_weak(v["timestamp"].as_str()?).ok()?;
            Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
        })
}

/// Two daemons for one pipeline; the active one's connection to the checkpoint server (its
/// lock session) is blackholed by a proxy — sockets stay open, nothing passes — while its
/// source stream keeps flowing. It must stop handing on before the server frees the lock;
/// the standby takes over within the lease plus a few seconds; the old active emits nothing
/// after that, nothing is lost, and `/readyz` never answers 200 on both. After the partition
/// heals, the old active stops.
fn partition_lease(f: Flavor, full: bool) {
    let _g = serial();
    let rt = rt();
    let name = format!("lease_{}{}", if full { "full_" } else { "" }, f.tag());
    let dir_a = workdir(&name);
    let dir_b = workdir(&format!("{name}_b"));
    let mut c = rt.block_on(root(f));
    let start = rt.block_on(fresh_table(
        &mut c,
        f,
        &name,
        &["t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)"],
    ));
    let proxy = Proxy::start(f.port());
    // a full partition cuts A's source stream too
    let src_proxy = Proxy::start(f.port());
    let base = config(f, &name, &name, &start, &dir_a, "");
    let mut cfg_a = base.replace(
        "[checkpoint]\n",
        &format!("[checkpoint]\nurl = \"{}\"\n", proxy.url("cdc:cdc")),
    );
    if full {
        cfg_a = cfg_a.replace(&f.cdc_url(), &src_proxy.url("cdc:cdc"));
    }
    let mut a = Daemon::start(&dir_a, &cfg_a);
    let addr_a = a.admin_addr();
    let t0 = Instant::now();
    while try_http_get(&addr_a, "/readyz").map(|r| r.0) != Some(200) {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", a.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let sid = format!("server_id = {}", server_id_for(&name, f));
    let cfg_b = base
        .replace(
            &sid,
            &format!("server_id = {}", server_id_for(&name, f) + 1),
        )
        .replace(
            dir_a.join("out.jsonl").to_str().unwrap(),
            dir_b.join("out.jsonl").to_str().unwrap(),
        )
        .replace(
            "[checkpoint]\n",
            &format!("[checkpoint]\nurl = \"{}\"\n", f.cdc_url()),
        );
    let mut b = Daemon::start_with_env(&dir_b, &cfg_b, &[]);
    let addr_b = b.admin_addr();
    let t0 = Instant::now();
    while !try_http_get(&addr_b, "/readyz")
        .is_some_and(|(c, body)| c == 503 && body.contains("standby"))
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", b.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // /readyz of both, every 100 ms: (ms since the cut, A's code, B's code)
    let samples: Arc<Mutex<Vec<(i64, u16, u16)>>> = Arc::new(Mutex::new(Vec::new()));
    let cut_at = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (samples, cut_at, watching) = (samples.clone(), cut_at.clone(), watching.clone());
        let (addr_a, addr_b) = (addr_a.clone(), addr_b.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let ca = try_http_get(&addr_a, "/readyz").map_or(0, |r| r.0);
                let cb = try_http_get(&addr_b, "/readyz").map_or(0, |r| r.0);
                let cut = cut_at.load(Ordering::Relaxed);
                let at = if cut == 0 {
                    -1
                } else {
                    now_ms() as i64 - cut as i64
                };
                samples.lock().unwrap().push((at, ca, cb));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut w = writer(f.root_url(), &name, 0);
    w.wait_commits(150, Duration::from_secs(60), "");
    // the partition: A's lock session and any new checkpoint connection of A go nowhere
    let t_cut = Instant::now();
    let cut_ms = now_ms();
    cut_at.store(cut_ms, Ordering::Relaxed);
    proxy.pause();
    if full {
        src_proxy.pause();
    }
    let takeover = loop {
        if b.log_all().contains("holding the pipeline lock: active") {
            break t_cut.elapsed();
        }
        assert!(
            t_cut.elapsed() < Duration::from_secs(60),
            "the standby did not take over; A:\n{}\nB:\n{}",
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let takeover_ms =
        log_time(&b.log_all(), "holding the pipeline lock: active").unwrap_or(now_ms());
    w.wait_commits(200, Duration::from_secs(60), ""); // B streams under load
    let n = w.finish();
    let want = rt.block_on(table_state(&f.root_url(), &name));
    let t0 = Instant::now();
    let (distinct, repeats) = loop {
        let (state, distinct, repeats) = check_history_across(&[a.events(), b.events()]);
        if state == want {
            break (distinct, repeats);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "A and B together do not reach the table's state: a row change was lost; B:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let a_events = a.events();
    let a_last_ms = a_events
        .iter()
        .filter_map(|e| e["ts_ms"].as_u64())
        .max()
        .unwrap_or(0);
    let after_takeover = a_events
        .iter()
        .filter(|e| e["ts_ms"].as_u64().unwrap_or(0) >= takeover_ms)
        .count();
    let log_a = a.log_all();
    let fenced_ms = log_time(&log_a, "self-fencing")
        .unwrap_or_else(|| panic!("A logs that it fenced itself:\n{}", a.log_text()));
    // the partition heals: A finds the lock taken and stops, emitting nothing more
    proxy.resume();
    src_proxy.resume();
    let code = a.wait_exit(Duration::from_secs(60), "after the partition healed");
    assert_eq!(code, Some(1), "{}", a.log_text());
    assert!(
        a.log_all().contains("lost the pipeline lock"),
        "{}",
        a.log_text()
    );
    assert_eq!(
        a.events().len(),
        a_events.len(),
        "A emitted nothing after the heal"
    );
    watching.store(false, Ordering::Relaxed);
    monitor.join().unwrap();
    let samples = samples.lock().unwrap().clone();
    let both: Vec<_> = samples
        .iter()
        .filter(|s| s.1 == 200 && s.2 == 200)
        .collect();
    let a_unready = samples
        .iter()
        .find(|s| s.0 >= 0 && s.1 != 200)
        .map(|s| s.0)
        .unwrap_or(-1);
    let b_ready = samples
        .iter()
        .find(|s| s.0 >= 0 && s.2 == 200)
        .map(|s| s.0)
        .unwrap_or(-1);
    assert_eq!(b.stop(), Some(0));
    let fence_s = (fenced_ms as f64 - cut_ms as f64) / 1000.0;
    eprintln!(
        "{}: partition of the active daemon's {} (lock_lease 15s): A unready after {:.1}s, \
         A fenced itself after {fence_s:.1}s, B took over after {:.1}s and was ready after {:.1}s; A's last event \
         {:.1}s after the cut, {after_takeover} events from A after the takeover; {n} transactions, {distinct} row \
         changes, 0 lost ({repeats} repeated by B from the stored position); both ready at once: {} samples",
        f.tag(),
        if full {
            "connections (source and checkpoint)"
        } else {
            "checkpoint connection (its source stream flowing)"
        },
        a_unready as f64 / 1000.0,
        takeover.as_secs_f64(),
        b_ready as f64 / 1000.0,
        (a_last_ms as f64 - cut_ms as f64) / 1000.0,
        both.len()
    );
    assert!(both.is_empty(), "both daemons reported active: {both:?}");
    assert_eq!(after_takeover, 0, "A emitted after the takeover");
    assert!(
        fenced_ms < takeover_ms,
        "A fenced itself ({fenced_ms}) before B took over ({takeover_ms})"
    );
    assert!(
        takeover < Duration::from_secs(15 + 5 + 4),
        "takeover within lease + a few seconds: {takeover:?}"
    );
    assert!(
        (0..=3000).contains(&a_unready),
        "A's /readyz says 503 within one heartbeat and a margin: {a_unready} ms"
    );
}

both_flavors!(partition_lease: partition_lease_mariadb(false), partition_lease_mysql(false));

both_flavors!(partition_lease: partition_full_lease_mariadb(true), partition_full_lease_mysql(true));

// ------------------------------------------------------------------------------------------
// /readyz within one heartbeat
// ------------------------------------------------------------------------------------------

/// Waits until `/readyz` answers `code` with a body containing `needle`; returns how long.
fn readyz_until(addr: &str, code: u16, needle: &str, d: &Daemon) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Some((c, body)) = try_http_get(addr, "/readyz") {
            if c == code && body.contains(needle) {
                return t0.elapsed();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "/readyz never answered {code} with {needle:?}; log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/readyz` turns 503 within one `source.heartbeat` (1 s here) plus the margin when the source
/// stream stops delivering (its connection blackholed, nothing closed) and when a sink stops
/// answering (Redis behind a blackholing proxy), naming the cause; and 200 again after.
fn readyz_within_heartbeat(f: Flavor) {
    let _g = serial();
    let name = format!("readyz_{}", f.tag());
    let Scenario { rt, dir, start, .. } =
        Scenario::new(f, &name, &["t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)"]);
    let src = Proxy::start(f.port());
    let redis_port: u16 = redis_url()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    let rp = Proxy::start(redis_port);
    let cfg = config_for(&src.url("cdc:cdc"), f, &name, &name, &start, &dir, "")
        .replace(
            "[checkpoint]\n",
            &format!("[checkpoint]\nurl = \"{}\"\n", f.cdc_url()),
        )
        + &format!(
            "[[sinks.redis]]\nname = \"cache\"\nurl = \"redis://127.0.0.1:{}/\"\n[[sinks.redis.rules]]\n\
             table = \"{name}.t\"\nkeys = [\"{name}:{{id}}\"]\n",
            rp.port
        );
    let mut d = Daemon::start(&dir, &cfg);
    let addr = d.admin_addr();
    readyz_until(&addr, 200, "active", &d);
    let mut w = writer(f.root_url(), &name, 0);
    w.wait_commits(20, Duration::from_secs(60), "");
    // the source stream goes silent (no close): unready within a heartbeat and the margin
    src.pause();
    let source_unready = readyz_until(&addr, 503, "no event or heartbeat from the source", &d);
    std::thread::sleep(Duration::from_millis(1500));
    src.resume();
    let source_ready = readyz_until(&addr, 200, "active", &d);
    w.wait_commits(20, Duration::from_secs(60), "");
    // the Redis sink stops answering
    rp.pause();
    let sink_unready = readyz_until(&addr, 503, "cache", &d);
    std::thread::sleep(Duration::from_millis(1500));
    rp.resume();
    let sink_ready = readyz_until(&addr, 200, "active", &d);
    w.finish();
    let want = rt.block_on(table_state(&f.root_url(), &name));
    settle(&mut d, &want, 0..i64::MAX);
    assert_eq!(d.stop(), Some(0));
    eprintln!(
        "{}: /readyz (heartbeat 1s): 503 {:.2}s after the source stream went silent, 200 {:.2}s after it \
         flowed again; 503 naming the sink {:.2}s after Redis stopped answering, 200 {:.2}s after it answered",
        f.tag(),
        source_unready.as_secs_f64(),
        source_ready.as_secs_f64(),
        sink_unready.as_secs_f64(),
        sink_ready.as_secs_f64()
    );
    // heartbeat (1 s) + margin (0.5 s) + the time to the first missed heartbeat and polling
    assert!(
        source_unready < Duration::from_millis(3000),
        "{source_unready:?}"
    );
    // the same bound as the source's: a loaded 2-core machine measured 2.69 s once
    assert!(
        sink_unready < Duration::from_millis(3000),
        "{sink_unready:?}"
    );
}

both_flavors!(readyz_within_heartbeat: readyz_within_one_heartbeat_mariadb(), readyz_within_one_heartbeat_mysql());
