//! Source: the replication connection. Registers as a replica, asks for the binlog from a
//! position (file:pos or GTID set), feeds events to the [`Decoder`], hands batches to the
//! pipeline, and reconnects with backoff on any connection loss, resuming from the last
//! position it handed on.

pub mod binlog_file;
pub mod config;
pub mod divergence;
pub mod file_replay;
pub mod lag;

use futures_util::{FutureExt, StreamExt};
use mysql_async::prelude::*;
use mysql_async::BinlogStreamRequest;
use mysql_async::{BinlogStream, Conn, Opts};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::binlog::position::{BinlogCoord, GtidSet, Position, StartPosition};
use crate::binlog::Flavor;
use crate::decode::charset::CollationMap;
use crate::decode::event::Batch;
use crate::decode::{DecodeError, Decoder, Step};
use crate::filter::TableFilter;
use crate::finding::Finding;
use crate::mysql::server::ServerInfo;
use config::SourceConfig;

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("{0}")]
    Config(String),
    // not #[source]: mysql_async's message already holds the server's, a chain would repeat it
    #[error("source server: {0}")]
    Mysql(mysql_async::Error),
    #[error("the binlog needed to resume from {at} is no longer on the server ({server}). Nothing was skipped. \
             Fix: replay the missing range from archived binlog files (`binlogd replay --binlog-file …`), \
             or accept the gap and move the position with `binlogd position set --latest` (or --file/--pos, --gtid)")]
    Purged { at: String, server: String },
    #[error(
        "replica id clash: {0}. Fix: give this binlogd a source.server_id no other replica uses"
    )]
    ServerIdClash(String),
    #[error("cannot log in to the source server: {0}. Fix: check the user and password in source.url / source.password{1}")]
    Auth(String, &'static str),
    #[error("cannot connect to the source server {url}: {message}")]
    Connect { url: String, message: String },
    #[error("cannot connect to the source server {url}: {message}")]
    Tls { url: String, message: String },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("gave up after {attempts} failed reconnects; last error: {last}")]
    GaveUp { attempts: u32, last: String },
    /// The server lacks transactions already handed to the sinks (a failover to a replica
    /// that was behind).
    #[error(transparent)]
    Diverged(Box<divergence::Diverged>),
    #[error(
        "the source server changed while streaming: it was {was}, it is now {now} (a failover?). binlogd stops \
         so that its next start checks the new server's history against the stored position before streaming \
         from it; start it again (systemd and Kubernetes do)"
    )]
    ServerChanged {
        was: divergence::Identity,
        now: divergence::Identity,
    },
    #[error("source server: {0}")]
    History(#[from] divergence::HistoryError),
}

impl From<crate::mysql::QueryError> for SourceError {
    fn from(e: crate::mysql::QueryError) -> Self {
        match e {
            crate::mysql::QueryError::Mysql(e) => SourceError::Mysql(e),
            crate::mysql::QueryError::Unexpected(m) => SourceError::Config(m),
        }
    }
}

impl From<mysql_async::Error> for SourceError {
    fn from(e: mysql_async::Error) -> Self {
        SourceError::Mysql(e)
    }
}

/// Where a stream starts.
#[derive(Debug, Clone)]
pub struct StartPoint {
    pub coord: BinlogCoord,
    pub gtid: Option<GtidSet>,
    /// Ask the server by GTID set rather than file:pos.
    pub by_gtid: bool,
    /// Do not emit rows before this coordinate (a start in the middle of a file).
    pub emit_from: Option<BinlogCoord>,
    /// Restarting before the acknowledged position (to read prepared XA transactions again):
    /// the transactions in this GTID set are not handed on again.
    pub acked: Option<GtidSet>,
}

impl StartPoint {
    /// Streaming starts after the transactions in `set`.
    pub fn after_gtid_set(set: GtidSet) -> StartPoint {
        StartPoint {
            coord: BinlogCoord {
                file: String::new(),
                pos: 4,
            },
            gtid: Some(set),
            by_gtid: true,
            emit_from: None,
            acked: None,
        }
    }
}

pub struct Source {
    cfg: Arc<SourceConfig>,
    /// `pipeline.batch_max_bytes`: a batch is handed on at this size.
    batch_max: usize,
    opts: Opts,
    pub info: ServerInfo,
    pub collations: Arc<CollationMap>,
    /// Reloaded include/exclude filters (SIGHUP): applied from the next transaction.
    pub filter_updates: Option<watch::Receiver<FilterUpdate>>,
}

