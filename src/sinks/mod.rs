//! Sinks: where row changes go. Each sink lives in its own folder (config, implementation,
//! tests) behind the one small [`Sink`] trait; the pipeline runs each in its own task.

pub mod file;
pub mod kafka;
pub mod redis;
pub mod registry;

use futures_util::future::BoxFuture;
use std::sync::Arc;
use thiserror::Error;

use crate::event::Batch;

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("sink {sink}: {message}")]
    Fatal { sink: String, message: String },
    /// A sink setting that cannot be used (names the setting and the fix).
    #[error("{0}")]
    Config(String),
}

/// A destination for batches of row changes.
///
/// `write` must not return before the batch is durable at the destination (written and, at a
/// transaction end, flushed): returning `Ok` is the acknowledgement the checkpoint relies on.
pub trait Sink: Send {
    fn name(&self) -> &str;
    fn write<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>>;
    /// Called once at shutdown after the last batch.
    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
}

pub type SharedBatch = Arc<Batch>;

/// What `binlogd check` and startup verify about the sinks against the live source schema
/// (and, with `contact`, by reaching each sink's server).
pub async fn check(
    cfg: &crate::config::Config,
    conn: &mut mysql_async::Conn,
    contact: bool,
) -> Vec<crate::finding::Finding> {
    let mut out = Vec::new();
    for r in &cfg.sinks.redis {
        out.extend(redis::check(conn, r, contact).await);
    }
    if contact {
        for k in &cfg.sinks.kafka {
            out.extend(kafka::check(k, &cfg.pipeline.name).await);
        }
    }
    out
}
