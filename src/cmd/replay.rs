//! `binlogd replay`: a range from the server, or binlog files on disk, to chosen sinks; the
//! stored position is not touched.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use crate::binlog::position::{BinlogCoord, GtidSet, StartPosition};
use crate::config::Config;
use crate::decode::event::Batch;
use crate::pipeline::Pipeline;
use crate::source::{Source, SourceError, SourceStats, StartPoint};

use crate::cmd::{other, source_info, DaemonError};
use crate::sinks::registry::open_sinks;

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
    let (src, _) = crate::cmd::connect_source(&cfg).await?;
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
    let sinks = open_sinks(
        &cfg.sinks,
        &range.sinks,
        source_info(&cfg, Some(&src.info), true),
    )?;
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
    let cfg = Arc::new(cfg);
    // the server, when reachable, supplies collations and schema hints
    let src = crate::cmd::connect_source(&cfg).await.ok().map(|x| x.0);
    let sinks = open_sinks(
        &cfg.sinks,
        &range.sinks,
        source_info(&cfg, src.as_ref().map(|s| &s.info), true),
    )?;
    let (ptx, prx) = mpsc::channel::<Batch>(2);
    let (acked_tx, _acked_rx) = watch::channel(None);
    let pipeline = tokio::spawn(
        Pipeline::new(cfg.pipeline.max_in_flight.0 as usize).run(prx, sinks, acked_tx),
    );
    let files = crate::source::file_replay::FileRange {
        from: range.from.clone(),
        to: range.to.clone(),
        from_time_ms: range.from_time_ms,
        to_time_ms: range.to_time_ms,
    };
    let (rows, failed) =
        crate::source::file_replay::replay_files(&cfg.source, src.as_ref(), &paths, files, &ptx)
            .await?;
    drop(ptx);
    pipeline.await.map_err(other)??;
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(rows)
}
