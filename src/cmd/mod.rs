//! The verbs: the only code that wires the stages (source → decode → pipeline → sinks →
//! checkpoint) together. `main.rs` parses the command line and calls one of these.

pub mod check;
pub mod history;
pub mod position;
pub mod replay;
pub mod run;
pub mod snapshot;

pub use check::{check_failover_setup, check_stored};
pub use position::{position_reset, position_set, position_show, SetTarget};
pub use replay::{replay, replay_files, ReplayRange};
pub use run::{run, RunOptions};

use thiserror::Error;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::config::Config;
use crate::decode::event::SourceInfo;
use crate::sinks::SinkError;
use crate::source::SourceError;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Other(String),
    /// A config mistake found against the server (exit code 2).
    #[error("{0}")]
    Config(String),
}

impl From<crate::mysql::QueryError> for DaemonError {
    fn from(e: crate::mysql::QueryError) -> Self {
        DaemonError::Source(e.into())
    }
}

pub fn other(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Other(e.to_string())
}

/// What the sinks are told about the stream.
pub fn source_info(
    cfg: &Config,
    server: Option<&crate::mysql::server::ServerInfo>,
    replay: bool,
) -> SourceInfo {
    SourceInfo {
        name: cfg.source.name.clone(),
        pipeline: cfg.pipeline.name.clone(),
        server: server
            .map(|s| {
                s.server_uuid
                    .clone()
                    .unwrap_or_else(|| s.server_id.to_string())
            })
            .unwrap_or_default(),
        replay,
        snapshot_resume: None,
    }
}

pub async fn open_checkpoint(cfg: &Config) -> Result<Checkpoint, DaemonError> {
    let opts = cfg.checkpoint_opts().map_err(other)?;
    let mut cp = Checkpoint::connect(opts, &cfg.checkpoint.schema, &cfg.pipeline.name).await?;
    cp.migrate().await?;
    Ok(cp)
}

/// `binlogd migrate`: applies pending migrations; returns how many ran.
pub async fn migrate(cfg: &Config) -> Result<usize, DaemonError> {
    let opts = cfg.checkpoint_opts().map_err(other)?;
    let mut cp = Checkpoint::connect(opts, &cfg.checkpoint.schema, &cfg.pipeline.name).await?;
    Ok(cp.migrate().await?)
}

/// The schema catalog the sink checks need (read only when a sink checks templates); the
/// error text is what the checks report.
pub async fn sink_catalog(
    cfg: &Config,
    c: &mut mysql_async::Conn,
) -> Result<crate::mysql::schema::Catalog, String> {
    if cfg.sinks.redis.is_empty() {
        return Ok(Default::default());
    }
    crate::mysql::schema::load_catalog(c)
        .await
        .map_err(|e| e.to_string())
}

/// Connects to the source described by `cfg` (its `[source]` section and batch size).
pub async fn connect_source(
    cfg: &Config,
) -> Result<(crate::source::Source, Vec<crate::finding::Finding>), SourceError> {
    crate::source::Source::connect(
        std::sync::Arc::new(cfg.source.clone()),
        cfg.pipeline.batch_max_bytes.0 as usize,
    )
    .await
}
