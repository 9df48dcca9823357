//! `binlogd snapshot start|cancel`: requests through the table `snapshot_request` in the
//! checkpoint schema (migration 0003), so a request reaches whichever daemon holds the
//! pipeline lock (HA) and waits there across restarts; the active daemon polls it.

use mysql_async::prelude::*;
use mysql_async::Conn;

use super::progress::SnapshotProgress;
use super::SnapshotError;

/// One request row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub kind: RequestKind,
    pub state: String,
    pub message: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    Start {
        tables: Vec<(String, String)>,
        filter: Option<String>,
    },
    Cancel,
}

/// `db.table` → (db, table); the table part may hold dots only when the db part is quoted
/// with backticks (`` `my.db`.t ``).
pub fn parse_table(s: &str) -> Result<(String, String), String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not db.table (e.g. shop.orders)");
    if let Some(rest) = s.strip_prefix('`') {
        let end = rest.find("`.").ok_or_else(bad)?;
        let db = &rest[..end];
        let t = rest[end + 2..].trim_matches('`');
        if db.is_empty() || t.is_empty() {
            return Err(bad());
        }
        return Ok((db.into(), t.into()));
    }
    let (db, t) = s.split_once('.').ok_or_else(bad)?;
    if db.is_empty() || t.is_empty() {
        return Err(bad());
    }
    Ok((db.into(), t.into()))
}

fn table_json(tables: &[(String, String)]) -> String {
    let v: Vec<String> = tables.iter().map(|(d, t)| format!("{d}.{t}")).collect();
    serde_json::to_string(&v).unwrap_or_default()
}

/// Files a request; returns its id.
pub async fn submit(
    conn: &mut Conn,
    schema: &str,
    pipeline: &str,
    kind: &RequestKind,
) -> Result<u64, SnapshotError> {
    let (k, tables, filter) = match kind {
        RequestKind::Start { tables, filter } => {
            ("start", Some(table_json(tables)), filter.clone())
        }
        RequestKind::Cancel => ("cancel", None, None),
    };
    conn.exec_drop(
        format!(
            "INSERT INTO `{schema}`.`snapshot_request` (pipeline, kind, tables, where_sql) VALUES (?, ?, ?, ?)"
        ),
        (pipeline, k, tables, filter),
    )
    .await?;
    Ok(conn.last_insert_id().unwrap_or(0))
}

type Row = (
    u64,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    String,
);

fn from_row(r: Row) -> Result<Request, SnapshotError> {
    let (id, kind, tables, filter, state, message, created_at) = r;
    let kind = match kind.as_str() {
        "cancel" => RequestKind::Cancel,
        _ => {
            let names: Vec<String> = serde_json::from_str(tables.as_deref().unwrap_or("[]"))
                .map_err(|e| SnapshotError::Progress(format!("snapshot_request {id}: {e}")))?;
            let tables = names
                .iter()
                .map(|n| parse_table(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SnapshotError::Progress(format!("snapshot_request {id}: {e}")))?;
            RequestKind::Start { tables, filter }
        }
    };
    Ok(Request {
        id,
        kind,
        state,
        message,
        created_at,
    })
}

const COLUMNS: &str = "id, kind, tables, where_sql, state, message, CAST(created_at AS CHAR)";

/// Requests still waiting for the active daemon, oldest first.
pub async fn pending(
    conn: &mut Conn,
    schema: &str,
    pipeline: &str,
) -> Result<Vec<Request>, SnapshotError> {
    let rows: Vec<Row> = conn
        .exec(
            format!(
                "SELECT {COLUMNS} FROM `{schema}`.`snapshot_request` WHERE pipeline = ? AND state = 'pending' ORDER BY id"
            ),
            (pipeline,),
        )
        .await?;
    rows.into_iter().map(from_row).collect()
}

/// The latest `n` requests, newest first.
pub async fn recent(
    conn: &mut Conn,
    schema: &str,
    pipeline: &str,
    n: u32,
) -> Result<Vec<Request>, SnapshotError> {
    let rows: Vec<Row> = conn
        .exec(
            format!(
                "SELECT {COLUMNS} FROM `{schema}`.`snapshot_request` WHERE pipeline = ? ORDER BY id DESC LIMIT {n}"
            ),
            (pipeline,),
        )
        .await?;
    rows.into_iter().map(from_row).collect()
}

/// One request by id.
pub async fn get(conn: &mut Conn, schema: &str, id: u64) -> Result<Option<Request>, SnapshotError> {
    let row: Option<Row> = conn
        .exec_first(
            format!("SELECT {COLUMNS} FROM `{schema}`.`snapshot_request` WHERE id = ?"),
            (id,),
        )
        .await?;
    row.map(from_row).transpose()
}

/// Records the daemon's answer: `accepted` or `rejected` with a message.
pub async fn answer(
    conn: &mut Conn,
    schema: &str,
    id: u64,
    state: &str,
    message: &str,
) -> Result<(), SnapshotError> {
    conn.exec_drop(
        format!("UPDATE `{schema}`.`snapshot_request` SET state = ?, message = ? WHERE id = ?"),
        (state, message, id),
    )
    .await?;
    Ok(())
}

/// The stored progress of the pipeline's snapshot (as stored with the checkpoint).
pub async fn stored_progress(
    conn: &mut Conn,
    schema: &str,
    pipeline: &str,
) -> Result<Option<SnapshotProgress>, SnapshotError> {
    let s: Option<String> = conn
        .exec_first(
            format!("SELECT progress FROM `{schema}`.`snapshot_progress` WHERE pipeline = ?"),
            (pipeline,),
        )
        .await?;
    s.map(|s| SnapshotProgress::from_json(&s)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert_eq!(
            parse_table("shop.orders").unwrap(),
            ("shop".into(), "orders".into())
        );
        assert_eq!(parse_table("`a.b`.t").unwrap(), ("a.b".into(), "t".into()));
        assert!(parse_table("orders").is_err());
        assert!(parse_table(".t").is_err());
        assert!(parse_table("d.").is_err());
    }
}
