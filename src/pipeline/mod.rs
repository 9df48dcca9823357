//! Pipeline: fans batches out to every sink in order, bounds the bytes in flight
//! (backpressure to the source), and tracks acknowledgements: the acknowledged position only
//! moves to a transaction end once every sink has acknowledged every batch up to it.

use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info_span, Instrument};

use crate::event::Batch;
use crate::sinks::{Sink, SinkError};
use crate::source::position::Position;

/// Sink tasks and the acknowledged position of the whole pipeline.
pub struct Pipeline {
    max_in_flight: usize,
}

/// A transaction end every sink has acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Acked {
    pub position: Position,
    /// Event time (ms) of that transaction.
    pub event_ts_ms: u64,
}

struct InFlight {
    seq: u64,
    commit: Option<Acked>,
    _permit: OwnedSemaphorePermit,
}

impl Pipeline {
    pub fn new(max_in_flight: usize) -> Self {
        Pipeline {
            max_in_flight: max_in_flight.clamp(1 << 16, u32::MAX as usize),
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
            let (tx, mut srx) = mpsc::channel::<Arc<Batch>>(2);
            let (atx, arx) = watch::channel(0u64);
            let etx = err_tx.clone();
            let name = sink.name().to_string();
            handles.push(tokio::spawn(
                async move {
                    while let Some(b) = srx.recv().await {
                        if let Err(e) = sink.write(&b).await {
                            let _ = etx.send(e).await;
                            return;
                        }
                        let _ = atx.send(b.seq);
                    }
                    if let Err(e) = sink.close().await {
                        let _ = etx.send(e).await;
                    }
                }
                .instrument(info_span!("sink", sink = %name)),
            ));
            sink_txs.push(tx);
            ack_rxs.push(arx);
        }
        drop(err_tx);
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut seq = 0u64;
        let mut source_open = true;
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
                        debug!(position = %p.position.coord, "acknowledged by all sinks");
                        let _ = acked.send(Some(p));
                    }
                }
                b = rx.recv(), if source_open => match b {
                    None => {
                        source_open = false;
                        sink_txs.clear();
                        if inflight.is_empty() { break; }
                    }
                    Some(mut b) => {
                        seq += 1;
                        b.seq = seq;
                        let want = (b.bytes().min(self.max_in_flight)) as u32;
                        // backpressure: wait for room while still processing acks and errors
                        let permit = loop {
                            tokio::select! {
                                biased;
                                Some(e) = err_rx.recv() => return Err(e),
                                p = budget.clone().acquire_many_owned(want) => break p.map_err(|_| SinkError::Fatal { sink: "pipeline".into(), message: "budget closed".into() })?,
                                Some(()) = any_ack_rx.recv() => {
                                    if let Some(p) = settle(&mut inflight) { let _ = acked.send(Some(p)); }
                                }
                            }
                        };
                        let commit = b.commit.clone().map(|position| Acked { position, event_ts_ms: b.last_event_ms });
                        inflight.push_back(InFlight { seq, commit, _permit: permit });
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
