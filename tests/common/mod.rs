//! Test harness: real servers started by scripts/test-servers.sh (URLs in BINLOGD_TEST_* env),
//! the real `binlogd` binary, and its JSON-lines output read back.
#![allow(dead_code)]

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

pub const BOTH: [Flavor; 2] = [Flavor::MariaDb, Flavor::MySql];

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `bash scripts/test.sh` (it starts the servers), or source target/ts/env")
    })
}

impl Flavor {
    pub fn tag(self) -> &'static str {
        match self {
            Flavor::MariaDb => "maria",
            Flavor::MySql => "mysql",
        }
    }
    pub fn root_url(self) -> String {
        env(match self {
            Flavor::MariaDb => "BINLOGD_TEST_MARIADB_URL",
            Flavor::MySql => "BINLOGD_TEST_MYSQL_URL",
        })
    }
    pub fn cdc_url(self) -> String {
        env(match self {
            Flavor::MariaDb => "BINLOGD_TEST_MARIADB_CDC_URL",
            Flavor::MySql => "BINLOGD_TEST_MYSQL_CDC_URL",
        })
    }
    pub fn port(self) -> u16 {
        Opts::from_url(&self.root_url())
            .map(|o| o.tcp_port())
            .unwrap_or(3306)
    }
}

pub async fn root(f: Flavor) -> Conn {
    let opts = mysql_async::OptsBuilder::from_opts(Opts::from_url(&f.root_url()).unwrap())
        .prefer_socket(false);
    let mut c = Conn::new(opts).await.expect("connect as root");
    c.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
        .await
        .unwrap();
    c
}

/// A fresh database for one test.
pub async fn fresh_db(c: &mut Conn, name: &str) {
    c.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
        .await
        .unwrap();
    c.query_drop(format!(
        "CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8mb4"
    ))
    .await
    .unwrap();
}

/// The server's current binlog end: a start position for a daemon that should see only what
/// the test writes next.
pub async fn binlog_end(c: &mut Conn, f: Flavor) -> (String, u64) {
    let q = match f {
        Flavor::MariaDb => "SHOW MASTER STATUS",
        Flavor::MySql => "SHOW BINARY LOG STATUS",
    };
    let row: mysql_async::Row = c.query_first(q).await.unwrap().unwrap();
    (row.get(0).unwrap(), row.get(1).unwrap())
}

