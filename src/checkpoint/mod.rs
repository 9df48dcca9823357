//! Checkpoint: the acknowledged position, stored in a MySQL table (`migrations/`).
//!
//! Only positions the pipeline reports as acknowledged by every sink are stored, at most every
//! `interval` and once more at shutdown. While running, the daemon holds the MySQL lock
//! `binlogd:<pipeline>` on the checkpoint server; operator verbs that move the position
//! refuse to run while it is held.

pub mod lease;
pub mod resume;
pub mod writer;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

use crate::binlog::position::{BinlogCoord, GtidSet, Position};
use crate::units::{HumanDuration, Secret};

/// Versioned migrations, applied in order, each once.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "checkpoint",
        include_str!("../../migrations/0001_checkpoint.sql"),
    ),
    (
        2,
        "xa_restart",
        include_str!("../../migrations/0002_xa_restart.sql"),
    ),
    (
        3,
        "snapshot",
        include_str!("../../migrations/0003_snapshot.sql"),
    ),
];

/// binlogd's own tables in the checkpoint schema: never streamed.
pub const OWN_TABLES: &[&str] = &[
    "checkpoint",
    "schema_migrations",
    "checkpoint_restart",
    "snapshot_progress",
    "snapshot_request",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Server holding the checkpoint table; default: the source server (`source.url`).
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS to the checkpoint server given by `url`; default: the settings of `[source.tls]`.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
    /// Schema of the checkpoint table (created if missing).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Store the acknowledged position at most this often.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// While the checkpoint server cannot be written, keep streaming to the sinks for this
    /// long; then pause reading the binlog until a store succeeds (bounds what a crash would
    /// replay, and the time without the pipeline lock).
    #[serde(default = "default_max_unstored")]
    pub max_unstored: HumanDuration,
    /// A store (or reconnect) that takes longer than this counts as failed.
    #[serde(default = "default_store_timeout")]
    pub store_timeout: HumanDuration,
    /// The pipeline lock is a lease: its session on the checkpoint server gets a
    /// `wait_timeout` of this plus a few seconds (so the server frees the lock of a daemon cut
    /// off by a network partition), and is confirmed well within it. A daemon that cannot
    /// confirm the lock for longer than the lease minus a margin stops handing on batches
    /// before the server can free it; a standby takes over within about the lease plus a few
    /// seconds.
    #[serde(default = "default_lock_lease")]
    pub lock_lease: HumanDuration,
}

/// Seconds the lock session's `wait_timeout` exceeds `checkpoint.lock_lease`.
pub const LEASE_SERVER_EXTRA_SECS: u64 = 5;

impl CheckpointConfig {
    /// The lock session's server-side `wait_timeout` (s): a few seconds above the lease.
    pub fn lock_wait_timeout_secs(&self) -> u64 {
        self.lock_lease.0.as_secs_f64().ceil() as u64 + LEASE_SERVER_EXTRA_SECS
    }

    /// Without a confirmed lock for this long, the daemon stops handing on batches (the lease
    /// minus a fifth: the server frees the lock no earlier than `lock_wait_timeout_secs` after
    /// the last confirmation).
    pub fn fence_after(&self) -> Duration {
        self.lock_lease.0 - self.lock_lease.0 / 5
    }

    /// How often the lock is confirmed: a fifth of the lease, and at least every half
    /// heartbeat (readiness reports an unconfirmed lock after one heartbeat).
    pub fn ping_every(&self, heartbeat: Duration) -> Duration {
        (self.lock_lease.0 / 5)
            .min(heartbeat / 2)
            .max(Duration::from_millis(100))
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            url: None,
            password: None,
            password_file: None,
            tls: None,
            schema: default_schema(),
            interval: default_interval(),
            max_unstored: default_max_unstored(),
            store_timeout: default_store_timeout(),
            lock_lease: default_lock_lease(),
        }
    }
}

fn default_schema() -> String {
    "binlogd".into()
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_max_unstored() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_store_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_lock_lease() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("checkpoint server: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "a binlogd for pipeline {0:?} is running (it holds the lock binlogd:{0}); stop it first"
    )]
    Locked(String),
}

/// A stored position with its metadata.
#[derive(Debug, Clone)]
pub struct Stored {
    pub position: Position,
    pub server_id: u32,
    pub server_uuid: Option<String>,
    pub event_ts_ms: u64,
    pub updated_at: String,
    pub age_secs: i64,
    /// The snapshot progress stored with this position (JSON), if any.
    pub snapshot: Option<String>,
}

