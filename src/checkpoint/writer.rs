//! The checkpoint writer: stores the acknowledged position at most every `interval`, holds the
//! pipeline lock (lease), pauses the source after `max_unstored` of failed stores.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

use super::lease::Lease;
use crate::checkpoint::{Checkpoint, CheckpointError, SourceIdentity};
use crate::pipeline::Acked;

/// The store loop's settings.
pub struct Store {
    pub opts: mysql_async::Opts,
    pub schema: String,
    pub pipeline: String,
    pub id: SourceIdentity,
    pub interval: Duration,
    pub max_unstored: Duration,
    pub store_timeout: Duration,
    /// Confirm the lock this often when there is nothing to store.
    pub ping_every: Duration,
    /// The lock session's server-side `wait_timeout`.
    pub wait_timeout_secs: u64,
    /// Open while the pipeline may read from the source.
    pub gate: watch::Sender<bool>,
    pub lease: Arc<Lease>,
    /// Receives the generation of each snapshot progress stored (the snapshot stage emits a
    /// table's next chunk only once the previous one's progress is stored).
    pub snapshot_stored: Option<watch::Sender<u64>>,
}

impl Store {
    /// A checkpoint call that does not answer within `limit` counts as failed.
    async fn bounded<T>(
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, CheckpointError>>,
    ) -> Result<T, CheckpointError> {
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(CheckpointError::Invalid(format!(
                "no answer within {limit:?} (checkpoint.store_timeout)"
            )))
        })
    }

    /// A new lock session after the old one failed. `Ok(None)`: another daemon holds the lock.
    async fn reconnect(&self, old: &Checkpoint) -> Result<Option<Checkpoint>, String> {
        let t = crate::metrics::mono_ms();
        let mut fresh = Self::bounded(
            self.store_timeout,
            Checkpoint::connect(self.opts.clone(), &self.schema, &self.pipeline),
        )
        .await
        .map_err(|e| e.to_string())?;
        Self::bounded(
            self.store_timeout,
            fresh.set_session_timeout(self.wait_timeout_secs),
        )
        .await
        .map_err(|e| e.to_string())?;
        let relocked = tokio::time::timeout(
            self.store_timeout + Duration::from_secs(10),
            fresh.retake_lock(old.lock_session()),
        )
        .await;
        match relocked {
            Ok(Ok(true)) => {
                self.lease.confirm(t);
                Ok(Some(fresh))
            }
            Ok(Ok(false)) => Ok(None),
            Ok(Err(e)) => Err(format!("taking the pipeline lock again failed: {e}")),
            Err(_) => Err("taking the pipeline lock again did not answer in time".into()),
        }
    }

    /// Stores the acknowledged position at most every `interval`, and once more when the
    /// pipeline ends; between stores confirms the lock every `ping_every` (the lease). A failed
    /// store or confirmation is retried on a fresh connection, which must take the pipeline
    /// lock again: if another daemon holds it now, this one stops (`stop`) and hands nothing
    /// more to the sinks.
    pub async fn run(
        self,
        mut cp: Checkpoint,
        mut acked: watch::Receiver<Option<Acked>>,
        stop: watch::Sender<bool>,
    ) -> Result<(), CheckpointError> {
        use tokio::time::Instant as TInstant;
        let mut stored: Option<Acked> = None;
        let mut healthy = true;
        // since when an acknowledged position is waiting to be stored (stores failing)
        let mut unstored_since: Option<Instant> = None;
        let mut closed = false;
        let mut final_attempts = 0u32;
        let mut last_store = TInstant::now() - self.interval;
        let mut last_ping = TInstant::now();
        let mut next_reconnect = TInstant::now();
        let keepalive = (self.interval * 10).max(Duration::from_secs(10));
        loop {
            let cur = acked.borrow_and_update().clone();
            let now = TInstant::now();
            // A position that moved without row changes (past transactions of tables not
            // streamed, or binlogd's own checkpoint writes read back) is stored only every
            // `keepalive`: storing it at once would write to the checkpoint server again and
            // again, and with the checkpoint on the source every such write is a transaction
            // a replica must have received before a failover.
            // new snapshot progress is stored at once: the snapshot stage waits for it before
            // it emits the table's next chunk (at most one chunk is read again after a crash)
            let generation = |a: &Option<Acked>| {
                a.as_ref()
                    .and_then(|c| c.snapshot.as_ref())
                    .map(|m| m.generation)
            };
            let snapshot_moved =
                generation(&cur).is_some() && generation(&cur) != generation(&stored);
            let want_store = cur.is_some()
                && stored != cur
                && (closed
                    || snapshot_moved
                    || stored
                        .as_ref()
                        .zip(cur.as_ref())
                        .is_none_or(|(s, c)| s.rows != c.rows)
                    || now >= last_store + keepalive);
            let store_due =
                want_store && (closed || snapshot_moved || now >= last_store + self.interval);
            let ping_due = now >= last_ping + self.ping_every;
            let reconnect_due = !healthy && now >= next_reconnect;
            if closed && !want_store {
                return Ok(());
            }
            let act = if healthy {
                store_due || ping_due
            } else {
                reconnect_due || (closed && want_store)
            };
            if !act {
                let wake = if healthy && want_store {
                    (last_ping + self.ping_every).min(last_store + self.interval)
                } else if healthy && cur.is_some() && stored != cur {
                    (last_ping + self.ping_every).min(last_store + keepalive)
                } else if healthy {
                    last_ping + self.ping_every
                } else {
                    next_reconnect
                };
                tokio::select! {
                    r = acked.changed(), if !closed => if r.is_err() {
                        closed = true;
                        // the final store happens even if this position was stored before:
                        // the checkpoint server may have changed under the same URL (a
                        // failover), and the position must be there
                        stored = None;
                    },
                    _ = tokio::time::sleep_until(wake) => {}
                }
                continue;
            }
            if !healthy && (reconnect_due || closed) {
                next_reconnect = TInstant::now() + self.interval.max(Duration::from_secs(1));
                match self.reconnect(&cp).await {
                    Ok(Some(fresh)) => {
                        info!("checkpoint connection re-established, lock held");
                        cp = fresh;
                        healthy = true;
                        last_ping = TInstant::now();
                        // store the position again: the new connection may reach another
                        // server than the old one (a failover behind the same URL)
                        stored = None;
                    }
                    Ok(None) => {
                        // before anything else: no batch may reach a sink any more
                        self.lease.lose();
                        let _ = stop.send(true);
                        let _ = self.gate.send(true);
                        return Err(CheckpointError::Invalid(format!(
                            "lost the pipeline lock binlogd:{} (the checkpoint connection dropped and another binlogd took over); stopping this one",
                            self.pipeline
                        )));
                    }
                    Err(e) => {
                        warn!(error = %e, "checkpoint server unreachable; the stored position stays behind")
                    }
                }
            }
            if let Some(a) = cur.clone().filter(|_| healthy && store_due) {
                let t = crate::metrics::mono_ms();
                last_store = TInstant::now();
                match Self::bounded(
                    self.store_timeout,
                    cp.store(
                        &a.position,
                        &self.id,
                        a.event_ts_ms,
                        a.snapshot.as_ref().map(|m| &*m.progress),
                    ),
                )
                .await
                {
                    Ok(()) => {
                        self.lease.confirm(t);
                        last_ping = last_store;
                        unstored_since = None;
                        if !*self.gate.borrow() {
                            info!("checkpoint stored again; reading from the binlog resumes");
                            let _ = self.gate.send(true);
                            crate::metrics::get().set_sink_ready("checkpoint", true);
                        }
                        tracing::debug!(position = %a.position.coord, "checkpoint stored");
                        let m = crate::metrics::get();
                        m.checkpoint_stores.inc();
                        m.stored_at_ms.store(
                            crate::metrics::now_ms(),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        if let (Some(tx), Some(m)) = (&self.snapshot_stored, &a.snapshot) {
                            tx.send_replace(m.generation);
                        }
                        stored = cur.clone();
                    }
                    Err(e) => {
                        crate::metrics::get().checkpoint_errors.inc();
                        warn!(error = %e, "storing the checkpoint failed; retrying on a new connection");
                        healthy = false;
                    }
                }
            } else if healthy && ping_due {
                let t = crate::metrics::mono_ms();
                last_ping = TInstant::now();
                let limit = self.store_timeout.min(self.lease.fence_after);
                match Self::bounded(limit, cp.holds_lock()).await {
                    Ok(true) => self.lease.confirm(t),
                    Ok(false) => {
                        warn!("the lock session no longer holds the pipeline lock; taking it again on a new connection");
                        healthy = false;
                    }
                    Err(e) => {
                        warn!(error = %e, "confirming the pipeline lock failed; retrying on a new connection");
                        healthy = false;
                    }
                }
            }
            if want_store && stored != cur {
                let since = *unstored_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.max_unstored && *self.gate.borrow() && !closed {
                    warn!(
                        unstored_for = ?since.elapsed(),
                        "the checkpoint could not be stored for checkpoint.max_unstored; pausing reading from the binlog until it can"
                    );
                    let _ = self.gate.send(false);
                    crate::metrics::get().set_sink_ready("checkpoint", false);
                }
                if closed {
                    final_attempts += 1;
                    if final_attempts >= 3 {
                        return Err(CheckpointError::Invalid(
                            "could not store the final position; the next start repeats the changes after the last stored one".into(),
                        ));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