/// A filter reload: generation number and the new filter.
pub type FilterUpdate = (u64, Option<TableFilter>);

fn classify(e: mysql_async::Error, at: &str) -> SourceError {
    if let mysql_async::Error::Server(s) = &e {
        let m = s.message.to_ascii_lowercase();
        if s.code == crate::mysql::errors::ER_REPLICA_SAME_ID
            || m.contains("same server_id")
            || m.contains("same server_uuid")
        {
            return SourceError::ServerIdClash(s.message.clone());
        }
        if crate::mysql::errors::is_auth(s.code) {
            return SourceError::Auth(s.message.clone(), "");
        }
        if s.code == crate::mysql::errors::ER_SOURCE_FATAL_ERROR_READING_BINLOG {
            return SourceError::Purged {
                at: at.to_string(),
                server: format!("error {}: {}", s.code, s.message),
            };
        }
    }
    SourceError::Mysql(e)
}

/// Errors after which reconnecting cannot help.
fn is_fatal(e: &SourceError) -> bool {
    match e {
        SourceError::Mysql(e) => !crate::mysql::errors::is_transient(e),
        SourceError::Connect { .. } | SourceError::Tls { .. } | SourceError::History(_) => false,
        _ => true,
    }
}

impl Source {
    /// Connects once, reads what the server is, and checks its settings (errors stop here).
    pub async fn connect(
        cfg: Arc<SourceConfig>,
        batch_max: usize,
    ) -> Result<(Source, Vec<Finding>), SourceError> {
        let password = cfg.password().map_err(SourceError::Config)?;
        let opts = crate::mysql::opts::opts_for(&cfg.url, password.as_ref(), &cfg.tls)
            .map_err(SourceError::Config)?;
        let mut c = connect_conn(&opts, &cfg).await?;
        let info = crate::mysql::server::server_info(&mut c).await?;
        let findings = crate::mysql::requirements::check_settings(&info);
        let collations = Arc::new(crate::mysql::schema::load_collations(&mut c).await?);
        let _ = c.disconnect().await;
        Ok((
            Source {
                cfg,
                batch_max,
                opts,
                info,
                collations,
                filter_updates: None,
            },
            findings,
        ))
    }

    /// The server's identity as read at connect time.
    pub fn identity(&self) -> divergence::Identity {
        divergence::Identity {
            server_id: self.info.server_id,
            server_uuid: self.info.server_uuid.clone(),
        }
    }

    /// Checks a start position's GTID set against the server's history (see
    /// [`divergence`]): `Err(SourceError::Diverged)` when the server lacks some of it.
    pub async fn check_divergence(
        &self,
        delivered: Option<&GtidSet>,
        what: &str,
        tails: &[divergence::Tail],
    ) -> Result<(), SourceError> {
        let mut c = self.conn().await?;
        let h = divergence::read_history(&mut c, self.info.flavor).await?;
        let _ = c.disconnect().await;
        divergence::check(delivered, what, tails, &h, &self.identity())
            .map_err(SourceError::Diverged)
    }

    /// The server's history now.
    pub async fn history(&self) -> Result<divergence::History, SourceError> {
        let mut c = self.conn().await?;
        let h = divergence::read_history(&mut c, self.info.flavor).await?;
        let _ = c.disconnect().await;
        Ok(h)
    }

    /// Error 1236 while resuming by GTID means "purged" or "this server never had that GTID"
    /// (MariaDB uses the same code for both): when the server's history lacks the position,
    /// it is a divergence, not a purge.
    async fn explain_1236(&self, sp: &StartPoint, e: SourceError) -> SourceError {
        if !matches!(e, SourceError::Purged { .. }) || !sp.by_gtid {
            return e;
        }
        match self
            .check_divergence(sp.gtid.as_ref(), "the position streaming resumes from", &[])
            .await
        {
            Err(d @ SourceError::Diverged(_)) => d,
            _ => e,
        }
    }

    pub fn replica_id(&self) -> u32 {
        self.cfg.server_id
    }

    pub fn opts(&self) -> &Opts {
        &self.opts
    }

    pub async fn conn(&self) -> Result<Conn, SourceError> {
        connect_conn(&self.opts, &self.cfg).await
    }

