//! A table's schema from information_schema, as the decoder would build it from the table's
//! TABLE_MAP with `binlog_row_metadata=FULL` plus its schema hints
//! ([`TableSchema::from_table_map`], `fetch_hints`): same column kinds, signedness, charsets,
//! ENUM/SET labels, BINARY(n) padding, MariaDB JSON/UUID/INET4/INET6. A snapshot chunk's cells
//! are encoded for this schema ([`super::encode`]) and rendered by the decoder's renderer.
//!
//! Assumes the current temporal formats (TIME2/DATETIME2/TIMESTAMP2): tables whose temporal
//! columns still use the pre-5.6 formats (MariaDB with `mysql56_temporal_format=OFF`) are not
//! told apart by information_schema.

use std::sync::Arc;

use mysql_async::prelude::*;
use mysql_async::Conn;
use mysql_common::constants::ColumnType;

use super::SnapshotError;
use crate::decode::charset::{CollationMap, TextEncoding};
use crate::decode::table::{ColKind, ColumnOrigin, ColumnSchema, SpecialType, TableSchema};

/// Which key the chunks are read by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Primary,
    /// A unique key (its name) whose columns are all NOT NULL.
    Unique(String),
}

/// One table as a snapshot reads it.
#[derive(Debug, Clone)]
pub struct SnapshotTable {
    /// The decoder's schema: the same rendering as rows events of this table.
    pub schema: Arc<TableSchema>,
    /// Indexes (into `schema.columns`) of the columns chunks are ordered and resumed by.
    pub key: Vec<usize>,
    pub key_kind: KeyKind,
    /// How each key column's last value is bound in the next chunk query (same order as `key`).
    pub key_binds: Vec<KeyBind>,
    /// Collation id of each column (63 for binary strings; None: not a string), checked
    /// against the result set's column definitions.
    pub collations: Vec<Option<u16>>,
    /// `COLUMN_TYPE` of each column as loaded: a read is rendered with the loaded schema, so
    /// for a table with ENUM/SET columns a `COLUMN_TYPE` that differs after the read (labels
    /// reordered renumber the values) means loading it again.
    pub column_types: Vec<String>,
    /// Which columns are INVISIBLE (not in `SELECT *`).
    pub invisible: Vec<bool>,
    pub mariadb: bool,
}

/// How a key value is put back into a chunk query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBind {
    /// As the value SELECT returned (numbers, temporal values, UUID/INET text).
    Plain,
    /// Binary strings: bound as hex, `UNHEX(?)`.
    Hex,
    /// Text in `charset`/`collation`: bound as hex of its bytes,
    /// `CONVERT(UNHEX(?) USING charset) COLLATE collation`, so any character set round-trips
    /// and compares as the index orders it.
    HexText { charset: String, collation: String },
    /// BIT: bound as an unsigned integer.
    Bit,
}

impl SnapshotTable {
    pub fn db(&self) -> &str {
        &self.schema.db
    }
    pub fn table(&self) -> &str {
        &self.schema.table
    }
    /// Names of the key columns, in key order.
    pub fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&i| self.schema.columns[i].name.clone())
            .collect()
    }
}

/// `true` for MariaDB (`@@version` names it).
pub async fn is_mariadb(conn: &mut Conn) -> Result<bool, SnapshotError> {
    let v: Option<String> = conn.query_first("SELECT @@version").await?;
    Ok(v.is_some_and(|v| v.contains("MariaDB")))
}

/// Collation id → character set, as the server has them (built-in ids first).
pub async fn load_collations(conn: &mut Conn) -> Result<CollationMap, SnapshotError> {
    Ok(crate::mysql::schema::load_collations(conn).await?)
}

/// One row of information_schema.COLUMNS.
#[derive(Debug, Clone)]
pub struct CatalogColumn {
    pub name: String,
    /// `DATA_TYPE`, lower case.
    pub data_type: String,
    /// `COLUMN_TYPE`, as the server prints it.
    pub column_type: String,
    pub nullable: bool,
    pub octet_length: Option<u64>,
    pub precision: Option<u64>,
    pub scale: Option<u64>,
    pub datetime_precision: Option<u64>,
    pub collation_id: Option<u16>,
    pub charset: Option<String>,
    pub collation: Option<String>,
    /// An INVISIBLE column: left out of `SELECT *`, but in the binlog's row images (and read
    /// by name like every column).
    pub invisible: bool,
}

