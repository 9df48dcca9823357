//! What binlogd reads from SQL statement text in QUERY events: the target table of a
//! statement-based DML, XA transaction ids, savepoints, and the tables whose contents a
//! statement replaces without row events (TRUNCATE, DROP, partition operations, RENAME).
//! Never guesses: `None` means "not sure", and each caller says what that means for it.

use std::fmt;

/// The first word of a statement, upper-cased, after leading comments.
pub fn verb(sql: &str) -> String {
    Tokens { s: sql }.upper()
}

/// An XA transaction id (`gtrid`, `bqual`, `formatID`), as in `XA START 'g','b',1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xid {
    pub format_id: u64,
    pub gtrid: Vec<u8>,
    pub bqual: Vec<u8>,
}

impl fmt::Display for Xid {
    /// The server's own notation: `X'6731',X'',1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        write!(
            f,
            "X'{}',X'{}',{}",
            hex(&self.gtrid),
            hex(&self.bqual),
            self.format_id
        )
    }
}

impl Xid {
    /// The xid of an XA_PREPARE_LOG event body: one_phase (1), formatID (4), gtrid length (4),
    /// bqual length (4), data. Returns (one_phase, xid).
    pub fn from_prepare_event(d: &[u8]) -> Result<(bool, Xid), String> {
        let u32_at = |p: usize| -> Result<u32, String> {
            d.get(p..p + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| format!("XA_PREPARE event of {} bytes is truncated", d.len()))
        };
        let one_phase = *d.first().ok_or("empty XA_PREPARE event")? != 0;
        let format_id = u32_at(1)? as i32;
        let gl = u32_at(5)? as usize;
        let bl = u32_at(9)? as usize;
        if gl > 64 || bl > 64 {
            return Err(format!(
                "XA_PREPARE event: xid lengths {gl}/{bl} exceed 64 bytes"
            ));
        }
        let data = d
            .get(13..13 + gl + bl)
            .ok_or_else(|| format!("XA_PREPARE event of {} bytes is truncated", d.len()))?;
        Ok((
            one_phase,
            Xid {
                format_id: format_id as i64 as u64,
                gtrid: data[..gl].to_vec(),
                bqual: data[gl..].to_vec(),
            },
        ))
    }
}

/// The XA statements a binlog carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XaVerb {
    Start,
    End,
    Prepare,
    Commit,
    Rollback,
}

/// `XA START|BEGIN|END|PREPARE|COMMIT|ROLLBACK xid [ONE PHASE]…` → (verb, xid, one_phase).
pub fn parse_xa(sql: &str) -> Option<(XaVerb, Xid, bool)> {
    let mut t = Tokens { s: sql };
    if t.upper() != "XA" {
        return None;
    }
    let verb = match t.upper().as_str() {
        "START" | "BEGIN" => XaVerb::Start,
        "END" => XaVerb::End,
        "PREPARE" => XaVerb::Prepare,
        "COMMIT" => XaVerb::Commit,
        "ROLLBACK" => XaVerb::Rollback,
        _ => return None,
    };
    let gtrid = t.literal()?;
    let mut xid = Xid {
        format_id: 1,
        gtrid,
        bqual: Vec::new(),
    };
    if t.punct(',') {
        xid.bqual = t.literal()?;
        if t.punct(',') {
            let w = t.word()?;
            xid.format_id = w.parse().ok()?;
        }
    }
    let rest = t.s.to_ascii_uppercase();
    let one_phase = rest.contains("ONE") && rest.contains("PHASE");
    Some((verb, xid, one_phase))
}

/// Savepoint statements inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Savepoint {
    Set(String),
    RollbackTo(String),
    Release(String),
}

