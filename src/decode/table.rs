//! Table schemas built from TABLE_MAP events and their optional metadata
//! (`binlog_row_metadata=FULL`): column names, primary key, signedness, charsets, ENUM/SET labels.

use mysql_common::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_common::constants::ColumnType;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::charset::{CollationMap, TextEncoding};
use super::DecodeError;

/// How a column's bytes are laid out in a row image and how they are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColKind {
    /// Integer of 1, 2, 3, 4 or 8 bytes.
    Int(u8),
    Year,
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// Old 3-byte DATE / NEWDATE.
    Date,
    /// Old TIME (3 bytes, HHMMSS).
    TimeOld,
    Time2 {
        fsp: u8,
    },
    /// Old DATETIME (8 bytes, YYYYMMDDHHMMSS).
    DateTimeOld,
    DateTime2 {
        fsp: u8,
    },
    TimestampOld,
    Timestamp2 {
        fsp: u8,
    },
    /// CHAR/VARCHAR/BINARY/VARBINARY with a 1- or 2-byte length prefix.
    Str {
        len_bytes: u8,
    },
    /// BLOB/TEXT with a 1..4-byte length prefix.
    Blob {
        len_bytes: u8,
    },
    /// MySQL binary JSON with a length prefix.
    Json {
        len_bytes: u8,
    },
    Geometry {
        len_bytes: u8,
    },
    /// MySQL 9 VECTOR: float32 array with a length prefix.
    Vector {
        len_bytes: u8,
    },
    Enum {
        bytes: u8,
    },
    Set {
        bytes: u8,
    },
    Bit {
        bits: u16,
    },
}

#[derive(Debug, Clone)]
pub struct ColumnSchema {
    pub name: String,
    /// `"name":` pre-escaped for the JSON writer.
    pub json_key: Box<str>,
    pub type_code: u8,
    pub kind: ColKind,
    pub unsigned: bool,
    /// For character columns: how to get UTF-8.
    pub text: Option<TextEncoding>,
    /// MariaDB JSON column (LONGTEXT with json_valid check): emitted as nested JSON.
    pub json_text: bool,
    pub labels: Option<Arc<[String]>>,
    /// BINARY(n): the server strips trailing 0x00 in the binlog; SELECT shows them. Pad to n.
    pub binary_pad: Option<u16>,
    /// MariaDB UUID/INET4/INET6 (named only by information_schema): rendered as SELECT prints
    /// them. Set only when the row's TABLE_MAP shows the matching BINARY(16)/BINARY(4).
    pub special: Option<SpecialType>,
    /// For `json_text` columns: where a value that is not JSON is reported (rate-limited
    /// warning and metric naming the table). `None` (tests): reported without the table.
    pub json_origin: Option<Arc<ColumnOrigin>>,
}

/// MariaDB data types that the binlog shows as fixed-length binary strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialType {
    /// 16 bytes in text order (MariaDB logs the in-memory form, not the swapped record form).
    Uuid,
    /// 4 bytes, network order.
    Inet4,
    /// 16 bytes, network order.
    Inet6,
}

impl SpecialType {
    /// The information_schema `DATA_TYPE`/`COLUMN_TYPE` name.
    pub fn from_type_name(t: &str) -> Option<SpecialType> {
        match t {
            "uuid" => Some(SpecialType::Uuid),
            "inet4" => Some(SpecialType::Inet4),
            "inet6" => Some(SpecialType::Inet6),
            _ => None,
        }
    }

    /// Byte length of the value (the BINARY(n) the binlog declares).
    pub fn binary_len(self) -> u16 {
        match self {
            SpecialType::Inet4 => 4,
            SpecialType::Uuid | SpecialType::Inet6 => 16,
        }
    }
}

/// A column named for reports about its values (which are rendered far from the TABLE_MAP).
#[derive(Debug)]
pub struct ColumnOrigin {
    pub db: String,
    pub table: String,
    pub column: String,
}

impl ColumnOrigin {
    pub fn new(db: &str, table: &str, column: &str) -> ColumnOrigin {
        ColumnOrigin {
            db: db.into(),
            table: table.into(),
            column: column.into(),
        }
    }
}