/// Source identity written with every position.
#[derive(Debug, Clone, Default)]
pub struct SourceIdentity {
    pub server_id: u32,
    pub server_uuid: Option<String>,
}

pub struct Checkpoint {
    conn: Conn,
    schema: String,
    pipeline: String,
    /// Server connection id of the session holding the pipeline lock, once taken.
    lock_session: Option<u64>,
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Checkpoint {
    pub async fn connect(
        opts: Opts,
        schema: &str,
        pipeline: &str,
    ) -> Result<Checkpoint, CheckpointError> {
        if !valid_ident(schema) {
            return Err(CheckpointError::Invalid(format!(
                "checkpoint.schema {schema:?} may only contain letters, digits and '_'"
            )));
        }
        let hint = crate::mysql::opts::plain_auth_hint(&opts, "checkpoint.tls");
        let conn = Conn::new(opts).await.map_err(|e| {
            match (crate::mysql::opts::tls_problem(&e), &e) {
                // the checkpoint server's TLS settings: [checkpoint.tls], else [source.tls]
                (Some(p), _) => CheckpointError::Invalid(format!(
                    "checkpoint server: {}",
                    p.describe("checkpoint.tls (default: source.tls)")
                )),
                (None, mysql_async::Error::Server(s))
                    if crate::mysql::errors::is_auth(s.code) && !hint.is_empty() => {
                    CheckpointError::Invalid(format!(
                        "checkpoint server: {}. Fix: check the user and password in checkpoint.url / checkpoint.password{hint}",
                        s.message
                    ))
                }
                (None, _) => CheckpointError::Mysql(e),
            }
        })?;
        Ok(Checkpoint {
            conn,
            schema: schema.to_string(),
            pipeline: pipeline.to_string(),
            lock_session: None,
        })
    }

    pub fn table(&self) -> (&str, &str) {
        (&self.schema, "checkpoint")
    }

    /// Creates the schema and applies pending migrations; returns how many were applied.
    pub async fn migrate(&mut self) -> Result<usize, CheckpointError> {
        let s = self.schema.clone();
        let c = &mut self.conn;
        // The daemon never feeds on its own writes: they are filtered out of the stream by
        // table; keeping them out of the binlog would need SUPER, which binlogd does not ask for.
        c.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{s}`"))
            .await?;
        c.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS `{s}`.`schema_migrations` (version INT UNSIGNED NOT NULL PRIMARY KEY, \
             name VARCHAR(100) NOT NULL, applied_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))"
        ))
        .await?;
        let done: Vec<u32> = c
            .query(format!("SELECT version FROM `{s}`.`schema_migrations`"))
            .await?;
        let mut applied = 0;
        for (v, name, sql) in MIGRATIONS {
            if done.contains(v) {
                continue;
            }
            let sql = sql.replace("{schema}", &s);
            // comments first: they may hold a ';'
            for stmt in strip_comments(&sql)
                .split(';')
                .filter(|x| !x.trim().is_empty())
            {
                c.query_drop(stmt).await?;
            }
            c.exec_drop(
                format!(
                    "INSERT IGNORE INTO `{s}`.`schema_migrations` (version, name) VALUES (?, ?)"
                ),
                (v, name),
            )
            .await?;
            applied += 1;
        }
        Ok(applied)
    }

    pub async fn load(&mut self) -> Result<Option<Stored>, CheckpointError> {
        let s = &self.schema;
        let row: Option<mysql_async::Row> = self
            .conn
            .exec_first(
                format!(
                    "SELECT c.binlog_file, c.binlog_pos, c.gtid_set, c.gtid_flavor, c.server_id, c.server_uuid, c.event_ts_ms, \
                     CAST(c.updated_at AS CHAR), TIMESTAMPDIFF(SECOND, c.updated_at, CURRENT_TIMESTAMP(3)), \
                     r.binlog_file, r.binlog_pos, r.gtid_set, sp.progress \
                     FROM `{s}`.`checkpoint` c LEFT JOIN `{s}`.`checkpoint_restart` r ON r.pipeline = c.pipeline \
                     LEFT JOIN `{s}`.`snapshot_progress` sp ON sp.pipeline = c.pipeline \
                     WHERE c.pipeline = ?"
                ),
                (&self.pipeline,),
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        let file: String = r.get(0).unwrap_or_default();
        let pos: u64 = r.get(1).unwrap_or(4);
        let gtid: Option<String> = r.get::<Option<String>, _>(2).flatten();
        let flavor: Option<String> = r.get::<Option<String>, _>(3).flatten();
        let parse_gtid = |gtid: Option<String>| -> Result<Option<GtidSet>, CheckpointError> {
            Ok(match (gtid, flavor.as_deref()) {
                (Some(g), Some("mariadb")) => Some(GtidSet::MariaDb(
                    g.parse().map_err(CheckpointError::Invalid)?,
                )),
                (Some(g), Some("mysql")) => {
                    Some(GtidSet::MySql(g.parse().map_err(CheckpointError::Invalid)?))
                }
                (Some(g), _) if !g.is_empty() => {
                    Some(GtidSet::parse_any(&g).map_err(CheckpointError::Invalid)?)
                }
                _ => None,
            })
        };
        let mut position = Position::new(BinlogCoord { file, pos }, parse_gtid(gtid)?);
        let restart_file: Option<String> = r.get::<Option<String>, _>(9).flatten();
        let restart_pos: Option<u64> = r.get::<Option<u64>, _>(10).flatten();
        let restart_gtid = parse_gtid(r.get::<Option<String>, _>(11).flatten())?;
        if let (Some(file), Some(pos)) = (restart_file, restart_pos) {
            position.restart = Some(Box::new(Position::new(
                BinlogCoord { file, pos },
                restart_gtid,
            )));
        }
        Ok(Some(Stored {
            position,
            server_id: r.get(4).unwrap_or(0),
            server_uuid: r.get::<Option<String>, _>(5).flatten(),
            event_ts_ms: r.get(6).unwrap_or(0),
            updated_at: r.get(7).unwrap_or_default(),
            age_secs: r.get::<Option<i64>, _>(8).flatten().unwrap_or(0),
            snapshot: r.get::<Option<String>, _>(12).flatten(),
        }))
    }

    pub async fn store(
        &mut self,
        p: &Position,
        id: &SourceIdentity,
        event_ts_ms: u64,
        snapshot: Option<&str>,
    ) -> Result<(), CheckpointError> {
        let s = &self.schema;
        let (gtid, flavor) = match &p.gtid {
            Some(g @ GtidSet::MySql(_)) => (Some(g.to_string()), Some("mysql")),
            Some(g @ GtidSet::MariaDb(_)) => (Some(g.to_string()), Some("mariadb")),
            None => (None, None),
        };
        // the position and its XA restart point change together
        let mut tx = self.conn.start_transaction(Default::default()).await?;
        tx.exec_drop(
                format!(
                    "INSERT INTO `{s}`.`checkpoint` (pipeline, binlog_file, binlog_pos, gtid_set, gtid_flavor, server_id, \
                     server_uuid, event_ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
                     binlog_file = VALUES(binlog_file), binlog_pos = VALUES(binlog_pos), gtid_set = VALUES(gtid_set), \
                     gtid_flavor = VALUES(gtid_flavor), server_id = VALUES(server_id), server_uuid = VALUES(server_uuid), \
                     event_ts_ms = VALUES(event_ts_ms)"
                ),
                (
                    &self.pipeline,
                    &p.coord.file,
                    p.coord.pos,
                    gtid,
                    flavor,
                    id.server_id,
                    &id.server_uuid,
                    event_ts_ms,
                ),
            )
            .await?;
        match &p.restart {
            Some(r) => {
                tx.exec_drop(
                    format!(
                        "INSERT INTO `{s}`.`checkpoint_restart` (pipeline, binlog_file, binlog_pos, gtid_set) \
                         VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE binlog_file = VALUES(binlog_file), \
                         binlog_pos = VALUES(binlog_pos), gtid_set = VALUES(gtid_set)"
                    ),
                    (
                        &self.pipeline,
                        &r.coord.file,
                        r.coord.pos,
                        r.gtid.as_ref().map(|g| g.to_string()),
                    ),
                )
                .await?;
            }
            None => {
                tx.exec_drop(
                    format!("DELETE FROM `{s}`.`checkpoint_restart` WHERE pipeline = ?"),
                    (&self.pipeline,),
                )
                .await?;
            }
        }
        // the snapshot progress belongs to this position: a restart continues both together
        if let Some(progress) = snapshot {
            tx.exec_drop(
                format!(
                    "INSERT INTO `{s}`.`snapshot_progress` (pipeline, progress) VALUES (?, ?) \
                     ON DUPLICATE KEY UPDATE progress = VALUES(progress)"
                ),
                (&self.pipeline, progress),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The connection (snapshot requests and status share the checkpoint session).
    pub fn conn_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    pub async fn delete(&mut self) -> Result<bool, CheckpointError> {
        let s = &self.schema;
        self.conn
            .exec_drop(
                format!("DELETE FROM `{s}`.`checkpoint_restart` WHERE pipeline = ?"),
                (&self.pipeline,),
            )
            .await?;
        self.conn
            .exec_drop(
                format!("DELETE FROM `{s}`.`snapshot_progress` WHERE pipeline = ?"),
                (&self.pipeline,),
            )
            .await?;
        self.conn
            .exec_drop(
                format!("DELETE FROM `{s}`.`checkpoint` WHERE pipeline = ?"),
                (&self.pipeline,),
            )
            .await?;
        Ok(self.conn.affected_rows() > 0)
    }

    pub fn lock_name(&self) -> String {
        format!("binlogd:{}", self.pipeline)
    }

    /// Gives this session a short server-side idle timeout, so that the server ends it (and
    /// frees the pipeline lock) when this daemon is cut off without the connection closing.
    pub async fn set_session_timeout(&mut self, secs: u64) -> Result<(), CheckpointError> {
        self.conn
            .query_drop(format!("SET SESSION wait_timeout = {secs}"))
            .await?;
        Ok(())
    }

    /// Tries to take the pipeline lock on this connection (held until it closes).
    pub async fn try_lock(&mut self) -> Result<bool, CheckpointError> {
        self.get_lock(0).await
    }

    /// `GET_LOCK` waiting up to `wait_secs`; remembers this session as the holder.
    async fn get_lock(&mut self, wait_secs: u32) -> Result<bool, CheckpointError> {
        let got: Option<(Option<i64>, u64)> = self
            .conn
            .exec_first(
                "SELECT GET_LOCK(?, ?), CONNECTION_ID()",
                (self.lock_name(), wait_secs),
            )
            .await?;
        match got {
            Some((Some(1), id)) => {
                self.lock_session = Some(id);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The session that held the lock (see [`Checkpoint::retake_lock`]).
    pub fn lock_session(&self) -> Option<u64> {
        self.lock_session
    }

    /// On a new connection after the old one failed: takes the pipeline lock again. When the
    /// lock is still held by `previous` — this daemon's own old session, which the server has
    /// not noticed is gone (e.g. the server hung and resumed) — that session is killed first.
    /// `false`: another session (another binlogd) holds it.
    pub async fn retake_lock(&mut self, previous: Option<u64>) -> Result<bool, CheckpointError> {
        if self.try_lock().await? {
            return Ok(true);
        }
        let holder: Option<Option<u64>> = self
            .conn
            .exec_first("SELECT IS_USED_LOCK(?)", (self.lock_name(),))
            .await?;
        match (holder.flatten(), previous) {
            (Some(h), Some(p)) if h == p => {
                tracing::info!(session = p, "the pipeline lock is held by this daemon's previous checkpoint session; ending that session");
                let _ = self.conn.query_drop(format!("KILL {p}")).await;
                self.get_lock(10).await
            }
            (None, _) => self.try_lock().await,
            _ => Ok(false),
        }
    }

    /// `true` when another session holds the pipeline lock.
    pub async fn is_locked(&mut self) -> Result<bool, CheckpointError> {
        let free: Option<Option<i64>> = self
            .conn
            .exec_first("SELECT IS_FREE_LOCK(?)", (self.lock_name(),))
            .await?;
        Ok(free.flatten() == Some(0))
    }

    /// Checks that the lock is still ours (the session may have been killed and reconnected).
    pub async fn holds_lock(&mut self) -> Result<bool, CheckpointError> {
        let mine: Option<Option<i64>> = self
            .conn
            .exec_first(
                "SELECT IS_USED_LOCK(?) = CONNECTION_ID()",
                (self.lock_name(),),
            )
            .await?;
        Ok(mine.flatten() == Some(1))
    }
}

fn strip_comments(stmt: &str) -> String {
    stmt.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}
