//! Snapshots (issue 15): the rows that already exist, read in key order in chunks over a
//! separate connection and turned into read events (`op:"r"`, `before:null`) that are rendered
//! by the decoder's own renderer, so a read image is byte-identical to the binlog insert image
//! of the same row.
//!
//! The parts (cmd/ wires the stage between source and pipeline):
//!
//! - [`catalog`]: the decoder's [`TableSchema`](crate::decode::table::TableSchema) of a table
//!   built from information_schema, plus the key the chunks are read by (primary key, else the
//!   first unique key on NOT NULL columns; neither → [`SnapshotError::NoKey`]).
//! - [`chunk`]: the keyset chunk query (`WHERE k1 > ? OR (k1 = ? AND k2 > ?) … ORDER BY k1, k2
//!   LIMIT n`), read with the binary protocol, and the watermark reads around it
//!   ([`chunk::read_chunk_mariadb`], [`chunk::read_chunk_mysql`]).
//! - [`encode`]: SELECT values → binlog row-image cells ([`jsonb`] for MySQL binary JSON), so a
//!   chunk is a [`RowsChunk`](crate::decode::rows::RowsChunk) with [`Op::Read`](crate::decode::rows::Op::Read) (`source.snapshot`
//!   `"true"`, or `"last"` for a chunk marked `last`).
//! - [`window`]: the sans-I/O watermark window (which rows of a chunk to drop, when to emit).
//! - [`progress`]: per-table progress (last key, counts, done) as a compact JSON string.
//! - [`stage`]: the stage between source and pipeline that runs the windows and slips read
//!   chunks in between stream batches; [`requests`]: `binlogd snapshot start|cancel|status`
//!   through the checkpoint schema; [`config`]: `[snapshot]`.

pub mod catalog;
pub mod chunk;
pub mod config;
pub mod encode;
pub mod jsonb;
pub mod progress;
pub mod requests;
pub mod stage;
pub mod window;

pub use catalog::{load_table, KeyKind, SnapshotTable};
pub use chunk::{read_chunk, ChunkRead};
pub use progress::{KeyValue, SnapshotProgress, TableProgress};
pub use window::{StreamPoint, Watermark, Window};

/// Why a snapshot step failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{db}.{table}: no such table (or no privilege to see its columns)")]
    NoTable { db: String, table: String },
    #[error(
        "{db}.{table} has no primary key and no UNIQUE key on NOT NULL columns, so it cannot be \
         read in key-ordered chunks: add a primary key (or make a unique key's columns NOT NULL), \
         or leave it out of the snapshot and load it from a dump with its binlog position \
         (binlogd does not automate that; README \"Snapshots\", \"Not (yet) done\")"
    )]
    NoKey { db: String, table: String },
    #[error("{db}.{table} column {column}: {message}")]
    Column {
        db: String,
        table: String,
        column: String,
        message: String,
    },
    #[error("{db}.{table}: {message}")]
    Table {
        db: String,
        table: String,
        message: String,
    },
    /// The result set does not match the schema read from information_schema (an ALTER
    /// between [`catalog::load_table`] and the read): load the table again and re-read the
    /// chunk; nothing of this read may be emitted.
    #[error(
        "{db}.{table} column {column} changed under the snapshot ({message}): load its schema \
         again and re-read the chunk"
    )]
    SchemaChanged {
        db: String,
        table: String,
        column: String,
        message: String,
    },
    #[error("watermark: {0}")]
    Watermark(String),
    #[error("progress: {0}")]
    Progress(String),
    #[error(transparent)]
    Server(#[from] mysql_async::Error),
}
