//! The watermark window of one table's in-flight chunk (no I/O).
//!
//! Protocol, per chunk:
//!
//! 1. [`Window::open`] with the stream's current point `S` (what the stream has handed on so
//!    far). From then on the stream shows the window every row change on the table it hands on
//!    ([`Window::observe`]): the window records the key of the before and the after image (an
//!    update that changes the key records both keys; a TRUNCATE/DROP of the table drops the
//!    whole chunk).
//! 2. The chunk is read with its watermark ([`super::chunk::read_chunk_mariadb`] /
//!    [`super::chunk::read_chunk_mysql`]) and given to [`Window::chunk_read`]. A watermark that
//!    does not cover `S` is refused (`Stale`): a change handed on before the window opened
//!    might not be visible to the chunk's snapshot, and would not be recorded; read again.
//! 3. [`Window::stream_passed`] with each new stream point; once the stream has handed on
//!    everything up to the watermark, the chunk is emitted minus every row whose key was
//!    recorded. (If the stream is already past when the chunk arrives, `chunk_read` emits at
//!    once.)
//!
//! Why the output converges: every change to a chunk row that the snapshot does not show is
//! after the watermark, so it is handed on after the window opened (the watermark covers `S`)
//! and before or after emission. If before, it was recorded and the (stale) row is dropped: the
//! stream already carries a newer image. If after, the read event precedes it, and the change
//! is applied on top. A row the stream changed while the window was open but whose change the
//! snapshot does show is dropped too; that is safe, the stream carries that image.
//!
//! **Watermark kinds** (decided by the lead):
//!
//! - **MariaDB: a binlog coordinate.** The chunk is read in `START TRANSACTION WITH CONSISTENT
//!   SNAPSHOT`; `SHOW STATUS LIKE 'binlog_snapshot_%'` then gives the binlog file/position the
//!   snapshot is consistent with: every transaction before it is visible, none after. MariaDB
//!   takes it under the commit-order lock (engine commit order = binlog order), which is what
//!   `mariadb-dump --single-transaction --master-data` relies on. Emit when the stream's
//!   handed-on position is at or past it. Measured on 10.11.19 under concurrent single-row
//!   inserts: the rows visible to the snapshot are exactly the rows events ending at or before
//!   `Binlog_snapshot_position` (tests/snapshot_images.rs `mariadb_snapshot_position_is_exact`).
//! - **MySQL: GTID sets.** The window is opened with the stream's GTID set `S`; then
//!   `@@gtid_executed` is read until it contains `S` (normally at once) = `low`; then `START
//!   TRANSACTION WITH CONSISTENT SNAPSHOT`, SELECT, COMMIT; then `@@gtid_executed` = `high`. Emit
//!   when the stream has seen every GTID in `high`. MySQL adds a transaction's GTID to
//!   gtid_executed only after its engine commit (binlog.cc `process_commit_stage_queue`:
//!   `finish_transaction_in_engines` for the whole commit group, then
//!   `gtid_state->update_commit_group(first)`; with `binlog_order_commits=OFF` each thread
//!   commits in the engine and then updates the GTID state in `finish_commit`). So everything
//!   in `low` (⊇ `S`) is visible to the snapshot, and everything the snapshot shows is committed
//!   and thus in `high`, so it reaches the stream before emission; a change outside `high` that
//!   touched a chunk key while the window was open is recorded and its row dropped. (The order
//!   was read in a quoted excerpt of binlog.cc, commit 008e09c, lines 7550–7614, not in the
//!   repository itself; the test `mysql_gtid_watermarks_bracket_the_snapshot` checks the
//!   consequence on 9.7 under concurrent inserts.)

use std::collections::HashSet;
use std::sync::Arc;

use crate::binlog::position::{coord_le, BinlogCoord, MySqlGtidSet};
use crate::decode::rows::{Cell, Op, RowsChunk};
use crate::decode::table::{ColumnSchema, TableSchema};
use crate::decode::value::push_value_in;

use super::chunk::ChunkRead;
use super::progress::KeyValue;

/// How far the stream has handed on (after its last handed-on transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPoint {
    /// MariaDB: the binlog coordinate after the last transaction handed on.
    Coord(BinlogCoord),
    /// MySQL: every GTID handed on so far (the stream's GTID state).
    Gtids(MySqlGtidSet),
}

