//! `binlogd check`: the server, the grants, the stored position and the sinks, each problem
//! with its fix.

use crate::binlog::position::GtidSet;
use crate::binlog::Flavor;
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::config::Config;
use crate::finding::{Finding, Severity};
use crate::source::{Source, SourceError};
use std::sync::Arc;

use crate::checkpoint::resume::validate_stored;
use crate::cmd::history::*;
use crate::cmd::{other, DaemonError};

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
    if let Err(e) = validate_stored(&stored.position, &src.info, stored.server_uuid.as_deref()) {
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

/// What `binlogd check` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Only config mistakes (exit code 2).
    ConfigProblems,
    /// The server or a sink is not set up (exit code 1).
    Problems,
}

/// `binlogd check`: prints each finding; the outcome decides the exit code.
pub async fn check(cfg: Config) -> Outcome {
    let cfg = Arc::new(cfg);
    println!("config: ok ({} sink(s))", cfg.sinks.names().count());
    println!(
        "source: {}",
        crate::mysql::opts::redact_url(cfg.source.url.expose())
    );
    let (src, findings) = match crate::cmd::connect_source(&cfg).await {
        Ok(x) => x,
        Err(e) => {
            println!("error: {e}");
            return Outcome::Problems;
        }
    };
    println!(
        "server: {} (server_id {})",
        src.info.version, src.info.server_id
    );
    let mut errors = 0;
    let mut config_errors = 0;
    let mut all = findings;
    match src.conn().await {
        Ok(mut c) => {
            match crate::mysql::requirements::check_privileges(&mut c, &cfg.checkpoint.schema).await
            {
                Ok(f) => all.extend(f),
                Err(e) => all.push(Finding {
                    severity: Severity::Error,
                    message: format!("cannot read grants: {e}"),
                }),
            }
            match crate::mysql::requirements::replica_id_clash(
                &mut c,
                &src.info,
                cfg.source.server_id,
            )
            .await
            {
                Ok(Some(m)) => all.push(Finding {
                    severity: Severity::Error,
                    message: m,
                }),
                Ok(None) => {}
                Err(e) => all.push(Finding {
                    severity: Severity::Warning,
                    message: format!("cannot list replicas: {e}"),
                }),
            }
            if let Ok(filter) =
                crate::filter::TableFilter::new(cfg.source.include.as_deref(), &cfg.source.exclude)
            {
                match crate::mysql::requirements::fk_cascade_findings(
                    &mut c,
                    src.info.flavor,
                    &filter,
                )
                .await
                {
                    Ok(f) => all.extend(f),
                    Err(e) => all.push(Finding {
                        severity: Severity::Warning,
                        message: format!("cannot read foreign keys to check for cascades: {e}"),
                    }),
                }
            }
            all.extend(
                crate::sinks::registry::check(
                    &cfg.sinks,
                    &cfg.pipeline.name,
                    &crate::cmd::sink_catalog(&cfg, &mut c).await,
                    true,
                )
                .await,
            );
            all.extend(check_stored(&cfg, &src).await);
            all.extend(check_failover_setup(&cfg, &src).await);
            if let Err(e) = crate::mysql::server::binlog_files(&mut c).await {
                all.push(Finding {
                    severity: Severity::Error,
                    message: format!("SHOW BINARY LOGS failed ({e}); GRANT REPLICATION CLIENT"),
                });
            }
        }
        Err(e) => all.push(Finding {
            severity: Severity::Error,
            message: e.to_string(),
        }),
    }
    for f in &all {
        match f.severity {
            Severity::Error => {
                errors += 1;
                println!("error: {}", f.message);
            }
            Severity::ConfigError => {
                config_errors += 1;
                println!("error: {}", f.message);
            }
            Severity::Warning => println!("warning: {}", f.message),
        }
    }
    if errors + config_errors == 0 {
        println!("check: ok");
        Outcome::Ok
    } else {
        println!("check: {} problem(s)", errors + config_errors);
        // exit 2 when the config alone is at fault
        if errors == 0 {
            Outcome::ConfigProblems
        } else {
            Outcome::Problems
        }
    }
}
