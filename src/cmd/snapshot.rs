//! Snapshots: which tables an initial snapshot reads, the daemon's request poller, and the
//! verbs `binlogd snapshot start|cancel|status`.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::binlog::Flavor;
use crate::config::Config;
use crate::filter::{TableFilter, TablePattern};
use crate::snapshot::catalog::{estimate_rows, list_tables, load_table};
use crate::snapshot::config::SnapshotMode;
use crate::snapshot::requests::{self, Request, RequestKind};
use crate::snapshot::stage::{bar, Control};
use crate::snapshot::{SnapshotError, SnapshotProgress};
use crate::source::Source;

use super::{other, DaemonError};

/// Snapshots need a way to tell what the stream has handed on: MariaDB binlog coordinates,
/// MySQL GTIDs.
pub fn snapshot_supported(src: &Source) -> Result<(), String> {
    if src.info.flavor == Flavor::MySql && src.info.gtid_mode.as_deref() != Some("ON") {
        return Err(format!(
            "snapshots on MySQL need gtid_mode = ON (the server has {:?}): a chunk's watermark is the \
             server's executed GTID set. Fix: SET PERSIST enforce_gtid_consistency = ON, gtid_mode = ON \
             (stepwise, see the MySQL manual), or set snapshot.mode = \"never\"",
            src.info.gtid_mode.as_deref().unwrap_or("OFF")
        ));
    }
    Ok(())
}

/// The tables an initial snapshot reads: every base table the stream includes (and
/// `snapshot.tables` matches), outside the checkpoint schema. Every one must have a key to be
/// read in chunks: the error lists all that do not.
pub async fn initial_tables(
    cfg: &Config,
    src: &Source,
    filter: &TableFilter,
) -> Result<SnapshotProgress, DaemonError> {
    let patterns: Option<Vec<TablePattern>> = cfg.snapshot.tables.as_ref().map(|v| {
        v.iter()
            .filter_map(|p| TablePattern::parse(p).ok())
            .collect()
    });
    let mut c = src.conn().await?;
    let all = list_tables(&mut c).await.map_err(other)?;
    let mut progress = SnapshotProgress::default();
    let mut keyless = Vec::new();
    for (db, table) in all {
        if db == cfg.checkpoint.schema
            || !filter.matches(&db, &table)
            || patterns
                .as_ref()
                .is_some_and(|p| !p.iter().any(|p| p.matches(&db, &table)))
        {
            continue;
        }
        match load_table(&mut c, &db, &table, &src.collations).await {
            Ok(_) => {}
            Err(SnapshotError::NoKey { .. }) => {
                keyless.push(format!("{db}.{table}"));
                continue;
            }
            Err(e) => return Err(other(format!("snapshot: {e}"))),
        }
        let estimate = estimate_rows(&mut c, &db, &table).await;
        let t = progress.table_mut(&db, &table);
        t.estimate = estimate;
    }
    let _ = c.disconnect().await;
    if !keyless.is_empty() {
        return Err(DaemonError::Config(format!(
            "snapshot.mode = initial: {} table(s) have no primary key and no UNIQUE key on NOT NULL columns, so \
             they cannot be read in key-ordered chunks: {}. Fix: add a primary key, or leave them out of the \
             snapshot with snapshot.tables (they are still streamed); README \"Snapshots\" (\"Not (yet) done\") \
             describes loading such tables from a dump taken at a known binlog position",
            keyless.len(),
            keyless.join(", ")
        )));
    }
    Ok(progress)
}

/// The snapshot progress a run starts with: the stored one, or for `initial` on a first start
/// every table.
pub async fn starting_progress(
    cfg: &Config,
    src: &Source,
    stored: Option<&crate::checkpoint::Stored>,
) -> Result<SnapshotProgress, DaemonError> {
    match stored {
        Some(s) => match &s.snapshot {
            Some(j) => SnapshotProgress::from_json(j).map_err(|e| {
                other(format!(
                    "the snapshot progress stored with the position cannot be read: {e}. Fix: delete the \
                     pipeline's row from {}.snapshot_progress (that snapshot is then not continued; \
                     start it again with `binlogd snapshot start`)",
                    cfg.checkpoint.schema
                ))
            }),
            None => Ok(SnapshotProgress::default()),
        },
        None if cfg.snapshot.mode != SnapshotMode::Never => {
            snapshot_supported(src).map_err(DaemonError::Config)?;
            let filter = TableFilter::new(cfg.source.include.as_deref(), &cfg.source.exclude)
                .map_err(DaemonError::Config)?;
            let p = initial_tables(cfg, src, &filter).await?;
            info!(
                tables = p.tables.len(),
                rows_estimate = p.tables.iter().map(|t| t.estimate).sum::<u64>(),
                "snapshot.mode = {:?}: first start, snapshotting every streamed table",
                cfg.snapshot.mode
            );
            Ok(p)
        }
        None => Ok(SnapshotProgress::default()),
    }
}

