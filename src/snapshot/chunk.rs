//! Keyset chunk queries and the reads around them.
//!
//! A chunk is `SELECT <every column> FROM db.t WHERE <after the last key> [AND (<filter>)]
//! ORDER BY <key> LIMIT n`, read with the binary protocol (a prepared statement), so values
//! come typed. "After the last key" is the expanded form `k1 > ? OR (k1 = ? AND k2 > ?) OR …`:
//! the row-value form `(k1, k2) > (?, ?)` is not used for an index range by either server
//! (EXPLAIN on MariaDB 10.11.19: `type=index`, a full index scan from the start, ANALYZE shows
//! r_rows = all rows before the key; MySQL 9.7.4: "Index scan on t using PRIMARY" + filter),
//! while the expanded form is a range scan on both ("Index range scan on t using PRIMARY over
//! (a = 5 AND 'x105' < b) OR (5 < a)"; MariaDB `type=range key=PRIMARY`).

use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Value};

use super::catalog::{KeyBind, SnapshotTable};
use super::encode::encode_row;
use super::progress::{hex_string, KeyValue};
use super::window::{render_key, Watermark};
use super::SnapshotError;
use crate::binlog::position::{BinlogCoord, MySqlGtidSet};
use crate::decode::rows::{Cell, Op, RowsChunk};
use crate::decode::table::ColKind;

/// One chunk as read.
#[derive(Debug)]
pub struct ChunkRead {
    /// The rows as read events (`Op::Read`, after images only), in key order.
    pub chunk: RowsChunk,
    /// Each row's key as [`render_key`] renders it (what the window compares).
    pub keys: Vec<Vec<u8>>,
    /// The last row's key values, to resume after (None: no row).
    pub last_key: Option<Vec<KeyValue>>,
    /// The read stopped before `limit` rows because the rows passed its byte cap (the rest
    /// of the table is read by the next chunks).
    pub truncated: bool,
}

/// `` `name` `` with backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Sets up a snapshot session: UTC TIMESTAMPs, column bytes in their own character set,
/// REPEATABLE READ (what `WITH CONSISTENT SNAPSHOT` needs).
pub async fn prepare_session(conn: &mut Conn) -> Result<(), SnapshotError> {
    conn.query_drop("SET SESSION time_zone = '+00:00', SESSION character_set_results = NULL")
        .await?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    Ok(())
}

/// The placeholder expression of key column `b`.
fn bind_expr(b: &KeyBind) -> String {
    match b {
        KeyBind::Plain | KeyBind::Bit => "?".into(),
        KeyBind::Hex => "UNHEX(?)".into(),
        KeyBind::HexText { charset, collation } => format!(
            "CONVERT(UNHEX(?) USING {}) COLLATE {}",
            quote_ident(charset),
            quote_ident(collation)
        ),
    }
}

/// The parameter value for key column `b`.
fn bind_value(b: &KeyBind, v: &KeyValue) -> Value {
    match (b, v) {
        (KeyBind::Hex | KeyBind::HexText { .. }, KeyValue::Bytes(x)) => {
            Value::Bytes(hex_string(x).into_bytes())
        }
        (KeyBind::Bit, KeyValue::Bytes(x)) => {
            Value::UInt(x.iter().fold(0u64, |a, &c| (a << 8) | c as u64))
        }
        _ => v.to_value(),
    }
}

