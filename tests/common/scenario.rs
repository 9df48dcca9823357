//! The common shape of a streaming test: a fresh database with its tables on one of the shared
//! servers → a daemon streaming it to a file (plus whatever sinks the test adds) → SQL → wait
//! for N events → assert.
//!
//! ```ignore
//! let mut s = Scenario::new(f, &format!("verbs_{}", f.tag()), &["t (id INT PRIMARY KEY)"]);
//! let mut d = s.daemon("");
//! s.sql(&[format!("INSERT INTO `{}`.t VALUES (1)", s.name)]);
//! let ev = d.wait_events(1, Duration::from_secs(30));
//! ```

use super::daemon::{config, Daemon};
use super::db::{binlog_end, exec_all, fresh_table, root};
use super::env::{rt, workdir, Flavor};
use mysql_async::Conn;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

pub struct Scenario {
    pub f: Flavor,
    /// The test's name: its database, work directory and (with the flavor tag) pipeline.
    pub name: String,
    pub rt: tokio::runtime::Runtime,
    pub dir: PathBuf,
    /// A root session on the server.
    pub c: Conn,
    /// The binlog end once the tables were created.
    pub start: (String, u64),
}

impl Scenario {
    /// A fresh database `name` on the shared server of `f` holding `tables` (each
    /// `name (columns…)`, see [`super::db::fresh_tables`]), and an empty work directory.
    pub fn new(f: Flavor, name: &str, tables: &[&str]) -> Scenario {
        let rt = rt();
        let dir = workdir(name);
        let mut c = rt.block_on(root(f));
        let start = rt.block_on(fresh_table(&mut c, f, name, tables));
        Scenario {
            f,
            name: name.to_string(),
            rt,
            dir,
            c,
            start,
        }
    }

    /// The pipeline name [`config`] gives this test.
    pub fn pipeline(&self) -> String {
        format!("{}_{}", self.name, self.f.tag())
    }

    /// [`config`] for this test's database from [`Scenario::start`], with `extra_source` lines.
    pub fn config(&self, extra_source: &str) -> String {
        config(
            self.f,
            &self.name,
            &self.name,
            &self.start,
            &self.dir,
            extra_source,
        )
    }

    /// A daemon on [`Scenario::config`] (`extra_source` lines) after a position reset.
    pub fn daemon(&self, extra_source: &str) -> Daemon {
        self.daemon_with(&self.config(extra_source))
    }

    /// A daemon on `cfg` (written to the work directory) after a position reset.
    pub fn daemon_with(&self, cfg: &str) -> Daemon {
        Daemon::start(&self.dir, cfg)
    }

    /// Runs the statements in order on the root session.
    pub fn sql(&mut self, qs: &[String]) {
        self.rt.block_on(exec_all(&mut self.c, qs));
    }

    /// The binlog end now.
    pub fn binlog_end(&mut self) -> (String, u64) {
        self.rt.block_on(binlog_end(&mut self.c, self.f))
    }

    /// Runs `qs`, then waits (up to `timeout`) for `n` events of `d`.
    pub fn write_and_wait(
        &mut self,
        d: &mut Daemon,
        qs: &[String],
        n: usize,
        timeout: Duration,
    ) -> Vec<Value> {
        self.sql(qs);
        d.wait_events(n, timeout)
    }
}
