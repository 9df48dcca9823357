//! Commit-to-Kafka latency of the Kafka sink at a steady write rate, and the daemon's RSS.
//!
//! On the MariaDB test server: 100 transactions/s of 100 single-row INSERTs each (10k rows/s)
//! for 20 s (after 3 s of the same load, not counted: see [`WARMUP_SECONDS`]), streamed by binlogd to a 3-partition topic (lz4, idempotent, acks=all). A consumer
//! (partitions assigned, `fetch.wait.max.ms=1`) records, for the last row of every
//! transaction, the time from COMMIT returning to the message being readable: an upper bound
//! of commit → delivery acknowledgement. Prints p50/p90/p99/max and the daemon's peak RSS;
//! asserts nothing.
//!
//! The sink's own figures come from its debug log: COMMIT returned → acknowledged by every
//! sink (the issue-16 metric), and handed to the producer → every delivery report OK.
//! `BINLOGD_BENCH_NO_CONSUMER=1`: no consumer (it polls every millisecond on the same cores as
//! the broker and binlogd, which slows the broker's answers); `BINLOGD_BENCH_PRODUCER` adds
//! producer properties (TOML lines) to try.
//!
//! Run: `bash scripts/bench.sh`.

use mysql_async::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECONDS: u64 = 20;
/// Written before the measured seconds and not counted: the first transactions meet a cold
/// producer (topic metadata, the first connection to each partition leader: gaps of 0.1–1.9 s
/// were seen in the first 3 s), which is start-up, not the steady state measured here.
const WARMUP_SECONDS: u64 = 3;
const TXN_PER_S: u64 = 100;
const ROWS_PER_TXN: u64 = 100;