type ColumnRow = (
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Reads the table's schema and chunk key. `collations` as from [`load_collations`].
pub async fn load_table(
    conn: &mut Conn,
    db: &str,
    table: &str,
    collations: &CollationMap,
) -> Result<SnapshotTable, SnapshotError> {
    let mariadb = is_mariadb(conn).await?;
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, c.IS_NULLABLE, \
             c.CHARACTER_OCTET_LENGTH, c.NUMERIC_PRECISION, c.NUMERIC_SCALE, c.DATETIME_PRECISION, co.ID, c.CHARACTER_SET_NAME, c.COLLATION_NAME, \
             c.EXTRA \
             FROM information_schema.COLUMNS c \
             LEFT JOIN information_schema.COLLATIONS co ON co.COLLATION_NAME = c.COLLATION_NAME \
             WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION",
            (db, table),
        )
        .await?;
    if rows.is_empty() {
        // information_schema hides tables the user may not read: tell "gone" from "not
        // allowed" (a missing grant is an error to fix, never a table skipped)
        let probe = format!(
            "SELECT 1 FROM {}.{} LIMIT 0",
            super::chunk::quote_ident(db),
            super::chunk::quote_ident(table)
        );
        return match conn.query_drop(probe).await {
            Err(mysql_async::Error::Server(e))
                if e.code == crate::mysql::errors::ER_NO_SUCH_TABLE =>
            {
                Err(SnapshotError::NoTable {
                    db: db.into(),
                    table: table.into(),
                })
            }
            Err(e) => Err(SnapshotError::Server(e)),
            Ok(()) => Err(SnapshotError::Table {
                db: db.into(),
                table: table.into(),
                message: "information_schema lists none of its columns although the table can be read \
                          (SELECT granted on single columns?); GRANT SELECT ON the table or its database"
                    .into(),
            }),
        };
    }
    let cols: Vec<CatalogColumn> = rows
        .into_iter()
        .map(
            |(name, dt, ct, nullable, oct, p, s, dtp, coll, cs, cn, extra)| CatalogColumn {
                name,
                data_type: dt.to_ascii_lowercase(),
                column_type: ct,
                nullable: nullable.eq_ignore_ascii_case("YES"),
                octet_length: oct,
                precision: p,
                scale: s,
                datetime_precision: dtp,
                collation_id: coll.and_then(|c| u16::try_from(c).ok()),
                charset: cs,
                collation: cn,
                invisible: extra.is_some_and(|e| e.to_ascii_uppercase().contains("INVISIBLE")),
            },
        )
        .collect();

    // MariaDB JSON = LONGTEXT with CHECK (json_valid(`col`))
    let mut json_columns = Vec::new();
    if mariadb {
        let checks: Vec<String> = conn
            .exec(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
                (db, table),
            )
            .await?;
        for clause in checks {
            if let Some(col) = clause
                .trim()
                .strip_prefix("json_valid(`")
                .and_then(|r| r.strip_suffix("`)"))
            {
                json_columns.push(col.replace("``", "`"));
            }
        }
    }

    let stats: Vec<(String, u64, u64, Option<String>)> = conn
        .exec(
            "SELECT INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (db, table),
        )
        .await?;
    let transactional: Option<(Option<String>,)> = conn
        .exec_first(
            "SELECT e.TRANSACTIONS FROM information_schema.TABLES t \
             LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
             WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ?",
            (db, table),
        )
        .await?;
    let transactional = transactional
        .and_then(|(t,)| t)
        .is_none_or(|t| t.eq_ignore_ascii_case("YES"));

    let mut t = build_schema(db, table, &cols, collations, mariadb, &json_columns)?;
    t.transactional = transactional;
    let (primary, key, key_kind) = choose_key(db, table, &cols, &stats)?;
    t.primary_key = primary;
    t.read_key = key.clone();
    let key_binds = key
        .iter()
        .map(|&i| key_bind(&t.columns[i], &cols[i]))
        .collect();
    let collations = cols
        .iter()
        .zip(&t.columns)
        .map(|(c, s)| match s.kind {
            ColKind::Str { .. } | ColKind::Blob { .. } => Some(c.collation_id.unwrap_or(63)),
            _ => None,
        })
        .collect();
    Ok(SnapshotTable {
        schema: Arc::new(t),
        key,
        key_kind,
        key_binds,
        collations,
        column_types: cols.iter().map(|c| c.column_type.clone()).collect(),
        invisible: cols.iter().map(|c| c.invisible).collect(),
        mariadb,
    })
}