    pub fn new_decoder(&self) -> Result<Decoder, SourceError> {
        let filter = TableFilter::new(self.cfg.include.as_deref(), &self.cfg.exclude)
            .map_err(SourceError::Config)?;
        Ok(Decoder::new(
            self.info.flavor,
            filter,
            self.collations.clone(),
            self.cfg.verify_checksums,
        ))
    }

    /// Resolves where to start: a stored position wins over `source.start`.
    pub async fn resolve_start(
        &self,
        stored: Option<&Position>,
    ) -> Result<StartPoint, SourceError> {
        match stored {
            Some(p) => Ok(self.stored_start_point(p)),
            None => self.resolve(&self.cfg.start).await,
        }
    }

    /// Where a stored position restarts: at the position, or — while prepared XA transactions
    /// were held — at the restart point before the oldest one's PREPARE, handing on nothing up
    /// to the acknowledged position (by GTID when the server has GTIDs, else by coordinate).
    pub fn stored_start_point(&self, p: &Position) -> StartPoint {
        let Some(r) = &p.restart else {
            return self.resume_point(p);
        };
        let mut sp = self.resume_point(r);
        match &p.gtid {
            Some(g) if sp.by_gtid && self.gtid_usable(g) => sp.acked = Some(g.clone()),
            _ => sp.emit_from = Some(p.coord.clone()),
        }
        info!(restart = %r.coord, acknowledged = %p.coord, "prepared XA transactions were held: reading again from before the oldest one's PREPARE");
        sp
    }

    /// Resuming after a complete transaction: by GTID when the server can, else file:pos.
    pub fn resume_point(&self, p: &Position) -> StartPoint {
        StartPoint {
            coord: p.coord.clone(),
            by_gtid: p.gtid.as_ref().is_some_and(|g| self.gtid_usable(g)),
            gtid: p.gtid.clone(),
            emit_from: None,
            acked: None,
        }
    }