/// What a chunk's read is consistent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watermark {
    /// MariaDB: `Binlog_snapshot_file`/`Binlog_snapshot_position` of the read's transaction.
    Coord(BinlogCoord),
    /// MySQL: `@@gtid_executed` before (`low`, ⊇ the window's open point) and after (`high`)
    /// the read.
    Gtids {
        low: MySqlGtidSet,
        high: MySqlGtidSet,
    },
}

impl Watermark {
    /// The watermark's read saw everything the stream had handed on at `p`.
    pub fn covers(&self, p: &StreamPoint) -> bool {
        match (self, p) {
            (Watermark::Coord(w), StreamPoint::Coord(s)) => coord_le(&s.file, s.pos, w),
            (Watermark::Gtids { low, .. }, StreamPoint::Gtids(s)) => low.contains_set(s),
            _ => false,
        }
    }

    /// The stream at `p` has handed on everything the read can show.
    pub fn passed_by(&self, p: &StreamPoint) -> bool {
        match (self, p) {
            (Watermark::Coord(w), StreamPoint::Coord(s)) => coord_le(&w.file, w.pos, s),
            (Watermark::Gtids { high, .. }, StreamPoint::Gtids(s)) => s.contains_set(high),
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error(
        "the chunk's watermark does not cover what the stream had handed on when the window \
         opened: read the chunk again"
    )]
    Stale,
    #[error(
        "watermark and stream point are of different kinds (MariaDB coordinate vs MySQL GTIDs)"
    )]
    KindMismatch,
    #[error("a chunk is already waiting in this window")]
    Busy,
}

/// A chunk let out of the window.
#[derive(Debug)]
pub struct Emission {
    /// The rows to emit as read events (`Op::Read`), in key order.
    pub chunk: RowsChunk,
    /// The key of the last row read (also when that row was dropped): where the next chunk
    /// starts. `None`: the chunk was empty, the table is done.
    pub last_key: Option<Vec<KeyValue>>,
    pub watermark: Watermark,
    pub rows_read: usize,
    pub dropped: usize,
    /// The stream showed the table with a schema the chunk's key cannot be read from (an
    /// ALTER while the window was open): nothing is emitted, read the chunk again (same start)
    /// with the table's schema loaded anew.
    pub schema_changed: bool,
}

/// The watermark window of one table.
#[derive(Debug)]
pub struct Window {
    db: String,
    table: String,
    key_names: Vec<String>,
    opened_at: StreamPoint,
    last_seen: StreamPoint,
    recorded: HashSet<Vec<u8>>,
    truncated: bool,
    schema_changed: bool,
    pending: Option<(ChunkRead, Watermark)>,
    /// key column indexes per stream table schema (by identity), cached
    key_cols: Option<(Arc<TableSchema>, Option<Vec<usize>>)>,
}

/// The key of a row image: a JSON array of its key columns as the renderer renders them
/// (`[42,"abc"]`); NULL or absent cells are `null`.
pub fn render_key(
    columns: &[ColumnSchema],
    key: &[usize],
    data: &[u8],
    cells: &[Cell],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(16);
    out.push(b'[');
    for (n, &i) in key.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let (Some(col), Some(cell)) = (columns.get(i), cells.get(i)) else {
            return Err(format!("key column {i} is not in the row"));
        };
        if cell.is_null() || cell.is_absent() {
            out.extend_from_slice(b"null");
            continue;
        }
        let v = data
            .get(cell.start as usize..(cell.start as usize + cell.len as usize))
            .ok_or("cell outside its chunk")?;
        push_value_in(&mut out, col, v, false)?;
    }
    out.push(b']');
    Ok(out)
}

impl Window {
    /// Opens the window at the stream's current point (see the module docs).
    pub fn open(db: &str, table: &str, key_names: Vec<String>, at: StreamPoint) -> Window {
        Window {
            db: db.into(),
            table: table.into(),
            key_names,
            last_seen: at.clone(),
            opened_at: at,
            recorded: HashSet::new(),
            truncated: false,
            schema_changed: false,
            pending: None,
            key_cols: None,
        }
    }

    pub fn opened_at(&self) -> &StreamPoint {
        &self.opened_at
    }

    /// Records one key (as [`render_key`] renders it) changed by the stream.
    pub fn record_key(&mut self, key: Vec<u8>) {
        self.recorded.insert(key);
    }

    /// Number of keys recorded so far.
    pub fn recorded(&self) -> usize {
        self.recorded.len()
    }

