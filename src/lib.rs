//! binlogd: a MySQL/MariaDB change-data-capture daemon.
//!
//! Data flows top to bottom: [`source`] (replication connection) → [`decode`] (events → row
//! changes) → [`pipeline`] (batching, ordering, acknowledgements) → [`sinks`] → checkpoint.
//! See docs/ARCHITECTURE.md.

pub mod admin;
pub mod binlog;
pub mod checkpoint;
pub mod cmd;
pub mod config;
pub mod decode;
pub mod filter;
pub mod finding;
pub mod metrics;
pub mod mysql;
pub mod pipeline;
pub mod sinks;
pub mod snapshot;
pub mod source;
pub mod tls;
pub mod units;
