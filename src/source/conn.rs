//! Connections to the source server: options from the config (URL, password, TLS), what the
//! server is and how it is configured, and the information_schema look-ups the decoder needs.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};
use std::time::Duration;

use crate::config::{Config, Secret, TlsConfig, TlsMode};
use crate::decode::charset::CollationMap;
use crate::decode::table::{HintColumn, SchemaHints, SpecialType};
use crate::decode::Flavor;
use crate::source::position::{BinlogCoord, GtidSet, MySqlGtidSet};
use crate::source::SourceError;

/// Validates a `mysql://` URL. The error never contains the password.
pub fn parse_url(url: &str) -> Result<Opts, String> {
    if !url.starts_with("mysql://") {
        return Err(format!(
            "{:?} is not a mysql:// URL (expected mysql://user:password@host:port)",
            redact_url(url)
        ));
    }
    Opts::from_url(url).map_err(|e| {
        let msg = e.to_string();
        let msg = match url_password(url) {
            Some(p) if !p.is_empty() => msg.replace(p, "***"),
            _ => msg,
        };
        format!("{:?} is not a valid URL: {msg}", redact_url(url))
    })
}

fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let auth = rest.split_once('@')?.0;
    auth.split_once(':').map(|(_, p)| p)
}

/// The URL with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url_password(url) {
        Some(p) if !p.is_empty() => url.replacen(&format!(":{p}@"), ":***@", 1),
        _ => url.to_string(),
    }
}

/// Options for a plain (non-replication) connection from a URL and optional password.
pub fn plain_opts(url: &Secret, password: Option<&Secret>) -> Result<Opts, String> {
    let base = parse_url(url.expose())?;
    let mut b = OptsBuilder::from_opts(base)
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(10)));
    if let Some(p) = password {
        b = b.pass(Some(p.expose().to_string()));
    }
    Ok(b.into())
}

/// Connection options for the source (and the checkpoint server when it is the source).
pub fn opts_for(url: &Secret, password: Option<&Secret>, cfg: &Config) -> Result<Opts, String> {
    let base = parse_url(url.expose())?;
    let mut b = OptsBuilder::from_opts(base)
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .stmt_cache_size(0)
        .wait_timeout(Some(28_800));
    if let Some(p) = password {
        b = b.pass(Some(p.expose().to_string()));
    }
    Ok(with_tls(b, &cfg.source.tls, "source.tls")?.into())
}

/// Options for a plain connection (the checkpoint server's own URL) with TLS settings `tls`
/// (`key` names them in errors).
pub fn plain_opts_tls(
    url: &Secret,
    password: Option<&Secret>,
    tls: &TlsConfig,
    key: &str,
) -> Result<Opts, String> {
    let b = OptsBuilder::from_opts(plain_opts(url, password)?);
    Ok(with_tls(b, tls, key)?.into())
}

/// Applies `tls` (the `ssl-mode` of the MySQL clients) to `b`.
fn with_tls(b: OptsBuilder, tls: &TlsConfig, key: &str) -> Result<OptsBuilder, String> {
    Ok(match tls.mode {
        TlsMode::Disabled => b,
        TlsMode::Required => b.ssl_opts(Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        )),
        TlsMode::VerifyCa | TlsMode::VerifyIdentity => {
            let ca = tls
                .ca_file
                .clone()
                .ok_or_else(|| format!("{key}.ca_file is required for this {key}.mode"))?;
            if !ca.exists() {
                return Err(format!("{key}.ca_file {} does not exist", ca.display()));
            }
            b.ssl_opts(Some(
                SslOpts::default()
                    .with_root_certs(vec![ca.into()])
                    .with_danger_skip_domain_validation(tls.mode == TlsMode::VerifyCa),
            ))
        }
    })
}

/// A TLS problem in a connection attempt: the handshake failed (certificate not signed by the
/// CA, host name not in the certificate, no TLS on the server) or the server refuses plain
/// connections. `None` for any other error.
pub fn tls_problem(e: &mysql_async::Error) -> Option<TlsProblem> {
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Tls(t)) => {
            Some(TlsProblem::Handshake(t.to_string()))
        }
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            Some(TlsProblem::NoServerTls)
        }
        // MySQL ER_SECURE_TRANSPORT_REQUIRED (3159); MariaDB uses 1105 with the same text
        mysql_async::Error::Server(s)
            if s.code == 3159 || s.message.contains("insecure transport") =>
        {
            Some(TlsProblem::Required(s.message.clone()))
        }
        _ => None,
    }
}

