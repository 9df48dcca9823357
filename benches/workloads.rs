//! Decode + JSON throughput on production-shaped workloads, against the raw binlog transfer
//! measured in the same run (issue 16).
//!
//! Two workloads, generated once on a PRIVATE MariaDB instance (`scripts/mariadb.sh`, port
//! `BINLOGD_BENCH_PORT`, default 3461, data in `target/bench-wl/`) and kept: every later run
//! streams the same binlog range again.
//!
//! - `sysbench`: `sysbench oltp_write_only` (Debian's sysbench): 4 tables × 125k rows
//!   prepared, then 125k transactions of 4 row changes (1.0M row changes).
//! - `wide`: one 31-column table (DECIMAL, DATETIME(6), TIMESTAMP(6), JSON, LONGTEXT, utf8mb4
//!   VARCHAR(255), ENUM, SET, BLOB, BIT, …) from a deterministic SQL generator: 200k inserts,
//!   100k updates, 50k deletes, 500 rows per statement (350k row changes).
//!
//! Each round runs, interleaved: `mariadb-binlog --read-from-remote-server --raw` over the
//! range (to a file), and `binlogd run --stop-at END` with the file sink on stdout read and
//! counted by this process (the discarding consumer), the same to `/dev/null`, and `stream`:
//! the range read through mysql_async's binlog stream alone, every event dropped (the client
//! binlogd is built on; the floor before any decoding). Prints per run and as medians: wall,
//! rows/s, CPU-s (user+sys, `/usr/bin/time`), CPU µs per row, peak RSS, and binlogd's rate as
//! a ratio to the raw transfer of the same round. Asserts only that every run delivers the
//! same number of row changes.
//!
//! Peers in the same rounds (`BINLOGD_BENCH_PEERS`, default `mariadb-binlog,zongji`, "" for
//! none): `mariadb-binlog --read-from-remote-server -v` (the C decoder printing rows as text)
//! and zongji 0.5.1 (npm, installed once into `target/bench-wl/zongji`; needs `node` and
//! `npm`), driven by `benches/peers/zongji_count.js`: a JSON line per row change, counted like
//! binlogd's.
//!
//! Kafka (`BINLOGD_BENCH_KAFKA`, default `sysbench`, "" for none): per round and build, a fresh
//! private tansu broker (port `BINLOGD_BENCH_KAFKA_PORT`, default 19461; from
//! `scripts/install-deps.sh`'s venv), one untimed run that creates the topics (3 partitions),
//! then the timed run of the whole range into it (lz4, idempotent, `acks=all`, every delivery
//! report awaited): rows/s, binlogd's CPU-s and RSS, and the broker's CPU-s (from `/proc`);
//! the run must store the range's end as its position. The same again with `headers = false`
//! (`>kafka-bare`: value and key only).
//!
//! Run: `cargo bench --bench workloads` (needs mariadbd, mariadb-binlog, sysbench, /usr/bin/time).
//! Environment: `BINLOGD_BENCH_ROUNDS` (default 3), `BINLOGD_BENCH_WORKLOADS` (`sysbench,wide`),
//! `BINLOGD_BENCH_BINS` (`label=path,…`: more binlogd binaries to interleave, e.g. a build
//! from before a change), `BINLOGD_BENCH_REGENERATE=1` (make the workloads again),
//! `BINLOGD_KEEP_SERVERS=1` (leave the private server running).

use mysql_async::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const WIDE_INSERTS: u64 = 200_000;
const WIDE_UPDATES: u64 = 100_000;
const WIDE_DELETES: u64 = 50_000;
const WIDE_PER_STMT: u64 = 500;

#[derive(Clone, Debug)]
struct Range {
    name: String,
    file: String,
    start: u64,
    end: u64,
}

struct Measured {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    lines: u64,
    /// CPU-s of the counting reader (this process, while it read the run's stdout): it shares
    /// the two cores with binlogd and the server; 0 without one.
    reader_cpu: f64,
}

