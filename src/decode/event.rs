//! The change-event model handed from the decoder to the sinks, and its JSON form.
//!
//! A [`Batch`] is a run of row changes in binlog order, possibly ending at a transaction
//! boundary (`commit`). Sinks acknowledge batches by sequence number; the pipeline stores a
//! position only when every sink has acknowledged every batch up to a commit.

use std::sync::Arc;

use crate::binlog::position::Position;
use crate::decode::rows::{Cell, RowsChunk};
use crate::decode::table::TableSchema;
use crate::decode::value::{push_value_in, push_value_inline, put, write_json_str};

pub use crate::decode::rows::Op;

/// Row changes of one transaction (or of part of a large one), with their binlog coordinates.
#[derive(Debug)]
pub struct TxnChunks {
    pub file: Arc<str>,
    /// The transaction's GTID (`uuid:n` or `domain-server-seq`).
    pub gtid: Option<Arc<str>>,
    pub chunks: Vec<RowsChunk>,
    /// Snapshot read chunks: `db.table#run`, the table's snapshot run (a restarted snapshot of
    /// the table is another run). Kafka sends it as the `binlogd.snapshot` header.
    pub snapshot: Option<Arc<str>>,
}

#[derive(Debug, Default)]
pub struct Batch {
    /// Assigned by the pipeline, strictly increasing.
    pub seq: u64,
    pub txns: Vec<TxnChunks>,
    /// Position after the last complete transaction in this batch (None: ends mid-transaction).
    pub commit: Option<Position>,
    /// Event time (ms) of the last event in the batch.
    pub last_event_ms: u64,
    /// Snapshot progress after this batch (set by the snapshot stage): stored with `commit`
    /// once every sink has acknowledged the batch.
    pub snapshot: Option<SnapshotMark>,
}

/// The snapshot progress to store with a position: `generation` grows with every emitted
/// chunk, `progress` is the snapshot stage's progress record as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMark {
    pub generation: u64,
    pub progress: Arc<str>,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.txns
            .iter()
            .flat_map(|t| t.chunks.iter())
            .map(|c| c.rows as usize)
            .sum()
    }

    pub fn bytes(&self) -> usize {
        self.txns
            .iter()
            .flat_map(|t| t.chunks.iter())
            .map(|c| c.bytes())
            .sum::<usize>()
            + 64
    }

    /// Every row change in order.
    pub fn changes(&self) -> impl Iterator<Item = Change<'_>> {
        self.txns.iter().flat_map(|t| {
            t.chunks.iter().flat_map(move |c| {
                (0..c.rows as usize).map(move |r| Change {
                    txn: t,
                    chunk: c,
                    row: r,
                })
            })
        })
    }
}

/// One row change: a view into a chunk.
#[derive(Clone, Copy)]
pub struct Change<'a> {
    pub txn: &'a TxnChunks,
    pub chunk: &'a RowsChunk,
    pub row: usize,
}

/// What sinks know about the stream they receive.
#[derive(Debug, Clone, Default)]
pub struct SourceInfo {
    /// `source.name`: the logical server name in events and topic templates.
    pub name: String,
    /// `pipeline.name`.
    pub pipeline: String,
    /// Identity of the server whose binlog is read (MySQL server_uuid, else server_id);
    /// empty when unknown (replay from files without a server).
    pub server: String,
    /// An operator's replay: sinks re-send everything (no exactly-once skipping).
    pub replay: bool,
    /// A snapshot is in progress; a chunk handed on but not stored before a restart was handed
    /// on at or after this position: with Kafka exactly_once, the read events of the current
    /// runs already published after it are not published again.
    pub snapshot_resume: Option<crate::binlog::position::BinlogCoord>,
}

#[derive(Debug, thiserror::Error)]
#[error("{db}.{table} column {column} at {file}:{pos} row {row}: {message}")]
pub struct RenderError {
    pub db: String,
    pub table: String,
    pub column: String,
    pub file: String,
    pub pos: u64,
    pub row: u64,
    pub message: String,
}

