//! The lag watcher: bytes between the acknowledged position and the server's end, and
//! catch-up progress in the log.

use std::sync::Arc;
use std::time::Instant;
use tracing::info;

use super::config::SourceConfig;
use crate::binlog::position::BinlogCoord;

/// Measures the lag in bytes (acknowledged position → the server's current position) every
/// `admin.lag_interval`; while the lag in time exceeds `admin.progress_threshold`, logs
/// catch-up progress: position, rates and the estimated time to catch up.
pub async fn watch_lag(
    cfg: Arc<SourceConfig>,
    lag_interval: std::time::Duration,
    progress_threshold: std::time::Duration,
    flavor: crate::binlog::Flavor,
) {
    use std::sync::atomic::Ordering;
    let m = crate::metrics::get();
    let every = lag_interval;
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
                .password()
                .and_then(|pw| crate::mysql::opts::opts_for(&cfg.url, pw.as_ref(), &cfg.tls));
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
        if lag > progress_threshold.as_secs_f64() {
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
