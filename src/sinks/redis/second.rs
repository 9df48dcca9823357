//! Second deletes, issued in the background so they never stall the main stream:
//!
//! - a fixed delay (`second_delete = "500ms"`): the keys are deleted again that long after the
//!   first delete was confirmed;
//! - `"after-replicas"`: the keys are deleted again once every configured replica has applied
//!   the transactions that changed them (MySQL `WAIT_FOR_EXECUTED_GTID_SET`, MariaDB
//!   `MASTER_GTID_WAIT`), plus `replica_grace`. A wait that times out or fails falls back to
//!   deleting anyway and is counted. This closes the race where a reader misses the cache right
//!   after the first delete, reads a lagging replica and fills the cache with the old row.
//!
//! Pending keys are bounded (`second_delete_queue`); when full, the sink waits (backpressure).
//! On a graceful stop the pending second deletes are issued before exit. After a crash they
//! are not: the first delete is the guaranteed one (see README, Guarantees).

use mysql_async::prelude::Queryable;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::client::Deleter;
use super::config::{RedisSinkConfig, SecondDelete};
use super::RedisStats;
use crate::binlog::position::{MariaGtidPos, MySqlGtidSet};
use crate::sinks::SinkError;
use crate::units::Secret;

/// The GTIDs a replica must have applied before the second delete.
#[derive(Debug, Clone, Default)]
pub struct WaitFor {
    mysql: MySqlGtidSet,
    maria: MariaGtidPos,
    /// A contributing transaction had no GTID (GTIDs off): waiting is impossible.
    pub missing_gtid: bool,
}

impl WaitFor {
    /// Adds one transaction GTID (`uuid[:tag]:n` or `domain-server-seq`).
    pub fn add(&mut self, gtid: &str) {
        if let Some((sid, n)) = gtid.rsplit_once(':') {
            match n.parse() {
                Ok(n) => self.mysql.add(sid, n),
                Err(_) => self.missing_gtid = true,
            }
            return;
        }
        let mut it = gtid.splitn(3, '-').map(|p| p.parse::<u64>());
        match (it.next(), it.next(), it.next()) {
            (Some(Ok(d)), Some(Ok(s)), Some(Ok(n))) => {
                let cur = self.maria.domains.get(&(d as u32)).map(|x| x.1);
                if cur.is_none_or(|c| n > c) {
                    self.maria.set(d as u32, s as u32, n);
                }
            }
            _ => self.missing_gtid = true,
        }
    }

    fn merge(&mut self, o: &WaitFor) {
        for (sid, ivs) in &o.mysql.sids {
            for &(a, b) in ivs {
                self.mysql.add_interval(sid, a, b);
            }
        }
        for (&d, &(s, n)) in &o.maria.domains {
            let cur = self.maria.domains.get(&d).map(|x| x.1);
            if cur.is_none_or(|c| n > c) {
                self.maria.set(d, s, n);
            }
        }
        self.missing_gtid |= o.missing_gtid;
    }

    fn is_empty(&self) -> bool {
        self.mysql.sids.is_empty() && self.maria.domains.is_empty()
    }
}

struct Item {
    keys: Vec<Vec<u8>>,
    wait: WaitFor,
    _permit: OwnedSemaphorePermit,
}

