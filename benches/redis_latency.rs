//! Commit-to-key-gone latency of the Redis sink at a steady write rate.
//!
//! On the MariaDB test server: 100 transactions/s of 100 single-row INSERTs each (10k rows/s)
//! for 20 s; before each commit the transaction's keys are cached in Redis. A poller watches
//! one key per transaction (EXISTS in a tight loop, oldest first: deletes arrive in commit
//! order) and records the time from COMMIT returning to the key being gone. Prints p50/p90/
//! p99/max; asserts nothing.
//!
//! Run: `bash scripts/bench.sh`.

use mysql_async::prelude::*;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SECONDS: u64 = 20;
const TXN_PER_S: u64 = 100;
const ROWS_PER_TXN: u64 = 100;

fn main() {
    let url = std::env::var("BINLOGD_TEST_MARIADB_URL")
        .expect("BINLOGD_TEST_MARIADB_URL (run scripts/bench.sh)");
    let cdc = std::env::var("BINLOGD_TEST_MARIADB_CDC_URL").expect("BINLOGD_TEST_MARIADB_CDC_URL");
    let rurl = std::env::var("BINLOGD_TEST_REDIS_URL").expect("BINLOGD_TEST_REDIS_URL");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url).unwrap())
        .prefer_socket(false);
    let mut c = rt.block_on(mysql_async::Conn::new(opts)).unwrap();
    let (file, pos) = rt.block_on(async {
        c.query_drop("DROP DATABASE IF EXISTS benchlat")
            .await
            .unwrap();
        c.query_drop("CREATE DATABASE benchlat").await.unwrap();
        c.query_drop("CREATE TABLE benchlat.t (id BIGINT PRIMARY KEY, v VARCHAR(32))")
            .await
            .unwrap();
        let r: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        (r.get::<String, _>(0).unwrap(), r.get::<u64, _>(1).unwrap())
    });
    let dir = std::env::temp_dir().join("binlogd-bench-lat");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"{cdc}\"\nserver_id = 9998\nname = \"bench\"\nstart = {{ file = \"{file}\", pos = {pos} }}\n\
             include = [\"benchlat.*\"]\n[pipeline]\nname = \"benchlat\"\n[[sinks.redis]]\nname = \"cache\"\nurl = \"{rurl}\"\n\
             [[sinks.redis.rules]]\ntable = \"benchlat.t\"\nkeys = [\"lat:{{id}}\"]\n[log]\nlevel = \"warn\"\n"
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_binlogd");
    let _ = Command::new(bin)
        .args(["position", "reset", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .status();
    let mut daemon = Command::new(bin)
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .spawn()
        .expect("binlogd");
    std::thread::sleep(Duration::from_secs(2));

    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let poll_url = rurl.clone();
    let poller = std::thread::spawn(move || {
        let mut r = redis::Client::open(poll_url)
            .unwrap()
            .get_connection()
            .unwrap();
        let mut lat = Vec::new();
        for (key, committed) in rx {
            loop {
                let e: bool = redis::cmd("EXISTS").arg(&key).query(&mut r).unwrap();
                if !e {
                    break;
                }
                if committed.elapsed() > Duration::from_secs(30) {
                    panic!("{key} never deleted");
                }
            }
            lat.push(committed.elapsed());
        }
        lat
    });
    let mut r = redis::Client::open(rurl.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let t0 = Instant::now();
    let mut id = 0u64;
    rt.block_on(async {
        for n in 0..SECONDS * TXN_PER_S {
            let due = t0 + Duration::from_micros(n * 1_000_000 / TXN_PER_S);
            tokio::time::sleep_until(due.into()).await;
            let mut p = redis::pipe();
            let mut q = String::from("INSERT INTO benchlat.t VALUES ");
            for k in 0..ROWS_PER_TXN {
                if k > 0 {
                    q.push(',');
                }
                q.push_str(&format!("({},'x')", id + k));
                p.set(format!("lat:{}", id + k), 1).ignore();
            }
            let _: () = p.query(&mut r).unwrap();
            // one multi-row statement per transaction (autocommit)
            c.query_drop(q).await.unwrap();
            tx.send((format!("lat:{}", id + ROWS_PER_TXN - 1), Instant::now()))
                .unwrap();
            id += ROWS_PER_TXN;
        }
    });
    let rate = id as f64 / t0.elapsed().as_secs_f64();
    drop(tx);
    let mut lat = poller.join().unwrap();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
    lat.sort();
    let q =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!("\nRedis sink, commit → key gone, MariaDB, {rate:.0} rows/s steady ({} transactions of {ROWS_PER_TXN} rows):", lat.len());
    println!(
        "p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
}