/// How the last value of key column `c` is bound.
pub fn key_bind(col: &ColumnSchema, c: &CatalogColumn) -> KeyBind {
    match col.kind {
        ColKind::Bit { .. } => KeyBind::Bit,
        ColKind::Str { .. } | ColKind::Blob { .. } if col.special.is_none() => {
            match (&c.charset, &c.collation) {
                (Some(cs), Some(co)) if cs != "binary" => KeyBind::HexText {
                    charset: cs.clone(),
                    collation: co.clone(),
                },
                _ => KeyBind::Hex,
            }
        }
        _ => KeyBind::Plain,
    }
}

/// (index name, non_unique, seq, column name) rows of STATISTICS → (primary key columns, chunk
/// key columns, which key).
pub fn choose_key(
    db: &str,
    table: &str,
    cols: &[CatalogColumn],
    stats: &[(String, u64, u64, Option<String>)],
) -> Result<(Vec<usize>, Vec<usize>, KeyKind), SnapshotError> {
    use std::collections::BTreeMap;
    // index name → (unique, columns in order; None when a part is an expression)
    let mut idx: BTreeMap<&str, (bool, Option<Vec<usize>>)> = BTreeMap::new();
    let mut parts: Vec<&(String, u64, u64, Option<String>)> = stats.iter().collect();
    parts.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    for (name, non_unique, _, col) in parts {
        let e = idx
            .entry(name.as_str())
            .or_insert((*non_unique == 0, Some(Vec::new())));
        let pos = col
            .as_deref()
            .and_then(|c| cols.iter().position(|x| x.name == c));
        match (pos, e.1.as_mut()) {
            (Some(p), Some(v)) => v.push(p),
            _ => e.1 = None,
        }
    }
    let primary = idx
        .get("PRIMARY")
        .and_then(|(_, c)| c.clone())
        .unwrap_or_default();
    if !primary.is_empty() {
        return Ok((primary.clone(), primary, KeyKind::Primary));
    }
    // the unique key on NOT NULL columns with the fewest columns (then by name)
    let best = idx
        .iter()
        .filter_map(|(name, (unique, c))| {
            let c = c.as_ref()?;
            (*unique && !c.is_empty() && c.iter().all(|&i| !cols[i].nullable))
                .then(|| (c.len(), *name, c.clone()))
        })
        .min();
    match best {
        Some((_, name, c)) => Ok((Vec::new(), c, KeyKind::Unique(name.to_string()))),
        None => Err(SnapshotError::NoKey {
            db: db.into(),
            table: table.into(),
        }),
    }
}

/// `enum('a','b''c')` → ["a", "b'c"] (information_schema doubles quotes).
pub use crate::mysql::schema::parse_labels;

/// `"name":`, as the decoder's table schema keys it.
fn json_key(name: &str) -> Box<str> {
    let mut s = serde_json::to_string(name).unwrap_or_else(|_| "\"?\"".into());
    s.push(':');
    s.into_boxed_str()
}

/// Builds the decoder's schema from catalog columns (no I/O; unit-testable).
pub fn build_schema(
    db: &str,
    table: &str,
    cols: &[CatalogColumn],
    collations: &CollationMap,
    mariadb: bool,
    json_columns: &[String],
) -> Result<TableSchema, SnapshotError> {
    let mut columns = Vec::with_capacity(cols.len());
    for c in cols {
        columns.push(column_schema(
            db,
            table,
            c,
            collations,
            mariadb,
            json_columns,
        )?);
    }
    let mut t = TableSchema::named(db, table);
    // invariant 12 (values checked before they join a batch): DECIMAL values of a read are
    // written by `encode_decimal` itself, which only writes valid digit groups, so checking
    // them again would decode every one for nothing (~10% of a snapshot's CPU)
    t.checked_columns = crate::decode::validate::checked_columns(&columns)
        .into_iter()
        .filter(|&i| !matches!(columns[i].kind, ColKind::Decimal { .. }))
        .collect();
    t.columns = columns;
    Ok(t)
}

