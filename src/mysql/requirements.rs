//! What binlogd requires of the server: settings, grants, a free replica id, and the
//! foreign-key actions MariaDB does not log.

use mysql_async::prelude::*;
use mysql_async::Conn;

use super::server::ServerInfo;
use crate::binlog::Flavor;
use crate::finding::{Finding, Severity};

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

/// Checks the grants binlogd needs: REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR), SELECT
/// on all tables or on databases (`checkpoint_schema` aside: information_schema hides a table
/// the user may not read, so a snapshot would leave it out unnoticed).
pub async fn check_privileges(
    conn: &mut Conn,
    checkpoint_schema: &str,
) -> Result<Vec<Finding>, mysql_async::Error> {
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
    if has("SELECT") && !select_beyond_tables(&grants, checkpoint_schema) {
        // a warning: a least-privilege user whose `include` lists only the tables it may read
        // is a valid setup
        f.push(Finding {
            severity: Severity::Warning,
            message: "the user has SELECT only on single tables (or only on the checkpoint schema): \
                      information_schema hides every other table, so an initial snapshot leaves out \
                      every streamed table it may not read, and the decoder lacks their column hints. \
                      Fix: GRANT SELECT ON *.* (or ON db.* for each streamed database), or make sure \
                      source.include lists only tables it may read"
                .into(),
        });
    }
    Ok(f)
}

/// Whether one of `grants` (SHOW GRANTS lines) gives SELECT on `*.*` or on a database other
/// than `checkpoint_schema`.
fn select_beyond_tables(grants: &[String], checkpoint_schema: &str) -> bool {
    let own = format!("`{}`.*", checkpoint_schema.replace('`', "``")).to_ascii_uppercase();
    grants.iter().any(|g| {
        let u = g.to_ascii_uppercase();
        let Some((privs, rest)) = u.split_once(" ON ") else {
            return false;
        };
        let object = rest.split(" TO ").next().unwrap_or("").trim();
        let select = privs.contains("SELECT") || privs.contains("ALL PRIVILEGES");
        let system = [
            "`MYSQL`.*",
            "`SYS`.*",
            "`PERFORMANCE_SCHEMA`.*",
            "`INFORMATION_SCHEMA`.*",
        ];
        select
            && !u.starts_with("REVOKE")
            && (object == "*.*"
                || (object.ends_with(".*") && object != own && !system.contains(&object)))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_on_tables_only_is_not_enough() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = |v: &[&str]| select_beyond_tables(&g(v), "binlogd");
        assert!(ok(&["GRANT REPLICATION SLAVE, SELECT ON *.* TO `u`@`%`"]));
        assert!(ok(&[
            "GRANT ALL PRIVILEGES ON *.* TO `root`@`%` WITH GRANT OPTION"
        ]));
        assert!(ok(&[
            "GRANT REPLICATION SLAVE ON *.* TO `u`@`%`",
            "GRANT SELECT ON `shop`.* TO `u`@`%`"
        ]));
        assert!(!ok(&[
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `u`@`%`",
            "GRANT CREATE, SELECT, INSERT ON `binlogd`.* TO `u`@`%`",
            "GRANT SELECT ON `shop`.`t1` TO `u`@`%`"
        ]));
        assert!(!ok(&["GRANT USAGE ON *.* TO `u`@`%`"]));
        assert!(!ok(&[
            "GRANT SELECT ON `performance_schema`.* TO `u`@`%`",
            "GRANT SELECT ON `shop`.`t1` TO `u`@`%`"
        ]));
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
}
