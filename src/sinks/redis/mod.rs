//! Redis sink: deletes the cache keys a row change makes stale.
//!
//! For each row change, every rule whose table pattern matches renders its key templates from
//! the before image (updates, deletes) and the after image (inserts, updates), so a changed key
//! column invalidates both the old and the new key. Keys are de-duplicated per batch and sent
//! as variadic UNLINK/DEL commands ([`client`]); the batch is acknowledged only when Redis
//! confirmed every command. Optional second deletes ([`second`]) run in the background after
//! a fixed delay or once the read replicas applied the transaction.

pub mod client;
pub mod config;
pub mod second;
pub mod template;

use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tracing::{debug, info, warn};

use self::client::Deleter;
use self::config::{RedisSinkConfig, Rule, SecondDelete};
use self::second::{SecondDeletes, WaitFor};
use self::template::{BoundTemplate, RenderSkip};
use super::{Sink, SinkError};
use crate::decode::event::Batch;
use crate::decode::table::TableSchema;
use crate::finding::{Finding, Severity};
use crate::mysql::schema::Catalog;

/// Counters of one Redis sink: handles into the process metrics (`binlogd_redis_*`,
/// `binlogd_sink_retries`), or detached ones (`Default`, for `binlogd check`).
#[derive(Debug, Default)]
pub struct RedisStats {
    pub sink: String,
    /// Keys sent in confirmed delete commands (first deletes).
    pub keys_deleted: Counter,
    /// Keys not rendered because a template column was NULL.
    pub keys_skipped_null: Counter,
    /// Failed attempts that were retried.
    pub retries: Counter,
    /// Keys deleted a second time.
    pub second_deletes: Counter,
    /// `after-replicas` waits that timed out or failed; the keys were deleted anyway.
    pub replica_wait_fallbacks: Counter,
}

impl RedisStats {
    pub fn for_sink(name: &str) -> RedisStats {
        let m = crate::metrics::get();
        let l = m.sink(name);
        RedisStats {
            sink: name.to_string(),
            keys_deleted: m.redis_keys_deleted.get_or_create(&l).clone(),
            keys_skipped_null: m.redis_keys_skipped_null.get_or_create(&l).clone(),
            retries: m.sink_retries.get_or_create(&l).clone(),
            second_deletes: m.redis_second_deletes.get_or_create(&l).clone(),
            replica_wait_fallbacks: m.redis_replica_wait_fallbacks.get_or_create(&l).clone(),
        }
    }

    /// Readiness of the sink (no-op for detached stats).
    pub fn ready(&self, ok: bool) {
        if !self.sink.is_empty() {
            crate::metrics::get().set_sink_ready(&self.sink, ok);
        }
    }
}

struct BoundRule {
    keys: Vec<BoundTemplate>,
    second: Option<SecondDelete>,
}

pub struct RedisSink {
    name: String,
    rules: Vec<Rule>,
    /// Bound rules per table schema (keyed by the schema's address; the Arc keeps it alive).
    bound: HashMap<usize, (Arc<TableSchema>, Arc<[BoundRule]>)>,
    deleter: Deleter,
    second: Option<SecondDeletes>,
    stats: Arc<RedisStats>,
    key: Vec<u8>,
    scratch: Vec<u8>,
}

impl RedisSink {
    pub fn open(
        cfg: &RedisSinkConfig,
        password: Option<&str>,
        stats: Arc<RedisStats>,
    ) -> Result<RedisSink, SinkError> {
        let rules = cfg.validate().map_err(|message| SinkError::Fatal {
            sink: cfg.name.clone(),
            message,
        })?;
        let deleter = Deleter::new(cfg, password, stats.clone())?;
        let second = if rules.iter().any(|r| r.second_delete.is_some()) {
            Some(SecondDeletes::start(cfg, deleter.fork(), stats.clone())?)
        } else {
            None
        };
        Ok(RedisSink {
            name: cfg.name.clone(),
            rules,
            bound: HashMap::new(),
            deleter,
            second,
            stats,
            key: Vec::with_capacity(128),
            scratch: Vec::with_capacity(128),
        })
    }

