//! The daemon's top level: wires source → pipeline → sinks → checkpoint for `run`, and the
//! operator verbs (`migrate`, `position …`, `replay …`).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::binlog::position::{BinlogCoord, GtidSet, Position, StartPosition};
use crate::binlog::Flavor;
use crate::checkpoint::{Checkpoint, CheckpointError, SourceIdentity};
use crate::config::Config;
use crate::event::{Batch, SourceInfo};
use crate::finding::{Finding, Severity};
use crate::pipeline::{Acked, Fence, Pipeline};
use crate::sinks::file::FileSink;
use crate::sinks::kafka::{KafkaSink, KafkaStats};
use crate::sinks::redis::{RedisSink, RedisStats};
use crate::sinks::{Sink, SinkError};
use crate::source::divergence::Identity;
use crate::source::{Source, SourceError, SourceStats, StartPoint};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Other(String),
    /// A config mistake found against the server (exit code 2).
    #[error("{0}")]
    Config(String),
}

impl From<crate::mysql::QueryError> for DaemonError {
    fn from(e: crate::mysql::QueryError) -> Self {
        DaemonError::Source(e.into())
    }
}

fn other(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Other(e.to_string())
}

/// Opens the configured sinks (all, or those named in `only`).
pub fn open_sinks(
    cfg: &Config,
    only: &[String],
    info: SourceInfo,
) -> Result<Vec<Box<dyn Sink>>, DaemonError> {
    for n in only {
        if !cfg.sinks.names().any(|f| f == n) {
            return Err(other(format!("no sink named {n:?} in the config")));
        }
    }
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for f in &cfg.sinks.file {
        if only.is_empty() || only.contains(&f.name) {
            sinks.push(Box::new(FileSink::open(f, info.clone())?));
        }
    }
    for r in &cfg.sinks.redis {
        if only.is_empty() || only.contains(&r.name) {
            let pw = r.password().map_err(other)?;
            let stats = Arc::new(RedisStats::for_sink(&r.name));
            sinks.push(Box::new(RedisSink::open(
                r,
                pw.as_ref().map(|p| p.expose()),
                stats,
            )?));
        }
    }
    for k in &cfg.sinks.kafka {
        if only.is_empty() || only.contains(&k.name) {
            let stats = Arc::new(KafkaStats::for_sink(&k.name));
            sinks.push(Box::new(KafkaSink::open(k, info.clone(), stats)?));
        }
    }
    Ok(sinks)
}

/// What the sinks are told about the stream.
pub fn source_info(
    cfg: &Config,
    server: Option<&crate::mysql::server::ServerInfo>,
    replay: bool,
) -> SourceInfo {
    SourceInfo {
        name: cfg.source.name.clone(),
        pipeline: cfg.pipeline.name.clone(),
        server: server
            .map(|s| {
                s.server_uuid
                    .clone()
                    .unwrap_or_else(|| s.server_id.to_string())
            })
            .unwrap_or_default(),
        replay,
    }
}

async fn open_checkpoint(cfg: &Config) -> Result<Checkpoint, DaemonError> {
    let opts = cfg.checkpoint_opts().map_err(other)?;
    let mut cp = Checkpoint::connect(opts, &cfg.checkpoint.schema, &cfg.pipeline.name).await?;
    cp.migrate().await?;
    Ok(cp)
}

/// `binlogd migrate`: applies pending migrations; returns how many ran.
pub async fn migrate(cfg: &Config) -> Result<usize, DaemonError> {
    let opts = cfg.checkpoint_opts().map_err(other)?;
    let mut cp = Checkpoint::connect(opts, &cfg.checkpoint.schema, &cfg.pipeline.name).await?;
    Ok(cp.migrate().await?)
}

