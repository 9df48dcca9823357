//! The one list of sink kinds: opens the configured sinks (all, or those named).

use std::sync::Arc;

use super::SinksConfig;
use crate::decode::event::SourceInfo;
use crate::mysql::schema::Catalog;
use crate::sinks::file::FileSink;
use crate::sinks::kafka::{KafkaSink, KafkaStats};
use crate::sinks::redis::{RedisSink, RedisStats};
use crate::sinks::{Sink, SinkError};

/// Opens the configured sinks (all, or those named in `only`).
pub fn open_sinks(
    cfg: &SinksConfig,
    only: &[String],
    info: SourceInfo,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    for n in only {
        if !cfg.names().any(|f| f == n) {
            return Err(SinkError::Config(format!(
                "no sink named {n:?} in the config"
            )));
        }
    }
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for f in &cfg.file {
        if only.is_empty() || only.contains(&f.name) {
            sinks.push(Box::new(FileSink::open(f, info.clone())?));
        }
    }
    for r in &cfg.redis {
        if only.is_empty() || only.contains(&r.name) {
            let pw = r.password().map_err(SinkError::Config)?;
            let stats = Arc::new(RedisStats::for_sink(&r.name));
            sinks.push(Box::new(RedisSink::open(
                r,
                pw.as_ref().map(|p| p.expose()),
                stats,
            )?));
        }
    }
    for k in &cfg.kafka {
        if only.is_empty() || only.contains(&k.name) {
            let stats = Arc::new(KafkaStats::for_sink(&k.name));
            sinks.push(Box::new(KafkaSink::open(k, info.clone(), stats)?));
        }
    }
    Ok(sinks)
}

/// What `binlogd check` and startup verify about the sinks against the live source schema
/// (and, with `contact`, by reaching each sink's server).
pub async fn check(
    sinks: &SinksConfig,
    pipeline: &str,
    catalog: &Result<Catalog, String>,
    contact: bool,
) -> Vec<crate::finding::Finding> {
    let mut out = Vec::new();
    for r in &sinks.redis {
        out.extend(super::redis::check(catalog, r, contact).await);
    }
    if contact {
        for k in &sinks.kafka {
            out.extend(super::kafka::check(k, pipeline).await);
        }
    }
    out
}
