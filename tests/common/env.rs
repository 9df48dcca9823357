//! Where the test servers are: the URLs scripts/test-servers.sh exports (BINLOGD_TEST_*), the
//! two flavors, and a panic naming the fix when they are not set.

use mysql_async::Opts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

pub const BOTH: [Flavor; 2] = [Flavor::MariaDb, Flavor::MySql];

/// A required BINLOGD_TEST_* variable (panics with how to set it).
pub fn env(name: &str) -> String {
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

pub fn redis_url() -> String {
    env("BINLOGD_TEST_REDIS_URL")
}

pub fn kafka_brokers() -> String {
    env("BINLOGD_TEST_KAFKA_BROKERS")
}

/// A per-test working directory under BINLOGD_TEST_DIR (emptied first).
pub fn workdir(name: &str) -> std::path::PathBuf {
    let base = std::env::var("BINLOGD_TEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let d = base.join("work").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A replica id per test and flavor (FNV-1a of both), so concurrent tests never clash.
pub fn server_id_for(name: &str, f: Flavor) -> u32 {
    let mut h: u32 = 2166136261;
    for b in name.bytes().chain(f.tag().bytes()) {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    1000 + h % 1_000_000
}

/// A number unique to this moment (nanoseconds since the epoch): topic names and key
/// prefixes that earlier runs cannot have used.
pub fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// Whether something listens on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_millis(500),
    )
    .is_ok()
}

/// A multi-threaded runtime for a test's SQL.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A current-thread runtime, for writer threads.
pub fn rt_small() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `f` every 200 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for: {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// One `#[test]` per flavor for a test function taking the flavor first:
/// `both_flavors!(crash_test: crash_kill9_mariadb(), crash_kill9_mysql());` defines
/// `crash_kill9_mariadb` calling `crash_test(Flavor::MariaDb)` and `crash_kill9_mysql` calling
/// `crash_test(Flavor::MySql)`; arguments in the parentheses follow the flavor.
#[allow(unused_macros)]
macro_rules! both_flavors {
    ($f:ident: $maria:ident($($a:expr),*), $mysql:ident($($b:expr),*)) => {
        #[test]
        fn $maria() {
            $f(Flavor::MariaDb $(, $a)*);
        }
        #[test]
        fn $mysql() {
            $f(Flavor::MySql $(, $b)*);
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_flavors;