#[derive(Debug)]
pub struct TableSchema {
    pub table_id: u64,
    pub db: String,
    pub table: String,
    pub columns: Vec<ColumnSchema>,
    /// Column indexes of the primary key, in key order.
    pub primary_key: Vec<usize>,
    /// Whether names/labels came from full metadata (false: positional names `@1…`).
    pub full_metadata: bool,
    /// The TABLE_MAP body this was built from, minus table id: a cache key.
    pub(crate) raw: Box<[u8]>,
    /// Changes are undone by a rollback (InnoDB); false for MyISAM, Aria, MEMORY…, whose rows
    /// stay when a transaction rolls back (to a savepoint). From information_schema; true when
    /// unknown.
    pub transactional: bool,
    /// Indexes of the columns whose values are checked before a rows event joins a batch
    /// ([`super::validate::checked_columns`]), chosen once per schema.
    pub checked_columns: Vec<usize>,
    /// Snapshot reads only: the columns of the key the table is read by (its primary key or
    /// the unique key chosen for it), which tell one read row from another whatever a sink
    /// uses as message key. Empty for tables of the stream.
    pub read_key: Vec<usize>,
}

/// Per-table facts not in the binlog, read from information_schema.
#[derive(Debug, Clone, Default)]
pub struct SchemaHints {
    /// MariaDB JSON columns (by name).
    pub json_columns: HashSet<String>,
    /// MariaDB UUID/INET4/INET6 columns (by name).
    pub special_types: HashMap<String, SpecialType>,
    /// MINIMAL-metadata fallback: (name, unsigned, enum/set labels) per column position.
    pub columns: Option<Vec<HintColumn>>,
    pub primary_key: Vec<String>,
    /// The table's engine supports transactions (information_schema ENGINES.TRANSACTIONS);
    /// None when unknown.
    pub transactional: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct HintColumn {
    pub name: String,
    pub unsigned: bool,
    pub labels: Option<Vec<String>>,
    pub collation_id: Option<u16>,
}

fn json_key(name: &str) -> Box<str> {
    let mut s = String::with_capacity(name.len() + 3);
    s.push_str(&serde_json::to_string(name).unwrap_or_else(|_| "\"?\"".into()));
    s.push(':');
    s.into_boxed_str()
}

impl TableSchema {
    /// A table known only by name (a statement such as TRUNCATE names it; no TABLE_MAP).
    pub fn named(db: &str, table: &str) -> TableSchema {
        TableSchema {
            table_id: 0,
            db: db.to_string(),
            table: table.to_string(),
            columns: Vec::new(),
            primary_key: Vec::new(),
            full_metadata: true,
            raw: Box::new([]),
            transactional: true,
            checked_columns: Vec::new(),
            read_key: Vec::new(),
        }
    }

    /// Builds the schema. `hints` supply what MINIMAL metadata lacks and MariaDB's JSON columns.
    pub fn from_table_map(
        tme: &TableMapEvent<'_>,
        raw: &[u8],
        collations: &CollationMap,
        hints: Option<&SchemaHints>,
    ) -> Result<TableSchema, DecodeError> {
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let ncols = tme.columns_count() as usize;
        let bad = |msg: String| DecodeError::Schema {
            table: format!("{db}.{table}"),
            message: msg,
        };
        let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())
            .map_err(|e| bad(format!("optional metadata: {e}")))?;
        let names: Vec<String> = meta
            .iter_column_name()
            .map(|r| r.map(|c| c.name().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("column names: {e}")))?;
        let full_metadata = names.len() == ncols;
        let hint_cols = hints.and_then(|h| h.columns.as_ref());

        let mut enums: Vec<Vec<String>> = Vec::new();
        let mut sets: Vec<Vec<String>> = Vec::new();
        for f in tme.iter_optional_meta() {
            match f.map_err(|e| bad(format!("optional metadata: {e}")))? {
                OptionalMetadataField::EnumStrValue(v) => {
                    let mut labels = Vec::new();
                    for e in v.iter_values() {
                        let e = e.map_err(|e| bad(format!("ENUM labels: {e}")))?;
                        labels.push(e.values().iter().map(|x| x.value().into_owned()).collect());
                    }
                    enums = labels;
                }
                OptionalMetadataField::SetStrValue(v) => {
                    let mut labels = Vec::new();
                    for e in v.iter_values() {
                        let e = e.map_err(|e| bad(format!("SET labels: {e}")))?;
                        labels.push(e.values().iter().map(|x| x.value().into_owned()).collect());
                    }
                    sets = labels;
                }
                _ => {}
            }
        }
        let mut signedness = meta.iter_signedness();
        let mut charsets = meta.iter_charset();
        let mut enum_set_cs = meta.iter_enum_and_set_charset();
        let (mut enum_i, mut set_i) = (0usize, 0usize);