fn main() {
    let url = std::env::var("BINLOGD_TEST_MARIADB_URL")
        .expect("BINLOGD_TEST_MARIADB_URL (run scripts/bench.sh)");
    let cdc = std::env::var("BINLOGD_TEST_MARIADB_CDC_URL").expect("BINLOGD_TEST_MARIADB_CDC_URL");
    let brokers = std::env::var("BINLOGD_TEST_KAFKA_BROKERS").expect("BINLOGD_TEST_KAFKA_BROKERS");
    let topic = format!("benchlat.{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let a: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        a.create_topics(
            [&NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    });
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url).unwrap())
        .prefer_socket(false);
    let mut c = rt.block_on(mysql_async::Conn::new(opts)).unwrap();
    let (file, pos) = rt.block_on(async {
        c.query_drop("DROP DATABASE IF EXISTS benchklat")
            .await
            .unwrap();
        c.query_drop("CREATE DATABASE benchklat").await.unwrap();
        c.query_drop("CREATE TABLE benchklat.t (id BIGINT PRIMARY KEY, v VARCHAR(32))")
            .await
            .unwrap();
        let r: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        (r.get::<String, _>(0).unwrap(), r.get::<u64, _>(1).unwrap())
    });
    let dir = std::env::temp_dir().join("binlogd-bench-klat");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bench.toml");
    // more producer properties to try, e.g. BINLOGD_BENCH_PRODUCER='"linger.ms" = "0"'
    let extra = std::env::var("BINLOGD_BENCH_PRODUCER")
        .map(|s| format!("{s}\n"))
        .unwrap_or_default();
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"{cdc}\"\nserver_id = 9997\nname = \"bench\"\nstart = {{ file = \"{file}\", pos = {pos} }}\n\
             include = [\"benchklat.*\"]\n[pipeline]\nname = \"benchklat\"\n[[sinks.kafka]]\nname = \"events\"\nbrokers = \"{brokers}\"\n\
             topic = \"{topic}\"\n[sinks.kafka.producer]\n\"compression.type\" = \"lz4\"\n{extra}[log]\nlevel = \"warn\"\n"
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_binlogd");
    let _ = Command::new(bin)
        .args(["position", "reset", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .status();
    let time_out = dir.join("time");
    let mut daemon = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&time_out)
        .arg(bin)
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .env(
            "RUST_LOG",
            "warn,binlogd::sinks::kafka=debug,binlogd::pipeline=debug",
        )
        .env("BINLOGD__LOG__FORMAT", "json")
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .expect("binlogd");
    std::thread::sleep(Duration::from_secs(2));

    let commits: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![
        None;
        ((WARMUP_SECONDS + SECONDS) * TXN_PER_S)
            as usize
    ]));
    let consumer = {
        let (commits, brokers, topic) = (commits.clone(), brokers.clone(), topic.clone());
        std::thread::spawn(move || {
            let k: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "bench")
                .set("fetch.wait.max.ms", "1")
                .set("fetch.error.backoff.ms", "1")
                .set("fetch.queue.backoff.ms", "1")
                .create()
                .unwrap();
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in 0..3 {
                tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
                    .unwrap();
            }
            k.assign(&tpl).unwrap();
            let mut lat = Vec::new();
            let want = if std::env::var_os("BINLOGD_BENCH_NO_CONSUMER").is_some() {
                0
            } else {
                SECONDS * TXN_PER_S
            };
            let t0 = Instant::now();
            while (lat.len() as u64) < want
                && t0.elapsed() < Duration::from_secs(WARMUP_SECONDS + SECONDS + 60)
            {
                if let Some(Ok(m)) = k.poll(Duration::from_millis(100)) {
                    let v: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap()).unwrap();
                    let id = v["after"]["id"].as_u64().unwrap();
                    if id % ROWS_PER_TXN == ROWS_PER_TXN - 1 {
                        let n = id / ROWS_PER_TXN;
                        let c = commits.lock().unwrap()[n as usize];
                        if let (Some(c), true) = (c, n >= WARMUP_SECONDS * TXN_PER_S) {
                            lat.push(c.elapsed());
                        }
                    }
                }
            }
            lat
        })
    };
    let t0 = Instant::now();
    let mut id = 0u64;
    let mut committed: Vec<(u64, std::time::SystemTime)> = Vec::new();
    let mut measured_from = std::time::SystemTime::now();
    rt.block_on(async {
        for n in 0..(WARMUP_SECONDS + SECONDS) * TXN_PER_S {
            let due = t0 + Duration::from_micros(n * 1_000_000 / TXN_PER_S);
            tokio::time::sleep_until(due.into()).await;
            if n == WARMUP_SECONDS * TXN_PER_S {
                measured_from = std::time::SystemTime::now();
            }
            let mut q = String::from("INSERT INTO benchklat.t VALUES ");
            for k in 0..ROWS_PER_TXN {
                if k > 0 {
                    q.push(',');
                }
                q.push_str(&format!("({},'x')", id + k));
            }
            c.query_drop(q).await.unwrap();
            commits.lock().unwrap()[n as usize] = Some(Instant::now());
            let wall = std::time::SystemTime::now();
            // the GTID of this commit, to find the moment every sink acknowledged it
            let g: Option<String> = c.query_first("SELECT @@last_gtid").await.unwrap();
            if let (Some(seq), true) = (
                g.as_deref().and_then(gtid_seq),
                n >= WARMUP_SECONDS * TXN_PER_S,
            ) {
                committed.push((seq, wall));
            }
            id += ROWS_PER_TXN;
        }
    });
    let rate = id as f64 / t0.elapsed().as_secs_f64();
    let from_s = measured_from
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() % 86_400.0)
        .unwrap_or(0.0);
    let mut lat = consumer.join().unwrap();
    // SIGTERM to binlogd, the child of /usr/bin/time
    let _ = Command::new("pkill")
        .args(["-TERM", "-P", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let rss = std::fs::read_to_string(&time_out)
        .ok()
        .and_then(|s| s.trim().lines().last().and_then(|l| l.parse::<f64>().ok()))
        .unwrap_or(0.0)
        / 1024.0;
    // the sink's own figure: from handing a transaction's messages to the producer to the
    // last successful delivery report (debug log "batch acknowledged")
    let mut acks: Vec<f64> = std::fs::read_to_string(dir.join("daemon.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("batch acknowledged") && !l.contains("\"messages\":0"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["timestamp"]
                .as_str()
                .and_then(rfc3339_day_seconds)
                .is_some_and(|t| t >= from_s)
        })
        .filter_map(|v| v["ack_wait"].as_str().map(parse_duration_ms))
        .collect();
    acks.sort_by(|a, b| a.total_cmp(b));
    // commit → acknowledged by every sink: the first "acknowledged by all sinks" log line whose
    // GTID state includes the transaction (log timestamps are wall-clock UTC)
    let all_acked: Vec<(u64, f64)> = std::fs::read_to_string(dir.join("daemon.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("acknowledged by all sinks"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let seq = v["gtid"].as_str().and_then(gtid_seq)?;
            let ts = v["timestamp"].as_str().and_then(rfc3339_day_seconds)?;
            Some((seq, ts))
        })
        .collect();
    let mut commit_ack: Vec<f64> = committed
        .iter()
        .filter_map(|(seq, wall)| {
            let at = all_acked.iter().find(|(s, _)| s >= seq)?.1;
            let c = wall
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs_f64()
                % 86_400.0;
            Some((at - c) * 1000.0)
        })
        .filter(|ms| *ms >= 0.0)
        .collect();
    commit_ack.sort_by(|a, b| a.total_cmp(b));
    lat.sort();
    if lat.is_empty() {
        println!("\nKafka sink, MariaDB → tansu, {rate:.0} rows/s steady; commit → message readable not measured (no consumer); daemon peak RSS {rss:.1} MiB");
    } else {
        let q = |p: f64| {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0
        };
        println!("\nKafka sink, commit → message readable, MariaDB → tansu, {rate:.0} rows/s steady ({} transactions of {ROWS_PER_TXN} rows):", lat.len());
        println!(
            "p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms   daemon peak RSS {rss:.1} MiB",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
    }
    if !commit_ack.is_empty() {
        let a =
            |p: f64| commit_ack[((commit_ack.len() as f64 * p) as usize).min(commit_ack.len() - 1)];
        println!(
            "COMMIT returned → acknowledged by every sink (Kafka delivery reports OK) ({} transactions): p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
            commit_ack.len(),
            a(0.5),
            a(0.9),
            a(0.99),
            a(1.0)
        );
    }
    if !acks.is_empty() {
        let a = |p: f64| acks[((acks.len() as f64 * p) as usize).min(acks.len() - 1)];
        println!(
            "transaction handed to the producer → every delivery report OK ({} transactions): p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
            acks.len(),
            a(0.5),
            a(0.9),
            a(0.99),
            a(1.0)
        );
    }
}

/// `"6.17ms"`, `"950µs"`, `"1.2s"` (Debug of Duration) → ms.
fn parse_duration_ms(s: &str) -> f64 {
    let i = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let n: f64 = s[..i].parse().unwrap_or(0.0);
    n * match &s[i..] {
        "ns" => 1e-6,
        "µs" => 1e-3,
        "ms" => 1.0,
        "s" => 1000.0,
        _ => 0.0,
    }
}

/// Sequence number of a single-domain MariaDB GTID state (`0-1-42` → 42).
fn gtid_seq(g: &str) -> Option<u64> {
    g.split(',').next()?.rsplit('-').next()?.trim().parse().ok()
}

/// Seconds since midnight UTC of an RFC 3339 timestamp (`2026-11-23T03:13:56.123456Z`).
fn rfc3339_day_seconds(ts: &str) -> Option<f64> {
    let t = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut it = t.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}
