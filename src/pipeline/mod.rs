//! Pipeline: fans batches out to every sink in order, bounds the bytes in flight
//! (backpressure to the source), and tracks acknowledgements: the acknowledged position only
//! moves to a transaction end once every sink has acknowledged every batch up to it.

use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info_span, Instrument};

use crate::binlog::position::Position;
use crate::decode::event::Batch;
use crate::sinks::{Sink, SinkError};

/// At most this many batches wait for a sink (the in-flight byte budget bounds their size), and
/// a sink is handed at most this many at once ([`Sink::write_group`]).
const MAX_GROUP: usize = 4;
/// A pipelined sink ([`Sink::pipelined`]) is handed the next group while at most this many are
/// still being acknowledged (2: the next group is produced during the round trip of the one
/// before; measured on the sysbench range into Kafka: 8–11% faster).
const PIPELINE_DEPTH: usize = 2;

/// Sink tasks and the acknowledged position of the whole pipeline.
pub struct Pipeline {
    max_in_flight: usize,
    gate: Option<watch::Receiver<bool>>,
    fence: Option<watch::Receiver<Fence>>,
}

/// Whether this daemon may hand batches to the sinks: only while it is sure to hold the
/// pipeline lock (the lease, see `daemon.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    Open,
    /// The lock could not be confirmed for too long: nothing more reaches a sink (batches
    /// already being written finish) until it is confirmed again.
    Hold,
    /// Another daemon may hold the lock now: nothing more reaches a sink, ever.
    Lost,
}

/// A transaction end every sink has acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Acked {
    pub position: Position,
    /// Event time (ms) of that transaction.
    pub event_ts_ms: u64,
    /// Row changes handed on in this run up to that transaction: a position that moved
    /// without rows (e.g. past binlogd's own checkpoint writes) need not be stored at once.
    pub rows: u64,
    /// Snapshot progress to store with this position (see [`Batch::snapshot`]).
    pub snapshot: Option<crate::decode::event::SnapshotMark>,
}

/// A group handed to a pipelined sink and not yet acknowledged.
struct QueuedGroup {
    /// Its last batch's sequence number (acknowledgements are cumulative).
    last_seq: u64,
    rows: u64,
    batches: u64,
    since: std::time::Instant,
}

impl QueuedGroup {
    /// The batches of all `queued` groups (the sink's in-flight gauge).
    fn batches(queued: &VecDeque<QueuedGroup>) -> i64 {
        queued.iter().map(|g| g.batches as i64).sum()
    }
}

struct InFlight {
    seq: u64,
    commit: Option<Acked>,
    _permit: OwnedSemaphorePermit,
}

