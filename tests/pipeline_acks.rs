//! In process, no servers: the pipeline's acknowledgements. The acknowledged position (what
//! the checkpoint stores) moves only to a transaction end that every sink has written, never
//! past a batch a sink failed on, and nothing reaches a sink while the fence holds or after
//! the lock is lost, or is read from the source while the gate is closed.

use binlogd::binlog::position::{BinlogCoord, Position};
use binlogd::decode::event::Batch;
use binlogd::pipeline::{Acked, Fence, Pipeline};
use binlogd::sinks::{Sink, SinkError};
use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

/// A sink that writes a batch only when given a permit, records the sequence numbers it
/// wrote, and fails on the batch `fail_at`.
struct TestSink {
    name: String,
    permits: Arc<Semaphore>,
    written: Arc<Mutex<Vec<u64>>>,
    fail_at: Option<u64>,
    /// More than 1: takes queued batches in groups of up to this many (one permit per group),
    /// like the Kafka sink, and records each group
    group: usize,
    groups: Arc<Mutex<Vec<Vec<u64>>>>,
    /// Pipelined (like the Kafka sink): groups are queued without a permit, and each
    /// `settle` takes a permit to make the oldest durable; settling a group holding
    /// `resend_at` makes every queued group durable at once (a resend after a failure).
    pipelined: bool,
    resend_at: Option<u64>,
    queued: std::collections::VecDeque<Vec<u64>>,
}

/// The test's handle on a [`TestSink`].
#[derive(Clone)]
struct Handle {
    permits: Arc<Semaphore>,
    written: Arc<Mutex<Vec<u64>>>,
    groups: Arc<Mutex<Vec<Vec<u64>>>>,
}

impl Handle {
    fn written(&self) -> Vec<u64> {
        self.written.lock().unwrap().clone()
    }
    fn groups(&self) -> Vec<Vec<u64>> {
        self.groups.lock().unwrap().clone()
    }
    /// Lets it write `n` more batches.
    fn allow(&self, n: usize) {
        self.permits.add_permits(n);
    }
}

/// A sink named `name` that may write `permits` batches before it waits for more.
fn sink(name: &str, permits: usize, fail_at: Option<u64>) -> (Box<dyn Sink>, Handle) {
    grouping_sink(name, permits, fail_at, 1)
}

/// [`sink`] taking up to `group` queued batches at once, one permit per group.
fn grouping_sink(
    name: &str,
    permits: usize,
    fail_at: Option<u64>,
    group: usize,
) -> (Box<dyn Sink>, Handle) {
    test_sink(name, permits, fail_at, group, None)
}

/// A pipelined [`grouping_sink`] (see [`TestSink::pipelined`]), without permits.
fn pipelined_sink(
    name: &str,
    fail_at: Option<u64>,
    resend_at: Option<u64>,
    group: usize,
) -> (Box<dyn Sink>, Handle) {
    test_sink(name, 0, fail_at, group, Some(resend_at))
}

/// `pipelined`: `Some(resend_at)` for a pipelined sink.
fn test_sink(
    name: &str,
    permits: usize,
    fail_at: Option<u64>,
    group: usize,
    pipelined: Option<Option<u64>>,
) -> (Box<dyn Sink>, Handle) {
    let h = Handle {
        permits: Arc::new(Semaphore::new(permits)),
        written: Arc::new(Mutex::new(Vec::new())),
        groups: Arc::new(Mutex::new(Vec::new())),
    };
    let s = TestSink {
        name: name.to_string(),
        permits: h.permits.clone(),
        written: h.written.clone(),
        fail_at,
        group,
        groups: h.groups.clone(),
        pipelined: pipelined.is_some(),
        resend_at: pipelined.flatten(),
        queued: Default::default(),
    };
    (Box::new(s), h)
}