/// The chunk SQL for `t`: after the last key when `after` is set, with the user's `filter`
/// (an SQL condition) when given. Parameters come from [`chunk_params`].
pub fn chunk_sql(t: &SnapshotTable, after: bool, filter: Option<&str>, limit: usize) -> String {
    let cols = &t.schema.columns;
    let select: Vec<String> = cols
        .iter()
        .map(|c| match c.kind {
            // the index / bitmask the binlog stores, not the label(s)
            ColKind::Enum { .. } | ColKind::Set { .. } => format!("{}+0", quote_ident(&c.name)),
            _ => quote_ident(&c.name),
        })
        .collect();
    let keys: Vec<String> = t.key.iter().map(|&i| quote_ident(&cols[i].name)).collect();
    let mut conds = Vec::new();
    if after {
        let mut terms = Vec::with_capacity(keys.len());
        for j in 0..keys.len() {
            let mut parts: Vec<String> = (0..j)
                .map(|i| format!("{} = {}", keys[i], bind_expr(&t.key_binds[i])))
                .collect();
            parts.push(format!("{} > {}", keys[j], bind_expr(&t.key_binds[j])));
            terms.push(format!("({})", parts.join(" AND ")));
        }
        conds.push(format!("({})", terms.join(" OR ")));
    }
    if let Some(f) = filter.map(str::trim).filter(|f| !f.is_empty()) {
        conds.push(format!("({f})"));
    }
    format!(
        "SELECT {} FROM {}.{}{} ORDER BY {} LIMIT {limit}",
        select.join(", "),
        quote_ident(t.db()),
        quote_ident(t.table()),
        if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        },
        keys.join(", "),
    )
}

/// The parameters of [`chunk_sql`] for the last key `after`.
pub fn chunk_params(t: &SnapshotTable, after: &[KeyValue]) -> Result<Vec<Value>, SnapshotError> {
    if after.len() != t.key.len() {
        return Err(SnapshotError::Table {
            db: t.db().into(),
            table: t.table().into(),
            message: format!(
                "stored last key has {} values, the key {} columns",
                after.len(),
                t.key.len()
            ),
        });
    }
    let mut p = Vec::new();
    for j in 0..after.len() {
        for (b, v) in t.key_binds.iter().zip(after).take(j + 1) {
            p.push(bind_value(b, v));
        }
    }
    Ok(p)
}

/// Reads one chunk (no transaction handling: see [`read_chunk_mariadb`] /
/// [`read_chunk_mysql`]). The session must be set up by [`prepare_session`].
pub async fn read_chunk(
    conn: &mut Conn,
    t: &SnapshotTable,
    after: Option<&[KeyValue]>,
    filter: Option<&str>,
    limit: usize,
) -> Result<ChunkRead, SnapshotError> {
    read_chunk_capped(conn, t, after, filter, limit, usize::MAX).await
}

/// [`read_chunk`] that stops once the chunk holds `max_bytes` of row data (cells included):
/// the row limit comes from the previous chunks' row size, and a table whose rows grow
/// (small old rows, large new ones) would otherwise read `limit` large rows at once. The
/// rows after the stop are discarded by the server connection, not kept.
pub async fn read_chunk_capped(
    conn: &mut Conn,
    t: &SnapshotTable,
    after: Option<&[KeyValue]>,
    filter: Option<&str>,
    limit: usize,
    max_bytes: usize,
) -> Result<ChunkRead, SnapshotError> {
    let sql = chunk_sql(t, after.is_some(), filter, limit.max(1));
    let params = match after {
        Some(k) => chunk_params(t, k)?,
        None => Vec::new(),
    };
    // rows are encoded as they arrive (not collected first): the server keeps sending while
    // this task encodes, and no chunk of `Row`s is held (issue 15, benches/snapshot.rs)
    let mut result = if params.is_empty() {
        conn.exec_iter(sql, ()).await?
    } else {
        conn.exec_iter(sql, params).await?
    };
    let columns = &t.schema.columns;
    let mut data = Vec::with_capacity(limit.min(65_536) * 64);
    let mut cells = Vec::with_capacity(limit.min(65_536) * columns.len());
    let mut keys = Vec::with_capacity(limit.min(65_536));
    let mut last_values: Option<Vec<Value>> = None;
    let mut nrows = 0usize;
    let mut truncated = false;
    while let Some(row) = result.next().await? {
        if nrows == 0 {
            check_result_columns(t, row.columns_ref())?;
        }
        let values: Vec<Value> = row.unwrap();
        let first = cells.len();
        encode_row(columns, &values, &mut data, &mut cells).map_err(|(i, m)| {
            SnapshotError::Column {
                db: t.db().into(),
                table: t.table().into(),
                column: columns.get(i).map(|c| c.name.clone()).unwrap_or_default(),
                message: m,
            }
        })?;
        // invariant 12: values are checked before they join a batch — here, row by row as
        // they arrive, so that the server sends the next rows meanwhile (a check of the whole
        // chunk after its last row left the server idle for it: issue 15)
        crate::decode::validate::check_image(&t.schema, &data, &cells[first..], nrows).map_err(
            |e| SnapshotError::Table {
                db: t.db().into(),
                table: t.table().into(),
                message: e.to_string(),
            },
        )?;
        let key = render_key(columns, &t.key, &data, &cells[first..]).map_err(|m| {
            SnapshotError::Table {
                db: t.db().into(),
                table: t.table().into(),
                message: format!("key of a row: {m}"),
            }
        })?;
        keys.push(key);
        last_values = Some(values);
        nrows += 1;
        if nrows < limit && data.len() + cells.len() * std::mem::size_of::<Cell>() >= max_bytes {
            truncated = true;
            break;
        }
    }
    drop(result);
    let last = last_values.map(|values| {
        t.key
            .iter()
            .map(|&i| KeyValue::from_value(&values[i]))
            .collect()
    });
    let mut chunk = RowsChunk {
        table: t.schema.clone(),
        op: Op::Read { last: false },
        data: data.into(),
        cells,
        rows: nrows as u32,
        partial_json: Vec::new(),
        pos: 0,
        first_row: 0,
        server_id: 0,
        ts_ms: 0,
        text_checked: false,
    };
    // every row was checked as it arrived (above)
    chunk.text_checked = true;
    Ok(ChunkRead {
        chunk,
        keys,
        last_key: last,
        truncated,
    })
}

