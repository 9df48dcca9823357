//! A write load on its own thread: the fault and failover suites' writers run their
//! transactions in it until stopped, counting commits.

use super::env::rt_small;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A writer thread: `body(stop, commits)` runs on a current-thread runtime until it returns
/// (it should return soon after `stop` is set, and count its commits in `commits`). Dropping
/// it sets `stop` without waiting.
pub struct Load {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn spawn<F, Fut>(body: F) -> Load
    where
        F: FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), commits.clone());
        let handle = std::thread::spawn(move || rt_small().block_on(body(s, n)));
        Load {
            stop,
            commits,
            handle: Some(handle),
        }
    }

    /// Commits so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Waits for `n` more commits; panics ("the writer made no progress {what}") after
    /// `timeout`.
    pub fn wait_commits(&self, n: u64, timeout: Duration, what: &str) {
        let t0 = Instant::now();
        let base = self.commits();
        while self.commits() < base + n {
            assert!(t0.elapsed() < timeout, "the writer made no progress {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the writer and waits for it; returns its commits.
    pub fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.commits()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