/// This process's CPU-s so far (user + system, from `/proc/self/stat`, 10 ms ticks).
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the command name (which is in parentheses and may hold spaces)
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` under `/usr/bin/time`; with `count`, reads its stdout and counts lines.
fn timed(cmd: &Command, count: bool) -> Measured {
    let tf = std::env::temp_dir().join(format!("binlogd-wl-time-{}", std::process::id()));
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&tf)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdout(if count { Stdio::piped() } else { Stdio::null() });
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let mut child = c.spawn().expect("run /usr/bin/time");
    let mut lines = 0u64;
    let cpu0 = own_cpu();
    if let Some(mut out) = child.stdout.take() {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = out.read(&mut buf).expect("read stdout");
            if n == 0 {
                break;
            }
            lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        }
    }
    let reader_cpu = if count { own_cpu() - cpu0 } else { 0.0 };
    let st = child.wait().expect("wait");
    assert!(st.success(), "{:?} failed", cmd.get_program());
    let t = std::fs::read_to_string(&tf).expect("time output");
    let v: Vec<f64> = t
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(v.len(), 4, "unexpected /usr/bin/time output: {t}");
    Measured {
        wall: v[0],
        cpu: v[1] + v[2],
        rss_mib: v[3] / 1024.0,
        lines,
        reader_cpu,
    }
}

/// Installs zongji (npm) into `dir/zongji` once, with the bench's driver script.
fn zongji_dir(dir: &Path) -> Result<(), String> {
    let z = dir.join("zongji");
    for tool in ["node", "npm"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return Err(format!("{tool} not found (apt-get install nodejs npm)"));
        }
    }
    std::fs::create_dir_all(&z).map_err(|e| e.to_string())?;
    if !z.join("node_modules/zongji/package.json").exists() {
        let st = Command::new("npm")
            .args([
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "zongji@0.5.1",
            ])
            .current_dir(&z)
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            return Err("npm install zongji@0.5.1 failed".into());
        }
    }
    std::fs::copy(
        repo().join("benches/peers/zongji_count.js"),
        z.join("zongji_count.js"),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// `mariadb-binlog --read-from-remote-server` over the range `r`, with `extra` options.
fn mariadb_binlog(port: u16, r: &Range, extra: &[&str]) -> Command {
    let mut c = Command::new("mariadb-binlog");
    c.arg("--read-from-remote-server")
        .args(extra)
        .arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg("--user=root")
        .arg(format!("--start-position={}", r.start))
        .arg(format!("--stop-position={}", r.end))
        .arg(&r.file);
    c
}

/// A peer's run over the range `r`, its output to stdout.
fn peer_command(peer: &str, dir: &Path, port: u16, r: &Range) -> Command {
    match peer {
        "mariadb-binlog" => mariadb_binlog(port, r, &["-v"]),
        _ => {
            let mut c = Command::new("node");
            c.arg(dir.join("zongji/zongji_count.js"))
                .arg("127.0.0.1")
                .arg(port.to_string())
                .arg("cdc")
                .arg("cdc")
                .arg(&r.file)
                .arg(r.start.to_string())
                .arg(r.end.to_string());
            c
        }
    }
}

fn sh(cmd: &mut Command) {
    let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed");
}

async fn master_status(c: &mut mysql_async::Conn) -> (String, u64) {
    let r: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    (r.get(0).unwrap(), r.get(1).unwrap())
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "écho",
    "foxtrot",
    "golf",
    "hôtel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "québec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "x-ray",
    "yankee",
    "zulu",
    "日本語",
    "emoji 🚀",
    "quote\"d",
    "back\\slash",
    "tab\tbed",
    "new\nline",
];

fn words(r: &mut Rng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[r.below(WORDS.len() as u64) as usize]);
    }
    s
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('\'');
    for ch in s.chars() {
        match ch {
            '\'' => o.push_str("''"),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c => o.push(c),
        }
    }
    o.push('\'');
    o
}

const WIDE_DDL: &str = "CREATE TABLE benchwl.wide (
  id BIGINT NOT NULL PRIMARY KEY,
  c_tiny TINYINT, c_small SMALLINT UNSIGNED, c_med MEDIUMINT, c_int INT, c_big BIGINT UNSIGNED,
  c_float FLOAT, c_double DOUBLE,
  c_dec DECIMAL(12,2), c_dec_wide DECIMAL(30,10), c_dec0 DECIMAL(5,0),
  c_date DATE, c_time TIME(3), c_dt DATETIME(6), c_ts TIMESTAMP(6) NULL DEFAULT NULL, c_year YEAR, c_dt0 DATETIME,
  c_char CHAR(16), c_vc VARCHAR(255), c_latin VARCHAR(64) CHARACTER SET latin1, c_text TEXT, c_long LONGTEXT,
  c_bin BINARY(16), c_vbin VARBINARY(64), c_blob BLOB,
  c_enum ENUM('new','paid','shipped','cancelled'), c_set SET('a','b','c','d'),
  c_bit BIT(12), c_json JSON, c_bool BOOLEAN, c_null INT NULL
) DEFAULT CHARSET=utf8mb4";

fn wide_row(id: u64, r: &mut Rng) -> String {
    let hex = |r: &mut Rng, n: usize| -> String {
        (0..n).map(|_| format!("{:02x}", r.below(256))).collect()
    };
    let json = format!(
        "{{\"id\":{id},\"name\":{},\"tags\":[{}],\"price\":{}.{:02},\"nested\":{{\"ok\":{},\"n\":{},\"s\":{}}}}}",
        serde_json::to_string(&words(r, 3)).unwrap(),
        (0..r.below(5))
            .map(|k| format!("\"t{k}\""))
            .collect::<Vec<_>>()
            .join(","),
        r.below(10000),
        r.below(100),
        r.below(2) == 1,
        r.next() as i64 / 1000,
        serde_json::to_string(&words(r, 2)).unwrap(),
    );
    format!(
        "({id},{},{},{},{},{},{},{},{}.{:02},{}.{:010},{},'20{:02}-{:02}-{:02}','{:02}:{:02}:{:02}.{:03}','2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}','2023-{:02}-{:02} {:02}:{:02}:{:02}.{:06}',{},'2022-01-{:02} 10:00:00',{},{},{},{},{},X'{}',X'{}',X'{}','{}','{}',b'{:012b}',{},{},{})",
        r.below(256) as i64 - 128,
        r.below(65536),
        r.below(1 << 23) as i64 - (1 << 22),
        r.next() as i32,
        r.next(),
        (r.below(1_000_000) as f64) / 7.0,
        (r.next() as i64 as f64) / 3.0,
        r.below(10_000_000_000) as i64 - 5_000_000_000,
        r.below(100),
        r.below(1_000_000_000_000_000_000) as i64 - 500_000_000_000_000_000,
        r.below(10_000_000_000),
        r.below(100_000) as i64 - 50_000,
        r.below(100),
        1 + r.below(12),
        1 + r.below(28),
        r.below(24),
        r.below(60),
        r.below(60),
        r.below(1000),
        1 + r.below(12),
        1 + r.below(28),
        r.below(24),
        r.below(60),
        r.below(60),
        r.below(1_000_000),
        1 + r.below(12),
        1 + r.below(28),
        r.below(24),
        r.below(60),
        r.below(60),
        r.below(1_000_000),
        1990 + r.below(60),
        1 + r.below(28),
        lit(&format!("c{}", r.below(1 << 40))),
        lit(&words(r, 8)),
        lit(&format!("latin {} ça va", r.below(1_000_000))),
        lit(&words(r, 20)),
        lit(&words(r, 60)),
        hex(r, 16),
        {
            let n = 8 + r.below(40) as usize;
            hex(r, n)
        },
        {
            let n = 60 + r.below(150) as usize;
            hex(r, n)
        },
        ["new", "paid", "shipped", "cancelled"][r.below(4) as usize],
        ["", "a", "a,b", "b,d", "a,b,c,d"][r.below(5) as usize],
        r.below(4096),
        lit(&json),
        r.below(2),
        if r.below(3) == 0 {
            "NULL".to_string()
        } else {
            r.below(1000).to_string()
        },
    )
}

async fn gen_wide(c: &mut mysql_async::Conn) -> (String, u64, u64) {
    c.query_drop(WIDE_DDL).await.unwrap();
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let (file, start) = master_status(c).await;
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut id = 0;
    while id < WIDE_INSERTS {
        let mut q = String::from("INSERT INTO benchwl.wide VALUES ");
        for k in 0..WIDE_PER_STMT {
            if k > 0 {
                q.push(',');
            }
            q.push_str(&wide_row(id, &mut r));
            id += 1;
        }
        c.query_drop(q).await.unwrap();
    }
    for s in 0..WIDE_UPDATES / WIDE_PER_STMT {
        c.query_drop(format!(
            "UPDATE benchwl.wide SET c_int = c_int + 1, c_vc = CONCAT('u', c_vc), c_dt = c_dt + INTERVAL 1 SECOND, \
             c_json = JSON_SET(c_json, '$.nested.n', {s}), c_dec = c_dec + 1 WHERE id >= {} AND id < {}",
            s * WIDE_PER_STMT,
            (s + 1) * WIDE_PER_STMT
        ))
        .await
        .unwrap();
    }
    let base = WIDE_INSERTS - WIDE_DELETES;
    for s in 0..WIDE_DELETES / WIDE_PER_STMT {
        c.query_drop(format!(
            "DELETE FROM benchwl.wide WHERE id >= {} AND id < {}",
            base + s * WIDE_PER_STMT,
            base + (s + 1) * WIDE_PER_STMT
        ))
        .await
        .unwrap();
    }
    let (efile, end) = master_status(c).await;
    assert_eq!(efile, file, "the wide workload fits one binlog file");
    (file, start, end)
}

fn gen_sysbench(
    port: u16,
    c: &mut mysql_async::Conn,
    rt: &tokio::runtime::Runtime,
) -> (String, u64, u64) {
    let sb = |phase: &str, extra: &[&str]| {
        let mut cmd = Command::new("sysbench");
        cmd.arg("oltp_write_only")
            .arg("--db-driver=mysql")
            .arg("--mysql-host=127.0.0.1")
            .arg(format!("--mysql-port={port}"))
            .arg("--mysql-user=root")
            .arg("--mysql-db=sbtest")
            .arg("--tables=4")
            .arg("--table-size=125000")
            .args(extra)
            .arg(phase)
            .stdout(Stdio::null());
        sh(&mut cmd);
    };
    let (file, start) = rt.block_on(async {
        c.query_drop("DROP DATABASE IF EXISTS sbtest")
            .await
            .unwrap();
        c.query_drop("CREATE DATABASE sbtest").await.unwrap();
        c.query_drop("FLUSH BINARY LOGS").await.unwrap();
        master_status(c).await
    });
    sb("prepare", &[]);
    // 125k transactions of 4 row changes (index update, non-index update, delete, insert);
    // --rand-seed makes the workload repeatable
    sb(
        "run",
        &[
            "--threads=2",
            "--events=125000",
            "--time=0",
            "--rand-seed=42",
            "--report-interval=0",
        ],
    );
    let (efile, end) = rt.block_on(master_status(c));
    assert_eq!(efile, file, "the sysbench workload fits one binlog file");
    (file, start, end)
}

/// The run of `bin` with `cfg` stored the range's end as its position (it ran to the end).
fn assert_ran_to_end(bin: &Path, cfg: &Path, r: &Range, what: &str) {
    let out = Command::new(bin)
        .args(["position", "show", "-c"])
        .arg(cfg)
        .output()
        .expect("position show");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("{}:{}", r.file, r.end)),
        "{what} stopped early: {shown}"
    );
}

/// CPU seconds (user + system) `pid` has used, from `/proc` (0 if it is gone).
fn proc_cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // the fields after the command name (which may hold spaces) in parentheses
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 (the 12th and 13th after the name)
    f.get(11)
        .zip(f.get(12))
        .map(|(u, s)| (u + s) / 100.0)
        .unwrap_or(0.0)
}

/// One Kafka round of `bin` over `r`: a fresh private tansu, an untimed run creating the
/// topics, then the timed run. Returns it with the broker's CPU-s during the timed run.
fn kafka_run(
    bin: &Path,
    cfg: &Path,
    venv: &Path,
    dir: &Path,
    kport: u16,
    r: &Range,
) -> (Measured, f64) {
    let kdir = dir.join("tansu");
    let kafka = |verb: &str| {
        let mut c = Command::new("bash");
        c.arg(repo().join("scripts/kafka.sh")).arg(verb);
        if verb == "start" {
            c.arg(venv).arg(&kdir).arg(kport.to_string());
        } else {
            c.arg(&kdir);
        }
        sh(c.stdout(Stdio::null()).stderr(Stdio::null()));
    };
    kafka("stop");
    let _ = std::fs::remove_dir_all(&kdir);
    kafka("start");
    let run = |cfg: &Path| {
        let mut c = Command::new(bin);
        c.arg("run")
            .arg("-c")
            .arg(cfg)
            .arg("--stop-at")
            .arg(format!("{}:{}", r.file, r.end));
        c
    };
    let reset = || {
        sh(Command::new(bin)
            .args(["position", "reset", "-c"])
            .arg(cfg)
            .stdout(Stdio::null()));
    };
    reset();
    sh(run(cfg).stdout(Stdio::null()).stderr(Stdio::null()));
    reset();
    let pid = std::fs::read_to_string(kdir.join("tansu.pid")).unwrap_or_default();
    let c0 = proc_cpu_s(&pid);
    let m = timed(&run(cfg), false);
    let broker = proc_cpu_s(&pid) - c0;
    assert_ran_to_end(bin, cfg, r, "the Kafka run");
    kafka("stop");
    (m, broker)
}

/// The same allocator as the daemon's (the stream floor below allocates per event).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `BINLOGD_BENCH_STREAM_ONLY=URL FILE START END`: this process, started again by [`main`],
/// reads the range through mysql_async's binlog stream (the replication connection binlogd
/// uses, the same requests) and drops every event: the floor any decoder built on this client
/// pays before decoding anything. Prints the events and bytes received (for runs by hand).
fn stream_only(spec: &str) {
    use futures_util::StreamExt;
    let f: Vec<&str> = spec.split_whitespace().collect();
    let [url, file, start, end] = f[..] else {
        panic!("BINLOGD_BENCH_STREAM_ONLY: URL FILE START END");
    };
    let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = rt.block_on(async {
        let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(url).unwrap())
            .prefer_socket(false);
        let mut c = mysql_async::Conn::new(opts).await.unwrap();
        c.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .unwrap();
        let mut s = c
            .get_binlog_stream(
                mysql_async::BinlogStreamRequest::new(9969)
                    .with_filename(file.as_bytes())
                    .with_pos(start),
            )
            .await
            .unwrap();
        let (mut n, mut bytes) = (0u64, 0u64);
        while let Some(ev) = s.next().await {
            let ev = ev.unwrap();
            n += 1;
            bytes += ev.header().event_size() as u64;
            let pos = ev.header().log_pos() as u64;
            if pos >= end {
                break;
            }
        }
        (n, bytes)
    });
    println!("{} events, {} bytes", events.0, events.1);
}

fn main() {
    if let Ok(spec) = std::env::var("BINLOGD_BENCH_STREAM_ONLY") {
        return stream_only(&spec);
    }
    let port: u16 = std::env::var("BINLOGD_BENCH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3461);
    let rounds: usize = std::env::var("BINLOGD_BENCH_ROUNDS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3);
    let wanted =
        std::env::var("BINLOGD_BENCH_WORKLOADS").unwrap_or_else(|_| "sysbench,wide".into());
    let dir = std::env::var("BINLOGD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/bench-wl"));
    std::fs::create_dir_all(&dir).unwrap();
    let datadir = dir.join("maria");
    // a private server: the shared test servers are not disturbed
    sh(Command::new("bash")
        .arg(repo().join("scripts/mariadb.sh"))
        .arg("start")
        .arg(&datadir)
        .arg(port.to_string())
        .arg("--")
        .arg("--innodb_buffer_pool_size=512M")
        .arg("--max_binlog_size=1073741824"));
    let stop_server = |datadir: &Path| {
        if std::env::var("BINLOGD_KEEP_SERVERS").as_deref() != Ok("1") {
            let _ = Command::new("bash")
                .arg(repo().join("scripts/mariadb.sh"))
                .arg("stop")
                .arg(datadir)
                .status();
        }
    };
    let root_url = format!("mysql://root@127.0.0.1:{port}");
    let cdc = format!("mysql://cdc:cdc@127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt
        .block_on(mysql_async::Conn::new(
            mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&root_url).unwrap())
                .prefer_socket(false),
        ))
        .unwrap();
    let have_logs: Vec<(String, u64)> = rt.block_on(async {
        c.query_map("SHOW BINARY LOGS", |r: mysql_async::Row| {
            (r.get::<String, _>(0).unwrap(), r.get::<u64, _>(1).unwrap())
        })
        .await
        .unwrap()
    });
    let ranges_file = dir.join("ranges.txt");
    let regenerate = std::env::var("BINLOGD_BENCH_REGENERATE").as_deref() == Ok("1");
    let mut ranges: Vec<Range> = if regenerate {
        Vec::new()
    } else {
        std::fs::read_to_string(&ranges_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f[..] {
                    [n, file, s, e] => Some(Range {
                        name: n.into(),
                        file: file.into(),
                        start: s.parse().ok()?,
                        end: e.parse().ok()?,
                    }),
                    _ => None,
                }
            })
            // still on the server, whole
            .filter(|r| have_logs.iter().any(|(f, sz)| *f == r.file && *sz >= r.end))
            .collect()
    };
    for w in wanted.split(',') {
        if ranges.iter().any(|r| r.name == w) {
            continue;
        }
        let t0 = Instant::now();
        let (file, start, end) = match w {
            "sysbench" => gen_sysbench(port, &mut c, &rt),
            "wide" => rt.block_on(async {
                c.query_drop("DROP DATABASE IF EXISTS benchwl")
                    .await
                    .unwrap();
                c.query_drop("CREATE DATABASE benchwl").await.unwrap();
                gen_wide(&mut c).await
            }),
            other => panic!("unknown workload {other}"),
        };
        eprintln!(
            "workload {w}: generated in {:.0}s: {file} {start}..{end} ({:.0} MB)",
            t0.elapsed().as_secs_f64(),
            (end - start) as f64 / 1e6
        );
        ranges.retain(|r| r.name != w);
        ranges.push(Range {
            name: w.into(),
            file,
            start,
            end,
        });
        std::fs::write(
            &ranges_file,
            ranges
                .iter()
                .map(|r| format!("{} {} {} {}\n", r.name, r.file, r.start, r.end))
                .collect::<String>(),
        )
        .unwrap();
    }
    drop(c);

    let mut bins: Vec<(String, PathBuf)> =
        vec![("binlogd".into(), env!("CARGO_BIN_EXE_binlogd").into())];
    if let Ok(extra) = std::env::var("BINLOGD_BENCH_BINS") {
        for e in extra.split(',').filter(|e| !e.is_empty()) {
            let (l, p) = e.split_once('=').expect("BINLOGD_BENCH_BINS: label=path,…");
            bins.push((l.into(), p.into()));
        }
    }
    // peers (issue 16's table): mariadb-binlog's C decoder printing rows as text (`-v`), and
    // zongji (npm, Node.js) rendering each row as JSON; `BINLOGD_BENCH_PEERS` ("" for none)
    let peers_wanted =
        std::env::var("BINLOGD_BENCH_PEERS").unwrap_or_else(|_| "mariadb-binlog,zongji".into());
    let mut peers: Vec<&str> = Vec::new();
    for p in peers_wanted.split(',').filter(|p| !p.is_empty()) {
        match p {
            "mariadb-binlog" => peers.push("mariadb-binlog"),
            "zongji" => match zongji_dir(&dir) {
                Ok(()) => peers.push("zongji"),
                Err(e) => eprintln!("peer zongji skipped: {e}"),
            },
            other => panic!("BINLOGD_BENCH_PEERS: unknown peer {other} (mariadb-binlog, zongji)"),
        }
    }
    let kafka_wanted = std::env::var("BINLOGD_BENCH_KAFKA").unwrap_or_else(|_| "sysbench".into());
    let venv = std::env::var("BINLOGD_TEST_KAFKA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("BINLOGD_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|_| repo().join(".cache"))
                .join("kafka-venv")
        });
    let kport: u16 = std::env::var("BINLOGD_BENCH_KAFKA_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(19461);
    let kafka_ok = venv.join("bin/python").exists();
    if !kafka_wanted.is_empty() && !kafka_ok {
        eprintln!(
            "Kafka runs skipped: no tansu venv at {} (run scripts/install-deps.sh)",
            venv.display()
        );
    }
    let raw_dir = dir.join("raw");
    let mut report = String::new();
    for w in wanted.split(',') {
        let r = ranges.iter().find(|r| r.name == w).unwrap().clone();
        let include = if w == "sysbench" {
            "sbtest.*"
        } else {
            "benchwl.*"
        };
        let cfg = dir.join(format!("{w}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[pipeline]\nname = \"benchwl_{w}\"\n[source]\nurl = \"{cdc}\"\nserver_id = 9961\nname = \"bench\"\n\
                 start = {{ file = \"{}\", pos = {} }}\ninclude = [\"{include}\"]\n\
                 [[sinks.file]]\nname = \"out\"\npath = \"-\"\n[log]\nlevel = \"warn\"\n",
                r.file, r.start
            ),
        )
        .unwrap();
        // the same with the discarding sink: every event rendered, nothing written
        let cfg_null = dir.join(format!("{w}-null.toml"));
        std::fs::write(
            &cfg_null,
            std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("path = \"-\"", "path = \"/dev/null\""),
        )
        .unwrap();
        // the same into Kafka (a private broker, 3 partitions, lz4)
        let kafka = kafka_ok && kafka_wanted.split(',').any(|k| k == w);
        let cfg_kafka = dir.join(format!("{w}-kafka.toml"));
        std::fs::write(
            &cfg_kafka,
            std::fs::read_to_string(&cfg).unwrap().replace(
                "[[sinks.file]]\nname = \"out\"\npath = \"-\"\n",
                &format!(
                    "[[sinks.kafka]]\nname = \"k\"\nbrokers = \"127.0.0.1:{kport}\"\n\
                     topic = \"bench.{{db}}.{{table}}\"\ncreate_topics = true\npartitions = 3\n\
                     [sinks.kafka.producer]\n\"compression.type\" = \"lz4\"\n"
                ),
            ),
        )
        .unwrap();
        // the same without binlogd's headers (`headers = false`: value and key only)
        let cfg_kafka_bare = dir.join(format!("{w}-kafka-bare.toml"));
        std::fs::write(
            &cfg_kafka_bare,
            std::fs::read_to_string(&cfg_kafka)
                .unwrap()
                .replace("partitions = 3\n", "partitions = 3\nheaders = false\n")
                .replace("benchwl_", "benchwlbare_"),
        )
        .unwrap();
        // (label, per round): raw, then per build its run into a counting reader and its run
        // into the discarding sink
        // ("stream": mysql_async's stream alone, events dropped: see [`stream_only`])
        let mut res: Vec<(String, Vec<Measured>)> =
            vec![("raw".into(), Vec::new()), ("stream".into(), Vec::new())];
        const FIRST_BIN: usize = 2;
        for (l, _) in &bins {
            res.push((l.clone(), Vec::new()));
            res.push((format!("{l}>null"), Vec::new()));
        }
        let first_peer = res.len();
        for p in &peers {
            res.push((p.to_string(), Vec::new()));
        }
        // (label, per round: binlogd's run, the broker's CPU-s)
        let mut kres: Vec<(String, Vec<(Measured, f64)>)> = Vec::new();
        let mut rows: Option<u64> = None;
        for round in 0..rounds {
            let _ = std::fs::remove_dir_all(&raw_dir);
            std::fs::create_dir_all(&raw_dir).unwrap();
            let raw = mariadb_binlog(
                port,
                &r,
                &["--raw", &format!("--result-file={}/", raw_dir.display())],
            );
            // alternate the order so neither side always runs first
            let mut order: Vec<usize> = (0..res.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for k in order {
                let m = if k == 0 {
                    timed(&raw, false)
                } else if k == 1 {
                    let mut c = Command::new(std::env::current_exe().unwrap());
                    c.env(
                        "BINLOGD_BENCH_STREAM_ONLY",
                        format!("{cdc} {} {} {}", r.file, r.start, r.end),
                    );
                    timed(&c, false)
                } else if k >= first_peer {
                    let peer = peers[k - first_peer];
                    let m = timed(&peer_command(peer, &dir, port, &r), true);
                    // zongji prints a line per row change, like binlogd
                    if peer == "zongji" {
                        if let Some(n) = rows {
                            assert_eq!(n, m.lines, "{w}: zongji delivers the same row changes");
                        }
                    }
                    m
                } else {
                    let bin = &bins[(k - FIRST_BIN) / 2].1;
                    let discard = (k - FIRST_BIN) % 2 == 1;
                    let cfg = if discard { &cfg_null } else { &cfg };
                    sh(Command::new(bin)
                        .args(["position", "reset", "-c"])
                        .arg(cfg)
                        .stdout(Stdio::null()));
                    let mut run = Command::new(bin);
                    run.arg("run")
                        .arg("-c")
                        .arg(cfg)
                        .arg("--stop-at")
                        .arg(format!("{}:{}", r.file, r.end));
                    let m = timed(&run, !discard);
                    if discard {
                        assert_ran_to_end(bin, cfg, &r, &format!("{w}: the discarding run"));
                    } else {
                        match rows {
                            None => rows = Some(m.lines),
                            Some(n) => assert_eq!(
                                n, m.lines,
                                "{w}: every run delivers the same row changes"
                            ),
                        }
                    }
                    m
                };
                res[k].1.push(m);
            }
            if kafka {
                // per build with headers (the default); this build also with `headers = false`
                // (older builds in BINLOGD_BENCH_BINS may not know the key)
                let runs: Vec<(usize, bool)> = std::iter::once((0, true))
                    .chain((0..bins.len()).map(|b| (b, false)))
                    .collect();
                kres.resize_with(runs.len(), Default::default);
                let mut order: Vec<usize> = (0..runs.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for k in order {
                    let (b, bare) = runs[k];
                    kres[k].0 = format!("{}>kafka{}", bins[b].0, if bare { "-bare" } else { "" });
                    let cfg = if bare { &cfg_kafka_bare } else { &cfg_kafka };
                    let run = kafka_run(&bins[b].1, cfg, &venv, &dir, kport, &r);
                    kres[k].1.push(run);
                }
            }
        }
        let rows = rows.unwrap_or(0) as f64;
        let _ = std::fs::remove_dir_all(&raw_dir);
        let mut s = format!(
            "\n{w}: {} row changes, {:.0} MB of binlog ({} {}..{}), {rounds} interleaved rounds; MariaDB on :{port}, same 2-core machine\n",
            rows as u64,
            (r.end - r.start) as f64 / 1e6,
            r.file,
            r.start,
            r.end
        );
        s += &format!(
            "{:<10} {:>5} {:>8} {:>11} {:>8} {:>9} {:>9} {:>8} {:>9}\n",
            "what",
            "round",
            "wall s",
            "rows/s",
            "CPU s",
            "CPU µs/row",
            "RSS MiB",
            "× raw",
            "reader s"
        );
        for round in 0..rounds {
            let raw_rate = rows / res[0].1[round].wall;
            for (l, ms) in &res {
                let m = &ms[round];
                s += &format!(
                    "{:<10} {:>5} {:>8.2} {:>11.0} {:>8.2} {:>9.2} {:>9.1} {:>8.2} {:>9}\n",
                    l,
                    round + 1,
                    m.wall,
                    rows / m.wall,
                    m.cpu,
                    m.cpu / rows * 1e6,
                    m.rss_mib,
                    rows / m.wall / raw_rate,
                    if m.reader_cpu > 0.0 {
                        format!("{:.2}", m.reader_cpu)
                    } else {
                        String::new()
                    }
                );
            }
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        s += "medians:\n";
        let raw_med = med(res[0].1.iter().map(|m| rows / m.wall).collect());
        for (l, ms) in &res {
            let rate = med(ms.iter().map(|m| rows / m.wall).collect());
            let ratio = med(ms
                .iter()
                .zip(&res[0].1)
                .map(|(m, raw)| raw.wall / m.wall)
                .collect());
            let reader = med(ms.iter().map(|m| m.reader_cpu).collect());
            s += &format!(
                "{:<10} {:>11.0} rows/s  {:>6.2} CPU-s  {:>6.2} CPU µs/row  {:>6.1} MiB  {:>5.2}× raw (raw median {:.0} rows/s){}\n",
                l,
                rate,
                med(ms.iter().map(|m| m.cpu).collect()),
                med(ms.iter().map(|m| m.cpu / rows * 1e6).collect()),
                med(ms.iter().map(|m| m.rss_mib).collect()),
                ratio,
                raw_med,
                if reader > 0.0 {
                    format!("  reader {reader:.2} CPU-s")
                } else {
                    String::new()
                }
            );
        }
        for (l, runs) in &kres {
            s += &format!(
                "{:<13} {:>11.0} rows/s  {:>6.2} CPU-s ({:.2} µs/row)  {:>6.1} MiB  broker {:.2} CPU-s  (rounds: {})\n",
                l,
                med(runs.iter().map(|(m, _)| rows / m.wall).collect()),
                med(runs.iter().map(|(m, _)| m.cpu).collect()),
                med(runs.iter().map(|(m, _)| m.cpu / rows * 1e6).collect()),
                med(runs.iter().map(|(m, _)| m.rss_mib).collect()),
                med(runs.iter().map(|(_, b)| *b).collect()),
                runs.iter()
                    .map(|(m, _)| format!("{:.0}k", rows / m.wall / 1e3))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        eprint!("{s}");
        report += &s;
    }
    stop_server(&datadir);
    println!("{report}");
}
