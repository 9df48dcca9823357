//! The snapshot stage: sits between the source and the pipeline, hands every stream batch on
//! unchanged (plus the snapshot progress to store with it), shows each one to the open
//! watermark windows, and slips read chunks in between stream batches once the stream has
//! passed their watermark.
//!
//! Per table at most one chunk is in flight: read (on the table's own connection, one short
//! consistent read per chunk), waiting in its window, or emitted but not yet stored. The
//! next chunk of a table is read while the previous one is being acknowledged, but emitted
//! only once the previous one's progress is stored with the checkpoint: after a crash at
//! most one chunk per table is read again.
//!
//! Invariants:
//! - a window opens only at a transaction boundary (every row change of the stream handed on
//!   after it opened is shown to it);
//! - read chunks are handed on only at a transaction boundary, with the stream's position as
//!   their commit position: the stored (position, progress) pair always belongs together;
//! - a read chunk is handed on after every stream batch it must follow (the stream passed its
//!   watermark) and before any stream batch it could make stale (its window recorded every key
//!   the stream changed since the window opened).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::{Conn, Opts};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::catalog::{load_table, SnapshotTable};
use super::chunk::{prepare_session, read_chunk_mariadb, read_chunk_mysql, ChunkRead};
use super::progress::{KeyValue, SnapshotProgress};
use super::window::{Emission, StreamPoint, Watermark, Window, WindowError};
use super::SnapshotError;
use crate::binlog::position::{GtidSet, Position};
use crate::binlog::Flavor;
use crate::decode::charset::CollationMap;
use crate::decode::event::{Batch, SnapshotMark, TxnChunks};
use crate::decode::rows::{Op, RowsChunk};
use crate::decode::table::ColKind;

/// The stage's settings (from `[snapshot]` and the source).
#[derive(Debug, Clone)]
pub struct StageSettings {
    pub chunk_rows: usize,
    pub chunk_bytes: usize,
    pub max_tables: usize,
    pub rows_per_second: u64,
    pub flavor: Flavor,
    /// The source server's server_id (`source.server_id` of read events).
    pub server_id: u32,
    /// `initial_only`: once every table is done and its progress stored, send `true` on the
    /// stop channel (the source stops, the pipeline drains, binlogd exits).
    pub exit_when_done: bool,
    /// How often progress is logged.
    pub log_every: Duration,
}

/// Requests from `binlogd snapshot start|cancel` (through the request table).
#[derive(Debug)]
pub enum Control {
    /// Snapshot these tables (again, from the start), with an optional SQL condition.
    Start {
        tables: Vec<(String, String)>,
        filter: Option<String>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// End every table not done yet; answers how many were cancelled.
    Cancel {
        reply: oneshot::Sender<Result<usize, String>>,
    },
}

/// One table being read.
struct Slot {
    db: String,
    table: String,
    def: Option<Arc<SnapshotTable>>,
    filter: Option<String>,
    conn: Option<Conn>,
    /// The chunks being read or waiting, oldest first: the front one is handed on next; one
    /// more is read ahead while it waits (its start key is the front read's last key).
    windows: VecDeque<Ahead>,
    /// A read or load task is running for this slot (for the back window).
    busy: bool,
    /// Generation of this table's last emitted chunk: the next waits until it is stored.
    emitted_gen: u64,
    /// The LIMIT of the read in flight / of the next read.
    limit: usize,
    /// Results of tasks started before this epoch are dropped (cancel, restart).
    epoch: u64,
    /// Rows read in this run (for the rate and the ETA).
    rows_read: u64,
    started: Instant,
}

/// One chunk's window, with what its read said.
struct Ahead {
    window: Window,
    /// The LIMIT it was read with.
    read_limit: usize,
    /// Once read: the last key it read (where the next chunk starts) and whether it was full.
    read: Option<(Option<Vec<KeyValue>>, bool)>,
}

enum TaskOutput {
    Loaded(Result<SnapshotTable, SnapshotError>),
    Read(Result<(ChunkRead, Watermark), SnapshotError>),
}

struct TaskResult {
    key: (String, String),
    epoch: u64,
    conn: Option<Conn>,
    out: TaskOutput,
}

pub struct Stage {
    settings: StageSettings,
    opts: Opts,
    collations: Arc<CollationMap>,
    progress: SnapshotProgress,
    generation: u64,
    mark: Option<SnapshotMark>,
    /// The last transaction end handed on.
    point: Option<Position>,
    last_event_ms: u64,
    /// The last batch handed on ended inside a transaction.
    mid_txn: bool,
    /// Read rows handed on at the current point (their `row` numbers).
    reads_at_point: u32,
    slots: HashMap<(String, String), Slot>,
    epoch: u64,
    results_tx: mpsc::Sender<TaskResult>,
    results_rx: mpsc::Receiver<TaskResult>,
    stored: watch::Receiver<u64>,
    /// Not before this instant may the next read start (rate limit).
    next_read_at: Instant,
}

fn key_of(db: &str, table: &str) -> (String, String) {
    (db.to_string(), table.to_string())
}

impl Stage {
    /// `progress`: what was stored with the start position (or a new snapshot's tables);
    /// `start`: the position streaming starts from; `stored`: the generation of the last
    /// snapshot progress the checkpoint stored.
    pub fn new(
        settings: StageSettings,
        opts: Opts,
        collations: Arc<CollationMap>,
        progress: SnapshotProgress,
        start: Option<Position>,
        stored: watch::Receiver<u64>,
    ) -> Stage {
        let (results_tx, results_rx) = mpsc::channel(64);
        let mut s = Stage {
            settings,
            opts,
            collations,
            progress,
            generation: 0,
            mark: None,
            point: start,
            last_event_ms: 0,
            mid_txn: false,
            reads_at_point: 0,
            slots: HashMap::new(),
            epoch: 0,
            results_tx,
            results_rx,
            stored,
            next_read_at: Instant::now(),
        };
        // generations restart at 1 with each run: the checkpoint stores the first progress of
        // this run with the first batch handed on (the watch starts at 0)
        s.bump();
        s
    }