    /// The stream hands on `chunk`: records the keys of its rows if it is this table's (before
    /// and after images). A truncate of the table drops the whole pending chunk. A row whose
    /// key cannot be rendered, or a table whose schema lacks a key column (changed under the
    /// snapshot), is treated as a truncate: nothing of this chunk is emitted.
    pub fn observe(&mut self, chunk: &RowsChunk) {
        let t = &chunk.table;
        if t.db != self.db || t.table != self.table || matches!(chunk.op, Op::Read { .. }) {
            return;
        }
        if chunk.op == Op::Truncate {
            self.truncated = true;
            return;
        }
        let cols = match &self.key_cols {
            Some((s, c)) if Arc::ptr_eq(s, t) => c.clone(),
            _ => {
                let c: Option<Vec<usize>> = self
                    .key_names
                    .iter()
                    .map(|n| t.columns.iter().position(|c| &c.name == n))
                    .collect();
                self.key_cols = Some((t.clone(), c.clone()));
                c
            }
        };
        let Some(cols) = cols else {
            self.schema_changed = true;
            return;
        };
        for r in 0..chunk.rows as usize {
            for img in [chunk.before(r), chunk.after(r)].into_iter().flatten() {
                match render_key(&t.columns, &cols, &chunk.data, img) {
                    Ok(k) => {
                        self.recorded.insert(k);
                    }
                    Err(_) => self.schema_changed = true,
                }
            }
        }
    }

    /// The chunk read while the window was open, with its watermark. Refused with
    /// [`WindowError::Stale`] when the watermark does not cover the open point (read again;
    /// the window stays open). Emits at once when the stream is already past the watermark.
    pub fn chunk_read(
        &mut self,
        chunk: ChunkRead,
        watermark: Watermark,
    ) -> Result<Option<Emission>, WindowError> {
        self.accept(chunk, watermark)?;
        let at = self.last_seen.clone();
        Ok(self.stream_passed(&at))
    }

    /// As [`Window::chunk_read`], without emitting: the chunk waits in the window (whose
    /// recording goes on) until [`Window::stream_passed`] lets it out. For a caller that may
    /// emit only at certain moments (transaction boundaries, after the previous chunk's
    /// progress is stored).
    pub fn accept(&mut self, chunk: ChunkRead, watermark: Watermark) -> Result<(), WindowError> {
        if self.pending.is_some() {
            return Err(WindowError::Busy);
        }
        if !matches!(
            (&watermark, &self.opened_at),
            (Watermark::Coord(_), StreamPoint::Coord(_))
                | (Watermark::Gtids { .. }, StreamPoint::Gtids(_))
        ) {
            return Err(WindowError::KindMismatch);
        }
        if !watermark.covers(&self.opened_at) {
            return Err(WindowError::Stale);
        }
        self.pending = Some((chunk, watermark));
        Ok(())
    }

    /// A chunk is waiting for the stream to pass its watermark.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// The stream has handed on everything up to `at`: emits the chunk once `at` passes its
    /// watermark.
    pub fn stream_passed(&mut self, at: &StreamPoint) -> Option<Emission> {
        self.last_seen = at.clone();
        let ready = self.pending.as_ref().is_some_and(|(_, w)| w.passed_by(at));
        if !ready {
            return None;
        }
        let (read, watermark) = self.pending.take()?;
        Some(self.filter(read, watermark))
    }