/// `SAVEPOINT s`, `ROLLBACK [WORK] TO [SAVEPOINT] s`, `RELEASE SAVEPOINT s`.
pub fn parse_savepoint(sql: &str) -> Option<Savepoint> {
    let mut t = Tokens { s: sql };
    match t.upper().as_str() {
        "SAVEPOINT" => Some(Savepoint::Set(t.ident()?)),
        "ROLLBACK" => {
            let mut w = t.upper();
            if w == "WORK" {
                w = t.upper();
            }
            if w != "TO" {
                return None;
            }
            t.skip_words(&["SAVEPOINT"]);
            Some(Savepoint::RollbackTo(t.ident()?))
        }
        "RELEASE" => {
            if t.upper() != "SAVEPOINT" {
                return None;
            }
            Some(Savepoint::Release(t.ident()?))
        }
        _ => None,
    }
}

/// A statement that changes a table's contents without row events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub db: Option<String>,
    pub table: String,
    /// What did it: `TRUNCATE`, `DROP TABLE`, `TRUNCATE PARTITION`, `DROP PARTITION`,
    /// `EXCHANGE PARTITION`, `CONVERT PARTITION`, `RENAME`, `CREATE OR REPLACE TABLE`.
    pub statement: &'static str,
}

/// The tables whose contents `sql` replaces without row events (empty: none).
pub fn contents_replaced(sql: &str) -> Vec<Replaced> {
    let mut t = Tokens { s: sql };
    let mut out = Vec::new();
    let push = |out: &mut Vec<Replaced>, (db, table): (Option<String>, String), st| {
        out.push(Replaced {
            db,
            table,
            statement: st,
        })
    };
    match t.upper().as_str() {
        "TRUNCATE" => {
            t.skip_words(&["TABLE"]);
            if let Some(n) = t.table_name() {
                push(&mut out, n, "TRUNCATE");
            }
        }
        "DROP" => {
            // DROP TEMPORARY TABLE: session tables, never in row events
            if t.upper() != "TABLE" {
                return out;
            }
            t.skip_if_exists();
            while let Some(n) = t.table_name() {
                push(&mut out, n, "DROP TABLE");
                if !t.punct(',') {
                    break;
                }
            }
        }
        "CREATE" => {
            // MariaDB's CREATE OR REPLACE TABLE drops the table it replaces
            if !(t.upper() == "OR" && t.upper() == "REPLACE") {
                return out;
            }
            if t.upper() != "TABLE" {
                return out; // TEMPORARY, VIEW, …
            }
            if let Some(n) = t.table_name() {
                push(&mut out, n, "CREATE OR REPLACE TABLE");
            }
        }
        "RENAME" => {
            if !matches!(t.upper().as_str(), "TABLE" | "TABLES") {
                return out;
            }
            t.skip_if_exists();
            while let Some(from) = t.table_name() {
                if t.upper() != "TO" {
                    break;
                }
                let Some(to) = t.table_name() else { break };
                push(&mut out, from, "RENAME");
                push(&mut out, to, "RENAME");
                if !t.punct(',') {
                    break;
                }
            }
        }
        "ALTER" => {
            t.skip_words(&["ONLINE", "IGNORE"]);
            if t.upper() != "TABLE" {
                return out;
            }
            t.skip_if_exists();
            let Some(name) = t.table_name() else {
                return out;
            };
            // scan the rest for a partition operation or a rename
            let mut prev = String::new();
            while !t.s.trim().is_empty() {
                let w = match t.word() {
                    Some(w) => w.to_ascii_uppercase(),
                    None => {
                        // skip one character of punctuation, a quoted name or a literal
                        t.skip_ws();
                        if t.s.starts_with('`') {
                            t.ident();
                        } else if t.s.starts_with(['\'', '"']) {
                            t.literal();
                        } else {
                            let mut cs = t.s.chars();
                            cs.next();
                            t.s = cs.as_str();
                        }
                        prev.clear();
                        continue;
                    }
                };
                let st = match (prev.as_str(), w.as_str()) {
                    ("TRUNCATE", "PARTITION") => Some("TRUNCATE PARTITION"),
                    ("DROP", "PARTITION") => Some("DROP PARTITION"),
                    ("CONVERT", "PARTITION") => Some("CONVERT PARTITION"),
                    ("EXCHANGE", "PARTITION") => Some("EXCHANGE PARTITION"),
                    _ => None,
                };
                if let Some(st) = st {
                    push(&mut out, name.clone(), st);
                    if st == "EXCHANGE PARTITION" {
                        // EXCHANGE PARTITION p WITH TABLE t2: t2 changes too
                        while let Some(w) = t.word() {
                            if w.eq_ignore_ascii_case("TABLE") {
                                if let Some(other) = t.table_name() {
                                    push(&mut out, other, st);
                                }
                                break;
                            }
                        }
                    }
                    return out;
                }
                if prev == "CONVERT" && w == "TABLE" {
                    // CONVERT TABLE t2 TO PARTITION p: rows move from t2 into this table
                    if let Some(other) = t.table_name() {
                        push(&mut out, other, "CONVERT PARTITION");
                    }
                    push(&mut out, name, "CONVERT PARTITION");
                    return out;
                }
                if w == "RENAME" {
                    let save = t.s;
                    let next = t.upper();
                    if next == "COLUMN" || next == "INDEX" || next == "KEY" || next == "CONSTRAINT"
                    {
                        prev = next;
                        continue;
                    }
                    if next != "TO" && next != "AS" {
                        t.s = save;
                    }
                    if let Some(to) = t.table_name() {
                        push(&mut out, name.clone(), "RENAME");
                        push(&mut out, to, "RENAME");
                    }
                    return out;
                }
                prev = w;
            }
        }
        _ => {}
    }
    out
}

