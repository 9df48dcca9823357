//! The Redis side of the sink: one connection (single node or cluster), batched UNLINK/DEL
//! with a timeout on every round trip, and retries with capped exponential backoff. A batch of
//! keys is confirmed only when Redis answered every command of it.
//!
//! We hold a plain multiplexed connection and reconnect ourselves: the crate's
//! ConnectionManager reconnects in the background but never retries the failed command and can
//! block a call for ~9 s during an outage.

use futures_util::stream::{self, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

use super::config::{redact, DeleteCommand, RedisSinkConfig};
use super::RedisStats;
use crate::sinks::SinkError;

enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

pub struct Deleter {
    sink: String,
    clients: Clients,
    command: DeleteCommand,
    batch_keys: usize,
    depth: usize,
    timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    retry_max: u32,
    conn: Option<Conn>,
    stats: Arc<RedisStats>,
    /// Connection settings of the first URL (cluster mode: to reach each master for SCAN).
    first_info: Option<redis::ConnectionInfo>,
}

/// One per sink (not per message), so the size difference between variants doesn't matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Clients {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl Deleter {
    pub fn new(
        cfg: &RedisSinkConfig,
        password: Option<&str>,
        stats: Arc<RedisStats>,
    ) -> Result<Deleter, SinkError> {
        let fatal = |message: String| SinkError::Fatal {
            sink: cfg.name.clone(),
            message,
        };
        let root_cert = match &cfg.tls_ca_file {
            Some(p) => Some(
                std::fs::read(p).map_err(|e| fatal(format!("tls_ca_file {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let infos = cfg
            .url
            .list()
            .into_iter()
            .map(|u| {
                let mut info = redis::IntoConnectionInfo::into_connection_info(u.expose())
                    .map_err(|e| fatal(format!("url {}: {e}", redact(u.expose()))))?;
                if let Some(p) = password {
                    let r = info.redis_settings().clone().set_password(p);
                    info = info.set_redis_settings(r);
                }
                Ok(info)
            })
            .collect::<Result<Vec<_>, SinkError>>()?;
        let first_info = infos.first().cloned();
        let clients = if cfg.is_cluster() {
            let mut b = redis::cluster::ClusterClient::builder(infos)
                .connection_timeout(cfg.timeout.0)
                .response_timeout(cfg.timeout.0)
                .retries(0);
            if let Some(p) = password {
                b = b.password(p);
            }
            Clients::Cluster(b.build().map_err(|e| fatal(format!("cluster: {e}")))?)
        } else {
            let info = infos
                .into_iter()
                .next()
                .ok_or_else(|| fatal("no url".into()))?;
            let c = match root_cert {
                Some(rc) => redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(rc),
                    },
                ),
                None => redis::Client::open(info),
            }
            .map_err(|e| fatal(format!("url: {e}")))?;
            Clients::Single(c)
        };
        Ok(Deleter {
            sink: cfg.name.clone(),
            clients,
            command: cfg.command,
            batch_keys: cfg.batch_keys,
            depth: cfg.pipeline_depth,
            timeout: cfg.timeout.0,
            backoff_initial: cfg.retry_backoff_initial.0,
            backoff_max: cfg.retry_backoff_max.0,
            retry_max: cfg.retry_max,
            conn: None,
            stats,
            first_info,
        })
    }

    /// A second, independent deleter for the delayed second deletes (own connection).
    pub fn fork(&self) -> Deleter {
        Deleter {
            sink: self.sink.clone(),
            clients: self.clients.clone(),
            command: self.command,
            batch_keys: self.batch_keys,
            depth: self.depth,
            timeout: self.timeout,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            retry_max: self.retry_max,
            conn: None,
            stats: self.stats.clone(),
            first_info: self.first_info.clone(),
        }
    }

    /// Deletes every key matching one of the `patterns` (SCAN MATCH … + UNLINK/DEL in batches,
    /// on every master in cluster mode), retrying like [`Deleter::delete_all`] until a whole
    /// pass succeeded. Returns how many keys were deleted.
    pub async fn delete_matching(&mut self, patterns: &[String]) -> Result<u64, SinkError> {
        if patterns.is_empty() {
            return Ok(0);
        }
        let mut attempt = 0u32;
        let mut backoff = self.backoff_initial;
        loop {
            match self.try_delete_matching(patterns).await {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) => {
                    self.failed_attempt(
                        &mut attempt,
                        &mut backoff,
                        "SCAN for truncate patterns",
                        &e,
                        "the truncate",
                        patterns.len(),
                    )
                    .await?;
                }
                Err(fatal) => return Err(fatal),
            }
        }
    }

    /// After a failed attempt: counts it, gives up after `retry_max` in a row (an error naming
    /// what could not be done), else logs and waits the doubling backoff.
    async fn failed_attempt(
        &mut self,
        attempt: &mut u32,
        backoff: &mut Duration,
        what: &str,
        error: &str,
        past: &str,
        pending: usize,
    ) -> Result<(), SinkError> {
        *attempt += 1;
        self.stats.retries.inc();
        self.stats.ready(false);
        if self.retry_max > 0 && *attempt >= self.retry_max {
            return Err(SinkError::Fatal {
                sink: self.sink.clone(),
                message: format!(
                    "redis {what} failed {attempt} times in a row ({error}); giving up (retry_max = {}); the position was not advanced past {past}",
                    self.retry_max
                ),
            });
        }
        warn!(
            sink = %self.sink, error = %error, attempt = *attempt, retry_in = ?*backoff, pending,
            "redis {what} failed; retrying (nothing after this transaction is acknowledged until it succeeds)"
        );
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(self.backoff_max);
        Ok(())
    }

    /// One pass: SCAN each node for each pattern and delete page by page.
    async fn try_delete_matching(
        &mut self,
        patterns: &[String],
    ) -> Result<Result<u64, String>, SinkError> {
        let t = self.timeout;
        let nodes: Vec<redis::aio::MultiplexedConnection> = match &self.clients {
            Clients::Single(_) => match self.connect().await {
                Ok(Conn::Single(c)) => vec![c],
                Ok(Conn::Cluster(_)) => return Ok(Err("unexpected cluster connection".into())),
                Err(e) => return Ok(Err(e)),
            },
            Clients::Cluster(_) => match self.masters().await {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            },
        };
        let mut deleted = 0u64;
        for mut node in nodes {
            for pattern in patterns {
                let mut cursor: u64 = 0;
                loop {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000);
                    let page: (u64, Vec<Vec<u8>>) =
                        match tokio::time::timeout(t, cmd.query_async(&mut node)).await {
                            Ok(Ok(p)) => p,
                            Ok(Err(e)) => return Ok(Err(format!("SCAN: {e}"))),
                            Err(_) => return Ok(Err(format!("SCAN: no answer within {t:?}"))),
                        };
                    deleted += page.1.len() as u64;
                    self.delete_all(&page.1).await?;
                    cursor = page.0;
                    if cursor == 0 {
                        break;
                    }
                }
            }
        }
        Ok(Ok(deleted))
    }

    /// Cluster mode: a connection to every master (from CLUSTER NODES).
    async fn masters(&mut self) -> Result<Vec<redis::aio::MultiplexedConnection>, String> {
        let t = self.timeout;
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let Conn::Cluster(c) = &mut conn else {
            return Err("not a cluster connection".into());
        };
        let nodes: String = match tokio::time::timeout(
            t,
            redis::cmd("CLUSTER").arg("NODES").query_async(c),
        )
        .await
        {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(format!("CLUSTER NODES: {e}")),
            Err(_) => return Err(format!("CLUSTER NODES: no answer within {t:?}")),
        };
        self.conn = Some(conn);
        let base = self
            .first_info
            .clone()
            .ok_or_else(|| "no url".to_string())?;
        let mut out = Vec::new();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (f.get(1), f.get(2)) else {
                continue;
            };
            if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
                continue;
            }
            let hostport = addr.split(['@', ',']).next().unwrap_or("");
            let Some((host, port)) = hostport.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let host = host.trim_matches(['[', ']']).to_string();
            let addr = match base.addr() {
                redis::ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => redis::ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: *insecure,
                    tls_params: tls_params.clone(),
                },
                _ => redis::ConnectionAddr::Tcp(host, port),
            };
            let info = base.clone().set_addr(addr);
            let client =
                redis::Client::open(info).map_err(|e| format!("master {hostport}: {e}"))?;
            let cfg = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(t))
                .set_response_timeout(Some(t));
            let c =
                tokio::time::timeout(t, client.get_multiplexed_async_connection_with_config(&cfg))
                    .await
                    .map_err(|_| format!("master {hostport}: no answer within {t:?}"))?
                    .map_err(|e| format!("master {hostport}: {e}"))?;
            out.push(c);
        }
        if out.is_empty() {
            return Err("CLUSTER NODES lists no master".into());
        }
        Ok(out)
    }

    async fn connect(&self) -> Result<Conn, String> {
        let t = self.timeout;
        let fut = async {
            match &self.clients {
                Clients::Single(c) => {
                    let cfg = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(t))
                        .set_response_timeout(Some(t));
                    c.get_multiplexed_async_connection_with_config(&cfg)
                        .await
                        .map(Conn::Single)
                }
                Clients::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
            }
        };
        match tokio::time::timeout(t, fut).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Err(_) => Err(format!("connect: no answer within {t:?}")),
        }
    }

    /// Checks the server answers (PING), for `binlogd check` and readiness.
    pub async fn ping(&mut self) -> Result<(), String> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut conn = conn;
        let r: Result<redis::RedisResult<String>, _> = tokio::time::timeout(self.timeout, async {
            match &mut conn {
                Conn::Single(c) => redis::cmd("PING").query_async(c).await,
                Conn::Cluster(c) => redis::cmd("PING").query_async(c).await,
            }
        })
        .await;
        match r {
            Ok(Ok(_)) => {
                self.conn = Some(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("PING: {e}")),
            Err(_) => Err(format!("PING: no answer within {:?}", self.timeout)),
        }
    }

    /// Deletes every key, retrying failed commands until Redis confirmed all of them (or
    /// `retry_max` consecutive failures). Returns how many keys existed.
    pub async fn delete_all(&mut self, keys: &[Vec<u8>]) -> Result<u64, SinkError> {
        if keys.is_empty() {
            return Ok(0);
        }
        // Commands: runs of keys, each run within one hash slot in cluster mode.
        let mut cmds: Vec<Vec<&[u8]>> = Vec::new();
        if matches!(self.clients, Clients::Cluster(_)) {
            let mut by_slot: std::collections::BTreeMap<u16, Vec<&[u8]>> = Default::default();
            for k in keys {
                by_slot.entry(slot(k)).or_default().push(k);
            }
            for (_, ks) in by_slot {
                for c in ks.chunks(self.batch_keys) {
                    cmds.push(c.to_vec());
                }
            }
        } else {
            for c in keys.chunks(self.batch_keys) {
                cmds.push(c.iter().map(|k| k.as_slice()).collect());
            }
        }
        let mut pending: Vec<usize> = (0..cmds.len()).collect();
        let mut deleted = 0u64;
        let mut attempt = 0u32;
        let mut backoff = self.backoff_initial;
        loop {
            let (done, n, err) = self.try_commands(&cmds, &pending).await;
            deleted += n;
            if err.is_none() {
                self.stats.keys_deleted.inc_by(keys.len() as u64);
                self.stats.ready(true);
                if attempt > 0 {
                    info!(sink = %self.sink, attempts = attempt + 1, "redis answered again; batch confirmed");
                }
                return Ok(deleted);
            }
            pending.retain(|i| !done.contains(i));
            let what = self.command.as_str();
            self.failed_attempt(
                &mut attempt,
                &mut backoff,
                what,
                &err.unwrap_or_default(),
                "these keys",
                pending.len(),
            )
            .await?;
        }
    }

    /// One attempt at the pending commands: returns (confirmed indices, keys removed, error).
    async fn try_commands(
        &mut self,
        cmds: &[Vec<&[u8]>],
        pending: &[usize],
    ) -> (Vec<usize>, u64, Option<String>) {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => match self.connect().await {
                Ok(c) => c,
                Err(e) => return (Vec::new(), 0, Some(e)),
            },
        };
        let name = self.command.as_str();
        let t = self.timeout;
        let mut done = Vec::new();
        let mut n = 0u64;
        let mut err = None;
        match &mut conn {
            Conn::Single(c) => {
                for group in pending.chunks(self.depth) {
                    let mut p = redis::pipe();
                    for &i in group {
                        p.cmd(name).arg(&cmds[i]);
                    }
                    match tokio::time::timeout(t, p.query_async::<Vec<u64>>(c)).await {
                        Ok(Ok(r)) => {
                            n += r.iter().sum::<u64>();
                            done.extend_from_slice(group);
                        }
                        Ok(Err(e)) => {
                            err = Some(format!("{name}: {e}"));
                            break;
                        }
                        Err(_) => {
                            err = Some(format!("{name}: no answer within {t:?}"));
                            break;
                        }
                    }
                }
            }
            Conn::Cluster(c) => {
                let results: Vec<(usize, Result<u64, String>)> =
                    stream::iter(pending.iter().copied())
                        .map(|i| {
                            let mut c = c.clone();
                            let mut cmd = redis::cmd(name);
                            cmd.arg(&cmds[i]);
                            async move {
                                let r =
                                    match tokio::time::timeout(t, cmd.query_async::<u64>(&mut c))
                                        .await
                                    {
                                        Ok(Ok(v)) => Ok(v),
                                        Ok(Err(e)) => Err(format!("{name}: {e}")),
                                        Err(_) => Err(format!("{name}: no answer within {t:?}")),
                                    };
                                (i, r)
                            }
                        })
                        .buffer_unordered(self.depth)
                        .collect()
                        .await;
                for (i, r) in results {
                    match r {
                        Ok(v) => {
                            n += v;
                            done.push(i);
                        }
                        Err(e) => err = Some(e),
                    }
                }
            }
        }
        // After an error the connection may be broken: reconnect on the next attempt.
        if err.is_none() {
            self.conn = Some(conn);
        }
        (done, n, err)
    }
}

/// Redis Cluster hash slot of a key (CRC16/XMODEM of the hash tag or the whole key, mod 16384).
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|s| {
            key[s + 1..]
                .iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &key[s + 1..s + 1 + len])
        })
        .unwrap_or(key);
    crc16(tagged) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_slots() {
        // values from the Redis Cluster specification / CLUSTER KEYSLOT
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
        assert_eq!(slot(b"foo{bar}{zap}"), crc16(b"bar") % 16384);
    }
}