/// The daemon side of `binlogd snapshot start|cancel`: polls the request table every second
/// and hands requests to the snapshot stage.
pub async fn poll_requests(
    cfg: std::sync::Arc<Config>,
    control: mpsc::Sender<Control>,
    filter_updates: Option<watch::Receiver<crate::source::FilterUpdate>>,
    supported: Result<(), String>,
) {
    let schema = cfg.checkpoint.schema.clone();
    let pipeline = cfg.pipeline.name.clone();
    let mut conn: Option<mysql_async::Conn> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if conn.is_none() {
            let Ok(opts) = cfg.checkpoint_opts() else {
                return;
            };
            match mysql_async::Conn::new(opts).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    warn!(error = %e, "snapshot requests: cannot reach the checkpoint server");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let pending = match requests::pending(c, &schema, &pipeline).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "snapshot requests: reading the request table failed");
                conn = None;
                continue;
            }
        };
        for r in pending {
            let (state, message) = handle(&cfg, &r, &control, &filter_updates, &supported).await;
            info!(id = r.id, state, %message, "snapshot request");
            if let Err(e) = requests::answer(c, &schema, r.id, state, &message).await {
                warn!(error = %e, "snapshot requests: recording the answer failed");
                conn = None;
                break;
            }
        }
    }
}

async fn handle(
    cfg: &Config,
    r: &Request,
    control: &mpsc::Sender<Control>,
    filter_updates: &Option<watch::Receiver<crate::source::FilterUpdate>>,
    supported: &Result<(), String>,
) -> (&'static str, String) {
    match &r.kind {
        RequestKind::Start { tables, filter } => {
            if let Err(e) = supported {
                return ("rejected", e.clone());
            }
            let current = filter_updates
                .as_ref()
                .and_then(|u| u.borrow().1.clone())
                .or_else(|| {
                    TableFilter::new(cfg.source.include.as_deref(), &cfg.source.exclude).ok()
                });
            if let Some(f) = current {
                let missing: Vec<String> = tables
                    .iter()
                    .filter(|(d, t)| !f.matches(d, t) || *d == cfg.checkpoint.schema)
                    .map(|(d, t)| format!("{d}.{t}"))
                    .collect();
                if !missing.is_empty() {
                    return (
                        "rejected",
                        format!(
                            "{} not streamed (source.include/exclude): a snapshot needs the table's changes \
                             too. Fix: add it to source.include, reload (SIGHUP), then ask again",
                            missing.join(", ")
                        ),
                    );
                }
            }
            let (tx, rx) = oneshot::channel();
            let c = Control::Start {
                tables: tables.clone(),
                filter: filter.clone(),
                reply: tx,
            };
            if control.send(c).await.is_err() {
                return ("pending", "the daemon is stopping".into());
            }
            match rx.await {
                Ok(Ok(())) => ("accepted", format!("{} table(s) queued", tables.len())),
                Ok(Err(e)) => ("rejected", e),
                Err(_) => ("pending", "the daemon is stopping".into()),
            }
        }
        RequestKind::Cancel => {
            let (tx, rx) = oneshot::channel();
            if control.send(Control::Cancel { reply: tx }).await.is_err() {
                return ("pending", "the daemon is stopping".into());
            }
            match rx.await {
                Ok(Ok(n)) => ("accepted", format!("{n} table(s) cancelled")),
                Ok(Err(e)) => ("rejected", e),
                Err(_) => ("pending", "the daemon is stopping".into()),
            }
        }
    }
}

