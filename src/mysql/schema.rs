//! information_schema look-ups: collations and the per-table facts the decoder needs.

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::binlog::Flavor;
use crate::decode::charset::CollationMap;
use crate::decode::table::{HintColumn, SchemaHints, SpecialType};

pub async fn load_collations(conn: &mut Conn) -> Result<CollationMap, mysql_async::Error> {
    let mut m = CollationMap::builtin();
    let rows: Vec<(Option<u32>, String)> = conn
        .query(
            "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL",
        )
        .await?;
    m.extend(
        rows.into_iter()
            .filter_map(|(id, cs)| Some((u16::try_from(id?).ok()?, cs))),
    );
    Ok(m)
}

/// information_schema facts for one table: MariaDB JSON, UUID, INET4 and INET6 columns, and
/// column names/signedness/labels/primary key for servers without full row metadata.
pub async fn fetch_hints(
    conn: &mut Conn,
    db: &str,
    table: &str,
    flavor: Flavor,
) -> Result<SchemaHints, mysql_async::Error> {
    let cols: Vec<(String, String, String, Option<u32>)> = conn
        .exec(
            "SELECT c.COLUMN_NAME, c.COLUMN_TYPE, c.COLUMN_KEY, co.ID \
             FROM information_schema.COLUMNS c LEFT JOIN information_schema.COLLATIONS co ON co.COLLATION_NAME = c.COLLATION_NAME \
             WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION",
            (db, table),
        )
        .await?;
    let mut hints = SchemaHints::default();
    let mut hcols = Vec::with_capacity(cols.len());
    for (name, ctype, key, coll) in &cols {
        let lt = ctype.to_ascii_lowercase();
        let labels = if lt.starts_with("enum(") || lt.starts_with("set(") {
            Some(parse_labels(ctype))
        } else {
            None
        };
        hcols.push(HintColumn {
            name: name.clone(),
            unsigned: lt.contains("unsigned"),
            labels,
            collation_id: coll.and_then(|c| u16::try_from(c).ok()),
        });
        if key == "PRI" {
            hints.primary_key.push(name.clone());
        }
        // MariaDB UUID/INET4/INET6: COLUMN_TYPE is the bare type name
        if flavor == Flavor::MariaDb {
            if let Some(t) = SpecialType::from_type_name(lt.trim()) {
                hints.special_types.insert(name.clone(), t);
            }
        }
    }
    hints.columns = Some(hcols);
    let engine: Option<(Option<String>, Option<String>)> = conn
        .exec_first(
            "SELECT t.ENGINE, e.TRANSACTIONS FROM information_schema.TABLES t \
             LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
             WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ?",
            (db, table),
        )
        .await?;
    if let Some((Some(_), tx)) = engine {
        hints.transactional = tx.map(|t| t.eq_ignore_ascii_case("YES"));
    }
    if flavor == Flavor::MariaDb {
        let checks: Vec<(String, String)> = conn
            .exec(
                "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
                (db, table),
            )
            .await?;
        for (_, clause) in checks {
            let c = clause.trim();
            if let Some(rest) = c.strip_prefix("json_valid(`") {
                if let Some(col) = rest.strip_suffix("`)") {
                    hints.json_columns.insert(col.replace("``", "`"));
                }
            }
        }
    }
    Ok(hints)
}

/// `enum('a','b''c')` → ["a", "b'c"]
pub fn parse_labels(ctype: &str) -> Vec<String> {
    let inner = ctype.split_once('(').map(|x| x.1).unwrap_or("");
    let inner = inner.strip_suffix(')').unwrap_or(inner);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_q, c) {
            (false, '\'') => in_q = true,
            (true, '\'') if chars.peek() == Some(&'\'') => {
                cur.push('\'');
                chars.next();
            }
            (true, '\'') => {
                in_q = false;
                out.push(std::mem::take(&mut cur));
            }
            (true, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (true, c) => cur.push(c),
            _ => {}
        }
    }
    out
}

/// Every user table's columns, in order: what sink checks verify their templates against.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub tables: std::collections::BTreeMap<(String, String), Vec<String>>,
}

/// Reads the [`Catalog`] (system schemas left out).
pub async fn load_catalog(conn: &mut Conn) -> Result<Catalog, mysql_async::Error> {
    let cols: Vec<(String, String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA NOT IN ('mysql','sys','information_schema','performance_schema') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
        )
        .await?;
    let mut c = Catalog::default();
    for (db, t, col) in cols {
        c.tables.entry((db, t)).or_default().push(col);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            parse_labels("enum('a','b''c','d,e')"),
            vec!["a", "b'c", "d,e"]
        );
        assert_eq!(parse_labels("set('x')"), vec!["x"]);
    }
}
