//! The `[source]` section.

use serde::Deserialize;
use std::path::PathBuf;

use crate::binlog::position::StartPosition;
use crate::tls::TlsConfig;
use crate::units::{HumanDuration, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql://user[:password]@host[:port]`
    pub url: Secret,
    /// Overrides the URL's password (also settable as `BINLOGD__SOURCE__PASSWORD`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Read the password from this file (trailing newline stripped).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Replica id presented to the server; unique among its replicas.
    pub server_id: u32,
    /// Logical server name: `source.name` in events.
    pub name: String,
    /// Where to start when no position is stored.
    #[serde(default)]
    pub start: StartPosition,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Interval of server heartbeats on an idle stream.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: HumanDuration,
    /// No event (not even a heartbeat) for this long means the stream is dead: reconnect.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// First reconnect delay; doubles on every failure up to `reconnect_backoff_max`.
    #[serde(default = "default_backoff_initial")]
    pub reconnect_backoff_initial: HumanDuration,
    #[serde(default = "default_backoff_max")]
    pub reconnect_backoff_max: HumanDuration,
    /// Give up after this many consecutive failed reconnects (0 = never give up).
    #[serde(default)]
    pub reconnect_max_attempts: u32,
    /// Verify the CRC32 of every event the server checksums.
    #[serde(default = "default_true")]
    pub verify_checksums: bool,
    #[serde(default)]
    pub tls: TlsConfig,
}

impl SourceConfig {
    /// The password: `password_file`, else `password`, else none (the URL's).
    pub fn password(&self) -> Result<Option<Secret>, String> {
        if let Some(p) = &self.password_file {
            return crate::units::read_secret_file(p, "source.password_file").map(Some);
        }
        Ok(self.password.clone())
    }
}

fn default_true() -> bool {
    true
}

fn default_heartbeat() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(20))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}
fn default_backoff_initial() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(200))
}
fn default_backoff_max() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
