//! `include` / `exclude` lists of `db.table` globs (`*` any run, `?` one character).

/// Schemas never streamed unless included by an explicit, wildcard-free database name.
pub const SYSTEM_SCHEMAS: &[&str] = &["mysql", "sys", "information_schema", "performance_schema"];

#[derive(Debug, Clone)]
pub struct TableFilter {
    include: Option<Vec<TablePattern>>,
    exclude: Vec<TablePattern>,
}

/// One `db.table` glob.
#[derive(Debug, Clone)]
pub struct TablePattern {
    db: String,
    table: String,
}

impl TablePattern {
    pub fn parse(s: &str) -> Result<TablePattern, String> {
        let (db, table) = s.split_once('.').ok_or_else(|| {
            format!("table pattern {s:?} must be db.table (globs allowed, e.g. \"shop.*\")")
        })?;
        if db.is_empty() || table.is_empty() || table.contains('.') {
            return Err(format!(
                "table pattern {s:?} must be db.table (globs allowed, e.g. \"shop.*\")"
            ));
        }
        Ok(TablePattern {
            db: db.to_string(),
            table: table.to_string(),
        })
    }

    pub fn matches(&self, db: &str, table: &str) -> bool {
        glob_match(self.db.as_bytes(), db.as_bytes())
            && glob_match(self.table.as_bytes(), table.as_bytes())
    }
}

/// Iterative glob matching with `*` and `?` (no backtracking blow-up).
pub fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

impl TableFilter {
    pub fn new(include: Option<&[String]>, exclude: &[String]) -> Result<TableFilter, String> {
        let include = match include {
            Some(list) => Some(
                list.iter()
                    .map(|s| TablePattern::parse(s).map_err(|e| format!("source.include: {e}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let exclude = exclude
            .iter()
            .map(|s| TablePattern::parse(s).map_err(|e| format!("source.exclude: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TableFilter { include, exclude })
    }

    /// Adds an exclusion (e.g. the checkpoint table, so the daemon never feeds on its own writes).
    pub fn exclude_also(&mut self, db: &str, table: &str) {
        self.exclude.push(TablePattern {
            db: db.to_string(),
            table: table.to_string(),
        });
    }

    pub fn matches(&self, db: &str, table: &str) -> bool {
        if self.exclude.iter().any(|g| g.matches(db, table)) {
            return false;
        }
        match &self.include {
            Some(inc) => inc.iter().any(|g| {
                g.matches(db, table)
                    && (!SYSTEM_SCHEMAS.contains(&db) || !g.db.contains(['*', '?']))
            }),
            None => !SYSTEM_SCHEMAS.contains(&db),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"shop.*", b"shop.users"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(b"audit_?", b"audit_1"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn include_exclude_and_system_schemas() {
        let f = TableFilter::new(
            Some(&["shop.*".into(), "*.t".into()]),
            &["shop.audit_*".into()],
        )
        .unwrap();
        assert!(f.matches("shop", "users"));
        assert!(!f.matches("shop", "audit_log"));
        assert!(f.matches("other", "t"));
        assert!(!f.matches("mysql", "t"));
        assert!(!f.matches("other", "u"));
        let all = TableFilter::new(None, &[]).unwrap();
        assert!(all.matches("x", "y") && !all.matches("mysql", "user"));
        let sys = TableFilter::new(Some(&["mysql.user".into()]), &[]).unwrap();
        assert!(sys.matches("mysql", "user"));
        assert!(TableFilter::new(Some(&["nodot".into()]), &[]).is_err());
    }
}
