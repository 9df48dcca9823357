//! The pipeline lock as a lease: when it was last confirmed, and the fence that stops the
//! pipeline handing on batches once it has not been confirmed in time.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info};

use crate::pipeline::Fence;

/// The pipeline lock as a lease: when it was last confirmed, and the fence that stops handing
/// on batches once it has not been confirmed for `fence_after`.
pub struct Lease {
    /// `mono_ms` at the start of the last round trip on the lock session that succeeded.
    pub confirmed: std::sync::atomic::AtomicU64,
    pub fence: watch::Sender<Fence>,
    pub fence_after: Duration,
    pub lease: Duration,
}

impl Lease {
    pub fn confirm(&self, at: u64) {
        self.confirmed
            .fetch_max(at, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::get().lock_confirmed(at);
    }

    /// Another daemon may hold the lock: nothing reaches a sink any more.
    pub fn lose(&self) {
        self.fence.send_replace(Fence::Lost);
        let m = crate::metrics::get();
        m.active.set(0);
        m.set_state("lost the pipeline lock");
    }

    /// Closes the fence when the lock has not been confirmed for `fence_after` (before the
    /// server can free it), opens it again when it is confirmed.
    pub async fn watch(self: Arc<Self>) {
        let m = crate::metrics::get();
        let tick =
            (self.fence_after / 40).clamp(Duration::from_millis(20), Duration::from_millis(200));
        loop {
            tokio::time::sleep(tick).await;
            let age = crate::metrics::mono_ms()
                .saturating_sub(self.confirmed.load(std::sync::atomic::Ordering::Relaxed));
            let stale = age > self.fence_after.as_millis() as u64;
            // copy the state out: a borrow held across send_replace would deadlock
            let state = *self.fence.borrow();
            match state {
                Fence::Lost => return,
                Fence::Open if stale => {
                    error!(
                        unconfirmed_for = ?Duration::from_millis(age),
                        lease = ?self.lease,
                        "the pipeline lock could not be confirmed for longer than the lease allows: stopped handing \
                         batches to the sinks (self-fencing) before the checkpoint server can free the lock for a standby"
                    );
                    self.fence.send_replace(Fence::Hold);
                    m.active.set(0);
                    m.set_state("fenced");
                }
                Fence::Hold if !stale => {
                    info!("the pipeline lock is confirmed again: handing on batches resumes");
                    self.fence.send_replace(Fence::Open);
                    m.active.set(1);
                    m.set_state("active");
                }
                _ => {}
            }
        }
    }
}