    fn fatal(&self, message: String) -> SinkError {
        SinkError::Fatal {
            sink: self.name.clone(),
            message,
        }
    }

    /// The rules that apply to `table`, bound to its columns (checked once per schema).
    fn rules_for(&mut self, table: &Arc<TableSchema>) -> Result<Arc<[BoundRule]>, SinkError> {
        let id = Arc::as_ptr(table) as usize;
        if let Some((_, b)) = self.bound.get(&id) {
            return Ok(b.clone());
        }
        let mut out = Vec::new();
        for r in &self.rules {
            if !r.pattern.matches(&table.db, &table.table) {
                continue;
            }
            let keys = r
                .keys
                .iter()
                .map(|k| k.bind(table))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| self.fatal(format!("rule for {:?}: {m}", r.table)))?;
            out.push(BoundRule {
                keys,
                second: r.second_delete,
            });
        }
        let b: Arc<[BoundRule]> = out.into();
        if self.bound.len() >= 4096 {
            self.bound.clear();
        }
        self.bound.insert(id, (table.clone(), b.clone()));
        Ok(b)
    }

    /// Renders the keys of a batch: first deletes, and second deletes per mode.
    fn collect(&mut self, batch: &Batch) -> Result<Collected, SinkError> {
        let mut c = Collected::default();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for txn in &batch.txns {
            for chunk in &txn.chunks {
                // a snapshot read changes nothing: no cache key is stale because of it
                if matches!(chunk.op, crate::decode::event::Op::Read { .. }) {
                    continue;
                }
                if chunk.op == crate::decode::event::Op::Truncate {
                    // no row to render keys from: the keys without columns and the rules'
                    // on_truncate patterns
                    for r in &self.rules {
                        if !r.pattern.matches(&chunk.table.db, &chunk.table.table) {
                            continue;
                        }
                        for k in &r.keys {
                            if let Some(l) = k.literal() {
                                seen.insert(l.as_bytes().to_vec());
                            }
                        }
                        for p in &r.on_truncate {
                            if !c.patterns.contains(p) {
                                c.patterns.push(p.clone());
                            }
                        }
                    }
                    continue;
                }
                let rules = self.rules_for(&chunk.table)?;
                if rules.is_empty() {
                    continue;
                }
                let mut txn_has_second = false;
                for row in 0..chunk.rows as usize {
                    for (image, partial) in
                        [(chunk.before(row), None), (chunk.after(row), Some(row))]
                    {
                        let Some(image) = image else { continue };
                        for rule in rules.iter() {
                            for t in &rule.keys {
                                match t
                                    .render(chunk, image, partial, &mut self.key, &mut self.scratch)
                                    .map_err(|m| {
                                        self.fatal(format!(
                                            "{m} (at {}:{} row {})",
                                            txn.file,
                                            chunk.pos,
                                            chunk.first_row as usize + row
                                        ))
                                    })? {
                                    Ok(()) => {}
                                    Err(RenderSkip::Null) => {
                                        self.stats.keys_skipped_null.inc();
                                        continue;
                                    }
                                }
                                if let Some(mode) = rule.second {
                                    txn_has_second = true;
                                    c.second.entry(mode).or_default().insert(self.key.clone());
                                }
                                if !seen.contains(self.key.as_slice()) {
                                    seen.insert(self.key.clone());
                                }
                            }
                        }
                    }
                }
                if txn_has_second {
                    if let Some(g) = &txn.gtid {
                        c.wait.add(g);
                    } else {
                        c.wait.missing_gtid = true;
                    }
                }
            }
        }
        c.first = seen.into_iter().collect();
        Ok(c)
    }
}

#[derive(Default)]
struct Collected {
    first: Vec<Vec<u8>>,
    /// SCAN patterns to delete (truncates).
    patterns: Vec<String>,
    second: HashMap<SecondDelete, HashSet<Vec<u8>>>,
    wait: WaitFor,
}

impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if let Some(s) = &self.second {
                if let Some(e) = s.failed() {
                    return Err(self.fatal(e));
                }
            }
            let c = self.collect(batch)?;
            if c.first.is_empty() && c.second.is_empty() && c.patterns.is_empty() {
                return Ok(());
            }
            let existed = self.deleter.delete_all(&c.first).await?;
            if !c.patterns.is_empty() {
                let n = self.deleter.delete_matching(&c.patterns).await?;
                info!(sink = %self.name, patterns = ?c.patterns, deleted = n, "truncate: keys matching the rules' on_truncate patterns deleted");
            }
            debug!(sink = %self.name, keys = c.first.len(), existed, "keys deleted");
            if let Some(s) = &self.second {
                for (mode, keys) in c.second {
                    s.schedule(mode, keys.into_iter().collect(), c.wait.clone())
                        .await
                        .map_err(|e| self.fatal(e))?;
                }
            } else if !c.second.is_empty() {
                warn!(sink = %self.name, "second deletes requested but no scheduler running");
            }
            Ok(())
        })
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            if let Some(s) = self.second.take() {
                // issue the second deletes still pending (bounded by their delay / wait timeout)
                s.drain().await.map_err(|e| self.fatal(e))?;
            }
            Ok(())
        })
    }
}

/// Checks every rule against the tables that exist on the server now, so a template naming a
/// missing column fails at startup rather than when the table is first written. With
/// `contact`, also checks that Redis answers.
pub async fn check(
    catalog: &Result<Catalog, String>,
    cfg: &RedisSinkConfig,
    contact: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut err = |severity, message| out.push(Finding { severity, message });
    let Ok(rules) = cfg.validate() else {
        return Vec::new(); // reported by config validation
    };
    match catalog {
        Err(e) => err(
            Severity::Warning,
            format!("sinks.redis {:?}: cannot read information_schema.COLUMNS to check key templates: {e}", cfg.name),
        ),
        Ok(catalog) => {
            let tables = &catalog.tables;
            for r in &rules {
                let mut matched = false;
                for ((db, t), columns) in tables {
                    if !r.pattern.matches(db, t) {
                        continue;
                    }
                    matched = true;
                    for k in &r.keys {
                        for c in k.columns() {
                            if !columns.iter().any(|x| x == c) {
                                err(Severity::ConfigError, format!(
                                    "sinks.redis {:?}: key template {:?} names column {c:?}, which table {db}.{t} does not have (columns: {}); fix the template or the rule's table pattern",
                                    cfg.name,
                                    k.text,
                                    columns.join(", ")
                                ));
                            }
                        }
                    }
                }
                if !matched {
                    err(Severity::Warning, format!(
                        "sinks.redis {:?}: rule table {:?} matches no existing table (fine if it will be created; check the spelling)",
                        cfg.name, r.table
                    ));
                }
            }
        }
    }
    // At startup (`contact` false) Redis may be down (the sink waits for it), but a server
    // certificate that does not verify is a configuration error: rediss:// is tried once.
    let tls_url = cfg
        .url
        .list()
        .iter()
        .any(|u| u.expose().starts_with("rediss://"));
    if contact || tls_url {
        let pw = cfg.password();
        let res = match &pw {
            Err(e) => Err(e.clone()),
            Ok(pw) => match client::Deleter::new(
                cfg,
                pw.as_ref().map(|p| p.expose()),
                Arc::new(RedisStats::default()),
            ) {
                Err(e) => Err(e.to_string()),
                Ok(mut d) => d.ping().await,
            },
        };
        if let Err(e) = res {
            let l = e.to_ascii_lowercase();
            let tls = ["certificate", "tls", "ssl", "handshake"]
                .iter()
                .any(|w| l.contains(w));
            if !contact && !tls {
                return out;
            }
            let fix = if tls {
                "the TLS handshake failed: the server certificate must be signed by tls_ca_file \
                 (or a CA in the system trust store) and list the url's host"
            } else {
                "start it or fix url"
            };
            err(
                Severity::Error,
                format!(
                    "sinks.redis {:?}: Redis at {} does not answer: {e}; {fix}",
                    cfg.name,
                    cfg.url
                        .list()
                        .iter()
                        .map(|u| config::redact(u.expose()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    out
}