impl Sink for TestSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn write<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.permits.acquire().await.unwrap().forget();
            if self.fail_at == Some(batch.seq) {
                return Err(SinkError::Fatal {
                    sink: self.name.clone(),
                    message: format!("batch {} refused", batch.seq),
                });
            }
            self.written.lock().unwrap().push(batch.seq);
            Ok(())
        })
    }
    fn max_group(&self) -> usize {
        self.group
    }
    fn write_group<'a>(
        &'a mut self,
        batches: &'a [Arc<Batch>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.permits.acquire().await.unwrap().forget();
            let seqs: Vec<u64> = batches.iter().map(|b| b.seq).collect();
            self.groups.lock().unwrap().push(seqs.clone());
            if let Some(f) = self.fail_at.filter(|f| seqs.contains(f)) {
                return Err(SinkError::Fatal {
                    sink: self.name.clone(),
                    message: format!("batch {f} refused"),
                });
            }
            self.written.lock().unwrap().extend(seqs);
            Ok(())
        })
    }
    fn pipelined(&self) -> bool {
        self.pipelined
    }
    fn queue_group(&mut self, batches: Vec<Arc<Batch>>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let seqs: Vec<u64> = batches.iter().map(|b| b.seq).collect();
            self.groups.lock().unwrap().push(seqs.clone());
            self.queued.push_back(seqs);
            // (producing takes a while: the pipeline hands the next batch over meanwhile)
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        })
    }
    fn settle(&mut self) -> BoxFuture<'_, Result<usize, SinkError>> {
        Box::pin(async move {
            self.permits.acquire().await.unwrap().forget();
            let oldest = self.queued.front().cloned().unwrap_or_default();
            if let Some(f) = self.fail_at.filter(|f| oldest.contains(f)) {
                return Err(SinkError::Fatal {
                    sink: self.name.clone(),
                    message: format!("batch {f} refused"),
                });
            }
            let n = if self.resend_at.is_some_and(|r| oldest.contains(&r)) {
                self.queued.len()
            } else {
                1
            };
            for g in self.queued.drain(..n) {
                self.written.lock().unwrap().extend(g);
            }
            Ok(n)
        })
    }
    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A batch ending at `pos` of binlog.000001 when it ends a transaction (`None`: mid-transaction).
fn batch(commit: Option<u64>) -> Batch {
    Batch {
        commit: commit.map(|pos| {
            Position::new(
                BinlogCoord {
                    file: "binlog.000001".into(),
                    pos,
                },
                None,
            )
        }),
        last_event_ms: 1,
        ..Default::default()
    }
}

fn acked_pos(rx: &watch::Receiver<Option<Acked>>) -> Option<u64> {
    rx.borrow().as_ref().map(|a| a.position.coord.pos)
}

/// Polls `f` every 5 ms for up to 10 s.
async fn until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Long enough for a batch that could move to have moved.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_only_when_every_sink_wrote_up_to_a_transaction_end() {
    let (fast, a) = sink("fast", 100, None);
    let (slow, b) = sink("slow", 0, None);
    let (tx, rx) = mpsc::channel(8);
    let (acked_tx, acked) = watch::channel(None);
    let run = tokio::spawn(Pipeline::new(1 << 20).run(rx, vec![fast, slow], acked_tx));
    for c in [Some(100), None, Some(300)] {
        tx.send(batch(c)).await.unwrap();
    }
    until("the fast sink wrote all three", || a.written() == [1, 2, 3]).await;
    settle().await;
    assert_eq!(acked_pos(&acked), None, "the slow sink wrote nothing yet");
    b.allow(1);
    until("acknowledged at the first transaction end", || {
        acked_pos(&acked) == Some(100)
    })
    .await;
    b.allow(1);
    until("the slow sink wrote the second batch", || {
        b.written() == [1, 2]
    })
    .await;
    settle().await;
    assert_eq!(
        acked_pos(&acked),
        Some(100),
        "a batch ending mid-transaction moves nothing"
    );
    b.allow(1);
    until("acknowledged at the second transaction end", || {
        acked_pos(&acked) == Some(300)
    })
    .await;
    drop(tx);
    run.await.unwrap().expect("the pipeline drains and ends");
    assert_eq!(
        a.written(),
        b.written(),
        "every sink got every batch, in order"
    );
}

/// A sink that takes groups (Kafka) gets what queued while it was busy at once, and the group
/// is acknowledged as a whole: up to its last transaction end, and not at all when a batch in
/// it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grouping_sink_takes_the_backlog_at_once_and_acks_it_whole() {
    let (k, h) = grouping_sink("kafka", 0, None, 4);
    let (tx, rx) = mpsc::channel(32);
    let (acked_tx, acked) = watch::channel(None);
    let run = tokio::spawn(Pipeline::new(1 << 20).run(rx, vec![k], acked_tx));
    // the sink takes the first batch alone and waits for a permit while 3 more queue (the
    // Kafka sink takes up to 4 at once)
    tx.send(batch(Some(100))).await.unwrap();
    settle().await;
    for c in [None, Some(300), None] {
        tx.send(batch(c)).await.unwrap();
    }
    settle().await;
    h.allow(1);
    until("the first batch written", || h.written() == [1]).await;
    until("acknowledged at its end", || acked_pos(&acked) == Some(100)).await;
    settle().await;
    assert_eq!(h.written(), [1], "the group waits for its permit");
    h.allow(1);
    until("the backlog written", || h.written().len() == 4).await;
    // (a lone batch goes through `write`)
    assert_eq!(h.groups(), vec![vec![2, 3, 4]], "the backlog as one group");
    until("acknowledged at the group's last transaction end", || {
        acked_pos(&acked) == Some(300)
    })
    .await;
    // a group with a failing batch acknowledges none of it
    let (k, h) = grouping_sink("kafka", 0, Some(3), 4);
    let (tx2, rx) = mpsc::channel(32);
    let (acked_tx, acked) = watch::channel(None);
    let run2 = tokio::spawn(Pipeline::new(1 << 20).run(rx, vec![k], acked_tx));
    tx2.send(batch(Some(100))).await.unwrap();
    settle().await;
    for c in [Some(200), Some(300), Some(400)] {
        tx2.send(batch(c)).await.unwrap();
    }
    settle().await;
    h.allow(1);
    until("acknowledged at the first batch's end", || {
        acked_pos(&acked) == Some(100)
    })
    .await;
    h.allow(1);
    let r = tokio::time::timeout(Duration::from_secs(10), run2)
        .await
        .expect("the pipeline stops")
        .unwrap();
    assert!(r.is_err(), "the failing group ends the pipeline");
    assert_eq!(h.groups(), vec![vec![2, 3, 4]]);
    assert_eq!(
        acked_pos(&acked),
        Some(100),
        "nothing of the failed group (not even batch 2, before the failing one) is acknowledged"
    );
    drop(tx);
    let _ = run.await;
}

