//! The `[snapshot]` section.

use serde::Deserialize;

use crate::units::ByteSize;

/// When binlogd snapshots the rows that already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Only on request (`binlogd snapshot start`).
    #[default]
    Never,
    /// Every included table on the first start (no stored position), while streaming from
    /// the position recorded before it began.
    Initial,
    /// As `initial`, then exit once every table is done and stored (the next `run` streams on
    /// from the stored position).
    InitialOnly,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    #[serde(default)]
    pub mode: SnapshotMode,
    /// At most this many rows per chunk (one short consistent read per chunk).
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// About this much row data per chunk: a table's first chunk reads up to
    /// [`FIRST_CHUNK_ROWS`] rows, each next one twice as many while that stays within this
    /// cap (and `chunk_rows`); a larger chunk (wide rows) makes the next ones smaller, and a
    /// read stops at twice this. Memory and the rows read again after a crash are bounded by
    /// it.
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: ByteSize,
    /// Tables read at the same time (one connection each).
    #[serde(default = "default_max_tables")]
    pub max_tables: usize,
    /// Rows read per second over all tables; 0: no limit.
    #[serde(default)]
    pub rows_per_second: u64,
    /// Tables the initial snapshot reads (`db.table` globs); default: every table the source
    /// streams (`source.include`/`exclude`).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            mode: SnapshotMode::Never,
            chunk_rows: default_chunk_rows(),
            chunk_bytes: default_chunk_bytes(),
            max_tables: default_max_tables(),
            rows_per_second: 0,
            tables: None,
        }
    }
}

impl SnapshotConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1_000_000).contains(&self.chunk_rows) {
            return Err(format!(
                "snapshot.chunk_rows = {} is out of range: use 1 to 1000000 (default 65536, with chunk_bytes deciding)",
                self.chunk_rows
            ));
        }
        if self.chunk_bytes.0 < 4096 {
            return Err("snapshot.chunk_bytes must be at least 4 KiB (default 4 MiB)".into());
        }
        if !(1..=64).contains(&self.max_tables) {
            return Err(format!(
                "snapshot.max_tables = {} is out of range: use 1 to 64 (default 1)",
                self.max_tables
            ));
        }
        if let Some(t) = &self.tables {
            if t.is_empty() {
                return Err("snapshot.tables is an empty list, which would match no table; remove it to snapshot every streamed table".into());
            }
            for p in t {
                crate::filter::TablePattern::parse(p)
                    .map_err(|e| format!("snapshot.tables: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Rows of a table's first chunk (at most `chunk_rows`): small, so that a table of wide rows
/// does not begin with a huge read; the next chunks double up to the byte cap.
pub const FIRST_CHUNK_ROWS: usize = 1024;

fn default_chunk_rows() -> usize {
    65_536
}
/// 4 MiB: ~16k rows of the benchmark's 10 columns (benches/snapshot.rs) — a chunk's fixed
/// costs (its consistent-read transaction, the checkpoint commit before the table's next
/// chunk) then weigh little, and RSS stays under 64 MiB with a chunk read ahead.
fn default_chunk_bytes() -> ByteSize {
    ByteSize(4 << 20)
}
fn default_max_tables() -> usize {
    1
}