/// Checks a stored position against the server it is about to be used on.
fn validate_stored(
    stored: &Position,
    src: &Source,
    stored_uuid: Option<&str>,
) -> Result<(), DaemonError> {
    match (&stored.gtid, src.info.flavor) {
        (Some(GtidSet::MySql(_)), Flavor::MariaDb) | (Some(GtidSet::MariaDb(_)), Flavor::MySql) => {
            return Err(other(format!(
                "the stored position has a {} GTID set but the source is {}: GTID mode mismatch. \
                 Fix: `binlogd position set` (or reset) for this server",
                if src.info.flavor == Flavor::MySql { "MariaDB" } else { "MySQL" },
                src.info.version
            )))
        }
        (Some(GtidSet::MySql(_)), Flavor::MySql) if src.info.gtid_mode.as_deref() != Some("ON") => {
            return Err(other(
                "the stored position is a GTID set but the source runs with gtid_mode OFF: GTID mode mismatch. \
                 Fix: set gtid_mode=ON, or `binlogd position set --file … --pos …`",
            ))
        }
        (None, Flavor::MySql) => {
            if let (Some(a), Some(b)) = (stored_uuid, src.info.server_uuid.as_deref()) {
                if a != b {
                    return Err(other(format!(
                        "the stored file:pos position belongs to server {a}, but the source is {b}; without GTIDs a \
                         position cannot move between servers. Fix: `binlogd position set` for the new server"
                    )));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `binlogd check`: the stored position (if any) against the server it would resume on — a GTID
/// mode mismatch, a file:pos of another server, or a binlog purged since it was stored. Each
/// problem is an error finding naming the fix; not being able to read the position is a warning.
pub async fn check_stored(cfg: &Config, src: &Source) -> Vec<Finding> {
    let finding = |severity, message: String| Finding { severity, message };
    let cannot = |e: &dyn std::fmt::Display| {
        vec![finding(
            Severity::Warning,
            format!("cannot read the stored position ({e}); it is checked again at startup"),
        )]
    };
    let opts = match cfg.checkpoint_opts() {
        Ok(o) => o,
        Err(e) => return cannot(&e),
    };
    let loaded = match Checkpoint::connect(opts, &cfg.checkpoint.schema, &cfg.pipeline.name).await {
        Ok(mut cp) => cp.load().await,
        Err(e) => Err(e),
    };
    let stored = match loaded {
        Ok(Some(s)) => s,
        Ok(None) => return Vec::new(),
        // no checkpoint table yet (first start): nothing stored
        Err(CheckpointError::Mysql(mysql_async::Error::Server(e)))
            if e.code == crate::mysql::errors::ER_NO_SUCH_TABLE =>
        {
            return Vec::new()
        }
        Err(e) => return cannot(&e),
    };
    if let Err(e) = validate_stored(&stored.position, src, stored.server_uuid.as_deref()) {
        return vec![finding(Severity::Error, e.to_string())];
    }
    let p = &stored.position;
    let mut out = Vec::new();
    let was = stored_identity(&stored);
    if was.server_id != 0 && was.differs(&src.identity()) {
        out.push(finding(
            Severity::Warning,
            format!(
                "the stored position was read from another server ({was}) than the source ({}): a failover; its \
                 history is checked against what was delivered",
                src.identity()
            ),
        ));
    }
    if let Some(g) = &p.gtid {
        let servers = [identity_label(&was), identity_label(&src.identity())];
        let tails = match kafka_tails(cfg, &servers).await {
            Ok(t) => t,
            Err(e) => {
                out.push(finding(
                    Severity::Warning,
                    format!("{e}; the Kafka partition tails are checked again at startup"),
                ));
                Vec::new()
            }
        };
        match src
            .check_divergence(Some(g), "the stored position", &tails)
            .await
        {
            Ok(()) => {}
            Err(SourceError::Diverged(d)) => {
                out.push(finding(Severity::Error, d.to_string()));
                return out;
            }
            Err(e) => {
                out.extend(cannot(&e));
                return out;
            }
        }
    }
    let purged = |what: String| {
        finding(
            Severity::Error,
            format!(
                "the stored position {what} is no longer on the server (purged); binlogd cannot resume without \
                 skipping changes. Fix: replay the missing range from archived binlog files \
                 (`binlogd replay --binlog-file …`), then accept the gap with `binlogd position set --latest`"
            ),
        )
    };
    let mut c = match src.conn().await {
        Ok(c) => c,
        Err(e) => {
            out.extend(cannot(&e));
            return out;
        }
    };
    let files = match crate::mysql::server::binlog_files(&mut c).await {
        Ok(f) => f,
        Err(e) => {
            out.extend(cannot(&e));
            return out;
        }
    };
    let sp = src.resume_point(p);
    let purged_findings = match (&p.gtid, sp.by_gtid) {
        (Some(GtidSet::MySql(set)), true) => {
            let covered: Result<Option<i64>, _> = mysql_async::prelude::Queryable::exec_first(
                &mut c,
                "SELECT GTID_SUBSET(@@GLOBAL.gtid_purged, ?)",
                (set.to_string(),),
            )
            .await;
            match covered {
                Ok(Some(0)) => vec![purged(format!("(GTID set {set})"))],
                Ok(_) => Vec::new(),
                Err(e) => cannot(&e),
            }
        }
        (Some(GtidSet::MariaDb(have)), true) => {
            let oldest = match files.first() {
                Some((f, _)) => f.clone(),
                None => return out,
            };
            let start: Result<Option<String>, _> = mysql_async::prelude::Queryable::exec_first(
                &mut c,
                "SELECT BINLOG_GTID_POS(?, 4)",
                (oldest.as_str(),),
            )
            .await;
            match start.map(|s| {
                s.unwrap_or_default()
                    .parse::<crate::binlog::position::MariaGtidPos>()
            }) {
                Ok(Ok(first)) if !have.covers(&first) => vec![purged(format!(
                    "(GTID position {have}; the oldest binlog {oldest} starts after {first})"
                ))],
                Ok(Ok(_)) => Vec::new(),
                Ok(Err(e)) => cannot(&e),
                Err(e) => cannot(&e),
            }
        }
        _ => {
            if files.iter().any(|(f, _)| *f == p.coord.file) {
                Vec::new()
            } else {
                vec![purged(format!(
                    "{} (the server has {})",
                    p.coord,
                    files
                        .iter()
                        .map(|f| f.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))]
            }
        }
    };
    let _ = c.disconnect().await;
    out.extend(purged_findings);
    out
}

/// `true` when the checkpoint is stored on the source server itself (no `checkpoint.url`, or
/// one that reaches the same server).
async fn checkpoint_on_source(cfg: &Config, src: &Source) -> Result<bool, DaemonError> {
    if cfg.checkpoint.url.is_none() {
        return Ok(true);
    }
    let opts = cfg.checkpoint_opts().map_err(other)?;
    let mut c = tokio::time::timeout(cfg.source.connect_timeout.0, mysql_async::Conn::new(opts))
        .await
        .map_err(|_| other("the checkpoint server does not answer"))?
        .map_err(|e| DaemonError::Checkpoint(CheckpointError::Mysql(e)))?;
    let flavor = if crate::mysql::server::server_info(&mut c)
        .await
        .map_err(|e| DaemonError::Checkpoint(CheckpointError::Mysql(e)))?
        .flavor
        == Flavor::MySql
    {
        Flavor::MySql
    } else {
        Flavor::MariaDb
    };
    let id = crate::source::divergence::read_identity(&mut c, flavor)
        .await
        .map_err(other)?;
    let _ = c.disconnect().await;
    Ok(flavor == src.info.flavor && !id.differs(&src.identity()))
}

/// The deployment's failover safety, for `binlogd check` and startup: a checkpoint stored on
/// the source itself is replicated with it, so after a failover to a replica that was behind
/// it no longer says what the sinks received.
pub async fn check_failover_setup(cfg: &Config, src: &Source) -> Vec<Finding> {
    let gtids = match src.info.flavor {
        Flavor::MariaDb => true,
        Flavor::MySql => src.info.gtid_mode.as_deref() == Some("ON"),
    };
    // a Kafka exactly_once sink's partition tails record what was delivered, outside the pair
    if !gtids || cfg.sinks.kafka.iter().any(|k| k.exactly_once) {
        return Vec::new();
    }
    match checkpoint_on_source(cfg, src).await {
        Ok(true) => vec![Finding {
            severity: Severity::Warning,
            message: "the checkpoint is stored on the source server: after a failover to a replica that was behind, \
                      its replicated copy is older than what the sinks already received, so binlogd cannot see that the \
                      new primary lacks changes it delivered. Fix: store it on a server outside the failover pair \
                      (checkpoint.url), or add a Kafka sink with exactly_once = true (its partition tails are checked)"
                .into(),
        }],
        Ok(false) => Vec::new(),
        Err(e) => vec![Finding {
            severity: Severity::Warning,
            message: format!("cannot tell whether the checkpoint server is the source server: {e}"),
        }],
    }
}

/// What `binlogd run` does besides streaming.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Exit after handing on every transaction up to this coordinate.
    pub stop_at: Option<BinlogCoord>,
    /// Resume although the source server lacks transactions already handed to the sinks (a
    /// failover to a replica that was behind): from the last transaction both histories share.
    pub accept_divergence: bool,
}

/// The stored position's source identity.
fn stored_identity(s: &crate::checkpoint::Stored) -> Identity {
    Identity {
        server_id: s.server_id,
        server_uuid: s.server_uuid.clone(),
    }
}

/// Kafka `exactly_once` sinks: the GTIDs at their partitions' tails that were written from
/// the stored position's server or from the current one (older tails, from a server before
/// an accepted divergence, no longer count).
async fn kafka_tails(
    cfg: &Config,
    servers: &[String],
) -> Result<Vec<crate::source::divergence::Tail>, DaemonError> {
    let mut out = Vec::new();
    for k in cfg.sinks.kafka.iter().filter(|k| k.exactly_once) {
        let (k2, pipeline, name) = (
            k.clone(),
            cfg.pipeline.name.clone(),
            cfg.source.name.clone(),
        );
        let tails = tokio::task::spawn_blocking(move || {
            crate::sinks::kafka::probe::tail_gtids(&k2, &pipeline, &name)
        })
        .await
        .map_err(other)?
        .map_err(|m| {
            DaemonError::Sink(SinkError::Fatal {
                sink: k.name.clone(),
                message: format!("cannot read the partition tails to check them against the source's history: {m}"),
            })
        })?;
        out.extend(tails.into_iter().filter(|t| servers.contains(&t.server)));
    }
    Ok(out)
}

/// The identity strings sinks record (`binlogd.server`): server_uuid, else server_id.
fn identity_label(id: &Identity) -> String {
    id.server_uuid
        .clone()
        .unwrap_or_else(|| id.server_id.to_string())
}

/// Before streaming: the stored position (and the Kafka tails) against the server's history.
/// Diverged: an error, or with `accept` the position to resume from (logged loudly).
async fn check_history(
    cfg: &Config,
    src: &Source,
    stored: &crate::checkpoint::Stored,
    accept: bool,
) -> Result<Option<Position>, DaemonError> {
    let was = stored_identity(stored);
    let now = src.identity();
    if was.server_id != 0 && was.differs(&now) {
        warn!(
            stored_from = %was,
            now = %now,
            "the source server is not the one the stored position was read from: a failover (or a new source); checking that its history contains what was delivered"
        );
    }
    let Some(gtid) = stored.position.gtid.as_ref() else {
        return Ok(None);
    };
    let servers = [identity_label(&was), identity_label(&now)];
    let tails = kafka_tails(cfg, &servers).await?;
    match src
        .check_divergence(Some(gtid), "the stored position", &tails)
        .await
    {
        Ok(()) => Ok(None),
        Err(SourceError::Diverged(d)) if accept => {
            let h = src.history().await?;
            let common = |g: &GtidSet| {
                crate::source::divergence::common(g, &h).map_err(|e| {
                    other(format!("--accept-divergence: {e}. The divergence was: {d}"))
                })
            };
            let mut p = stored.position.clone();
            p.gtid = Some(common(gtid)?);
            // the old server's coordinates mean nothing here: resume by GTID
            p.coord = BinlogCoord {
                file: String::new(),
                pos: 4,
            };
            if let Some(r) = p.restart.as_mut() {
                if let Some(g) = r.gtid.clone() {
                    r.gtid = Some(common(&g)?);
                }
            }
            error!(
                lacking = d.lacking.count,
                gtids = %d.lacking.ranges,
                stored = %gtid,
                resume_from = %p.gtid.as_ref().map(|g| g.to_string()).unwrap_or_default(),
                server = %now,
                "ACCEPTING A DIVERGED HISTORY (--accept-divergence): the sinks keep transactions this server never had; \
                 streaming resumes after the last transaction both histories share. Re-read the affected tables into the sinks"
            );
            Ok(Some(p))
        }
        Err(e) => Err(e.into()),
    }
}

/// `binlogd run`.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: watch::Receiver<bool>,
    filter_updates: Option<watch::Receiver<crate::source::FilterUpdate>>,
) -> Result<(), DaemonError> {
    let cfg = Arc::new(cfg);
    let metrics = crate::metrics::get();
    crate::admin::start(&cfg.admin.listen)
        .await
        .map_err(other)?;
    let hb = cfg.source.heartbeat.0;
    metrics.ready_limit_ms.store(
        (hb + (hb / 2).max(Duration::from_millis(500))).as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let (mut src, mut findings) = Source::connect(cfg.clone()).await?;
    src.filter_updates = filter_updates;
    {
        let mut c = src.conn().await?;
        findings.extend(crate::sinks::check(&cfg, &mut c, false).await);
        match crate::mysql::requirements::check_privileges(&mut c).await {
            Ok(f) => findings.extend(f),
            Err(e) => warn!("cannot read the user's grants to check them: {e}"),
        }
        if let Ok(filter) =
            crate::filter::TableFilter::new(cfg.source.include.as_deref(), &cfg.source.exclude)
        {
            match crate::mysql::requirements::fk_cascade_findings(&mut c, src.info.flavor, &filter)
                .await
            {
                Ok(f) => findings.extend(f),
                Err(e) => warn!("cannot read foreign keys to check for cascades: {e}"),
            }
        }
        let _ = c.disconnect().await;
    }
    findings.extend(check_failover_setup(&cfg, &src).await);
    let fatal: Vec<String> = findings
        .iter()
        .filter(|f| f.severity != Severity::Warning)
        .map(|f| f.message.clone())
        .collect();
    for f in findings.iter().filter(|f| f.severity == Severity::Warning) {
        warn!("{}", f.message);
    }
    if !fatal.is_empty() {
        let msg = format!(
            "cannot start: the source server or a sink is not set up for binlogd:\n  - {}",
            fatal.join("\n  - ")
        );
        // only config mistakes: exit code 2, as for any other config mistake
        return Err(if findings.iter().any(|f| f.severity == Severity::Error) {
            other(msg)
        } else {
            DaemonError::Config(msg)
        });
    }
    info!(server = %src.info.version, flavor = ?src.info.flavor, "connected to source");

    let mut cp = open_checkpoint(&cfg).await?;
    // the lock is a lease: the server ends this session (and frees the lock) when this daemon
    // stops confirming it, e.g. cut off by a network partition
    cp.set_session_timeout(cfg.checkpoint.lock_wait_timeout_secs())
        .await?;
    let mut shutdown_wait = shutdown.clone();
    let mut waited = false;
    while !cp.try_lock().await? {
        if !waited {
            warn!(lock = %cp.lock_name(), "another binlogd holds the pipeline lock: standing by until it is released");
            metrics.set_state("standby");
            waited = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown_wait.changed() => return Ok(()),
        }
    }
    let locked_at = crate::metrics::mono_ms();
    info!(lock = %cp.lock_name(), lease = ?cfg.checkpoint.lock_lease.0, "holding the pipeline lock: active");
    let stored = cp.load().await?;
    let (schema, table) = {
        let (s, t) = cp.table();
        (s.to_string(), t.to_string())
    };

    // From here the lock is kept alive by the store task, also while the startup below
    // (history checks, Kafka probes, sinks) takes its time.
    let (fence_tx, fence_rx) = watch::channel(Fence::Open);
    let lease = Arc::new(Lease {
        confirmed: std::sync::atomic::AtomicU64::new(0),
        fence: fence_tx,
        fence_after: cfg.checkpoint.fence_after(),
        lease: cfg.checkpoint.lock_lease.0,
    });
    lease.confirm(locked_at);
    metrics.active.set(1);
    metrics.set_state("active");
    let (acked_tx, acked_rx) = watch::channel::<Option<Acked>>(None);
    let (gate_tx, gate_rx) = watch::channel(true);
    // the source stops on an external signal or when the checkpointer loses the lock
    let (stop_tx, stop_rx) = watch::channel(false);
    let identity = src.identity();
    let store = Store {
        opts: cfg.checkpoint_opts().map_err(other)?,
        schema: cfg.checkpoint.schema.clone(),
        pipeline: cfg.pipeline.name.clone(),
        id: SourceIdentity {
            server_id: identity.server_id,
            server_uuid: identity.server_uuid.clone(),
        },
        interval: cfg.checkpoint.interval.0,
        max_unstored: cfg.checkpoint.max_unstored.0,
        store_timeout: cfg.checkpoint.store_timeout.0,
        ping_every: cfg.checkpoint.ping_every(hb),
        wait_timeout_secs: cfg.checkpoint.lock_wait_timeout_secs(),
        gate: gate_tx,
        lease: lease.clone(),
    };
    let checkpointer = tokio::spawn(store.run(cp, acked_rx, stop_tx.clone()));
    let fencing = tokio::spawn(lease.clone().watch());

    let startup = async {
        let mut stored = stored;
        if let Some(s) = &stored {
            validate_stored(&s.position, &src, s.server_uuid.as_deref())?;
            if let Some(p) = check_history(&cfg, &src, s, opts.accept_divergence).await? {
                // store the accepted position at once: the next start needs no flag
                let _ = acked_tx.send(Some(Acked {
                    position: p.clone(),
                    event_ts_ms: s.event_ts_ms,
                    rows: 0,
                }));
                stored = stored.map(|mut s| {
                    s.position = p;
                    s
                });
            } else if opts.accept_divergence {
                info!("--accept-divergence: the source server's history contains the stored position; nothing to accept");
            }
        }
        if let Some(s) = &stored {
            info!(position = %s.position.coord, gtid = ?s.position.gtid.as_ref().map(|g| g.to_string()), "resuming from stored position");
        }
        let sinks = open_sinks(&cfg, &[], source_info(&cfg, Some(&src.info), false))?;
        let start = src
            .resolve_start(stored.as_ref().map(|s| &s.position))
            .await?;
        info!(file = %start.coord, gtid = ?start.gtid.as_ref().map(|g| g.to_string()), by_gtid = start.by_gtid, "start position");
        let mut decoder = src.new_decoder()?;
        decoder.exclude_table(&schema, &table);
        decoder.exclude_table(&schema, "schema_migrations");
        decoder.exclude_table(&schema, "checkpoint_restart");
        decoder.stop_at = opts.stop_at.clone();
        Ok::<_, DaemonError>((sinks, start, decoder))
    }
    .await;
    let (sinks, start, mut decoder) = match startup {
        Ok(x) => x,
        Err(e) => {
            // nothing was streamed: end the store task (it stores an accepted position, if
            // any) and free the lock
            drop(acked_tx);
            let _ = tokio::time::timeout(cfg.checkpoint.store_timeout.0, checkpointer).await;
            fencing.abort();
            metrics.active.set(0);
            metrics.set_state("stopped");
            return Err(e);
        }
    };

    let (tx, rx) = mpsc::channel(2);
    let pipeline = tokio::spawn(
        Pipeline::new(cfg.pipeline.max_in_flight.0 as usize)
            .gated(gate_rx)
            .fenced(fence_rx)
            .run(rx, sinks, acked_tx),
    );
    let stats = Arc::new(SourceStats::default());
    let forward = {
        let stop_tx = stop_tx.clone();
        let mut ext = shutdown.clone();
        tokio::spawn(async move {
            while !*ext.borrow() {
                if ext.changed().await.is_err() {
                    return;
                }
            }
            let _ = stop_tx.send(true);
        })
    };
    let flavor = src.info.flavor;
    let source_task = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let r = src.run(&mut decoder, start, tx, stop_rx, stats).await;
            (r, src)
        })
    };
    let lag = tokio::spawn(watch_lag(cfg.clone(), flavor));
    let (sr, _src) = source_task.await.map_err(other)?;
    // the source has stopped: if the lock cannot be confirmed (now or while draining), what is
    // still queued is not handed on (the next start reads it again from the stored position)
    let abandon = {
        let lease = lease.clone();
        tokio::spawn(async move {
            let mut f = lease.fence.subscribe();
            loop {
                if *f.borrow_and_update() == Fence::Hold {
                    warn!("the source has stopped while the pipeline lock is not confirmed: what is still queued is not handed on");
                    lease.fence.send_replace(Fence::Lost);
                    return;
                }
                if f.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    let pr = pipeline.await.map_err(other)?;
    // the pipeline has drained: store the last acknowledged position, then release the lock
    let cr = checkpointer.await.map_err(other)?;
    forward.abort();
    lag.abort();
    fencing.abort();
    abandon.abort();
    metrics.active.set(0);
    metrics.set_state("stopped");
    if let Err(e) = &sr {
        error!("{e}");
    }
    cr?;
    sr?;
    pr?;
    info!("stopped");
    Ok(())
}

/// The pipeline lock as a lease: when it was last confirmed, and the fence that stops handing
/// on batches once it has not been confirmed for `fence_after`.
struct Lease {
    /// `mono_ms` at the start of the last round trip on the lock session that succeeded.
    confirmed: std::sync::atomic::AtomicU64,
    fence: watch::Sender<Fence>,
    fence_after: Duration,
    lease: Duration,
}

impl Lease {
    fn confirm(&self, at: u64) {
        self.confirmed
            .fetch_max(at, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::get().lock_confirmed(at);
    }

    /// Another daemon may hold the lock: nothing reaches a sink any more.
    fn lose(&self) {
        self.fence.send_replace(Fence::Lost);
        let m = crate::metrics::get();
        m.active.set(0);
        m.set_state("lost the pipeline lock");
    }

    /// Closes the fence when the lock has not been confirmed for `fence_after` (before the
    /// server can free it), opens it again when it is confirmed.
    async fn watch(self: Arc<Self>) {
        let m = crate::metrics::get();
        let tick =
            (self.fence_after / 40).clamp(Duration::from_millis(20), Duration::from_millis(200));
        loop {
            tokio::time::sleep(tick).await;
            let age = crate::metrics::mono_ms()
                .saturating_sub(self.confirmed.load(std::sync::atomic::Ordering::Relaxed));
            let stale = age > self.fence_after.as_millis() as u64;
            // copy the state out: a borrow held across send_replace would deadlock
            let state = *self.fence.borrow();
            match state {
                Fence::Lost => return,
                Fence::Open if stale => {
                    error!(
                        unconfirmed_for = ?Duration::from_millis(age),
                        lease = ?self.lease,
                        "the pipeline lock could not be confirmed for longer than the lease allows: stopped handing \
                         batches to the sinks (self-fencing) before the checkpoint server can free the lock for a standby"
                    );
                    self.fence.send_replace(Fence::Hold);
                    m.active.set(0);
                    m.set_state("fenced");
                }
                Fence::Hold if !stale => {
                    info!("the pipeline lock is confirmed again: handing on batches resumes");
                    self.fence.send_replace(Fence::Open);
                    m.active.set(1);
                    m.set_state("active");
                }
                _ => {}
            }
        }
    }
}

/// Measures the lag in bytes (acknowledged position → the server's current position) every
/// `admin.lag_interval`; while the lag in time exceeds `admin.progress_threshold`, logs
/// catch-up progress: position, rates and the estimated time to catch up.
async fn watch_lag(cfg: Arc<Config>, flavor: crate::binlog::Flavor) {
    use std::sync::atomic::Ordering;
    let m = crate::metrics::get();
    let every = cfg.admin.lag_interval.0;
    let mut c: Option<mysql_async::Conn> = None;
    let mut last = (Instant::now(), m.bytes.get(), m.events.get());
    loop {
        tokio::time::sleep(every).await;
        let file = m.acked_file.lock().map(|f| f.clone()).unwrap_or_default();
        if file.is_empty() {
            continue;
        }
        let at = BinlogCoord {
            file,
            pos: m.position_pos.get() as u64,
        };
        if c.is_none() {
            let opts = cfg.source_password().and_then(|pw| {
                crate::mysql::opts::opts_for(&cfg.source.url, pw.as_ref(), &cfg.source.tls)
            });
            if let Ok(o) = opts {
                c = mysql_async::Conn::new(o).await.ok();
            }
        }
        let Some(conn_) = c.as_mut() else { continue };
        let behind = match crate::mysql::server::bytes_behind(conn_, flavor, &at).await {
            Ok((_, b)) => b,
            Err(e) => {
                tracing::debug!(error = %e, "measuring the lag failed");
                c = None;
                continue;
            }
        };
        if let Some(b) = behind {
            m.lag_bytes.set(b as i64);
        }
        m.refresh();
        let lag = m.lag_seconds.get();
        let (t, bytes, events) = (Instant::now(), m.bytes.get(), m.events.get());
        let secs = t.duration_since(last.0).as_secs_f64().max(0.001);
        let byte_rate = (bytes - last.1) as f64 / secs;
        let event_rate = (events - last.2) as f64 / secs;
        last = (t, bytes, events);
        if lag > cfg.admin.progress_threshold.0.as_secs_f64() {
            let eta = match behind {
                Some(b) if byte_rate > 0.0 => format!("{:.0}s", b as f64 / byte_rate),
                _ => "unknown".into(),
            };
            info!(
                position = %at,
                lag_seconds = lag,
                lag_bytes = ?behind,
                bytes_per_s = byte_rate as u64,
                events_per_s = event_rate as u64,
                eta = %eta,
                in_flight = m.pipeline_in_flight.load(Ordering::Relaxed),
                "catching up"
            );
        }
    }
}

/// The store loop's settings.
struct Store {
    opts: mysql_async::Opts,
    schema: String,
    pipeline: String,
    id: SourceIdentity,
    interval: Duration,
    max_unstored: Duration,
    store_timeout: Duration,
    /// Confirm the lock this often when there is nothing to store.
    ping_every: Duration,
    /// The lock session's server-side `wait_timeout`.
    wait_timeout_secs: u64,
    /// Open while the pipeline may read from the source.
    gate: watch::Sender<bool>,
    lease: Arc<Lease>,
}

impl Store {
    /// A checkpoint call that does not answer within `limit` counts as failed.
    async fn bounded<T>(
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, CheckpointError>>,
    ) -> Result<T, CheckpointError> {
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(CheckpointError::Invalid(format!(
                "no answer within {limit:?} (checkpoint.store_timeout)"
            )))
        })
    }

    /// A new lock session after the old one failed. `Ok(None)`: another daemon holds the lock.
    async fn reconnect(&self, old: &Checkpoint) -> Result<Option<Checkpoint>, String> {
        let t = crate::metrics::mono_ms();
        let mut fresh = Self::bounded(
            self.store_timeout,
            Checkpoint::connect(self.opts.clone(), &self.schema, &self.pipeline),
        )
        .await
        .map_err(|e| e.to_string())?;
        Self::bounded(
            self.store_timeout,
            fresh.set_session_timeout(self.wait_timeout_secs),
        )
        .await
        .map_err(|e| e.to_string())?;
        let relocked = tokio::time::timeout(
            self.store_timeout + Duration::from_secs(10),
            fresh.retake_lock(old.lock_session()),
        )
        .await;
        match relocked {
            Ok(Ok(true)) => {
                self.lease.confirm(t);
                Ok(Some(fresh))
            }
            Ok(Ok(false)) => Ok(None),
            Ok(Err(e)) => Err(format!("taking the pipeline lock again failed: {e}")),
            Err(_) => Err("taking the pipeline lock again did not answer in time".into()),
        }
    }

    /// Stores the acknowledged position at most every `interval`, and once more when the
    /// pipeline ends; between stores confirms the lock every `ping_every` (the lease). A failed
    /// store or confirmation is retried on a fresh connection, which must take the pipeline
    /// lock again: if another daemon holds it now, this one stops (`stop`) and hands nothing
    /// more to the sinks.
    async fn run(
        self,
        mut cp: Checkpoint,
        mut acked: watch::Receiver<Option<Acked>>,
        stop: watch::Sender<bool>,
    ) -> Result<(), DaemonError> {
        use tokio::time::Instant as TInstant;
        let mut stored: Option<Acked> = None;
        let mut healthy = true;
        // since when an acknowledged position is waiting to be stored (stores failing)
        let mut unstored_since: Option<Instant> = None;
        let mut closed = false;
        let mut final_attempts = 0u32;
        let mut last_store = TInstant::now() - self.interval;
        let mut last_ping = TInstant::now();
        let mut next_reconnect = TInstant::now();
        let keepalive = (self.interval * 10).max(Duration::from_secs(10));
        loop {
            let cur = acked.borrow_and_update().clone();
            let now = TInstant::now();
            // A position that moved without row changes (past transactions of tables not
            // streamed, or binlogd's own checkpoint writes read back) is stored only every
            // `keepalive`: storing it at once would write to the checkpoint server again and
            // again, and with the checkpoint on the source every such write is a transaction
            // a replica must have received before a failover.
            let want_store = cur.is_some()
                && stored != cur
                && (closed
                    || stored
                        .as_ref()
                        .zip(cur.as_ref())
                        .is_none_or(|(s, c)| s.rows != c.rows)
                    || now >= last_store + keepalive);
            let store_due = want_store && (closed || now >= last_store + self.interval);
            let ping_due = now >= last_ping + self.ping_every;
            let reconnect_due = !healthy && now >= next_reconnect;
            if closed && !want_store {
                return Ok(());
            }
            let act = if healthy {
                store_due || ping_due
            } else {
                reconnect_due || (closed && want_store)
            };
            if !act {
                let wake = if healthy && want_store {
                    (last_ping + self.ping_every).min(last_store + self.interval)
                } else if healthy && cur.is_some() && stored != cur {
                    (last_ping + self.ping_every).min(last_store + keepalive)
                } else if healthy {
                    last_ping + self.ping_every
                } else {
                    next_reconnect
                };
                tokio::select! {
                    r = acked.changed(), if !closed => if r.is_err() {
                        closed = true;
                        // the final store happens even if this position was stored before:
                        // the checkpoint server may have changed under the same URL (a
                        // failover), and the position must be there
                        stored = None;
                    },
                    _ = tokio::time::sleep_until(wake) => {}
                }
                continue;
            }
            if !healthy && (reconnect_due || closed) {
                next_reconnect = TInstant::now() + self.interval.max(Duration::from_secs(1));
                match self.reconnect(&cp).await {
                    Ok(Some(fresh)) => {
                        info!("checkpoint connection re-established, lock held");
                        cp = fresh;
                        healthy = true;
                        last_ping = TInstant::now();
                        // store the position again: the new connection may reach another
                        // server than the old one (a failover behind the same URL)
                        stored = None;
                    }
                    Ok(None) => {
                        // before anything else: no batch may reach a sink any more
                        self.lease.lose();
                        let _ = stop.send(true);
                        let _ = self.gate.send(true);
                        return Err(other(format!(
                            "lost the pipeline lock binlogd:{} (the checkpoint connection dropped and another binlogd took over); stopping this one",
                            self.pipeline
                        )));
                    }
                    Err(e) => {
                        warn!(error = %e, "checkpoint server unreachable; the stored position stays behind")
                    }
                }
            }
            if let Some(a) = cur.clone().filter(|_| healthy && store_due) {
                let t = crate::metrics::mono_ms();
                last_store = TInstant::now();
                match Self::bounded(
                    self.store_timeout,
                    cp.store(&a.position, &self.id, a.event_ts_ms),
                )
                .await
                {
                    Ok(()) => {
                        self.lease.confirm(t);
                        last_ping = last_store;
                        unstored_since = None;
                        if !*self.gate.borrow() {
                            info!("checkpoint stored again; reading from the binlog resumes");
                            let _ = self.gate.send(true);
                            crate::metrics::get().set_sink_ready("checkpoint", true);
                        }
                        tracing::debug!(position = %a.position.coord, "checkpoint stored");
                        let m = crate::metrics::get();
                        m.checkpoint_stores.inc();
                        m.stored_at_ms
                            .store(crate::event::now_ms(), std::sync::atomic::Ordering::Relaxed);
                        stored = cur.clone();
                    }
                    Err(e) => {
                        crate::metrics::get().checkpoint_errors.inc();
                        warn!(error = %e, "storing the checkpoint failed; retrying on a new connection");
                        healthy = false;
                    }
                }
            } else if healthy && ping_due {
                let t = crate::metrics::mono_ms();
                last_ping = TInstant::now();
                let limit = self.store_timeout.min(self.lease.fence_after);
                match Self::bounded(limit, cp.holds_lock()).await {
                    Ok(true) => self.lease.confirm(t),
                    Ok(false) => {
                        warn!("the lock session no longer holds the pipeline lock; taking it again on a new connection");
                        healthy = false;
                    }
                    Err(e) => {
                        warn!(error = %e, "confirming the pipeline lock failed; retrying on a new connection");
                        healthy = false;
                    }
                }
            }
            if want_store && stored != cur {
                let since = *unstored_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.max_unstored && *self.gate.borrow() && !closed {
                    warn!(
                        unstored_for = ?since.elapsed(),
                        "the checkpoint could not be stored for checkpoint.max_unstored; pausing reading from the binlog until it can"
                    );
                    let _ = self.gate.send(false);
                    crate::metrics::get().set_sink_ready("checkpoint", false);
                }
                if closed {
                    final_attempts += 1;
                    if final_attempts >= 3 {
                        return Err(other("could not store the final position; the next start repeats the changes after the last stored one"));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// `binlogd position show`: prints and returns the text.
pub async fn position_show(cfg: &Config) -> Result<String, DaemonError> {
    let mut cp = open_checkpoint(cfg).await?;
    let stored = cp.load().await?;
    let running = cp.is_locked().await?;
    let mut out = format!("pipeline: {}\n", cfg.pipeline.name);
    out.push_str(&format!(
        "daemon: {}\n",
        if running {
            "running (lock held)"
        } else {
            "not running"
        }
    ));
    let Some(s) = stored else {
        out.push_str("stored position: none (the next run starts at source.start)\n");
        return Ok(out);
    };
    out.push_str(&format!("stored position: {}\n", s.position.coord));
    out.push_str(&format!(
        "gtid: {}\n",
        s.position
            .gtid
            .as_ref()
            .map(|g| g.to_string())
            .unwrap_or_else(|| "-".into())
    ));
    if let Some(r) = &s.position.restart {
        out.push_str(&format!(
            "restart: {}{} (prepared XA transactions were waiting for XA COMMIT / XA ROLLBACK: the next run reads \
             again from before the oldest one's PREPARE and hands on nothing up to the stored position)\n",
            r.coord,
            r.gtid
                .as_ref()
                .map(|g| format!(" gtid {g}"))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "stored at: {} UTC ({} s ago)\n",
        s.updated_at, s.age_secs
    ));
    out.push_str(&format!("source server_id: {}\n", s.server_id));
    let cfg2 = Arc::new(cfg.clone());
    if let Ok((src, _)) = Source::connect(cfg2).await {
        if let Ok(mut c) = src.conn().await {
            if let Ok((cur, behind)) =
                crate::mysql::server::bytes_behind(&mut c, src.info.flavor, &s.position.coord).await
            {
                let behind = match behind {
                    Some(b) => format!("{b} bytes"),
                    None => format!(
                        "unknown: {} is no longer on the server",
                        s.position.coord.file
                    ),
                };
                out.push_str(&format!("server position: {cur}\nbehind: {behind}\n"));
            }
        }
    }
    Ok(out)
}

/// What `position set` moves the position to.
pub enum SetTarget {
    File(BinlogCoord),
    Gtid(String),
    Latest,
}

async fn locked_checkpoint(cfg: &Config) -> Result<Checkpoint, DaemonError> {
    let mut cp = open_checkpoint(cfg).await?;
    // hold the lock ourselves for the change, so no daemon starts in between
    if !cp.try_lock().await? {
        return Err(CheckpointError::Locked(cfg.pipeline.name.clone()).into());
    }
    Ok(cp)
}

/// `binlogd position set`.
pub async fn position_set(cfg: &Config, target: SetTarget) -> Result<Position, DaemonError> {
    let mut cp = locked_checkpoint(cfg).await?;
    let (src, _) = Source::connect(Arc::new(cfg.clone())).await?;
    let mut c = src.conn().await?;
    let pos = match target {
        SetTarget::Latest => {
            let (coord, gtid) =
                crate::mysql::server::current_position(&mut c, src.info.flavor).await?;
            Position::new(coord, gtid)
        }
        SetTarget::File(coord) => {
            let files = crate::mysql::server::binlog_files(&mut c)
                .await
                .map_err(SourceError::from)?;
            if !files.iter().any(|(f, _)| *f == coord.file) {
                return Err(other(format!(
                    "the server has no binlog file {}",
                    coord.file
                )));
            }
            // the GTID state at that position is only known by reading up to it; a file:pos
            // position resumes by file:pos
            Position::new(coord, None)
        }
        SetTarget::Gtid(g) => {
            let set = GtidSet::parse_any(&g).map_err(other)?;
            let ok = matches!(
                (&set, src.info.flavor),
                (GtidSet::MySql(_), Flavor::MySql) | (GtidSet::MariaDb(_), Flavor::MariaDb)
            );
            if !ok {
                return Err(other(format!(
                    "{g:?} is not a GTID set of this server's kind ({})",
                    src.info.version
                )));
            }
            Position::new(
                BinlogCoord {
                    file: String::new(),
                    pos: 4,
                },
                Some(set),
            )
        }
    };
    let id = SourceIdentity {
        server_id: src.info.server_id,
        server_uuid: src.info.server_uuid.clone(),
    };
    cp.store(&pos, &id, 0).await?;
    Ok(pos)
}

/// `binlogd position reset`: forgets the stored position.
pub async fn position_reset(cfg: &Config) -> Result<bool, DaemonError> {
    let mut cp = locked_checkpoint(cfg).await?;
    Ok(cp.delete().await?)
}

/// A replay range.
#[derive(Debug, Clone, Default)]
pub struct ReplayRange {
    pub from: Option<BinlogCoord>,
    pub from_gtid: Option<String>,
    pub from_time_ms: Option<u64>,
    pub to: Option<BinlogCoord>,
    pub to_gtid: Option<String>,
    pub to_time_ms: Option<u64>,
    pub sinks: Vec<String>,
    pub server_id: Option<u32>,
}

/// `binlogd replay` from the server: re-sends a range to the chosen sinks; the stored
/// position is not touched.
pub async fn replay(
    cfg: Config,
    range: ReplayRange,
    shutdown: watch::Receiver<bool>,
) -> Result<u64, DaemonError> {
    let mut cfg = cfg;
    // a replay must not kick the running daemon off the server: its own replica id
    cfg.source.server_id = range
        .server_id
        .unwrap_or(cfg.source.server_id ^ 0x4000_0000);
    let from_count = [
        range.from.is_some(),
        range.from_gtid.is_some(),
        range.from_time_ms.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if from_count != 1 {
        return Err(other(
            "give exactly one of --from FILE:POS, --from-gtid SET, --from-time TIME",
        ));
    }
    let cfg = Arc::new(cfg);
    let (src, _) = Source::connect(cfg.clone()).await?;
    let mut c = src.conn().await?;
    let start = if let Some(f) = &range.from {
        src.resolve(&StartPosition::File {
            file: f.file.clone(),
            pos: f.pos,
        })
        .await?
    } else if let Some(g) = &range.from_gtid {
        StartPoint::after_gtid_set(GtidSet::parse_any(g).map_err(other)?)
    } else {
        let t = range.from_time_ms.unwrap_or(0);
        src.resolve(&StartPosition::File {
            file: file_for_time(&src, t).await?,
            pos: 4,
        })
        .await?
    };
    let mut decoder = src.new_decoder()?;
    decoder.from_time_ms = range.from_time_ms;
    decoder.stop_time_ms = range.to_time_ms;
    decoder.stop_gtid = match &range.to_gtid {
        Some(g) => Some(GtidSet::parse_any(g).map_err(other)?),
        None => None,
    };
    // without an end, replay up to the server's position now
    let end = match &range.to {
        Some(t) => t.clone(),
        None => {
            crate::mysql::server::current_position(&mut c, src.info.flavor)
                .await?
                .0
        }
    };
    decoder.stop_at = Some(end.clone());
    drop(c);
    let sinks = open_sinks(&cfg, &range.sinks, source_info(&cfg, Some(&src.info), true))?;
    let (tx, rx) = mpsc::channel(2);
    let (acked_tx, _acked_rx) = watch::channel(None);
    let (ptx, prx) = mpsc::channel::<Batch>(2);
    let pipeline = tokio::spawn(
        Pipeline::new(cfg.pipeline.max_in_flight.0 as usize).run(prx, sinks, acked_tx),
    );
    let progress = tokio::spawn(progress_relay(rx, ptx, Some(end)));
    let stats = Arc::new(SourceStats::default());
    let r = src.run(&mut decoder, start, tx, shutdown, stats).await;
    let rows = progress.await.map_err(other)?;
    pipeline.await.map_err(other)??;
    r?;
    Ok(rows)
}

/// Forwards batches and, on a terminal, shows position, rate and time left.
async fn progress_relay(
    mut rx: mpsc::Receiver<Batch>,
    tx: mpsc::Sender<Batch>,
    end: Option<BinlogCoord>,
) -> u64 {
    let tty = std::io::stderr().is_terminal();
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    let mut rows = 0u64;
    let mut first_pos: Option<u64> = None;
    while let Some(b) = rx.recv().await {
        rows += b.rows() as u64;
        let at = b.commit.as_ref().map(|p| p.coord.clone());
        if tx.send(b).await.is_err() {
            break;
        }
        if tty && last_print.elapsed() >= Duration::from_millis(500) {
            last_print = Instant::now();
            let secs = t0.elapsed().as_secs_f64().max(0.001);
            let mut line = format!("\rreplay: {rows} rows, {:.0} rows/s", rows as f64 / secs);
            if let Some(a) = &at {
                line.push_str(&format!(", at {a}"));
                if let Some(e) = &end {
                    if e.file == a.file {
                        let p0 = *first_pos.get_or_insert(a.pos);
                        let done = a.pos.saturating_sub(p0) as f64;
                        let left = e.pos.saturating_sub(a.pos) as f64;
                        if done > 0.0 {
                            line.push_str(&format!(", ~{:.0}s left", left / (done / secs)));
                        }
                    }
                }
            }
            eprint!("{line}   ");
        }
    }
    if tty {
        eprintln!(
            "\rreplay: {rows} rows in {:.1}s                    ",
            t0.elapsed().as_secs_f64()
        );
    }
    rows
}

/// The binlog file holding events from time `t` (ms): the last file whose first event is not
/// newer than `t`.
async fn file_for_time(src: &Source, t: u64) -> Result<String, DaemonError> {
    use futures_util::StreamExt;
    let mut c = src.conn().await?;
    let files = crate::mysql::server::binlog_files(&mut c)
        .await
        .map_err(SourceError::from)?;
    drop(c);
    let mut chosen = files
        .first()
        .map(|f| f.0.clone())
        .ok_or_else(|| other("the server lists no binlog files"))?;
    for (f, _) in &files {
        let c = src.conn().await?;
        let req = mysql_async::BinlogStreamRequest::new(src.replica_id() ^ 0x2000_0000)
            .with_filename(f.as_bytes())
            .with_pos(4u64)
            .with_non_blocking();
        let mut stream = c.get_binlog_stream(req).await.map_err(SourceError::from)?;
        let mut first_ts = None;
        while let Some(ev) = stream.next().await {
            let ev = ev.map_err(SourceError::from)?;
            let ts = ev.header().timestamp();
            if ts > 0 {
                first_ts = Some(ts as u64 * 1000);
                break;
            }
        }
        let _ = stream.close().await;
        match first_ts {
            Some(ts) if ts <= t => chosen = f.clone(),
            _ => break,
        }
    }
    Ok(chosen)
}

/// `binlogd replay --binlog-file …`: the same decoder over binlog files on disk.
pub async fn replay_files(
    cfg: Config,
    paths: Vec<std::path::PathBuf>,
    range: ReplayRange,
) -> Result<u64, DaemonError> {
    use crate::source::binlog_file::BinlogFileReader;
    let cfg = Arc::new(cfg);
    // the server, when reachable, supplies collations and schema hints
    let src = Source::connect(cfg.clone()).await.ok().map(|x| x.0);
    let sinks = open_sinks(
        &cfg,
        &range.sinks,
        source_info(&cfg, src.as_ref().map(|s| &s.info), true),
    )?;
    let (ptx, prx) = mpsc::channel::<Batch>(2);
    let (acked_tx, _acked_rx) = watch::channel(None);
    let pipeline = tokio::spawn(
        Pipeline::new(cfg.pipeline.max_in_flight.0 as usize).run(prx, sinks, acked_tx),
    );
    let mut meta = match &src {
        Some(s) => s.conn().await.ok(),
        None => None,
    };
    let mut decoder: Option<crate::decode::Decoder> = None;
    let mut rows = 0u64;
    let mut from = range.from.clone();
    let mut failed: Option<SourceError> = None;
    'files: for path in &paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| other(format!("{} is not a file", path.display())))?;
        let f = std::fs::File::open(path).map_err(|e| other(format!("{}: {e}", path.display())))?;
        // errors name the file as given and the byte offset of the event
        let mut file = BinlogFileReader::new(
            &path.display().to_string(),
            std::io::BufReader::with_capacity(1 << 20, f),
        )
        .map_err(SourceError::from)?;
        loop {
            let ev = match file.next_event().map_err(SourceError::from)? {
                None => break,
                Some(e) => e,
            };
            if decoder.is_none() {
                let flavor = if ev.header().event_type_raw()
                    == crate::binlog::event_type::FORMAT_DESCRIPTION
                {
                    let fde = ev
                        .read_event::<mysql_common::binlog::events::FormatDescriptionEvent<'_>>()
                        .map_err(other)?;
                    if fde
                        .server_version()
                        .to_ascii_lowercase()
                        .contains("mariadb")
                    {
                        Flavor::MariaDb
                    } else {
                        Flavor::MySql
                    }
                } else {
                    return Err(other(format!(
                        "{}: does not start with a FORMAT_DESCRIPTION event",
                        path.display()
                    )));
                };
                let collations = match &src {
                    Some(s) => s.collations.clone(),
                    None => Arc::new(crate::decode::charset::CollationMap::builtin()),
                };
                let filter = crate::filter::TableFilter::new(
                    cfg.source.include.as_deref(),
                    &cfg.source.exclude,
                )
                .map_err(other)?;
                let mut d = crate::decode::Decoder::new(
                    flavor,
                    filter,
                    collations,
                    cfg.source.verify_checksums,
                );
                d.from_time_ms = range.from_time_ms;
                d.stop_time_ms = range.to_time_ms;
                d.stop_at = range.to.clone();
                decoder = Some(d);
            }
            let d = decoder.as_mut().ok_or_else(|| other("no decoder"))?;
            if d.current_file() != name {
                d.start_at(&name, None, from.take().filter(|c| c.file == name));
            }
            loop {
                let step = match d.handle(&ev) {
                    Ok(step) => step,
                    Err(e) => {
                        // what was handed on before the bad event reaches the sinks first
                        failed = Some(SourceError::from(e));
                        break 'files;
                    }
                };
                match step {
                    crate::decode::Step::Continue => break,
                    crate::decode::Step::NeedHints { db, table } => {
                        let hints = match (&mut meta, &src) {
                            (Some(c), Some(s)) => {
                                crate::mysql::schema::fetch_hints(c, &db, &table, s.info.flavor)
                                    .await
                                    .unwrap_or_default()
                            }
                            _ => {
                                warn!(%db, %table, "no server to read schema hints from: MariaDB JSON columns come out as strings");
                                Default::default()
                            }
                        };
                        d.set_hints(&db, &table, hints);
                    }
                }
            }
            if let Some(b) = d.take_batch() {
                rows += b.rows() as u64;
                if ptx.send(b).await.is_err() {
                    break 'files;
                }
            }
            if d.reached_stop() {
                break 'files;
            }
        }
    }
    drop(ptx);
    pipeline.await.map_err(other)??;
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(rows)
}