        let mut columns = Vec::with_capacity(ncols);
        #[allow(clippy::needless_range_loop)]
        for i in 0..ncols {
            let raw_type = tme
                .get_raw_column_type(i)
                .map_err(|e| bad(format!("column {i}: {e}")))?
                .ok_or_else(|| bad(format!("column {i} missing")))?;
            let real = tme
                .get_column_type(i)
                .map_err(|e| bad(format!("column {i}: {e:?}")))?
                .ok_or_else(|| bad(format!("column {i} missing")))?;
            let m = tme.get_column_metadata(i).unwrap_or(&[]);
            let hint = hint_cols.and_then(|h| h.get(i));
            let name = if full_metadata {
                names[i].clone()
            } else if let Some(h) = hint {
                h.name.clone()
            } else {
                format!("@{}", i + 1)
            };
            let kind =
                col_kind(raw_type, real, m).map_err(|msg| bad(format!("column {name}: {msg}")))?;
            let mut unsigned = false;
            if real.is_numeric_type() {
                unsigned = match signedness.next() {
                    Some(u) => u,
                    None => hint.is_some_and(|h| h.unsigned),
                };
            }
            let mut text = None;
            let mut labels = None;
            if real.is_character_type() {
                let id = match charsets.next() {
                    Some(r) => Some(r.map_err(|e| bad(format!("column {name} charset: {e}")))?),
                    None => hint.and_then(|h| h.collation_id),
                };
                text = Some(match id {
                    Some(id) => collations
                        .encoding(id)
                        .map_err(|e| bad(format!("column {name}: {e}")))?,
                    None => TextEncoding::Utf8,
                });
            } else if real.is_enum_or_set_type() {
                let _ = enum_set_cs.next();
                let l = if real == ColumnType::MYSQL_TYPE_ENUM {
                    enum_i += 1;
                    enums.get(enum_i - 1).cloned()
                } else {
                    set_i += 1;
                    sets.get(set_i - 1).cloned()
                };
                labels = l
                    .or_else(|| hint.and_then(|h| h.labels.clone()))
                    .map(Arc::from);
            }
            let binary_pad = match (raw_type, kind, text) {
                (
                    ColumnType::MYSQL_TYPE_STRING,
                    ColKind::Str { .. },
                    Some(TextEncoding::Binary),
                ) => string_max_len(m),
                _ => None,
            };
            let json_text = matches!(kind, ColKind::Blob { .. })
                && hints.is_some_and(|h| h.json_columns.contains(&name));
            let json_origin = json_text.then(|| Arc::new(ColumnOrigin::new(&db, &table, &name)));
            // information_schema tells today's type; the TABLE_MAP tells the row's. A column
            // that was e.g. VARCHAR(36) when the row was written keeps its text.
            let special = hints
                .and_then(|h| h.special_types.get(&name).copied())
                .filter(|t| {
                    raw_type == ColumnType::MYSQL_TYPE_STRING
                        && matches!(kind, ColKind::Str { .. })
                        && text == Some(TextEncoding::Binary)
                        && binary_pad == Some(t.binary_len())
                });
            columns.push(ColumnSchema {
                json_key: json_key(&name),
                name,
                type_code: raw_type as u8,
                kind,
                unsigned,
                text,
                json_text,
                labels,
                binary_pad,
                special,
                json_origin,
            });
        }
        let mut primary_key: Vec<usize> = meta
            .iter_primary_key()
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|e| bad(format!("primary key: {e}")))?
            .into_iter()
            .map(|x| x as usize)
            .filter(|&x| x < ncols)
            .collect();
        if primary_key.is_empty() {
            if let Some(h) = hints {
                primary_key = h
                    .primary_key
                    .iter()
                    .filter_map(|n| columns.iter().position(|c| &c.name == n))
                    .collect();
            }
        }
        Ok(TableSchema {
            table_id: tme.table_id(),
            db,
            table,
            checked_columns: super::validate::checked_columns(&columns),
            columns,
            primary_key,
            full_metadata,
            raw: raw.into(),
            transactional: hints.and_then(|h| h.transactional).unwrap_or(true),
            read_key: Vec::new(),
        })
    }
}

/// Declared byte length of a CHAR/BINARY column from its STRING metadata.
fn string_max_len(m: &[u8]) -> Option<u16> {
    match m {
        [b0, b1, ..] if b0 & 0x30 != 0x30 => {
            Some((*b1 as u16) | ((((b0 & 0x30) ^ 0x30) as u16) << 4))
        }
        [_, b1, ..] => Some(*b1 as u16),
        _ => None,
    }
}