/// The result set's column definitions against the schema the cells are encoded for: a
/// column whose integer width/signedness, DECIMAL scale, fractional-seconds precision, BIT
/// width or character set differs would be encoded wrongly (an ALTER since the schema was
/// read).
pub fn check_result_columns(
    t: &SnapshotTable,
    wire: &[mysql_async::Column],
) -> Result<(), SnapshotError> {
    use mysql_common::constants::{ColumnFlags, ColumnType::*};
    let cols = &t.schema.columns;
    let changed = |column: &str, message: String| SnapshotError::SchemaChanged {
        db: t.db().into(),
        table: t.table().into(),
        column: column.into(),
        message,
    };
    if wire.len() != cols.len() {
        return Err(changed(
            "*",
            format!("{} columns read, {} expected", wire.len(), cols.len()),
        ));
    }
    for (i, (c, w)) in cols.iter().zip(wire).enumerate() {
        let ty = w.column_type();
        let ok = match c.kind {
            ColKind::Int(n) => {
                matches!(
                    (n, ty),
                    (1, MYSQL_TYPE_TINY)
                        | (2, MYSQL_TYPE_SHORT)
                        | (3, MYSQL_TYPE_INT24)
                        | (4, MYSQL_TYPE_LONG)
                        | (8, MYSQL_TYPE_LONGLONG)
                ) && w.flags().contains(ColumnFlags::UNSIGNED_FLAG) == c.unsigned
            }
            ColKind::Year => ty == MYSQL_TYPE_YEAR,
            ColKind::Float => ty == MYSQL_TYPE_FLOAT,
            ColKind::Double => ty == MYSQL_TYPE_DOUBLE,
            ColKind::Decimal { scale, .. } => {
                matches!(ty, MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL) && w.decimals() == scale
            }
            ColKind::Date => matches!(ty, MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE),
            ColKind::Time2 { fsp } => ty == MYSQL_TYPE_TIME && w.decimals() == fsp,
            ColKind::DateTime2 { fsp } => ty == MYSQL_TYPE_DATETIME && w.decimals() == fsp,
            ColKind::Timestamp2 { fsp } => ty == MYSQL_TYPE_TIMESTAMP && w.decimals() == fsp,
            ColKind::Bit { bits } => ty == MYSQL_TYPE_BIT && w.column_length() == bits as u32,
            ColKind::Str { .. } | ColKind::Blob { .. } if c.special.is_none() => {
                t.collations.get(i).copied().flatten() == Some(w.character_set())
            }
            _ => true,
        };
        if !ok {
            return Err(changed(
                &c.name,
                format!(
                    "read as {ty:?} (decimals {}, length {}, charset {}, flags {:?}), expected {:?}",
                    w.decimals(),
                    w.column_length(),
                    w.character_set(),
                    w.flags(),
                    c.kind
                ),
            ));
        }
    }
    Ok(())
}

