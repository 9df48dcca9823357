//! Decode: binlog events → row changes grouped by transaction.
//!
//! The [`Decoder`] is a state machine fed one event at a time in stream order. It tracks the
//! binlog file and position, the GTID state, transaction boundaries and table schemas (from
//! TABLE_MAP metadata), and produces [`Batch`]es of row changes. It does no I/O: what it needs
//! from the server (MariaDB JSON columns, the MINIMAL-metadata fallback) it asks for with
//! [`Step::NeedHints`], and the source answers with [`Decoder::set_hints`].

pub mod charset;
pub mod event;
#[cfg(test)]
mod fuzz_tests;
pub mod json_text;
pub mod jsondiff;
pub mod mariadb;
pub mod rows;
pub mod statement;
pub mod table;
pub mod validate;
pub mod value;
pub mod wire;

use mysql_common::binlog::consts::BinlogChecksumAlg;
use mysql_common::binlog::events::{
    Event, GtidEvent, PreviousGtidsEvent, QueryEvent, RotateEvent, TableMapEvent,
    TransactionPayloadEvent,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::binlog::event_type as et;
use crate::binlog::position::{
    coord_le, BinlogCoord, GtidSet, MariaGtidPos, MySqlGtidSet, Position,
};
use crate::binlog::Flavor;
use crate::decode::event::{Batch, TxnChunks};
use crate::filter::TableFilter;
use charset::CollationMap;
use rows::{Op, RowsChunk, RowsEventKind};
use statement::{statement_target, Savepoint, XaVerb, Xid};
use table::{SchemaHints, TableSchema};
pub(crate) use wire::{fake_rotate_has_crc, previous_gtids_fits, transaction_payload_fits};

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("table {table}: {message}")]
    Schema { table: String, message: String },
    #[error("{0}")]
    Malformed(String),
    /// An event that could not be cut out of a binlog file or the stream (corrupt or
    /// truncated framing): `pos` is the byte offset where it starts.
    #[error("{file}:{pos}: {message}")]
    Framing {
        file: String,
        pos: u64,
        message: String,
    },
    #[error("event type {event_type} at {file}:{pos}: {inner}")]
    At {
        file: String,
        pos: u64,
        event_type: u8,
        inner: Box<DecodeError>,
    },
}

