//! Redis: connections to the shared server and private redis-server children.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A connection to `url`, retried for up to 20 s (a server that is starting).
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

/// Whether `key` exists.
pub fn redis_exists(r: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(r).unwrap() == 1
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