fn len_bytes(m: &[u8]) -> Result<u8, String> {
    match m.first() {
        Some(&n @ 1..=4) => Ok(n),
        _ => Err(format!("bad length-prefix metadata {m:?}")),
    }
}

fn fsp(m: &[u8]) -> Result<u8, String> {
    match m.first() {
        Some(&n @ 0..=6) => Ok(n),
        None => Ok(0),
        Some(n) => Err(format!("bad fractional-seconds precision {n}")),
    }
}

/// Derives the layout from the TABLE_MAP column type and its metadata bytes.
pub(crate) fn col_kind(raw: ColumnType, real: ColumnType, m: &[u8]) -> Result<ColKind, String> {
    use ColumnType::*;
    Ok(match raw {
        MYSQL_TYPE_TINY => ColKind::Int(1),
        MYSQL_TYPE_SHORT => ColKind::Int(2),
        MYSQL_TYPE_INT24 => ColKind::Int(3),
        MYSQL_TYPE_LONG => ColKind::Int(4),
        MYSQL_TYPE_LONGLONG => ColKind::Int(8),
        MYSQL_TYPE_YEAR => ColKind::Year,
        MYSQL_TYPE_FLOAT => ColKind::Float,
        MYSQL_TYPE_DOUBLE => ColKind::Double,
        MYSQL_TYPE_NEWDECIMAL => {
            let (p, s) = match m {
                [p, s, ..] => (*p, *s),
                _ => return Err("DECIMAL without precision/scale metadata".into()),
            };
            if p == 0 || p > 65 || s > 30 || s > p {
                return Err(format!("bad DECIMAL({p},{s}) metadata"));
            }
            ColKind::Decimal {
                precision: p,
                scale: s,
            }
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ColKind::Date,
        MYSQL_TYPE_TIME => ColKind::TimeOld,
        MYSQL_TYPE_TIME2 => ColKind::Time2 { fsp: fsp(m)? },
        MYSQL_TYPE_DATETIME => ColKind::DateTimeOld,
        MYSQL_TYPE_DATETIME2 => ColKind::DateTime2 { fsp: fsp(m)? },
        MYSQL_TYPE_TIMESTAMP => ColKind::TimestampOld,
        MYSQL_TYPE_TIMESTAMP2 => ColKind::Timestamp2 { fsp: fsp(m)? },
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            let max = match m {
                [a, b, ..] => u16::from_le_bytes([*a, *b]),
                [a] => *a as u16,
                [] => return Err("VARCHAR without length metadata".into()),
            };
            ColKind::Str {
                len_bytes: if max > 255 { 2 } else { 1 },
            }
        }
        MYSQL_TYPE_STRING => {
            let (b0, b1) = match m {
                [a, b, ..] => (*a, *b),
                _ => return Err("CHAR without metadata".into()),
            };
            match real {
                MYSQL_TYPE_ENUM => ColKind::Enum { bytes: b1 },
                MYSQL_TYPE_SET => ColKind::Set { bytes: b1 },
                _ => {
                    let max = if b0 & 0x30 != 0x30 {
                        (b1 as u16) | ((((b0 & 0x30) ^ 0x30) as u16) << 4)
                    } else {
                        b1 as u16
                    };
                    ColKind::Str {
                        len_bytes: if max > 255 { 2 } else { 1 },
                    }
                }
            }
        }
        MYSQL_TYPE_ENUM => ColKind::Enum {
            bytes: m.get(1).copied().unwrap_or(1),
        },
        MYSQL_TYPE_SET => ColKind::Set {
            bytes: m.get(1).copied().unwrap_or(1),
        },
        MYSQL_TYPE_BIT => {
            let (bits, bytes) = match m {
                [a, b, ..] => (*a as u16, *b as u16),
                _ => return Err("BIT without metadata".into()),
            };
            ColKind::Bit {
                bits: bytes * 8 + bits,
            }
        }
        MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB => {
            ColKind::Blob {
                len_bytes: len_bytes(m)?,
            }
        }
        MYSQL_TYPE_JSON => ColKind::Json {
            len_bytes: len_bytes(m)?,
        },
        MYSQL_TYPE_GEOMETRY => ColKind::Geometry {
            len_bytes: len_bytes(m)?,
        },
        MYSQL_TYPE_VECTOR => ColKind::Vector {
            len_bytes: len_bytes(m)?,
        },
        other => {
            return Err(format!(
                "column type {other:?} is not supported in row events"
            ))
        }
    })
}