type Run = tokio::task::JoinHandle<Result<(), SinkError>>;

/// A pipeline with the one sink `k`, the batches ending at `commits` already sent (so the
/// sink finds the next one waiting): its input, its acknowledged position and its task.
fn run_one(
    k: Box<dyn Sink>,
    commits: &[Option<u64>],
) -> (mpsc::Sender<Batch>, watch::Receiver<Option<Acked>>, Run) {
    let (tx, rx) = mpsc::channel(32);
    for &c in commits {
        tx.try_send(batch(c)).unwrap();
    }
    let (acked_tx, acked) = watch::channel(None);
    let run = tokio::spawn(Pipeline::new(1 << 20).run(rx, vec![k], acked_tx));
    (tx, acked, run)
}

/// A pipelined sink (Kafka) is handed the next group while the one before waits for its
/// acknowledgement, at most two at a time; each is acknowledged only when settled, in order;
/// a settle that delivered both (a resend) acknowledges both; a failed settle acknowledges
/// neither the failed group nor the one queued after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_sink_queues_the_next_group_and_acks_each_when_settled() {
    let (k, h) = pipelined_sink("kafka", None, None, 1);
    let (tx, acked, run) = run_one(k, &[Some(100), Some(200), Some(300)]);
    until("two groups queued", || h.groups().len() == 2).await;
    settle().await;
    assert_eq!(h.groups(), vec![vec![1], vec![2]], "at most two queued");
    assert_eq!(
        acked_pos(&acked),
        None,
        "nothing acknowledged before a settle"
    );
    h.allow(1);
    until("the first settled and acknowledged", || {
        acked_pos(&acked) == Some(100)
    })
    .await;
    until("the third queued behind the second", || {
        h.groups().len() == 3
    })
    .await;
    settle().await;
    assert_eq!(
        acked_pos(&acked),
        Some(100),
        "the second is not settled yet"
    );
    h.allow(2);
    until("all acknowledged", || acked_pos(&acked) == Some(300)).await;
    assert_eq!(h.written(), [1, 2, 3]);
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the pipeline ends")
        .unwrap()
        .unwrap();

    // a resend while settling the first delivers both queued groups: both acknowledged
    let (k, h) = pipelined_sink("kafka", None, Some(1), 1);
    let (tx, acked, run) = run_one(k, &[Some(100), Some(200)]);
    until("two groups queued", || h.groups().len() == 2).await;
    h.allow(1);
    until("both acknowledged by one settle", || {
        acked_pos(&acked) == Some(200)
    })
    .await;
    drop(tx);
    let _ = run.await;

    // the source ends with two groups queued: both settle before the pipeline ends
    let (k, h) = pipelined_sink("kafka", None, None, 1);
    let (tx, acked, run) = run_one(k, &[Some(100), Some(200)]);
    until("two groups queued", || h.groups().len() == 2).await;
    drop(tx);
    settle().await;
    assert_eq!(acked_pos(&acked), None, "not before they settle");
    h.allow(2);
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the pipeline ends")
        .unwrap()
        .unwrap();
    assert_eq!(acked_pos(&acked), Some(200), "both acknowledged");
    assert_eq!(h.written(), [1, 2]);

    // the fence closes while a group is queued and the next batch waits: the queued group
    // still settles and is acknowledged; the waiting batch is not handed over until it opens
    let (k, h) = pipelined_sink("kafka", None, None, 1);
    let (tx, rx) = mpsc::channel(32);
    let (acked_tx, acked) = watch::channel(None);
    let (fence_tx, fence) = watch::channel(Fence::Open);
    tx.send(batch(Some(100))).await.unwrap();
    let run = tokio::spawn(
        Pipeline::new(1 << 20)
            .fenced(fence)
            .run(rx, vec![k], acked_tx),
    );
    until("the first group being queued", || h.groups().len() == 1).await;
    // (the next batch reaches the sink's queue, then the fence closes, both while the first
    // group is still being produced)
    tx.send(batch(Some(200))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    fence_tx.send(Fence::Hold).unwrap();
    h.allow(1);
    until(
        "the queued group acknowledged while the fence holds",
        || acked_pos(&acked) == Some(100),
    )
    .await;
    settle().await;
    assert_eq!(
        h.groups().len(),
        1,
        "nothing handed over while the fence holds"
    );
    fence_tx.send(Fence::Open).unwrap();
    h.allow(1);
    until("the next acknowledged once open", || {
        acked_pos(&acked) == Some(200)
    })
    .await;
    drop(tx);
    let _ = run.await;

    // a failed settle: neither the failed group nor the one queued after it is acknowledged
    let (k, h) = pipelined_sink("kafka", Some(2), None, 1);
    let (tx, acked, run) = run_one(k, &[Some(100), Some(200), Some(300)]);
    until("two groups queued", || h.groups().len() == 2).await;
    h.allow(1);
    until("the first acknowledged", || acked_pos(&acked) == Some(100)).await;
    until("the third queued", || h.groups().len() == 3).await;
    h.allow(1);
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the pipeline stops")
        .unwrap();
    assert!(r.is_err(), "the failed settle ends the pipeline");
    assert_eq!(acked_pos(&acked), Some(100));
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sink_stops_the_pipeline_before_its_batch_is_acknowledged() {
    let (good, a) = sink("good", 100, None);
    let (bad, b) = sink("bad", 100, Some(2));
    let (tx, rx) = mpsc::channel(8);
    let (acked_tx, acked) = watch::channel(None);
    let run = tokio::spawn(Pipeline::new(1 << 20).run(rx, vec![good, bad], acked_tx));
    for c in [Some(100), Some(200), Some(300)] {
        // the pipeline may already have stopped
        let _ = tx.send(batch(c)).await;
    }
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the pipeline stops")
        .unwrap();
    let e = r.expect_err("a sink error ends the pipeline");
    assert!(
        e.to_string().contains("bad") && e.to_string().contains("batch 2 refused"),
        "{e}"
    );
    assert_eq!(b.written(), [1]);
    assert!(
        matches!(acked_pos(&acked), None | Some(100)),
        "nothing past the failed batch is acknowledged: {:?} (the good sink wrote {:?})",
        acked_pos(&acked),
        a.written()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_reaches_a_sink_while_the_fence_holds_or_after_the_lock_is_lost() {
    let (s, h) = sink("out", 100, None);
    let (tx, rx) = mpsc::channel(8);
    let (acked_tx, acked) = watch::channel(None);
    let (fence_tx, fence) = watch::channel(Fence::Hold);
    let run = tokio::spawn(
        Pipeline::new(1 << 20)
            .fenced(fence)
            .run(rx, vec![s], acked_tx),
    );
    tx.send(batch(Some(100))).await.unwrap();
    settle().await;
    assert!(h.written().is_empty(), "written while the fence holds");
    assert_eq!(acked_pos(&acked), None);
    fence_tx.send(Fence::Open).unwrap();
    until("written and acknowledged once open", || {
        acked_pos(&acked) == Some(100)
    })
    .await;
    fence_tx.send(Fence::Hold).unwrap();
    settle().await;
    tx.send(batch(Some(200))).await.unwrap();
    settle().await;
    assert_eq!(h.written(), [1], "written while the fence holds again");
    fence_tx.send(Fence::Lost).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the pipeline stops when the lock is lost")
        .unwrap();
    assert!(r.is_err(), "the lost lock is an error");
    assert_eq!(h.written(), [1], "nothing written after the lock is lost");
    assert_eq!(acked_pos(&acked), Some(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_read_from_the_source_while_the_gate_is_closed() {
    let (s, h) = sink("out", 100, None);
    let (tx, rx) = mpsc::channel(1);
    let (acked_tx, acked) = watch::channel(None);
    let (gate_tx, gate) = watch::channel(false);
    let run = tokio::spawn(
        Pipeline::new(1 << 20)
            .gated(gate)
            .run(rx, vec![s], acked_tx),
    );
    tx.send(batch(Some(100))).await.unwrap();
    settle().await;
    assert!(h.written().is_empty(), "read while the gate is closed");
    assert_eq!(
        tx.capacity(),
        0,
        "the batch is still in the source's channel"
    );
    gate_tx.send(true).unwrap();
    until("read, written and acknowledged once open", || {
        acked_pos(&acked) == Some(100)
    })
    .await;
    drop(tx);
    run.await.unwrap().expect("the pipeline drains and ends");
}
