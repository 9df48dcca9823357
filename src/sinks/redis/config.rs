//! `[[sinks.redis]]` configuration.

use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

use super::template::KeyTemplate;
use crate::filter::TablePattern;
use crate::units::{HumanDuration, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    pub name: String,
    /// `redis://[user:password@]host:port/db`, `rediss://…` for TLS, or a list of cluster nodes.
    pub url: RedisUrls,
    /// Redis Cluster mode. Default: on when `url` is a list of more than one node.
    #[serde(default)]
    pub cluster: Option<bool>,
    /// Overrides the URLs' password.
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify a `rediss://` server with.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub command: DeleteCommand,
    /// Keys per UNLINK/DEL command.
    #[serde(default = "default_batch_keys")]
    pub batch_keys: usize,
    /// Commands per pipeline round trip.
    #[serde(default = "default_pipeline_depth")]
    pub pipeline_depth: usize,
    /// Timeout of one round trip (connect or pipeline); a timed-out batch is retried.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_backoff_initial")]
    pub retry_backoff_initial: HumanDuration,
    #[serde(default = "default_backoff_max")]
    pub retry_backoff_max: HumanDuration,
    /// Give up (stop the daemon, position not advanced) after this many consecutive failed
    /// attempts; 0 = retry forever (deletes are idempotent).
    #[serde(default)]
    pub retry_max: u32,
    /// Default second delete for rules that don't set one.
    #[serde(default)]
    pub second_delete: Option<SecondDelete>,
    /// Replicas the application reads from: `second_delete = "after-replicas"` waits until each
    /// has applied the transaction's GTID.
    #[serde(default)]
    pub replicas: Vec<Secret>,
    /// TLS to the replicas (same keys as `[source.tls]`); default: no TLS.
    #[serde(default)]
    pub replicas_tls: crate::tls::TlsConfig,
    /// How long to wait for replicas before deleting anyway (counted in a metric).
    #[serde(default = "default_replica_wait_timeout")]
    pub replica_wait_timeout: HumanDuration,
    /// Extra pause after the replicas caught up, for readers between their read and their
    /// cache fill.
    #[serde(default = "default_replica_grace")]
    pub replica_grace: HumanDuration,
    /// Bound on second deletes waiting to be issued (keys); beyond it the sink waits
    /// (backpressure) rather than growing without bound.
    #[serde(default = "default_second_delete_queue")]
    pub second_delete_queue: usize,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `db.table` glob.
    pub table: String,
    pub keys: Vec<String>,
    #[serde(default)]
    pub second_delete: Option<SecondDelete>,
    /// Key patterns (Redis SCAN MATCH globs, e.g. `"user:*"`) deleted when the table's contents
    /// are replaced without row events (TRUNCATE, DROP TABLE, partition operations, RENAME).
    /// Key templates without `{column}` are deleted then too.
    #[serde(default)]
    pub on_truncate: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteCommand {
    #[default]
    Unlink,
    Del,
}

impl DeleteCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteCommand::Unlink => "UNLINK",
            DeleteCommand::Del => "DEL",
        }
    }
}

/// One URL or a list of cluster nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RedisUrls {
    One(Secret),
    Many(Vec<Secret>),
}

impl RedisUrls {
    pub fn list(&self) -> Vec<&Secret> {
        match self {
            RedisUrls::One(u) => vec![u],
            RedisUrls::Many(v) => v.iter().collect(),
        }
    }
}

/// When to delete a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecondDelete {
    /// A fixed delay after the first delete was confirmed.
    After(Duration),
    /// Once every configured replica applied the transaction (or the wait timed out).
    AfterReplicas,
}

impl<'de> Deserialize<'de> for SecondDelete {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "after-replicas" {
            return Ok(SecondDelete::AfterReplicas);
        }
        HumanDuration::parse(&s)
            .map(|h| SecondDelete::After(h.0))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "second_delete: {e}; use a duration like \"500ms\" or \"after-replicas\""
                ))
            })
    }
}

/// A validated rule: table pattern, parsed templates, second delete.
#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: TablePattern,
    pub table: String,
    pub keys: Vec<KeyTemplate>,
    pub second_delete: Option<SecondDelete>,
    pub on_truncate: Vec<String>,
}