/// The table a single-table DML statement writes to: `(db, table)`, from
/// `INSERT [opts] [INTO] t`, `REPLACE …`, `UPDATE [opts] t SET`, `DELETE [opts] FROM t`,
/// `LOAD DATA … INTO TABLE t`. `None` when not sure (multi-table forms, unusual syntax).
pub(crate) fn statement_target(sql: &str) -> Option<(Option<String>, String)> {
    let mut toks = Tokens { s: sql };
    let verb = toks.word()?.to_ascii_uppercase();
    let skip = [
        "LOW_PRIORITY",
        "DELAYED",
        "HIGH_PRIORITY",
        "IGNORE",
        "QUICK",
        "CONCURRENT",
        "LOCAL",
    ];
    match verb.as_str() {
        "INSERT" | "REPLACE" => {
            toks.skip_words(&skip);
            toks.skip_words(&["INTO"]);
        }
        "UPDATE" => toks.skip_words(&skip),
        "DELETE" => {
            toks.skip_words(&skip);
            if !toks.word()?.eq_ignore_ascii_case("FROM") {
                return None; // multi-table DELETE t1, t2 FROM …
            }
        }
        "LOAD" => {
            // LOAD DATA|XML … INTO TABLE t
            let up = sql.to_ascii_uppercase();
            let at = up.find(" INTO TABLE ")? + " INTO TABLE ".len();
            toks = Tokens { s: &sql[at..] };
        }
        _ => return None,
    }
    let first = toks.ident()?;
    let name = if toks.s.starts_with('.') {
        toks.s = &toks.s[1..];
        (Some(first), toks.ident()?)
    } else {
        (None, first)
    };
    // a comma right after the table: a multi-table UPDATE
    if verb == "UPDATE" && toks.s.trim_start().starts_with(',') {
        return None;
    }
    Some(name)
}

struct Tokens<'a> {
    s: &'a str,
}

