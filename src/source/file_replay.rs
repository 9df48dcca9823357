//! `replay --binlog-file`: the decoder over binlog files on disk (framing checked by
//! [`BinlogFileReader`]), batches handed to the pipeline like the stream's.

use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

use super::binlog_file::BinlogFileReader;
use super::config::SourceConfig;
use super::{Source, SourceError};
use crate::binlog::{BinlogCoord, Flavor};
use crate::decode::event::Batch;

/// Where a file replay starts and stops.
#[derive(Debug, Clone, Default)]
pub struct FileRange {
    pub from: Option<BinlogCoord>,
    pub to: Option<BinlogCoord>,
    pub from_time_ms: Option<u64>,
    pub to_time_ms: Option<u64>,
}

/// Decodes `paths` in order and hands the batches to `tx`. `src` (when the server is
/// reachable) supplies collations and schema hints. Returns the row changes handed on and the
/// decode error that stopped the replay, if any: it is returned after everything before it was
/// handed on, so the caller waits for the pipeline before reporting it. Errors reading the
/// files themselves are returned at once.
pub async fn replay_files(
    cfg: &SourceConfig,
    src: Option<&Source>,
    paths: &[std::path::PathBuf],
    range: FileRange,
    tx: &mpsc::Sender<Batch>,
) -> Result<(u64, Option<SourceError>), SourceError> {
    let mut meta = match &src {
        Some(s) => s.conn().await.ok(),
        None => None,
    };
    let mut decoder: Option<crate::decode::Decoder> = None;
    let mut rows = 0u64;
    let mut from = range.from;
    let mut failed: Option<SourceError> = None;
    'files: for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| SourceError::Config(format!("{} is not a file", path.display())))?;
        let f = std::fs::File::open(path)
            .map_err(|e| SourceError::Config(format!("{}: {e}", path.display())))?;
        // errors name the file as given and the byte offset of the event
        let mut file = BinlogFileReader::new(
            &path.display().to_string(),
            std::io::BufReader::with_capacity(1 << 20, f),
        )
        .map_err(SourceError::from)?;
        loop {
            let ev = match file.next_event().map_err(SourceError::from)? {
                None => break,
                Some(e) => std::sync::Arc::new(e),
            };
            if decoder.is_none() {
                let flavor = if ev.header().event_type_raw()
                    == crate::binlog::event_type::FORMAT_DESCRIPTION
                {
                    let fde = ev
                        .read_event::<mysql_common::binlog::events::FormatDescriptionEvent<'_>>()
                        .map_err(|e| SourceError::Config(e.to_string()))?;
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
                    return Err(SourceError::Config(format!(
                        "{}: does not start with a FORMAT_DESCRIPTION event",
                        path.display()
                    )));
                };
                let collations = match &src {
                    Some(s) => s.collations.clone(),
                    None => Arc::new(crate::decode::charset::CollationMap::builtin()),
                };
                let filter = crate::filter::TableFilter::new(cfg.include.as_deref(), &cfg.exclude)
                    .map_err(|e| SourceError::Config(e.to_string()))?;
                let mut d =
                    crate::decode::Decoder::new(flavor, filter, collations, cfg.verify_checksums);
                d.from_time_ms = range.from_time_ms;
                d.stop_time_ms = range.to_time_ms;
                d.stop_at = range.to.clone();
                decoder = Some(d);
            }
            let d = decoder
                .as_mut()
                .ok_or_else(|| SourceError::Config("no decoder".into()))?;
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
                if tx.send(b).await.is_err() {
                    break 'files;
                }
            }
            if d.reached_stop() {
                break 'files;
            }
        }
    }
    Ok((rows, failed))
}
