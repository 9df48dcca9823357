//! `binlogd run`: source → pipeline → sinks → checkpoint writer, the lease and the lag
//! watcher, until a signal or an error.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::binlog::position::{BinlogCoord, Position};
use crate::checkpoint::SourceIdentity;
use crate::cmd::snapshot::{poll_requests, snapshot_supported, starting_progress};
use crate::config::Config;
use crate::finding::Severity;
use crate::pipeline::{Acked, Fence, Pipeline};
use crate::snapshot::config::SnapshotMode;
use crate::snapshot::stage::{Stage, StageSettings};
use crate::source::SourceStats;

use crate::checkpoint::lease::Lease;
use crate::checkpoint::resume::validate_stored;
use crate::checkpoint::writer::Store;
use crate::cmd::check::check_failover_setup;
use crate::cmd::history::*;
use crate::cmd::{open_checkpoint, other, source_info, DaemonError};
use crate::sinks::registry::open_sinks;
use crate::source::lag::watch_lag;

/// What `binlogd run` does besides streaming.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Exit after handing on every transaction up to this coordinate.
    pub stop_at: Option<BinlogCoord>,
    /// Resume although the source server lacks transactions already handed to the sinks (a
    /// failover to a replica that was behind): from the last transaction both histories share.
    pub accept_divergence: bool,
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
    let (mut src, mut findings) = crate::cmd::connect_source(&cfg).await?;
    src.filter_updates = filter_updates;
    {
        let mut c = src.conn().await?;
        findings.extend(
            crate::sinks::registry::check(
                &cfg.sinks,
                &cfg.pipeline.name,
                &crate::cmd::sink_catalog(&cfg, &mut c).await,
                false,
            )
            .await,
        );
        match crate::mysql::requirements::check_privileges(&mut c, &cfg.checkpoint.schema).await {
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
    let (snapshot_stored_tx, snapshot_stored_rx) = watch::channel(0u64);
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
        snapshot_stored: Some(snapshot_stored_tx),
    };
    let checkpointer = tokio::spawn(store.run(cp, acked_rx, stop_tx.clone()));
    let fencing = tokio::spawn(lease.clone().watch());

    let mut first_stored = snapshot_stored_rx.clone();
    let startup = async {
        let mut stored = stored;
        if let Some(s) = &stored {
            validate_stored(&s.position, &src.info, s.server_uuid.as_deref()).map_err(DaemonError::Other)?;
            if let Some(p) = check_history(&cfg, &src, s, opts.accept_divergence).await? {
                // store the accepted position at once: the next start needs no flag
                let _ = acked_tx.send(Some(Acked {
                    position: p.clone(),
                    event_ts_ms: s.event_ts_ms,
                    rows: 0,
                    snapshot: None,
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
        let progress = starting_progress(&cfg, &src, stored.as_ref()).await?;
        let mut info = source_info(&cfg, Some(&src.info), false);
        if progress.tables.iter().any(|t| t.pending()) {
            // read events published after the last stored chunk: from where that chunk was
            // handed on (the stored position may have moved on since)
            info.snapshot_resume = match (&progress.at, stored.as_ref()) {
                (Some((file, pos)), _) => Some(BinlogCoord {
                    file: file.clone(),
                    pos: *pos,
                }),
                (None, Some(s)) => Some(s.position.coord.clone()),
                // a first start: nothing of this snapshot was published (no chunk is read
                // before its start position is stored, below)
                (None, None) => None,
            };
        }
        let sinks = open_sinks(&cfg.sinks, &[], info)?;
        let start = src
            .resolve_start(stored.as_ref().map(|s| &s.position))
            .await?;
        info!(file = %start.coord, gtid = ?start.gtid.as_ref().map(|g| g.to_string()), by_gtid = start.by_gtid, "start position");
        let mut decoder = src.new_decoder()?;
        decoder.exclude_table(&schema, &table);
        for t in crate::checkpoint::OWN_TABLES {
            decoder.exclude_table(&schema, t);
        }
        decoder.stop_at = opts.stop_at.clone();
        if cfg.snapshot.mode == SnapshotMode::InitialOnly
            && stored.is_some()
            && !progress.tables.iter().any(|t| t.pending())
        {
            info!("snapshot.mode = initial_only: the snapshot is done (stored with the position); nothing to do");
            return Err(DaemonError::Other(String::new()));
        }
        if progress.tables.iter().any(|t| t.pending()) {
            snapshot_supported(&src).map_err(DaemonError::Config)?;
        }
        // A first start with an initial snapshot stores its start position and the tables at
        // once: a crash before the first chunk is acknowledged then continues this snapshot
        // from this position, instead of starting another one from a later position (whose
        // reads would not undo what the first one's already handed on).
        if stored.is_none() && progress.tables.iter().any(|t| t.pending()) && !start.coord.file.is_empty() {
            let _ = acked_tx.send(Some(Acked {
                position: Position::new(start.coord.clone(), start.gtid.clone()),
                event_ts_ms: 0,
                rows: 0,
                snapshot: Some(crate::decode::event::SnapshotMark {
                    generation: 0,
                    progress: progress.to_json().into(),
                }),
            }));
            // ...and no chunk is read before that store is committed: a crash in between
            // would restart with nothing stored, so with no position to read Kafka back from
            // (exactly_once), and publish the first chunk's reads again
            // (a stop signal meanwhile ends the start cleanly: nothing was handed on)
            let waited = std::time::Instant::now();
            let mut stop = shutdown.clone();
            loop {
                tokio::select! {
                    r = tokio::time::timeout(Duration::from_secs(10), first_stored.changed()) => match r {
                        Ok(Ok(())) => break,
                        Ok(Err(_)) => {
                            return Err(DaemonError::Other(
                                "the checkpoint writer stopped before the snapshot's start position was stored; see the errors above".into(),
                            ))
                        }
                        Err(_) => warn!(waited = ?waited.elapsed(), "snapshot: waiting for the checkpoint to store the snapshot's start position before the first chunk is read"),
                    },
                    _ = stop.changed() => {
                        info!("stop requested while waiting for the snapshot's start position to be stored; nothing was handed on");
                        return Err(DaemonError::Other(String::new()));
                    }
                }
            }
        }
        // the stage's first point: the acknowledged position (not an XA restart point before it)
        let point = match stored.as_ref() {
            Some(s) => Some(Position::new(s.position.coord.clone(), s.position.gtid.clone())),
            None => Some(Position::new(start.coord.clone(), start.gtid.clone())),
        };
        Ok::<_, DaemonError>((sinks, start, decoder, progress, point))
    }
    .await;
    let (sinks, start, mut decoder, progress, point) = match startup {
        Ok(x) => x,
        Err(e) => {
            // nothing was streamed: end the store task (it stores an accepted position, if
            // any) and free the lock
            drop(acked_tx);
            let _ = tokio::time::timeout(cfg.checkpoint.store_timeout.0, checkpointer).await;
            fencing.abort();
            metrics.active.set(0);
            metrics.set_state("stopped");
            // initial_only with nothing left to do, or a stop signal during the start
            if matches!(&e, DaemonError::Other(m) if m.is_empty()) {
                return Ok(());
            }
            return Err(e);
        }
    };

    // source → snapshot stage → pipeline
    let (tx, stage_rx) = mpsc::channel(2);
    let (stage_tx, rx) = mpsc::channel(2);
    let (control_tx, control_rx) = mpsc::channel(4);
    let stage = Stage::new(
        StageSettings {
            chunk_rows: cfg.snapshot.chunk_rows,
            chunk_bytes: cfg.snapshot.chunk_bytes.0 as usize,
            max_tables: cfg.snapshot.max_tables,
            rows_per_second: cfg.snapshot.rows_per_second,
            flavor: src.info.flavor,
            server_id: src.info.server_id,
            exit_when_done: cfg.snapshot.mode == SnapshotMode::InitialOnly,
            log_every: Duration::from_secs(10),
        },
        src.opts().clone(),
        src.collations.clone(),
        progress,
        point,
        snapshot_stored_rx,
    );
    let stage_task = tokio::spawn(stage.run(stage_rx, stage_tx, control_rx, stop_tx.clone()));
    let requests = tokio::spawn(poll_requests(
        cfg.clone(),
        control_tx,
        src.filter_updates.clone(),
        snapshot_supported(&src),
    ));
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
    let lag = tokio::spawn(watch_lag(
        Arc::new(cfg.source.clone()),
        cfg.admin.lag_interval.0,
        cfg.admin.progress_threshold.0,
        flavor,
    ));
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
    let stage_result = stage_task.await.map_err(other)?;
    requests.abort();
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
    stage_result.map_err(|e| other(format!("snapshot: {e}")))?;
    info!("stopped");
    Ok(())
}