impl<'a> Tokens<'a> {
    /// Skips whitespace and comments (`/* … */`, `-- …`, `# …`).
    fn skip_ws(&mut self) {
        loop {
            self.s = self.s.trim_start();
            if let Some(rest) = self.s.strip_prefix("/*") {
                self.s = rest.find("*/").map(|i| &rest[i + 2..]).unwrap_or("");
            } else if self.s.starts_with("-- ") || self.s.starts_with('#') {
                self.s = self.s.find('\n').map(|i| &self.s[i + 1..]).unwrap_or("");
            } else {
                return;
            }
        }
    }

    /// Consumes `c` (after whitespace/comments) when it comes next.
    fn punct(&mut self, c: char) -> bool {
        self.skip_ws();
        match self.s.strip_prefix(c) {
            Some(rest) => {
                self.s = rest;
                true
            }
            None => false,
        }
    }

    /// A possibly qualified table name `db.t` / `` `db`.`t` `` / `t`.
    fn table_name(&mut self) -> Option<(Option<String>, String)> {
        let first = self.ident()?;
        self.skip_ws();
        if let Some(rest) = self.s.strip_prefix('.') {
            self.s = rest;
            Some((Some(first), self.ident()?))
        } else {
            Some((None, first))
        }
    }

    /// Skips `IF EXISTS` when it comes next.
    fn skip_if_exists(&mut self) {
        let save = self.s;
        if !(self.upper() == "IF" && self.upper() == "EXISTS") {
            self.s = save;
        }
    }

    /// The next word, upper-cased (empty at the end).
    fn upper(&mut self) -> String {
        self.word()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default()
    }

