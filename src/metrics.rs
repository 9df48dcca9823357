//! Process-wide metrics (Prometheus, via `prometheus-client`) and the state behind `/readyz`.
//!
//! Counters are incremented where the work happens (source, pipeline, sinks); values that are
//! derived from the time of a scrape (lag, checkpoint age) are computed in [`Metrics::refresh`].
//! No label ever carries a secret: labels are db/table/op, sink names, binlog file and GTID.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableOp {
    pub db: String,
    pub table: String,
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PositionLabels {
    pub file: String,
    pub gtid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ColumnLabels {
    pub db: String,
    pub table: String,
    pub column: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub rows: Family<TableOp, Counter>,
    pub transactions: Counter,
    pub events: Counter,
    pub bytes: Counter,
    pub reconnects: Counter,
    pub connected: Gauge,
    pub active: Gauge,
    pub position_info: Family<PositionLabels, Gauge>,
    pub position_pos: Gauge,
    pub lag_seconds: F64Gauge,
    pub lag_bytes: Gauge,
    pub checkpoint_age_seconds: F64Gauge,
    pub checkpoint_stores: Counter,
    pub checkpoint_errors: Counter,
    pub sink_rows: Family<SinkLabel, Counter>,
    pub sink_batches: Family<SinkLabel, Counter>,
    pub sink_errors: Family<SinkLabel, Counter>,
    pub sink_retries: Family<SinkLabel, Counter>,
    pub sink_in_flight: Family<SinkLabel, Gauge>,
    pub sink_ready: Family<SinkLabel, Gauge>,
    pub sink_batch_seconds: Family<SinkLabel, Histogram, fn() -> Histogram>,
    pub redis_keys_deleted: Family<SinkLabel, Counter>,
    pub redis_keys_skipped_null: Family<SinkLabel, Counter>,
    pub redis_second_deletes: Family<SinkLabel, Counter>,
    pub redis_replica_wait_fallbacks: Family<SinkLabel, Counter>,
    pub kafka_messages: Family<SinkLabel, Counter>,
    pub kafka_skipped_present: Family<SinkLabel, Counter>,
    pub kafka_producer_resets: Family<SinkLabel, Counter>,
    pub kafka_delivery_seconds: Family<SinkLabel, Histogram, fn() -> Histogram>,
    /// Prepared XA transactions held until their XA COMMIT / XA ROLLBACK, their row changes,
    /// and the age of the oldest (from its PREPARE's event time, at scrape).
    pub xa_held: Gauge,
    pub xa_held_rows: Gauge,
    pub xa_oldest_age_seconds: F64Gauge,
    pub xa_oldest_prepared_ms: AtomicU64,
    /// XA COMMITs of transactions whose PREPARE was before the stream's start.
    pub xa_unknown_commits: Counter,
    pub snapshot_tables: Gauge,
    pub snapshot_tables_done: Gauge,
    pub snapshot_active: Gauge,
    pub snapshot_chunks: Counter,
    pub snapshot_dropped: Counter,
    pub snapshot_rereads: Counter,
    pub snapshot_eta_seconds: F64Gauge,
    /// Row changes withdrawn by ROLLBACK TO SAVEPOINT / ROLLBACK inside a logged transaction.
    pub rows_rolled_back: Counter,
    /// Values of a column believed to be JSON (MariaDB) that were not JSON, emitted as strings.
    pub json_fallback: Family<ColumnLabels, Counter>,
    pub acked_event_ms: AtomicU64,
    pub stored_at_ms: AtomicU64,
    /// The source waits for the server with nothing pending (caught up).
    pub source_idle: AtomicBool,
    /// Batches handed on and not yet acknowledged by every sink.
    pub pipeline_in_flight: AtomicU64,
    /// Readiness confirmations (`mono_ms` times): the last event or heartbeat from the
    /// source, and the last time the pipeline lock was confirmed on the checkpoint server.
    pub source_seen_ms: AtomicU64,
    pub lock_confirmed_ms: AtomicU64,
    /// The source waits for the pipeline to take a batch (backpressure), not for the server.
    pub source_handing_on: AtomicBool,
    /// Not ready when a confirmation is older than this (ms; 0: not checked):
    /// `source.heartbeat` plus a margin.
    pub ready_limit_ms: AtomicU64,
    /// Why the daemon is not ready, when it is a whole-process reason (standby, starting).
    pub state: Mutex<String>,
    /// Per sink: since when (`mono_ms`) its current batch is being written (absent: idle).
    sink_busy: Mutex<std::collections::BTreeMap<String, u64>>,
    sink_ok: Mutex<std::collections::BTreeMap<String, bool>>,
    /// Binlog file of the last acknowledged position.
    pub acked_file: Mutex<String>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Milliseconds on a monotonic clock (since the first call in this process, plus 1 so that 0
/// can mean "never").
pub fn mono_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("binlogd");
        let m = Metrics {
            registry: Registry::default(),
            rows: Family::default(),
            transactions: Counter::default(),
            events: Counter::default(),
            bytes: Counter::default(),
            reconnects: Counter::default(),
            connected: Gauge::default(),
            active: Gauge::default(),
            position_info: Family::default(),
            position_pos: Gauge::default(),
            lag_seconds: F64Gauge::default(),
            lag_bytes: Gauge::default(),
            checkpoint_age_seconds: F64Gauge::default(),
            checkpoint_stores: Counter::default(),
            checkpoint_errors: Counter::default(),
            sink_rows: Family::default(),
            sink_batches: Family::default(),
            sink_errors: Family::default(),
            sink_retries: Family::default(),
            sink_in_flight: Family::default(),
            sink_ready: Family::default(),
            sink_batch_seconds: Family::new_with_constructor(batch_histogram),
            redis_keys_deleted: Family::default(),
            redis_keys_skipped_null: Family::default(),
            redis_second_deletes: Family::default(),
            redis_replica_wait_fallbacks: Family::default(),
            kafka_messages: Family::default(),
            kafka_skipped_present: Family::default(),
            kafka_producer_resets: Family::default(),
            kafka_delivery_seconds: Family::new_with_constructor(batch_histogram),
            xa_held: Gauge::default(),
            xa_held_rows: Gauge::default(),
            xa_oldest_age_seconds: F64Gauge::default(),
            xa_oldest_prepared_ms: AtomicU64::new(0),
            xa_unknown_commits: Counter::default(),
            snapshot_tables: Gauge::default(),
            snapshot_tables_done: Gauge::default(),
            snapshot_active: Gauge::default(),
            snapshot_chunks: Counter::default(),
            snapshot_dropped: Counter::default(),
            snapshot_rereads: Counter::default(),
            snapshot_eta_seconds: F64Gauge::default(),
            rows_rolled_back: Counter::default(),
            json_fallback: Family::default(),
            acked_event_ms: AtomicU64::new(0),
            stored_at_ms: AtomicU64::new(0),
            source_idle: AtomicBool::new(false),
            pipeline_in_flight: AtomicU64::new(0),
            source_seen_ms: AtomicU64::new(0),
            lock_confirmed_ms: AtomicU64::new(0),
            source_handing_on: AtomicBool::new(false),
            ready_limit_ms: AtomicU64::new(0),
            state: Mutex::new("starting".into()),
            sink_busy: Mutex::new(Default::default()),
            sink_ok: Mutex::new(Default::default()),
            acked_file: Mutex::new(String::new()),
        };
        r.register(
            "rows",
            "Row changes read from the binlog, per table and op (c/u/d)",
            m.rows.clone(),
        );
        r.register(
            "transactions",
            "Transactions (parts of large ones count separately) handed on",
            m.transactions.clone(),
        );
        r.register("binlog_events", "Binlog events read", m.events.clone());
        r.register("binlog_bytes", "Binlog bytes read", m.bytes.clone());
        r.register(
            "source_reconnects",
            "Reconnects of the replication stream",
            m.reconnects.clone(),
        );
        r.register(
            "source_connected",
            "1 while the replication stream is up",
            m.connected.clone(),
        );
        r.register(
            "active",
            "1 while this daemon holds the pipeline lock and streams, 0 on standby",
            m.active.clone(),
        );
        r.register(
            "acked_position",
            "The last position every sink acknowledged (value 1; file and GTID set as labels)",
            m.position_info.clone(),
        );
        r.register(
            "acked_binlog_pos",
            "Binlog offset of the last acknowledged position",
            m.position_pos.clone(),
        );
        r.register(
            "lag_seconds",
            "Now minus the event time of the last acknowledged transaction (0 when caught up)",
            m.lag_seconds.clone(),
        );
        r.register(
            "lag_bytes",
            "Binlog bytes between the last acknowledged position and the server's current position",
            m.lag_bytes.clone(),
        );
        r.register(
            "checkpoint_age_seconds",
            "Time since the position was last stored",
            m.checkpoint_age_seconds.clone(),
        );
        r.register(
            "checkpoint_stores",
            "Positions stored",
            m.checkpoint_stores.clone(),
        );
        r.register(
            "checkpoint_errors",
            "Failed attempts to store the position",
            m.checkpoint_errors.clone(),
        );
        r.register(
            "sink_rows_acked",
            "Row changes acknowledged per sink",
            m.sink_rows.clone(),
        );
        r.register(
            "sink_batches",
            "Batches acknowledged per sink",
            m.sink_batches.clone(),
        );
        r.register(
            "sink_errors",
            "Sink errors (failed attempts, fatal errors)",
            m.sink_errors.clone(),
        );
        r.register(
            "sink_retries",
            "Retried attempts per sink",
            m.sink_retries.clone(),
        );
        r.register(
            "sink_in_flight_batches",
            "Batches handed to a sink and not yet acknowledged",
            m.sink_in_flight.clone(),
        );
        r.register(
            "sink_ready",
            "1 when the sink's last attempt succeeded",
            m.sink_ready.clone(),
        );
        r.register(
            "sink_batch_seconds",
            "Time a sink took to acknowledge a batch",
            m.sink_batch_seconds.clone(),
        );
        r.register(
            "redis_keys_deleted",
            "Keys in confirmed first deletes",
            m.redis_keys_deleted.clone(),
        );
        r.register(
            "redis_keys_skipped_null",
            "Keys not rendered because a template column was NULL",
            m.redis_keys_skipped_null.clone(),
        );
        r.register(
            "redis_second_deletes",
            "Keys deleted a second time",
            m.redis_second_deletes.clone(),
        );
        r.register(
            "redis_replica_wait_fallbacks",
            "after-replicas waits that timed out or failed (keys deleted anyway)",
            m.redis_replica_wait_fallbacks.clone(),
        );
        r.register(
            "kafka_messages_acked",
            "Messages with a successful delivery report",
            m.kafka_messages.clone(),
        );
        r.register(
            "kafka_skipped_present",
            "Row changes not sent because their partition already held them (exactly_once)",
            m.kafka_skipped_present.clone(),
        );
        r.register(
            "kafka_producer_resets",
            "Producers dropped and recreated after a fatal or delivery error",
            m.kafka_producer_resets.clone(),
        );
        r.register(
            "kafka_delivery_seconds",
            "From queuing a batch's messages to the last delivery report",
            m.kafka_delivery_seconds.clone(),
        );
        r.register(
            "xa_held",
            "Prepared XA transactions whose row changes are held until XA COMMIT / XA ROLLBACK",
            m.xa_held.clone(),
        );
        r.register(
            "xa_held_rows",
            "Row changes of held prepared XA transactions",
            m.xa_held_rows.clone(),
        );
        r.register(
            "xa_oldest_age_seconds",
            "Age of the oldest held prepared XA transaction (0: none)",
            m.xa_oldest_age_seconds.clone(),
        );
        r.register(
            "xa_unknown_commits",
            "XA COMMITs of transactions prepared before the position streaming started from (rows not in the stream)",
            m.xa_unknown_commits.clone(),
        );
        r.register(
            "snapshot_tables",
            "Tables of the current snapshot (done, cancelled or still to read)",
            m.snapshot_tables.clone(),
        );
        r.register(
            "snapshot_tables_done",
            "Tables of the current snapshot read completely",
            m.snapshot_tables_done.clone(),
        );
        r.register(
            "snapshot_tables_pending",
            "Tables of the current snapshot still to be read",
            m.snapshot_active.clone(),
        );
        r.register(
            "snapshot_chunks",
            "Snapshot chunks handed on (read rows: binlogd_rows_total{op=\"r\"})",
            m.snapshot_chunks.clone(),
        );
        r.register(
            "snapshot_rows_dropped",
            "Rows read by a snapshot chunk but not handed on: the stream changed them while the chunk's window was open",
            m.snapshot_dropped.clone(),
        );
        r.register(
            "snapshot_rereads",
            "Snapshot chunks read again (schema changed under the read, stale watermark)",
            m.snapshot_rereads.clone(),
        );
        r.register(
            "snapshot_eta_seconds",
            "Estimated seconds until the tables being read are done (from the server's row estimates)",
            m.snapshot_eta_seconds.clone(),
        );
        r.register(
            "rows_rolled_back",
            "Row changes withdrawn by a ROLLBACK TO SAVEPOINT or ROLLBACK logged inside a transaction",
            m.rows_rolled_back.clone(),
        );
        r.register(
            "json_fallback",
            "Values of a column believed to be JSON (MariaDB JSON from information_schema) that did \
             not parse as JSON and were emitted as strings (counted per rendering)",
            m.json_fallback.clone(),
        );
        Metrics { registry: r, ..m }
    }

    pub fn sink(&self, name: &str) -> SinkLabel {
        SinkLabel {
            sink: name.to_string(),
        }
    }

    /// Marks a sink ready (its last attempt worked) or not.
    pub fn set_sink_ready(&self, sink: &str, ok: bool) {
        self.sink_ready
            .get_or_create(&self.sink(sink))
            .set(ok as i64);
        if let Ok(mut m) = self.sink_ok.lock() {
            m.insert(sink.to_string(), ok);
        }
    }

    /// The source stream delivered an event or heartbeat (or handed a batch on).
    pub fn source_confirmed(&self) {
        self.source_seen_ms.store(mono_ms(), Ordering::Relaxed);
    }

    /// The pipeline lock was confirmed by a round trip that started at `at` (`mono_ms`).
    pub fn lock_confirmed(&self, at: u64) {
        self.lock_confirmed_ms.fetch_max(at, Ordering::Relaxed);
    }

    /// A sink starts (`true`) or finished (`false`) writing a batch.
    pub fn sink_busy(&self, sink: &str, busy: bool) {
        if let Ok(mut m) = self.sink_busy.lock() {
            if busy {
                m.insert(sink.to_string(), mono_ms());
            } else {
                m.remove(sink);
            }
        }
    }

    pub fn set_state(&self, s: &str) {
        if let Ok(mut g) = self.state.lock() {
            *g = s.to_string();
        }
    }

    /// Records a newly acknowledged position.
    pub fn set_acked(&self, file: &str, pos: u64, gtid: Option<String>, event_ms: u64) {
        if let Ok(mut f) = self.acked_file.lock() {
            if *f != file {
                *f = file.to_string();
            }
        }
        self.position_info.clear();
        self.position_info
            .get_or_create(&PositionLabels {
                file: file.to_string(),
                gtid: gtid.unwrap_or_default(),
            })
            .set(1);
        self.position_pos.set(pos as i64);
        self.acked_event_ms.store(event_ms, Ordering::Relaxed);
    }

    /// Updates the time-derived gauges; called before every scrape.
    pub fn refresh(&self) {
        let now = crate::metrics::now_ms();
        let acked = self.acked_event_ms.load(Ordering::Relaxed);
        let caught_up = self.source_idle.load(Ordering::Relaxed)
            && self.pipeline_in_flight.load(Ordering::Relaxed) == 0;
        let lag = if caught_up || acked == 0 {
            0.0
        } else {
            now.saturating_sub(acked) as f64 / 1000.0
        };
        self.lag_seconds.set(lag);
        let xa = self.xa_oldest_prepared_ms.load(Ordering::Relaxed);
        self.xa_oldest_age_seconds.set(if xa == 0 {
            0.0
        } else {
            now.saturating_sub(xa) as f64 / 1000.0
        });
        let stored = self.stored_at_ms.load(Ordering::Relaxed);
        if stored > 0 {
            self.checkpoint_age_seconds
                .set(now.saturating_sub(stored) as f64 / 1000.0);
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.refresh();
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// Readiness: `Ok(summary)` when active, connected, and every sink's last attempt worked;
    /// and, within `ready_limit_ms` (one heartbeat plus a margin), the source stream delivered
    /// an event or heartbeat, the pipeline lock was confirmed, and no sink has been writing one
    /// batch for longer.
    pub fn readiness(&self) -> Result<String, String> {
        let state = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        if self.active.get() != 1 {
            return Err(format!("{{\"status\":\"{state}\",\"active\":false}}"));
        }
        if self.connected.get() != 1 {
            return Err(
                "{\"status\":\"active\",\"active\":true,\"problem\":\"not connected to the source\"}"
                    .into(),
            );
        }
        let limit = self.ready_limit_ms.load(Ordering::Relaxed);
        let now = mono_ms();
        let age = |t: &AtomicU64| now.saturating_sub(t.load(Ordering::Relaxed));
        if limit > 0 {
            if !self.source_handing_on.load(Ordering::Relaxed) && age(&self.source_seen_ms) > limit
            {
                return Err(format!(
                    "{{\"status\":\"active\",\"active\":true,\"problem\":\"no event or heartbeat from the source for {} ms\"}}",
                    age(&self.source_seen_ms)
                ));
            }
            if age(&self.lock_confirmed_ms) > limit {
                return Err(format!(
                    "{{\"status\":\"active\",\"active\":true,\"problem\":\"pipeline lock not confirmed for {} ms\"}}",
                    age(&self.lock_confirmed_ms)
                ));
            }
        }
        let mut bad: Vec<String> = self
            .sink_ok
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, ok)| !**ok)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        if limit > 0 {
            if let Ok(m) = self.sink_busy.lock() {
                for (n, since) in m.iter() {
                    if now.saturating_sub(*since) > limit && !bad.contains(n) {
                        bad.push(n.clone());
                    }
                }
            }
        }
        if !bad.is_empty() {
            return Err(format!(
                "{{\"status\":\"active\",\"active\":true,\"problem\":\"sinks not ready\",\"sinks\":{:?}}}",
                bad
            ));
        }
        Ok("{\"status\":\"active\",\"active\":true}".into())
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