    fn bump(&mut self) {
        self.generation += 1;
        self.mark = Some(SnapshotMark {
            generation: self.generation,
            progress: self.progress.to_json().into(),
        });
        self.publish_metrics();
    }

    fn publish_metrics(&self) {
        let m = crate::metrics::get();
        let total = self.progress.tables.len() as i64;
        let done = self.progress.tables.iter().filter(|t| t.done).count() as i64;
        m.snapshot_tables.set(total);
        m.snapshot_tables_done.set(done);
        m.snapshot_active.set(self.pending_tables() as i64);
    }

    fn pending_tables(&self) -> usize {
        self.progress.tables.iter().filter(|t| t.pending()).count()
    }

    fn stream_point(&self) -> Option<StreamPoint> {
        let p = self.point.as_ref()?;
        match self.settings.flavor {
            Flavor::MariaDb if !p.coord.file.is_empty() => {
                Some(StreamPoint::Coord(p.coord.clone()))
            }
            Flavor::MariaDb => None,
            Flavor::MySql => match &p.gtid {
                Some(GtidSet::MySql(g)) => Some(StreamPoint::Gtids(g.clone())),
                _ => None,
            },
        }
    }

    /// Runs until the source closes `rx` (its end, or a stop). Every batch from `rx` goes to
    /// `tx` in order. Returns an error when a table cannot be read (the daemon stops, the
    /// stored progress stays: fix the cause and start again).
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Batch>,
        tx: mpsc::Sender<Batch>,
        mut control: mpsc::Receiver<Control>,
        stop: watch::Sender<bool>,
    ) -> Result<(), SnapshotError> {
        let pending = self.pending_tables();
        if pending > 0 {
            info!(
                tables = pending,
                chunk_rows = self.settings.chunk_rows,
                max_tables = self.settings.max_tables,
                "snapshot: reading the existing rows of {pending} table(s) while streaming"
            );
        }
        let mut control_open = true;
        let mut stopping = false;
        let mut tick = tokio::time::interval(self.settings.log_every);
        tick.tick().await;
        loop {
            if !self.mid_txn {
                if self.emit_ready(&tx).await.is_err() {
                    return Ok(()); // the pipeline ended
                }
                self.schedule();
            }
            if self.settings.exit_when_done
                && !stopping
                && self.pending_tables() == 0
                && *self.stored.borrow() >= self.generation
            {
                info!("snapshot: every table is done and stored (snapshot.mode = initial_only): stopping");
                stopping = true;
                let _ = stop.send(true);
            }
            tokio::select! {
                b = rx.recv() => match b {
                    None => return Ok(()),
                    Some(mut b) => {
                        self.observe(&b);
                        b.snapshot = self.mark.clone();
                        let commit = b.commit.clone();
                        let ts = b.last_event_ms;
                        if tx.send(b).await.is_err() {
                            return Ok(());
                        }
                        self.passed(commit, ts);
                    }
                },
                Some(r) = self.results_rx.recv() => {
                    // a table ended without a chunk (gone): store that even while the stream
                    // is idle
                    if self.on_task(r)? {
                        if let Some(b) = self.progress_batch() {
                            if tx.send(b).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
                Ok(()) = self.stored.changed() => {}
                c = control.recv(), if control_open => match c {
                    None => control_open = false,
                    Some(c) => {
                        self.on_control(c).await;
                        // store the new progress even while the stream is idle
                        if let Some(b) = self.progress_batch() {
                            if tx.send(b).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                },
                _ = tick.tick() => self.log_progress(),
                // the pipeline ended (a sink failed): stop now, so the source stops too, not
                // at the next batch (an idle stream may bring none)
                () = tx.closed() => return Ok(()),
            }
        }
    }

    /// Shows a stream batch to every open window.
    fn observe(&mut self, b: &Batch) {
        if self.slots.is_empty() {
            return;
        }
        for slot in self.slots.values_mut() {
            for a in slot.windows.iter_mut() {
                for c in b.txns.iter().flat_map(|t| t.chunks.iter()) {
                    a.window.observe(c);
                }
            }
        }
    }

    /// A stream batch was handed on.
    fn passed(&mut self, commit: Option<Position>, ts: u64) {
        match commit {
            Some(p) => {
                if self.point.as_ref() != Some(&p) {
                    self.reads_at_point = 0;
                }
                self.point = Some(p);
                self.last_event_ms = ts;
                self.mid_txn = false;
            }
            None => self.mid_txn = true,
        }
    }

    /// Starts loads and reads for tables that need one (up to `max_tables` tables).
    fn schedule(&mut self) {
        let active = self.slots.len();
        if active < self.settings.max_tables {
            let want: Vec<(String, String, Option<String>)> = self
                .progress
                .tables
                .iter()
                .filter(|t| t.pending() && !self.slots.contains_key(&key_of(&t.db, &t.table)))
                .take(self.settings.max_tables - active)
                .map(|t| (t.db.clone(), t.table.clone(), t.filter.clone()))
                .collect();
            for (db, table, filter) in want {
                self.epoch += 1;
                let slot = Slot {
                    db: db.clone(),
                    table: table.clone(),
                    def: None,
                    filter,
                    conn: None,
                    windows: VecDeque::new(),
                    busy: false,
                    emitted_gen: 0,
                    limit: self
                        .settings
                        .chunk_rows
                        .min(super::config::FIRST_CHUNK_ROWS),
                    epoch: self.epoch,
                    rows_read: 0,
                    started: Instant::now(),
                };
                self.slots.insert(key_of(&db, &table), slot);
            }
        }
        let keys: Vec<(String, String)> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                // nothing in flight, or read one ahead of a full chunk waiting to be handed on
                !s.busy
                    && (s.windows.is_empty()
                        || (s.windows.len() < 2
                            && s.windows
                                .back()
                                .is_some_and(|a| matches!(a.read, Some((Some(_), true))))))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.start_task(&k);
        }
    }

    fn start_task(&mut self, k: &(String, String)) {
        let Some(at) = self.stream_point() else {
            return; // the stream position is not known yet: the first transaction tells it
        };
        let rate = self.settings.rows_per_second;
        let flavor = self.settings.flavor;
        let tx = self.results_tx.clone();
        let opts = self.opts.clone();
        let collations = self.collations.clone();
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        let mut conn = slot.conn.take();
        let key = k.clone();
        let epoch = slot.epoch;
        slot.busy = true;
        let Some(def) = slot.def.clone() else {
            tokio::spawn(async move {
                let r = async {
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => conn.insert(open_conn(&opts).await?),
                    };
                    // a table missing for a moment (a rename swap) is not taken for dropped
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        match load_table(c, &key.0, &key.1, &collations).await {
                            Err(SnapshotError::NoTable { .. }) if tries < 5 => {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            r => break r,
                        }
                    }
                }
                .await;
                if r.is_err() {
                    conn = None;
                }
                let _ = tx
                    .send(TaskResult {
                        key,
                        epoch,
                        conn,
                        out: TaskOutput::Loaded(r),
                    })
                    .await;
            });
            return;
        };
        // after the chunk read ahead of this one, else after the last chunk handed on
        let after: Option<Vec<KeyValue>> = match slot.windows.back() {
            Some(a) => match &a.read {
                Some((Some(k), true)) => Some(k.clone()),
                _ => {
                    slot.busy = false;
                    slot.conn = conn;
                    return;
                }
            },
            None => self
                .progress
                .tables
                .iter()
                .find(|t| t.db == slot.db && t.table == slot.table)
                .and_then(|t| t.last_key.clone()),
        };
        let filter = slot.filter.clone();
        let limit = slot.limit;
        // the window opens here, at a transaction boundary, before the read's watermark
        slot.windows.push_back(Ahead {
            window: Window::open(&slot.db, &slot.table, def.key_names(), at.clone()),
            read_limit: limit,
            read: None,
        });
        // a safety net, not the size: chunks are sized from the previous ones' bytes per row,
        // and a table whose rows grow would otherwise read `limit` large rows at once
        let max_bytes = self.settings.chunk_bytes.saturating_mul(2);
        let not_before = if rate > 0 {
            let now = Instant::now();
            let start = self.next_read_at.max(now);
            self.next_read_at = start + Duration::from_secs_f64(limit as f64 / rate as f64);
            Some(start)
        } else {
            None
        };
        tokio::spawn(async move {
            if let Some(t) = not_before {
                tokio::time::sleep_until(t.into()).await;
            }
            let r = read_with_retries(
                &mut conn,
                &opts,
                &def,
                after.as_deref(),
                filter.as_deref(),
                limit,
                max_bytes,
                flavor,
                &at,
            )
            .await;
            let _ = tx
                .send(TaskResult {
                    key,
                    epoch,
                    conn,
                    out: TaskOutput::Read(r),
                })
                .await;
        });
    }

    /// An empty batch at the stream's last transaction boundary carrying the current progress
    /// (so a change of it is stored while the stream is idle); None inside a transaction or
    /// before the stream's first point.
    fn progress_batch(&self) -> Option<Batch> {
        if self.mid_txn {
            return None;
        }
        self.point.clone().map(|p| Batch {
            commit: Some(p),
            last_event_ms: self.last_event_ms,
            snapshot: self.mark.clone(),
            ..Default::default()
        })
    }

    /// Handles a finished read or load; `true` when the progress changed without a chunk to
    /// carry it (a table that no longer exists), so it is stored at once.
    fn on_task(&mut self, r: TaskResult) -> Result<bool, SnapshotError> {
        let Some(slot) = self.slots.get_mut(&r.key) else {
            return Ok(false); // cancelled
        };
        if slot.epoch != r.epoch {
            return Ok(false);
        }
        slot.busy = false;
        slot.conn = r.conn;
        match r.out {
            TaskOutput::Loaded(Ok(def)) => {
                debug!(db = %slot.db, table = %slot.table, key = ?def.key_names(), "snapshot: table loaded");
                // the stored last key continues only in the key it was read by
                let (db, table) = (slot.db.clone(), slot.table.clone());
                let t = self.progress.table_mut(&db, &table);
                let names = def.key_names();
                if let Some(k) = &t.last_key {
                    let changed = if t.key_names.is_empty() {
                        k.len() != names.len()
                    } else {
                        t.key_names != names
                    };
                    if changed {
                        let was = if t.key_names.is_empty() {
                            format!("{} key column(s)", k.len())
                        } else {
                            format!("{:?}", t.key_names)
                        };
                        let message = format!(
                            "the chunk key changed during the snapshot (read by {was} so far, now {names:?}: a key \
                             column was dropped or the key replaced), so its stored last key cannot be continued. \
                             Fix: `binlogd snapshot cancel`, then `binlogd snapshot start --table {db}.{table}` reads it again"
                        );
                        return Err(SnapshotError::Table { db, table, message });
                    }
                }
                t.key_names = names;
                if let Some(slot) = self.slots.get_mut(&r.key) {
                    slot.def = Some(Arc::new(def));
                }
                Ok(false)
            }
            TaskOutput::Read(Err(SnapshotError::SchemaChanged {
                column, message, ..
            })) => {
                warn!(db = %slot.db, table = %slot.table, %column, %message, "snapshot: the table's schema changed under the read; loading it again and reading the chunk again");
                slot.def = None;
                slot.windows.clear();
                crate::metrics::get().snapshot_rereads.inc();
                Ok(false)
            }
            TaskOutput::Loaded(Err(SnapshotError::NoTable { db, table }))
            | TaskOutput::Read(Err(SnapshotError::NoTable { db, table })) => {
                // dropped or renamed under the snapshot: nothing is left to read (the stream
                // carries the DROP/RENAME); the table's snapshot ends as cancelled
                warn!(%db, %table, "snapshot: the table no longer exists (dropped or renamed): its snapshot ends, shown as cancelled; `binlogd snapshot start --table` reads a renamed table under its new name");
                if let Some(s) = self.slots.remove(&r.key) {
                    close_later(s.conn);
                }
                let t = self.progress.table_mut(&db, &table);
                t.cancelled = true;
                self.bump();
                Ok(true)
            }
            TaskOutput::Loaded(Err(e)) | TaskOutput::Read(Err(e)) => {
                error!(db = %slot.db, table = %slot.table, "snapshot: {e}");
                Err(e)
            }
            TaskOutput::Read(Ok((read, wm))) => {
                let rows = read.chunk.rows as u64;
                let bytes = read.chunk.bytes();
                slot.rows_read += rows;
                slot.limit = next_limit(
                    slot.limit,
                    rows as usize,
                    bytes,
                    self.settings.chunk_bytes,
                    self.settings.chunk_rows,
                );
                let Some(a) = slot.windows.back_mut() else {
                    return Ok(false);
                };
                if read.truncated {
                    // stopped at the byte cap: more rows follow (not the table's end)
                    a.read_limit = rows as usize;
                }
                let full = rows as usize >= a.read_limit;
                let last_key = read.last_key.clone();
                match a.window.accept(read, wm) {
                    Ok(()) => {
                        a.read = Some((last_key, full));
                        Ok(false)
                    }
                    Err(WindowError::Stale) => {
                        // read again in the same window (only after a reconnect to a server
                        // that was behind, or a read started before the window's point)
                        debug!(db = %slot.db, table = %slot.table, "snapshot: stale watermark, reading the chunk again");
                        crate::metrics::get().snapshot_rereads.inc();
                        slot.windows.pop_back();
                        Ok(false)
                    }
                    Err(e) => Err(SnapshotError::Watermark(format!(
                        "{}.{}: {e}",
                        slot.db, slot.table
                    ))),
                }
            }
        }
    }

    /// Hands on every chunk whose watermark the stream has passed, if the table's previous
    /// chunk is stored. Called only at a transaction boundary.
    async fn emit_ready(&mut self, tx: &mpsc::Sender<Batch>) -> Result<(), ()> {
        let (Some(at), Some(p)) = (self.stream_point(), self.point.clone()) else {
            return Ok(());
        };
        let stored = *self.stored.borrow();
        let ready: Vec<(String, String)> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                s.emitted_gen <= stored && s.windows.front().is_some_and(|a| a.window.is_waiting())
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in ready {
            let Some(slot) = self.slots.get_mut(&k) else {
                continue;
            };
            let Some(e) = slot
                .windows
                .front_mut()
                .and_then(|a| a.window.stream_passed(&at))
            else {
                continue;
            };
            let read_limit = slot.windows.pop_front().map(|a| a.read_limit).unwrap_or(0);
            if e.schema_changed {
                warn!(db = %slot.db, table = %slot.table, "snapshot: the table's schema changed while its chunk was read; loading it again and reading the chunk again");
                slot.def = None;
                // the chunk read ahead starts after this one's rows: read both again
                slot.windows.clear();
                if slot.busy {
                    slot.epoch = {
                        self.epoch += 1;
                        self.epoch
                    };
                    slot.busy = false;
                }
                crate::metrics::get().snapshot_rereads.inc();
                continue;
            }
            let done = e.rows_read < read_limit;
            let (db, table) = (slot.db.clone(), slot.table.clone());
            let batch = self.emission_batch(p.clone(), e, done, &db, &table);
            if let Some(slot) = self.slots.get_mut(&k) {
                slot.emitted_gen = self.generation;
            }
            if done {
                let t = self.progress.table_mut(&db, &table);
                info!(%db, %table, rows = t.rows, chunks = t.chunks, "snapshot: table done");
                if let Some(s) = self.slots.remove(&k) {
                    close_later(s.conn);
                }
            }
            tx.send(batch).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// The batch of an emitted chunk (progress updated, generation bumped).
    fn emission_batch(
        &mut self,
        p: Position,
        e: Emission,
        done: bool,
        db: &str,
        table: &str,
    ) -> Batch {
        let Emission {
            mut chunk,
            last_key,
            rows_read,
            dropped,
            ..
        } = e;
        let emitted = chunk.rows as u64;
        let run = self.progress.table_mut(db, table).run;
        self.progress.at = Some((p.coord.file.clone(), p.coord.pos));
        {
            let t = self.progress.table_mut(db, table);
            t.chunks += 1;
            t.rows += emitted;
            if let Some(k) = last_key {
                t.last_key = Some(k);
            }
            if done {
                t.done = true;
            }
        }
        self.bump();
        let m = crate::metrics::get();
        m.snapshot_chunks.inc();
        m.snapshot_dropped.inc_by(dropped as u64);
        debug!(%db, %table, rows_read, dropped, emitted, done, "snapshot: chunk handed on");
        let now = crate::metrics::now_ms();
        chunk.pos = p.coord.pos;
        chunk.server_id = self.settings.server_id;
        chunk.ts_ms = now;
        chunk.first_row = self.reads_at_point;
        self.reads_at_point = self.reads_at_point.saturating_add(chunk.rows);
        let mut chunks = Vec::with_capacity(2);
        if done && chunk.rows > 0 {
            // Debezium's convention: the table's last read event says "last"
            let last = split_last(&mut chunk);
            if chunk.rows > 0 {
                chunks.push(chunk);
            }
            chunks.push(last);
        } else if chunk.rows > 0 {
            chunks.push(chunk);
        }
        Batch {
            seq: 0,
            txns: vec![TxnChunks {
                file: p.coord.file.as_str().into(),
                gtid: None,
                chunks,
                snapshot: Some(format!("{db}.{table}#{run}").into()),
            }],
            commit: Some(p),
            last_event_ms: self.last_event_ms,
            snapshot: self.mark.clone(),
        }
    }

    async fn on_control(&mut self, c: Control) {
        match c {
            Control::Start {
                tables,
                filter,
                reply,
            } => {
                let r = self.start_tables(&tables, filter).await;
                let _ = reply.send(r);
            }
            Control::Cancel { reply } => {
                let mut n = 0;
                for t in self.progress.tables.iter_mut().filter(|t| t.pending()) {
                    t.cancelled = true;
                    n += 1;
                }
                for (_, s) in self.slots.drain() {
                    close_later(s.conn);
                }
                info!(tables = n, "snapshot: cancelled");
                self.bump();
                let _ = reply.send(Ok(n));
            }
        }
    }

    async fn start_tables(
        &mut self,
        tables: &[(String, String)],
        filter: Option<String>,
    ) -> Result<(), String> {
        if self.stream_point().is_none() {
            return Err("the stream's position is not known yet (no transaction read since the start); try again in a moment".into());
        }
        // check every table (and the condition) before taking any
        let mut c = open_conn(&self.opts).await.map_err(|e| e.to_string())?;
        let mut estimates = Vec::new();
        for (db, table) in tables {
            let def = load_table(&mut c, db, table, &self.collations)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(f) = filter.as_deref() {
                let sql = super::chunk::chunk_sql(&def, false, Some(f), 1);
                let r: Result<Vec<mysql_async::Row>, _> =
                    mysql_async::prelude::Queryable::query(&mut c, &sql).await;
                if let Err(e) = r {
                    return Err(format!("--where {f:?} on {db}.{table}: {e}"));
                }
            }
            estimates.push(super::catalog::estimate_rows(&mut c, db, table).await);
        }
        let _ = c.disconnect().await;
        for ((db, table), estimate) in tables.iter().zip(estimates) {
            if let Some(s) = self.slots.remove(&key_of(db, table)) {
                info!(%db, %table, "snapshot: restarting the table's snapshot from its first row");
                drop(s);
            }
            let t = self.progress.table_mut(db, table);
            *t = super::progress::TableProgress::new(db, table);
            t.filter = filter.clone();
            t.estimate = estimate;
            info!(%db, %table, filter = ?filter, estimate, "snapshot: table requested");
        }
        self.bump();
        Ok(())
    }

    fn log_progress(&self) {
        let m = crate::metrics::get();
        let mut eta_total = 0f64;
        for s in self.slots.values() {
            let Some(t) = self
                .progress
                .tables
                .iter()
                .find(|t| t.db == s.db && t.table == s.table)
            else {
                continue;
            };
            let secs = s.started.elapsed().as_secs_f64().max(0.001);
            let rate = s.rows_read as f64 / secs;
            let left = t.estimate.saturating_sub(t.rows) as f64;
            let eta = if rate > 0.0 { left / rate } else { 0.0 };
            eta_total = eta_total.max(eta);
            let pct = if t.estimate > 0 {
                (t.rows as f64 * 100.0 / t.estimate as f64).min(100.0)
            } else {
                0.0
            };
            info!(
                db = %s.db, table = %s.table, rows = t.rows, estimate = t.estimate,
                rows_per_sec = rate as u64, eta_secs = eta as u64,
                "snapshot: {} {pct:.0}%", bar(pct)
            );
        }
        m.snapshot_eta_seconds.set(eta_total);
    }
}

/// `[#####.....]` for a percentage.
pub fn bar(pct: f64) -> String {
    let n = ((pct / 5.0).round() as usize).min(20);
    format!("[{}{}]", "#".repeat(n), ".".repeat(20 - n))
}

/// Moves the last row of `chunk` into a chunk of its own marked `last`.
fn split_last(chunk: &mut RowsChunk) -> RowsChunk {
    let n = chunk.table.columns.len();
    let r = chunk.rows as usize - 1;
    let cells = chunk.cells.split_off(r * n);
    chunk.rows -= 1;
    RowsChunk {
        table: chunk.table.clone(),
        op: Op::Read { last: true },
        rows: 1,
        data: chunk.data.clone(),
        cells,
        partial_json: Vec::new(),
        pos: chunk.pos,
        first_row: chunk.first_row + chunk.rows,
        server_id: chunk.server_id,
        ts_ms: chunk.ts_ms,
        text_checked: chunk.text_checked,
    }
}

/// A snapshot connection (session set up for chunk reads).
pub async fn open_conn(opts: &Opts) -> Result<Conn, SnapshotError> {
    let mut c = Conn::new(opts.clone()).await?;
    prepare_session(&mut c).await?;
    Ok(c)
}

/// The row limit of a table's next chunk after one of `rows` rows and `bytes` bytes was read
/// with `limit`: as many rows as fit in `chunk_bytes` at this chunk's bytes per row, growing at
/// most twofold per chunk, at least 1, at most `chunk_rows` (wide rows: fewer rows at once).
fn next_limit(
    limit: usize,
    rows: usize,
    bytes: usize,
    chunk_bytes: usize,
    chunk_rows: usize,
) -> usize {
    if rows == 0 {
        return limit;
    }
    let fit = (rows as u128 * chunk_bytes as u128 / bytes.max(1) as u128) as usize;
    fit.min(limit.saturating_mul(2)).clamp(1, chunk_rows)
}

/// Disconnects a table's read connection in the background (its table is done, cancelled or
/// gone).
fn close_later(conn: Option<Conn>) {
    if let Some(c) = conn {
        tokio::spawn(async move {
            let _ = c.disconnect().await;
        });
    }
}

/// Reads a chunk with its watermark; reconnects on a lost connection (5 tries). A schema
/// that changed under the read comes back as [`SnapshotError::SchemaChanged`].
#[allow(clippy::too_many_arguments)]
async fn read_with_retries(
    conn: &mut Option<Conn>,
    opts: &Opts,
    def: &SnapshotTable,
    after: Option<&[KeyValue]>,
    filter: Option<&str>,
    limit: usize,
    max_bytes: usize,
    flavor: Flavor,
    at: &StreamPoint,
) -> Result<(ChunkRead, Watermark), SnapshotError> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let r = async {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(open_conn(opts).await?),
            };
            match (flavor, at) {
                (Flavor::MySql, StreamPoint::Gtids(seen)) => {
                    read_chunk_mysql(
                        c,
                        def,
                        after,
                        filter,
                        limit,
                        max_bytes,
                        seen,
                        Duration::from_secs(30),
                    )
                    .await
                }
                _ => read_chunk_mariadb(c, def, after, filter, limit, max_bytes).await,
            }
        }
        .await;
        let r = match r {
            // An ALTER that completed before the read is not seen by a SELECT of the columns
            // loaded before it (a new column, say): compare the table's definition now. After
            // the read is enough: its transaction held the table's metadata lock, so a
            // definition equal to the loaded one now was the one at the read.
            Ok(x) => definition_check(conn, def).await.map(|()| x),
            Err(e) => Err(e),
        };
        match r {
            Ok(x) => return Ok(x),
            // a column the chunk names was dropped (or renamed) since the table was loaded —
            // or the `--where` condition names one: only a changed definition reads again
            Err(SnapshotError::Server(mysql_async::Error::Server(e)))
                if e.code == crate::mysql::errors::ER_BAD_FIELD =>
            {
                return Err(match definition_check(conn, def).await {
                    Err(changed @ SnapshotError::SchemaChanged { .. }) => changed,
                    _ => SnapshotError::Server(mysql_async::Error::Server(e)),
                });
            }
            // the table missing after every retry (a rename swap of an online schema change
            // leaves it missing for a moment at most): dropped or renamed
            Err(SnapshotError::Server(mysql_async::Error::Server(e)))
                if e.code == crate::mysql::errors::ER_NO_SUCH_TABLE
                    && attempt >= 5
                    && filter.is_none_or(|f| f.trim().is_empty()) =>
            {
                return Err(SnapshotError::NoTable {
                    db: def.db().into(),
                    table: def.table().into(),
                });
            }
            Err(SnapshotError::Server(e))
                if attempt < 5 && crate::mysql::errors::is_transient(&e) =>
            {
                warn!(db = %def.db(), table = %def.table(), error = %e, attempt, "snapshot: read failed; reconnecting");
                *conn = None;
                tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The table's definition now against the one its chunk was read with (names and encodings of
/// the columns, see [`super::chunk::check_result_columns`]).
async fn definition_check(
    conn: &mut Option<Conn>,
    def: &SnapshotTable,
) -> Result<(), SnapshotError> {
    use mysql_async::prelude::Queryable;
    let Some(c) = conn.as_mut() else {
        return Ok(());
    };
    let sql = format!(
        "SELECT * FROM {}.{} LIMIT 0",
        super::chunk::quote_ident(def.db()),
        super::chunk::quote_ident(def.table())
    );
    let result = c.query_iter(sql).await?;
    let cols: Vec<mysql_async::Column> = result.columns_ref().to_vec();
    drop(result.drop_result().await);
    let names: Vec<String> = cols.iter().map(|c| c.name_str().into_owned()).collect();
    // INVISIBLE columns are not in `SELECT *` (the chunk names them; their types were
    // checked on its result)
    let invisible = |i: usize| def.invisible.get(i).copied().unwrap_or(false);
    let want: Vec<String> = def
        .schema
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !invisible(*i))
        .map(|(_, c)| c.name.clone())
        .collect();
    if names != want {
        return Err(SnapshotError::SchemaChanged {
            db: def.db().into(),
            table: def.table().into(),
            column: "*".into(),
            message: format!("columns are now {names:?}, the chunk read {want:?}"),
        });
    }
    if !def.invisible.iter().any(|&x| x) {
        super::chunk::check_result_columns(def, &cols)?;
    }
    // what the result set does not show: ENUM/SET labels. Their values are read as indexes and
    // rendered with the loaded labels, so reordered labels would render other labels. Only for
    // tables with such columns: the query costs a round trip per chunk (~2 ms on MariaDB)
    let labelled = def
        .schema
        .columns
        .iter()
        .any(|c| matches!(c.kind, ColKind::Enum { .. } | ColKind::Set { .. }));
    if !labelled {
        return Ok(());
    }
    let types: Vec<String> = c
        .exec(
            "SELECT COLUMN_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (def.db(), def.table()),
        )
        .await?;
    if let Some((i, (now, was))) = types
        .iter()
        .zip(&def.column_types)
        .enumerate()
        .find(|(_, (now, was))| now != was)
    {
        return Err(SnapshotError::SchemaChanged {
            db: def.db().into(),
            table: def.table().into(),
            column: def.schema.columns[i].name.clone(),
            message: format!("now {now}, the chunk was read as {was}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::next_limit;

    #[test]
    fn chunks_grow_to_the_byte_cap_and_shrink_for_wide_rows() {
        const MIB: usize = 1 << 20;
        // 256 B per row, 4 MiB cap: 1024 → 2048 → … → 16384, then stays
        let mut limit = 1024;
        let mut seen = vec![limit];
        for _ in 0..8 {
            limit = next_limit(limit, limit, limit * 256, 4 * MIB, 65_536);
            seen.push(limit);
        }
        assert_eq!(&seen[..6], &[1024, 2048, 4096, 8192, 16384, 16384]);
        assert_eq!(limit, 16384);
        // chunk_rows caps it
        assert_eq!(
            next_limit(16384, 16384, 16384 * 16, 4 * MIB, 20_000),
            20_000
        );
        // 1 MiB rows: one row per 4 MiB... of which one fits
        assert_eq!(next_limit(1024, 1024, 1024 * MIB, 4 * MIB, 65_536), 4);
        assert_eq!(next_limit(4, 4, 40 * MIB, 4 * MIB, 65_536), 1);
        // an empty chunk (the end) changes nothing; a short last chunk grows at most twofold
        assert_eq!(next_limit(300, 0, 0, 4 * MIB, 65_536), 300);
        assert_eq!(next_limit(300, 5, 500, 4 * MIB, 65_536), 600);
        // a small configured chunk_rows (the tests' 200) is kept
        assert_eq!(next_limit(200, 200, 200 * 256, 4 * MIB, 200), 200);
    }
}
