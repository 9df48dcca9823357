//! The stored position (and Kafka partition tails) against the server's history before
//! streaming: what a failover to a replica that was behind looks like.

use tracing::{error, warn};

use crate::binlog::position::{BinlogCoord, GtidSet, Position};
use crate::config::Config;
use crate::sinks::SinkError;
use crate::source::divergence::Identity;
use crate::source::{Source, SourceError};

use crate::cmd::{other, DaemonError};

/// The stored position's source identity.
pub fn stored_identity(s: &crate::checkpoint::Stored) -> Identity {
    Identity {
        server_id: s.server_id,
        server_uuid: s.server_uuid.clone(),
    }
}

/// Kafka `exactly_once` sinks: the GTIDs at their partitions' tails that were written from
/// the stored position's server or from the current one (older tails, from a server before
/// an accepted divergence, no longer count).
pub async fn kafka_tails(
    cfg: &Config,
    servers: &[String],
) -> Result<Vec<crate::binlog::Tail>, DaemonError> {
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
pub fn identity_label(id: &Identity) -> String {
    id.server_uuid
        .clone()
        .unwrap_or_else(|| id.server_id.to_string())
}

/// Before streaming: the stored position (and the Kafka tails) against the server's history.
/// Diverged: an error, or with `accept` the position to resume from (logged loudly).
pub async fn check_history(
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