    fn filter(&mut self, read: ChunkRead, watermark: Watermark) -> Emission {
        let ChunkRead {
            mut chunk,
            keys,
            last_key,
            ..
        } = read;
        let n = chunk.table.columns.len();
        let rows_read = chunk.rows as usize;
        let keep: Vec<bool> = if self.truncated || self.schema_changed {
            vec![false; rows_read]
        } else {
            keys.iter().map(|k| !self.recorded.contains(k)).collect()
        };
        let kept = keep.iter().filter(|&&k| k).count();
        if kept != rows_read {
            let mut cells = Vec::with_capacity(kept * n);
            for (r, k) in keep.iter().enumerate() {
                if *k {
                    cells.extend_from_slice(&chunk.cells[r * n..(r + 1) * n]);
                }
            }
            chunk.cells = cells;
            chunk.rows = kept as u32;
        }
        Emission {
            chunk,
            last_key,
            watermark,
            rows_read,
            dropped: rows_read - kept,
            schema_changed: self.schema_changed && !self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::table::ColKind;

    fn schema() -> Arc<TableSchema> {
        let mut t = TableSchema::named("d", "t");
        for (name, kind) in [("id", ColKind::Int(4)), ("v", ColKind::Int(4))] {
            t.columns.push(ColumnSchema {
                name: name.into(),
                json_key: format!("\"{name}\":").into(),
                type_code: 3,
                kind,
                unsigned: false,
                text: None,
                json_text: false,
                labels: None,
                binary_pad: None,
                special: None,
                json_origin: None,
            });
        }
        t.primary_key = vec![0];
        Arc::new(t)
    }

    /// A chunk of `op` whose rows are (id, v) images: 1 image per row, 2 for updates.
    fn chunk(t: &Arc<TableSchema>, op: Op, images: &[(i32, i32)]) -> RowsChunk {
        let mut data = Vec::new();
        let mut cells = Vec::new();
        for (a, b) in images {
            for x in [a, b] {
                cells.push(Cell {
                    start: data.len() as u32,
                    len: 4,
                });
                data.extend_from_slice(&x.to_le_bytes());
            }
        }
        let per = if op == Op::Update { 2 } else { 1 };
        RowsChunk {
            table: t.clone(),
            op,
            rows: (images.len() / per) as u32,
            data: data.into(),
            cells,
            partial_json: Vec::new(),
            pos: 0,
            first_row: 0,
            server_id: 0,
            ts_ms: 0,
            text_checked: false,
        }
    }

    fn read(t: &Arc<TableSchema>, ids: &[i32]) -> ChunkRead {
        let imgs: Vec<(i32, i32)> = ids.iter().map(|&i| (i, i * 10)).collect();
        let c = chunk(t, Op::Read { last: false }, &imgs);
        let keys = (0..c.rows as usize)
            .map(|r| render_key(&t.columns, &[0], &c.data, c.after(r).unwrap()).unwrap())
            .collect();
        ChunkRead {
            chunk: c,
            keys,
            last_key: ids.last().map(|&i| vec![KeyValue::Int(i as i64)]),
            truncated: false,
        }
    }

    fn coord(pos: u64) -> StreamPoint {
        StreamPoint::Coord(BinlogCoord {
            file: "binlog.000001".into(),
            pos,
        })
    }

    fn wm(pos: u64) -> Watermark {
        Watermark::Coord(BinlogCoord {
            file: "binlog.000001".into(),
            pos,
        })
    }

    fn ids(e: &Emission) -> Vec<i64> {
        let t = &e.chunk.table;
        (0..e.chunk.rows as usize)
            .map(|r| {
                let c = e.chunk.after(r).unwrap()[0];
                let v = &e.chunk.data[c.start as usize..(c.start + c.len) as usize];
                let mut o = Vec::new();
                push_value_in(&mut o, &t.columns[0], v, false).unwrap();
                String::from_utf8(o).unwrap().parse().unwrap()
            })
            .collect()
    }

    fn win(at: StreamPoint) -> Window {
        Window::open("d", "t", vec!["id".into()], at)
    }

    #[test]
    fn change_before_open_is_not_dropped() {
        let t = schema();
        // the stream handed on an update of id 2 before the window opened: not observed
        let mut w = win(coord(100));
        assert!(w
            .chunk_read(read(&t, &[1, 2, 3]), wm(150))
            .unwrap()
            .is_none());
        let e = w.stream_passed(&coord(150)).unwrap();
        assert_eq!(ids(&e), [1, 2, 3]);
        assert_eq!((e.rows_read, e.dropped), (3, 0));
        assert_eq!(e.last_key, Some(vec![KeyValue::Int(3)]));
    }

    #[test]
    fn change_while_open_is_dropped() {
        let t = schema();
        let mut w = win(coord(100));
        // insert, update, delete of chunk keys handed on while open; another table ignored
        w.observe(&chunk(&t, Op::Insert, &[(2, 0)]));
        w.observe(&chunk(&t, Op::Delete, &[(4, 40)]));
        let mut other = TableSchema::named("d", "other");
        other.columns = t.columns.clone();
        w.observe(&chunk(&Arc::new(other), Op::Delete, &[(1, 10)]));
        assert!(w.stream_passed(&coord(120)).is_none(), "no chunk yet");
        assert!(w
            .chunk_read(read(&t, &[1, 2, 3, 4]), wm(150))
            .unwrap()
            .is_none());
        // a change after the read, before the watermark passes, is recorded too
        w.observe(&chunk(&t, Op::Update, &[(3, 30), (3, 31)]));
        let e = w.stream_passed(&coord(150)).unwrap();
        assert_eq!(ids(&e), [1]);
        assert_eq!((e.rows_read, e.dropped), (4, 3));
        assert_eq!(
            e.last_key,
            Some(vec![KeyValue::Int(4)]),
            "resume after the last read"
        );
    }

    #[test]
    fn key_changing_update_drops_both_keys() {
        let t = schema();
        let mut w = win(coord(100));
        // UPDATE t SET id = 7 WHERE id = 2
        w.observe(&chunk(&t, Op::Update, &[(2, 20), (7, 20)]));
        w.chunk_read(read(&t, &[1, 2, 5, 7, 9]), wm(110)).unwrap();
        let e = w.stream_passed(&coord(200)).unwrap();
        assert_eq!(ids(&e), [1, 5, 9]);
    }

    #[test]
    fn emission_waits_for_the_watermark() {
        let t = schema();
        let mut w = win(coord(100));
        assert!(w.chunk_read(read(&t, &[1]), wm(300)).unwrap().is_none());
        assert!(w.stream_passed(&coord(200)).is_none());
        assert!(w.stream_passed(&coord(299)).is_none());
        // the next binlog file is past any position of the previous one
        let next = StreamPoint::Coord(BinlogCoord {
            file: "binlog.000002".into(),
            pos: 4,
        });
        assert!(w.stream_passed(&next).is_some());
        assert!(w.stream_passed(&coord(400)).is_none(), "emitted once");
    }

    #[test]
    fn emission_is_immediate_when_the_stream_is_already_past() {
        let t = schema();
        let mut w = win(coord(100));
        assert!(w.stream_passed(&coord(500)).is_none());
        let e = w.chunk_read(read(&t, &[1, 2]), wm(300)).unwrap().unwrap();
        assert_eq!(ids(&e), [1, 2]);
    }

    #[test]
    fn a_watermark_before_the_open_point_is_stale() {
        let t = schema();
        let mut w = win(coord(100));
        assert_eq!(
            w.chunk_read(read(&t, &[1]), wm(90)).unwrap_err(),
            WindowError::Stale
        );
        // re-read: accepted
        assert!(w.chunk_read(read(&t, &[1]), wm(120)).unwrap().is_none());
        assert_eq!(
            w.chunk_read(read(&t, &[1]), wm(120)).unwrap_err(),
            WindowError::Busy
        );
    }

    #[test]
    fn truncate_while_open_drops_the_chunk() {
        let t = schema();
        let mut w = win(coord(100));
        w.chunk_read(read(&t, &[1, 2]), wm(110)).unwrap();
        w.observe(&chunk(&t, Op::Truncate, &[]));
        let e = w.stream_passed(&coord(110)).unwrap();
        assert_eq!((e.chunk.rows, e.dropped), (0, 2));
        assert_eq!(e.last_key, Some(vec![KeyValue::Int(2)]));
    }

    #[test]
    fn gtid_watermarks() {
        let t = schema();
        let set = |s: &str| -> MySqlGtidSet { s.parse().unwrap() };
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let s0 = StreamPoint::Gtids(set(&format!("{u}:1-10")));
        let mut w = win(s0.clone());
        // low must contain what the stream had handed on at open
        let stale = Watermark::Gtids {
            low: set(&format!("{u}:1-9")),
            high: set(&format!("{u}:1-12")),
        };
        assert_eq!(
            w.chunk_read(read(&t, &[1]), stale).unwrap_err(),
            WindowError::Stale
        );
        let ok = Watermark::Gtids {
            low: set(&format!("{u}:1-10")),
            high: set(&format!("{u}:1-12")),
        };
        w.observe(&chunk(&t, Op::Insert, &[(1, 1)]));
        assert!(w.chunk_read(read(&t, &[1, 2]), ok).unwrap().is_none());
        assert!(w
            .stream_passed(&StreamPoint::Gtids(set(&format!("{u}:1-11"))))
            .is_none());
        // a hole in what the stream saw: not yet
        assert!(w
            .stream_passed(&StreamPoint::Gtids(set(&format!("{u}:1-10:12"))))
            .is_none());
        let e = w
            .stream_passed(&StreamPoint::Gtids(set(&format!(
                "{u}:1-13,4e11fa47-71ca-11e1-9e33-c80aa9429562:1"
            ))))
            .unwrap();
        assert_eq!(ids(&e), [2]);
        // kinds must match
        let mut w = win(s0);
        assert_eq!(
            w.chunk_read(read(&t, &[1]), wm(1)).unwrap_err(),
            WindowError::KindMismatch
        );
    }
}
