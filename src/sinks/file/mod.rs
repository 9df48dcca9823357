//! File sink: one JSON document per row change, one per line, to a file or stdout (`-`).
//! Flushed (and, for files, fsync'ed when `fsync = true`) at every transaction end.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::io::Write;
use std::path::PathBuf;

use super::{Sink, SinkError};
use crate::event::{now_ms, Batch, SourceInfo};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub name: String,
    /// Path of the JSON-lines file (appended to), or `-` for stdout.
    pub path: String,
    /// fsync the file at every transaction end (durable across power loss; slower).
    #[serde(default)]
    pub fsync: bool,
}

enum Out {
    Stdout(std::io::Stdout),
    File(std::fs::File),
    /// `/dev/null`-like: serialise but discard (benchmarks).
    Discard,
}

pub struct FileSink {
    name: String,
    path: String,
    out: Out,
    fsync: bool,
    buf: Vec<u8>,
    src: SourceInfo,
}

impl FileSink {
    pub fn open(cfg: &FileSinkConfig, src: SourceInfo) -> Result<FileSink, SinkError> {
        let out = match cfg.path.as_str() {
            "-" => Out::Stdout(std::io::stdout()),
            "/dev/null" => Out::Discard,
            p => Out::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(PathBuf::from(p))
                    .map_err(|e| SinkError::Fatal {
                        sink: cfg.name.clone(),
                        message: format!("cannot open {p} for appending: {e}"),
                    })?,
            ),
        };
        Ok(FileSink {
            name: cfg.name.clone(),
            path: cfg.path.clone(),
            out,
            fsync: cfg.fsync,
            buf: Vec::with_capacity(1 << 20),
            src,
        })
    }

    fn flush_buf(&mut self, sync: bool) -> Result<(), SinkError> {
        let err = |e: std::io::Error, path: &str, name: &str| SinkError::Fatal {
            sink: name.to_string(),
            message: format!(
                "writing {path}: {e}; the position was not advanced past the failed write"
            ),
        };
        match &mut self.out {
            Out::Stdout(s) => {
                let mut l = s.lock();
                l.write_all(&self.buf)
                    .and_then(|_| l.flush())
                    .map_err(|e| err(e, "stdout", &self.name))?;
            }
            Out::File(f) => {
                f.write_all(&self.buf)
                    .map_err(|e| err(e, &self.path, &self.name))?;
                if sync {
                    f.sync_data().map_err(|e| err(e, &self.path, &self.name))?;
                }
            }
            Out::Discard => {}
        }
        self.buf.clear();
        Ok(())
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let now = now_ms();
        for ch in batch.changes() {
            ch.write_json(&mut self.buf, &self.src, now)
                .map_err(|e| SinkError::Fatal {
                    sink: self.name.clone(),
                    message: e.to_string(),
                })?;
            self.buf.push(b'\n');
            if self.buf.len() >= 1 << 20 {
                self.flush_buf(false)?;
            }
        }
        // a transaction end: everything written and flushed before acknowledging
        self.flush_buf(batch.commit.is_some() && self.fsync)
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        // Serialisation is CPU work and file writes block: keep it off the async workers'
        // latency-critical path by running it in place (the sink has its own task).
        Box::pin(async move { tokio::task::block_in_place(|| self.write_batch(batch)) })
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move { self.flush_buf(self.fsync) })
    }
}