fn column_schema(
    db: &str,
    table: &str,
    c: &CatalogColumn,
    collations: &CollationMap,
    mariadb: bool,
    json_columns: &[String],
) -> Result<ColumnSchema, SnapshotError> {
    use ColumnType::*;
    let err = |m: String| SnapshotError::Column {
        db: db.into(),
        table: table.into(),
        column: c.name.clone(),
        message: m,
    };
    let ct = c.column_type.to_ascii_lowercase();
    let unsigned = ct.contains("unsigned");
    let fsp = || -> Result<u8, SnapshotError> {
        match c.datetime_precision.unwrap_or(0) {
            n @ 0..=6 => Ok(n as u8),
            n => Err(err(format!("fractional-seconds precision {n}"))),
        }
    };
    let octets = c.octet_length.unwrap_or(0);
    let str_len_bytes = if octets > 255 { 2 } else { 1 };
    let text_enc = |binary: bool| -> Result<TextEncoding, SnapshotError> {
        if binary {
            return Ok(TextEncoding::Binary);
        }
        match c.collation_id {
            Some(id) => collations.encoding(id).map_err(err),
            None => Ok(TextEncoding::Binary),
        }
    };
    let special = if mariadb {
        SpecialType::from_type_name(c.data_type.as_str())
    } else {
        None
    };
    let (type_code, kind, text, labels, binary_pad) = match c.data_type.as_str() {
        "tinyint" | "bool" | "boolean" => (MYSQL_TYPE_TINY, ColKind::Int(1), None, None, None),
        "smallint" => (MYSQL_TYPE_SHORT, ColKind::Int(2), None, None, None),
        "mediumint" => (MYSQL_TYPE_INT24, ColKind::Int(3), None, None, None),
        "int" | "integer" => (MYSQL_TYPE_LONG, ColKind::Int(4), None, None, None),
        "bigint" => (MYSQL_TYPE_LONGLONG, ColKind::Int(8), None, None, None),
        "year" => (MYSQL_TYPE_YEAR, ColKind::Year, None, None, None),
        "float" => (MYSQL_TYPE_FLOAT, ColKind::Float, None, None, None),
        "double" | "real" | "double precision" => {
            (MYSQL_TYPE_DOUBLE, ColKind::Double, None, None, None)
        }
        "decimal" | "numeric" => {
            let p = c.precision.unwrap_or(10);
            let s = c.scale.unwrap_or(0);
            if p == 0 || p > 65 || s > 30 || s > p {
                return Err(err(format!("DECIMAL({p},{s})")));
            }
            (
                MYSQL_TYPE_NEWDECIMAL,
                ColKind::Decimal {
                    precision: p as u8,
                    scale: s as u8,
                },
                None,
                None,
                None,
            )
        }
        "date" => (MYSQL_TYPE_DATE, ColKind::Date, None, None, None),
        "time" => (
            MYSQL_TYPE_TIME2,
            ColKind::Time2 { fsp: fsp()? },
            None,
            None,
            None,
        ),
        "datetime" => (
            MYSQL_TYPE_DATETIME2,
            ColKind::DateTime2 { fsp: fsp()? },
            None,
            None,
            None,
        ),
        "timestamp" => (
            MYSQL_TYPE_TIMESTAMP2,
            ColKind::Timestamp2 { fsp: fsp()? },
            None,
            None,
            None,
        ),
        "bit" => {
            let bits = c.precision.unwrap_or(1);
            if !(1..=64).contains(&bits) {
                return Err(err(format!("BIT({bits})")));
            }
            (
                MYSQL_TYPE_BIT,
                ColKind::Bit { bits: bits as u16 },
                None,
                None,
                None,
            )
        }
        "char" => (
            MYSQL_TYPE_STRING,
            ColKind::Str {
                len_bytes: str_len_bytes,
            },
            Some(text_enc(false)?),
            None,
            None,
        ),
        "binary" => (
            MYSQL_TYPE_STRING,
            ColKind::Str {
                len_bytes: str_len_bytes,
            },
            Some(TextEncoding::Binary),
            None,
            u16::try_from(octets).ok(),
        ),
        "varchar" => (
            MYSQL_TYPE_VARCHAR,
            ColKind::Str {
                len_bytes: str_len_bytes,
            },
            Some(text_enc(false)?),
            None,
            None,
        ),
        "varbinary" => (
            MYSQL_TYPE_VARCHAR,
            ColKind::Str {
                len_bytes: str_len_bytes,
            },
            Some(TextEncoding::Binary),
            None,
            None,
        ),
        "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob" | "mediumblob"
        | "longblob" => {
            let len_bytes = match c.data_type.as_str() {
                "tinytext" | "tinyblob" => 1,
                "text" | "blob" => 2,
                "mediumtext" | "mediumblob" => 3,
                _ => 4,
            };
            let binary = c.data_type.ends_with("blob");
            (
                MYSQL_TYPE_BLOB,
                ColKind::Blob { len_bytes },
                Some(text_enc(binary)?),
                None,
                None,
            )
        }
        "enum" => {
            let l = parse_labels(&c.column_type);
            let bytes = if l.len() > 255 { 2 } else { 1 };
            (
                MYSQL_TYPE_STRING,
                ColKind::Enum { bytes },
                None,
                Some(Arc::from(l)),
                None,
            )
        }
        "set" => {
            let l = parse_labels(&c.column_type);
            let bytes = match l.len().div_ceil(8) {
                n @ 0..=4 => n.max(1) as u8,
                _ => 8,
            };
            (
                MYSQL_TYPE_STRING,
                ColKind::Set { bytes },
                None,
                Some(Arc::from(l)),
                None,
            )
        }
        "json" if !mariadb => (
            MYSQL_TYPE_JSON,
            ColKind::Json { len_bytes: 4 },
            None,
            None,
            None,
        ),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => (
            MYSQL_TYPE_GEOMETRY,
            ColKind::Geometry { len_bytes: 4 },
            None,
            None,
            None,
        ),
        "vector" => (
            MYSQL_TYPE_VECTOR,
            ColKind::Vector { len_bytes: 4 },
            None,
            None,
            None,
        ),
        _ if special.is_some() => {
            let n = special.map(|t| t.binary_len()).unwrap_or(16);
            (
                MYSQL_TYPE_STRING,
                ColKind::Str { len_bytes: 1 },
                Some(TextEncoding::Binary),
                None,
                Some(n),
            )
        }
        other => return Err(err(format!("type {other} is not supported"))),
    };
    let json_text =
        mariadb && matches!(kind, ColKind::Blob { .. }) && json_columns.contains(&c.name);
    Ok(ColumnSchema {
        json_key: json_key(&c.name),
        name: c.name.clone(),
        type_code: type_code as u8,
        kind,
        unsigned: unsigned && !matches!(kind, ColKind::Enum { .. } | ColKind::Set { .. }),
        text,
        json_text,
        labels,
        binary_pad,
        special,
        json_origin: json_text.then(|| Arc::new(ColumnOrigin::new(db, table, &c.name))),
    })
}