/// For "access denied" on a plain (non-TLS) connection: MariaDB answers a client without TLS
/// that way when it requires TLS (`require_secure_transport`, an account with `REQUIRE SSL`).
pub fn plain_auth_hint(opts: &Opts, key: &str) -> &'static str {
    if opts.ssl_opts().is_some() {
        return "";
    }
    match key {
        "source.tls" => "; if the server requires TLS (require_secure_transport or REQUIRE SSL: MariaDB then also answers \"access denied\"), set source.tls.mode and source.tls.ca_file",
        _ => "; if the server requires TLS (require_secure_transport or REQUIRE SSL: MariaDB then also answers \"access denied\"), set checkpoint.tls (or source.tls)",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    Handshake(String),
    NoServerTls,
    Required(String),
}

impl TlsProblem {
    /// What went wrong and the fix; `key` names the TLS settings (`source.tls`, …).
    pub fn describe(&self, key: &str) -> String {
        match self {
            TlsProblem::Handshake(m) => format!(
                "TLS handshake failed, the server certificate was not accepted ({m}). Fix: \
                 {key}.ca_file must be the CA certificate that signed the server's certificate; \
                 with {key}.mode = \"verify_identity\" the host in the URL must be a name or IP \
                 address the certificate lists (or use \"verify_ca\")"
            ),
            TlsProblem::NoServerTls => format!(
                "the server does not support TLS but {key}.mode asks for it. Fix: enable TLS on \
                 the server (ssl_cert, ssl_key, ssl_ca) or set {key}.mode = \"disabled\""
            ),
            TlsProblem::Required(m) => format!(
                "the server requires TLS ({m}). Fix: set {key}.mode = \"verify_identity\" (or \
                 \"verify_ca\"/\"required\") with {key}.ca_file"
            ),
        }
    }
}

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
            mysql_async::Error::Server(s) if s.code == 1193 => Ok(None), // unknown variable
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The server (or a sink) is not set up for binlogd: exit code 1.
    Error,
    /// A mistake in the config that only the server can reveal (e.g. a key template naming a
    /// column the table does not have): exit code 2, like any other config mistake.
    ConfigError,
    Warning,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

/// Server settings binlogd requires (errors) or recommends (warnings), each with the fix.
pub fn check_settings(info: &ServerInfo) -> Vec<Finding> {
    let mut f = Vec::new();
    let mut err = |m: String| {
        f.push(Finding {
            severity: Severity::Error,
            message: m,
        })
    };
    if !info.log_bin {
        err("binary logging is off; start the server with log_bin (e.g. log_bin=binlog) and a server_id".into());
    }
    if info.binlog_format != "ROW" {
        err(format!(
            "binlog_format is {}; set binlog_format=ROW (SET GLOBAL binlog_format=ROW and in my.cnf): other formats do not log rows",
            info.binlog_format
        ));
    }
    if info.binlog_row_image != "FULL" {
        err(format!(
            "binlog_row_image is {}; set binlog_row_image=FULL so every event carries whole rows (before and after images)",
            info.binlog_row_image
        ));
    }
    let mut warn = Vec::new();
    if info.binlog_row_metadata != "FULL" {
        warn.push(format!(
            "binlog_row_metadata is {}; set binlog_row_metadata=FULL (column names, primary keys and ENUM/SET labels then come \
             with each event; without it binlogd falls back to information_schema, which is wrong across schema changes)",
            if info.binlog_row_metadata.is_empty() { "unsupported" } else { &info.binlog_row_metadata }
        ));
    }
    if info.flavor == Flavor::MySql && info.gtid_mode.as_deref() != Some("ON") {
        warn.push(format!(
            "gtid_mode is {}; set gtid_mode=ON and enforce_gtid_consistency=ON so positions survive a failover",
            info.gtid_mode.as_deref().unwrap_or("unknown")
        ));
    }
    if info.server_id == 0 {
        f.push(Finding {
            severity: Severity::Error,
            message: "the server's server_id is 0; give it a non-zero server_id".into(),
        });
    }
    for m in warn {
        f.push(Finding {
            severity: Severity::Warning,
            message: m,
        });
    }
    f
}

