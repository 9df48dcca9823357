//! Sinks: where row changes go. Each sink lives in its own folder (config, implementation,
//! tests) behind the one small [`Sink`] trait; the pipeline runs each in its own task.

pub mod file;
pub mod kafka;
pub mod redis;
pub mod registry;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use thiserror::Error;

use crate::decode::event::Batch;

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
    /// How many batches that queued up while the sink was busy it takes at once
    /// ([`Sink::write_group`]); 1 (the default): one at a time, each acknowledged on its own.
    fn max_group(&self) -> usize {
        1
    }
    /// Writes batches that queued up while the sink was busy, in order; returns when all are
    /// durable (the same promise as [`Sink::write`] for the last one, hence for all; the
    /// group is acknowledged as a whole). A sink whose acknowledgement is a round trip (Kafka)
    /// sends them all and waits once, so a backlog drains in one round trip instead of one per
    /// batch. The default writes one after another.
    fn write_group<'a>(
        &'a mut self,
        batches: &'a [std::sync::Arc<Batch>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for b in batches {
                self.write(b).await?;
            }
            Ok(())
        })
    }
    /// Whether the sink takes the next group while the one before is still being
    /// acknowledged ([`Sink::queue_group`] and [`Sink::settle`] instead of
    /// [`Sink::write_group`]): a sink whose acknowledgement is a round trip (Kafka) then
    /// produces the next group during that round trip instead of idling through it.
    fn pipelined(&self) -> bool {
        false
    }
    /// Pipelined sinks: hands a group on (in order after the groups queued before) without
    /// waiting for its acknowledgement. Nothing is acknowledged by returning `Ok`.
    fn queue_group(
        &mut self,
        batches: Vec<std::sync::Arc<Batch>>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        let _ = batches;
        Box::pin(async move {
            Err(SinkError::Fatal {
                sink: self.name().to_string(),
                message: "queue_group called on a sink that is not pipelined".into(),
            })
        })
    }
    /// Pipelined sinks: waits until the oldest queued group is durable (the promise of
    /// [`Sink::write`]) and returns how many of the oldest queued groups are durable now: at
    /// least 1, more when a resend after a failure delivered the later ones too.
    fn settle(&mut self) -> BoxFuture<'_, Result<usize, SinkError>> {
        Box::pin(async move {
            Err(SinkError::Fatal {
                sink: self.name().to_string(),
                message: "settle called on a sink that is not pipelined".into(),
            })
        })
    }
    /// Called once at shutdown after the last batch.
    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
}

/// The `[[sinks.*]]` sections.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    #[serde(default)]
    pub file: Vec<file::FileSinkConfig>,
    #[serde(default)]
    pub redis: Vec<redis::config::RedisSinkConfig>,
    #[serde(default)]
    pub kafka: Vec<kafka::config::KafkaSinkConfig>,
}

impl SinksConfig {
    /// Every sink's name, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.file
            .iter()
            .map(|f| f.name.as_str())
            .chain(self.redis.iter().map(|r| r.name.as_str()))
            .chain(self.kafka.iter().map(|k| k.name.as_str()))
    }
}