/// Every base table of the server outside the system schemas, as (db, table).
pub async fn list_tables(conn: &mut Conn) -> Result<Vec<(String, String)>, SnapshotError> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
             ('mysql', 'sys', 'information_schema', 'performance_schema') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await?;
    Ok(rows)
}

/// The server's row estimate of a table (information_schema; 0 when unknown).
pub async fn estimate_rows(conn: &mut Conn, db: &str, table: &str) -> u64 {
    let r: Result<Option<Option<u64>>, _> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await;
    r.ok().flatten().flatten().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, dt: &str, ct: &str, nullable: bool) -> CatalogColumn {
        CatalogColumn {
            name: name.into(),
            data_type: dt.into(),
            column_type: ct.into(),
            nullable,
            octet_length: None,
            precision: None,
            scale: None,
            datetime_precision: None,
            collation_id: None,
            charset: None,
            collation: None,
            invisible: false,
        }
    }

    #[test]
    fn labels() {
        assert_eq!(parse_labels("enum('a','b''c',',')"), ["a", "b'c", ","]);
        assert_eq!(parse_labels("set('x(1)','')"), ["x(1)", ""]);
    }

    #[test]
    fn key_choice() {
        let cols = [
            col("a", "int", "int", false),
            col("b", "int", "int", true),
            col("c", "int", "int", false),
            col("d", "int", "int", false),
        ];
        let s = |i: &str, nu: u64, seq: u64, c: &str| (i.to_string(), nu, seq, Some(c.to_string()));
        // primary key, composite, given out of order
        let st = [s("PRIMARY", 0, 2, "a"), s("PRIMARY", 0, 1, "c")];
        let (pk, key, k) = choose_key("d", "t", &cols, &st).unwrap();
        assert_eq!((pk, key, k), (vec![2, 0], vec![2, 0], KeyKind::Primary));
        // a unique key with a nullable column is skipped; the smallest NOT NULL one wins
        let st = [
            s("u_nullable", 0, 1, "b"),
            s("u_two", 0, 1, "a"),
            s("u_two", 0, 2, "c"),
            s("u_one", 0, 1, "d"),
            s("plain", 1, 1, "a"),
        ];
        let (pk, key, k) = choose_key("d", "t", &cols, &st).unwrap();
        assert!(pk.is_empty());
        assert_eq!((key, k), (vec![3], KeyKind::Unique("u_one".into())));
        // functional index part (no column name) is never a key
        let st = [("u_f".to_string(), 0, 1, None)];
        let e = choose_key("d", "t", &cols, &st).unwrap_err();
        assert!(matches!(e, SnapshotError::NoKey { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("d.t") && msg.contains("add a primary key"),
            "{msg}"
        );
    }
}
