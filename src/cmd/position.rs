//! `binlogd migrate` and `binlogd position show|set|reset`.

use std::sync::Arc;

use crate::binlog::position::{BinlogCoord, GtidSet, Position};
use crate::binlog::Flavor;
use crate::checkpoint::{Checkpoint, CheckpointError, SourceIdentity};
use crate::config::Config;
use crate::source::SourceError;

use crate::cmd::{open_checkpoint, other, DaemonError};

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
    if let Ok((src, _)) = crate::cmd::connect_source(&cfg2).await {
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
    let (src, _) = crate::cmd::connect_source(cfg).await?;
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
    cp.store(&pos, &id, 0, None).await?;
    Ok(pos)
}

/// `binlogd position reset`: forgets the stored position.
pub async fn position_reset(cfg: &Config) -> Result<bool, DaemonError> {
    let mut cp = locked_checkpoint(cfg).await?;
    Ok(cp.delete().await?)
}