    /// Resolves a start position against the server.
    pub async fn resolve(&self, start: &StartPosition) -> Result<StartPoint, SourceError> {
        let mut c = self.conn().await?;
        let sp = match start {
            StartPosition::Latest => {
                let (coord, gtid) =
                    crate::mysql::server::current_position(&mut c, self.info.flavor).await?;
                StartPoint {
                    by_gtid: gtid.as_ref().is_some_and(|g| self.gtid_usable(g)),
                    coord,
                    gtid,
                    emit_from: None,
                    acked: None,
                }
            }
            StartPosition::Earliest => {
                let files = crate::mysql::server::binlog_files(&mut c).await?;
                let first = files.first().ok_or_else(|| {
                    SourceError::Config("the server lists no binlog files".into())
                })?;
                StartPoint {
                    coord: BinlogCoord {
                        file: first.0.clone(),
                        pos: 4,
                    },
                    gtid: None,
                    by_gtid: false,
                    emit_from: None,
                    acked: None,
                }
            }
            StartPosition::File { file, pos } => {
                let files = crate::mysql::server::binlog_files(&mut c).await?;
                if !files.iter().any(|(f, _)| f == file) {
                    return Err(SourceError::Purged {
                        at: format!("{file}:{pos}"),
                        server: format!(
                            "the server has {}",
                            files
                                .iter()
                                .map(|f| f.0.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
                // Start at the file's beginning so the GTID state is known, emit from `pos`.
                StartPoint {
                    coord: BinlogCoord {
                        file: file.clone(),
                        pos: 4,
                    },
                    gtid: None,
                    by_gtid: false,
                    emit_from: (*pos > 4).then(|| BinlogCoord {
                        file: file.clone(),
                        pos: *pos,
                    }),
                    acked: None,
                }
            }
            StartPosition::Gtid(g) => {
                let set = GtidSet::parse_any(g).map_err(SourceError::Config)?;
                if !self.gtid_usable(&set) {
                    return Err(SourceError::Config(format!(
                        "source.start gtid {g:?} is a {} GTID but the server is {}",
                        if matches!(set, GtidSet::MySql(_)) {
                            "MySQL"
                        } else {
                            "MariaDB"
                        },
                        self.info.version
                    )));
                }
                StartPoint::after_gtid_set(set)
            }
        };
        let _ = c.disconnect().await;
        Ok(sp)
    }

    fn gtid_usable(&self, g: &GtidSet) -> bool {
        match (g, self.info.flavor) {
            (GtidSet::MySql(_), Flavor::MySql) => self.info.gtid_mode.as_deref() == Some("ON"),
            (GtidSet::MariaDb(_), Flavor::MariaDb) => true,
            _ => false,
        }
    }

    async fn open_stream(&self, sp: &StartPoint) -> Result<BinlogStream, SourceError> {
        let mut c = self.conn().await?;
        // a reconnect may reach another server (a VIP or DNS name moved in a failover): the
        // stream must not continue from another history unchecked
        let now = divergence::read_identity(&mut c, self.info.flavor).await?;
        if now.differs(&self.identity()) {
            // what was handed on must be in the new server's history, else say so now
            let h = divergence::read_history(&mut c, self.info.flavor).await?;
            divergence::check(
                sp.acked.as_ref().or(sp.gtid.as_ref()),
                "the position this run handed on",
                &[],
                &h,
                &now,
            )
            .map_err(SourceError::Diverged)?;
            return Err(SourceError::ServerChanged {
                was: self.identity(),
                now,
            });
        }
        let hb = self.cfg.heartbeat.0.as_nanos() as u64;
        c.query_drop(format!(
            "SET @master_heartbeat_period = {hb}, @source_heartbeat_period = {hb}"
        ))
        .await?;
        let id = self.cfg.server_id;
        let req = match self.info.flavor {
            Flavor::MariaDb => {
                c.query_drop("SET @mariadb_slave_capability = 4").await?;
                if sp.by_gtid {
                    let g = sp.gtid.as_ref().map(|g| g.to_string()).unwrap_or_default();
                    c.exec_drop("SET @slave_connect_state = ?", (g,)).await?;
                    // strict mode: the server refuses a position it cannot continue from
                    c.query_drop("SET @slave_gtid_strict_mode = 1").await?;
                    BinlogStreamRequest::new(id)
                        .with_filename(b"")
                        .with_pos(4u64)
                } else {
                    BinlogStreamRequest::new(id)
                        .with_filename(sp.coord.file.as_bytes())
                        .with_pos(sp.coord.pos)
                }
            }
            Flavor::MySql => {
                if sp.by_gtid {
                    let sids = match &sp.gtid {
                        Some(GtidSet::MySql(s)) => s.to_sids().map_err(SourceError::Config)?,
                        _ => Vec::new(),
                    };
                    BinlogStreamRequest::new(id).with_gtid().with_gtid_set(sids)
                } else {
                    BinlogStreamRequest::new(id)
                        .with_filename(sp.coord.file.as_bytes())
                        .with_pos(sp.coord.pos)
                }
            }
        };
        Ok(c.get_binlog_stream(req).await?)
    }

    /// Streams until `shutdown` is set or a fatal error. Batches go to `tx` in binlog order.
    pub async fn run(
        &self,
        decoder: &mut Decoder,
        start: StartPoint,
        tx: mpsc::Sender<Batch>,
        mut shutdown: watch::Receiver<bool>,
        stats: Arc<SourceStats>,
    ) -> Result<(), SourceError> {
        let mut sp = start;
        decoder.start_at(&sp.coord.file, sp.gtid.clone(), sp.emit_from.clone());
        decoder.replay_acknowledged(sp.acked.clone());
        if sp.gtid.is_some() || !sp.coord.file.is_empty() {
            // the start itself is a valid resume point
            decoder.set_committed_if_none(Position::new(sp.coord.clone(), sp.gtid.clone()));
        }
        let mut failures = 0u32;
        let mut backoff = self.cfg.reconnect_backoff_initial.0;
        let mut meta: Option<Conn> = None;
        loop {
            let at = if sp.by_gtid {
                format!(
                    "GTID {}",
                    sp.gtid.as_ref().map(|g| g.to_string()).unwrap_or_default()
                )
            } else {
                sp.coord.to_string()
            };
            let span = info_span!("stream", at = %at);
            let result = async {
                info!(by_gtid = sp.by_gtid, "requesting binlog");
                let stream = self.open_stream(&sp).await.map_err(|e| match e {
                    SourceError::Mysql(m) => classify(m, &at),
                    e => e,
                })?;
                if sp.by_gtid {
                    decoder.expect_gtid_continuity();
                }
                crate::metrics::get().connected.set(1);
                crate::metrics::get().source_confirmed();
                self.pump(
                    decoder,
                    stream,
                    &tx,
                    &mut shutdown,
                    &mut meta,
                    &at,
                    &stats,
                    &mut failures,
                    &mut backoff,
                )
                .await
            }
            .instrument(span)
            .await;
            let m = crate::metrics::get();
            m.connected.set(0);
            m.source_idle
                .store(false, std::sync::atomic::Ordering::Relaxed);
            let result = match result {
                Err(e @ SourceError::Purged { .. }) => Err(self.explain_1236(&sp, e).await),
                r => r,
            };
            match result {
                Ok(()) => return Ok(()), // shutdown
                Err(e) if is_fatal(&e) => {
                    // hand on the complete transactions decoded before the failure
                    if let Some(b) = decoder.take_batch() {
                        let _ = hand_on(&tx, b).await;
                    }
                    return Err(e);
                }
                Err(e) => {
                    failures += 1;
                    let max = self.cfg.reconnect_max_attempts;
                    if max > 0 && failures > max {
                        return Err(SourceError::GaveUp {
                            attempts: failures - 1,
                            last: e.to_string(),
                        });
                    }
                    stats
                        .reconnects
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::metrics::get().reconnects.inc();
                    warn!(error = %e, retry_in = ?backoff, attempt = failures, "replication stream lost; reconnecting");
                    // hand on whatever complete transactions were decoded
                    if let Some(b) = decoder.take_batch() {
                        if hand_on(&tx, b).await.is_err() {
                            return Ok(());
                        }
                    }
                    decoder.reset_stream();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(self.cfg.reconnect_backoff_max.0);
                    if let Some(p) = decoder.committed() {
                        sp = self.resume_point(p);
                        decoder.resume_at(&sp.coord.file, sp.gtid.clone());
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn pump(
        &self,
        decoder: &mut Decoder,
        mut stream: BinlogStream,
        tx: &mpsc::Sender<Batch>,
        shutdown: &mut watch::Receiver<bool>,
        meta: &mut Option<Conn>,
        at: &str,
        stats: &SourceStats,
        failures: &mut u32,
        backoff: &mut Duration,
    ) -> Result<(), SourceError> {
        let read_timeout = self.cfg.read_timeout.0;
        let batch_max = self.batch_max;
        let metrics = crate::metrics::get();
        loop {
            if *shutdown.borrow() || decoder.reached_stop() {
                if let Some(b) = decoder.take_batch() {
                    let _ = hand_on(tx, b).await;
                }
                let _ = stream.close().await;
                return Ok(());
            }
            // Take what is ready without waiting; when nothing is, hand on the pending batch.
            let mut waited = false;
            let next = match next_event(&mut stream).now_or_never() {
                Some(n) => n,
                None => {
                    waited = true;
                    if let Some(b) = decoder.take_batch() {
                        if hand_on(tx, b).await.is_err() {
                            return Ok(());
                        }
                    }
                    // nothing pending: caught up unless the server has more (lag = 0)
                    metrics
                        .source_idle
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    tokio::select! {
                        r = tokio::time::timeout(read_timeout, next_event(&mut stream)) => match r {
                            Ok(n) => n,
                            Err(_) => {
                                return Err(SourceError::Connect {
                                    url: crate::mysql::opts::redact_url(self.cfg.url.expose()),
                                    message: format!("no event or heartbeat for {read_timeout:?}: the stream is stalled"),
                                })
                            }
                        },
                        _ = shutdown.changed() => continue,
                        // the pipeline ended (a sink failed): stop now, not at the next batch
                        () = tx.closed() => return Ok(()),
                    }
                }
            };
            let next = match next {
                Ok(n) => n,
                Err(message) => {
                    return Err(SourceError::Decode(DecodeError::Framing {
                        file: decoder.current_file().to_string(),
                        pos: decoder.next_event_pos(),
                        message: format!("malformed event from the server: {message}"),
                    }))
                }
            };
            let ev = match next {
                None => {
                    return Err(SourceError::Connect {
                        url: crate::mysql::opts::redact_url(self.cfg.url.expose()),
                        message: "the server closed the replication stream".into(),
                    })
                }
                Some(Err(e)) => return Err(classify(e, at)),
                Some(Ok(ev)) => std::sync::Arc::new(ev),
            };
            // an event or a heartbeat: the stream is alive (readiness). Noted after a wait and
            // every 256th event of a run read without waiting: reading the clock for every
            // event was 4% of the CPU on small transactions (issue 16)
            let seen = stats
                .events
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if waited || seen.is_multiple_of(256) {
                metrics.source_confirmed();
            }
            *failures = 0;
            *backoff = self.cfg.reconnect_backoff_initial.0;
            metrics.events.inc();
            if let Some(rx) = &self.filter_updates {
                let u = rx.borrow();
                if u.0 != decoder.filter_generation {
                    if let Some(f) = &u.1 {
                        info!(
                            generation = u.0,
                            "include/exclude filter reloaded; applies from the next transaction"
                        );
                        decoder.set_filter(f.clone(), u.0);
                    }
                }
            }
            metrics.bytes.inc_by(ev.header().event_size() as u64);
            if ev.header().event_type_raw() != crate::binlog::event_type::HEARTBEAT {
                // anything but a heartbeat means the server had more for us
                metrics
                    .source_idle
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
            loop {
                match decoder.handle(&ev)? {
                    Step::Continue => break,
                    Step::NeedHints { db, table } => {
                        if meta.is_none() {
                            *meta = Some(self.conn().await?);
                        }
                        let c = meta
                            .as_mut()
                            .ok_or_else(|| SourceError::Config("no metadata connection".into()))?;
                        match crate::mysql::schema::fetch_hints(c, &db, &table, self.info.flavor)
                            .await
                        {
                            Ok(h) => {
                                debug!(%db, %table, json = ?h.json_columns, "schema hints");
                                decoder.set_hints(&db, &table, h);
                            }
                            Err(e) => {
                                *meta = None;
                                return Err(e.into());
                            }
                        }
                    }
                }
            }
            if decoder.pending_bytes() >= batch_max {
                if let Some(b) = decoder.take_batch() {
                    if hand_on(tx, b).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Hands a batch to the pipeline. While this waits (backpressure: the sinks are behind, or the
/// pipeline is paused), the stream is not read, which readiness must not blame on the source.
async fn hand_on(tx: &mpsc::Sender<Batch>, b: Batch) -> Result<(), mpsc::error::SendError<Batch>> {
    let m = crate::metrics::get();
    m.source_handing_on
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = tx.send(b).await;
    m.source_handing_on
        .store(false, std::sync::atomic::Ordering::Relaxed);
    m.source_confirmed();
    r
}

/// The next event of the stream. mysql_async/mysql_common cut events out of packets trusting
/// the size in the event header and panic on a malformed one (e.g. a size larger than the
/// packet, or smaller than the checksum): that panic is caught here and returned as `Err` with
/// its message, so it stops the stream with an error naming the position instead of killing
/// the task.
async fn next_event(
    stream: &mut BinlogStream,
) -> Result<Option<Result<mysql_async::binlog::events::Event, mysql_async::Error>>, String> {
    std::panic::AssertUnwindSafe(stream.next())
        .catch_unwind()
        .await
        .map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the event reader panicked".into())
        })
}

/// Counters shared with metrics and progress reporting.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub events: std::sync::atomic::AtomicU64,
    pub reconnects: std::sync::atomic::AtomicU64,
}

async fn connect_conn(opts: &Opts, cfg: &SourceConfig) -> Result<Conn, SourceError> {
    let url = crate::mysql::opts::redact_url(cfg.url.expose());
    match tokio::time::timeout(cfg.connect_timeout.0, Conn::new(opts.clone())).await {
        Err(_) => Err(SourceError::Connect {
            url,
            message: format!("no answer within {:?}", cfg.connect_timeout.0),
        }),
        Ok(Err(mysql_async::Error::Server(s))) if crate::mysql::errors::is_auth(s.code) => {
            Err(SourceError::Auth(
                s.message,
                crate::mysql::opts::plain_auth_hint(opts, "source.tls"),
            ))
        }
        Ok(Err(e)) if crate::mysql::opts::tls_problem(&e).is_some() => Err(SourceError::Tls {
            url,
            message: crate::mysql::opts::tls_problem(&e)
                .map(|p| p.describe("source.tls"))
                .unwrap_or_default(),
        }),
        Ok(Err(e)) => Err(SourceError::Connect {
            url,
            message: e.to_string(),
        }),
        Ok(Ok(c)) => Ok(c),
    }
}