pub fn workdir(name: &str) -> PathBuf {
    let base = std::env::var("BINLOGD_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let d = base.join("work").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn server_id_for(name: &str, f: Flavor) -> u32 {
    let mut h: u32 = 2166136261;
    for b in name.bytes().chain(f.tag().bytes()) {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    1000 + h % 1_000_000
}

pub struct Daemon {
    pub child: Child,
    pub out: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// Writes `config` to the workdir and starts `binlogd run`.
    pub fn start(dir: &std::path::Path, config: &str) -> Daemon {
        let cfg = dir.join("binlogd.toml");
        std::fs::write(&cfg, config).unwrap();
        // a fresh pipeline: forget what an earlier run of this test stored
        let (code, out) = run_binlogd(&["position", "reset", "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 0, "position reset: {out}");
        Daemon::run_with(dir, &[])
    }

    /// `binlogd run -c <dir>/binlogd.toml ARGS…` (the config as written, no position reset).
    pub fn run_with(dir: &std::path::Path, args: &[&str]) -> Daemon {
        let config = dir.join("binlogd.toml");
        let log = dir.join("binlogd.log");
        let child = spawn_run(&config, &log, args, &[]);
        Daemon {
            child,
            out: dir.join("out.jsonl"),
            log,
            config,
        }
    }

    pub fn restart(&mut self) {
        self.child = spawn_run(&self.config, &self.log, &[], &[]);
    }

    pub fn events(&self) -> Vec<Value> {
        read_events(&self.out)
    }

    /// Waits until at least `n` events are in the output (panics with the log on timeout or
    /// if the daemon exits).
    pub fn wait_events(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let ev = self.events();
            if ev.len() >= n {
                return ev;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "binlogd exited ({st}) with {} of {n} events; log:\n{}",
                    ev.len(),
                    self.log_text()
                );
            }
            if t0.elapsed() > timeout {
                panic!(
                    "timed out with {} of {n} events; log:\n{}",
                    ev.len(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until binlogd exits on its own; returns its exit code (panics with `what` and the
    /// log if it is still running after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration, what: &str) -> Option<i32> {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                t0.elapsed() < timeout,
                "{what}: binlogd still running after {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("binlogd did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `binlogd run -c CONFIG ARGS…` with debug logs appended to `log`.
fn spawn_run(
    config: &std::path::Path,
    log: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_binlogd"))
        .args(["run", "-c"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "binlogd=debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .expect("spawn binlogd")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_events(path: &std::path::Path) -> Vec<Value> {
    let s = match std::fs::read(path) {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    // only complete lines (the daemon may be mid-write)
    let end = s
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    s[..end]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "bad JSON line ({e}): {}",
                    String::from_utf8_lossy(&l[..l.len().min(300)])
                )
            })
        })
        .collect()
}

/// A config streaming `db.*` from `f` to a JSON-lines file in `dir`, starting at `start`.
pub fn config(
    f: Flavor,
    name: &str,
    db: &str,
    start: &(String, u64),
    dir: &std::path::Path,
    extra_source: &str,
) -> String {
    config_for(&f.cdc_url(), f, name, db, start, dir, extra_source)
}

/// As [`config`], for the server at `cdc_url`.
pub fn config_for(
    cdc_url: &str,
    f: Flavor,
    name: &str,
    db: &str,
    start: &(String, u64),
    dir: &std::path::Path,
    extra_source: &str,
) -> String {
    let pipeline = format!("{name}_{}", f.tag());
    format!(
        r#"
[source]
url = "{url}"
server_id = {sid}
name = "test"
start = {{ file = "{file}", pos = {pos} }}
include = ["{db}.*"]
heartbeat = "1s"
read_timeout = "5s"
reconnect_backoff_initial = "100ms"
reconnect_backoff_max = "1s"
{extra_source}

[pipeline]
name = "{name}"

[checkpoint]
interval = "200ms"

[admin]
listen = "127.0.0.1:0"

[[sinks.file]]
name = "out"
path = "{out}"

[log]
format = "json"
"#,
        url = cdc_url,
        sid = server_id_for(name, f),
        file = start.0,
        pos = start.1,
        out = dir.join("out.jsonl").display(),
        name = pipeline,
    )
}

pub fn run_binlogd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_binlogd"))
        .args(args)
        .output()
        .expect("run binlogd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub async fn root_at(url: &str) -> Conn {
    let opts =
        mysql_async::OptsBuilder::from_opts(Opts::from_url(url).unwrap()).prefer_socket(false);
    let mut c = Conn::new(opts).await.expect("connect as root");
    c.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
        .await
        .unwrap();
    c
}

/// A private server instance for tests that change server-wide state (purge, settings).
pub struct PrivateServer {
    pub flavor: Flavor,
    pub port: u16,
    data: PathBuf,
}

impl PrivateServer {
    pub fn start(f: Flavor, dir: &std::path::Path, port: u16, opts: &[&str]) -> PrivateServer {
        let scripts = env("BINLOGD_TEST_SCRIPTS");
        let data = dir.join("data");
        let mut cmd = Command::new("bash");
        match f {
            Flavor::MariaDb => cmd.arg(format!("{scripts}/mariadb.sh")).arg("start"),
            Flavor::MySql => cmd
                .arg(format!("{scripts}/mysql.sh"))
                .arg("start")
                .arg(env("BINLOGD_MYSQL_DIR")),
        };
        // a private tmpdir: concurrent mariadb-install-db runs collide on /tmp/#sql-temptable-*
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let st = cmd
            .env("TMPDIR", &tmp)
            .arg(&data)
            .arg(port.to_string())
            .arg("--")
            .args(opts)
            .status()
            .unwrap();
        assert!(st.success(), "starting a private {f:?} on port {port}");
        PrivateServer {
            flavor: f,
            port,
            data,
        }
    }
    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }
    pub fn cdc_url(&self) -> String {
        format!("mysql://cdc:cdc@127.0.0.1:{}", self.port)
    }
    fn script(&self) -> (String, Vec<String>) {
        let scripts = env("BINLOGD_TEST_SCRIPTS");
        match self.flavor {
            Flavor::MariaDb => (format!("{scripts}/mariadb.sh"), vec![]),
            Flavor::MySql => (
                format!("{scripts}/mysql.sh"),
                vec![env("BINLOGD_MYSQL_DIR")],
            ),
        }
    }
    /// The server process id (from the datadir's pid file).
    pub fn pid(&self) -> u32 {
        let mut pidfile = self.data.join("mysqld.pid");
        if !pidfile.exists() {
            pidfile = self.data.join("mysql.pid");
        }
        std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()))
            .trim()
            .parse()
            .unwrap()
    }
    /// Clean shutdown (SIGTERM, waits).
    pub fn stop(&self) {
        let (script, _) = self.script();
        let st = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.data)
            .status()
            .unwrap();
        assert!(st.success(), "stopping the private server");
    }
    /// `kill -9` and wait until the process is gone.
    pub fn kill9(&self) {
        let pid = self.pid();
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let t0 = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(t0.elapsed() < Duration::from_secs(30), "server did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// Sends a signal (e.g. "STOP", "CONT") to the server process.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }
    /// Starts the server again on its existing datadir.
    pub fn start_again(&self, opts: &[&str]) {
        let (script, pre) = self.script();
        let st = Command::new("bash")
            .arg(script)
            .arg("start")
            .args(pre)
            .arg(&self.data)
            .arg(self.port.to_string())
            .arg("--")
            .args(opts)
            .status()
            .unwrap();
        assert!(st.success(), "restarting the private server");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let scripts = env("BINLOGD_TEST_SCRIPTS");
        let script = match self.flavor {
            Flavor::MariaDb => "mariadb.sh",
            Flavor::MySql => "mysql.sh",
        };
        let _ = Command::new("bash")
            .arg(format!("{scripts}/{script}"))
            .arg("stop")
            .arg(&self.data)
            .status();
    }
}

pub fn redis_url() -> String {
    env("BINLOGD_TEST_REDIS_URL")
}

pub fn redis_conn(url: &str) -> redis::Connection {
    let c = redis::Client::open(url).unwrap();
    let t0 = Instant::now();
    loop {
        match c.get_connection() {
            Ok(c) => return c,
            Err(e) if t0.elapsed() > Duration::from_secs(20) => panic!("redis {url}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A private redis-server child process with append-only persistence (fsync always), so a
/// `kill -9` keeps the keys it confirmed: tests can restart it and see what is still there.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    password: Option<String>,
}

impl PrivateRedis {
    pub fn start(dir: &std::path::Path, port: u16) -> PrivateRedis {
        Self::start_with_password(dir, port, None)
    }

    pub fn start_with_password(
        dir: &std::path::Path,
        port: u16,
        password: Option<&str>,
    ) -> PrivateRedis {
        let mut r = PrivateRedis {
            port,
            dir: dir.join("redis"),
            child: None,
            password: password.map(|p| p.to_string()),
        };
        std::fs::create_dir_all(&r.dir).unwrap();
        r.spawn();
        r
    }
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass".to_string(), p.clone()]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let _ = redis_conn(&self.url());
    }
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }
    pub fn conn(&self) -> redis::Connection {
        redis_conn(&self.url())
    }
    /// SIGKILL (keys confirmed so far survive in the AOF).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn kafka_brokers() -> String {
    env("BINLOGD_TEST_KAFKA_BROKERS")
}

/// One consumed Kafka message.
#[derive(Debug, Clone)]
pub struct KMsg {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: std::collections::BTreeMap<String, String>,
}

impl KMsg {
    pub fn json(&self) -> Option<Value> {
        self.value
            .as_ref()
            .map(|v| serde_json::from_slice(v).unwrap())
    }
    /// `(file, pos, row, tombstone)` from the headers.
    pub fn coord(&self) -> (String, u64, u64, bool) {
        (
            self.headers["binlogd.file"].clone(),
            self.headers["binlogd.pos"].parse().unwrap(),
            self.headers["binlogd.row"].parse().unwrap(),
            self.headers.contains_key("binlogd.tombstone"),
        )
    }
}

/// Every message of `topic` now: all partitions assigned from the beginning (consumer groups
/// are slow with the test broker), read until every partition reported its end and nothing
/// came for a second (tansu 0.6 reports high watermarks per record batch, so the end is not
/// trusted alone). An unknown topic yields nothing.
pub fn consume_all(brokers: &str, topic: &str) -> Vec<KMsg> {
    consume_all_with(brokers, topic, &[])
}

/// As [`consume_all`], with extra client properties (e.g. TLS).
pub fn consume_all_with(brokers: &str, topic: &str, props: &[(&str, &str)]) -> Vec<KMsg> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("group.id", "binlogd-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for (k, v) in props {
        cc.set(*k, *v);
    }
    let c: BaseConsumer = cc.create().unwrap();
    let md = match c.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut out = Vec::new();
    if parts.is_empty() {
        return out;
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let t0 = Instant::now();
    let mut eof = std::collections::HashSet::new();
    let mut quiet = Instant::now();
    while eof.len() < parts.len() || quiet.elapsed() < Duration::from_secs(1) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "consuming {topic} timed out"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet = Instant::now();
                let mut headers = std::collections::BTreeMap::new();
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        headers.insert(
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(KMsg {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()),
                    value: m.payload().map(|v| v.to_vec()),
                    headers,
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// `GET path` on the daemon's admin endpoint: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

impl Daemon {
    /// The admin endpoint's address, from the "admin endpoint listening" log line.
    pub fn admin_addr(&mut self) -> String {
        let t0 = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(a) = log
                .lines()
                .rev()
                .filter(|l| l.contains("admin endpoint listening"))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find_map(|v| v["addr"].as_str().map(|s| s.to_string()))
            {
                return a;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("binlogd exited ({st}); log:\n{}", self.log_text());
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no admin endpoint");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `binlogd run` with extra environment variables.
    pub fn start_with_env(dir: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let cfg = dir.join("binlogd.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("binlogd.log");
        Daemon {
            child: spawn_run(&cfg, &log, &[], env),
            out: dir.join("out.jsonl"),
            log,
            config: cfg,
        }
    }
}

/// A metric's value from Prometheus text (`name{labels} value`), matching a line prefix.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A process's memory from /proc: `VmRSS` (now) or `VmHWM` (peak), in MiB.
pub fn proc_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

pub fn vm_rss_mib(pid: u32) -> f64 {
    proc_mib(pid, "VmRSS")
}

pub fn vm_hwm_mib(pid: u32) -> f64 {
    proc_mib(pid, "VmHWM")
}