impl RedisSinkConfig {
    /// The password override, from `password_file` or `password`.
    pub fn password(&self) -> Result<Option<Secret>, String> {
        match (&self.password_file, &self.password) {
            (Some(p), _) => crate::units::read_secret_file(
                p,
                &format!("sinks.redis {:?} password_file", self.name),
            )
            .map(Some),
            (None, p) => Ok(p.clone()),
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster.unwrap_or(self.url.list().len() > 1)
    }

    /// Checks everything that can be checked without a server; returns the parsed rules.
    pub fn validate(&self) -> Result<Vec<Rule>, String> {
        let at = |m: String| format!("sinks.redis {:?}: {m}", self.name);
        let urls = self.url.list();
        if urls.is_empty() {
            return Err(at("url is an empty list; give redis://host:port".into()));
        }
        if urls.len() > 1 && self.cluster == Some(false) {
            return Err(at(
                "several urls but cluster = false; give one url, or set cluster = true".into(),
            ));
        }
        for u in &urls {
            let s = u.expose();
            if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
                return Err(at(format!(
                    "url {:?} must start with redis:// or rediss://",
                    redact(s)
                )));
            }
            redis::Client::open(s).map_err(|e| at(format!("url {:?}: {e}", redact(s))))?;
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(at(
                "password and password_file are both set; keep one".into()
            ));
        }
        self.password()?;
        if self.batch_keys == 0 || self.pipeline_depth == 0 {
            return Err(at("batch_keys and pipeline_depth must be at least 1".into()));
        }
        if self.rules.is_empty() {
            return Err(at(
                "no rules; add [[sinks.redis.rules]] table = \"db.table\" keys = [\"prefix:{id}\"]"
                    .into(),
            ));
        }
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let pattern =
                TablePattern::parse(&r.table).map_err(|e| at(format!("rules[{i}]: {e}")))?;
            if r.keys.is_empty() {
                return Err(at(format!(
                    "rules[{i}] ({}): keys is empty; list at least one key template",
                    r.table
                )));
            }
            let keys = r
                .keys
                .iter()
                .map(|k| KeyTemplate::parse(k).map_err(|e| at(format!("rules[{i}]: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let second_delete = r.second_delete.or(self.second_delete);
            if second_delete == Some(SecondDelete::AfterReplicas) && self.replicas.is_empty() {
                return Err(at(format!(
                    "rules[{i}] ({}): second_delete = \"after-replicas\" needs replicas = [\"mysql://user:pass@replica:3306\", …]",
                    r.table
                )));
            }
            if let Some(p) = r.on_truncate.iter().find(|p| p.is_empty()) {
                return Err(at(format!(
                    "rules[{i}] ({}): on_truncate has an empty pattern {p:?}; give a SCAN pattern such as \"user:*\"",
                    r.table
                )));
            }
            rules.push(Rule {
                pattern,
                table: r.table.clone(),
                keys,
                second_delete,
                on_truncate: r.on_truncate.clone(),
            });
        }
        for u in &self.replicas {
            crate::mysql::opts::plain_opts_tls(
                u,
                None,
                &self.replicas_tls,
                &format!("sinks.redis {:?} replicas_tls", self.name),
            )
            .map_err(|e| at(format!("replicas: {e}")))?;
        }
        if let Some(ca) = &self.tls_ca_file {
            if self.is_cluster() {
                return Err(at("tls_ca_file is not supported in cluster mode; install the CA in the system trust store instead".into()));
            }
            if !ca.exists() {
                return Err(at(format!("tls_ca_file {} does not exist", ca.display())));
            }
        }
        Ok(rules)
    }
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn default_batch_keys() -> usize {
    1000
}
fn default_pipeline_depth() -> usize {
    8
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_backoff_initial() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_backoff_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_replica_wait_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_replica_grace() -> HumanDuration {
    HumanDuration(Duration::from_millis(50))
}
fn default_second_delete_queue() -> usize {
    1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://u:sekret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact("redis://:sekret@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
