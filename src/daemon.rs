//! The daemon's top level: wires source → pipeline → sinks → checkpoint for `run`, and the
//! operator verbs (`migrate`, `position …`, `replay …`).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::checkpoint::{Checkpoint, CheckpointError, SourceIdentity};
use crate::config::Config;
use crate::decode::Flavor;
use crate::event::{Batch, SourceInfo};
use crate::pipeline::{Acked, Pipeline};
use crate::sinks::file::FileSink;
use crate::sinks::kafka::{KafkaSink, KafkaStats};
use crate::sinks::redis::{RedisSink, RedisStats};
use crate::sinks::{Sink, SinkError};
use crate::source::conn::{self, Severity};
use crate::source::position::{BinlogCoord, GtidSet, Position, StartPosition};
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
pub fn source_info(cfg: &Config, server: Option<&conn::ServerInfo>, replay: bool) -> SourceInfo {
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
pub async fn check_stored(cfg: &Config, src: &Source) -> Vec<conn::Finding> {
    let finding = |severity, message: String| conn::Finding { severity, message };
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
        Err(CheckpointError::Mysql(mysql_async::Error::Server(e))) if e.code == 1146 => {
            return Vec::new()
        }
        Err(e) => return cannot(&e),
    };
    if let Err(e) = validate_stored(&stored.position, src, stored.server_uuid.as_deref()) {
        return vec![finding(Severity::Error, e.to_string())];
    }
    let p = &stored.position;
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
        Err(e) => return cannot(&e),
    };
    let files = match conn::binlog_files(&mut c).await {
        Ok(f) => f,
        Err(e) => return cannot(&e),
    };
    let sp = src.resume_point(p);
    let out = match (&p.gtid, sp.by_gtid) {
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
                None => return Vec::new(),
            };
            let start: Result<Option<String>, _> = mysql_async::prelude::Queryable::exec_first(
                &mut c,
                "SELECT BINLOG_GTID_POS(?, 4)",
                (oldest.as_str(),),
            )
            .await;
            match start.map(|s| {
                s.unwrap_or_default()
                    .parse::<crate::source::position::MariaGtidPos>()
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
    out
}

/// `binlogd run`.
pub async fn run(
    cfg: Config,
    stop_at: Option<BinlogCoord>,
    shutdown: watch::Receiver<bool>,
    filter_updates: Option<watch::Receiver<crate::source::FilterUpdate>>,
) -> Result<(), DaemonError> {
    let cfg = Arc::new(cfg);
    let metrics = crate::metrics::get();
    crate::admin::start(&cfg.admin.listen)
        .await
        .map_err(other)?;
    let (mut src, mut findings) = Source::connect(cfg.clone()).await?;
    src.filter_updates = filter_updates;
    {
        let mut c = src.conn().await?;
        findings.extend(crate::sinks::check(&cfg, &mut c, false).await);
        match conn::check_privileges(&mut c).await {
            Ok(f) => findings.extend(f),
            Err(e) => warn!("cannot read the user's grants to check them: {e}"),
        }
        if let Ok(filter) =
            crate::filter::TableFilter::new(cfg.source.include.as_deref(), &cfg.source.exclude)
        {
            match conn::fk_cascade_findings(&mut c, src.info.flavor, &filter).await {
                Ok(f) => findings.extend(f),
                Err(e) => warn!("cannot read foreign keys to check for cascades: {e}"),
            }
        }
        let _ = c.disconnect().await;
    }
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
    info!(lock = %cp.lock_name(), "holding the pipeline lock: active");
    metrics.active.set(1);
    metrics.set_state("active");
    let stored = cp.load().await?;
    if let Some(s) = &stored {
        validate_stored(&s.position, &src, s.server_uuid.as_deref())?;
        info!(position = %s.position.coord, gtid = ?s.position.gtid.as_ref().map(|g| g.to_string()), "resuming from stored position");
    }
    let identity = SourceIdentity {
        server_id: src.info.server_id,
        server_uuid: src.info.server_uuid.clone(),
    };
    let sinks = open_sinks(&cfg, &[], source_info(&cfg, Some(&src.info), false))?;
    let start = src
        .resolve_start(stored.as_ref().map(|s| &s.position))
        .await?;
    info!(file = %start.coord, gtid = ?start.gtid.as_ref().map(|g| g.to_string()), by_gtid = start.by_gtid, "start position");
    let mut decoder = src.new_decoder()?;
    let (schema, table) = cp.table();
    decoder.exclude_table(schema, table);
    decoder.exclude_table(schema, "schema_migrations");
    decoder.exclude_table(schema, "checkpoint_restart");
    decoder.stop_at = stop_at;

    let (tx, rx) = mpsc::channel(2);
    let (acked_tx, acked_rx) = watch::channel::<Option<Acked>>(None);
    let (gate_tx, gate_rx) = watch::channel(true);
    let pipeline = tokio::spawn(
        Pipeline::new(cfg.pipeline.max_in_flight.0 as usize)
            .gated(gate_rx)
            .run(rx, sinks, acked_tx),
    );
    let stats = Arc::new(SourceStats::default());
    // the source stops on an external signal or when the checkpointer loses the lock
    let (stop_tx, stop_rx) = watch::channel(false);
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
    let store = Store {
        opts: cfg.checkpoint_opts().map_err(other)?,
        schema: cfg.checkpoint.schema.clone(),
        pipeline: cfg.pipeline.name.clone(),
        id: identity,
        interval: cfg.checkpoint.interval.0,
        max_unstored: cfg.checkpoint.max_unstored.0,
        store_timeout: cfg.checkpoint.store_timeout.0,
        gate: gate_tx,
    };
    let checkpointer = tokio::spawn(store.run(cp, acked_rx, stop_tx));
    let lag = tokio::spawn(watch_lag(cfg.clone(), flavor));
    let (sr, _src) = source_task.await.map_err(other)?;
    let pr = pipeline.await.map_err(other)?;
    // the pipeline has drained: store the last acknowledged position, then release the lock
    let cr = checkpointer.await.map_err(other)?;
    forward.abort();
    lag.abort();
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

/// Measures the lag in bytes (acknowledged position → the server's current position) every
/// `admin.lag_interval`; while the lag in time exceeds `admin.progress_threshold`, logs
/// catch-up progress: position, rates and the estimated time to catch up.
async fn watch_lag(cfg: Arc<Config>, flavor: crate::decode::Flavor) {
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
            let opts = cfg
                .source_password()
                .and_then(|pw| conn::opts_for(&cfg.source.url, pw.as_ref(), &cfg));
            if let Ok(o) = opts {
                c = mysql_async::Conn::new(o).await.ok();
            }
        }
        let Some(conn_) = c.as_mut() else { continue };
        let behind = match conn::bytes_behind(conn_, flavor, &at).await {
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
    /// Open while the pipeline may read from the source.
    gate: watch::Sender<bool>,
}

impl Store {
    /// A checkpoint call that does not answer within `store_timeout` counts as failed.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, CheckpointError>>,
    ) -> Result<T, CheckpointError> {
        tokio::time::timeout(self.store_timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(CheckpointError::Invalid(format!(
                    "no answer within {:?} (checkpoint.store_timeout)",
                    self.store_timeout
                )))
            })
    }

    /// Stores the acknowledged position at most every `interval`, and once more when the
    /// pipeline ends. A failed store is retried on a fresh connection, which must take the
    /// pipeline lock again: if another daemon holds it now, this one stops (`stop`).
    async fn run(
        self,
        mut cp: Checkpoint,
        mut acked: watch::Receiver<Option<Acked>>,
        stop: watch::Sender<bool>,
    ) -> Result<(), DaemonError> {
        let mut stored: Option<Acked> = None;
        let mut healthy = true;
        // since when an acknowledged position is waiting to be stored (stores failing)
        let mut unstored_since: Option<Instant> = None;
        loop {
            let mut closed = tokio::select! {
                r = acked.changed() => r.is_err(),
                _ = tokio::time::sleep(self.interval) => false,
            };
            if !closed {
                // at most one store per interval, but the final store (the pipeline ended)
                // happens at once: a graceful stop does not wait out the interval
                let until = tokio::time::Instant::now() + self.interval;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        r = acked.changed() => if r.is_err() {
                            closed = true;
                            break;
                        },
                    }
                }
            }
            let cur = acked.borrow_and_update().clone();
            let attempts = if closed { 3 } else { 1 };
            for attempt in 0..attempts {
                let Some(a) = cur.as_ref() else { break };
                if stored.as_ref() == Some(a) {
                    break;
                }
                if !healthy {
                    let fresh = self
                        .bounded(Checkpoint::connect(
                            self.opts.clone(),
                            &self.schema,
                            &self.pipeline,
                        ))
                        .await;
                    match fresh {
                        Ok(mut fresh) => {
                            let previous = cp.lock_session();
                            let relocked = tokio::time::timeout(
                                self.store_timeout + Duration::from_secs(10),
                                fresh.retake_lock(previous),
                            )
                            .await;
                            if matches!(relocked, Err(_) | Ok(Err(_))) {
                                warn!(result = ?relocked.map(|r| r.map_err(|e| e.to_string())), "taking the pipeline lock again failed; retrying");
                                continue;
                            }
                            if !matches!(relocked, Ok(Ok(true))) {
                                let _ = stop.send(true);
                                // let the pipeline drain so the source sees the stop
                                let _ = self.gate.send(true);
                                return Err(other(format!(
                                    "lost the pipeline lock binlogd:{} (the checkpoint connection dropped and another binlogd took over); stopping this one",
                                    self.pipeline
                                )));
                            }
                            info!("checkpoint connection re-established, lock held");
                            cp = fresh;
                            healthy = true;
                        }
                        Err(e) => {
                            warn!(error = %e, "checkpoint server unreachable; the stored position stays behind")
                        }
                    }
                }
                if healthy {
                    let r = self
                        .bounded(cp.store(&a.position, &self.id, a.event_ts_ms))
                        .await;
                    match r {
                        Ok(()) => {
                            unstored_since = None;
                            if !*self.gate.borrow() {
                                info!("checkpoint stored again; reading from the binlog resumes");
                                let _ = self.gate.send(true);
                                crate::metrics::get().set_sink_ready("checkpoint", true);
                            }
                            tracing::debug!(position = %a.position.coord, "checkpoint stored");
                            let m = crate::metrics::get();
                            m.checkpoint_stores.inc();
                            m.stored_at_ms.store(
                                crate::event::now_ms(),
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            stored = Some(a.clone());
                            break;
                        }
                        Err(e) => {
                            crate::metrics::get().checkpoint_errors.inc();
                            warn!(error = %e, "storing the checkpoint failed; retrying on a new connection");
                            healthy = false;
                        }
                    }
                }
                if attempt + 1 < attempts {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if cur.is_some() && stored != cur {
                let since = *unstored_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.max_unstored && *self.gate.borrow() && !closed {
                    warn!(
                        unstored_for = ?since.elapsed(),
                        "the checkpoint could not be stored for checkpoint.max_unstored; pausing reading from the binlog until it can"
                    );
                    let _ = self.gate.send(false);
                    crate::metrics::get().set_sink_ready("checkpoint", false);
                }
            }
            if closed {
                if cur.is_some() && stored != cur {
                    return Err(other("could not store the final position; the next start repeats the changes after the last stored one"));
                }
                return Ok(());
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
                conn::bytes_behind(&mut c, src.info.flavor, &s.position.coord).await
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
            let (coord, gtid) = conn::current_position(&mut c, src.info.flavor).await?;
            Position::new(coord, gtid)
        }
        SetTarget::File(coord) => {
            let files = conn::binlog_files(&mut c)
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
        None => conn::current_position(&mut c, src.info.flavor).await?.0,
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
    let files = conn::binlog_files(&mut c)
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
                let flavor = if ev.header().event_type_raw() == 15 {
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
                            (Some(c), Some(s)) => conn::fetch_hints(c, &db, &table, s.info.flavor)
                                .await
                                .unwrap_or_default(),
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