impl<'a> Change<'a> {
    pub fn op(&self) -> Op {
        self.chunk.op
    }
    pub fn db(&self) -> &'a str {
        &self.chunk.table.db
    }
    pub fn table(&self) -> &'a str {
        &self.chunk.table.table
    }
    pub fn row_index(&self) -> u64 {
        self.chunk.first_row as u64 + self.row as u64
    }

    fn err(&self, column: &str, message: String) -> Box<RenderError> {
        Box::new(RenderError {
            db: self.db().into(),
            table: self.table().into(),
            column: column.into(),
            file: self.txn.file.to_string(),
            pos: self.chunk.pos,
            row: self.row_index(),
            message,
        })
    }

    fn write_image(
        &self,
        out: &mut Vec<u8>,
        cells: &[Cell],
        after: bool,
    ) -> Result<(), Box<RenderError>> {
        out.push(b'{');
        let mut first = true;
        let data: &[u8] = &self.chunk.data;
        for (i, (col, cell)) in self.chunk.table.columns.iter().zip(cells).enumerate() {
            if cell.is_absent() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            put(out, col.json_key.as_bytes());
            if cell.is_null() {
                put(out, b"null");
                continue;
            }
            let v = &data[cell.start as usize..(cell.start + cell.len) as usize];
            if after && self.chunk.is_partial(self.row, i) {
                self.write_partial_json(out, i, v)?;
                continue;
            }
            push_value_inline(out, col, v, self.chunk.text_checked)
                .map_err(|m| self.err(&col.name, m))?;
        }
        out.push(b'}');
        Ok(())
    }

    /// Applies a MySQL partial JSON update (binary diff) to the before image's value.
    fn write_partial_json(
        &self,
        out: &mut Vec<u8>,
        col: usize,
        diff: &[u8],
    ) -> Result<(), Box<RenderError>> {
        let name = &self.chunk.table.columns[col].name;
        let before = self
            .chunk
            .before(self.row)
            .map(|b| b[col])
            .filter(|c| !c.is_null() && !c.is_absent())
            .ok_or_else(|| self.err(name, "partial JSON update without a before value".into()))?;
        let bv = &self.chunk.data[before.start as usize..(before.start + before.len) as usize];
        let mut doc = crate::decode::value::mysql_json_value(bv).map_err(|m| self.err(name, m))?;
        crate::decode::jsondiff::apply(&mut doc, diff).map_err(|m| self.err(name, m))?;
        serde_json::to_writer(&mut *out, &doc).map_err(|e| self.err(name, e.to_string()))
    }

    /// Appends a JSON object of the columns `cols` (by index) from the after image, or the
    /// before image for deletes: a message key such as `{"id":42}`.
    pub fn write_key(&self, out: &mut Vec<u8>, cols: &[usize]) -> Result<(), Box<RenderError>> {
        let cells = match self.chunk.after(self.row) {
            Some(c) => c,
            None => self.chunk.before(self.row).unwrap_or(&[]),
        };
        out.push(b'{');
        let data: &[u8] = &self.chunk.data;
        for (n, &i) in cols.iter().enumerate() {
            let (Some(col), Some(cell)) = (self.chunk.table.columns.get(i), cells.get(i)) else {
                continue;
            };
            if n > 0 {
                out.push(b',');
            }
            put(out, col.json_key.as_bytes());
            if cell.is_null() || cell.is_absent() {
                put(out, b"null");
                continue;
            }
            let v = &data[cell.start as usize..(cell.start + cell.len) as usize];
            push_value_in(out, col, v, self.chunk.text_checked)
                .map_err(|m| self.err(&col.name, m))?;
        }
        out.push(b'}');
        Ok(())
    }

    /// Appends the event's JSON document (no trailing newline).
    pub fn write_json(
        &self,
        out: &mut Vec<u8>,
        src: &SourceInfo,
        now_ms: u64,
    ) -> Result<(), Box<RenderError>> {
        let mut env = Envelope::default();
        env.set(self, src);
        self.write_json_env(out, &env, now_ms)
    }

    /// [`Self::write_json`] with the parts every row of this change's chunk shares rendered
    /// once in `env` ([`Envelope::set`] for this chunk).
    pub fn write_json_env(
        &self,
        out: &mut Vec<u8>,
        env: &Envelope,
        now_ms: u64,
    ) -> Result<(), Box<RenderError>> {
        out.extend_from_slice(&env.op);
        match self.chunk.before(self.row) {
            Some(c) => self.write_image(out, c, false)?,
            None => put(out, b"null"),
        }
        put(out, b",\"after\":");
        match self.chunk.after(self.row) {
            Some(c) => self.write_image(out, c, true)?,
            None => put(out, b"null"),
        }
        out.extend_from_slice(&env.source);
        put(out, itoa::Buffer::new().format(self.row_index()).as_bytes());
        out.extend_from_slice(&env.tail);
        put(out, itoa::Buffer::new().format(now_ms).as_bytes());
        out.push(b'}');
        Ok(())
    }
}