    /// A string literal as bytes: `'…'`, `"…"`, `X'hex'`, `0xhex`, with an optional
    /// `_charset` introducer.
    fn literal(&mut self) -> Option<Vec<u8>> {
        self.skip_ws();
        if self.s.starts_with('_') {
            let end = self.s.find(['\'', '"', 'X', 'x']).filter(|&e| e > 1)?;
            self.s = &self.s[end..];
        }
        let hex = |h: &str| -> Option<Vec<u8>> {
            if !h.len().is_multiple_of(2) {
                return None;
            }
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                .collect()
        };
        if let Some(rest) = self
            .s
            .strip_prefix("X'")
            .or_else(|| self.s.strip_prefix("x'"))
        {
            let end = rest.find('\'')?;
            self.s = &rest[end + 1..];
            return hex(&rest[..end]);
        }
        if let Some(rest) = self.s.strip_prefix("0x") {
            let end = rest
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(rest.len());
            self.s = &rest[end..];
            return hex(&rest[..end]);
        }
        let q = self.s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let mut out = Vec::new();
        let rest = &self.s[1..];
        let mut it = rest.char_indices().peekable();
        while let Some((i, c)) = it.next() {
            if c == '\\' {
                if let Some((_, n)) = it.next() {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(n.encode_utf8(&mut b).as_bytes());
                }
                continue;
            }
            if c == q {
                if let Some((_, n)) = it.peek() {
                    if *n == q {
                        out.push(q as u8);
                        it.next();
                        continue;
                    }
                }
                self.s = &rest[i + 1..];
                return Some(out);
            }
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
        None
    }

    fn word(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let end = self
            .s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let (w, rest) = self.s.split_at(end);
        self.s = rest;
        Some(w)
    }

    fn skip_words(&mut self, words: &[&str]) {
        loop {
            let save = self.s;
            match self.word() {
                Some(w) if words.iter().any(|x| x.eq_ignore_ascii_case(w)) => continue,
                _ => {
                    self.s = save;
                    return;
                }
            }
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        if let Some(rest) = self.s.strip_prefix('`') {
            let mut out = String::new();
            let mut it = rest.char_indices().peekable();
            while let Some((i, c)) = it.next() {
                if c == '`' {
                    if let Some((_, '`')) = it.peek() {
                        out.push('`');
                        it.next();
                        continue;
                    }
                    self.s = &rest[i + 1..];
                    return Some(out);
                }
                out.push(c);
            }
            None
        } else {
            let end = self
                .s
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(self.s.len());
            if end == 0 {
                return None;
            }
            let (w, rest) = self.s.split_at(end);
            self.s = rest;
            Some(w.to_string())
        }
    }
}

#[cfg(test)]
mod statement_tests {
    use super::statement_target;
    use crate::decode::loggable_ddl;

    #[test]
    fn account_statements_are_not_logged() {
        for s in [
            "CREATE USER 'u'@'%' IDENTIFIED BY 'pw'",
            "ALTER USER u IDENTIFIED BY 'pw'",
            "SET PASSWORD FOR u = PASSWORD('pw')",
            "GRANT ALL ON *.* TO u IDENTIFIED BY 'pw'",
            "create or replace user u identified by 'pw'",
        ] {
            let l = loggable_ddl(s);
            assert!(!l.contains("pw"), "{l}");
        }
        assert_eq!(
            loggable_ddl("ALTER TABLE t ADD c INT"),
            "ALTER TABLE t ADD c INT"
        );
    }

    #[test]
    fn targets() {
        let t = |s: &str| statement_target(s);
        assert_eq!(
            t("INSERT INTO `shop`.t VALUES (1)"),
            Some((Some("shop".into()), "t".into()))
        );
        assert_eq!(
            t("insert ignore into t (a) values (1)"),
            Some((None, "t".into()))
        );
        assert_eq!(
            t("REPLACE LOW_PRIORITY `a``b` SET x=1"),
            Some((None, "a`b".into()))
        );
        assert_eq!(
            t("UPDATE db.t SET v = 1"),
            Some((Some("db".into()), "t".into()))
        );
        assert_eq!(t("UPDATE t1, t2 SET t1.a = t2.a"), None);
        assert_eq!(t("DELETE FROM t WHERE id = 1"), Some((None, "t".into())));
        assert_eq!(t("DELETE t1 FROM t1 JOIN t2"), None);
        assert_eq!(
            t("LOAD DATA INFILE 'x' INTO TABLE s.t"),
            Some((Some("s".into()), "t".into()))
        );
    }
}

#[cfg(test)]
mod edge_statement_tests {
    use super::*;

    fn names(sql: &str) -> Vec<(Option<String>, String, &'static str)> {
        contents_replaced(sql)
            .into_iter()
            .map(|r| (r.db, r.table, r.statement))
            .collect()
    }

    #[test]
    fn replaced_tables() {
        let n = |d: Option<&str>, t: &str, s: &'static str| (d.map(String::from), t.to_string(), s);
        assert_eq!(
            names("TRUNCATE TABLE `a`.`t`"),
            vec![n(Some("a"), "t", "TRUNCATE")]
        );
        assert_eq!(names("/* x */ truncate t"), vec![n(None, "t", "TRUNCATE")]);
        assert_eq!(
            names("DROP TABLE IF EXISTS `t1`,`db`.`t2` /* generated by server */"),
            vec![
                n(None, "t1", "DROP TABLE"),
                n(Some("db"), "t2", "DROP TABLE")
            ]
        );
        assert!(names("DROP TEMPORARY TABLE IF EXISTS t").is_empty());
        assert!(names("DROP DATABASE d").is_empty());
        assert_eq!(
            names("RENAME TABLE t TO t_old, t_new TO t"),
            vec![
                n(None, "t", "RENAME"),
                n(None, "t_old", "RENAME"),
                n(None, "t_new", "RENAME"),
                n(None, "t", "RENAME")
            ]
        );
        assert_eq!(
            names("ALTER TABLE p TRUNCATE PARTITION p0, p1"),
            vec![n(None, "p", "TRUNCATE PARTITION")]
        );
        assert_eq!(
            names("ALTER TABLE `d`.`p` DROP PARTITION p0"),
            vec![n(Some("d"), "p", "DROP PARTITION")]
        );
        assert_eq!(
            names("ALTER TABLE p EXCHANGE PARTITION p0 WITH TABLE x WITHOUT VALIDATION"),
            vec![
                n(None, "p", "EXCHANGE PARTITION"),
                n(None, "x", "EXCHANGE PARTITION")
            ]
        );
        assert_eq!(
            names("ALTER TABLE p CONVERT PARTITION p0 TO TABLE x"),
            vec![n(None, "p", "CONVERT PARTITION")]
        );
        assert_eq!(
            names("ALTER TABLE p CONVERT TABLE x TO PARTITION p9 VALUES LESS THAN (10)"),
            vec![
                n(None, "x", "CONVERT PARTITION"),
                n(None, "p", "CONVERT PARTITION")
            ]
        );
        assert_eq!(
            names("ALTER TABLE a RENAME TO b"),
            vec![n(None, "a", "RENAME"), n(None, "b", "RENAME")]
        );
        assert!(names("ALTER TABLE a RENAME COLUMN x TO y").is_empty());
        assert!(names("ALTER TABLE a DROP COLUMN partition_x, ADD COLUMN b INT").is_empty());
        assert!(
            names("ALTER TABLE a ADD COLUMN c VARCHAR(10) DEFAULT 'DROP PARTITION'").is_empty()
        );
        assert!(
            names("ALTER TABLE a ADD PARTITION (PARTITION p3 VALUES LESS THAN (30))").is_empty()
        );
        assert!(names("CREATE TABLE t (a INT)").is_empty());
        assert_eq!(
            names("CREATE OR REPLACE TABLE `d`.t (a INT)"),
            vec![n(Some("d"), "t", "CREATE OR REPLACE TABLE")]
        );
        assert!(names("CREATE OR REPLACE TEMPORARY TABLE t (a INT)").is_empty());
        assert!(names("CREATE OR REPLACE VIEW v AS SELECT 1").is_empty());
    }

    #[test]
    fn xa_and_savepoints() {
        let (v, x, one) = parse_xa("XA START X'78',X'',1").unwrap();
        assert_eq!((v, one), (XaVerb::Start, false));
        assert_eq!(
            x,
            Xid {
                format_id: 1,
                gtrid: b"x".to_vec(),
                bqual: vec![]
            }
        );
        let (v, y, _) = parse_xa("XA COMMIT 'x'").unwrap();
        assert_eq!((v, &y), (XaVerb::Commit, &x));
        let (v, y, one) = parse_xa("xa commit 'x','',1 one phase").unwrap();
        assert_eq!((v, &y, one), (XaVerb::Commit, &x, true));
        let (_, y, _) = parse_xa("XA ROLLBACK X'6731',X'62',7").unwrap();
        assert_eq!(y.to_string(), "X'6731',X'62',7");
        assert!(parse_xa("XA RECOVER").is_none());
        let mut ev = vec![0u8];
        ev.extend(1u32.to_le_bytes());
        ev.extend(1u32.to_le_bytes());
        ev.extend(0u32.to_le_bytes());
        ev.push(b'x');
        assert_eq!(Xid::from_prepare_event(&ev).unwrap(), (false, x));
        assert!(Xid::from_prepare_event(&ev[..10]).is_err());
        assert_eq!(
            parse_savepoint("SAVEPOINT `s`"),
            Some(Savepoint::Set("s".into()))
        );
        assert_eq!(
            parse_savepoint("ROLLBACK TO `s`"),
            Some(Savepoint::RollbackTo("s".into()))
        );
        assert_eq!(
            parse_savepoint("rollback work to savepoint s1"),
            Some(Savepoint::RollbackTo("s1".into()))
        );
        assert_eq!(
            parse_savepoint("RELEASE SAVEPOINT s"),
            Some(Savepoint::Release("s".into()))
        );
        assert_eq!(parse_savepoint("ROLLBACK"), None);
        assert_eq!(verb("/* c */ rollback"), "ROLLBACK");
    }
}
