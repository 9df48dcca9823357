//! Decode + serialise throughput of the daemon vs `mariadb-binlog --raw` on the same binlog.
//!
//! Generates 1,000,000 row changes on a 10-column table (500k rows in 1000-row multi-row
//! INSERTs, 500k in 1000-row UPDATEs, 5 statements per transaction) on the MariaDB test server,
//! then runs `binlogd run --stop-at END` with a discarding file sink (`path = "/dev/null"`: every
//! event is still rendered to JSON) and `mariadb-binlog --read-from-remote-server --raw` over the
//! same range, each under `/usr/bin/time`; and the same with a Redis sink invalidating one key
//! per row change (500k cached keys, `DEBUG POPULATE`). Prints figures; asserts nothing.
//!
//! Run: `bash scripts/bench.sh` (starts the servers), or with BINLOGD_TEST_MARIADB_URL set:
//! `cargo bench --bench throughput`.

use mysql_async::prelude::*;
use std::process::Command;
use std::time::Instant;

const ROWS: usize = 500_000;
const PER_STMT: usize = 1000;
const STMTS_PER_TXN: usize = 5;

struct Measured {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
}

fn timed(cmd: &mut Command) -> Measured {
    let out_file = std::env::temp_dir().join(format!("binlogd-bench-time-{}", std::process::id()));
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&out_file)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let st = c
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run /usr/bin/time");
    assert!(st.success(), "{:?} failed", cmd.get_program());
    let t = std::fs::read_to_string(&out_file).unwrap();
    let v: Vec<f64> = t
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Measured {
        wall: v[0],
        cpu: v[1] + v[2],
        rss_mib: v[3] / 1024.0,
    }
}