impl DecodeError {
    fn at(self, file: &str, pos: u64, event_type: u8) -> DecodeError {
        match self {
            e @ (DecodeError::At { .. } | DecodeError::Framing { .. }) => e,
            e => DecodeError::At {
                file: file.to_string(),
                pos,
                event_type,
                inner: Box::new(e),
            },
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

/// What the caller must do after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Fetch [`SchemaHints`] for this table, call [`Decoder::set_hints`], then feed the same
    /// event again.
    NeedHints {
        db: String,
        table: String,
    },
}

#[derive(Debug, Default)]
struct OpenTxn {
    gtid: Option<Arc<str>>,
    mysql_gtid: Option<(String, u64)>,
    maria_gtid: Option<mariadb::MariaGtid>,
    began: bool,
    commit_ts_ms: Option<u64>,
    chunks: Vec<RowsChunk>,
    bytes: usize,
    /// An XA transaction (from `XA START`): its rows are held at XA PREPARE.
    xa: Option<Xid>,
    /// Acknowledged before a restart: read again only to rebuild the XA state.
    replayed: bool,
    /// Open savepoints: name, the number of `chunks` before it, and whether all rows after it
    /// are still held (false once the hold limit handed some on).
    savepoints: Vec<(String, usize, bool)>,
    /// Rows of this transaction already handed on (a large transaction in parts).
    handed_rows: bool,
    /// The resume point before this transaction began.
    before: Option<Position>,
}

/// A prepared XA transaction waiting for its XA COMMIT or XA ROLLBACK.
#[derive(Debug)]
struct HeldXa {
    xid: Xid,
    chunks: Vec<RowsChunk>,
    rows: u64,
    /// Where reading must restart to read its PREPARE group again.
    restart: Position,
    prepared_at: BinlogCoord,
    prepared_ms: u64,
}

#[derive(Debug)]
struct Payload {
    start: u64,
    end: u64,
    remaining: u64,
    rows: u32,
}

/// A statement as it may be logged: account statements (which can carry passwords in clear
/// text, e.g. MariaDB's `CREATE USER … IDENTIFIED BY '…'`) are reduced to their verb.
pub fn loggable_ddl(stmt: &str) -> String {
    let words: Vec<String> = stmt
        .split_whitespace()
        .take(3)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let w = |i: usize| words.get(i).map(|s| s.as_str()).unwrap_or("");
    let account = matches!(
        (w(0), w(1)),
        ("CREATE" | "ALTER" | "DROP" | "RENAME", "USER" | "ROLE")
            | ("SET", "PASSWORD")
            | ("GRANT", _)
            | ("REVOKE", _)
    ) || (w(0) == "CREATE" && w(1) == "OR" && w(2) == "REPLACE")
        || stmt.to_ascii_uppercase().contains("IDENTIFIED");
    if account {
        format!("{} {} … (account statement: text withheld)", w(0), w(1))
    } else {
        stmt.chars().take(200).collect()
    }
}

pub struct Decoder {
    flavor: Flavor,
    verify_checksums: bool,
    filter: TableFilter,
    /// A reloaded filter waiting for the current transaction to end, and its generation.
    pending_filter: Option<TableFilter>,
    pub filter_generation: u64,
    /// Tables excluded on top of the configured filter (binlogd's own tables).
    extra_excludes: Vec<(String, String)>,
    collations: Arc<CollationMap>,
    tables: HashMap<u64, Arc<TableSchema>>,
    filtered: HashSet<u64>,
    hints: HashMap<(String, String), Arc<SchemaHints>>,
    file: Arc<str>,
    fde_seen: bool,
    gtid_state: Option<GtidSet>,
    txn: OpenTxn,
    in_txn: bool,
    pending: Batch,
    /// `pending.bytes()`, kept as transactions join it (asked after every event).
    pending_size: usize,
    payload: Option<Payload>,
    /// Rows events before this coordinate are not emitted (start at a mid-file position).
    emit_from: Option<BinlogCoord>,
    /// Rows events up to and including this coordinate were handed on before a reconnect.
    skip_upto: Option<BinlogCoord>,
    /// Last rows event handed on in the open transaction.
    handed_in_txn: Option<BinlogCoord>,
    committed: Option<Position>,
    /// Chunks of one open transaction are flushed early once they hold this many bytes.
    pub max_txn_buffer: usize,
    /// …and the part after an open savepoint once it holds this many.
    pub max_savepoint_hold: usize,
    /// Stop once a transaction ending at or past this coordinate is complete.
    pub stop_at: Option<BinlogCoord>,
    /// Stop once the GTID state covers this set.
    pub stop_gtid: Option<GtidSet>,
    /// Stop before the first transaction with an event time after this (ms).
    pub stop_time_ms: Option<u64>,
    /// Do not emit transactions with an event time before this (ms).
    pub from_time_ms: Option<u64>,
    stopped: bool,
    /// After a MariaDB resume by GTID: the first GTID_LIST must not be ahead of our state, or
    /// the server skipped purged transactions.
    check_gtid_list: bool,
    /// Offset after the last event read (where the next one starts), 0 before the first.
    next_pos: u64,
    /// Prepared XA transactions, in PREPARE order.
    held_xa: Vec<HeldXa>,
    /// After a restart from an XA restart point: transactions in this set were acknowledged
    /// already and are read only to rebuild the XA state.
    replay_gtid: Option<GtidSet>,
    /// Event time of the last "XA transaction held long" warning.
    xa_warned_ms: u64,
    /// Statistics
    pub events: u64,
    pub bytes_read: u64,
}

/// A rows event with at least this many bytes of rows is kept as it is by its chunk, not
/// copied (issue 16: the copy was the largest `memcpy` on wide rows). Smaller ones are copied
/// and the event freed at once: for a one-row event the event (its allocation and a copy of
/// the format description) weighs as much as its rows, and the Kafka sink's RSS on the
/// sysbench range rose from 64 to 84–101 MiB when every event was kept.
const SHARE_ROWS_FROM: usize = 4096;

impl Decoder {
    pub fn new(
        flavor: Flavor,
        filter: TableFilter,
        collations: Arc<CollationMap>,
        verify_checksums: bool,
    ) -> Self {
        Decoder {
            flavor,
            verify_checksums,
            filter,
            pending_filter: None,
            filter_generation: 0,
            extra_excludes: Vec::new(),
            collations,
            tables: HashMap::new(),
            filtered: HashSet::new(),
            hints: HashMap::new(),
            file: Arc::from(""),
            fde_seen: false,
            gtid_state: None,
            txn: OpenTxn::default(),
            in_txn: false,
            pending: Batch::default(),
            pending_size: 0,
            payload: None,
            emit_from: None,
            skip_upto: None,
            handed_in_txn: None,
            committed: None,
            max_txn_buffer: 4 << 20,
            max_savepoint_hold: 64 << 20,
            stop_at: None,
            stop_gtid: None,
            stop_time_ms: None,
            from_time_ms: None,
            stopped: false,
            check_gtid_list: false,
            next_pos: 0,
            held_xa: Vec::new(),
            replay_gtid: None,
            xa_warned_ms: 0,
            events: 0,
            bytes_read: 0,
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Prepares for a stream that starts at `start` (file:pos), with the known GTID state.
    pub fn start_at(&mut self, file: &str, gtid: Option<GtidSet>, emit_from: Option<BinlogCoord>) {
        self.file = Arc::from(file);
        self.gtid_state = gtid;
        self.emit_from = emit_from;
    }

    /// After a restart from an XA restart point: hand on nothing of the transactions in `acked`
    /// (they were acknowledged before the restart); also by coordinate through `emit_from`.
    pub fn replay_acknowledged(&mut self, acked: Option<GtidSet>) {
        self.replay_gtid = acked;
    }

    /// Prepares for a new stream after a reconnect (keeps a pending `emit_from`).
    pub fn resume_at(&mut self, file: &str, gtid: Option<GtidSet>) {
        self.file = Arc::from(file);
        self.gtid_state = gtid;
    }

    /// The stream was requested by MariaDB GTID position: verify the server did not skip.
    pub fn expect_gtid_continuity(&mut self) {
        self.check_gtid_list = matches!(self.gtid_state, Some(GtidSet::MariaDb(_)));
    }

    /// The last complete-transaction position seen (where a new stream must resume).
    /// `true` once the stream reached `stop_at` (everything up to it is pending or handed on).
    pub fn reached_stop(&self) -> bool {
        if self.stopped {
            return true;
        }
        let by_coord = match (&self.stop_at, &self.committed) {
            (Some(s), Some(c)) => (c.coord.file.as_str(), c.coord.pos) >= (s.file.as_str(), s.pos),
            _ => false,
        };
        let by_gtid = match (&self.stop_gtid, &self.gtid_state) {
            (Some(GtidSet::MySql(want)), Some(GtidSet::MySql(have))) => have.contains_set(want),
            (Some(GtidSet::MariaDb(want)), Some(GtidSet::MariaDb(have))) => have.covers(want),
            _ => false,
        };
        by_coord || by_gtid
    }

    pub fn committed(&self) -> Option<&Position> {
        self.committed.as_ref()
    }

    pub fn set_committed_if_none(&mut self, p: Position) {
        if self.committed.is_none() {
            self.committed = Some(p);
        }
    }

    pub fn set_committed(&mut self, p: Position) {
        self.gtid_state = p.gtid.clone();
        self.file = Arc::from(p.coord.file.as_str());
        self.committed = Some(p);
    }

    /// Where the next event of the current file starts (after the last one read).
    pub fn next_event_pos(&self) -> u64 {
        self.next_pos
    }

    pub fn current_file(&self) -> &str {
        &self.file
    }

    /// Forgets the state of the current stream before a reconnect: the open transaction's
    /// unhanded rows are dropped (they will be read again) and the rows already handed on are
    /// remembered so they are skipped when read again.
    pub fn reset_stream(&mut self) {
        self.skip_upto = self.handed_in_txn.take();
        self.txn = OpenTxn::default();
        self.in_txn = false;
        self.payload = None;
        self.fde_seen = false;
        if let Some(c) = &self.committed {
            self.gtid_state = c.gtid.clone();
            self.file = Arc::from(c.coord.file.as_str());
        }
    }

    /// Never stream this table (e.g. binlogd's own checkpoint table).
    pub fn exclude_table(&mut self, db: &str, table: &str) {
        self.filter.exclude_also(db, table);
        self.forget_filtered_tables();
        self.extra_excludes
            .push((db.to_string(), table.to_string()));
    }

    /// Replaces the include/exclude filter (SIGHUP reload) from the next transaction on; the
    /// tables excluded with [`Self::exclude_table`] stay excluded.
    pub fn set_filter(&mut self, mut f: TableFilter, generation: u64) {
        for (d, t) in &self.extra_excludes {
            f.exclude_also(d, t);
        }
        self.filter_generation = generation;
        if self.in_txn {
            self.pending_filter = Some(f);
        } else {
            self.filter = f;
            self.forget_filtered_tables();
        }
    }

    /// The table-map cache holds only tables the current filter includes (a TABLE_MAP equal
    /// to a cached one is not filtered again): emptied when the filter changes.
    fn forget_filtered_tables(&mut self) {
        self.tables.clear();
        self.filtered.clear();
    }

    pub fn set_hints(&mut self, db: &str, table: &str, hints: SchemaHints) {
        self.hints
            .insert((db.to_string(), table.to_string()), Arc::new(hints));
    }

    pub fn pending_bytes(&self) -> usize {
        // as `Batch::bytes` counts it
        self.pending_size + 64
    }

    /// Adds (part of) a transaction to what is handed on next.
    fn push_pending(&mut self, t: TxnChunks) {
        self.pending_size += t.chunks.iter().map(|c| c.bytes()).sum::<usize>();
        self.pending.txns.push(t);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.txns.is_empty() || self.pending.commit.is_some()
    }

    /// Takes what is ready to hand on (complete transactions, or an early part of a large one).
    pub fn take_batch(&mut self) -> Option<Batch> {
        if !self.has_pending() {
            return None;
        }
        self.pending_size = 0;
        Some(std::mem::take(&mut self.pending))
    }

    fn in_payload(&self) -> bool {
        self.payload.as_ref().is_some_and(|p| p.remaining > 0)
    }

    /// Feeds one event.
    pub fn handle(&mut self, ev: &Arc<Event>) -> Result<Step, DecodeError> {
        let h = ev.header();
        let t = h.event_type_raw();
        let size = h.event_size() as u64;
        let end = h.log_pos() as u64;
        let start = end.saturating_sub(size);
        if end != 0 {
            self.next_pos = end;
        }
        let r = self.handle_inner(ev, t, start, end, size);
        r.map_err(|e| e.at(&self.file, start, t))
    }

    fn verify_checksum(&self, ev: &Event) -> Result<(), DecodeError> {
        if !self.verify_checksums {
            return Ok(());
        }
        let alg = ev.footer().get_checksum_alg().ok().flatten();
        if alg != Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32) {
            return Ok(());
        }
        // mysql_common leaves the binlog-in-use flag out of every event's checksum; MySQL and
        // MariaDB leave it out only for FORMAT_DESCRIPTION (the one event that carries it), so
        // on any other event it can only be a corrupt bit the checksum would have caught.
        if ev.header().event_type_raw() != et::FORMAT_DESCRIPTION
            && ev.header().flags_raw() & 0x1 != 0
        {
            return Err(DecodeError::Malformed(
                "CRC32 checksum mismatch (the binlog-in-use flag is set on an event other than FORMAT_DESCRIPTION): \
                 the event is corrupt; check the server's binlog file or the network path"
                    .into(),
            ));
        }
        if let Some(cs) = ev.checksum() {
            let want = u32::from_le_bytes(cs);
            let got = ev.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
            if want != got {
                return Err(DecodeError::Malformed(format!(
                    "CRC32 checksum mismatch (event says {want:08x}, computed {got:08x}): the event is corrupt; \
                     check the server's binlog file or the network path"
                )));
            }
        }
        Ok(())
    }

    fn handle_inner(
        &mut self,
        ev: &Arc<Event>,
        t: u8,
        start: u64,
        end: u64,
        size: u64,
    ) -> Result<Step, DecodeError> {
        self.events += 1;
        let inner = self.in_payload();
        if inner {
            if matches!(t, 4 | 15 | 27 | 33 | 34 | 35 | 40 | 41 | 42) {
                let p = self.payload.take();
                return Err(DecodeError::Malformed(format!(
                    "the TRANSACTION_PAYLOAD event at {}:{} could not be decompressed (expected {} more bytes of inner events); \
                     binlogd stops rather than skip its row changes",
                    self.file,
                    p.map(|p| p.start).unwrap_or(0),
                    self.payload.as_ref().map(|p| p.remaining).unwrap_or(0)
                )));
            }
            if let Some(p) = self.payload.as_mut() {
                p.remaining = p.remaining.saturating_sub(size);
            }
        } else {
            self.bytes_read += size;
            if t != et::ROTATE {
                self.verify_checksum(ev)?;
            }
        }
        match t {
            et::ROTATE => {
                let re: RotateEvent<'_> = ev.read_event().map_err(malformed)?;
                let mut name = re.name_raw().to_vec();
                if !self.fde_seen && ev.checksum().is_none() && name.len() > 4 && fake_rotate_has_crc(ev) {
                    name.truncate(name.len() - 4);
                } else if ev.checksum().is_some() {
                    self.verify_checksum(ev)?;
                }
                let name = String::from_utf8(name).map_err(|_| malformed("binlog file name is not UTF-8"))?;
                if *self.file != *name {
                    debug!(file = %name, pos = re.position(), "rotate");
                }
                self.file = Arc::from(name.as_str());
                // the next event is the first of the named file, at the named offset
                self.next_pos = re.position();
                // a real rotate between transactions moves the resume point to the new file
                if end != 0 && !self.in_txn {
                    if let Some(c) = self.committed.as_mut() {
                        c.coord = BinlogCoord { file: name, pos: re.position() };
                    }
                }
            }
            et::FORMAT_DESCRIPTION => self.fde_seen = true,
            et::XID => self.commit(ev, end)?,
            et::QUERY => {
                let q: QueryEvent<'_> = ev.read_event().map_err(malformed)?;
                let schema = q.schema().into_owned();
                let text = q.query().into_owned();
                self.on_query(ev, &schema, &text, start, end)?;
            }
            et::MARIADB_QUERY_COMPRESSED => {
                let (schema, text) =
                    mariadb::parse_query_compressed(ev.data(), 13)
                        .map_err(malformed)?;
                self.on_query(ev, &schema, &text, start, end)?;
            }
            et::TABLE_MAP => return self.on_table_map(ev),
            et::GTID | et::GTID_TAGGED => {
                let g: GtidEvent = ev.read_event().map_err(malformed)?;
                let uuid = uuid_str(&g.sid());
                let sid = match g.tag() {
                    Some(tag) => format!("{uuid}:{tag}"),
                    None => uuid,
                };
                self.begin_txn();
                self.txn.gtid = Some(Arc::from(format!("{sid}:{}", g.gno()).as_str()));
                self.txn.mysql_gtid = Some((sid, g.gno()));
                self.mark_replayed();
                let ts = g.immediate_commit_timestamp();
                if ts > 0 {
                    self.txn.commit_ts_ms = Some(ts / 1000);
                }
            }
            et::ANONYMOUS_GTID => self.begin_txn(),
            et::PREVIOUS_GTIDS => {
                previous_gtids_fits(ev.data()).map_err(DecodeError::Malformed)?;
                let pg: PreviousGtidsEvent<'_> = ev.read_event().map_err(malformed)?;
                if self.gtid_state.is_none() {
                    let mut set = MySqlGtidSet::default();
                    for s in pg.sids() {
                        let uuid = uuid_str(&s.uuid());
                        let sid = match s.tag() {
                            Some(tag) => format!("{uuid}:{tag}"),
                            None => uuid,
                        };
                        for iv in s.intervals() {
                            if iv.end() > iv.start() {
                                set.add_interval(&sid, iv.start(), iv.end() - 1);
                            }
                        }
                    }
                    self.gtid_state = Some(GtidSet::MySql(set));
                }
            }
            et::TRANSACTION_PAYLOAD => {
                transaction_payload_fits(ev.data()).map_err(DecodeError::Malformed)?;
                let tp: TransactionPayloadEvent<'_> = ev.read_event().map_err(malformed)?;
                self.payload = Some(Payload {
                    start,
                    end,
                    remaining: tp.uncompressed_size(),
                    rows: 0,
                });
            }
            et::HEARTBEAT
            | et::HEARTBEAT_V2
            | et::IGNORABLE
            | et::ROWS_QUERY
            | et::INTVAR
            | et::RAND
            | et::USER_VAR
            | et::STOP
            | et::TRANSACTION_CONTEXT
            | et::VIEW_CHANGE => {}
            // the server lost events
            et::INCIDENT => {
                return Err(DecodeError::Malformed(
                    "INCIDENT event: the server reports that changes may be missing from its binlog (e.g. a lost \
                     connection during a non-transactional update); re-snapshot the affected tables, then move the \
                     position past it with `binlogd position set`"
                        .into(),
                ))
            }
            // XA_PREPARE: ends the PREPARE group, which holds the rows (XA COMMIT has none)
            et::XA_PREPARE => self.on_xa_prepare(ev, end)?,
            et::MARIADB_GTID => {
                let g = mariadb::parse_gtid(ev.data(), ev.header().server_id()).map_err(malformed)?;
                self.begin_txn();
                self.txn.gtid = Some(Arc::from(format!("{}-{}-{}", g.domain, g.server, g.seq).as_str()));
                self.txn.maria_gtid = Some(g);
                self.txn.began = g.flags2 & mariadb::FL_STANDALONE == 0;
                self.mark_replayed();
                if g.flags2 & mariadb::FL_PREPARED_XA != 0 {
                    if let Some(xid) = mariadb::parse_gtid_xid(ev.data()).map_err(malformed)? {
                        self.txn.xa = Some(xid);
                    }
                }
            }
            et::MARIADB_GTID_LIST => {
                let list = mariadb::parse_gtid_list(ev.data()).map_err(malformed)?;
                debug!(?list, check = self.check_gtid_list, "GTID_LIST");
                if std::mem::take(&mut self.check_gtid_list) {
                    if let Some(GtidSet::MariaDb(have)) = &self.gtid_state {
                        for (d, s, n) in &list {
                            let behind = have.domains.get(d).is_none_or(|(_, seq)| seq < n);
                            if behind {
                                return Err(DecodeError::Malformed(format!(
                                    "the binlog needed to resume from GTID position {have} is no longer on the server: \
                                     the oldest binlog starts after {d}-{s}-{n}. Nothing was skipped. \
                                     Fix: replay the missing range from archived binlog files (`binlogd replay --binlog-file …`), \
                                     or accept the gap with `binlogd position set --latest`"
                                )));
                            }
                        }
                    }
                }
                if self.gtid_state.is_none() {
                    let mut p = MariaGtidPos::default();
                    for (d, s, n) in list {
                        p.set(d, s, n);
                    }
                    self.gtid_state = Some(GtidSet::MariaDb(p));
                }
            }
            et::MARIADB_ANNOTATE_ROWS | et::MARIADB_BINLOG_CHECKPOINT | et::MARIADB_START_ENCRYPTION => {}
            _ => {
                if let Some(kind) = RowsEventKind::from_type(t) {
                    self.on_rows(ev, kind, start)?;
                } else if ev.header().flags_raw() & 0x80 == 0 {
                    // not LOG_EVENT_IGNORABLE_F: we cannot know whether it carries changes
                    return Err(DecodeError::Malformed(format!(
                        "unknown binlog event type {t}; binlogd does not know whether it carries row changes and stops \
                         rather than skip it (upgrade binlogd, or report the server version)"
                    )));
                }
            }
        }
        Ok(Step::Continue)
    }

    fn begin_txn(&mut self) {
        // A GTID event starts a new transaction; anything left open is a server-side abort.
        if self.in_txn && !self.txn.chunks.is_empty() {
            warn!(file = %self.file, "transaction without a commit event; its rows are dropped");
        }
        let before = self.committed.clone().map(|mut p| {
            p.restart = None;
            p
        });
        self.txn = OpenTxn {
            before,
            ..OpenTxn::default()
        };
        self.in_txn = true;
    }

    /// After a restart from an XA restart point: is this transaction (its GTID just read)
    /// one that was acknowledged before? The first one that is not ends the replay.
    fn mark_replayed(&mut self) {
        let Some(acked) = &self.replay_gtid else {
            return;
        };
        let seen = match (acked, &self.txn.mysql_gtid, &self.txn.maria_gtid) {
            (GtidSet::MySql(s), Some((sid, gno)), _) => s.contains(sid, *gno),
            (GtidSet::MariaDb(p), _, Some(g)) => p
                .domains
                .get(&g.domain)
                .is_some_and(|(_, seq)| g.seq <= *seq),
            _ => false,
        };
        if seen {
            self.txn.replayed = true;
        } else {
            self.replay_gtid = None;
            self.emit_from = None;
        }
    }

    /// The XA_PREPARE event: a two-phase XA transaction's rows are held until its XA COMMIT
    /// (handed on then, at the commit's position) or XA ROLLBACK (dropped); `XA COMMIT … ONE
    /// PHASE` (logged as a prepare with the one-phase flag) is an ordinary commit.
    fn on_xa_prepare(&mut self, ev: &Event, end: u64) -> Result<(), DecodeError> {
        let (one_phase, xid) = Xid::from_prepare_event(ev.data()).map_err(malformed)?;
        if one_phase {
            self.txn.xa = None;
            return self.commit(ev, end);
        }
        let chunks = std::mem::take(&mut self.txn.chunks);
        self.txn.bytes = 0;
        let restart = self.txn.before.clone().unwrap_or_else(|| {
            Position::new(
                BinlogCoord {
                    file: self.file.to_string(),
                    pos: 4,
                },
                None,
            )
        });
        if let Some(i) = self.held_xa.iter().position(|h| h.xid == xid) {
            warn!(xid = %xid, "XA PREPARE of an xid that is already prepared; the earlier one is replaced");
            self.held_xa.remove(i);
        }
        let rows: u64 = chunks.iter().map(|c| c.rows as u64).sum();
        let ts = ev.header().timestamp() as u64 * 1000;
        if !self.txn.replayed {
            info!(xid = %xid, rows, at = %format!("{}:{end}", self.file), "XA PREPARE: row changes held until XA COMMIT or XA ROLLBACK");
        }
        self.held_xa.push(HeldXa {
            xid,
            chunks,
            rows,
            restart,
            prepared_at: BinlogCoord {
                file: self.file.to_string(),
                pos: end,
            },
            prepared_ms: ts,
        });
        self.txn.xa = None;
        self.xa_metrics();
        self.commit(ev, end)
    }

    /// `XA COMMIT` / `XA ROLLBACK` of a prepared transaction: its own group, which it ends.
    fn on_xa_outcome(
        &mut self,
        ev: &Event,
        start: u64,
        end: u64,
        xid: Xid,
        commit: bool,
    ) -> Result<(), DecodeError> {
        if !self.in_txn {
            self.begin_txn();
        }
        let verb = if commit { "XA COMMIT" } else { "XA ROLLBACK" };
        match self.held_xa.iter().position(|h| h.xid == xid) {
            Some(i) => {
                let held = self.held_xa.remove(i);
                if commit {
                    // handed on at the commit's coordinates, so (file, pos, row) keeps growing
                    let pos = self.payload.as_ref().map(|p| p.start).unwrap_or(start);
                    let ts = self
                        .txn
                        .commit_ts_ms
                        .unwrap_or(ev.header().timestamp() as u64 * 1000);
                    let mut row = 0u32;
                    for mut c in held.chunks {
                        c.pos = pos;
                        c.first_row = row;
                        c.ts_ms = ts;
                        row = row.saturating_add(c.rows);
                        self.txn.bytes += c.bytes();
                        self.txn.chunks.push(c);
                    }
                }
                if !self.txn.replayed {
                    info!(xid = %xid, rows = held.rows, prepared_at = %held.prepared_at, "{verb}: {} held row changes",
                        if commit { "handing on the" } else { "dropping the" });
                }
            }
            None if commit && !self.txn.replayed && !self.before_emit_from(end) => {
                crate::metrics::get().xa_unknown_commits.inc();
                warn!(
                    xid = %xid, at = %format!("{}:{start}", self.file),
                    "XA COMMIT of a transaction prepared before the position binlogd started streaming from: \
                     its row changes are in the PREPARE group, which this stream did not read. If it changed streamed \
                     tables, start from a position before its XA PREPARE (`binlogd replay`) or re-read those tables"
                );
            }
            None => {}
        }
        self.xa_metrics();
        self.commit(ev, end)
    }

    fn xa_metrics(&mut self) {
        let m = crate::metrics::get();
        m.xa_held.set(self.held_xa.len() as i64);
        m.xa_held_rows
            .set(self.held_xa.iter().map(|h| h.rows as i64).sum());
        m.xa_oldest_prepared_ms.store(
            self.held_xa
                .first()
                .map(|h| h.prepared_ms.max(1))
                .unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Warns (at most once a minute of event time) about XA transactions prepared long ago.
    fn warn_old_xa(&mut self, now_ms: u64) {
        let Some(h) = self.held_xa.first() else {
            return;
        };
        if now_ms.saturating_sub(h.prepared_ms) >= 60_000
            && now_ms.saturating_sub(self.xa_warned_ms) >= 60_000
        {
            self.xa_warned_ms = now_ms;
            warn!(
                held = self.held_xa.len(),
                oldest_xid = %h.xid,
                oldest_age_s = now_ms.saturating_sub(h.prepared_ms) / 1000,
                prepared_at = %h.prepared_at,
                rows = self.held_xa.iter().map(|h| h.rows).sum::<u64>(),
                "prepared XA transactions are waiting for XA COMMIT / XA ROLLBACK: their rows are held in memory and a \
                 restart reads the binlog again from before the oldest one (`XA RECOVER` on the server lists them)"
            );
        }
    }

    /// `ROLLBACK TO SAVEPOINT` / `ROLLBACK` logged inside a transaction (MariaDB does so when a
    /// non-transactional table was changed): the rows of transactional tables after the
    /// savepoint (all of them for `ROLLBACK`) are withdrawn, as a replica applying the
    /// transaction would undo them; rows of non-transactional tables stay.
    fn roll_back_to(&mut self, mark: usize, exact: bool, what: &str) {
        let mark = mark.min(self.txn.chunks.len());
        let tail = self.txn.chunks.split_off(mark);
        let mut withdrawn = 0u64;
        for c in tail {
            if c.table.transactional {
                withdrawn += c.rows as u64;
                self.txn.bytes = self.txn.bytes.saturating_sub(c.bytes());
            } else {
                self.txn.chunks.push(c);
            }
        }
        crate::metrics::get().rows_rolled_back.inc_by(withdrawn);
        debug!(what, withdrawn, "rollback inside a transaction");
        if !exact {
            tracing::error!(
                file = %self.file, gtid = ?self.txn.gtid, what,
                "a rollback inside a transaction whose rolled-back part was already handed on (it was larger than the \
                 decoder holds back: 4 MiB for a whole transaction, 64 MiB after a savepoint): the transactional row \
                 changes handed on before it cannot be withdrawn; re-read the affected tables"
            );
        }
    }

    /// Change events for tables whose contents a statement replaced without row events.
    fn replaced_tables(&mut self, ev: &Event, schema: &str, head: &str, pos: u64) {
        let mut seen: Vec<(String, String)> = Vec::new();
        for r in statement::contents_replaced(head) {
            let db = r.db.unwrap_or_else(|| schema.to_string());
            if !self.filter.matches(&db, &r.table) || seen.contains(&(db.clone(), r.table.clone()))
            {
                continue;
            }
            info!(db = %db, table = %r.table, statement = r.statement, "table contents replaced without row events: a truncate event (op \"t\") is handed on");
            let chunk = RowsChunk {
                table: Arc::new(TableSchema::named(&db, &r.table)),
                op: Op::Truncate,
                data: Default::default(),
                cells: Vec::new(),
                rows: 1,
                partial_json: Vec::new(),
                pos,
                first_row: seen.len() as u32,
                server_id: ev.header().server_id(),
                ts_ms: self
                    .txn
                    .commit_ts_ms
                    .unwrap_or(ev.header().timestamp() as u64 * 1000),
                text_checked: false,
            };
            seen.push((db, r.table));
            self.txn.chunks.push(chunk);
        }
    }

    fn on_query(
        &mut self,
        ev: &Event,
        schema: &str,
        text: &str,
        start: u64,
        end: u64,
    ) -> Result<(), DecodeError> {
        let head = text.trim_start();
        let first = statement::verb(head);
        match first.as_str() {
            "BEGIN" => {
                if !self.in_txn {
                    self.begin_txn();
                }
                self.txn.began = true;
                Ok(())
            }
            "XA" => match statement::parse_xa(head) {
                Some((XaVerb::Commit, xid, _)) => self.on_xa_outcome(ev, start, end, xid, true),
                Some((XaVerb::Rollback, xid, _)) => {
                    self.on_xa_outcome(ev, start, end, xid, false)
                }
                Some((verb, xid, _)) => {
                    if !self.in_txn {
                        self.begin_txn();
                    }
                    self.txn.began = true;
                    if verb == XaVerb::Start {
                        self.txn.xa = Some(xid);
                    }
                    Ok(())
                }
                None => Err(DecodeError::Malformed(format!(
                    "XA statement binlogd cannot read ({}…): it cannot tell which prepared transaction it ends, \
                     and stops rather than lose or invent its rows (report the server version)",
                    head.chars().take(80).collect::<String>()
                ))),
            },
            "COMMIT" => self.commit(ev, end),
            "SAVEPOINT" | "RELEASE" | "ROLLBACK" if self.in_txn => {
                match statement::parse_savepoint(head) {
                    Some(Savepoint::Set(name)) => {
                        self.txn.savepoints.retain(|(n, ..)| *n != name);
                        let at = self.txn.chunks.len();
                        self.txn.savepoints.push((name, at, true));
                        Ok(())
                    }
                    Some(Savepoint::Release(name)) => {
                        if let Some(i) = self.txn.savepoints.iter().rposition(|(n, ..)| *n == name) {
                            self.txn.savepoints.truncate(i);
                        }
                        Ok(())
                    }
                    Some(Savepoint::RollbackTo(name)) => {
                        let (mark, exact) = match self.txn.savepoints.iter().rposition(|(n, ..)| *n == name) {
                            Some(i) => {
                                self.txn.savepoints.truncate(i + 1);
                                (self.txn.savepoints[i].1, self.txn.savepoints[i].2)
                            }
                            None => {
                                // set before anything was logged in this transaction
                                self.txn.savepoints.clear();
                                (0, !self.txn.handed_rows)
                            }
                        };
                        self.roll_back_to(mark, exact, "ROLLBACK TO SAVEPOINT");
                        Ok(())
                    }
                    None if first == "ROLLBACK" => {
                        // a rolled-back transaction that changed a non-transactional table
                        let exact = !self.txn.handed_rows;
                        self.roll_back_to(0, exact, "ROLLBACK");
                        self.commit(ev, end)
                    }
                    None => Ok(()),
                }
            }
            "ROLLBACK" => self.commit(ev, end),
            "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD"
                if !self.filter_skips_statement(schema, head) && !self.before_emit_from(end) =>
            {
                Err(DecodeError::Malformed(format!(
                    "statement-based change in the binlog ({}…): a session wrote with binlog_format=STATEMENT or MIXED, \
                     so its rows are not in the binlog. Set binlog_format=ROW globally and for every session",
                    head.chars().take(60).collect::<String>()
                )))
            }
            _ => {
                if !head.starts_with('#') && !first.is_empty() {
                    info!(schema, ddl = %loggable_ddl(head), "DDL");
                    let pos = self.payload.as_ref().map(|p| p.start).unwrap_or(start);
                    self.replaced_tables(ev, schema, head, pos);
                    // schema hints (MariaDB JSON columns, engines) may have changed
                    self.hints.clear();
                    self.tables.clear();
                }
                if !self.txn.began {
                    // a standalone statement (DDL) is its own transaction
                    self.commit(ev, end)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// `true` for events before a requested mid-file start (read only to learn the GTID state).
    fn before_emit_from(&self, end: u64) -> bool {
        self.txn.replayed
            || self
                .emit_from
                .as_ref()
                .is_some_and(|e| coord_le(&self.file, end, e))
    }

    /// `true` when a statement-based DML certainly targets a table we do not stream. When the
    /// target cannot be told from the text, it counts as streamed (stop rather than miss rows).
    fn filter_skips_statement(&self, schema: &str, text: &str) -> bool {
        match statement_target(text) {
            Some((db, table)) => {
                let db = db.unwrap_or_else(|| schema.to_string());
                !self.filter.matches(&db, &table)
            }
            None => false,
        }
    }

    fn on_table_map(&mut self, ev: &Event) -> Result<Step, DecodeError> {
        let body = ev.data();
        // The usual case, a TABLE_MAP equal to the cached one (one per table per
        // transaction): nothing to parse, match or build. (6-byte table id; anything else
        // misses the cache and takes the full path.)
        if let (Some(id), Some(raw)) = (body.get(..6), body.get(6..)) {
            if self
                .tables
                .get(&rows::le_uint(id))
                .is_some_and(|t| &*t.raw == raw)
            {
                return Ok(Step::Continue);
            }
        }
        let tme: TableMapEvent<'_> = ev.read_event().map_err(malformed)?;
        let id = tme.table_id();
        let db = tme.database_name();
        let table = tme.table_name();
        if !self.filter.matches(&db, &table) {
            self.filtered.insert(id);
            self.tables.remove(&id);
            return Ok(Step::Continue);
        }
        self.filtered.remove(&id);
        let raw = body.get(6..).unwrap_or(&[]);
        if let Some(t) = self.tables.get(&id) {
            if &*t.raw == raw {
                return Ok(Step::Continue);
            }
        }
        let key = (db.to_string(), table.to_string());
        let hints = self.hints.get(&key).cloned();
        let has_names = tme.iter_optional_meta().any(|f| {
            matches!(
                f,
                Ok(mysql_common::binlog::events::OptionalMetadataField::ColumnName(_))
            )
        });
        if hints.is_none() && (self.flavor == Flavor::MariaDb || !has_names) {
            return Ok(Step::NeedHints {
                db: key.0,
                table: key.1,
            });
        }
        let schema = TableSchema::from_table_map(&tme, raw, &self.collations, hints.as_deref())?;
        if !schema.full_metadata {
            warn!(
                db = %schema.db, table = %schema.table,
                "TABLE_MAP has no column names (binlog_row_metadata is not FULL): using information_schema, which shows \
                 the table as it is now, not as it was when the row was written; set binlog_row_metadata=FULL"
            );
        }
        debug!(db = %schema.db, table = %schema.table, id, cols = schema.columns.len(), "table map");
        self.tables.insert(id, Arc::new(schema));
        Ok(Step::Continue)
    }

    fn on_rows(
        &mut self,
        ev: &Arc<Event>,
        kind: RowsEventKind,
        start: u64,
    ) -> Result<(), DecodeError> {
        let body = ev.data();
        let hdr = rows::parse_rows_header(kind, body, 8).map_err(malformed)?;
        if self.filtered.contains(&hdr.table_id) {
            return Ok(());
        }
        let table = self.tables.get(&hdr.table_id).cloned().ok_or_else(|| {
            DecodeError::Malformed(format!(
                "rows event for table id {} without a preceding TABLE_MAP",
                hdr.table_id
            ))
        })?;
        let (pos, first_row) = match self.payload.as_ref() {
            Some(p) => (p.start, p.rows),
            _ => (start, 0),
        };
        let coord_skip = |c: &Option<BinlogCoord>, file: &str, pos: u64| {
            c.as_ref().is_some_and(|c| c.file == file && pos <= c.pos)
        };
        if coord_skip(&self.skip_upto, &self.file, pos) {
            return Ok(());
        }
        // already acknowledged before a restart (an XA transaction's rows are read again: its
        // outcome may come later)
        if self.txn.xa.is_none()
            && (self.txn.replayed
                || self.emit_from.as_ref().is_some_and(|e| {
                    coord_le(&self.file, pos, e) && !(e.file == *self.file && pos == e.pos)
                }))
        {
            return Ok(());
        }
        let data = if kind.compressed {
            rows::mariadb_uncompress(&body[hdr.rows_offset..])
                .map_err(|e| malformed(format!("compressed rows event: {e}")))?
                .into()
        } else if body.len() - hdr.rows_offset >= SHARE_ROWS_FROM {
            // the event's own bytes, shared (not copied)
            rows::ChunkData::Event(ev.clone(), hdr.rows_offset)
        } else {
            body[hdr.rows_offset..].to_vec().into()
        };
        let ncols = table.columns.len();
        let mut cells = Vec::with_capacity(ncols * 4);
        let mut partial = Vec::new();
        let n = rows::split_rows(
            &table,
            kind.op,
            kind.partial,
            &hdr,
            &data,
            &mut cells,
            &mut partial,
        )?;
        if let Some(p) = self.payload.as_mut() {
            if p.start == pos {
                p.rows += n;
            }
        }
        let ts_ms = self
            .txn
            .commit_ts_ms
            .unwrap_or(ev.header().timestamp() as u64 * 1000);
        let chunk = RowsChunk {
            table,
            op: kind.op,
            data,
            cells,
            rows: n,
            partial_json: partial,
            pos,
            first_row,
            server_id: ev.header().server_id(),
            ts_ms,
            text_checked: false,
        };
        if !self.in_txn {
            self.in_txn = true;
        }
        let mut chunk = chunk;
        validate::check_chunk(&chunk)?;
        chunk.text_checked = true;
        self.txn.bytes += chunk.bytes();
        self.txn.chunks.push(chunk);
        // A large transaction is handed on in parts, except what may still be withdrawn: an
        // XA transaction's rows (until its outcome) and the rows after an open savepoint (up
        // to `max_savepoint_hold`: servers log SAVEPOINT but not RELEASE SAVEPOINT, so an open
        // savepoint may never close before the commit).
        if self.txn.xa.is_none() {
            if self.txn.bytes >= self.max_txn_buffer {
                self.flush_open_txn(false);
            }
            if self.txn.bytes >= self.max_savepoint_hold {
                self.flush_open_txn(true);
            }
        }
        Ok(())
    }

    /// Hands on the open transaction's rows so far (large transactions stream in parts), up to
    /// the first open savepoint — or all of them (`past_savepoints`), after which a rollback to
    /// those savepoints can no longer be exact.
    fn flush_open_txn(&mut self, past_savepoints: bool) {
        let upto = match self.txn.savepoints.first() {
            Some(sp) if !past_savepoints => sp.1,
            _ => self.txn.chunks.len(),
        };
        if upto == 0 {
            return;
        }
        if past_savepoints && !self.txn.savepoints.is_empty() {
            warn!(
                file = %self.file, gtid = ?self.txn.gtid, held = self.txn.bytes,
                "a transaction holds more than 64 MiB after an open savepoint: handing it on (a later ROLLBACK TO that \
                 savepoint could no longer withdraw these rows; servers do not log RELEASE SAVEPOINT)"
            );
        }
        let rest = self.txn.chunks.split_off(upto);
        let chunks = std::mem::replace(&mut self.txn.chunks, rest);
        for sp in self.txn.savepoints.iter_mut() {
            if sp.1 < upto {
                sp.2 = false;
            }
            sp.1 = sp.1.saturating_sub(upto);
        }
        self.txn.bytes = self.txn.chunks.iter().map(|c| c.bytes()).sum();
        self.txn.handed_rows = true;
        if let Some(last) = chunks.last() {
            self.handed_in_txn = Some(BinlogCoord {
                file: self.file.to_string(),
                pos: last.pos,
            });
            self.pending.last_event_ms = last.ts_ms;
        }
        self.push_pending(TxnChunks {
            snapshot: None,
            file: self.file.clone(),
            gtid: self.txn.gtid.clone(),
            chunks,
        });
    }

    fn commit(&mut self, ev: &Event, end: u64) -> Result<(), DecodeError> {
        if let Some(f) = self.pending_filter.take() {
            self.filter = f;
            self.forget_filtered_tables();
        }
        // apply the transaction's GTID to the state
        if let Some((sid, gno)) = self.txn.mysql_gtid.take() {
            // Without a known starting set (PREVIOUS_GTIDS not seen) the state stays unknown
            // rather than partial: resuming by a partial set would replay history.
            if let Some(GtidSet::MySql(s)) = self.gtid_state.as_mut() {
                s.add(&sid, gno);
            }
        }
        if let Some(g) = self.txn.maria_gtid.take() {
            match self.gtid_state.as_mut() {
                Some(GtidSet::MariaDb(p)) => p.set(g.domain, g.server, g.seq),
                _ => {
                    let mut p = MariaGtidPos::default();
                    p.set(g.domain, g.server, g.seq);
                    self.gtid_state = Some(GtidSet::MariaDb(p));
                }
            }
        }
        let end = match self.payload.as_ref() {
            Some(p) if p.end > 0 => p.end,
            _ => end,
        };
        if self.payload.as_ref().is_some_and(|p| p.remaining == 0) {
            self.payload = None;
        }
        let mut chunks = std::mem::take(&mut self.txn.chunks);
        let txn_ts = self
            .txn
            .commit_ts_ms
            .unwrap_or(ev.header().timestamp() as u64 * 1000);
        if self.stop_time_ms.is_some_and(|t| txn_ts > t) {
            // past the requested end: hand on nothing of it, and stop
            self.stopped = true;
            self.txn = OpenTxn::default();
            self.in_txn = false;
            return Ok(());
        }
        if self.from_time_ms.is_some_and(|t| txn_ts < t) {
            chunks.clear();
        }
        // acknowledged before a restart: read only to rebuild state
        let replayed = self.txn.replayed
            || (end != 0
                && self
                    .emit_from
                    .as_ref()
                    .is_some_and(|e| coord_le(&self.file, end, e)));
        if replayed {
            chunks.clear();
        }
        let ts = chunks
            .last()
            .map(|c| c.ts_ms)
            .unwrap_or(ev.header().timestamp() as u64 * 1000);
        if !chunks.is_empty() {
            self.push_pending(TxnChunks {
                snapshot: None,
                file: self.file.clone(),
                gtid: self.txn.gtid.clone(),
                chunks,
            });
        }
        self.txn = OpenTxn::default();
        self.in_txn = false;
        self.handed_in_txn = None;
        self.skip_upto = None;
        if end == 0 {
            return Ok(());
        }
        let pos = Position {
            coord: BinlogCoord {
                file: self.file.to_string(),
                pos: end,
            },
            gtid: self.gtid_state.clone(),
            // while XA transactions are prepared, a restart must read their PREPAREs again
            restart: self.held_xa.first().map(|h| Box::new(h.restart.clone())),
        };
        self.committed = Some(pos.clone());
        self.warn_old_xa(txn_ts);
        if replayed {
            // before the requested start: a resume point, but nothing to hand on
            return Ok(());
        }
        self.emit_from = None;
        self.replay_gtid = None;
        self.pending.commit = Some(pos);
        self.pending.last_event_ms = ts;
        Ok(())
    }
}

fn uuid_str(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