pub struct SecondDeletes {
    delayed: mpsc::Sender<(Instant, Item)>,
    replicas: mpsc::Sender<Item>,
    budget: Arc<Semaphore>,
    budget_max: usize,
    failed: Arc<Mutex<Option<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl SecondDeletes {
    pub fn start(
        cfg: &RedisSinkConfig,
        deleter: Deleter,
        stats: Arc<RedisStats>,
    ) -> Result<SecondDeletes, SinkError> {
        let failed = Arc::new(Mutex::new(None));
        let (dtx, drx) = mpsc::channel(1024);
        let (rtx, rrx) = mpsc::channel(1024);
        let budget_max = cfg.second_delete_queue.max(1);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(run_delayed(
            drx,
            deleter.fork(),
            stats.clone(),
            failed.clone(),
        )));
        let replicas = cfg
            .replicas
            .iter()
            .map(|u| {
                crate::mysql::opts::plain_opts_tls(
                    u,
                    None,
                    &cfg.replicas_tls,
                    &format!("sinks.redis {:?} replicas_tls", cfg.name),
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| SinkError::Fatal {
                sink: cfg.name.clone(),
                message: format!("replicas: {message}"),
            })?;
        let labels: Vec<String> = cfg
            .replicas
            .iter()
            .map(|u: &Secret| crate::mysql::opts::redact_url(u.expose()))
            .collect();
        tasks.push(tokio::spawn(run_after_replicas(
            rrx,
            deleter,
            ReplicaSet {
                opts: replicas,
                labels,
                conns: Vec::new(),
                timeout: cfg.replica_wait_timeout.0,
            },
            cfg.replica_grace.0,
            stats,
            failed.clone(),
        )));
        Ok(SecondDeletes {
            delayed: dtx,
            replicas: rtx,
            budget: Arc::new(Semaphore::new(budget_max)),
            budget_max,
            failed,
            tasks,
        })
    }

    /// The error that stopped a background task, if any.
    pub fn failed(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|g| g.clone())
    }

    /// Queues a second delete; waits while the queue is full.
    pub async fn schedule(
        &self,
        mode: SecondDelete,
        keys: Vec<Vec<u8>>,
        wait: WaitFor,
    ) -> Result<(), String> {
        let want = keys.len().clamp(1, self.budget_max) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| "second-delete queue closed".to_string())?;
        let item = Item {
            keys,
            wait,
            _permit: permit,
        };
        let closed = || "second-delete task stopped".to_string();
        match mode {
            SecondDelete::After(d) => self
                .delayed
                .send((Instant::now() + d, item))
                .await
                .map_err(|_| closed()),
            SecondDelete::AfterReplicas => self.replicas.send(item).await.map_err(|_| closed()),
        }
    }

