//! Test harness: real servers started by scripts/test-servers.sh (URLs in BINLOGD_TEST_* env),
//! the real `binlogd` binary, and its output read back. By concern:
//!
//! - [`env`]: where the servers are, flavors, work directories, runtimes, nonces;
//! - [`db`]: SQL helpers (fresh databases and tables, binlog end, stored position, table
//!   state) and private server instances;
//! - [`daemon`]: the one `binlogd run` spawn builder and daemon handle, one-shot verbs, the
//!   base config, the admin endpoint;
//! - [`events`]: the file sink's JSON lines and event coordinates;
//! - [`history`]: the per-row history-chain check of the fault and failover suites;
//! - [`kafka`], [`redis`]: reading the sinks back, private Redis;
//! - [`load`]: a write load on its own thread, counting commits;
//! - [`scenario`]: fresh tables → daemon → SQL → events, in one value.
#![allow(dead_code, unused_imports)]

mod daemon;
mod db;
mod env;
mod events;
mod history;
mod kafka;
mod load;
mod redis;
mod scenario;

pub use self::daemon::*;
pub use self::db::*;
pub use self::env::*;
pub use self::events::*;
pub use self::history::*;
pub use self::kafka::*;
pub use self::load::*;
pub use self::redis::*;
pub use self::scenario::*;
