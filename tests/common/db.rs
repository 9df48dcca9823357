//! SQL helpers: connections, fresh databases and tables, the binlog end, the stored
//! checkpoint, a table's state, and private server instances.

use super::env::{env, Flavor};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A root session on the shared server of flavor `f` (utf8mb4, UTC).
pub async fn root(f: Flavor) -> Conn {
    root_at(&f.root_url()).await
}

/// A root session on the server at `url` (utf8mb4, UTC).
pub async fn root_at(url: &str) -> Conn {
    let opts =
        mysql_async::OptsBuilder::from_opts(Opts::from_url(url).unwrap()).prefer_socket(false);
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

/// A fresh database `db` holding `tables`, each given as `name (columns…) [options]` and
/// created as `` `db`.name ``.
pub async fn fresh_tables(c: &mut Conn, db: &str, tables: &[&str]) {
    fresh_db(c, db).await;
    for t in tables {
        c.query_drop(format!("CREATE TABLE `{db}`.{t}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE TABLE `{db}`.{t}: {e}"));
    }
}

/// [`fresh_tables`], then the binlog end: the start position for a daemon that should see
/// only what the test writes next.
pub async fn fresh_table(c: &mut Conn, f: Flavor, db: &str, tables: &[&str]) -> (String, u64) {
    fresh_tables(c, db, tables).await;
    binlog_end(c, f).await
}

/// Runs `qs` in order, panicking with the statement on an error. A prepared XA transaction of
/// a session that just closed may take a moment to be detached (MariaDB): an `XA …`
/// statement answered with XAER_NOTA is retried for up to 10 s.
pub async fn exec_all(c: &mut Conn, qs: &[String]) {
    for q in qs {
        let t0 = Instant::now();
        loop {
            match c.query_drop(q).await {
                Ok(()) => break,
                Err(mysql_async::Error::Server(e))
                    if e.code == 1397
                        && q.starts_with("XA ")
                        && t0.elapsed() < Duration::from_secs(10) =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{q}: {e}"),
            }
        }
    }
}

/// One statement on a new root session to the server at `url`.
pub async fn exec(url: &str, sql: &str) {
    let mut c = root_at(url).await;
    c.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
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

/// The position stored for `pipeline` in `binlogd.checkpoint`, if any.
pub async fn stored_position(c: &mut Conn, pipeline: &str) -> Option<(String, u64)> {
    c.exec_first(
        "SELECT binlog_file, binlog_pos FROM binlogd.checkpoint WHERE pipeline = ?",
        (pipeline,),
    )
    .await
    .unwrap()
}

/// [`stored_position`] on a new root session to the server at `url`.
pub async fn stored_position_at(url: &str, pipeline: &str) -> Option<(String, u64)> {
    let mut c = root_at(url).await;
    stored_position(&mut c, pipeline).await
}

/// `db.t` as id → v (the shape the load writers of the fault tests use).
pub async fn table_state(url: &str, db: &str) -> BTreeMap<i64, i64> {
    let mut c = root_at(url).await;
    let rows: Vec<(i64, i64)> = c
        .query(format!("SELECT id, v FROM `{db}`.t"))
        .await
        .unwrap();
    rows.into_iter().collect()
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
