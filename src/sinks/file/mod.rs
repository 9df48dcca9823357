//! File sink: one JSON document per row change, one per line, to a file or stdout (`-`).
//! Flushed (and, for files, fsync'ed when `fsync = true`) at every transaction end.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::io::Write;
use std::path::PathBuf;

use super::{Sink, SinkError};
use crate::decode::event::{Batch, Change, Envelope, RenderError, SourceInfo};
use crate::metrics::now_ms;

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
    env: Envelope,
    src: SourceInfo,
}

impl FileSink {
    pub fn open(cfg: &FileSinkConfig, src: SourceInfo) -> Result<FileSink, SinkError> {
        let out = match cfg.path.as_str() {
            "-" => {
                // A pipe's default 64 KiB buffer makes this sink and the reading process wake
                // each other every 64 KiB: ask for 1 MiB. Best effort (not a pipe, or more
                // than /proc/sys/fs/pipe-max-size allows: left as it is).
                #[cfg(target_os = "linux")]
                let _ = rustix::pipe::fcntl_setpipe_size(std::io::stdout(), 1 << 20);
                Out::Stdout(std::io::stdout())
            }
            "/dev/null" => Out::Discard,
            p => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(PathBuf::from(p))
                    .map_err(|e| SinkError::Fatal {
                        sink: cfg.name.clone(),
                        message: format!("cannot open {p} for appending: {e}"),
                    })?;
                end_torn_line(&mut f, p).map_err(|e| SinkError::Fatal {
                    sink: cfg.name.clone(),
                    message: format!("cannot read the end of {p}: {e}"),
                })?;
                Out::File(f)
            }
        };
        Ok(FileSink {
            name: cfg.name.clone(),
            path: cfg.path.clone(),
            out,
            fsync: cfg.fsync,
            buf: Vec::with_capacity(1 << 20),
            env: Envelope::default(),
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
        let fatal = |name: &str, e: Box<RenderError>| SinkError::Fatal {
            sink: name.to_string(),
            message: e.to_string(),
        };
        for t in &batch.txns {
            for c in &t.chunks {
                for row in 0..c.rows as usize {
                    let ch = Change {
                        txn: t,
                        chunk: c,
                        row,
                    };
                    if row == 0 {
                        self.env.set(&ch, &self.src);
                    }
                    ch.write_json_env(&mut self.buf, &self.env, now)
                        .map_err(|e| fatal(&self.name, e))?;
                    self.buf.push(b'\n');
                    if self.buf.len() >= 1 << 20 {
                        self.flush_buf(false)?;
                    }
                }
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

/// A crash (kill -9, power loss) while a line was being written leaves the file ending in a
/// partial line; the event on it is written again after the restart (it was not
/// acknowledged). Ends the partial line with a newline so the next event starts a line of its
/// own, and says so: a reader skips the one line that is not JSON.
fn end_torn_line(f: &mut std::fs::File, path: &str) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    let mut r = std::fs::File::open(path)?;
    r.seek(SeekFrom::Start(len - 1))?;
    r.read_exact(&mut last)?;
    if last[0] != b'\n' {
        tracing::warn!(
            path,
            "the file ends in a partial line (a crash while it was written): ending it with a newline; its event follows again in full"
        );
        f.write_all(b"\n")?;
    }
    Ok(())
}
