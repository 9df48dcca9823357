//! The `binlogd` binary under test: one spawn builder ([`Daemon::builder`]) for `binlogd run`
//! (config file, arguments, environment, log capture, position reset), the daemon handle
//! (wait for events, ready, exit; stop, kill, restart), one-shot verbs, the config every
//! streaming test starts from, and the admin endpoint.

use super::env::{server_id_for, Flavor};
use super::events::read_events;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `binlogd run`. Its files live in one directory: `binlogd.toml` (the config),
/// `binlogd.log` (stderr, appended across restarts) and `out.jsonl` (the file sink of
/// [`config`]). Dropping it kills the process.
pub struct Daemon {
    pub child: Child,
    pub out: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
}

/// How to start `binlogd run` in a directory; [`Daemon::builder`].
pub struct DaemonBuilder {
    dir: PathBuf,
    config: Option<String>,
    reset: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    rust_log: Option<String>,
}

impl DaemonBuilder {
    /// Writes `text` to `<dir>/binlogd.toml` before starting (without it, the file already
    /// there is used as it is).
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.to_string());
        self
    }
    /// `binlogd position reset` first: a fresh pipeline that forgets what an earlier run of the
    /// test stored.
    pub fn reset_position(mut self) -> Self {
        self.reset = true;
        self
    }
    /// Extra arguments after `run -c <config>`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
    /// Extra environment variables (these win over the default `RUST_LOG`).
    pub fn envs(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }
    /// Leaves `RUST_LOG` as the test process has it, instead of `binlogd=debug`.
    pub fn inherit_log_level(mut self) -> Self {
        self.rust_log = None;
        self
    }
    /// Starts it.
    pub fn spawn(self) -> Daemon {
        let config = self.dir.join("binlogd.toml");
        if let Some(text) = &self.config {
            std::fs::write(&config, text).unwrap();
        }
        if self.reset {
            let (code, out) = run_binlogd(&["position", "reset", "-c", config.to_str().unwrap()]);
            assert_eq!(code, 0, "position reset: {out}");
        }
        let log = self.dir.join("binlogd.log");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut env: Vec<(&str, &str)> = Vec::new();
        if let Some(level) = &self.rust_log {
            env.push(("RUST_LOG", level));
        }
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Daemon {
            child: spawn_run(&config, &log, &args, &env),
            out: self.dir.join("out.jsonl"),
            log,
            config,
        }
    }
}

/// `binlogd run -c CONFIG ARGS…` with stderr appended to `log`.
fn spawn_run(config: &Path, log: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_binlogd"))
        .args(["run", "-c"])
        .arg(config)
        .args(args)
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

impl Daemon {
    /// The builder for a daemon whose files live in `dir`.
    pub fn builder(dir: &Path) -> DaemonBuilder {
        DaemonBuilder {
            dir: dir.to_path_buf(),
            config: None,
            reset: false,
            args: Vec::new(),
            env: Vec::new(),
            rust_log: Some("binlogd=debug".into()),
        }
    }

    /// Writes `config` to the workdir, resets the stored position and starts `binlogd run`.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Daemon::builder(dir).config(config).reset_position().spawn()
    }

    /// `binlogd run -c <dir>/binlogd.toml ARGS…` (the config as written, no position reset).
    pub fn run_with(dir: &Path, args: &[&str]) -> Daemon {
        Daemon::builder(dir).args(args).spawn()
    }

    /// Writes `config` and starts `binlogd run` with extra environment variables (no position
    /// reset).
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::builder(dir).config(config).envs(env).spawn()
    }

    /// Starts `binlogd run -c <config>` again (no extra arguments or environment), appending to
    /// the same log.
    pub fn restart(&mut self) {
        self.child = spawn_run(
            &self.config,
            &self.log,
            &[],
            &[("RUST_LOG", "binlogd=debug")],
        );
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
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

    /// At least `n` events (within 30 s), then whatever else arrives within `quiet`.
    pub fn settled_events(&mut self, n: usize, quiet: Duration) -> Vec<Value> {
        self.wait_events(n, Duration::from_secs(30));
        std::thread::sleep(quiet);
        self.events()
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

    /// The whole log ("" before it exists).
    pub fn log_all(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last 60 lines, for failure messages.
    pub fn log_text(&self) -> String {
        let s = self.log_all();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// How often `needle` occurs in the log.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_all().matches(needle).count()
    }

    /// Waits until the log contains `needle` (panics with the log after `timeout`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let t0 = Instant::now();
        while !self.log_all().contains(needle) {
            assert!(
                t0.elapsed() < timeout,
                "no {needle:?} in the log after {timeout:?}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// The admin endpoint's address, from the "admin endpoint listening" log line (waits for
    /// it: the daemon is up; panics if it exits first).
    pub fn admin_addr(&mut self) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(a) = self
                .log_all()
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

    /// A metric's value from the daemon's `/metrics` (panics if it is not there).
    pub fn metric(&mut self, name: &str) -> f64 {
        let addr = self.admin_addr();
        let (_, body) = http_get(&addr, "/metrics");
        metric(&body, name).unwrap_or_else(|| panic!("{name} not in /metrics"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config streaming `db.*` from `f` to a JSON-lines file in `dir`, starting at `start`.
pub fn config(
    f: Flavor,
    name: &str,
    db: &str,
    start: &(String, u64),
    dir: &Path,
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
    dir: &Path,
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

/// A `[[sinks.kafka]]` section named "events" (topics created) with `extra` lines.
pub fn kafka_sink(brokers: &str, topic: &str, extra: &str) -> String {
    format!(
        "\n[[sinks.kafka]]\nname = \"events\"\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ncreate_topics = true\n{extra}\n"
    )
}

/// `binlogd ARGS…` to completion: (exit code, stdout + stderr).
pub fn run_binlogd(args: &[&str]) -> (i32, String) {
    run_binlogd_env(args, &[])
}

/// As [`run_binlogd`], with extra environment variables.
pub fn run_binlogd_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_binlogd"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run binlogd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs binlogd; a `run` that does not stop within `secs` is killed (and reported as -9).
pub fn run_binlogd_for(args: &[&str], secs: u64) -> (i32, String) {
    let dir = std::env::temp_dir();
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = dir.join(format!("binlogd-run-for-{}-{n}.out", std::process::id()));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_binlogd"))
        .args(args)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            break -9;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    (code, text)
}

/// `GET path` over HTTP/1.1 at `addr`: the whole response.
fn get(
    addr: &str,
    path: &str,
    connect: Option<Duration>,
    read: Duration,
) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = match connect {
        Some(t) => {
            let a = addr
                .parse()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            std::net::TcpStream::connect_timeout(&a, t)?
        }
        None => std::net::TcpStream::connect(addr)?,
    };
    s.set_read_timeout(Some(read))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `GET path` on the daemon's admin endpoint: (status, body); panics if it cannot connect.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let text =
        get(addr, path, None, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{addr}: {e}"));
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

/// As [`http_get`] with 2 s timeouts, `None` instead of a panic (an endpoint that may hang).
pub fn try_http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let secs2 = Duration::from_secs(2);
    let text = get(addr, path, Some(secs2), secs2).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
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