impl Pipeline {
    /// Reads from the source only while `gate` is true (the checkpoint store closes it when
    /// the checkpoint server has been unwritable too long).
    pub fn gated(mut self, gate: watch::Receiver<bool>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Hands batches to the sinks only while `fence` is [`Fence::Open`]; on
    /// [`Fence::Lost`] the pipeline ends at once, without writing what is queued.
    pub fn fenced(mut self, fence: watch::Receiver<Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    pub fn new(max_in_flight: usize) -> Self {
        Pipeline {
            max_in_flight: max_in_flight.clamp(1 << 16, u32::MAX as usize),
            gate: None,
            fence: None,
        }
    }

    /// Runs until `rx` closes (the source stopped) and every sink drained, or a sink fails.
    /// `acked` receives each new fully acknowledged transaction-end position.
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Batch>,
        sinks: Vec<Box<dyn Sink>>,
        acked: watch::Sender<Option<Acked>>,
    ) -> Result<(), SinkError> {
        let budget = Arc::new(Semaphore::new(self.max_in_flight));
        let (err_tx, mut err_rx) = mpsc::channel::<SinkError>(sinks.len().max(1));
        let mut sink_txs = Vec::new();
        let mut ack_rxs = Vec::new();
        let mut handles = Vec::new();
        for mut sink in sinks {
            let max_group = sink.max_group().clamp(1, MAX_GROUP);
            // a sink taking groups gets room for a group to queue (else 2, as ever)
            let (tx, mut srx) = mpsc::channel::<Arc<Batch>>(max_group.max(2));
            let (atx, arx) = watch::channel(0u64);
            let etx = err_tx.clone();
            let name = sink.name().to_string();
            let mut fence = self.fence.clone();
            let span = info_span!("sink", sink = %name);
            handles.push(tokio::spawn(
                async move {
                    let m = crate::metrics::get();
                    let label = m.sink(&name);
                    let (rows, batches, errors, in_flight, seconds) = (
                        m.sink_rows.get_or_create(&label).clone(),
                        m.sink_batches.get_or_create(&label).clone(),
                        m.sink_errors.get_or_create(&label).clone(),
                        m.sink_in_flight.get_or_create(&label).clone(),
                        m.sink_batch_seconds.get_or_create(&label).clone(),
                    );
                    m.set_sink_ready(&name, true);
                    let pipelined = sink.pipelined();
                    // groups handed to a pipelined sink and not yet acknowledged, oldest first
                    let mut queued: VecDeque<QueuedGroup> = VecDeque::new();
                    loop {
                        // the next group: wait for one only when nothing is being acknowledged
                        let first = if queued.is_empty() {
                            match srx.recv().await {
                                Some(b) => Some(b),
                                None => break,
                            }
                        } else if queued.len() < PIPELINE_DEPTH && fence_open(&fence) {
                            // (with the fence not open, the queued groups settle first: their
                            // acknowledgement does not wait for the fence)
                            srx.try_recv().ok()
                        } else {
                            None
                        };
                        let Some(b) = first else {
                            // a pipelined sink with nothing new to queue: wait for the oldest
                            m.sink_busy(&name, true);
                            let r = sink.settle().await;
                            m.sink_busy(&name, false);
                            let n = match r {
                                Ok(n) if (1..=queued.len()).contains(&n) => n,
                                Ok(n) => {
                                    let _ = etx
                                        .send(SinkError::Fatal {
                                            sink: name.clone(),
                                            message: format!(
                                                "settled {n} groups of {} queued",
                                                queued.len()
                                            ),
                                        })
                                        .await;
                                    return;
                                }
                                Err(e) => {
                                    errors.inc();
                                    m.set_sink_ready(&name, false);
                                    let _ = etx.send(e).await;
                                    return;
                                }
                            };
                            let mut last = None;
                            for g in queued.drain(..n) {
                                seconds.observe(g.since.elapsed().as_secs_f64());
                                rows.inc_by(g.rows);
                                batches.inc_by(g.batches);
                                last = Some(g.last_seq);
                            }
                            in_flight.set(srx.len() as i64 + QueuedGroup::batches(&queued));
                            if let Some(s) = last {
                                let _ = atx.send(s);
                            }
                            continue;
                        };
                        // batches that queued while the sink was busy go together
                        let mut group = vec![b];
                        while group.len() < max_group {
                            match srx.try_recv() {
                                Ok(b) => group.push(b),
                                Err(_) => break,
                            }
                        }
                        in_flight.set(
                            srx.len() as i64 + group.len() as i64 + QueuedGroup::batches(&queued),
                        );
                        if !wait_unfenced(&mut fence).await {
                            let _ = etx
                                .send(SinkError::Fatal {
                                    sink: name.clone(),
                                    message:
                                        "batch not written: this daemon lost the pipeline lock"
                                            .into(),
                                })
                                .await;
                            return;
                        }
                        let t0 = std::time::Instant::now();
                        let group_rows: u64 = group.iter().map(|b| b.rows() as u64).sum();
                        let group_batches = group.len() as u64;
                        // acknowledgements are cumulative: the last batch's covers the group
                        let last_seq = group.last().map(|b| b.seq).unwrap_or_default();
                        m.sink_busy(&name, true);
                        let r = if pipelined {
                            sink.queue_group(group).await
                        } else {
                            match group.as_slice() {
                                [b] => sink.write(b).await,
                                g => sink.write_group(g).await,
                            }
                        };
                        m.sink_busy(&name, false);
                        if let Err(e) = r {
                            errors.inc();
                            m.set_sink_ready(&name, false);
                            let _ = etx.send(e).await;
                            return;
                        }
                        if pipelined {
                            queued.push_back(QueuedGroup {
                                last_seq,
                                rows: group_rows,
                                batches: group_batches,
                                since: t0,
                            });
                            continue;
                        }
                        seconds.observe(t0.elapsed().as_secs_f64());
                        rows.inc_by(group_rows);
                        batches.inc_by(group_batches);
                        in_flight.set(srx.len() as i64);
                        let _ = atx.send(last_seq);
                    }
                    if let Err(e) = sink.close().await {
                        let _ = etx.send(e).await;
                    }
                }
                .instrument(span),
            ));
            sink_txs.push(tx);
            ack_rxs.push(arx);
        }
        drop(err_tx);
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let metrics = crate::metrics::get();
        let mut seq = 0u64;
        let mut rows_in = 0u64;
        let mut source_open = true;
        let mut gate = self.gate.clone();
        let mut fence = self.fence.clone();
        let (any_ack_tx, mut any_ack_rx) = mpsc::channel::<()>(1);
        // one watcher per sink forwards "something was acked" to a single channel
        for mut arx in ack_rxs.clone() {
            let t = any_ack_tx.clone();
            tokio::spawn(async move {
                while arx.changed().await.is_ok() {
                    let _ = t.try_send(());
                }
            });
        }
        drop(any_ack_tx);
        loop {
            let settle = |inflight: &mut VecDeque<InFlight>| {
                let min = ack_rxs
                    .iter()
                    .map(|r| *r.borrow())
                    .min()
                    .unwrap_or(u64::MAX);
                let mut last = None;
                while inflight.front().is_some_and(|f| f.seq <= min) {
                    if let Some(f) = inflight.pop_front() {
                        if f.commit.is_some() {
                            last = f.commit;
                        }
                    }
                }
                last
            };
            if !source_open && inflight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(e) = err_rx.recv() => return Err(e),
                Some(()) = any_ack_rx.recv() => {
                    if let Some(p) = settle(&mut inflight) {
                        publish(p, &acked);
                    }
                    metrics.pipeline_in_flight.store(inflight.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(()) = gate_changed(&mut gate) => {}
                Ok(f) = fence_changed(&mut fence) => if f == Fence::Lost {
                    return Err(SinkError::Fatal {
                        sink: "pipeline".into(),
                        message: "stopped without handing on what was queued: the pipeline lock is not confirmed \
                                  or was lost (fenced); the next start reads it again from the stored position"
                            .into(),
                    });
                },
                b = rx.recv(), if source_open && gate_open(&gate) && fence_open(&fence) => match b {
                    None => {
                        source_open = false;
                        sink_txs.clear();
                        if inflight.is_empty() { break; }
                    }
                    Some(mut b) => {
                        seq += 1;
                        b.seq = seq;
                        count_rows(&b);
                        let want = (b.bytes().min(self.max_in_flight)) as u32;
                        // backpressure: wait for room while still processing acks and errors
                        let permit = loop {
                            tokio::select! {
                                biased;
                                Some(e) = err_rx.recv() => return Err(e),
                                p = budget.clone().acquire_many_owned(want) => break p.map_err(|_| SinkError::Fatal { sink: "pipeline".into(), message: "budget closed".into() })?,
                                Some(()) = any_ack_rx.recv() => {
                                    if let Some(p) = settle(&mut inflight) { publish(p, &acked); }
                                }
                            }
                        };
                        rows_in += b.rows() as u64;
                        let commit = b.commit.clone().map(|position| Acked { position, event_ts_ms: b.last_event_ms, rows: rows_in, snapshot: b.snapshot.clone() });
                        inflight.push_back(InFlight { seq, commit, _permit: permit });
                        metrics.pipeline_in_flight.store(inflight.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        let b = Arc::new(b);
                        for tx in &sink_txs {
                            if tx.send(b.clone()).await.is_err() {
                                // the sink task ended: its error is on err_rx
                                if let Some(e) = err_rx.recv().await { return Err(e); }
                            }
                        }
                    }
                },
                else => break,
            }
        }
        for h in handles {
            let _ = h.await;
        }
        if let Ok(e) = err_rx.try_recv() {
            return Err(e);
        }
        Ok(())
    }
}

fn fence_open(fence: &Option<watch::Receiver<Fence>>) -> bool {
    fence.as_ref().is_none_or(|f| *f.borrow() == Fence::Open)
}

async fn fence_changed(fence: &mut Option<watch::Receiver<Fence>>) -> Result<Fence, ()> {
    match fence {
        Some(f) => match f.changed().await {
            Ok(()) => Ok(*f.borrow_and_update()),
            Err(_) => {
                // the lease keeper is gone (the daemon is stopping): stop watching
                *fence = None;
                Err(())
            }
        },
        None => std::future::pending().await,
    }
}

/// Waits while the fence holds; `false` when the lock is lost (do not write).
async fn wait_unfenced(fence: &mut Option<watch::Receiver<Fence>>) -> bool {
    let Some(f) = fence.as_mut() else {
        return true;
    };
    loop {
        let cur = *f.borrow_and_update();
        match cur {
            Fence::Open => return true,
            Fence::Lost => return false,
            Fence::Hold => {
                if f.changed().await.is_err() {
                    // the lease keeper ended while holding: the daemon is stopping
                    return *f.borrow() == Fence::Open;
                }
            }
        }
    }
}

fn gate_open(gate: &Option<watch::Receiver<bool>>) -> bool {
    gate.as_ref().is_none_or(|g| *g.borrow())
}

async fn gate_changed(gate: &mut Option<watch::Receiver<bool>>) -> Result<(), ()> {
    match gate {
        Some(g) => g.changed().await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}

/// Row changes per table and op, and transactions, as they enter the pipeline.
fn count_rows(b: &Batch) {
    let m = crate::metrics::get();
    m.transactions.inc_by(b.txns.len() as u64);
    // summed per table and op first: one metric look-up (which allocates its key) per table
    // and op in the batch, not per rows event
    let mut sums: Vec<(
        &crate::decode::table::TableSchema,
        crate::decode::event::Op,
        u64,
    )> = Vec::new();
    for c in b.txns.iter().flat_map(|t| t.chunks.iter()) {
        let t = &*c.table;
        match sums
            .iter_mut()
            .find(|(st, op, _)| *op == c.op && st.db == t.db && st.table == t.table)
        {
            Some(e) => e.2 += c.rows as u64,
            None => sums.push((t, c.op, c.rows as u64)),
        }
    }
    for (t, op, n) in sums {
        m.rows
            .get_or_create(&crate::metrics::TableOp {
                db: t.db.clone(),
                table: t.table.clone(),
                op: op.code().to_string(),
            })
            .inc_by(n);
    }
}

/// A transaction end every sink acknowledged: metrics, then the checkpoint task.
fn publish(p: Acked, acked: &watch::Sender<Option<Acked>>) {
    debug!(
        position = %p.position.coord,
        gtid = p.position.gtid.as_ref().map(|g| g.to_string()).unwrap_or_default(),
        "acknowledged by all sinks"
    );
    record_acked(&p);
    let _ = acked.send(Some(p));
}

fn record_acked(a: &Acked) {
    crate::metrics::get().set_acked(
        &a.position.coord.file,
        a.position.coord.pos,
        a.position.gtid.as_ref().map(|g| g.to_string()),
        a.event_ts_ms,
    );
}