/// Checks the grants binlogd needs: REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR), SELECT.
pub async fn check_privileges(conn: &mut Conn) -> Result<Vec<Finding>, mysql_async::Error> {
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let all = grants.join("\n").to_ascii_uppercase();
    let has = |p: &str| all.contains("ALL PRIVILEGES ON *.*") || all.contains(p);
    // A role grant has no ON clause; what the role grants is not listed here, so a privilege
    // that seems missing may come through it: then only warn.
    let roles = grants
        .iter()
        .any(|g| !g.to_ascii_uppercase().contains(" ON "));
    let mut f = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            f.push(Finding {
                severity: if roles { Severity::Warning } else { Severity::Error },
                message: format!(
                    "the user lacks {what}{}; GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO the binlogd user",
                    if roles { " unless one of its roles grants it" } else { "" }
                ),
            });
        }
    };
    need(
        has("REPLICATION SLAVE"),
        "REPLICATION SLAVE (needed to read the binlog)",
    );
    need(
        has("REPLICATION CLIENT") || has("BINLOG MONITOR") || has("SUPER"),
        "REPLICATION CLIENT (needed for SHOW BINARY LOGS / binlog status)",
    );
    need(
        has("SELECT"),
        "SELECT (needed for information_schema look-ups and the initial position)",
    );
    Ok(f)
}