/// The bytes of a change's JSON document that are the same for every row of one chunk (op,
/// source block up to the row index, GTID), rendered once per chunk by the sinks. The escaped
/// source name, `db`/`table`, file and GTID are kept from one chunk to the next while they are
/// the same (compared by `Arc` identity; the `Arc`s are held, so an address is never reused
/// for something else while compared).
#[derive(Debug, Default)]
pub struct Envelope {
    /// `{"op":"c","before":`
    op: Vec<u8>,
    /// `,"source":{…,"pos":N,"row":`
    source: Vec<u8>,
    /// `,"gtid":…},"ts_ms":`
    tail: Vec<u8>,
    /// `,"source":{"connector":…,"name":…,"server_id":` for this source name
    head: Option<(String, Vec<u8>)>,
    /// `"db":…,"table":…` of this table
    table: Option<(Arc<TableSchema>, Vec<u8>)>,
    /// `,"file":…` of this file name
    file: Option<(Arc<str>, Vec<u8>)>,
    /// the tail for this GTID (None: a transaction without one)
    gtid: Option<Option<Arc<str>>>,
}

impl Envelope {
    /// Renders the shared parts for the chunk (and transaction) of `ch`.
    pub fn set(&mut self, ch: &Change<'_>, src: &SourceInfo) {
        self.op.clear();
        self.op.extend_from_slice(b"{\"op\":\"");
        self.op.extend_from_slice(ch.op().code().as_bytes());
        self.op.extend_from_slice(b"\",\"before\":");
        if self.head.as_ref().is_none_or(|(n, _)| *n != src.name) {
            let mut h = Vec::new();
            h.extend_from_slice(b",\"source\":{\"connector\":\"binlogd\",\"version\":\"");
            h.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
            h.extend_from_slice(b"\",\"name\":");
            write_json_str(&mut h, &src.name);
            h.extend_from_slice(b",\"server_id\":");
            self.head = Some((src.name.clone(), h));
        }
        if !self
            .table
            .as_ref()
            .is_some_and(|(t, _)| Arc::ptr_eq(t, &ch.chunk.table))
        {
            // (the buffer is reused)
            let mut t = self.table.take().map(|(_, t)| t).unwrap_or_default();
            t.clear();
            t.extend_from_slice(b"\"db\":");
            write_json_str(&mut t, ch.db());
            t.extend_from_slice(b",\"table\":");
            write_json_str(&mut t, ch.table());
            self.table = Some((ch.chunk.table.clone(), t));
        }
        if !self
            .file
            .as_ref()
            .is_some_and(|(f, _)| Arc::ptr_eq(f, &ch.txn.file))
        {
            let mut f = self.file.take().map(|(_, f)| f).unwrap_or_default();
            f.clear();
            f.extend_from_slice(b",\"file\":");
            write_json_str(&mut f, &ch.txn.file);
            self.file = Some((ch.txn.file.clone(), f));
        }
        let same_gtid = self.gtid.as_ref().is_some_and(|g| match (g, &ch.txn.gtid) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        });
        if !same_gtid {
            self.tail.clear();
            self.tail.extend_from_slice(b",\"gtid\":");
            match &ch.txn.gtid {
                Some(g) => write_json_str(&mut self.tail, g),
                None => self.tail.extend_from_slice(b"null"),
            }
            self.tail.extend_from_slice(b"},\"ts_ms\":");
            self.gtid = Some(ch.txn.gtid.clone());
        }
        let out = &mut self.source;
        out.clear();
        if let Some((_, h)) = &self.head {
            out.extend_from_slice(h);
        }
        out.extend_from_slice(itoa::Buffer::new().format(ch.chunk.server_id).as_bytes());
        out.extend_from_slice(b",\"ts_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(ch.chunk.ts_ms).as_bytes());
        out.push(b',');
        // snapshot reads only: every other event's bytes are unchanged
        if let Op::Read { last } = ch.op() {
            out.extend_from_slice(if last {
                b"\"snapshot\":\"last\","
            } else {
                b"\"snapshot\":\"true\","
            });
        }
        if let Some((_, t)) = &self.table {
            out.extend_from_slice(t);
        }
        if let Some((_, f)) = &self.file {
            out.extend_from_slice(f);
        }
        out.extend_from_slice(b",\"pos\":");
        out.extend_from_slice(itoa::Buffer::new().format(ch.chunk.pos).as_bytes());
        out.extend_from_slice(b",\"row\":");
    }
}