fn main() {
    let url = std::env::var("BINLOGD_TEST_MARIADB_URL")
        .expect("BINLOGD_TEST_MARIADB_URL (run scripts/bench.sh)");
    let cdc = std::env::var("BINLOGD_TEST_MARIADB_CDC_URL").expect("BINLOGD_TEST_MARIADB_CDC_URL");
    let opts = mysql_async::Opts::from_url(&url).unwrap();
    let port = opts.tcp_port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (file, start, end) = rt.block_on(async {
        let mut c = mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false)).await.unwrap();
        c.query_drop("DROP DATABASE IF EXISTS bench").await.unwrap();
        c.query_drop("CREATE DATABASE bench").await.unwrap();
        c.query_drop(
            "CREATE TABLE bench.t (id BIGINT PRIMARY KEY, a INT, b BIGINT, c VARCHAR(64), d DECIMAL(12,2), \
             e DATETIME(6), f DOUBLE, g TINYINT, h VARCHAR(32), i INT UNSIGNED) DEFAULT CHARSET=utf8mb4",
        )
        .await
        .unwrap();
        c.query_drop("FLUSH BINARY LOGS").await.unwrap();
        let r: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        let (file, start): (String, u64) = (r.get(0).unwrap(), r.get(1).unwrap());
        let t0 = Instant::now();
        let mut id = 0usize;
        let mut n_stmt = 0;
        c.query_drop("BEGIN").await.unwrap();
        while id < ROWS {
            let mut q = String::from("INSERT INTO bench.t VALUES ");
            for k in 0..PER_STMT {
                if k > 0 {
                    q.push(',');
                }
                q.push_str(&format!(
                    "({id},{},{},'name-{id}-abcdefghij',{}.{:02},'2024-01-02 03:04:05.{:06}',{}.5,{},'h{}',{})",
                    id as i64 - 250_000,
                    id * 7919,
                    id % 100000,
                    id % 100,
                    id % 1_000_000,
                    id,
                    id % 100,
                    id % 977,
                    id * 3
                ));
                id += 1;
            }
            c.query_drop(q).await.unwrap();
            n_stmt += 1;
            if n_stmt % STMTS_PER_TXN == 0 {
                c.query_drop("COMMIT").await.unwrap();
                c.query_drop("BEGIN").await.unwrap();
            }
        }
        for s in 0..ROWS / PER_STMT {
            c.query_drop(format!(
                "UPDATE bench.t SET a = a + 1, c = CONCAT('upd-', id) WHERE id >= {} AND id < {}",
                s * PER_STMT,
                (s + 1) * PER_STMT
            ))
            .await
            .unwrap();
            if (s + 1) % STMTS_PER_TXN == 0 {
                c.query_drop("COMMIT").await.unwrap();
                c.query_drop("BEGIN").await.unwrap();
            }
        }
        c.query_drop("COMMIT").await.unwrap();
        let r: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        let (efile, end): (String, u64) = (r.get(0).unwrap(), r.get(1).unwrap());
        assert_eq!(efile, file, "the workload fits one binlog file");
        eprintln!("workload: {} row changes written in {:.1}s, binlog {file} {start}..{end} ({:.1} MB)", 2 * ROWS, t0.elapsed().as_secs_f64(), (end - start) as f64 / 1e6);
        (file, start, end)
    });
    let dir = std::env::temp_dir().join("binlogd-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_binlogd");
    let mut results = Vec::new();
    let redis_url = std::env::var("BINLOGD_TEST_REDIS_URL").ok();
    let redis_sink = |url: &str| {
        format!(
            "[[sinks.redis]]\nname = \"cache\"\nurl = \"{url}\"\n[[sinks.redis.rules]]\ntable = \"bench.t\"\nkeys = [\"bench:{{id}}\"]\n"
        )
    };
    let mut runs = vec![
        (
            "binlogd → JSON, discarded",
            "/dev/null".to_string(),
            String::new(),
        ),
        (
            "binlogd → JSON file",
            dir.join("out.jsonl").display().to_string(),
            String::new(),
        ),
    ];
    if let Ok(b) = std::env::var("BINLOGD_TEST_KAFKA_BROKERS") {
        let topic = format!("bench.{}", std::process::id());
        runs.push((
            "binlogd → Kafka (lz4, acked)",
            "/dev/null".into(),
            format!(
                "[[sinks.kafka]]\nname = \"events\"\nbrokers = \"{b}\"\ntopic = \"{topic}\"\ncreate_topics = true\n[sinks.kafka.producer]\n\"compression.type\" = \"lz4\"\n"
            ),
        ));
    }
    if let Some(u) = &redis_url {
        // one key per row change (an update's before and after key are the same: de-duplicated)
        runs.push((
            "binlogd → Redis UNLINK, 1 key/row",
            "/dev/null".into(),
            redis_sink(u),
        ));
    }
    for (label, path, extra) in runs {
        let cfg = dir.join("bench.toml");
        // the Kafka run measures the Kafka sink alone (it renders the same JSON)
        let file_sink = if extra.contains("sinks.kafka") {
            String::new()
        } else {
            format!("[[sinks.file]]\nname = \"out\"\npath = \"{path}\"\n")
        };
        std::fs::write(
            &cfg,
            format!(
                "[pipeline]\nname = \"bench\"\n[source]\nurl = \"{cdc}\"\nserver_id = 9999\nname = \"bench\"\nstart = {{ file = \"{file}\", pos = {start} }}\n\
                 include = [\"bench.*\"]\n{file_sink}[log]\nlevel = \"warn\"\n{extra}"
            ),
        )
        .unwrap();
        for _ in 0..2 {
            if path != "/dev/null" {
                let _ = std::fs::remove_file(dir.join("out.jsonl"));
            }
            if let (true, Some(u)) = (extra.contains("sinks.redis"), &redis_url) {
                // 500k cached rows to invalidate: keys bench:0 … bench:499999
                let st = Command::new("redis-cli")
                    .args(["-u", u, "DEBUG", "POPULATE", "500000", "bench"])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("redis-cli");
                assert!(st.success());
            }
            // each run streams the whole range: forget the position the previous run stored
            let st = Command::new(bin)
                .args(["position", "reset", "-c"])
                .arg(&cfg)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("binlogd position reset");
            assert!(st.success());
            let m = timed(
                Command::new(bin)
                    .arg("run")
                    .arg("-c")
                    .arg(&cfg)
                    .arg("--stop-at")
                    .arg(format!("{file}:{end}")),
            );
            results.push((label, m));
        }
    }
    let lines = std::fs::read_to_string(dir.join("out.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    assert_eq!(lines, 2 * ROWS, "the file sink holds every row change");
    for _ in 0..2 {
        let m = timed(
            Command::new("mariadb-binlog")
                .arg("--read-from-remote-server")
                .arg("--raw")
                .arg("--host=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg("--user=root")
                .arg(format!("--start-position={start}"))
                .arg(format!("--stop-position={end}"))
                .arg(format!("--result-file={}/", dir.display()))
                .arg(&file),
        );
        results.push(("mariadb-binlog --raw (no decoding)", m));
    }
    println!(
        "\n{} row changes ({} MB of binlog), MariaDB, same machine:",
        2 * ROWS,
        (end - start) / 1_000_000
    );
    println!(
        "{:<38} {:>8} {:>14} {:>9} {:>10}",
        "what", "wall s", "rows/s", "CPU s", "max RSS"
    );
    for (label, m) in &results {
        println!(
            "{:<38} {:>8.2} {:>14.0} {:>9.2} {:>7.1} MiB",
            label,
            m.wall,
            2.0 * ROWS as f64 / m.wall,
            m.cpu,
            m.rss_mib
        );
    }
}