/// Replicas registered with the server whose server_id equals ours.
pub async fn replica_id_clash(
    conn: &mut Conn,
    info: &ServerInfo,
    our_id: u32,
) -> Result<Option<String>, mysql_async::Error> {
    if info.server_id == our_id {
        return Ok(Some(format!(
            "source.server_id {our_id} equals the source server's own server_id; pick another"
        )));
    }
    let q = match info.flavor {
        Flavor::MySql => "SHOW REPLICAS",
        Flavor::MariaDb => "SHOW SLAVE HOSTS",
    };
    let rows: Vec<mysql_async::Row> = match conn.query(q).await {
        Ok(r) => r,
        Err(mysql_async::Error::Server(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    for r in rows {
        let id: Option<u32> = r.get::<Option<u32>, _>(0).flatten();
        if id == Some(our_id) {
            return Ok(Some(format!(
                "another replica with server_id {our_id} is connected to the server; every binlogd (and every replica) needs its own source.server_id"
            )));
        }
    }
    Ok(None)
}

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

/// The server's current binlog end and GTID state (start = "latest").
pub async fn current_position(
    conn: &mut Conn,
    flavor: Flavor,
) -> Result<(BinlogCoord, Option<GtidSet>), SourceError> {
    let q = match flavor {
        Flavor::MySql => "SHOW BINARY LOG STATUS",
        Flavor::MariaDb => "SHOW MASTER STATUS",
    };
    let row: Option<mysql_async::Row> = conn.query_first(q).await?;
    let row = row.ok_or_else(|| {
        SourceError::Config("the server reports no binlog status: is log_bin on?".into())
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    let coord = BinlogCoord { file, pos };
    let gtid = match flavor {
        Flavor::MySql => {
            let s: Option<String> = row.get::<Option<String>, _>(4).flatten();
            match s {
                Some(s) => Some(GtidSet::MySql(
                    s.parse::<MySqlGtidSet>().map_err(SourceError::Config)?,
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
                        Err(SourceError::Config(format!(
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
) -> Result<(BinlogCoord, Option<u64>), SourceError> {
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

/// MariaDB does not write the changes that foreign-key actions (ON DELETE/UPDATE CASCADE or
/// SET NULL) make to child tables into the binlog: one warning per streamed child table.
pub async fn fk_cascade_findings(
    conn: &mut Conn,
    flavor: Flavor,
    filter: &crate::filter::TableFilter,
) -> Result<Vec<Finding>, mysql_async::Error> {
    if flavor != Flavor::MariaDb {
        return Ok(Vec::new());
    }
    // REFERENTIAL_CONSTRAINTS (the ON DELETE/UPDATE rules) is empty for a user with SELECT
    // only; KEY_COLUMN_USAGE lists the child tables, SHOW CREATE TABLE their rules.
    let children: Vec<(String, String)> = conn
        .query(
            "SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE REFERENCED_TABLE_NAME IS NOT NULL ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await?;
    let mut out = Vec::new();
    for (db, table) in children {
        if !filter.matches(&db, &table) {
            continue;
        }
        let ddl: Option<(String, String)> = conn
            .query_first(format!(
                "SHOW CREATE TABLE `{}`.`{}`",
                db.replace('`', "``"),
                table.replace('`', "``")
            ))
            .await?;
        let Some((_, ddl)) = ddl else { continue };
        for (name, parent, actions) in cascading_foreign_keys(&ddl) {
            out.push(Finding {
                severity: Severity::Warning,
                message: format!(
                    "streamed table {db}.{table} has foreign key {name} ({}) referencing {parent}: MariaDB does not write \
                     the changes these actions make to {db}.{table} into the binlog, so they will not appear as events. \
                     Fix: have the application change {db}.{table} itself (or use ON DELETE RESTRICT), or re-read it after \
                     parent changes",
                    actions.join(", ")
                ),
            });
        }
    }
    Ok(out)
}

/// `CONSTRAINT `n` FOREIGN KEY (…) REFERENCES `p` (…) ON DELETE CASCADE …` lines of a
/// SHOW CREATE TABLE with CASCADE or SET NULL actions: (name, parent, actions).
fn cascading_foreign_keys(ddl: &str) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for line in ddl.lines() {
        let l = line.trim();
        let Some(rest) = l.strip_prefix("CONSTRAINT ") else {
            continue;
        };
        let Some(refs) = rest.find(" REFERENCES ") else {
            continue;
        };
        let name = rest
            .split(" FOREIGN KEY")
            .next()
            .unwrap_or("")
            .trim_matches('`')
            .replace("``", "`");
        let after = &rest[refs + " REFERENCES ".len()..];
        let parent = after.split(" (").next().unwrap_or("").replace('`', "");
        let mut actions = Vec::new();
        for on in ["ON DELETE", "ON UPDATE"] {
            if let Some(i) = after.find(on) {
                let what = &after[i + on.len()..];
                for a in ["CASCADE", "SET NULL", "SET DEFAULT"] {
                    if what.trim_start().starts_with(a) {
                        actions.push(format!("{on} {a}"));
                    }
                }
            }
        }
        if !actions.is_empty() {
            out.push((name, parent, actions));
        }
    }
    out
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
fn parse_labels(ctype: &str) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_redaction() {
        assert_eq!(redact_url("mysql://u:p4ss@h:1"), "mysql://u:***@h:1");
        let e = parse_url("postgres://u:p4ss@h").unwrap_err();
        assert!(!e.contains("p4ss"), "{e}");
        assert!(parse_url("mysql://u:p4ss@127.0.0.1:3306").is_ok());
    }

    #[test]
    fn foreign_key_actions() {
        let ddl = "CREATE TABLE `c` (\n  `id` int(11) NOT NULL,\n  CONSTRAINT `c_p` FOREIGN KEY (`pid`) REFERENCES `p` (`id`) ON DELETE CASCADE,\n  CONSTRAINT `c_q` FOREIGN KEY (`qid`) REFERENCES `d`.`q` (`id`) ON DELETE SET NULL ON UPDATE CASCADE,\n  CONSTRAINT `c_r` FOREIGN KEY (`rid`) REFERENCES `r` (`id`)\n) ENGINE=InnoDB";
        assert_eq!(
            cascading_foreign_keys(ddl),
            vec![
                (
                    "c_p".to_string(),
                    "p".to_string(),
                    vec!["ON DELETE CASCADE".to_string()]
                ),
                (
                    "c_q".to_string(),
                    "d.q".to_string(),
                    vec![
                        "ON DELETE SET NULL".to_string(),
                        "ON UPDATE CASCADE".to_string()
                    ]
                ),
            ]
        );
    }

    #[test]
    fn labels() {
        assert_eq!(
            parse_labels("enum('a','b''c','d,e')"),
            vec!["a", "b'c", "d,e"]
        );
        assert_eq!(parse_labels("set('x')"), vec!["x"]);
    }
}