/// `binlogd snapshot start|cancel`: files the request and waits (up to `wait`) for the
/// active daemon's answer. Prints what happened.
pub async fn snapshot_request(
    cfg: &Config,
    kind: RequestKind,
    wait: Duration,
) -> Result<String, DaemonError> {
    if let RequestKind::Start { tables, filter } = &kind {
        // the same checks the daemon makes, here first: a mistake is told at once
        let (src, _) = super::connect_source(cfg).await?;
        snapshot_supported(&src).map_err(DaemonError::Config)?;
        let f = TableFilter::new(cfg.source.include.as_deref(), &cfg.source.exclude)
            .map_err(DaemonError::Config)?;
        let mut c = src.conn().await?;
        for (db, t) in tables {
            if !f.matches(db, t) {
                return Err(DaemonError::Config(format!(
                    "{db}.{t} is not streamed (source.include/exclude): a snapshot needs the table's changes too. \
                     Fix: add it to source.include and reload the daemon (SIGHUP), then ask again"
                )));
            }
            let def = load_table(&mut c, db, t, &src.collations)
                .await
                .map_err(|e| DaemonError::Config(e.to_string()))?;
            if let Some(w) = filter {
                let sql = crate::snapshot::chunk::chunk_sql(&def, false, Some(w), 1);
                let r: Result<Vec<mysql_async::Row>, _> =
                    mysql_async::prelude::Queryable::query(&mut c, &sql).await;
                if let Err(e) = r {
                    return Err(DaemonError::Config(format!(
                        "--where {w:?} on {db}.{t}: {e}"
                    )));
                }
            }
        }
        let _ = c.disconnect().await;
    }
    let mut cp = super::open_checkpoint(cfg).await?;
    let schema = cfg.checkpoint.schema.clone();
    let id = requests::submit(cp.conn_mut(), &schema, &cfg.pipeline.name, &kind)
        .await
        .map_err(other)?;
    let active = cp.is_locked().await?;
    if !active {
        return Ok(format!(
            "request {id} filed; no daemon runs for pipeline {:?} now: the next one to start takes it up",
            cfg.pipeline.name
        ));
    }
    let t0 = std::time::Instant::now();
    loop {
        if let Some(r) = requests::get(cp.conn_mut(), &schema, id)
            .await
            .map_err(other)?
        {
            match r.state.as_str() {
                "accepted" => {
                    return Ok(format!(
                        "request {id} accepted: {}",
                        r.message.unwrap_or_default()
                    ))
                }
                "rejected" => {
                    return Err(DaemonError::Config(format!(
                        "request {id} rejected: {}",
                        r.message.unwrap_or_default()
                    )))
                }
                _ => {}
            }
        }
        if t0.elapsed() > wait {
            return Ok(format!(
                "request {id} filed; the active daemon has not answered within {wait:?} (see `binlogd snapshot status`)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `binlogd snapshot status`: the stored progress (what the sinks acknowledged) and the
/// latest requests.
pub async fn snapshot_status(cfg: &Config) -> Result<String, DaemonError> {
    let mut cp = super::open_checkpoint(cfg).await?;
    let schema = cfg.checkpoint.schema.clone();
    let progress = requests::stored_progress(cp.conn_mut(), &schema, &cfg.pipeline.name)
        .await
        .map_err(other)?;
    let recent = requests::recent(cp.conn_mut(), &schema, &cfg.pipeline.name, 5)
        .await
        .map_err(other)?;
    let mut out = String::new();
    match progress {
        None => out.push_str("no snapshot stored for this pipeline\n"),
        Some(p) if p.tables.is_empty() => out.push_str("no snapshot stored for this pipeline\n"),
        Some(p) => {
            let done = p.tables.iter().filter(|t| t.done).count();
            let cancelled = p.tables.iter().filter(|t| t.cancelled).count();
            out.push_str(&format!(
                "snapshot: {done}/{} table(s) done{} (stored with the checkpoint: acknowledged by every sink)\n",
                p.tables.len(),
                if cancelled > 0 {
                    format!(", {cancelled} cancelled")
                } else {
                    String::new()
                }
            ));
            for t in &p.tables {
                let state = if t.done {
                    "done"
                } else if t.cancelled {
                    "cancelled"
                } else if t.chunks == 0 {
                    "waiting"
                } else {
                    "reading"
                };
                let pct = if t.done {
                    100.0
                } else if t.estimate > 0 {
                    (t.rows as f64 * 100.0 / t.estimate as f64).min(99.0)
                } else {
                    0.0
                };
                out.push_str(&format!(
                    "  {}.{} {} {pct:>3.0}% {state:<9} rows {} (estimate {}) chunks {}{}\n",
                    t.db,
                    t.table,
                    bar(pct),
                    t.rows,
                    t.estimate,
                    t.chunks,
                    t.filter
                        .as_deref()
                        .map(|f| format!(" where {f}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    if !recent.is_empty() {
        out.push_str("requests (newest first):\n");
        for r in recent {
            let what = match &r.kind {
                RequestKind::Start { tables, filter } => format!(
                    "start {}{}",
                    tables
                        .iter()
                        .map(|(d, t)| format!("{d}.{t}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    filter
                        .as_deref()
                        .map(|f| format!(" --where {f:?}"))
                        .unwrap_or_default()
                ),
                RequestKind::Cancel => "cancel".into(),
            };
            out.push_str(&format!(
                "  #{} {} {} {}{}\n",
                r.id,
                r.created_at,
                what,
                r.state,
                r.message.map(|m| format!(": {m}")).unwrap_or_default()
            ));
        }
    }
    Ok(out)
}