    /// Issues everything still queued, then stops.
    pub async fn drain(self) -> Result<(), String> {
        let SecondDeletes {
            delayed,
            replicas,
            failed,
            tasks,
            ..
        } = self;
        drop(delayed);
        drop(replicas);
        for t in tasks {
            let _ = t.await;
        }
        let f = failed.lock().ok().and_then(|g| g.clone());
        match f {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

async fn delete(
    deleter: &mut Deleter,
    keys: Vec<Vec<u8>>,
    stats: &RedisStats,
    failed: &Mutex<Option<String>>,
) -> bool {
    match deleter.delete_all(&keys).await {
        Ok(_) => {
            stats.second_deletes.inc_by(keys.len() as u64);
            true
        }
        Err(e) => {
            error!(error = %e, "second delete failed");
            if let Ok(mut g) = failed.lock() {
                *g = Some(e.to_string());
            }
            false
        }
    }
}

async fn run_delayed(
    mut rx: mpsc::Receiver<(Instant, Item)>,
    mut deleter: Deleter,
    stats: Arc<RedisStats>,
    failed: Arc<Mutex<Option<String>>>,
) {
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut items: std::collections::HashMap<u64, Item> = Default::default();
    let mut n = 0u64;
    let mut open = true;
    loop {
        let next = heap.peek().map(|Reverse((t, _))| *t);
        if !open && next.is_none() {
            return;
        }
        tokio::select! {
            r = rx.recv(), if open => match r {
                Some((due, item)) => {
                    n += 1;
                    heap.push(Reverse((due, n)));
                    items.insert(n, item);
                }
                None => open = false,
            },
            _ = sleep_until_opt(next) => {
                let now = Instant::now();
                let mut keys: HashSet<Vec<u8>> = HashSet::new();
                let mut permits = Vec::new();
                while let Some(Reverse((t, id))) = heap.peek().copied() {
                    if t > now { break; }
                    heap.pop();
                    if let Some(it) = items.remove(&id) {
                        keys.extend(it.keys);
                        permits.push(it._permit);
                    }
                }
                if !delete(&mut deleter, keys.into_iter().collect(), &stats, &failed).await {
                    return;
                }
                drop(permits);
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct ReplicaSet {
    opts: Vec<mysql_async::Opts>,
    labels: Vec<String>,
    conns: Vec<Option<mysql_async::Conn>>,
    timeout: Duration,
}

impl ReplicaSet {
    /// Waits on every replica (concurrently) until it applied `wait`. Returns how many
    /// replicas timed out or failed.
    async fn wait(&mut self, wait: &WaitFor) -> usize {
        if self.conns.len() != self.opts.len() {
            self.conns = self.opts.iter().map(|_| None).collect();
        }
        let (sql, arg) = if !wait.mysql.sids.is_empty() {
            (
                "SELECT CAST(WAIT_FOR_EXECUTED_GTID_SET(?, ?) AS SIGNED)",
                wait.mysql.to_string(),
            )
        } else {
            (
                "SELECT CAST(MASTER_GTID_WAIT(?, ?) AS SIGNED)",
                wait.maria.to_string(),
            )
        };
        let secs = self.timeout.as_secs_f64();
        let hard = self.timeout + Duration::from_secs(5);
        let futs = self
            .conns
            .iter_mut()
            .zip(&self.opts)
            .zip(&self.labels)
            .map(|((slot, opts), label)| {
                let arg = arg.clone();
                async move {
                    let r = tokio::time::timeout(hard, async {
                        let conn = match slot.take() {
                            Some(c) => c,
                            None => mysql_async::Conn::new(opts.clone()).await?,
                        };
                        let mut conn = conn;
                        let v: Option<i64> = conn.exec_first(sql, (arg.as_str(), secs)).await?;
                        *slot = Some(conn);
                        Ok::<_, mysql_async::Error>(v)
                    })
                    .await;
                    match r {
                        Ok(Ok(Some(0))) => true,
                        Ok(Ok(v)) => {
                            warn!(replica = %label, result = ?v, waited = ?hard, gtid = %arg, "replica did not apply the transaction in time; deleting anyway");
                            false
                        }
                        Ok(Err(e)) => {
                            warn!(replica = %label, error = %e, "waiting for replica failed; deleting anyway");
                            false
                        }
                        Err(_) => {
                            warn!(replica = %label, "replica wait hung; deleting anyway");
                            false
                        }
                    }
                }
            });
        futures_util::future::join_all(futs)
            .await
            .into_iter()
            .filter(|ok| !ok)
            .count()
    }
}

async fn run_after_replicas(
    mut rx: mpsc::Receiver<Item>,
    mut deleter: Deleter,
    mut replicas: ReplicaSet,
    grace: Duration,
    stats: Arc<RedisStats>,
    failed: Arc<Mutex<Option<String>>>,
) {
    while let Some(first) = rx.recv().await {
        // coalesce what is already queued: one wait (for the union) covers them all
        let mut wait = first.wait.clone();
        let mut keys: HashSet<Vec<u8>> = first.keys.iter().cloned().collect();
        let mut permits = vec![first._permit];
        while keys.len() < 100_000 {
            match rx.try_recv() {
                Ok(it) => {
                    wait.merge(&it.wait);
                    keys.extend(it.keys);
                    permits.push(it._permit);
                }
                Err(_) => break,
            }
        }
        if wait.missing_gtid || wait.is_empty() {
            warn!("a transaction without a GTID: cannot wait for replicas (enable GTIDs); deleting again now");
            stats.replica_wait_fallbacks.inc();
        } else {
            let t0 = Instant::now();
            let failed_replicas = replicas.wait(&wait).await;
            if failed_replicas > 0 {
                stats.replica_wait_fallbacks.inc();
            }
            debug!(waited = ?t0.elapsed(), keys = keys.len(), "replicas caught up");
        }
        if !grace.is_zero() {
            tokio::time::sleep(grace).await;
        }
        if !delete(&mut deleter, keys.into_iter().collect(), &stats, &failed).await {
            return;
        }
        drop(permits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_sets() {
        let mut w = WaitFor::default();
        w.add("3e11fa47-71ca-11e1-9e33-c80aa9429562:5");
        w.add("3e11fa47-71ca-11e1-9e33-c80aa9429562:6");
        w.add("3e11fa47-71ca-11e1-9e33-c80aa9429562:tag:2");
        assert_eq!(
            w.mysql.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:5-6,3e11fa47-71ca-11e1-9e33-c80aa9429562:tag:2"
        );
        let mut m = WaitFor::default();
        m.add("0-1-10");
        m.add("0-1-12");
        m.add("1-1-3");
        let mut o = WaitFor::default();
        o.add("0-1-11");
        m.merge(&o);
        assert_eq!(m.maria.to_string(), "0-1-12,1-1-3");
        assert!(!m.missing_gtid);
    }
}