async fn in_snapshot<T>(
    conn: &mut Conn,
    f: impl AsyncFnOnce(&mut Conn) -> Result<T, SnapshotError>,
) -> Result<T, SnapshotError> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await?;
    match f(conn).await {
        Ok(v) => {
            conn.query_drop("COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.query_drop("ROLLBACK").await;
            Err(e)
        }
    }
}

/// MariaDB: the binlog coordinate the current consistent-snapshot transaction sees.
pub async fn binlog_snapshot_position(conn: &mut Conn) -> Result<BinlogCoord, SnapshotError> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
        .await?;
    let get = |n: &str| {
        rows.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    match (get("Binlog_snapshot_file"), get("Binlog_snapshot_position")) {
        (Some(file), Some(pos)) if !file.is_empty() => Ok(BinlogCoord {
            file,
            pos: pos.parse().map_err(|_| {
                SnapshotError::Watermark(format!("Binlog_snapshot_position {pos:?}"))
            })?,
        }),
        _ => Err(SnapshotError::Watermark(
            "the server reports no Binlog_snapshot_file/position (binary log off?)".into(),
        )),
    }
}

/// MariaDB: reads a chunk in a consistent-snapshot transaction; the watermark is the binlog
/// coordinate that snapshot is consistent with.
pub async fn read_chunk_mariadb(
    conn: &mut Conn,
    t: &SnapshotTable,
    after: Option<&[KeyValue]>,
    filter: Option<&str>,
    limit: usize,
    max_bytes: usize,
) -> Result<(ChunkRead, Watermark), SnapshotError> {
    in_snapshot(conn, async |c: &mut Conn| {
        let at = binlog_snapshot_position(c).await?;
        let read = read_chunk_capped(c, t, after, filter, limit, max_bytes).await?;
        Ok((read, Watermark::Coord(at)))
    })
    .await
}

/// MySQL: `@@GLOBAL.gtid_executed`.
pub async fn gtid_executed(conn: &mut Conn) -> Result<MySqlGtidSet, SnapshotError> {
    let s: Option<String> = conn.query_first("SELECT @@GLOBAL.gtid_executed").await?;
    s.unwrap_or_default()
        .parse()
        .map_err(|e| SnapshotError::Watermark(format!("gtid_executed: {e}")))
}

