//! File sink: one JSON document per row change, one per line, to a file or stdout (`-`).
//! Flushed (and, for files, fsync'ed when `fsync = true`) at every transaction end.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::io::Write;
use std::path::PathBuf;

use super::{Sink, SinkError};
use crate::decode::event::{Batch, Change, Envelope, RenderError, SourceInfo, TxnChunks};
use crate::decode::rows::RowsChunk;
use crate::metrics::now_ms;

/// Batches with at least this many bytes of row data are rendered by two threads (the
/// second half on a scoped thread while this one renders the first half) …
const PARALLEL_MIN_BYTES: usize = 64 << 10;
/// … and at most this many: both halves are held rendered until they are written (a larger
/// batch, e.g. one huge rows event, is rendered in order and written every 1 MiB).
const PARALLEL_MAX_BYTES: usize = 8 << 20;

/// Renders every row change of `chunks` as JSON lines into `out`.
fn render_chunks(
    chunks: &[(&TxnChunks, &RowsChunk)],
    src: &SourceInfo,
    now: u64,
    out: &mut Vec<u8>,
    env: &mut Envelope,
) -> Result<(), Box<RenderError>> {
    for &(txn, chunk) in chunks {
        for row in 0..chunk.rows as usize {
            let ch = Change { txn, chunk, row };
            if row == 0 {
                env.set(&ch, src);
            }
            ch.write_json_env(out, env, now)?;
            out.push(b'\n');
        }
    }
    Ok(())
}

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
    /// The second half of a batch rendered in parallel.
    buf2: Vec<u8>,
    env: Envelope,
    env2: Envelope,
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
            buf2: Vec::new(),
            env: Envelope::default(),
            env2: Envelope::default(),
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
                    .and_then(|_| l.write_all(&self.buf2))
                    .and_then(|_| l.flush())
                    .map_err(|e| err(e, "stdout", &self.name))?;
            }
            Out::File(f) => {
                f.write_all(&self.buf)
                    .and_then(|_| f.write_all(&self.buf2))
                    .map_err(|e| err(e, &self.path, &self.name))?;
                if sync {
                    f.sync_data().map_err(|e| err(e, &self.path, &self.name))?;
                }
            }
            Out::Discard => {}
        }
        self.buf.clear();
        self.buf2.clear();
        Ok(())
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let now = now_ms();
        let fatal = |name: &str, e: Box<RenderError>| SinkError::Fatal {
            sink: name.to_string(),
            message: e.to_string(),
        };
        let bytes = batch.bytes();
        if (PARALLEL_MIN_BYTES..=PARALLEL_MAX_BYTES).contains(&bytes) {
            let chunks: Vec<(&TxnChunks, &RowsChunk)> = batch
                .txns
                .iter()
                .flat_map(|t| t.chunks.iter().map(move |c| (t, c)))
                .collect();
            if chunks.len() >= 2 {
                // two halves of about the same size of row data
                let total: usize = chunks.iter().map(|(_, c)| c.bytes()).sum();
                let mut acc = 0;
                let mut split = chunks.len() - 1;
                for (i, (_, c)) in chunks.iter().enumerate() {
                    if acc * 2 >= total {
                        split = i;
                        break;
                    }
                    acc += c.bytes();
                }
                let (first, second) = chunks.split_at(split.clamp(1, chunks.len() - 1));
                let (src, buf, buf2) = (&self.src, &mut self.buf, &mut self.buf2);
                let (env, env2) = (&mut self.env, &mut self.env2);
                buf2.clear();
                let (r1, r2) = std::thread::scope(|s| {
                    let h = s.spawn(|| render_chunks(second, src, now, buf2, env2));
                    let r1 = render_chunks(first, src, now, buf, env);
                    (r1, h.join())
                });
                r1.map_err(|e| fatal(&self.name, e))?;
                match r2 {
                    Ok(r) => r.map_err(|e| fatal(&self.name, e))?,
                    Err(_) => {
                        return Err(SinkError::Fatal {
                            sink: self.name.clone(),
                            message: "the rendering thread panicked".into(),
                        })
                    }
                }
                // (the second half is written after the first)
                return self.flush_buf(batch.commit.is_some() && self.fsync);
            }
        }
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
