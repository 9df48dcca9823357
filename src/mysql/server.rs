//! What the server is (flavor, version, settings) and where its binlog stands.

use mysql_async::prelude::*;
use mysql_async::Conn;

use super::QueryError;
use crate::binlog::position::{BinlogCoord, GtidSet, MySqlGtidSet};
use crate::binlog::Flavor;

/// What binlogd needs to know about the source server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub flavor: Flavor,
    pub version: String,
    pub server_id: u32,
    pub server_uuid: Option<String>,
    pub log_bin: bool,
    pub binlog_format: String,
    pub binlog_row_image: String,
    pub binlog_row_metadata: String,
    pub binlog_checksum: String,
    pub gtid_mode: Option<String>,
    pub row_value_options: Option<String>,
}

async fn var(conn: &mut Conn, name: &str) -> Result<Option<String>, mysql_async::Error> {
    let r: Option<(String, Option<String>)> = conn
        .exec_first(
            "SELECT ?, CAST(@@GLOBAL.".to_string() + name + " AS CHAR)",
            (name,),
        )
        .await
        .or_else(|e| match &e {
            mysql_async::Error::Server(s)
                if s.code == super::errors::ER_UNKNOWN_SYSTEM_VARIABLE =>
            {
                Ok(None)
            }
            _ => Err(e),
        })?;
    Ok(r.and_then(|(_, v)| v))
}

pub async fn server_info(conn: &mut Conn) -> Result<ServerInfo, mysql_async::Error> {
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await?
        .unwrap_or_default();
    let flavor = if version.to_ascii_lowercase().contains("mariadb") {
        Flavor::MariaDb
    } else {
        Flavor::MySql
    };
    let get = |v: Option<String>| v.unwrap_or_default().to_ascii_uppercase();
    let log_bin = get(var(conn, "log_bin").await?);
    Ok(ServerInfo {
        flavor,
        version,
        server_id: var(conn, "server_id")
            .await?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        server_uuid: if flavor == Flavor::MySql {
            var(conn, "server_uuid").await?
        } else {
            None
        },
        log_bin: log_bin == "1" || log_bin == "ON",
        binlog_format: get(var(conn, "binlog_format").await?),
        binlog_row_image: get(var(conn, "binlog_row_image").await?),
        binlog_row_metadata: get(var(conn, "binlog_row_metadata").await?),
        binlog_checksum: get(var(conn, "binlog_checksum").await?),
        gtid_mode: if flavor == Flavor::MySql {
            var(conn, "gtid_mode")
                .await?
                .map(|s| s.to_ascii_uppercase())
        } else {
            None
        },
        row_value_options: if flavor == Flavor::MySql {
            var(conn, "binlog_row_value_options").await?
        } else {
            None
        },
    })
}

/// The server's current binlog end and GTID state (start = "latest").
pub async fn current_position(
    conn: &mut Conn,
    flavor: Flavor,
) -> Result<(BinlogCoord, Option<GtidSet>), QueryError> {
    let q = match flavor {
        Flavor::MySql => "SHOW BINARY LOG STATUS",
        Flavor::MariaDb => "SHOW MASTER STATUS",
    };
    let row: Option<mysql_async::Row> = conn.query_first(q).await?;
    let row = row.ok_or_else(|| {
        QueryError::Unexpected("the server reports no binlog status: is log_bin on?".into())
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    let coord = BinlogCoord { file, pos };
    let gtid = match flavor {
        Flavor::MySql => {
            let s: Option<String> = row.get::<Option<String>, _>(4).flatten();
            match s {
                Some(s) => Some(GtidSet::MySql(
                    s.parse::<MySqlGtidSet>().map_err(QueryError::Unexpected)?,
                )),
                None => None,
            }
        }
        Flavor::MariaDb => {
            let s: Option<String> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&coord.file, coord.pos))
                .await?;
            match s {
                Some(s) => Some(GtidSet::parse_any(&s).or_else(|_| {
                    if s.is_empty() {
                        Ok(GtidSet::MariaDb(Default::default()))
                    } else {
                        Err(QueryError::Unexpected(format!(
                            "server GTID position {s:?} unreadable"
                        )))
                    }
                })?),
                None => None,
            }
        }
    };
    Ok((coord, gtid))
}

/// The binlog files the server has, oldest first.
/// The server's current position and how many binlog bytes lie between `at` and it (None:
/// `at`'s file is no longer on the server).
pub async fn bytes_behind(
    conn: &mut Conn,
    flavor: Flavor,
    at: &BinlogCoord,
) -> Result<(BinlogCoord, Option<u64>), QueryError> {
    let (cur, _) = current_position(conn, flavor).await?;
    if cur.file == at.file {
        let b = cur.pos.saturating_sub(at.pos);
        return Ok((cur, Some(b)));
    }
    let files = binlog_files(conn).await?;
    let mut bytes = 0u64;
    let mut counting = false;
    for (f, size) in &files {
        if *f == at.file {
            counting = true;
            bytes += size.saturating_sub(at.pos);
        } else if counting {
            bytes += if *f == cur.file { cur.pos } else { *size };
        }
    }
    Ok((cur, counting.then_some(bytes)))
}

pub async fn binlog_files(conn: &mut Conn) -> Result<Vec<(String, u64)>, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get::<String, _>(0).unwrap_or_default(),
                r.get::<u64, _>(1).unwrap_or(0),
            )
        })
        .collect())
}