/// MySQL: waits (up to `wait`) until gtid_executed contains `seen` (what the stream had handed
/// on when the window opened) = low, reads the chunk in a consistent-snapshot transaction,
/// then reads gtid_executed again = high.
#[allow(clippy::too_many_arguments)]
pub async fn read_chunk_mysql(
    conn: &mut Conn,
    t: &SnapshotTable,
    after: Option<&[KeyValue]>,
    filter: Option<&str>,
    limit: usize,
    max_bytes: usize,
    seen: &MySqlGtidSet,
    wait: Duration,
) -> Result<(ChunkRead, Watermark), SnapshotError> {
    let t0 = Instant::now();
    let low = loop {
        let g = gtid_executed(conn).await?;
        if g.contains_set(seen) {
            break g;
        }
        if t0.elapsed() > wait {
            return Err(SnapshotError::Watermark(format!(
                "gtid_executed does not contain what the stream handed on ({}) after {wait:?}: \
                 another server?",
                seen.subtract(&g)
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let read = in_snapshot(conn, async |c: &mut Conn| {
        read_chunk_capped(c, t, after, filter, limit, max_bytes).await
    })
    .await?;
    let high = gtid_executed(conn).await?;
    Ok((read, Watermark::Gtids { low, high }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::charset::CollationMap;
    use crate::snapshot::catalog::{build_schema, CatalogColumn, KeyKind};
    use std::sync::Arc;

    /// (name, data type, (charset, collation))
    type KeyCol<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);

    fn table(key: &[KeyCol<'_>]) -> SnapshotTable {
        let mut cols: Vec<CatalogColumn> = key
            .iter()
            .map(|(n, dt, cs)| CatalogColumn {
                name: n.to_string(),
                data_type: dt.to_string(),
                column_type: dt.to_string(),
                nullable: false,
                octet_length: Some(40),
                precision: Some(10),
                scale: Some(0),
                datetime_precision: None,
                collation_id: Some(45),
                charset: cs.map(|c| c.0.to_string()),
                collation: cs.map(|c| c.1.to_string()),
                invisible: false,
            })
            .collect();
        cols.push(CatalogColumn {
            name: "e".into(),
            data_type: "enum".into(),
            column_type: "enum('a','b')".into(),
            nullable: true,
            octet_length: None,
            precision: None,
            scale: None,
            datetime_precision: None,
            collation_id: Some(45),
            charset: None,
            collation: None,
            invisible: false,
        });
        let s = build_schema("my`db", "t", &cols, &CollationMap::builtin(), false, &[]).unwrap();
        let key: Vec<usize> = (0..key.len()).collect();
        let key_binds = key
            .iter()
            .map(|&i| crate::snapshot::catalog::key_bind(&s.columns[i], &cols[i]))
            .collect();
        SnapshotTable {
            schema: Arc::new(s),
            key,
            key_kind: KeyKind::Primary,
            key_binds,
            collations: Vec::new(),
            column_types: Vec::new(),
            invisible: Vec::new(),
            mariadb: false,
        }
    }

    #[test]
    fn first_chunk_and_single_key() {
        let t = table(&[("id", "int", None)]);
        assert_eq!(
            chunk_sql(&t, false, None, 100),
            "SELECT `id`, `e`+0 FROM `my``db`.`t` ORDER BY `id` LIMIT 100"
        );
        assert_eq!(
            chunk_sql(&t, true, Some(" e = 'a' "), 5),
            "SELECT `id`, `e`+0 FROM `my``db`.`t` WHERE ((`id` > ?)) AND (e = 'a') ORDER BY `id` LIMIT 5"
        );
        assert_eq!(
            chunk_params(&t, &[KeyValue::Int(7)]).unwrap(),
            vec![Value::Int(7)]
        );
        assert!(chunk_params(&t, &[]).is_err());
    }

    #[test]
    fn composite_keys_expand_and_quote() {
        let t = table(&[
            ("a`b", "int", None),
            ("name", "varchar", Some(("latin1", "latin1_swedish_ci"))),
            ("raw", "varbinary", None),
        ]);
        assert_eq!(
            chunk_sql(&t, true, None, 10),
            "SELECT `a``b`, `name`, `raw`, `e`+0 FROM `my``db`.`t` WHERE ((`a``b` > ?) OR \
             (`a``b` = ? AND `name` > CONVERT(UNHEX(?) USING `latin1`) COLLATE `latin1_swedish_ci`) OR \
             (`a``b` = ? AND `name` = CONVERT(UNHEX(?) USING `latin1`) COLLATE `latin1_swedish_ci` AND `raw` > UNHEX(?))) \
             ORDER BY `a``b`, `name`, `raw` LIMIT 10"
        );
        let k = [
            KeyValue::Int(1),
            KeyValue::Bytes(b"caf\xe9".to_vec()),
            KeyValue::Bytes(vec![0, 0xff]),
        ];
        let p = chunk_params(&t, &k).unwrap();
        let hex = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        assert_eq!(
            p,
            vec![
                Value::Int(1),
                Value::Int(1),
                hex("636166e9"),
                Value::Int(1),
                hex("636166e9"),
                hex("00ff"),
            ]
        );
    }
}
